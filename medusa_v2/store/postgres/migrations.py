"""The forward migrations of the built-in schema, and the migrate step that also derives declared resources."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

import psycopg
import psycopg.errors

from .. import ddl_postgres, schema
from ..base import check_schema_version
from ..sql import quote_name as _name
from .connection import _first_line

# Key of the advisory lock that serialises migrations (any constant unique to medusa_v2).
MIGRATION_LOCK = 0x6D656475_73613276 & 0x7FFFFFFFFFFFFFFF  # "medusa2v"

# Forward migrations: entry N brings the schema from version N to N + 1.
# Never edit a released entry; append a new one. Same numbering as SQLite's where
# the content is the same (1: auth state, 2: tickets and messages); the SQLite id
# counter table (its 3) is a sequence here, created with the tables.
MIGRATIONS: list[str] = [
    """
    CREATE TABLE revoked_token (
        jti TEXT COLLATE "C" PRIMARY KEY,
        expires_at DOUBLE PRECISION NOT NULL
    );
    CREATE INDEX revoked_token_expires ON revoked_token (expires_at);
    CREATE TABLE login_failure (
        client TEXT COLLATE "C" NOT NULL,
        at DOUBLE PRECISION NOT NULL
    );
    CREATE INDEX login_failure_client_at ON login_failure (client, at);
    """,
    """
    CREATE EXTENSION IF NOT EXISTS pg_trgm;

    CREATE TABLE ticket (
        id BIGINT PRIMARY KEY CHECK (id > 0),
        title TEXT COLLATE "C" NOT NULL,
        description TEXT COLLATE "C" NOT NULL DEFAULT '',
        state TEXT COLLATE "C" NOT NULL DEFAULT 'open' CHECK (state IN ('open', 'pending', 'closed')),
        priority INTEGER NOT NULL DEFAULT 3 CHECK (priority BETWEEN 1 AND 5),
        assignee TEXT COLLATE "C",
        created_at TEXT COLLATE "C" NOT NULL,
        updated_at TEXT COLLATE "C" NOT NULL
    );
    -- Assigned ids: never reused (a sequence only moves forward).
    CREATE SEQUENCE ticket_id_seq AS BIGINT OWNED BY ticket.id;
    -- One index per filter + sort combination a list asks for, id last. NULLs first,
    -- as SQLite sorts them ascending (and last descending: the backward scan).
    CREATE INDEX ticket_state ON ticket (state, id);
    CREATE INDEX ticket_state_priority ON ticket (state, priority, id);
    CREATE INDEX ticket_priority ON ticket (priority, id);
    CREATE INDEX ticket_assignee ON ticket (assignee NULLS FIRST, id);
    CREATE INDEX ticket_title ON ticket (title, id);
    CREATE INDEX ticket_created_at ON ticket (created_at, id);
    CREATE INDEX ticket_updated_at ON ticket (updated_at, id);
    CREATE INDEX ticket_state_updated_at ON ticket (state, updated_at, id);
    -- q: trigram indexes in the default collation (the one ILIKE folds case with).
    CREATE INDEX ticket_title_trgm ON ticket USING gin (title COLLATE "default" gin_trgm_ops);
    CREATE INDEX ticket_description_trgm ON ticket USING gin (description COLLATE "default" gin_trgm_ops);

    CREATE TABLE message (
        id BIGINT PRIMARY KEY CHECK (id > 0),
        ticket_id BIGINT NOT NULL REFERENCES ticket (id) ON DELETE CASCADE,
        author TEXT COLLATE "C" NOT NULL,
        body TEXT COLLATE "C" NOT NULL,
        created_at TEXT COLLATE "C" NOT NULL,
        updated_at TEXT COLLATE "C" NOT NULL
    );
    CREATE SEQUENCE message_id_seq AS BIGINT OWNED BY message.id;
    CREATE INDEX message_ticket ON message (ticket_id, id);
    CREATE INDEX message_ticket_author ON message (ticket_id, author, id);
    CREATE INDEX message_ticket_created_at ON message (ticket_id, created_at, id);
    CREATE INDEX message_ticket_updated_at ON message (ticket_id, updated_at, id);
    CREATE INDEX message_body_trgm ON message USING gin (body COLLATE "default" gin_trgm_ops);

    CREATE TABLE idempotency_key (
        scope TEXT COLLATE "C" NOT NULL,
        key TEXT COLLATE "C" NOT NULL,
        fingerprint TEXT NOT NULL,
        created_at DOUBLE PRECISION NOT NULL,
        status INTEGER,  -- NULL while the first request is in flight
        headers TEXT,
        body BYTEA,
        PRIMARY KEY (scope, key)
    );
    CREATE INDEX idempotency_key_created_at ON idempotency_key (created_at);
    """,
    # 2 -> 3: the unfiltered list count, exact without COUNT(*) (SQLite's migration 4
    # keeps the same table). Statement triggers (one update per statement, however
    # many rows) add to one of TOTAL_SHARDS rows picked by the backend, so concurrent
    # POSTs do not queue on one row lock until each other's commit; the total is
    # their SUM, read in the list's own snapshot. An import sets
    # `medusa_v2.bulk_import` for its transaction and adds its own delta once.
    # (16 is TOTAL_SHARDS, written out: a released migration never changes.)
    """
    CREATE TABLE row_total (
        name TEXT COLLATE "C" NOT NULL,
        shard INTEGER NOT NULL,
        total BIGINT NOT NULL,
        PRIMARY KEY (name, shard)
    );
    INSERT INTO row_total (name, shard, total)
        SELECT 'ticket', s, CASE WHEN s = 0 THEN (SELECT COUNT(*) FROM ticket) ELSE 0 END
        FROM generate_series(0, 15) AS s;
    CREATE FUNCTION medusa_v2_row_total() RETURNS trigger LANGUAGE plpgsql AS $$
    DECLARE
        delta BIGINT;
    BEGIN
        IF TG_OP = 'TRUNCATE' THEN
            UPDATE row_total SET total = 0 WHERE name = TG_TABLE_NAME;
            RETURN NULL;
        END IF;
        IF current_setting('medusa_v2.bulk_import', true) = 'on' THEN
            RETURN NULL;
        END IF;
        IF TG_OP = 'INSERT' THEN
            SELECT COUNT(*) INTO delta FROM new_rows;
        ELSE
            SELECT -COUNT(*) INTO delta FROM old_rows;
        END IF;
        IF delta <> 0 THEN
            UPDATE row_total SET total = total + delta
                WHERE name = TG_TABLE_NAME AND shard = pg_backend_pid() % 16;
        END IF;
        RETURN NULL;
    END
    $$;
    CREATE TRIGGER ticket_total_insert AFTER INSERT ON ticket
        REFERENCING NEW TABLE AS new_rows FOR EACH STATEMENT EXECUTE FUNCTION medusa_v2_row_total();
    CREATE TRIGGER ticket_total_delete AFTER DELETE ON ticket
        REFERENCING OLD TABLE AS old_rows FOR EACH STATEMENT EXECUTE FUNCTION medusa_v2_row_total();
    CREATE TRIGGER ticket_total_truncate AFTER TRUNCATE ON ticket
        FOR EACH STATEMENT EXECUTE FUNCTION medusa_v2_row_total();
    """,
    # 3 -> 4: the sort pair `sort=-priority,updated-at` in index order, with and without
    # the state filter (SQLite's migration 4 has the same two). Deep pages find their
    # ids on these and the primary key first (page_sql).
    """
    CREATE INDEX ticket_priority_updated_at ON ticket (priority DESC, updated_at, id);
    CREATE INDEX ticket_state_priority_updated_at ON ticket (state, priority DESC, updated_at, id);
    """,
    # 4 -> 5: resources' schemas derived from their declarations (schema.py): each
    # one's spec and version (SQLite's migration 6). Ticket's and message's are
    # recorded as they were released (schema.BUILTIN_V1, in this migration's
    # transaction: migrate).
    """
    CREATE TABLE resource_schema (
        name TEXT COLLATE "C" PRIMARY KEY,
        version INTEGER NOT NULL,
        spec TEXT NOT NULL
    );
    """,
    # 5 -> 6: every top-level resource's exact counts under any filters come from its
    # totals per combination of filter values, derived from its declaration
    # (schema.py, ddl_postgres.totals_statements): they replace ticket's row_total,
    # created by migrating the built-ins to schema.BUILTIN_V2 in this migration's
    # transaction (migrate).
    """
    DROP TABLE row_total;
    DROP FUNCTION medusa_v2_row_total() CASCADE;
    """,
    # 6 -> 7: the change feed (SQLite's migration 8). A trigger per resource
    # (ddl_postgres.changes_statements, added to every recorded resource in this
    # migration's transaction: migrate) records each change in the writing
    # transaction, by `pos`; `seq` is given after commit by one publisher at a
    # time (postgres/changes.py), so that it is gap-free as observed and, for any
    # row, in commit order. `change_feed` holds the last seq given and the last purged.
    """
    CREATE TABLE change_event (
        pos BIGSERIAL PRIMARY KEY,
        seq BIGINT,
        resource TEXT COLLATE "C" NOT NULL,
        event TEXT COLLATE "C" NOT NULL,
        row JSONB NOT NULL,
        at DOUBLE PRECISION NOT NULL DEFAULT extract(epoch FROM clock_timestamp())
    );
    CREATE UNIQUE INDEX change_event_seq ON change_event (seq) WHERE seq IS NOT NULL;
    CREATE INDEX change_event_pending ON change_event (pos) WHERE seq IS NULL;
    CREATE INDEX change_event_resource ON change_event (resource, seq) WHERE seq IS NOT NULL;
    CREATE TABLE change_feed (
        one INTEGER PRIMARY KEY CHECK (one = 1),
        last BIGINT NOT NULL,
        purged BIGINT NOT NULL
    );
    INSERT INTO change_feed (one, last, purged) VALUES (1, 0, 0);
    CREATE FUNCTION medusa_v2_change() RETURNS trigger LANGUAGE plpgsql AS $$
    BEGIN
        IF current_setting('medusa_v2.bulk_import', true) = 'on' THEN
            RETURN NULL;
        END IF;
        IF TG_OP = 'DELETE' THEN
            INSERT INTO change_event (resource, event, row) VALUES (TG_ARGV[0], 'deleted',
                CASE WHEN TG_NARGS > 1
                    THEN jsonb_build_object('id', OLD.id, TG_ARGV[1], to_jsonb(OLD) -> TG_ARGV[1])
                    ELSE jsonb_build_object('id', OLD.id) END);
        ELSE
            INSERT INTO change_event (resource, event, row)
                VALUES (TG_ARGV[0], CASE WHEN TG_OP = 'INSERT' THEN 'created' ELSE 'updated' END, to_jsonb(NEW));
        END IF;
        RETURN NULL;
    END
    $$;
    """,
]
RESOURCE_SCHEMA_MIGRATION = 5  # the migration creating resource_schema and recording the built-ins
TOTALS_MIGRATION = 6  # the migration after which ticket's recorded spec is migrated to schema.builtin_v2 of it
CHANGES_MIGRATION = 7  # the migration after which every recorded resource gets its change trigger


def split_statements(script: str) -> list[str]:
    """Split a migration script at `;` line ends, outside `$$`-quoted function bodies."""
    statements: list[str] = []
    buf: list[str] = []
    quoted = False  # inside a $$ ... $$ body
    for line in script.splitlines():
        stripped = line.split("--", 1)[0].rstrip()
        if not stripped.strip():
            continue
        buf.append(stripped)
        if stripped.count("$$") % 2:
            quoted = not quoted
        if stripped.endswith(";") and not quoted:
            statements.append("\n".join(buf))
            buf = []
    if buf:
        raise ValueError(f"incomplete SQL statement in migration: {buf[0][:60]!r}")
    return statements


async def migrate(conn: psycopg.AsyncConnection[Any], specs: Sequence[schema.Spec] = ()) -> None:
    """Apply pending migrations, then create or migrate each derived spec: one transaction, under an advisory lock.

    The lock makes concurrent first starts (several hosts, several workers) wait
    for each other instead of racing to create the same tables.
    """
    async with conn.transaction():
        await conn.execute("SELECT pg_advisory_xact_lock(%s)", (MIGRATION_LOCK,))
        await conn.execute("CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL)")
        row = await (await conn.execute("SELECT version FROM schema_version")).fetchone()
        version = row[0] if row else 0
        if row is None:
            await conn.execute("INSERT INTO schema_version (version) VALUES (0)")
        check_schema_version(version, len(MIGRATIONS))
        for script in MIGRATIONS[version:]:
            for statement in split_statements(script):
                await conn.execute(statement)
        if version < len(MIGRATIONS):
            await conn.execute("UPDATE schema_version SET version = %s", (len(MIGRATIONS),))
        if version < RESOURCE_SCHEMA_MIGRATION <= len(MIGRATIONS):
            for name, spec in schema.BUILTIN_V1.items():
                await conn.execute(
                    "INSERT INTO resource_schema (name, version, spec) VALUES (%s, 1, %s)", (name, json.dumps(spec))
                )
        if version < TOTALS_MIGRATION <= len(MIGRATIONS):
            for name in schema.BUILTIN_V2:
                cur = await conn.execute("SELECT spec FROM resource_schema WHERE name = %s", (name,))
                (recorded,) = await cur.fetchone() or ("null",)
                await _derive(conn, schema.builtin_v2(json.loads(recorded)))
        if version < CHANGES_MIGRATION <= len(MIGRATIONS):
            cur = await conn.execute("SELECT spec FROM resource_schema ORDER BY name")
            for (recorded,) in await cur.fetchall():
                for statement in ddl_postgres.changes_statements(json.loads(recorded)):
                    await conn.execute(statement)
        for spec in specs:
            await _derive(conn, spec)


async def _derive(conn: psycopg.AsyncConnection[Any], spec: schema.Spec) -> None:
    """Create or migrate one resource's tables to `spec` and record it (inside migrate's transaction)."""
    name = spec["name"]
    found = await (await conn.execute("SELECT spec FROM resource_schema WHERE name = %s", (name,))).fetchone()
    old = json.loads(found[0]) if found is not None else None
    plan = schema.plan(old, spec)
    if not plan.changed:
        return
    if old is None:
        statements = ddl_postgres.create_statements(spec)
    else:
        required = plan.required()
        if required and await (await conn.execute(f"SELECT 1 FROM {_name(name)} LIMIT 1")).fetchone():
            raise schema.SchemaError(
                f"resource {name}: field {', '.join(required)} was added as required without a default,"
                " and existing rows have no value for it: give it a default (or make it nullable)"
            )
        statements = ddl_postgres.migrate_statements(old, spec, plan)
    try:
        async with conn.transaction():  # a savepoint: the error below names the resource
            for statement in statements:
                await conn.execute(statement)
    except (psycopg.errors.IntegrityError, psycopg.errors.ProgrammingError, psycopg.errors.DataError) as exc:
        raise schema.SchemaError(
            f"resource {name}: its schema could not be created or migrated: {_first_line(exc)}"
        ) from exc
    await conn.execute(
        "INSERT INTO resource_schema (name, version, spec) VALUES (%s, 1, %s)"
        " ON CONFLICT (name) DO UPDATE SET version = resource_schema.version + 1, spec = excluded.spec",
        (name, json.dumps(spec)),
    )

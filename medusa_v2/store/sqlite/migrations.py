"""The forward migrations of the built-in schema, and the migrate step that also derives declared resources."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterator, Sequence

from .. import schema
from ..base import check_schema_version
from . import ddl
from .connection import _busy

# Forward migrations: entry N brings the schema from version N to N + 1.
# Never edit a released entry; append a new one.
MIGRATIONS: list[str] = [
    """
    CREATE TABLE revoked_token (
        jti TEXT PRIMARY KEY,
        expires_at REAL NOT NULL
    ) WITHOUT ROWID;
    CREATE INDEX revoked_token_expires ON revoked_token (expires_at);
    CREATE TABLE login_failure (
        client TEXT NOT NULL,
        at REAL NOT NULL
    );
    CREATE INDEX login_failure_client_at ON login_failure (client, at);
    """,
    # 2: the ticket and message resources, their search indexes, idempotency keys.
    """
    CREATE TABLE ticket (
        id INTEGER PRIMARY KEY CHECK (id > 0),
        title TEXT NOT NULL,
        description TEXT NOT NULL DEFAULT '',
        state TEXT NOT NULL DEFAULT 'open' CHECK (state IN ('open', 'pending', 'closed')),
        priority INTEGER NOT NULL DEFAULT 3 CHECK (priority BETWEEN 1 AND 5),
        assignee TEXT,
        created_at TEXT NOT NULL,
        updated_at TEXT NOT NULL
    );
    -- One index per filter + sort combination a list asks for (id, the rowid, ends each).
    CREATE INDEX ticket_state ON ticket (state, id);
    CREATE INDEX ticket_state_priority ON ticket (state, priority, id);
    CREATE INDEX ticket_priority ON ticket (priority, id);
    CREATE INDEX ticket_assignee ON ticket (assignee, id);
    CREATE INDEX ticket_title ON ticket (title, id);
    CREATE INDEX ticket_created_at ON ticket (created_at, id);
    CREATE INDEX ticket_updated_at ON ticket (updated_at, id);
    CREATE INDEX ticket_state_updated_at ON ticket (state, updated_at, id);

    -- q: case-insensitive substring search; trigram phrases match any substring of 3+ characters.
    CREATE VIRTUAL TABLE ticket_search USING fts5 (
        title, description, content='ticket', content_rowid='id', tokenize='trigram'
    );
    CREATE TRIGGER ticket_search_insert AFTER INSERT ON ticket BEGIN
        INSERT INTO ticket_search (rowid, title, description) VALUES (new.id, new.title, new.description);
    END;
    CREATE TRIGGER ticket_search_delete AFTER DELETE ON ticket BEGIN
        INSERT INTO ticket_search (ticket_search, rowid, title, description)
            VALUES ('delete', old.id, old.title, old.description);
    END;
    CREATE TRIGGER ticket_search_update AFTER UPDATE OF title, description ON ticket BEGIN
        INSERT INTO ticket_search (ticket_search, rowid, title, description)
            VALUES ('delete', old.id, old.title, old.description);
        INSERT INTO ticket_search (rowid, title, description) VALUES (new.id, new.title, new.description);
    END;

    CREATE TABLE message (
        id INTEGER PRIMARY KEY CHECK (id > 0),
        ticket_id INTEGER NOT NULL REFERENCES ticket (id) ON DELETE CASCADE,
        author TEXT NOT NULL,
        body TEXT NOT NULL,
        created_at TEXT NOT NULL,
        updated_at TEXT NOT NULL
    );
    CREATE INDEX message_ticket ON message (ticket_id, id);
    CREATE INDEX message_ticket_author ON message (ticket_id, author, id);
    CREATE INDEX message_ticket_updated_at ON message (ticket_id, updated_at, id);

    CREATE VIRTUAL TABLE message_search USING fts5 (
        body, content='message', content_rowid='id', tokenize='trigram'
    );
    CREATE TRIGGER message_search_insert AFTER INSERT ON message BEGIN
        INSERT INTO message_search (rowid, body) VALUES (new.id, new.body);
    END;
    -- Also fires for the rows ON DELETE CASCADE removes with their ticket.
    CREATE TRIGGER message_search_delete AFTER DELETE ON message BEGIN
        INSERT INTO message_search (message_search, rowid, body) VALUES ('delete', old.id, old.body);
    END;
    CREATE TRIGGER message_search_update AFTER UPDATE OF body ON message BEGIN
        INSERT INTO message_search (message_search, rowid, body) VALUES ('delete', old.id, old.body);
        INSERT INTO message_search (rowid, body) VALUES (new.id, new.body);
    END;

    CREATE TABLE idempotency_key (
        scope TEXT NOT NULL,
        key TEXT NOT NULL,
        fingerprint TEXT NOT NULL,
        created_at REAL NOT NULL,
        status INTEGER,  -- NULL while the first request is in flight
        headers TEXT,
        body BLOB,
        PRIMARY KEY (scope, key)
    ) WITHOUT ROWID;
    CREATE INDEX idempotency_key_created_at ON idempotency_key (created_at);
    """,
    # 3: assigned ids come from a counter that never goes back, so a deleted row's id
    # is never given out again; ids chosen by clients (POST with id) leave it alone; an
    # import moves it past its highest id below COUNTER_LIMIT (_Import.finish).
    # Seeded past the ids assigned so far (MAX(id) + 1: what was next before).
    """
    CREATE TABLE id_counter (
        name TEXT PRIMARY KEY,
        next_id INTEGER NOT NULL
    ) WITHOUT ROWID;
    INSERT INTO id_counter (name, next_id) SELECT 'ticket', COALESCE(MAX(id), 0) + 1 FROM ticket;
    INSERT INTO id_counter (name, next_id) SELECT 'message', COALESCE(MAX(id), 0) + 1 FROM message;
    """,
    # 4: lists stay flat at millions of rows (docs/benchmarks.md). The unfiltered
    # count comes from a total kept exact by triggers, in the transaction of every
    # insert and delete (COUNT(*) read the whole table); the sort pair the benchmark
    # uses, with and without the state filter, is served in index order; deep pages
    # skip rows on narrow indexes.
    """
    CREATE TABLE row_total (
        name TEXT PRIMARY KEY,
        total INTEGER NOT NULL
    ) WITHOUT ROWID;
    INSERT INTO row_total (name, total) SELECT 'ticket', COUNT(*) FROM ticket;
    CREATE TRIGGER ticket_total_insert AFTER INSERT ON ticket BEGIN
        UPDATE row_total SET total = total + 1 WHERE name = 'ticket';
    END;
    CREATE TRIGGER ticket_total_delete AFTER DELETE ON ticket BEGIN
        UPDATE row_total SET total = total - 1 WHERE name = 'ticket';
    END;
    CREATE INDEX ticket_priority_updated_at ON ticket (priority DESC, updated_at, id);
    CREATE INDEX ticket_state_priority_updated_at ON ticket (state, priority DESC, updated_at, id);
    -- The ids alone, in order: a deep page of the default order skips rows on this
    -- narrow index (a few MB at 1M rows) instead of walking the table's full rows.
    CREATE INDEX ticket_id_order ON ticket (id);
    """,
    # 5: a list filtered on one state or priority (the commonest filter: state=open)
    # counts from totals kept per value by triggers, not by walking the index range
    # (a third of the table for state=open: docs/benchmarks.md). `value` has no type:
    # each total keeps the column's own value, so 3 is not '3'. Rows that drop to 0 stay.
    """
    CREATE TABLE value_total (
        name TEXT NOT NULL,
        value NOT NULL,
        total INTEGER NOT NULL,
        PRIMARY KEY (name, value)
    ) WITHOUT ROWID;
    INSERT INTO value_total (name, value, total) SELECT 'ticket.state', state, COUNT(*) FROM ticket GROUP BY state;
    INSERT INTO value_total (name, value, total)
        SELECT 'ticket.priority', priority, COUNT(*) FROM ticket GROUP BY priority;
    CREATE TRIGGER ticket_value_total_insert AFTER INSERT ON ticket BEGIN
        INSERT INTO value_total (name, value, total)
            VALUES ('ticket.state', new.state, 1), ('ticket.priority', new.priority, 1)
            ON CONFLICT (name, value) DO UPDATE SET total = total + 1;
    END;
    CREATE TRIGGER ticket_value_total_delete AFTER DELETE ON ticket BEGIN
        UPDATE value_total SET total = total - 1
            WHERE (name = 'ticket.state' AND value = old.state) OR (name = 'ticket.priority' AND value = old.priority);
    END;
    CREATE TRIGGER ticket_value_total_state AFTER UPDATE OF state ON ticket WHEN new.state IS NOT old.state BEGIN
        UPDATE value_total SET total = total - 1 WHERE name = 'ticket.state' AND value = old.state;
        INSERT INTO value_total (name, value, total) VALUES ('ticket.state', new.state, 1)
            ON CONFLICT (name, value) DO UPDATE SET total = total + 1;
    END;
    CREATE TRIGGER ticket_value_total_priority AFTER UPDATE OF priority ON ticket
        WHEN new.priority IS NOT old.priority BEGIN
        UPDATE value_total SET total = total - 1 WHERE name = 'ticket.priority' AND value = old.priority;
        INSERT INTO value_total (name, value, total) VALUES ('ticket.priority', new.priority, 1)
            ON CONFLICT (name, value) DO UPDATE SET total = total + 1;
    END;
    """,
    # 6: resources' schemas derived from their declarations (schema.py): each one's
    # spec and version. Ticket's and message's are recorded as they were released
    # (schema.BUILTIN_V1, in this migration's transaction: migrate).
    """
    CREATE TABLE resource_schema (
        name TEXT PRIMARY KEY,
        version INTEGER NOT NULL,
        spec TEXT NOT NULL
    ) WITHOUT ROWID;
    """,
    # 7: every top-level resource's exact counts under any filters come from its totals
    # per combination of filter values, derived from its declaration (schema.py,
    # ddl.totals_sql); they replace ticket's hand-written row and per-value totals.
    """
    DROP TRIGGER ticket_total_insert;
    DROP TRIGGER ticket_total_delete;
    DROP TABLE row_total;
    DROP TRIGGER ticket_value_total_insert;
    DROP TRIGGER ticket_value_total_delete;
    DROP TRIGGER ticket_value_total_state;
    DROP TRIGGER ticket_value_total_priority;
    DROP TABLE value_total;
    """,
    # 8: the change feed: every change of a stored row, numbered in commit order, recorded
    # by triggers derived per resource (ddl.changes_sql, added to every recorded
    # resource in this migration's transaction: migrate). `change_feed.purged` is
    # the last seq purged (older than the retention); AUTOINCREMENT never reuses one.
    """
    CREATE TABLE change_event (
        seq INTEGER PRIMARY KEY AUTOINCREMENT,
        resource TEXT NOT NULL,
        event TEXT NOT NULL,
        row TEXT NOT NULL,
        at REAL NOT NULL
    );
    CREATE INDEX change_event_resource ON change_event (resource, seq);
    CREATE TABLE change_feed (
        _one INTEGER PRIMARY KEY CHECK (_one = 1),
        purged INTEGER NOT NULL
    );
    INSERT INTO change_feed (_one, purged) VALUES (1, 0);
    """,
]
RESOURCE_SCHEMA_MIGRATION = 6  # the migration creating resource_schema and recording the built-ins
TOTALS_MIGRATION = 7  # the migration after which ticket's recorded spec is migrated to schema.builtin_v2 of it
CHANGES_MIGRATION = 8  # the migration after which every recorded resource gets its change triggers


SEARCH_AUTOMERGE = 16  # FTS5 automerge of the search indexes (see migrate)


def split_statements(script: str) -> Iterator[str]:
    """Yield the statements of a script (triggers' inner `;` included correctly).

    executescript() would commit first; migrations must run inside one transaction.
    """
    buf = ""
    for line in script.splitlines(keepends=True):
        buf += line
        if sqlite3.complete_statement(buf):
            yield buf.strip()
            buf = ""
    if buf.strip():
        raise ValueError(f"incomplete SQL statement in migration: {buf.strip()[:60]!r}")


def migrate(db: sqlite3.Connection, specs: Sequence[schema.Spec]) -> None:
    """Apply the built-in migrations, then create or migrate each derived spec, in the caller's transaction."""
    db.execute("CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL)")
    row = db.execute("SELECT version FROM schema_version").fetchone()
    version = row[0] if row else 0
    if row is None:
        db.execute("INSERT INTO schema_version (version) VALUES (0)")
    check_schema_version(version, len(MIGRATIONS))
    for script in MIGRATIONS[version:]:
        for statement in split_statements(script):
            db.execute(statement)
    db.execute("UPDATE schema_version SET version = ?", (len(MIGRATIONS),))
    if version < RESOURCE_SCHEMA_MIGRATION <= len(MIGRATIONS):
        db.executemany(
            "INSERT INTO resource_schema (name, version, spec) VALUES (?, 1, ?)",
            [(name, json.dumps(spec)) for name, spec in schema.BUILTIN_V1.items()],
        )
    if version < TOTALS_MIGRATION <= len(MIGRATIONS):
        for name in schema.BUILTIN_V2:
            (recorded,) = db.execute("SELECT spec FROM resource_schema WHERE name = ?", (name,)).fetchone()
            derive(db, schema.builtin_v2(json.loads(recorded)))
    if version < CHANGES_MIGRATION <= len(MIGRATIONS):
        for (recorded,) in db.execute("SELECT spec FROM resource_schema ORDER BY name").fetchall():
            for statement in ddl.changes_sql(json.loads(recorded)):
                db.execute(statement)
    rebuilt = False
    for spec in specs:
        rebuilt = derive(db, spec) or rebuilt
    if rebuilt:
        broken = db.execute("PRAGMA foreign_key_check").fetchone()
        if broken is not None:
            raise schema.SchemaError(f"after the migration, a row of {broken[0]} has no {broken[2]} row")
    # FTS5 merges its segments as rows come: at its default (4 segments per
    # level) every insert transaction pays for merging; 16 writes several
    # times less, for a few more segments to read per search. Set here, not
    # in a migration: an import resets the value when it ends.
    searched = {"ticket", "message", *(spec["name"] for spec in specs if spec["search"])}
    for search in sorted(name + "_search" for name in searched):
        found = db.execute(f"SELECT v FROM {search}_config WHERE k = 'automerge'").fetchone()
        if found is None or found[0] != SEARCH_AUTOMERGE:
            db.execute(f"INSERT INTO {search} ({search}, rank) VALUES ('automerge', ?)", (SEARCH_AUTOMERGE,))


def derive(db: sqlite3.Connection, spec: schema.Spec) -> bool:
    """Create or migrate one resource's tables to `spec`, recording it; return whether one was rebuilt."""
    name = spec["name"]
    found = db.execute("SELECT version, spec FROM resource_schema WHERE name = ?", (name,)).fetchone()
    old = json.loads(found[1]) if found is not None else None
    plan = schema.plan(old, spec)
    if not plan.changed:
        return False
    rebuilt = False
    try:
        if old is None:
            ddl.create(db, spec)
        else:
            rebuilt = ddl.migrate(db, old, spec, plan)
    except sqlite3.Error as exc:
        if _busy(exc):
            raise
        raise schema.SchemaError(f"resource {name}: its schema could not be created or migrated: {exc}") from exc
    db.execute(
        "INSERT INTO resource_schema (name, version, spec) VALUES (?, 1, ?)"
        " ON CONFLICT (name) DO UPDATE SET version = version + 1, spec = excluded.spec",
        (name, json.dumps(spec)),
    )
    return rebuilt

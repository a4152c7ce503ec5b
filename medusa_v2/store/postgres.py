"""The PostgreSQL store: psycopg 3 (async) over a connection pool, forward migrations.

Selected by `[Database] url = postgresql://user@host:port/db`. It keeps exactly the
semantics of the SQLite store (same ordering, filters, search, timestamps, errors), so
the same contract tests pass on both:

- text columns use the "C" collation: ORDER BY, equality and the (key, id) indexes
  compare bytes, like SQLite's BINARY collation; NULLs sort first ascending and last
  descending, as in SQLite;
- `q` is ILIKE over the search fields in the database's default collation (whose
  LC_CTYPE folds case: create the database with a UTF-8 locale such as C.UTF-8),
  backed by pg_trgm GIN indexes; `%`, `_` and `\\` in q are escaped (literal);
- ids come from a sequence that never goes back; a chosen id does not move it, an
  import moves it past the highest imported id below 2^62 (so the first POST after
  restoring a million rows does not walk them looking for a free id);
- a top-level list's count under any filters is a sum of the totals per filter
  values, kept exact by triggers in the writing transaction (ddl_postgres), not a
  COUNT(*) over the matching rows;
- every write is one transaction, committed before the method returns; checks run on
  the row locked by SELECT ... FOR UPDATE inside that transaction;
- a lost connection (server restart, failover, terminated backend) or a pool that
  cannot hand out a connection in time is StoreUnavailable (503 + Retry-After): the
  broken connection is dropped and the pool opens fresh ones, so later requests work;
- revoked tokens are checked in memory: each process LISTENs on one connection of its
  own and loads the table, and a revocation NOTIFYs every process at its COMMIT. The
  process that revoked refuses the token at once, the others once the notification
  arrives (a millisecond or so); while the listening connection is down, checks ask
  the table.

Each process opens its own pool (the daemon's workers open theirs after the fork).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections import Counter
from collections.abc import AsyncIterable, AsyncIterator, Awaitable, Callable, Mapping, Sequence
from typing import Any, TypeVar
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import psycopg
import psycopg.errors
from psycopg.rows import dict_row
from psycopg_pool import AsyncConnectionPool

from ..declaration import Declaration
from ..listing import ListQuery
from . import ddl_postgres, pages, schema
from .base import (
    COMPLETION,
    AlreadyExists,
    Check,
    IdempotentResponse,
    Item,
    KeyInFlight,
    KeyMismatch,
    NotFound,
    Parent,
    RowPage,
    Store,
    StoreUnavailable,
    Tree,
    already_exists,
    by_parent,
    check_schema_version,
    export_items,
    next_timestamp,
    refuse_repeats,
    row_keys,
    scoped_ids,
    timestamp,
)
from .sql import COUNTER_LIMIT as COUNTER_LIMIT  # re-exported: the import's sequence bound
from .sql import filter_terms
from .sql import highest_below_limit as _highest_below_limit
from .sql import quote_name as _name

log = logging.getLogger("medusa_v2.store.postgres")

T = TypeVar("T")

# Key of the advisory lock that serialises migrations (any constant unique to medusa_v2).
MIGRATION_LOCK = 0x6D656475_73613276 & 0x7FFFFFFFFFFFFFFF  # "medusa2v"
CONNECT_TIMEOUT = 5.0  # seconds to establish one connection
POOL_TIMEOUT = 5.0  # seconds a request waits for a free connection before 503
REVOKED_CHANNEL = "medusa_v2_revoked"  # NOTIFY channel: "<expires_at> <jti>" per revocation
LISTENER_NAME = "medusa_v2 revocations"  # application_name of the listening connection
REVOKED_PROBE = 10.0  # seconds of quiet after which the listening connection is probed
REVOKED_PRUNE_MIN = 1024  # revocations kept in memory before expired ones are dropped
POOL_MIN_SIZE = 2
POOL_MAX_SIZE = 10

DEEP_OFFSET = 1000  # from this offset on, a page's ids are found first (page_sql)
ANALYZE_AFTER = 10_000  # an import of at least this many rows refreshes the planner's statistics

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
    # transaction: _migrate).
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
    # transaction (_migrate).
    """
    DROP TABLE row_total;
    DROP FUNCTION medusa_v2_row_total() CASCADE;
    """,
]
RESOURCE_SCHEMA_MIGRATION = 5  # the migration creating resource_schema and recording the built-ins
TOTALS_MIGRATION = 6  # the migration after which the built-ins are migrated to schema.BUILTIN_V2

# Errors that mean "the database cannot serve this now; retry": a lost or refused
# connection, a pool with no free connection in time (PoolTimeout is an
# OperationalError), a deadlock or serialization failure (TransactionRollback), a
# cancelled statement, and a standby that refuses writes during a failover.
_UNAVAILABLE: tuple[type[BaseException], ...] = (psycopg.OperationalError, psycopg.errors.ReadOnlySqlTransaction)


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


class PostgresStore(Store):
    """Rows and shared state in PostgreSQL, through a per-process connection pool."""

    def __init__(self, url: str, *, min_size: int = POOL_MIN_SIZE, max_size: int = POOL_MAX_SIZE) -> None:
        self.url = url
        self.min_size = min_size
        self.max_size = max(min_size, max_size)
        self._pool: AsyncConnectionPool | None = None
        self._checking: asyncio.Task[None] | None = None
        # Revoked jtis (-> expiry), kept current by LISTEN/NOTIFY while `_revoked_live`;
        # without a listening connection every check asks the database.
        self._revoked: dict[str, float] = {}
        self._revoked_live = False
        self._prune_at = REVOKED_PRUNE_MIN
        self._listening: asyncio.Task[None] | None = None
        # One-row reads waiting for this loop iteration's batch: table -> (decl, id -> futures).
        self._reads: dict[str, tuple[Any, dict[int, list[asyncio.Future[dict[str, Any]]]]]] = {}
        self._reads_scheduled = False
        self._batches: set[asyncio.Task[None]] = set()

    @classmethod
    def from_url(cls, url: str) -> PostgresStore:
        """Return a store for a `postgresql://` (or `postgres://`) url.

        Two query parameters of our own size each process's pool and are removed
        before the url reaches libpq: `pool_min_size` (default 2) and `pool_max_size`
        (default 10), e.g. `postgresql://medusa@db/medusa?pool_max_size=20`. Every
        other parameter is libpq's (sslmode, connect_timeout, target_session_attrs...).
        """
        parts = urlsplit(url)
        kept: list[tuple[str, str]] = []
        sizes = {"pool_min_size": POOL_MIN_SIZE, "pool_max_size": POOL_MAX_SIZE}
        for key, value in parse_qsl(parts.query, keep_blank_values=True):
            if key in sizes:
                if not value.isdigit() or not 1 <= int(value) <= 1000:
                    raise ValueError(f"[Database] url: {key} must be an integer from 1 to 1000")
                sizes[key] = int(value)
            else:
                kept.append((key, value))
        clean = urlunsplit(parts._replace(query=urlencode(kept)))
        return cls(clean, min_size=sizes["pool_min_size"], max_size=sizes["pool_max_size"])

    # -- connections --

    async def open(self, declarations: Sequence[Declaration] = ()) -> None:
        """Migrate on one direct connection (clear errors at start), then open the pool."""
        specs = [schema.derive(decl) for decl in schema.ordered(declarations)]  # a bad one fails before connecting
        try:
            conn = await psycopg.AsyncConnection.connect(
                self.url, autocommit=True, connect_timeout=int(CONNECT_TIMEOUT)
            )
        except psycopg.Error as exc:
            raise StoreUnavailable(f"cannot connect to PostgreSQL: {_first_line(exc)}") from exc
        try:
            await self._migrate(conn, specs)
        except _UNAVAILABLE as exc:
            raise StoreUnavailable(f"PostgreSQL migration failed: {_first_line(exc)}") from exc
        finally:
            await conn.close()
        pool = AsyncConnectionPool(
            self.url,
            min_size=self.min_size,
            max_size=self.max_size,
            kwargs={"autocommit": True, "connect_timeout": CONNECT_TIMEOUT},
            timeout=POOL_TIMEOUT,
            open=False,
            name="medusa_v2",
        )
        try:
            await pool.open(wait=True, timeout=CONNECT_TIMEOUT * 2)
        except psycopg.Error as exc:
            await pool.close()
            raise StoreUnavailable(f"cannot open the PostgreSQL connection pool: {_first_line(exc)}") from exc
        self._pool = pool
        self._listening = asyncio.get_running_loop().create_task(self._listen_for_revocations())

    async def _migrate(self, conn: psycopg.AsyncConnection[Any], specs: Sequence[schema.Spec] = ()) -> None:
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
                for spec in schema.BUILTIN_V2.values():
                    await self._derive(conn, spec)
            for spec in specs:
                await self._derive(conn, spec)

    @staticmethod
    async def _derive(conn: psycopg.AsyncConnection[Any], spec: schema.Spec) -> None:
        """Create or migrate one resource's tables to `spec` and record it (inside _migrate's transaction)."""
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

    async def close(self) -> None:
        """Close the pool (idempotent)."""
        pool, self._pool = self._pool, None
        if self._listening is not None:
            self._listening.cancel()
            with contextlib.suppress(BaseException):
                await self._listening
            self._listening = None
        if self._checking is not None:
            self._checking.cancel()
            with contextlib.suppress(BaseException):
                await self._checking
            self._checking = None
        if pool is not None:
            await pool.close()

    @property
    def pool(self) -> AsyncConnectionPool:
        """Return the open pool, or raise StoreUnavailable."""
        if self._pool is None:
            raise StoreUnavailable("the store is closed")
        return self._pool

    async def _run(self, work: Callable[[psycopg.AsyncConnection[Any]], Awaitable[T]], *, read: bool = False) -> T:
        """Run `work` on a pooled connection; map connection trouble to StoreUnavailable.

        A read whose connection turns out to be dead (the server restarted or killed
        it while it sat in the pool) is tried once more on another connection: reads
        are safe to repeat. A write is not repeated (its commit may have happened):
        the request gets 503 and the client retries.
        """
        attempts = 3 if read else 1
        for attempt in range(attempts):
            try:
                async with self.pool.connection() as conn:
                    return await work(conn)
            except _UNAVAILABLE as exc:
                self._recover()
                broken = isinstance(exc, psycopg.OperationalError) and not isinstance(
                    exc, psycopg.errors.TransactionRollback | psycopg.errors.QueryCanceled
                )
                if attempt + 1 < attempts and broken:
                    continue
                raise StoreUnavailable(f"PostgreSQL: {_first_line(exc)}") from exc
        raise AssertionError("unreachable")

    def _recover(self) -> None:
        """Have the pool test its idle connections (in the background), dropping dead ones.

        After a server restart every idle connection is dead: one failed request
        triggers the check, so the following ones get fresh connections.
        """
        if self._pool is None or (self._checking is not None and not self._checking.done()):
            return
        self._checking = asyncio.get_running_loop().create_task(self._check_pool(self._pool))

    @staticmethod
    async def _check_pool(pool: AsyncConnectionPool) -> None:
        with contextlib.suppress(Exception):
            await pool.check()

    async def ping(self) -> None:
        """Run a trivial query on the schema table."""

        async def work(conn: psycopg.AsyncConnection[Any]) -> None:
            await conn.execute("SELECT version FROM schema_version")

        await self._run(work, read=True)

    # -- authentication state --

    async def revoke_token(self, jti: str, expires_at: float) -> None:
        """Insert the revocation (a repeat is a no-op) and notify every listening process."""

        async def work(conn: psycopg.AsyncConnection[Any]) -> None:
            async with conn.transaction():  # the notification goes out at COMMIT
                await conn.execute(
                    "INSERT INTO revoked_token (jti, expires_at) VALUES (%s, %s) ON CONFLICT (jti) DO NOTHING",
                    (jti, expires_at),
                )
                await conn.execute("SELECT pg_notify(%s, %s)", (REVOKED_CHANNEL, f"{expires_at!r} {jti}"))

        await self._run(work)
        self._remember_revoked(jti, expires_at)  # this process refuses it at once

    async def purge_expired(self, now: float, *, keys_before: float, failures_before: float) -> None:
        """Forget what no longer matters (see Store.purge_expired)."""

        async def work(conn: psycopg.AsyncConnection[Any]) -> None:
            await conn.execute("DELETE FROM revoked_token WHERE expires_at < %s", (now,))
            await conn.execute("DELETE FROM idempotency_key WHERE created_at < %s", (keys_before,))
            await conn.execute("DELETE FROM login_failure WHERE at < %s", (failures_before,))

        await self._run(work)

    async def is_token_revoked(self, jti: str) -> bool:
        """Answer from the revocations this process listens to, else from the table."""
        if self._revoked_live:
            return jti in self._revoked

        async def work(conn: psycopg.AsyncConnection[Any]) -> bool:
            cur = await conn.execute("SELECT 1 FROM revoked_token WHERE jti = %s", (jti,))
            return await cur.fetchone() is not None

        return await self._run(work, read=True)

    @property
    def revocations_live(self) -> bool:
        """Return whether revocation checks are answered from memory (a listener is up)."""
        return self._revoked_live

    def _remember_revoked(self, jti: str, expires_at: float) -> None:
        self._revoked[jti] = expires_at
        if len(self._revoked) > self._prune_at:
            # Expired tokens are refused by their `exp` anyway: forget their revocations.
            now = time.time()
            self._revoked = {j: e for j, e in self._revoked.items() if e > now}
            self._prune_at = max(REVOKED_PRUNE_MIN, 2 * len(self._revoked))

    async def _listen_for_revocations(self) -> None:
        """Keep `_revoked` equal to the table: LISTEN, load it, then apply notifications.

        LISTEN comes before the load, so a revocation committed in between is both
        loaded and notified (harmless), never missed. While this connection is down,
        `_revoked_live` is false and checks go to the database; it reconnects with
        backoff. A quiet connection is probed every REVOKED_PROBE seconds, so one that
        died silently is noticed within that time.
        """
        delay = 0.1
        while True:
            try:
                conn = await psycopg.AsyncConnection.connect(
                    self.url, autocommit=True, connect_timeout=int(CONNECT_TIMEOUT), application_name=LISTENER_NAME
                )
                try:
                    await conn.execute(f"LISTEN {REVOKED_CHANNEL}")
                    cur = await conn.execute("SELECT jti, expires_at FROM revoked_token")
                    self._revoked = {jti: exp for jti, exp in await cur.fetchall()}
                    self._prune_at = max(REVOKED_PRUNE_MIN, 2 * len(self._revoked))
                    self._revoked_live = True
                    delay = 0.1
                    while True:
                        async for note in conn.notifies(timeout=REVOKED_PROBE):
                            expires, _, jti = note.payload.partition(" ")
                            self._remember_revoked(jti, float(expires))
                        await asyncio.wait_for(conn.execute("SELECT 1"), CONNECT_TIMEOUT)
                finally:
                    self._revoked_live = False
                    with contextlib.suppress(Exception):
                        await conn.close()
            except asyncio.CancelledError:
                raise
            except Exception:  # noqa: S110 (any trouble: checks go to the database meanwhile)
                pass
            await asyncio.sleep(delay)
            delay = min(delay * 2, 5.0)

    async def login_failures(self, client: str, since: float) -> Sequence[float]:
        """Return the client's failure times in the window, oldest first."""

        async def work(conn: psycopg.AsyncConnection[Any]) -> list[float]:
            cur = await conn.execute(
                "SELECT at FROM login_failure WHERE client = %s AND at >= %s ORDER BY at", (client, since)
            )
            return [r[0] for r in await cur.fetchall()]

        return await self._run(work, read=True)

    async def record_login_failure(self, client: str, at: float, forget_before: float) -> None:
        """Insert one failure and drop this client's stale ones in the same transaction."""

        async def work(conn: psycopg.AsyncConnection[Any]) -> None:
            async with conn.transaction():
                await conn.execute("DELETE FROM login_failure WHERE client = %s AND at < %s", (client, forget_before))
                await conn.execute("INSERT INTO login_failure (client, at) VALUES (%s, %s)", (client, at))

        await self._run(work)

    async def clear_login_failures(self, client: str) -> None:
        """Delete the client's failures."""

        async def work(conn: psycopg.AsyncConnection[Any]) -> None:
            await conn.execute("DELETE FROM login_failure WHERE client = %s", (client,))

        await self._run(work)

    # -- resource rows --

    async def list_rows(self, decl: Declaration, query: ListQuery, parent: Parent | None = None) -> RowPage:
        """Count the matching rows and read one page, in one snapshot.

        A top-level list without q is counted from its totals; unless it is a first
        page with no sort key that is a filter field, it is planned from its counts
        (pages.py): the counts first, then the page's parts, in one read-only
        REPEATABLE READ transaction.
        """
        keys = [] if parent is not None or query.q else pages.split_keys(query.sort, _dims(decl))
        if parent is None and not query.q and (keys or query.offset):
            return await self._planned_page(decl, query, keys)
        table = _name(decl.name)
        where, params = _where(decl, query, parent)
        order = _order_by(decl, query.sort)
        deep_ok = schema.unique_id(decl)  # a deep page finds its rows by id alone
        # The count and the page come from one statement: one snapshot, one round trip.
        # An empty page (past the end) still yields the count, with NULL row columns.
        if query.q:
            sql = search_sql(decl, table, where, query.sort)
            args = [*params, query.limit, query.offset]
        else:
            if parent is None:
                # Exact, from the trigger-kept totals (ddl_postgres.totals_statements), in this statement's snapshot.
                count_sql, count_params = _counted(decl, query.filters)
            else:
                count_sql, count_params = f"SELECT COUNT(*) FROM {table}{where}", params
            sql = (
                f"WITH page AS ({page_sql(table, where, order, query.offset >= DEEP_OFFSET and deep_ok)})"
                f" SELECT ({count_sql})::BIGINT AS medusa_count, page.*"
                " FROM (SELECT 1) AS one LEFT JOIN page ON TRUE"
            )
            args = [*params, query.limit, query.offset, *count_params]

        async def work(conn: psycopg.AsyncConnection[Any]) -> RowPage:
            if parent is not None:
                async with conn.cursor(row_factory=dict_row) as check:
                    await self._require_parent(check, parent)
            # Prepared once used often (psycopg's threshold), except with q: each q gets a
            # plan for its own pattern (trigram index).
            cur = await conn.execute(sql, args, prepare=False if query.q else None)
            result = await cur.fetchall()
            columns = [c.name for c in cur.description or ()][1:]  # after medusa_count
            count = result[0][0] if result else 0
            tuples = [r[1:] for r in result if r[1] is not None]  # a NULL id: the empty page's row
            return RowPage(None, count, columns=columns, tuples=tuples)

        return await self._run(work, read=True)

    async def _planned_page(self, decl: Declaration, query: ListQuery, keys: Sequence[str]) -> RowPage:
        """Read a top-level list's page as planned from its counts (pages.py), in one snapshot."""
        table = _name(decl.name)
        totals = _name(decl.name + schema.TOTALS_SUFFIX)
        deep_ok = schema.unique_id(decl)

        async def work(conn: psycopg.AsyncConnection[Any]) -> RowPage:
            async with conn.transaction():
                await conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
                parts: list[pages.Part] | None = None
                if keys:
                    terms, params = filter_terms(query.filters, "%s")
                    where = " WHERE " + " AND ".join(terms) if terms else ""
                    names = ", ".join(_name(k) for k in keys)
                    cur = await conn.execute(
                        f"SELECT {names}, SUM(_total)::BIGINT FROM {totals}{where} GROUP BY {names}", params
                    )
                    groups = [(tuple(row[:-1]), row[-1]) for row in await cur.fetchall()]
                    count = sum(n for _, n in groups)
                    parts = pages.split(query.filters, query.sort, query.offset, query.limit, keys, groups)
                else:
                    cur = await conn.execute(*_counted(decl, query.filters))
                    count = (await cur.fetchone() or (0,))[0]
                if parts is None:
                    parts = pages.whole(query.filters, query.sort, query.offset, query.limit, count)
                columns: list[str] = []
                tuples: list[Any] = []
                for part in parts:
                    terms, params = filter_terms(part.filters, "%s")
                    where = " WHERE " + " AND ".join(terms) if terms else ""
                    order = _order_by(decl, part.sort, part.reverse)
                    sql = page_sql(table, where, order, part.offset >= DEEP_OFFSET and deep_ok)
                    cur = await conn.execute(sql, [*params, part.limit, part.offset])
                    columns = [c.name for c in cur.description or ()]
                    found = await cur.fetchall()
                    tuples.extend(reversed(found) if part.reverse else found)
                return RowPage(None, count, columns=columns, tuples=tuples)

        return await self._run(work, read=True)

    async def _require_parent(self, cur: psycopg.AsyncCursor[Any], parent: Parent, lock: str = "") -> dict[str, Any]:
        parent_decl, parent_id = parent
        await cur.execute(f"SELECT * FROM {_name(parent_decl.name)} WHERE id = %s{lock}", (parent_id,))
        found = await cur.fetchone()
        if found is None:
            raise NotFound(parent_decl.name, parent_id)
        return dict(found)

    async def _get(
        self, cur: psycopg.AsyncCursor[Any], decl: Declaration, id: int, parent: Parent | None, lock: str = ""
    ) -> dict[str, Any]:
        sql = f"SELECT * FROM {_name(decl.name)} WHERE id = %s"
        params: list[Any] = [id]
        if parent is not None:
            sql += f" AND {_name(decl.parent_column)} = %s"
            params.append(parent[1])
        await cur.execute(sql + lock, params)
        row = await cur.fetchone()
        if row is None:
            if parent is not None:
                await self._require_parent(cur, parent)  # say which one is missing
            raise NotFound(decl.name, id)
        return dict(row)

    async def get_row(self, decl: Declaration, id: int, parent: Parent | None = None) -> dict[str, Any]:
        """Return one row by id (under its parent).

        Reads of top-level rows asked for in the same event-loop iteration share one
        query (`id = ANY(...)`): under load a round trip and its psycopg overhead
        serve several requests, each of which still reads the committed state of a
        moment after it arrived.
        """
        if parent is not None:

            async def work(conn: psycopg.AsyncConnection[Any]) -> dict[str, Any]:
                async with conn.cursor(row_factory=dict_row) as cur:
                    return await self._get(cur, decl, id, parent)

            return await self._run(work, read=True)
        loop = asyncio.get_running_loop()
        future: asyncio.Future[dict[str, Any]] = loop.create_future()
        batch = self._reads.get(decl.name)
        if batch is None:
            batch = self._reads[decl.name] = (decl, {})
            if not self._reads_scheduled:
                self._reads_scheduled = True
                loop.call_soon(self._flush_reads)
        batch[1].setdefault(id, []).append(future)
        return await future

    def _flush_reads(self) -> None:
        self._reads_scheduled = False
        reads, self._reads = self._reads, {}
        loop = asyncio.get_running_loop()
        for decl, waiting in reads.values():
            task = loop.create_task(self._read_batch(decl, waiting))
            self._batches.add(task)
            task.add_done_callback(self._batches.discard)

    async def _read_batch(self, decl: Declaration, waiting: dict[int, list[asyncio.Future[dict[str, Any]]]]) -> None:
        ids = list(waiting)
        table = _name(decl.name)
        params: list[Any] = ids if len(ids) == 1 else [ids]
        sql = f"SELECT * FROM {table} WHERE id = {'%s' if len(ids) == 1 else 'ANY(%s)'}"

        async def work(conn: psycopg.AsyncConnection[Any]) -> list[Any]:
            cur = await conn.execute(sql, params)
            names = [c.name for c in cur.description or ()]
            return [dict(zip(names, values, strict=True)) for values in await cur.fetchall()]

        try:
            rows = await self._run(work, read=True)
        except BaseException as exc:  # StoreUnavailable, or a cancelled task at close
            error = exc if isinstance(exc, Exception) else StoreUnavailable("the store is closing")
            for futures in waiting.values():
                for future in futures:
                    if not future.done():
                        future.set_exception(error)
            if not isinstance(exc, Exception):
                raise
            return
        by_id = {row["id"]: row for row in rows}
        for id, futures in waiting.items():
            row = by_id.get(id)
            for i, future in enumerate(futures):
                if future.done():
                    continue  # its request went away
                if row is None:
                    future.set_exception(NotFound(decl.name, id))
                else:
                    future.set_result(row if i == 0 else dict(row))  # each caller its own dict

    async def insert_row(
        self,
        decl: Declaration,
        values: Mapping[str, Any],
        now: float,
        parent: Parent | None = None,
        check_parent: Check | None = None,
    ) -> dict[str, Any]:
        """Insert in one transaction: parent locked and checked, chosen id refused when taken."""
        row = dict(values)
        row["created_at"] = row["updated_at"] = timestamp(now)
        table = _name(decl.name)
        chosen = row.pop("id", None)
        if parent is not None:
            row[decl.parent_column] = parent[1]
        columns = ", ".join(["id", *(_name(c) for c in row)])
        marks = ", ".join(["%s"] * len(row))
        # A string id is unique under its parent only: the key is (parent field, id).
        key = "id" if schema.unique_id(decl) else f"{_name(decl.parent_column)}, id"
        sequence = _sequence(decl.name)
        given = "%s" if chosen is not None else f"nextval('{sequence}')"
        insert = f"INSERT INTO {table} ({columns}) VALUES ({given}, {marks}) ON CONFLICT ({key}) DO NOTHING RETURNING *"
        if chosen is None and decl.id_field.type is not int:
            raise ValueError(f"resource {decl.name}: a string id is chosen on create, none was given")
        completion = COMPLETION.get()

        async def work(conn: psycopg.AsyncConnection[Any]) -> dict[str, Any]:
            if parent is None and completion is None:
                # One statement, its own transaction (pooled connections are in
                # autocommit): one round trip where BEGIN ... COMMIT took four.
                async with conn.cursor(row_factory=dict_row) as cur:
                    return await insert_one(cur)
            async with conn.transaction(), conn.cursor(row_factory=dict_row) as cur:
                if parent is not None:
                    # FOR SHARE: the parent cannot change (be closed) or go until this commits.
                    parent_row = await self._require_parent(cur, parent, " FOR SHARE")
                    if check_parent is not None:
                        check_parent(parent_row)
                created = await insert_one(cur)
                if completion is not None:  # the Idempotency-Key's answer, in this same transaction
                    response = completion.respond(created)
                    await cur.execute(_COMPLETE, _completed(completion.scope, completion.key, response))
                    completion.response = response
                return created

        async def insert_one(cur: psycopg.AsyncCursor[Any]) -> dict[str, Any]:
            if chosen is not None:
                await cur.execute(insert, [chosen, *row.values()])
                created = await cur.fetchone()
                if created is None:
                    raise AlreadyExists(decl.name, chosen)
                return dict(created)
            while True:
                await cur.execute(insert, [*row.values()])
                created = await cur.fetchone()
                if created is not None:
                    return dict(created)
                # A chosen id took the one handed out: step past its block of taken ids.
                await cur.execute(f"SELECT currval('{sequence}')")
                (taken,) = (await cur.fetchone()).values()  # type: ignore[union-attr]
                await _skip_taken(cur, table, sequence, taken)

        return await self._run(work)

    async def update_row(
        self,
        decl: Declaration,
        id: int,
        values: Mapping[str, Any],
        now: float,
        check: Check | None = None,
        parent: Parent | None = None,
    ) -> dict[str, Any]:
        """Lock and check the current row, then set `values` and a later updated_at."""

        async def work(conn: psycopg.AsyncConnection[Any]) -> dict[str, Any]:
            if check is None and values:
                return await update_unchecked(conn)
            async with conn.transaction(), conn.cursor(row_factory=dict_row) as cur:
                current = await self._get(cur, decl, id, parent, " FOR UPDATE")
                if check is not None:
                    check(current)
                if not values:
                    return current  # nothing to change (a PATCH of ignored fields only)
                row = dict(values)
                row["updated_at"] = next_timestamp(now, current["updated_at"])
                assignments = ", ".join(f"{_name(c)} = %s" for c in row)
                where, key = _row_key(decl, id, parent)
                await cur.execute(
                    f"UPDATE {_name(decl.name)} SET {assignments}{where} RETURNING *", [*row.values(), *key]
                )
                return dict(await cur.fetchone())  # type: ignore[arg-type]

        async def update_unchecked(conn: psycopg.AsyncConnection[Any]) -> dict[str, Any]:
            # Nothing to check on the current row: one statement, its own transaction,
            # with next_timestamp's rule in SQL (the fixed-width text sorts in time order).
            assignments = "".join(f"{_name(c)} = %s, " for c in values)
            where, key = " WHERE id = %s", [id]
            if parent is not None:  # the row must be under this parent, whatever its key
                where += f" AND {_name(decl.parent_column)} = %s"
                key.append(parent[1])
            stamp = timestamp(now)
            async with conn.cursor(row_factory=dict_row) as cur:
                await cur.execute(
                    f"UPDATE {_name(decl.name)} SET {assignments}updated_at = CASE WHEN updated_at < %s THEN %s"
                    f" ELSE {_NEXT_MICROSECOND} END{where} RETURNING *",
                    [*values.values(), stamp, stamp, *key],
                )
                updated = await cur.fetchone()
                if updated is None:
                    await self._get(cur, decl, id, parent)  # raises NotFound, naming what is missing
                return dict(updated)  # type: ignore[arg-type]

        return await self._run(work)

    async def delete_row(
        self, decl: Declaration, id: int, check: Check | None = None, parent: Parent | None = None
    ) -> None:
        """Lock and check the current row, then delete it (children go by ON DELETE CASCADE)."""

        async def work(conn: psycopg.AsyncConnection[Any]) -> None:
            async with conn.transaction(), conn.cursor(row_factory=dict_row) as cur:
                current = await self._get(cur, decl, id, parent, " FOR UPDATE")
                if check is not None:
                    check(current)
                where, key = _row_key(decl, id, parent)
                await cur.execute(f"DELETE FROM {_name(decl.name)}{where}", key)

        await self._run(work)

    # -- bulk transfer (export / import) --

    async def export_rows(
        self, trees: Sequence[Tree], *, batch_size: int = 1000, as_json: bool = False
    ) -> AsyncIterator[tuple[Tree, Sequence[Item]]]:
        """Yield rows by id (keyset pages) with their descendants, from one REPEATABLE READ snapshot."""
        try:
            async with self.pool.connection() as conn:
                async with conn.transaction():
                    await conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
                    async with conn.cursor() as cur:
                        for tree in trees:
                            decl = tree.decl
                            table = _name(decl.name)
                            columns = ", ".join(_name(c) for c in decl.column_order)
                            first_sql = f"SELECT {columns} FROM {table} ORDER BY id LIMIT %s"
                            page_sql = f"SELECT {columns} FROM {table} WHERE id > %s ORDER BY id LIMIT %s"
                            keys = decl.json_names if as_json else decl.column_order
                            at = decl.column_order.index("id")
                            after: Any = None
                            while True:
                                if after is None:
                                    await cur.execute(first_sql, (batch_size,))
                                else:
                                    await cur.execute(page_sql, (after, batch_size))
                                tuples = await cur.fetchall()
                                if not tuples:
                                    break
                                kids = await _export_kids(cur, tree, [values[at] for values in tuples], True, as_json)
                                yield tree, export_items(keys, at, tuples, kids)
                                after = tuples[-1][at]
        except _UNAVAILABLE as exc:
            self._recover()
            raise StoreUnavailable(f"PostgreSQL: {_first_line(exc)}") from exc

    async def import_rows(
        self,
        trees: Sequence[Tree],
        batches: AsyncIterable[tuple[Tree, Sequence[Item]]],
        *,
        replace: bool = False,
        exclusive: bool = False,  # nothing to change: PostgreSQL writes its WAL either way
    ) -> int:
        """Insert batch by batch (COPY) in one transaction; ids and timestamps kept as given.

        The row totals are adjusted once at the end (the triggers stand aside for this
        transaction), and each id sequence is moved past the highest id imported
        below COUNTER_LIMIT (a huge chosen id does not exhaust the sequence; ids
        above the sequence that are taken are skipped when assigned).
        """
        decls = [level.decl for tree in trees for level in tree.walk()]
        columns = {decl.name: [f.name for f in decl.fields] for decl in decls}
        copy_sql = {decl.name: _copy_sql(_name(decl.name), columns[decl.name]) for decl in decls}

        async def work(conn: psycopg.AsyncConnection[Any]) -> int:
            count = 0
            seen: dict[str, set[Any]] = {tree.decl.name: set() for tree in trees}
            highest = {decl.name: 0 for decl in decls if decl.by_name["id"].type is int}
            # Rows added and removed per combination of filter values, for the totals:
            # their triggers stand aside (medusa_v2.bulk_import) and the import adds
            # its counts once at the end, one new version of each row it touches.
            counted: dict[str, Counter[tuple[Any, ...]]] = {}
            async with conn.transaction(), conn.cursor() as cur:
                await cur.execute("SELECT set_config('medusa_v2.bulk_import', 'on', true)")
                async for tree, batch in batches:
                    decl = tree.decl
                    table = _name(decl.name)
                    ids = [row["id"] for row, _ in batch]
                    refuse_repeats(decl, ids)
                    again = seen[decl.name]
                    for i in ids:
                        if i in again:
                            raise AlreadyExists(decl.name, i)
                    again.update(ids)
                    existing = await _existing(cur, table, ids)
                    if existing:
                        if not replace:
                            raise AlreadyExists(decl.name, next(i for i in ids if i in existing))
                        # Their descendants go by ON DELETE CASCADE.
                        returning = ", ".join(_name(d) for d in _dims(decl)) or "1"
                        await cur.execute(
                            f"DELETE FROM {table} WHERE id = ANY(%s) RETURNING {returning}", (sorted(existing),)
                        )
                        if decl.parent is None:
                            gone = counted.setdefault(decl.name, Counter())
                            gone.subtract(tuple(found) for found in await cur.fetchall())
                    for level, items in tree.levels(batch):
                        level_decl = level.decl
                        rows = [row for row, _ in items]
                        if level is not tree:
                            keys = row_keys(level_decl, rows)
                            refuse_repeats(level_decl, keys)
                            taken = await _taken(cur, level_decl, keys)
                            if taken:
                                raise already_exists(level_decl, next(k for k in keys if k in taken))
                        names = columns[level_decl.name]
                        await _copy(cur, copy_sql[level_decl.name], [tuple(row[c] for c in names) for row in rows])
                        if level_decl.parent is None:
                            dims = _dims(level_decl)
                            added = counted.setdefault(level_decl.name, Counter())
                            added.update(tuple(row[d] for d in dims) if dims else (1,) for row in rows)
                        if level_decl.name in highest:
                            top = _highest_below_limit([row["id"] for row in rows])
                            highest[level_decl.name] = max(highest[level_decl.name], top)
                    count += len(batch)
                for name, top in highest.items():
                    if top:
                        await _advance_sequence(cur, _sequence(name), top)
                by_name = {decl.name: decl for decl in decls}
                for name, counts in counted.items():
                    await _add_totals(cur, by_name[name], counts)
                if count >= ANALYZE_AFTER:
                    await _settle(cur, [decl.name for decl in decls])
            return count

        try:
            count = await self._run(work)
        except psycopg.IntegrityError as exc:
            raise StoreUnavailable(f"the import broke a database constraint: {_first_line(exc)}") from exc
        if count >= ANALYZE_AFTER:
            await self._vacuum([decl.name for decl in decls])
        return count

    async def _vacuum(self, tables: Sequence[str]) -> None:
        """VACUUM freshly imported tables (outside the import's transaction, committed by now).

        It sets the visibility map, so counts and deep pages are index-only scans at
        once rather than after autovacuum's next visit, and the rows' hint bits, so
        the first reads do not write every page. The import has committed: a failure
        here is logged, never reported as a failed import.
        """
        names = ", ".join(_name(t) for t in tables)

        async def work(conn: psycopg.AsyncConnection[Any]) -> None:
            await conn.execute(f"VACUUM {names}")  # pooled connections are in autocommit

        try:
            await self._run(work)
        except StoreUnavailable as exc:
            log.warning("VACUUM after the import failed (autovacuum will catch up): %s", exc)

    # -- idempotency keys --

    async def claim_idempotency_key(
        self, scope: str, key: str, fingerprint: str, now: float, *, expire_before: float, stale_before: float
    ) -> IdempotentResponse | None:
        """Purge expired keys, then claim this one or report how it is taken."""

        async def work(conn: psycopg.AsyncConnection[Any]) -> IdempotentResponse | None:
            async with conn.transaction(), conn.cursor() as cur:
                await cur.execute("DELETE FROM idempotency_key WHERE created_at < %s", (expire_before,))
                # A concurrent claim of the same key waits here for the first to commit.
                await cur.execute(
                    "INSERT INTO idempotency_key (scope, key, fingerprint, created_at) VALUES (%s, %s, %s, %s)"
                    " ON CONFLICT (scope, key) DO NOTHING RETURNING 1",
                    (scope, key, fingerprint, now),
                )
                if await cur.fetchone() is not None:
                    return None
                await cur.execute(
                    "SELECT fingerprint, created_at, status, headers, body FROM idempotency_key"
                    " WHERE scope = %s AND key = %s FOR UPDATE",
                    (scope, key),
                )
                found = await cur.fetchone()
                if found is None:  # released between the insert and this read: claim it now
                    await cur.execute(
                        "INSERT INTO idempotency_key (scope, key, fingerprint, created_at) VALUES (%s, %s, %s, %s)",
                        (scope, key, fingerprint, now),
                    )
                    return None
                stored_fingerprint, created_at, status, headers, body = found
                if stored_fingerprint != fingerprint:
                    raise KeyMismatch(key)
                if status is not None:
                    return IdempotentResponse(status, json.loads(headers), bytes(body) if body is not None else b"")
                if created_at >= stale_before:
                    raise KeyInFlight(key)
                # Held by a request that never finished (its process died): take it over.
                await cur.execute(
                    "UPDATE idempotency_key SET created_at = %s WHERE scope = %s AND key = %s", (now, scope, key)
                )
                return None

        return await self._run(work)

    async def complete_idempotency_key(self, scope: str, key: str, response: IdempotentResponse) -> None:
        """Store the response to replay."""

        async def work(conn: psycopg.AsyncConnection[Any]) -> None:
            await conn.execute(_COMPLETE, _completed(scope, key, response))

        await self._run(work)

    async def release_idempotency_key(self, scope: str, key: str) -> None:
        """Delete the in-flight key (a finished one is kept)."""

        async def work(conn: psycopg.AsyncConnection[Any]) -> None:
            await conn.execute(
                "DELETE FROM idempotency_key WHERE scope = %s AND key = %s AND status IS NULL", (scope, key)
            )

        await self._run(work)


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def _row_key(decl: Declaration, id: Any, parent: Parent | None) -> tuple[str, tuple[Any, ...]]:
    """Return ` WHERE ...` and its parameters addressing one row (a string id is unique under its parent only)."""
    if schema.unique_id(decl) or parent is None:
        return " WHERE id = %s", (id,)
    return f" WHERE id = %s AND {_name(decl.parent_column)} = %s", (id, parent[1])


def _sequence(table: str) -> str:
    _name(table)  # validated
    return f"{table}_id_seq"


_COMPLETE = "UPDATE idempotency_key SET status = %s, headers = %s, body = %s WHERE scope = %s AND key = %s"


def _completed(scope: str, key: str, response: IdempotentResponse) -> tuple[Any, ...]:
    """Return _COMPLETE's parameters."""
    return (response.status, json.dumps(dict(response.headers)), response.body, scope, key)


async def _add_totals(cur: psycopg.AsyncCursor[Any], decl: Declaration, counts: Counter[tuple[Any, ...]]) -> None:
    """Add an import's rows per combination of filter values to the totals (its triggers stood aside).

    Deltas, not a recount: writers committing meanwhile keep their own counts. The
    key is computed by the same SQL as the triggers' (ddl_postgres.totals_statements).
    """
    dims = _dims(decl)
    changed = [(values, n) for values, n in counts.items() if n]
    if not changed:
        return
    every = _name(decl.name + schema.COUNT_SUFFIX)
    await cur.execute(
        f"INSERT INTO {every} AS t (_shard, _total) VALUES (0, %s)"
        " ON CONFLICT (_shard) DO UPDATE SET _total = t._total + EXCLUDED._total",
        (sum(n for _, n in changed),),
    )
    types = {f.name: "bigint" if f.type is int else "text" for f in decl.fields}
    arrays = [[values[i] for values, _ in changed] for i in range(len(dims))]
    unnest = ", ".join([*(f"%s::{types[d]}[]" for d in dims), "%s::bigint[]"])
    columns = "".join(f"{_name(d)}, " for d in dims)
    await cur.execute(
        f"INSERT INTO {_name(decl.name + schema.TOTALS_SUFFIX)} AS t (_key, _shard, {columns}_total)"
        f" SELECT {ddl_postgres.totals_key('v', dims)}, 0, {''.join(f'v.{_name(d)}, ' for d in dims)}v._n"
        f" FROM unnest({unnest}) AS v({columns}_n) ORDER BY 1"
        " ON CONFLICT (_key, _shard) DO UPDATE SET _total = t._total + EXCLUDED._total",
        [*arrays, [n for _, n in changed]],
    )


async def _skip_taken(cur: psycopg.AsyncCursor[Any], table: str, sequence: str, taken: int) -> None:
    """Move the sequence past the block of chosen ids that starts at `taken`.

    Only forward (nextval), never setval: concurrent inserts can never be handed an
    id twice, and a deleted id never comes back.
    """
    await cur.execute(
        f"SELECT t.id FROM {table} t WHERE t.id >= %s"
        f" AND NOT EXISTS (SELECT 1 FROM {table} u WHERE u.id = t.id + 1) ORDER BY t.id LIMIT 1",
        (taken,),
    )
    found = await cur.fetchone()
    last = next(iter(found.values())) if found else taken  # the end of the taken block
    if last > taken:
        await cur.execute(
            f"SELECT MAX(v) FROM (SELECT nextval('{sequence}') AS v FROM generate_series(1, %s)) s", (last - taken,)
        )


async def _advance_sequence(cur: psycopg.AsyncCursor[Any], sequence: str, taken: int) -> None:
    """Move the sequence so its next value is past `taken` (never backwards).

    ALTER SEQUENCE holds off every other nextval/setval on it until this transaction
    ends, so nothing is handed out between reading the position and setting it.
    """
    await cur.execute(f"ALTER SEQUENCE {sequence} AS BIGINT")
    await cur.execute(f"SELECT last_value, is_called FROM {sequence}")
    last, called = await cur.fetchone()  # type: ignore[misc]
    upcoming = last + 1 if called else last
    if taken >= upcoming:
        await cur.execute("SELECT setval(%s, %s, true)", (sequence, taken))


async def _settle(cur: psycopg.AsyncCursor[Any], tables: Sequence[str]) -> None:
    """After a big import: merge the trigram indexes' pending lists, refresh the planner's statistics.

    Without statistics the planner guesses at a million new rows until autovacuum
    comes by; the GIN pending list (fastupdate) would be scanned by every `q` until
    then. Both run inside the import's transaction (ANALYZE counts its own rows).
    """
    for table in tables:
        await cur.execute(
            "SELECT c.relname FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid"
            " JOIN pg_am a ON a.oid = c.relam WHERE i.indrelid = %s::regclass AND a.amname = 'gin'",
            (table,),
        )
        for (index,) in await cur.fetchall():
            await cur.execute("SELECT gin_clean_pending_list(%s::regclass)", (index,))
        await cur.execute(f"ANALYZE {_name(table)}")


def _copy_sql(table: str, columns: Sequence[str]) -> str:
    return f"COPY {table} ({', '.join(_name(c) for c in columns)}) FROM STDIN"


async def _copy(cur: psycopg.AsyncCursor[Any], sql: str, rows: Sequence[Sequence[Any]]) -> None:
    """Insert rows with COPY (several times faster than one INSERT per row)."""
    async with cur.copy(sql) as copy:
        for row in rows:
            await copy.write_row(row)


async def _export_kids(
    cur: psycopg.AsyncCursor[Any], tree: Tree, parent_ids: Sequence[Any], ranged: bool, as_json: bool
) -> list[dict[Any, list[Item]]]:
    """Return, per child tree of `tree`, the items under each of `parent_ids` (with their own descendants).

    `ranged`: the parents are one keyset page (every row from the first id to the
    last), so their children are one range of the parent index; deeper down, the
    parents are looked up by their ids.
    """
    found: list[dict[Any, list[Item]]] = []
    for child in tree.children:
        decl = child.decl
        parent_field = _name(decl.parent_column)
        columns = ", ".join(_name(c) for c in decl.column_order)
        select = f"SELECT {columns} FROM {_name(decl.name)} WHERE {parent_field}"
        if ranged:
            await cur.execute(
                f"{select} BETWEEN %s AND %s ORDER BY {parent_field}, id", (parent_ids[0], parent_ids[-1])
            )
        else:
            await cur.execute(f"{select} = ANY(%s) ORDER BY {parent_field}, id", (list(parent_ids),))
        tuples = await cur.fetchall()
        at = decl.column_order.index("id")
        grandkids = await _export_kids(cur, child, [values[at] for values in tuples], False, as_json) if tuples else []
        found.append(by_parent(decl, tuples, grandkids, as_json))
    return found


async def _taken(cur: psycopg.AsyncCursor[Any], decl: Declaration, keys: Sequence[Any]) -> set[Any]:
    """Return which keys of `row_keys` are rows of `decl`'s table."""
    if not scoped_ids(decl):
        return await _existing(cur, _name(decl.name), keys)
    wanted = set(keys)
    await cur.execute(
        f"SELECT {_name(decl.parent_column)}, id FROM {_name(decl.name)} WHERE id = ANY(%s)",
        (sorted({key[1] for key in keys}),),
    )
    return {tuple(found) for found in await cur.fetchall() if tuple(found) in wanted}


async def _existing(cur: psycopg.AsyncCursor[Any], table: str, ids: Sequence[Any]) -> set[Any]:
    """Return which of `ids` are rows of `table`."""
    if not ids:
        return set()
    await cur.execute(f"SELECT id FROM {table} WHERE id = ANY(%s)", (list(ids),))
    return {r[0] if isinstance(r, tuple) else r["id"] for r in await cur.fetchall()}


def page_sql(table: str, where: str, order: str, deep: bool = False) -> str:
    """Return the statement reading one page (LIMIT and OFFSET left as parameters).

    A deep page (`deep`: offset DEEP_OFFSET or more) skips rows on the ids alone,
    an index-only scan of the sort order's index (which ends with id), and reads
    only the page's rows in full.
    """
    if deep:
        return (
            f"SELECT * FROM {table} WHERE id IN (SELECT id FROM {table}{where} ORDER BY {order} LIMIT %s OFFSET %s)"
            f" ORDER BY {order}"
        )
    return f"SELECT * FROM {table}{where} ORDER BY {order} LIMIT %s OFFSET %s"


def search_sql(decl: Declaration, table: str, where: str, sort: Sequence[tuple[str, bool]]) -> str:
    """Return the statement counting a list with q and reading its page (LIMIT and OFFSET left as parameters).

    The matches are found once, in a MATERIALIZED set the planner cannot merge into
    the sort (its guess that a substring matches ~1% of the rows would make it walk
    the sort order's index filtering every row until it has a page: for a rare term,
    most of the table, instead of a few trigram index pages). The set is narrow (the
    key and the sort columns); the count and the page both read it, and only the
    page's rows are read in full. An empty page still yields the count (NULL row).
    """
    key = ["id"] if schema.unique_id(decl) else [decl.parent_column, "id"]
    kept = ", ".join(_name(c) for c in dict.fromkeys([*key, *(name for name, _ in sort)]))
    joined = " AND ".join(f"t.{_name(c)} = ids.{_name(c)}" for c in key)
    return (
        f"WITH found AS MATERIALIZED (SELECT {kept} FROM {table}{where}),"
        f" ids AS (SELECT {kept} FROM found ORDER BY {_order_by(decl, sort)} LIMIT %s OFFSET %s),"
        f" page AS (SELECT t.* FROM {table} AS t JOIN ids ON {joined} ORDER BY {_order_by(decl, sort, table='t')})"
        " SELECT (SELECT COUNT(*) FROM found)::BIGINT AS medusa_count, page.*"
        " FROM (SELECT 1) AS one LEFT JOIN page ON TRUE"
    )


def _like_pattern(q: str) -> str:
    """Return an ILIKE pattern matching `q` as a literal substring (`\\` is LIKE's default escape)."""
    return "%" + q.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"


def _where(decl: Declaration, query: ListQuery, parent: Parent | None) -> tuple[str, list[Any]]:
    """Return ` WHERE ...` and its parameters for a list's parent, filters and q."""
    terms: list[str] = []
    params: list[Any] = []
    if parent is not None:
        terms.append(f"{_name(decl.parent_column)} = %s")
        params.append(parent[1])
    more, values = filter_terms(query.filters, "%s")
    terms.extend(more)
    params.extend(values)
    if query.q:
        # ILIKE in the default collation (case folded by its LC_CTYPE), which the
        # trigram indexes are built in, so the planner can use them for q of 3+ characters.
        fields = [f.name for f in decl.search_fields]
        terms.append("(" + " OR ".join(f'({_name(f)} COLLATE "default") ILIKE %s' for f in fields) + ")")
        params.extend([_like_pattern(query.q)] * len(fields))
    return (" WHERE " + " AND ".join(terms) if terms else ""), params


def _dims(decl: Declaration) -> list[str]:
    return [f.name for f in decl.filter_fields]


# One microsecond after a row's updated_at, in base.timestamp's format.
_NEXT_MICROSECOND = """to_char(updated_at::timestamp + interval '1 microsecond', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"')"""


def _counted(decl: Declaration, filters: Any) -> tuple[str, list[Any]]:
    """Return the query of a top-level list's exact count under its filters, from its totals (all: its count)."""
    terms, params = filter_terms(filters, "%s")
    if not terms:
        return f"SELECT COALESCE(SUM(_total), 0) FROM {_name(decl.name + schema.COUNT_SUFFIX)}", []
    where = " WHERE " + " AND ".join(terms)
    return f"SELECT COALESCE(SUM(_total), 0) FROM {_name(decl.name + schema.TOTALS_SUFFIX)}{where}", params


def _order_by(decl: Declaration, sort: Sequence[tuple[str, bool]], reverse: bool = False, table: str = "") -> str:
    """Return the ORDER BY list: the requested keys, then id in the last key's direction (all turned if `reverse`).

    As in SQLite: NULLs first ascending, last descending (said only for nullable
    columns: their index is built NULLS FIRST, and its backward scan gives DESC NULLS
    LAST; a NOT NULL column keeps the default, which its plain index serves both
    ways); the id makes the order total. `table`: the columns' qualifier, if needed.
    """
    nullable = {f.name for f in decl.fields if getattr(f, "nullable", False)}
    at = f"{table}." if table else ""
    terms: list[str] = []
    for name, asked in sort:
        desc = asked != reverse
        nulls = (" NULLS LAST" if desc else " NULLS FIRST") if name in nullable else ""
        terms.append(f"{at}{_name(name)} {'DESC' if desc else 'ASC'}{nulls}")
        if name == "id":
            return ", ".join(terms)  # unique: later keys could not change the order
    terms.append(f"{at}id DESC" if (bool(sort) and sort[-1][1]) != reverse else f"{at}id ASC")
    return ", ".join(terms)

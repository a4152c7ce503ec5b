"""The embedded SQLite store: one WAL database file, forward migrations.

Calls run on the event loop thread: statements here are short indexed look-ups and
single-row writes (tens of microseconds), cheaper than a thread hop per request.
Every write is one transaction committed before the method returns.
"""

from __future__ import annotations

import contextlib
import json
import sqlite3
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

from .base import (
    AlreadyExists,
    Check,
    IdempotentResponse,
    KeyInFlight,
    KeyMismatch,
    NotFound,
    Parent,
    RowPage,
    Store,
    StoreUnavailable,
    next_timestamp,
    timestamp,
)

BUSY_TIMEOUT_MS = 5000

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
]


def path_from_url(url: str) -> str:
    """Return the database path of an `sqlite:///abs/path` or `sqlite:///:memory:` url."""
    if not url.startswith("sqlite:"):
        raise ValueError(f"not an sqlite url: {url!r}")
    rest = url[len("sqlite:") :]
    if rest.startswith("///"):
        rest = rest[2:]
        return ":memory:" if rest == "/:memory:" else rest
    return rest


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


class SQLiteStore(Store):
    """The default store, in one SQLite file beside config.ini."""

    def __init__(self, path: str) -> None:
        self.path = path
        self._db: sqlite3.Connection | None = None

    @classmethod
    def from_url(cls, url: str) -> SQLiteStore:
        """Return a store for an `sqlite:` database url."""
        return cls(path_from_url(url))

    @property
    def db(self) -> sqlite3.Connection:
        """Return the open connection, or raise StoreUnavailable."""
        if self._db is None:
            raise StoreUnavailable("the store is closed")
        return self._db

    async def open(self) -> None:
        """Open the file (WAL, busy timeout) and apply pending migrations."""
        try:
            db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        except sqlite3.Error as exc:
            raise StoreUnavailable(f"cannot open the SQLite database: {exc}") from exc
        db.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
        db.execute("PRAGMA journal_mode = WAL")
        # NORMAL in WAL mode: a committed transaction survives a crash of the process;
        # FULL would also survive power loss at one fsync per commit (docs/durability.md).
        db.execute("PRAGMA synchronous = NORMAL")
        db.execute("PRAGMA foreign_keys = ON")
        # Short `q` (under 3 characters) cannot use the trigram index: those rows are
        # matched with this fold, close to the index's own case folding (Unicode).
        db.create_function("medusa_fold", 1, _fold, deterministic=True)
        self._db = db
        self._migrate()

    def _migrate(self) -> None:
        with self.transaction() as db:
            db.execute("CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL)")
            row = db.execute("SELECT version FROM schema_version").fetchone()
            version = row[0] if row else 0
            if row is None:
                db.execute("INSERT INTO schema_version (version) VALUES (0)")
            if version > len(MIGRATIONS):
                raise StoreUnavailable(
                    f"the database schema (version {version}) is newer than this medusa_v2 "
                    f"(version {len(MIGRATIONS)}); upgrade medusa_v2"
                )
            for script in MIGRATIONS[version:]:
                for statement in split_statements(script):
                    db.execute(statement)
            db.execute("UPDATE schema_version SET version = ?", (len(MIGRATIONS),))

    @contextlib.contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        """Run a block as one write transaction: committed on success, else rolled back."""
        db = self.db
        try:
            db.execute("BEGIN IMMEDIATE")
        except sqlite3.OperationalError as exc:
            raise StoreUnavailable(f"the database is busy: {exc}") from exc
        try:
            yield db
        except BaseException:
            db.execute("ROLLBACK")
            raise
        else:
            try:
                db.execute("COMMIT")
            except sqlite3.OperationalError as exc:
                if db.in_transaction:
                    db.execute("ROLLBACK")
                raise StoreUnavailable(f"the commit failed: {exc}") from exc

    async def close(self) -> None:
        """Close the connection (idempotent)."""
        if self._db is not None:
            self._db.close()
            self._db = None

    async def ping(self) -> None:
        """Run a trivial query on the schema table."""
        try:
            self.db.execute("SELECT version FROM schema_version").fetchone()
        except sqlite3.Error as exc:
            raise StoreUnavailable(str(exc)) from exc

    async def revoke_token(self, jti: str, expires_at: float) -> None:
        """Insert the revocation; purge revocations whose tokens have expired anyway."""
        with self.transaction() as db:
            db.execute(
                "INSERT INTO revoked_token (jti, expires_at) VALUES (?, ?)"
                " ON CONFLICT (jti) DO NOTHING",
                (jti, expires_at),
            )

    async def purge_expired_revocations(self, now: float) -> None:
        """Delete revocations of tokens that have expired (they are refused anyway)."""
        with self.transaction() as db:
            db.execute("DELETE FROM revoked_token WHERE expires_at < ?", (now,))

    async def is_token_revoked(self, jti: str) -> bool:
        """Look the jti up in the revocation table."""
        try:
            row = self.db.execute("SELECT 1 FROM revoked_token WHERE jti = ?", (jti,)).fetchone()
        except sqlite3.Error as exc:
            raise StoreUnavailable(str(exc)) from exc
        return row is not None

    async def login_failures(self, client: str, since: float) -> Sequence[float]:
        """Return the client's failure times in the window."""
        try:
            rows = self.db.execute(
                "SELECT at FROM login_failure WHERE client = ? AND at >= ? ORDER BY at",
                (client, since),
            ).fetchall()
        except sqlite3.Error as exc:
            raise StoreUnavailable(str(exc)) from exc
        return [r[0] for r in rows]

    async def record_login_failure(self, client: str, at: float, forget_before: float) -> None:
        """Insert one failure and drop this client's stale ones in the same transaction."""
        with self.transaction() as db:
            db.execute("DELETE FROM login_failure WHERE client = ? AND at < ?", (client, forget_before))
            db.execute("INSERT INTO login_failure (client, at) VALUES (?, ?)", (client, at))

    async def clear_login_failures(self, client: str) -> None:
        """Delete the client's failures."""
        with self.transaction() as db:
            db.execute("DELETE FROM login_failure WHERE client = ?", (client,))

    # -- resource rows --

    async def list_rows(self, decl: Any, query: Any, parent: Parent | None = None) -> RowPage:
        """Count the matching rows, then read one page of them in the same snapshot."""
        table = _name(decl.name)
        if parent is not None:
            self._require_parent(parent)
        where, params = _where(decl, query, parent)
        order = _order_by(query.sort)
        db = self.db
        try:
            db.execute("BEGIN")  # one read snapshot for the count and the page
            try:
                count = db.execute(f"SELECT COUNT(*) FROM {table}{where}", params).fetchone()[0]
                rows: list[dict[str, Any]] = []
                if query.offset < count:
                    cursor = db.execute(
                        f"SELECT * FROM {table}{where} ORDER BY {order} LIMIT ? OFFSET ?",
                        [*params, query.limit, query.offset],
                    )
                    rows = _dicts(cursor)
            finally:
                db.execute("COMMIT")
        except sqlite3.Error as exc:
            raise StoreUnavailable(str(exc)) from exc
        return RowPage(rows, count)

    def _require_parent(self, parent: Parent) -> None:
        parent_decl, parent_id = parent
        try:
            found = self.db.execute(f"SELECT 1 FROM {_name(parent_decl.name)} WHERE id = ?", (parent_id,)).fetchone()
        except sqlite3.Error as exc:
            raise StoreUnavailable(str(exc)) from exc
        if found is None:
            raise NotFound(parent_decl.name, parent_id)

    async def get_row(self, decl: Any, id: int, parent: Parent | None = None) -> dict[str, Any]:
        """Return one row by id (under its parent)."""
        try:
            return self._get(self.db, decl, id, parent)
        except sqlite3.Error as exc:
            raise StoreUnavailable(str(exc)) from exc

    def _get(self, db: sqlite3.Connection, decl: Any, id: int, parent: Parent | None) -> dict[str, Any]:
        sql = f"SELECT * FROM {_name(decl.name)} WHERE id = ?"
        params: list[Any] = [id]
        if parent is not None:
            sql += f" AND {_name(decl.parent_field)} = ?"
            params.append(parent[1])
        rows = _dicts(db.execute(sql, params))
        if not rows:
            if parent is not None:
                self._require_parent(parent)  # say which one is missing
            raise NotFound(decl.name, id)
        return rows[0]

    async def insert_row(
        self,
        decl: Any,
        values: Mapping[str, Any],
        now: float,
        parent: Parent | None = None,
        check_parent: Check | None = None,
    ) -> dict[str, Any]:
        """Insert in one transaction: parent checked, chosen id refused when taken."""
        row = dict(values)
        row["created_at"] = row["updated_at"] = timestamp(now)
        table = _name(decl.name)
        with self.transaction() as db:
            if parent is not None:
                parent_decl, parent_id = parent
                parent_row = self._get(db, parent_decl, parent_id, None)
                if check_parent is not None:
                    check_parent(parent_row)
                row[decl.parent_field] = parent_id
            if row.get("id") is not None:
                if db.execute(f"SELECT 1 FROM {table} WHERE id = ?", (row["id"],)).fetchone():
                    raise AlreadyExists(decl.name, row["id"])
            else:
                row.pop("id", None)
            columns = ", ".join(_name(c) for c in row)
            marks = ", ".join("?" for _ in row)
            new_id = db.execute(f"INSERT INTO {table} ({columns}) VALUES ({marks})", list(row.values())).lastrowid
            assert new_id is not None  # an INSERT always sets it
            return self._get(db, decl, new_id, None)

    async def update_row(
        self,
        decl: Any,
        id: int,
        values: Mapping[str, Any],
        now: float,
        check: Check | None = None,
        parent: Parent | None = None,
    ) -> dict[str, Any]:
        """Check the current row, then set `values` and a later updated_at, in one transaction."""
        with self.transaction() as db:
            current = self._get(db, decl, id, parent)
            if check is not None:
                check(current)
            if not values:
                return current  # nothing to change (a PATCH of ignored fields only)
            row = dict(values)
            row["updated_at"] = next_timestamp(now, current["updated_at"])
            assignments = ", ".join(f"{_name(c)} = ?" for c in row)
            db.execute(f"UPDATE {_name(decl.name)} SET {assignments} WHERE id = ?", [*row.values(), id])
            return self._get(db, decl, id, None)

    async def delete_row(self, decl: Any, id: int, check: Check | None = None, parent: Parent | None = None) -> None:
        """Check the current row, then delete it (children go by ON DELETE CASCADE)."""
        with self.transaction() as db:
            current = self._get(db, decl, id, parent)
            if check is not None:
                check(current)
            db.execute(f"DELETE FROM {_name(decl.name)} WHERE id = ?", (id,))

    # -- idempotency keys --

    async def claim_idempotency_key(
        self, scope: str, key: str, fingerprint: str, now: float, *, expire_before: float, stale_before: float
    ) -> IdempotentResponse | None:
        """Purge expired keys, then claim this one or report how it is taken."""
        with self.transaction() as db:
            db.execute("DELETE FROM idempotency_key WHERE created_at < ?", (expire_before,))
            row = db.execute(
                "SELECT fingerprint, created_at, status, headers, body FROM idempotency_key"
                " WHERE scope = ? AND key = ?",
                (scope, key),
            ).fetchone()
            if row is not None:
                stored_fingerprint, created_at, status, headers, body = row
                if stored_fingerprint != fingerprint:
                    raise KeyMismatch(key)
                if status is not None:
                    return IdempotentResponse(status, json.loads(headers), bytes(body) if body is not None else b"")
                if created_at >= stale_before:
                    raise KeyInFlight(key)
                # Held by a request that never finished (its process died): take it over.
                db.execute("DELETE FROM idempotency_key WHERE scope = ? AND key = ?", (scope, key))
            db.execute(
                "INSERT INTO idempotency_key (scope, key, fingerprint, created_at) VALUES (?, ?, ?, ?)",
                (scope, key, fingerprint, now),
            )
            return None

    async def complete_idempotency_key(self, scope: str, key: str, response: IdempotentResponse) -> None:
        """Store the response to replay."""
        with self.transaction() as db:
            db.execute(
                "UPDATE idempotency_key SET status = ?, headers = ?, body = ? WHERE scope = ? AND key = ?",
                (response.status, json.dumps(dict(response.headers)), response.body, scope, key),
            )

    async def release_idempotency_key(self, scope: str, key: str) -> None:
        """Delete the in-flight key (a finished one is kept)."""
        with self.transaction() as db:
            db.execute("DELETE FROM idempotency_key WHERE scope = ? AND key = ? AND status IS NULL", (scope, key))


def _fold(text: str | None) -> str | None:
    return None if text is None else text.lower()


def _name(identifier: str) -> str:
    """Quote a table or column name (names come from declarations, never from clients)."""
    if not identifier.replace("_", "").isalnum() or not identifier.isascii():
        raise ValueError(f"not a plain SQL identifier: {identifier!r}")
    return f'"{identifier}"'


def _dicts(cursor: sqlite3.Cursor) -> list[dict[str, Any]]:
    names = [d[0] for d in cursor.description]
    return [dict(zip(names, row, strict=True)) for row in cursor.fetchall()]


def _where(decl: Any, query: Any, parent: Parent | None) -> tuple[str, list[Any]]:
    """Return ` WHERE ...` and its parameters for a list's parent, filters and q."""
    terms: list[str] = []
    params: list[Any] = []
    if parent is not None:
        terms.append(f"{_name(decl.parent_field)} = ?")
        params.append(parent[1])
    for name, allowed in query.filters.items():
        terms.append(f"{_name(name)} IN ({', '.join('?' for _ in allowed)})")
        params.extend(allowed)
    if query.q:
        search = _name(decl.name + "_search")
        if len(query.q) >= 3 and parent is None:
            # A double-quoted FTS5 string is one phrase: operators and quotes in q are literal.
            terms.append(f"id IN (SELECT rowid FROM {search} WHERE {search} MATCH ?)")
            params.append('"' + query.q.replace('"', '""') + '"')
        else:
            # Trigrams cannot find 1-2 characters; and under one parent, its few rows
            # (found by the parent index) are cheaper to check than every match in the
            # whole table. Compare folded text; instr: % and _ are literal.
            fields = [f.name for f in decl.search_fields]
            terms.append("(" + " OR ".join(f"instr(medusa_fold({_name(f)}), ?) > 0" for f in fields) + ")")
            params.extend([_fold(query.q)] * len(fields))
    return (" WHERE " + " AND ".join(terms) if terms else ""), params


def _order_by(sort: Sequence[tuple[str, bool]]) -> str:
    """Return the ORDER BY list: the requested keys, then id in the last key's direction.

    The id makes the order total (pages never overlap or skip, NULLs included); in the
    last key's direction, an index on (key, id) serves it in one scan.
    """
    terms: list[str] = []
    for name, desc in sort:
        terms.append(f"{_name(name)} {'DESC' if desc else 'ASC'}")
        if name == "id":
            return ", ".join(terms)  # unique: later keys could not change the order
    terms.append("id DESC" if sort and sort[-1][1] else "id ASC")
    return ", ".join(terms)

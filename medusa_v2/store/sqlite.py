"""The embedded SQLite store: one WAL database file, forward migrations.

Calls run on the event loop thread: statements here are short indexed look-ups and
single-row writes (tens of microseconds), cheaper than a thread hop per request.
Every write is one transaction committed before the method returns.
"""

from __future__ import annotations

import contextlib
import sqlite3
from collections.abc import Iterator, Sequence

from .base import Store, StoreUnavailable

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

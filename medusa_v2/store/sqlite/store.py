"""The embedded SQLite store: one WAL database file, its connection, transactions and rows.

The store owns the connection and what runs on it; the SQL of reads is in
queries.py, the group commit of writes in group_commit.py, export and import in
bulk.py, forward migrations in migrations.py, revocations and login failures in
auth.py, Idempotency-Key records in idempotency.py.

Calls run on the event loop thread: statements here are short indexed look-ups and
single-row writes (tens of microseconds), cheaper than a thread hop per request.
Every write is one transaction committed before the method returns.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import queue
import sqlite3
from collections.abc import AsyncIterable, AsyncIterator, Callable, Iterator, Mapping, Sequence
from typing import Any

from ...declaration import Declaration
from ...listing import ListQuery
from .. import schema
from ..base import (
    COMPLETION,
    IMPORT_LOOKAHEAD,
    AlreadyExists,
    Check,
    Item,
    NotFound,
    Parent,
    RowPage,
    Store,
    StoreUnavailable,
    Tree,
    next_timestamp,
    timestamp,
)
from ..sql import quote_name as _name
from . import migrations
from .auth import AuthState
from .bulk import _bulk_connection, _close_bulk, _Failed, _Import, export_pages
from .changes import ChangeFeed
from .connection import BUSY_TIMEOUT_MS, _busy, _create_private, path_from_url
from .group_commit import GroupCommit
from .id_counter import _assign_id
from .idempotency import IdempotencyKeys
from .queries import _fold, _get_sql, _row_key, read_page


class SQLiteStore(AuthState, IdempotencyKeys, ChangeFeed, Store):
    """The default store, in one SQLite file beside config.ini."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.synchronous = "NORMAL"
        self._db: sqlite3.Connection | None = None
        # Inserts waiting for this loop iteration's group commit.
        self._group_commit = GroupCommit(self.transaction, self._insert)
        # Revocation look-ups of this event-loop iteration (is_token_revoked).
        self._revocation_checks: dict[str, bool] = {}

    @classmethod
    def from_url(cls, url: str) -> SQLiteStore:
        """Return a store for an `sqlite:` url; `?synchronous=full` also survives power loss."""
        path, _, query = url.partition("?")
        options = dict(item.partition("=")[::2] for item in query.split("&") if item)
        unknown = set(options) - {"synchronous"}
        if unknown:
            raise ValueError(f"unknown sqlite url option(s): {', '.join(sorted(unknown))} (known: synchronous)")
        synchronous = options.get("synchronous", "normal").lower()
        if synchronous not in ("normal", "full"):
            raise ValueError("sqlite url option synchronous must be 'normal' or 'full'")
        store = cls(path_from_url(path))
        store.synchronous = synchronous.upper()
        return store

    @property
    def db(self) -> sqlite3.Connection:
        """Return the open connection, or raise StoreUnavailable."""
        if self._db is None:
            raise StoreUnavailable("the store is closed")
        return self._db

    async def open(self, declarations: Sequence[Declaration] = ()) -> None:
        """Open the file (WAL, busy timeout), apply pending migrations, create or migrate `declarations`."""
        specs = [schema.derive(decl) for decl in schema.ordered(declarations)]  # a bad one fails before the file opens
        try:
            _create_private(self.path)
            db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        except (sqlite3.Error, OSError) as exc:
            raise StoreUnavailable(f"cannot open the SQLite database: {exc}") from exc
        try:
            db.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
            db.execute("PRAGMA journal_mode = WAL")  # needs a lock: busy while another process migrates
            # NORMAL in WAL mode: a committed transaction survives a crash of the process;
            # FULL also survives power loss at one fsync per commit (docs/durability.md).
            db.execute(f"PRAGMA synchronous = {self.synchronous}")
            db.execute("PRAGMA foreign_keys = ON")
            # Statement journals in memory: an insert's savepoint journals every page it
            # touches (dozens: eleven indexes, the search index, the totals), and past
            # 64 KB SQLite spilled them to a temp file, a write call per page
            # (docs/benchmarks.md, POST).
            db.execute("PRAGMA temp_store = MEMORY")
        except sqlite3.Error as exc:
            db.close()
            raise StoreUnavailable(f"cannot open the SQLite database: {exc}") from exc
        # Short `q` (under 3 characters) cannot use the trigram index: those rows are
        # matched with this fold, close to the index's own case folding (Unicode).
        db.create_function("medusa_fold", 1, _fold, deterministic=True)
        self._db = db
        try:
            self._migrate(specs)
        except BaseException:
            self._db = None
            db.close()
            raise

    def _migrate(self, specs: Sequence[schema.Spec] = ()) -> None:
        """Apply the built-in migrations, then create or migrate each derived spec: one transaction.

        Foreign keys are off meanwhile (a no-op inside a transaction, so set around
        it): rebuilding a table (ddl.py) drops the old one, which must not cascade
        into its children. A rebuild is followed by `PRAGMA foreign_key_check`.
        """
        db = self.db
        db.execute("PRAGMA foreign_keys = OFF")
        try:
            with self.transaction() as db:
                migrations.migrate(db, specs)
        finally:
            db.execute("PRAGMA foreign_keys = ON")

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
        except BaseException as exc:
            if db.in_transaction:  # SQLite may already have rolled back (e.g. after SQLITE_FULL)
                with contextlib.suppress(sqlite3.Error):
                    db.execute("ROLLBACK")
            if _busy(exc):
                # Another process holds a lock longer than the busy timeout: retryable (503).
                raise StoreUnavailable(f"the database is busy: {exc}") from exc
            raise
        else:
            try:
                db.execute("COMMIT")
            except sqlite3.OperationalError as exc:
                if db.in_transaction:
                    db.execute("ROLLBACK")
                raise StoreUnavailable(f"the commit failed: {exc}") from exc

    async def close(self) -> None:
        """Close the connection (idempotent); queued inserts are committed first."""
        if self._group_commit.pending:
            self._group_commit.flush()
        if self._db is not None:
            self._db.close()
            self._db = None

    async def ping(self) -> None:
        """Run a trivial query on the schema table."""
        try:
            self.db.execute("SELECT version FROM schema_version").fetchone()
        except sqlite3.Error as exc:
            raise StoreUnavailable(str(exc)) from exc

    # -- resource rows --

    async def list_rows(self, decl: Declaration, query: ListQuery, parent: Parent | None = None) -> RowPage:
        """Count the matching rows, then read one page of them in the same snapshot."""
        if parent is not None:
            self._require_parent(parent)
        db = self.db
        try:
            db.execute("BEGIN")  # one read snapshot for the count and the page
            try:
                count, columns, tuples = read_page(db, decl, query, parent)
            finally:
                db.execute("COMMIT")
        except sqlite3.Error as exc:
            raise StoreUnavailable(str(exc)) from exc
        return RowPage(None, count, columns=columns, tuples=tuples)

    def _require_parent(self, parent: Parent) -> None:
        parent_decl, parent_id = parent
        try:
            found = self.db.execute(f"SELECT 1 FROM {_name(parent_decl.name)} WHERE id = ?", (parent_id,)).fetchone()
        except sqlite3.Error as exc:
            raise StoreUnavailable(str(exc)) from exc
        if found is None:
            raise NotFound(parent_decl.name, parent_id)

    async def get_row(self, decl: Declaration, id: int, parent: Parent | None = None) -> dict[str, Any]:
        """Return one row by id (under its parent)."""
        try:
            return self._get(self.db, decl, id, parent)
        except sqlite3.Error as exc:
            raise StoreUnavailable(str(exc)) from exc

    def _get(self, db: sqlite3.Connection, decl: Declaration, id: int, parent: Parent | None) -> dict[str, Any]:
        names, sql = _get_sql(decl, parent is not None)
        found = db.execute(sql, (id,) if parent is None else (id, parent[1])).fetchone()
        if found is None:
            if parent is not None:
                self._require_parent(parent)  # say which one is missing
            raise NotFound(decl.name, id)
        return dict(zip(names, found, strict=True))

    async def insert_row(
        self,
        decl: Declaration,
        values: Mapping[str, Any],
        now: float,
        parent: Parent | None = None,
        check_parent: Check | None = None,
    ) -> dict[str, Any]:
        """Insert in one transaction: parent checked, chosen id refused when taken.

        Group commit: the inserts asked for in one event-loop iteration share one
        transaction, and each caller gets its row only after that COMMIT returned. A
        commit per row costs far more than the row (the search index writes and
        merges a segment per transaction). Rows that take the next ids go in one
        statement (group_commit._insert_together); the others, and all of them when that
        statement fails, each in a SAVEPOINT of its own, so one's error leaves the
        others alone.
        """
        row = dict(values)
        row["created_at"] = row["updated_at"] = timestamp(now)
        completion = COMPLETION.get()
        if completion is not None:
            # The Idempotency-Key's answer commits with the row: a transaction of their own.
            try:
                with self.transaction() as db:
                    created = self._insert(db, decl, row, parent, check_parent)
                    response = completion.respond(created)
                    self._complete(db, completion.scope, completion.key, response)
            except sqlite3.OperationalError as exc:
                if _busy(exc):
                    raise StoreUnavailable(f"the database is busy: {exc}") from exc
                raise
            completion.response = response
            return created
        return await self._group_commit.add(decl, row, parent, check_parent)

    def _insert(
        self,
        db: sqlite3.Connection,
        decl: Declaration,
        row: dict[str, Any],
        parent: Parent | None,
        check_parent: Check | None,
    ) -> dict[str, Any]:
        table = _name(decl.name)
        if parent is not None:
            parent_decl, parent_id = parent
            parent_row = self._get(db, parent_decl, parent_id, None)
            if check_parent is not None:
                check_parent(parent_row)
            row[decl.parent_column] = parent_id
        unique = schema.unique_id(decl)
        if row.get("id") is not None:
            if unique:
                taken = db.execute(f"SELECT 1 FROM {table} WHERE id = ?", (row["id"],)).fetchone()
            else:  # a string id is unique under its parent only
                taken = db.execute(
                    f"SELECT 1 FROM {table} WHERE id = ? AND {_name(decl.parent_column)} = ?",
                    (row["id"], row.get(decl.parent_column)),
                ).fetchone()
            if taken:
                raise AlreadyExists(decl.name, row["id"])
        elif decl.id_field.type is int:
            row["id"] = _assign_id(db, decl.name, table)
        else:
            raise ValueError(f"resource {decl.name}: a string id is chosen on create, none was given")
        columns = ", ".join(_name(c) for c in row)
        marks = ", ".join("?" for _ in row)
        db.execute(f"INSERT INTO {table} ({columns}) VALUES ({marks})", list(row.values()))
        return self._get(db, decl, row["id"], None if unique else parent)

    async def update_row(
        self,
        decl: Declaration,
        id: int,
        values: Mapping[str, Any],
        now: float,
        check: Check | None = None,
        parent: Parent | None = None,
    ) -> dict[str, Any]:
        """Check the current row, then set `values` and a later updated_at (committed with this iteration's writes)."""

        def write(db: sqlite3.Connection) -> dict[str, Any]:
            current = self._get(db, decl, id, parent)
            if check is not None:
                check(current)
            if not values:
                return current  # nothing to change (a PATCH of ignored fields only)
            # Only the columns that change are set: SQLite rewrites the entries of every
            # index on a set column, changed or not (and every index carries the
            # filter fields). updatedAt always moves: the PATCH is a modification.
            row = {k: v for k, v in values.items() if current[k] != v or type(current[k]) is not type(v)}
            row["updated_at"] = next_timestamp(now, current["updated_at"])
            assignments = ", ".join(f"{_name(c)} = ?" for c in row)
            where, key = _row_key(decl, id, parent)
            db.execute(f"UPDATE {_name(decl.name)} SET {assignments}{where}", [*row.values(), *key])
            return {**current, **row}

        result: dict[str, Any] = await self._group_commit.call(write)
        return result

    async def delete_row(
        self, decl: Declaration, id: int, check: Check | None = None, parent: Parent | None = None
    ) -> None:
        """Check the current row, then delete it (children go by ON DELETE CASCADE), with this iteration's writes."""

        def write(db: sqlite3.Connection) -> None:
            current = self._get(db, decl, id, parent)
            if check is not None:
                check(current)
            where, key = _row_key(decl, id, parent)
            db.execute(f"DELETE FROM {_name(decl.name)}{where}", key)

        await self._group_commit.call(write)

    # -- bulk transfer (export / import) --

    async def export_rows(
        self, trees: Sequence[Tree], *, batch_size: int = 1000, as_json: bool = False
    ) -> AsyncIterator[tuple[Tree, Sequence[Item]]]:
        """Yield rows by id (keyset pages) with their descendants, from one read snapshot.

        A file database is read on a connection of its own, so the snapshot does not
        hold this store's connection (requests keep being served while it runs).
        With `as_json`, the columns are read in declared order and each row's values
        paired with the JSON names at once (one dict per row, not two; see
        docs/benchmarks.md, Export).
        """
        own = self.path != ":memory:"
        try:
            db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False) if own else self.db
            if own:
                db.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
            db.execute("BEGIN")  # one snapshot for every page of every tree
        except sqlite3.Error as exc:
            raise StoreUnavailable(str(exc)) from exc
        try:
            for page in export_pages(db, trees, batch_size, as_json):
                yield page
        finally:
            with contextlib.suppress(sqlite3.Error):
                db.execute("COMMIT")
            if own:
                db.close()

    async def import_rows(
        self,
        trees: Sequence[Tree],
        batches: AsyncIterable[tuple[Tree, Sequence[Item]]],
        *,
        replace: bool = False,
        exclusive: bool = False,
    ) -> int:
        """Insert batch by batch inside one BEGIN IMMEDIATE transaction, pipelined.

        A file database is written on a connection of its own, from one worker
        thread: SQLite works (without the GIL) on batch N while the caller's
        iterator parses and validates batch N + 1 on the event loop; into empty
        tables, a third thread builds the search indexes (_SearchBuild). The write
        lock is held for the whole run: other writers wait (busy timeout), then get
        StoreUnavailable. At the end, each id counter is moved past the highest id
        imported below COUNTER_LIMIT (never back).

        `exclusive` (the caller does nothing else with this store meanwhile: the
        import command): the store's own connection is closed for the run and, if
        no other connection has the database open, the run writes through a
        rollback journal (synchronous FULL) instead of the WAL, and the database
        goes back to WAL at its end. Through the WAL, every page of a big import is
        written twice: to the WAL, then by the checkpoint at its commit into the
        database, a large part of a big import's commit (docs/benchmarks.md). A
        rollback journal keeps only the pages the run changes that existed before
        it; new pages are written once. Readers that open the database meanwhile
        wait, as writers do.
        """
        loop = asyncio.get_running_loop()
        own = self.path != ":memory:"
        idle = self._db is not None and not self._db.in_transaction and not self._group_commit.pending
        reopen = exclusive and own and idle
        if reopen:
            assert self._db is not None
            self._db.close()
            self._db = None
        executor = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="medusa-import") if own else None

        async def call(fn: Callable[..., Any], *args: Any) -> Any:
            try:
                if executor is None:
                    return fn(*args)
                return await loop.run_in_executor(executor, fn, *args)
            except sqlite3.IntegrityError as exc:
                raise StoreUnavailable(f"the import broke a database constraint: {exc}") from exc
            except sqlite3.Error as exc:
                raise StoreUnavailable(str(exc)) from exc

        try:
            db, journal = await call(_bulk_connection, self.path, reopen) if own else (self.db, False)
        except BaseException:
            if executor is not None:
                executor.shutdown()
            if reopen:
                await self._reopen()
            raise
        job = _Import(db, trees, replace, self.path if own else None)
        try:
            await call(job.begin)
            if executor is None:
                async for tree, batch in batches:
                    await call(job.add, tree, batch)
            else:
                # The worker thread takes batch after batch from a queue that the
                # caller's iterator fills on the event loop, up to IMPORT_LOOKAHEAD
                # batches ahead: parsing and SQLite (which releases the GIL) overlap,
                # with no event-loop round trip between two batches.
                handoff: queue.Queue[Any] = queue.Queue(IMPORT_LOOKAHEAD)

                def write_all() -> None:
                    while (batch := handoff.get()) is not None:
                        if isinstance(batch, _Failed):
                            raise batch.error
                        job.add(*batch)

                async def put(item: Any) -> None:
                    while True:
                        try:
                            handoff.put_nowait(item)
                            return
                        except queue.Full:
                            await asyncio.sleep(0.002)

                async def produce() -> None:
                    try:
                        async for batch in batches:
                            await put(batch)
                        await put(None)
                    except Exception as exc:  # a bad line: raised when its turn comes
                        await put(_Failed(exc))

                producer = asyncio.ensure_future(produce())
                try:
                    await call(write_all)
                finally:
                    if not producer.done():
                        producer.cancel()
                    with contextlib.suppress(BaseException):
                        await producer
            await call(job.finish)
        except BaseException:
            with contextlib.suppress(BaseException):
                await call(job.abort)
            raise
        finally:
            if own:
                await call(_close_bulk, db, journal)
            if executor is not None:
                executor.shutdown()
            if reopen:
                await self._reopen()
        return job.count

    async def _reopen(self) -> None:
        """Open the store's own connection again after an exclusive import (left closed if it cannot)."""
        with contextlib.suppress(StoreUnavailable):
            await self.open()

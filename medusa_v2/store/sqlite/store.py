"""The embedded SQLite store: one WAL database file, forward migrations.

Calls run on the event loop thread: statements here are short indexed look-ups and
single-row writes (tens of microseconds), cheaper than a thread hop per request.
Every write is one transaction committed before the method returns.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import glob
import json
import os
import queue
import sqlite3
import tempfile
import threading
from collections.abc import AsyncIterable, AsyncIterator, Callable, Iterator, Mapping, Sequence
from operator import itemgetter
from typing import Any

from .. import schema
from ..base import (
    IMPORT_LOOKAHEAD,
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
    next_timestamp,
    refuse_repeats,
    row_keys,
    scoped_ids,
    timestamp,
)
from ..sql import COUNTER_LIMIT as COUNTER_LIMIT  # re-exported: the import's counter bound
from ..sql import highest_below_limit as _highest_below_limit
from ..sql import quote_name as _name
from . import migrations
from .connection import BUSY_TIMEOUT_MS, _busy, _create_private, path_from_url
from .group_commit import GroupCommit
from .id_counter import _assign_id, _move_next_id
from .inserts import _insert_values
from .migrations import SEARCH_AUTOMERGE
from .queries import _TOTALS, _VALUE_TOTALS, _fold, _get_sql, _row_key, read_page


class SQLiteStore(Store):
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

    async def open(self, declarations: Sequence[Any] = ()) -> None:
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
            # touches (~50: eleven indexes, the search index, the totals), and past 64 KB
            # SQLite spilled them to a temp file, a write call per page (insert 58 -> 27 µs).
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
        if self._group_commit.jobs:
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

    async def revoke_token(self, jti: str, expires_at: float) -> None:
        """Insert the revocation; purge revocations whose tokens have expired anyway."""
        with self.transaction() as db:
            db.execute(
                "INSERT INTO revoked_token (jti, expires_at) VALUES (?, ?) ON CONFLICT (jti) DO NOTHING",
                (jti, expires_at),
            )
        self._revocation_checks.clear()  # a check later in this loop iteration must see it

    async def purge_expired(self, now: float, *, keys_before: float, failures_before: float) -> None:
        """Forget what no longer matters (see Store.purge_expired)."""
        with self.transaction() as db:
            db.execute("DELETE FROM revoked_token WHERE expires_at < ?", (now,))
            db.execute("DELETE FROM idempotency_key WHERE created_at < ?", (keys_before,))
            db.execute("DELETE FROM login_failure WHERE at < ?", (failures_before,))

    async def is_token_revoked(self, jti: str) -> bool:
        """Look the jti up in the revocation table, once per jti and event-loop iteration.

        The requests one loop iteration serves share one look-up (a browser's parallel
        requests share one token), so an answer is at most one iteration old: another
        process's revocation is seen from this process's next iteration on (a few
        milliseconds under load), as PostgreSQL's NOTIFY reaches the others about a
        millisecond after the commit. The answers are forgotten at the next iteration,
        and at once when this store revokes a token.
        """
        checks = self._revocation_checks
        found = checks.get(jti)
        if found is not None:
            return found
        try:
            found = self.db.execute("SELECT 1 FROM revoked_token WHERE jti = ?", (jti,)).fetchone() is not None
        except sqlite3.Error as exc:
            raise StoreUnavailable(str(exc)) from exc
        if not checks:
            asyncio.get_running_loop().call_soon(checks.clear)
        checks[jti] = found
        return found

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

    async def get_row(self, decl: Any, id: int, parent: Parent | None = None) -> dict[str, Any]:
        """Return one row by id (under its parent)."""
        try:
            return self._get(self.db, decl, id, parent)
        except sqlite3.Error as exc:
            raise StoreUnavailable(str(exc)) from exc

    def _get(self, db: sqlite3.Connection, decl: Any, id: int, parent: Parent | None) -> dict[str, Any]:
        names, sql = _get_sql(decl, parent is not None)
        found = db.execute(sql, (id,) if parent is None else (id, parent[1])).fetchone()
        if found is None:
            if parent is not None:
                self._require_parent(parent)  # say which one is missing
            raise NotFound(decl.name, id)
        return dict(zip(names, found, strict=True))

    async def insert_row(
        self,
        decl: Any,
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
        return await self._group_commit.add(decl, row, parent, check_parent)

    def _insert(
        self,
        db: sqlite3.Connection,
        decl: Any,
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
            row[decl.parent_field] = parent_id
        unique = schema.unique_id(decl)
        if row.get("id") is not None:
            if unique:
                taken = db.execute(f"SELECT 1 FROM {table} WHERE id = ?", (row["id"],)).fetchone()
            else:  # a string id is unique under its parent only
                taken = db.execute(
                    f"SELECT 1 FROM {table} WHERE id = ? AND {_name(decl.parent_field)} = ?",
                    (row["id"], row.get(decl.parent_field)),
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
            where, key = _row_key(decl, id, parent)
            db.execute(f"UPDATE {_name(decl.name)} SET {assignments}{where}", [*row.values(), *key])
            return self._get(db, decl, id, None if schema.unique_id(decl) else parent)

    async def delete_row(self, decl: Any, id: int, check: Check | None = None, parent: Parent | None = None) -> None:
        """Check the current row, then delete it (children go by ON DELETE CASCADE)."""
        with self.transaction() as db:
            current = self._get(db, decl, id, parent)
            if check is not None:
                check(current)
            where, key = _row_key(decl, id, parent)
            db.execute(f"DELETE FROM {_name(decl.name)}{where}", key)

    # -- bulk transfer (export / import) --

    async def export_rows(
        self, trees: Sequence[Tree], *, batch_size: int = 1000, as_json: bool = False
    ) -> AsyncIterator[tuple[Tree, Sequence[Item]]]:
        """Yield rows by id (keyset pages) with their descendants, from one read snapshot.

        A file database is read on a connection of its own, so the snapshot does not
        hold this store's connection (requests keep being served while it runs).
        With `as_json`, the columns are read in declared order and each row's values
        paired with the JSON names at once (one dict per row, not two: a third of
        an export's time).
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
            for tree in trees:
                decl = tree.decl
                table = _name(decl.name)
                columns = ", ".join(_name(c) for c in decl.column_order)
                first_sql = f"SELECT {columns} FROM {table} ORDER BY id LIMIT ?"
                page_sql = f"SELECT {columns} FROM {table} WHERE id > ? ORDER BY id LIMIT ?"
                keys = decl.json_names if as_json else decl.column_order
                at = decl.column_order.index("id")
                after: Any = None
                while True:
                    try:
                        if after is None:
                            tuples = db.execute(first_sql, (batch_size,)).fetchall()
                        else:
                            tuples = db.execute(page_sql, (after, batch_size)).fetchall()
                        if not tuples:
                            break
                        kids = _export_kids(db, tree, [values[at] for values in tuples], True, as_json)
                    except sqlite3.Error as exc:
                        raise StoreUnavailable(str(exc)) from exc
                    yield tree, _export_items(keys, at, tuples, kids)  # same length
                    after = tuples[-1][at]
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
        database (1M tickets: 1.3 GB, 8-10 s of the commit). A rollback journal keeps
        only the pages the run changes that existed before it; new pages are written
        once. Readers that open the database meanwhile wait, as writers do.
        """
        loop = asyncio.get_running_loop()
        own = self.path != ":memory:"
        reopen = (
            exclusive and own and self._db is not None and not self._db.in_transaction and not self._group_commit.jobs
        )
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
            db, journal = await call(self._bulk_connection, reopen) if own else (self.db, False)
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
                await call(self._close_bulk, db, journal)
            if executor is not None:
                executor.shutdown()
            if reopen:
                await self._reopen()
        return job.count

    def _bulk_connection(self, journal: bool = False) -> tuple[sqlite3.Connection, bool]:
        """Open an import's connection; return it and whether it writes through a rollback journal."""
        db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        try:
            if journal:
                try:  # refused at once while another connection has the database open
                    journal = db.execute("PRAGMA journal_mode = DELETE").fetchone()[0] == "delete"
                except sqlite3.OperationalError:
                    journal = False
            db.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
            db.execute(f"PRAGMA synchronous = {'FULL' if journal else 'NORMAL'}")
            db.execute("PRAGMA foreign_keys = ON")
        except BaseException:
            db.close()
            raise
        return db, journal

    @staticmethod
    def _close_bulk(db: sqlite3.Connection, journal: bool) -> None:
        """Close an import's connection, the database back in WAL mode if it wrote through a journal."""
        try:
            if journal:
                # After the commit or rollback: the run's outcome stands either way. If this
                # fails, the next open() of the store sets WAL again.
                with contextlib.suppress(sqlite3.Error):
                    db.execute("PRAGMA journal_mode = WAL")
        finally:
            db.close()

    async def _reopen(self) -> None:
        """Open the store's own connection again after an exclusive import (left closed if it cannot)."""
        with contextlib.suppress(StoreUnavailable):
            await self.open()

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


_TEXT_CHUNK = 10_000  # rows per statement staging an import's search text (bound variables permitting)
# An import's search build sets two FTS5 options of its own, not kept in the moved
# index (_SearchBuild._run). hashsize: FTS5 flushes its in-memory terms to a new
# segment past this many bytes (default 1 MB); at 128 MB, 1M tickets make ~5
# segments (64 MB: 9, the same CPU; 1 GB: 1, 20% more CPU). crisismerge: FTS5 merges
# a level's segments once it has this many, even with automerge off (default 16).
_SEARCH_BUILD_OPTIONS = {"hashsize": 128 << 20, "crisismerge": 1000}
_SEARCH_BACKLOG = 16  # batches queued for an import's search build (bounds its memory)


def _tuples(columns: Sequence[str], rows: Sequence[Mapping[str, Any]]) -> list[tuple[Any, ...]]:
    """Return each row's values in `columns` order (two or more columns)."""
    return list(map(itemgetter(*columns), rows))


_first, _id = itemgetter(0), itemgetter("id")


def _export_kids(
    db: sqlite3.Connection, tree: Tree, parent_ids: Sequence[Any], ranged: bool, as_json: bool
) -> list[dict[Any, list[Item]]]:
    """Return, per child tree of `tree`, the items under each of `parent_ids` (with their own descendants).

    `ranged`: the parents are one keyset page (every row from the first id to the
    last), so their children are one range of the parent index; deeper down, the
    parents are looked up by their ids.
    """
    found: list[dict[Any, list[Item]]] = []
    for child in tree.children:
        decl = child.decl
        parent_field = _name(decl.parent_field)
        columns = ", ".join(_name(c) for c in decl.column_order)
        select = f"SELECT {columns} FROM {_name(decl.name)} WHERE {parent_field}"
        if ranged:
            sql = f"{select} BETWEEN ? AND ? ORDER BY {parent_field}, id"
            tuples = db.execute(sql, (parent_ids[0], parent_ids[-1])).fetchall()
        else:
            tuples = []
            for start in range(0, len(parent_ids), 5000):
                chunk = parent_ids[start : start + 5000]
                sql = f"{select} IN ({', '.join('?' for _ in chunk)}) ORDER BY {parent_field}, id"
                tuples += db.execute(sql, chunk).fetchall()
        at = decl.column_order.index("id")
        parent_at = decl.column_order.index(decl.parent_field)
        keys = decl.json_names if as_json else decl.column_order
        grandkids = _export_kids(db, child, [values[at] for values in tuples], False, as_json) if tuples else []
        by_parent: dict[Any, list[Item]] = {}
        for values, item in zip(tuples, _export_items(keys, at, tuples, grandkids), strict=True):
            by_parent.setdefault(values[parent_at], []).append(item)
        found.append(by_parent)
    return found


def _export_items(
    keys: Sequence[str], at: int, tuples: Sequence[Sequence[Any]], kids: Sequence[Mapping[Any, list[Item]]]
) -> list[Item]:
    """Pair each row's values with `keys`, and with its kids (found by its id at `at`)."""
    if not kids:
        return [(dict(zip(keys, values, strict=False)), ()) for values in tuples]  # same length
    if len(kids) == 1:
        get = kids[0].get
        return [(dict(zip(keys, values, strict=False)), (get(values[at], ()),)) for values in tuples]
    return [
        (dict(zip(keys, values, strict=False)), tuple(found.get(values[at], ()) for found in kids)) for values in tuples
    ]


class _Import:
    """One import run on one connection: begin, add batches, finish (commit) or abort."""

    def __init__(
        self, db: sqlite3.Connection, trees: Sequence[Tree], replace: bool, database: str | None = None
    ) -> None:
        self.db = db
        self.database = database  # the database file (None: in memory), beside which the search build works
        self.replace = replace
        self.decls = [level.decl for tree in trees for level in tree.walk()]
        self.columns = {decl.name: [f.name for f in decl.fields] for decl in self.decls}
        self.aside: list[str] | None = None
        self.bulk: list[Any] = []  # the declarations whose tables' indexes and triggers are set aside
        self.search: _SearchBuild | None = None
        self.count = 0
        self.cache_before = -2000
        # The highest id imported below COUNTER_LIMIT, per table with integer ids: the id counters move past it.
        self.highest: dict[str, int] = {decl.name: 0 for decl in self.decls if decl.by_name["id"].type is int}

    def begin(self) -> None:
        db = self.db
        try:
            db.execute("BEGIN IMMEDIATE")
        except sqlite3.OperationalError as exc:
            raise StoreUnavailable(f"the database is busy: {exc}") from exc
        # A larger page cache for the indexes of a big table, restored at the end.
        self.cache_before = int(db.execute("PRAGMA cache_size").fetchone()[0])
        db.execute("PRAGMA cache_size = -65536")
        # Into empty tables (a restore, a migration, a benchmark seed), keeping every
        # index and trigger up to date row by row costs 5-10x more than building
        # them at the end: set them aside, inside this transaction, for the tables
        # whose triggers' effects the end of the run knows how to redo.
        if _all_empty(db, [decl.name for decl in self.decls]):
            bulk = [decl for decl in self.decls if _can_set_aside(db, decl)]
            self.aside = _set_aside(db, [decl.name for decl in bulk])
            self.bulk = bulk
            indexed = [(decl, self.columns[decl.name]) for decl in bulk if decl.search_fields]
            if indexed:
                self.search = _SearchBuild(db, indexed, self.database)
        if self.replace:
            # Top-level ids inserted by this run: seeing one again is a duplicate, not a replacement.
            db.execute(
                "CREATE TEMP TABLE IF NOT EXISTS medusa_import_seen_ids"
                " (resource TEXT NOT NULL, id NOT NULL, PRIMARY KEY (resource, id)) WITHOUT ROWID"
            )
            db.execute("DELETE FROM temp.medusa_import_seen_ids")

    def add(self, tree: Tree, batch: Sequence[Item]) -> None:
        if self.aside is not None:
            self._add_fresh(tree, batch)
            return
        db, decl = self.db, tree.decl
        table = _name(decl.name)
        ids = [row["id"] for row, _ in batch]
        refuse_repeats(decl, ids)
        existing = _existing(db, table, ids)
        if existing:
            if not self.replace:
                raise AlreadyExists(decl.name, next(i for i in ids if i in existing))
            again = _seen(db, decl.name, sorted(existing))
            if again:
                raise AlreadyExists(decl.name, next(i for i in ids if i in again))
            gone = sorted(existing)
            for start in range(0, len(gone), 5000):  # one statement per chunk (see _insert_values)
                chunk = gone[start : start + 5000]
                # Their descendants go by ON DELETE CASCADE (search and count triggers fire for them too).
                db.execute(f"DELETE FROM {table} WHERE id IN ({', '.join('?' for _ in chunk)})", chunk)
        if self.replace:
            _insert_values(db, "temp.medusa_import_seen_ids", ["resource", "id"], [(decl.name, i) for i in ids])
        for level, items in tree.levels(batch):
            level_decl = level.decl
            rows = list(map(_first, items))
            if level is not tree:
                keys = row_keys(level_decl, rows)
                refuse_repeats(level_decl, keys)
                taken = _taken(db, level_decl, keys)
                if taken:
                    raise already_exists(level_decl, next(k for k in keys if k in taken))
            columns = self.columns[level_decl.name]
            _insert_values(db, _name(level_decl.name), columns, _tuples(columns, rows))
            self._note_highest(level_decl, rows)
        self.count += len(batch)

    def _add_fresh(self, tree: Tree, batch: Sequence[Item]) -> None:
        """Add a batch to tables that were empty when the run began (indexes set aside).

        Only this run's rows are there: nothing to replace, and an id seen again is
        a duplicate, which the primary key refuses. So no look-up before inserting:
        multi-row statements (`_insert_values`; no trigger fires: the same values go
        to the search build), and only on a refusal is the batch undone to its
        savepoint and the taken id looked up, for the error.
        """
        db = self.db
        levels = []
        for level, items in tree.levels(batch):
            decl = level.decl
            rows = list(map(_first, items))
            keys = row_keys(decl, rows)
            refuse_repeats(decl, keys)
            levels.append((decl, rows, keys, _tuples(self.columns[decl.name], rows)))
        db.execute("SAVEPOINT medusa_import_batch")
        try:
            for decl, _, _, values in levels:
                _insert_values(db, _name(decl.name), self.columns[decl.name], values)
        except sqlite3.IntegrityError:
            db.execute("ROLLBACK TO medusa_import_batch")
            db.execute("RELEASE medusa_import_batch")
            for decl, _, keys, _ in levels:
                taken = _taken(db, decl, keys)
                if taken:
                    raise already_exists(decl, next(k for k in keys if k in taken)) from None
            raise  # another constraint
        db.execute("RELEASE medusa_import_batch")
        for decl, rows, _, values in levels:
            self._note_highest(decl, rows)
            if self.search is not None and decl.name in self.search.tables:
                self.search.add(decl.name, values)
        self.count += len(batch)

    def _note_highest(self, decl: Any, rows: Sequence[Mapping[str, Any]]) -> None:
        if decl.name in self.highest and rows:
            self.highest[decl.name] = max(self.highest[decl.name], _highest_below_limit(list(map(_id, rows))))

    def finish(self) -> None:
        db = self.db
        if self.aside is not None:
            if self.search is not None:
                self.search.end()
            # The indexes are sorted here while the search build merges its segments.
            _restore(db, self.aside, self.bulk)
            if self.search is not None:
                self.search.finish()
                self.search.move_into(db)
        for name, top in self.highest.items():
            if top:  # past the imported ids: the next POST does not walk them for a free id
                _move_next_id(db, name, top + 1)
        db.execute(f"PRAGMA cache_size = {self.cache_before}")
        try:
            db.execute("COMMIT")
        except sqlite3.OperationalError as exc:
            raise StoreUnavailable(f"the commit failed: {exc}") from exc  # abort() rolls back and closes
        self.close()

    def abort(self) -> None:
        try:
            if self.db.in_transaction:
                self.db.execute("ROLLBACK")
            self.db.execute(f"PRAGMA cache_size = {self.cache_before}")
        finally:
            self.close()

    def close(self) -> None:
        """Discard the search build (its file, its thread), if any."""
        if self.search is not None:
            search, self.search = self.search, None
            search.close(self.db)


class _SearchBuild:
    """The search indexes of an import into empty tables, built beside it, then moved in.

    Indexing trigram text is the biggest part of a large import (a third of its
    CPU at 1M tickets), and SQLite does it on the one connection that writes. So
    the build runs on a connection and thread of its own, in a scratch database
    file: it gets each batch's values (`_tuples`) as inserted and stages them in a
    plain table there. Once every batch is in (`end`), while the import's
    connection sorts its indexes, each search index is built from its staged rows
    in one statement: in id order, FTS5 flushes a segment only when its terms
    outgrow `hashsize` (a statement per batch flushed one segment per statement,
    which 'optimize' then merged: 13 s of CPU at 1M tickets). Its few segments are
    put on levels of their own (`_settle`), and the build commits.
    `move_into` then recreates each search table in the import's transaction and
    copies its shadow tables in, row for row. The copy is FTS5's own on-disk
    format written by the same SQLite library from the same statements, so it is
    the index an in-place build makes; FTS5's 'integrity-check' verifies it
    against the rows in the tests. The table is dropped and created first so
    that no FTS5 state of the old table (a cached segment structure) survives.
    """

    _ATTACHED = "medusa_import_search"

    def __init__(self, db: sqlite3.Connection, indexed: Sequence[tuple[Any, Sequence[str]]], database: str | None):
        # resource -> (search table, its columns, which of a row's values they take)
        self.tables: dict[str, tuple[str, list[str], Callable[[Sequence[Any]], Any]]] = {}  # id first
        self.create: dict[str, str] = {}  # search table -> its CREATE VIRTUAL TABLE statement
        for decl, columns in indexed:
            search = decl.name + "_search"
            found = db.execute("SELECT sql FROM sqlite_master WHERE type = 'table' AND name = ?", (search,)).fetchone()
            if found is None:
                raise StoreUnavailable(f"the database has no search table {search}")
            self.create[search] = found[0]
            fields = ["id", *(f.name for f in decl.search_fields)]
            self.tables[decl.name] = (search, fields, itemgetter(*map(columns.index, fields)))
        # Beside the database, named after it: `.NAME.import-search-*.db`. One left by an
        # import that was killed is deleted here: the caller holds the write lock, so no
        # other import of this database is running. (In memory: the temp directory.)
        directory, prefix = None, ".medusa-v2.import-search-"
        if database is not None:
            directory = os.path.dirname(os.path.abspath(database))
            prefix = f".{os.path.basename(database)}.import-search-"
            for leftover in glob.glob(os.path.join(glob.escape(directory), glob.escape(prefix) + "*.db")):
                with contextlib.suppress(OSError):
                    os.unlink(leftover)
        fd, self.path = tempfile.mkstemp(prefix=prefix, suffix=".db", dir=directory)
        os.close(fd)
        self.attached = False
        self.error: BaseException | None = None
        self.closing = False
        self.ended = False
        self.side: sqlite3.Connection | None = None
        try:
            side = self.side = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
            # A scratch file: nothing to recover after a crash, so no journal and no fsync.
            side.execute("PRAGMA journal_mode = OFF")
            side.execute("PRAGMA synchronous = OFF")
            side.execute("PRAGMA cache_size = -65536")
            side.execute("BEGIN")
            for search, sql in self.create.items():
                side.execute(sql)
                # No merging while loading: `_settle` places the segments.
                side.execute(f"INSERT INTO {_name(search)} ({_name(search)}, rank) VALUES ('automerge', 0)")
                for option, value in _SEARCH_BUILD_OPTIONS.items():
                    side.execute(f"INSERT INTO {_name(search)} ({_name(search)}, rank) VALUES (?, ?)", (option, value))
            for resource, (_, fields, _) in self.tables.items():
                # The staged rows, by id: the order FTS5 indexes them in without extra flushes.
                columns_sql = ", ".join(_name(f) for f in fields[1:])
                side.execute(f"CREATE TABLE {self._staged(resource)} (id INTEGER PRIMARY KEY, {columns_sql})")
        except BaseException:
            self._discard()
            raise
        self.inbox: queue.Queue[tuple[str, list[tuple[Any, ...]]] | None] = queue.Queue(_SEARCH_BACKLOG)
        self.waiting: dict[str, list[tuple[Any, ...]]] = {name: [] for name in self.tables}
        self.indexed = dict.fromkeys(self.tables, 0)  # rows staged, per resource
        self.thread = threading.Thread(target=self._run, name="medusa-import-search", daemon=True)
        self.thread.start()

    def add(self, resource: str, values: list[tuple[Any, ...]]) -> None:
        """Queue one batch (its rows' values, as inserted) for the index of `resource`."""
        if self.error is not None:
            raise self.error
        self.inbox.put((resource, values))

    def end(self) -> None:
        """Say that every batch is queued: the build indexes the last ones and merges its segments."""
        if not self.ended:
            self.ended = True
            self.inbox.put(None)

    def finish(self) -> None:
        """Wait for the build to end (see `end`) and its file to be committed; raise the build's error."""
        self.end()
        self.thread.join()
        if self.error is not None:
            raise self.error

    def move_into(self, db: sqlite3.Connection) -> None:
        """Replace each search table of `db` (in its open transaction) by the one built here."""
        db.execute(f"ATTACH DATABASE ? AS {self._ATTACHED}", (self.path,))
        self.attached = True
        for search, sql in self.create.items():
            db.execute(f"DROP TABLE main.{_name(search)}")
            db.execute(sql)
            shadows = db.execute(
                "SELECT name FROM main.sqlite_master WHERE type = 'table' AND name IN (?, ?, ?, ?, ?)",
                [f"{search}_{part}" for part in ("data", "idx", "content", "docsize", "config")],
            ).fetchall()
            for (shadow,) in shadows:
                db.execute(f"DELETE FROM main.{_name(shadow)}")
                db.execute(f"INSERT INTO main.{_name(shadow)} SELECT * FROM {self._ATTACHED}.{_name(shadow)}")

    def close(self, db: sqlite3.Connection) -> None:
        """Stop the build if it runs, detach and delete the scratch file (after the import's end)."""
        if self.thread.is_alive():
            self.closing = True
            side = self.side
            if side is not None:
                with contextlib.suppress(sqlite3.Error):  # closed meanwhile: the build has ended
                    side.interrupt()  # the statement running now stops; queued batches are skipped
            self.end()
            self.thread.join()
        if self.attached:
            with contextlib.suppress(sqlite3.Error):
                db.execute(f"DETACH DATABASE {self._ATTACHED}")
            self.attached = False
        self._discard()

    def _run(self) -> None:
        ended = False
        try:
            while (item := self.inbox.get()) is not None:
                if self.closing:
                    continue
                resource, values = item
                self.waiting[resource] += values
                if len(self.waiting[resource]) >= _TEXT_CHUNK:
                    self._stage(resource)
            ended = True
            # The smaller index first: the larger one ends last, beside the import's sorts.
            for resource, (search, _, _) in sorted(self.tables.items(), key=lambda item: self.indexed[item[0]]):
                if self.closing:
                    return
                self._stage(resource)
                self._index(resource)
                self._settle(search, self.indexed[resource])
                self._side().execute(
                    f"INSERT INTO {_name(search)} ({_name(search)}, rank) VALUES ('automerge', ?)", (SEARCH_AUTOMERGE,)
                )
                # Back to FTS5's defaults for the store's own writes: a config row is read by
                # every connection, and a default is no row.
                marks = ", ".join("?" for _ in _SEARCH_BUILD_OPTIONS)
                self._side().execute(
                    f"DELETE FROM {_name(search + '_config')} WHERE k IN ({marks})", list(_SEARCH_BUILD_OPTIONS)
                )
            self._side().execute("COMMIT")
            self._side().close()
            self.side = None
        except BaseException as exc:
            self.error = exc
            while not ended and self.inbox.get() is not None:  # the import never waits on a dead build
                pass

    def _side(self) -> sqlite3.Connection:
        assert self.side is not None
        return self.side

    @staticmethod
    def _staged(resource: str) -> str:
        return _name(f"medusa_staged_{resource}")

    def _stage(self, resource: str) -> None:
        """Stage the waiting rows of `resource` in one statement (one GIL hand-off from the parser)."""
        waiting = self.waiting[resource]
        if waiting:
            _, fields, pick = self.tables[resource]
            _insert_values(self._side(), self._staged(resource), fields, list(map(pick, waiting)), most=len(waiting))
            self.indexed[resource] += len(waiting)
            waiting.clear()

    def _index(self, resource: str) -> None:
        """Index every staged row of `resource` in one statement, by id."""
        search, fields, _ = self.tables[resource]
        columns = ", ".join(_name(f) for f in fields[1:])
        self._side().execute(
            f"INSERT INTO {_name(search)} (rowid, {columns}) SELECT id, {columns} FROM {self._staged(resource)}"
        )
        self._side().execute(f"DROP TABLE {self._staged(resource)}")

    def _settle(self, search: str, rows: int) -> None:
        """Put the build's segments on the levels FTS5's own merging would keep them on.

        The build leaves its segments on level 0, where a later POST's automerge
        would rewrite them all (measured p99 0.8 s); merged into one by 'optimize',
        the segment sat on level 1, where the 16th segment that later writes merge
        into it (after ~600 writes, measured) made FTS5 merge the whole index in that
        write: 2.4 s for 100k tickets, far more at 1M. An index grown by N writes
        holds its oldest rows on level ~log16(N), where they are merged again only
        after about N more writes. So each segment of R rows goes to a level of its
        own from the lowest L with 16 ** (L + 1) >= R up, the oldest highest, in the
        structure record (FTS5's format 1, `_structure_on_levels`). A record that
        cannot be rewritten so (another format, too many segments) is merged by
        'optimize' first; any other record is left as it is.
        """
        table = _name(search + "_data")
        side = self._side()

        def structure() -> bytes | None:
            found = side.execute(f"SELECT block FROM {table} WHERE id = {_FTS5_STRUCTURE_ROWID}").fetchone()
            return found[0] if found is not None else None

        record = structure()
        read = _structure_segments(record) if record is not None else None
        if record is None or read is None or not read[1]:
            return
        moved = _structure_on_levels(record, _level_for(rows // len(read[1])))
        if moved is None:
            side.execute(f"INSERT INTO {_name(search)} ({_name(search)}) VALUES ('optimize')")
            record = structure()
            moved = _structure_on_levels(record, _level_for(rows)) if record is not None else None
        if moved is not None:
            side.execute(f"UPDATE {table} SET block = ? WHERE id = {_FTS5_STRUCTURE_ROWID}", (moved,))

    def _discard(self) -> None:
        side, self.side = self.side, None
        if side is not None:
            with contextlib.suppress(sqlite3.Error):
                side.close()
        for leftover in (self.path, self.path + "-journal"):
            with contextlib.suppress(FileNotFoundError):
                os.unlink(leftover)


_FTS5_STRUCTURE_ROWID = 10  # the %_data row of an FTS5 index's structure record


def _varint(data: bytes, at: int) -> tuple[int, int]:
    """Read an SQLite varint (as FTS5 writes them) at `at`; return it and the offset past it."""
    value = 0
    for n in range(8):
        byte = data[at + n]
        value = (value << 7) | (byte & 0x7F)
        if byte < 0x80:
            return value, at + n + 1
    return (value << 8) | data[at + 8], at + 9


def _put_varint(value: int) -> bytes:
    """Write a small (< 2**56) non-negative SQLite varint."""
    out = [value & 0x7F]
    value >>= 7
    while value:
        out.append(0x80 | (value & 0x7F))
        value >>= 7
    return bytes(reversed(out))


def _structure_segments(record: bytes) -> tuple[int, list[tuple[int, int, int, int]]] | None:
    """Read an FTS5 structure record: its write counter and (level, segment id, first, last leaf page)s.

    Format 1 (fts5_index.c): a 4-byte cookie, then varints: the number of levels,
    of segments and the write counter, and for each level the segments in an
    ongoing merge, its number of segments and each one's id, first and last leaf
    page. None for anything else (a newer format, a merge under way, bytes left).
    """
    if record[4:8] == b"\xff\x00\x00\x01":  # format 2 (contentless-delete tables)
        return None
    found: list[tuple[int, int, int, int]] = []
    try:
        levels, at = _varint(record, 4)
        segments, at = _varint(record, at)
        writes, at = _varint(record, at)
        for level in range(levels):
            merging, at = _varint(record, at)
            count, at = _varint(record, at)
            if merging:
                return None
            for _ in range(count):
                segid, at = _varint(record, at)
                first, at = _varint(record, at)
                last, at = _varint(record, at)
                found.append((level, segid, first, last))
    except IndexError:
        return None
    return (writes, found) if at == len(record) and segments == len(found) else None


_FTS5_LEVELS = 64  # FTS5_MAX_LEVEL
_FTS5_MERGE_AT = SEARCH_AUTOMERGE  # a level with this many segments is merged (automerge; crisismerge's default too)


def _level_for(rows: int) -> int:
    """Return the lowest level L with 16 ** (L + 1) >= rows: where an index grown by `rows` writes keeps them."""
    level = 0
    while _FTS5_MERGE_AT ** (level + 1) < rows:
        level += 1
    return level


def _structure_on_levels(record: bytes, lowest: int) -> bytes | None:
    """Return an FTS5 structure record with its segments moved up to levels `lowest` and over, or None.

    One segment per level while the levels last (FTS5 has 64), the oldest (first
    listed) highest; else evenly, fewer than _FTS5_MERGE_AT per level. None unless
    the record is format 1 (`_structure_segments`) with every segment on level 0,
    `lowest` is above it, and they fit.
    """
    read = _structure_segments(record)
    if read is None or not read[1] or any(level for level, *_ in read[1]) or not 0 < lowest < _FTS5_LEVELS:
        return None
    writes, found = read
    per_level = -(-len(found) // (_FTS5_LEVELS - lowest))
    if per_level >= _FTS5_MERGE_AT:
        return None
    groups = [found[at : at + per_level] for at in range(0, len(found), per_level)]
    groups.reverse()  # the oldest segments on the highest level
    out = [record[:4], _put_varint(lowest + len(groups)), _put_varint(len(found)), _put_varint(writes)]
    out.append(b"\x00\x00" * lowest)
    for group in groups:
        out.append(b"\x00" + _put_varint(len(group)))
        out.extend(_put_varint(value) for _, *segment in group for value in segment)
    return b"".join(out)


class _Failed:
    """An error of the batch producer, delivered in its place in the queue."""

    def __init__(self, error: Exception) -> None:
        self.error = error


def _all_empty(db: sqlite3.Connection, tables: Sequence[str]) -> bool:
    return all(db.execute(f"SELECT 1 FROM {_name(t)} LIMIT 1").fetchone() is None for t in tables)


def _can_set_aside(db: sqlite3.Connection, decl: Any) -> bool:
    """Return whether an import into `decl`'s empty table may set its indexes and triggers aside.

    Only when `_restore` and `_SearchBuild` redo what each of its triggers does: keep
    its search index (`NAME_search`, by integer id), its row total (`_TOTALS`) or its
    totals per value (`_VALUE_TOTALS`). Any other table keeps them live: slower,
    always right.
    """
    if decl.by_name["id"].type is not int:
        return False  # its search index, if any, is not keyed by the id the build stages
    name = decl.name
    known = [f"{name}_search_"]
    if name in _TOTALS:
        known.append(f"{name}_total_")
    if name in _VALUE_TOTALS:
        known.append(f"{name}_value_total_")
    triggers = db.execute("SELECT name FROM sqlite_master WHERE type = 'trigger' AND tbl_name = ?", (name,))
    return all(any(trigger.startswith(prefix) for prefix in known) for (trigger,) in triggers)


def _set_aside(db: sqlite3.Connection, tables: Sequence[str]) -> list[str]:
    """Drop the tables' own indexes and triggers; return the SQL that recreates them.

    Their effects are redone: the search index is built beside the import
    (`_SearchBuild`), indexes are rebuilt by `_restore` (one sort each), row totals
    and totals per value recounted there. A trigger added later with other effects
    must be redone there too.
    """
    marks = ", ".join("?" for _ in tables)
    found = db.execute(
        f"SELECT type, name, sql FROM sqlite_master WHERE type IN ('index', 'trigger') AND sql IS NOT NULL"
        f" AND tbl_name IN ({marks}) ORDER BY type, name",
        list(tables),
    ).fetchall()
    for kind, name, _ in found:
        db.execute(f"DROP {kind.upper()} {_name(name)}")
    return [sql for _, _, sql in found]


def _restore(db: sqlite3.Connection, statements: Sequence[str], decls: Sequence[Any]) -> None:
    """Recreate what `_set_aside` dropped and redo its effects for the rows now present."""
    for sql in statements:
        db.execute(sql)
    for decl in decls:  # the search index was built beside (_SearchBuild)
        if decl.name in _TOTALS:
            db.execute(
                f"UPDATE row_total SET total = (SELECT COUNT(*) FROM {_name(decl.name)}) WHERE name = ?", (decl.name,)
            )
        for column in sorted(_VALUE_TOTALS.get(decl.name, ())):
            name = f"{decl.name}.{column}"
            db.execute("DELETE FROM value_total WHERE name = ?", (name,))
            db.execute(
                f"INSERT INTO value_total (name, value, total) SELECT ?, {_name(column)}, COUNT(*)"
                f" FROM {_name(decl.name)} GROUP BY {_name(column)}",
                (name,),
            )


def _existing(db: sqlite3.Connection, table: str, ids: Sequence[Any]) -> set[Any]:
    """Return which of `ids` are rows of `table` (looked up by primary key, in chunks)."""
    found: set[int] = set()
    for start in range(0, len(ids), 5000):
        chunk = ids[start : start + 5000]
        marks = ", ".join("?" for _ in chunk)
        found.update(r[0] for r in db.execute(f"SELECT id FROM {table} WHERE id IN ({marks})", chunk))
    return found


def _taken(db: sqlite3.Connection, decl: Any, keys: Sequence[Any]) -> set[Any]:
    """Return which keys of `row_keys` are rows of `decl`'s table."""
    if not scoped_ids(decl):
        return _existing(db, _name(decl.name), keys)
    wanted = set(keys)
    parent_field = _name(decl.parent_field)
    found: set[Any] = set()
    ids = sorted({key[1] for key in keys})
    for start in range(0, len(ids), 5000):
        chunk = ids[start : start + 5000]
        sql = f"SELECT {parent_field}, id FROM {_name(decl.name)} WHERE id IN ({', '.join('?' for _ in chunk)})"
        found.update(key for key in db.execute(sql, chunk) if key in wanted)
    return found


def _seen(db: sqlite3.Connection, resource: str, ids: Sequence[Any]) -> set[Any]:
    """Return which of `ids` of `resource` this run has imported already (a replace run's record)."""
    found: set[Any] = set()
    for start in range(0, len(ids), 5000):
        chunk = ids[start : start + 5000]
        marks = ", ".join("?" for _ in chunk)
        sql = f"SELECT id FROM temp.medusa_import_seen_ids WHERE resource = ? AND id IN ({marks})"
        found.update(r[0] for r in db.execute(sql, [resource, *chunk]))
    return found

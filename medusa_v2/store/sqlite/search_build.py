"""The staged FTS5 search build of an import into empty tables."""

from __future__ import annotations

import contextlib
import glob
import os
import queue
import sqlite3
import tempfile
import threading
from collections.abc import Callable, Sequence
from operator import itemgetter
from typing import Any

from ...declaration import Declaration
from ..base import StoreUnavailable
from ..sql import quote_name as _name
from . import fts5_structure
from .inserts import _insert_values
from .migrations import SEARCH_AUTOMERGE

_TEXT_CHUNK = 10_000  # rows per statement staging an import's search text (bound variables permitting)
# An import's search build sets two FTS5 options of its own, not kept in the moved
# index (_SearchBuild._run). hashsize: FTS5 flushes its in-memory terms to a new
# segment past this many bytes (default 1 MB); 128 MB leaves a large import a few
# segments, and more memory saves few of them at a CPU cost (docs/benchmarks.md,
# Import). crisismerge: FTS5 merges a level's segments once it has this many, even
# with automerge off (default 16).
_SEARCH_BUILD_OPTIONS = {"hashsize": 128 << 20, "crisismerge": 1000}
_SEARCH_BACKLOG = 16  # batches queued for an import's search build (bounds its memory)


class _SearchBuild:
    """The search indexes of an import into empty tables, built beside it, then moved in.

    Indexing trigram text is the biggest part of a large import (docs/benchmarks.md),
    and SQLite does it on the one connection that writes. So
    the build runs on a connection and thread of its own, in a scratch database
    file: it gets each batch's values (`_tuples`) as inserted and stages them in a
    plain table there. Once every batch is in (`end`), while the import's
    connection sorts its indexes, each search index is built from its staged rows
    in one statement: in id order, FTS5 flushes a segment only when its terms
    outgrow `hashsize` (a statement per batch flushed one segment per statement,
    which 'optimize' then had to merge, at a large CPU cost). Its few segments are
    put on levels of their own (`fts5_structure.place`; FTS5's 'optimize' when
    that is switched off or untested), the build commits and, if they were moved,
    reads them back afresh (`fts5_structure.check`).
    `move_into` then recreates each search table in the import's transaction and
    copies its shadow tables in, row for row. The copy is FTS5's own on-disk
    format written by the same SQLite library from the same statements, so it is
    the index an in-place build makes; FTS5's 'integrity-check' verifies it
    against the rows in the tests. The table is dropped and created first so
    that no FTS5 state of the old table (a cached segment structure) survives.
    """

    _ATTACHED = "medusa_import_search"

    def __init__(
        self, db: sqlite3.Connection, indexed: Sequence[tuple[Declaration, Sequence[str]]], database: str | None
    ):
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
                # No merging while loading: `fts5_structure.place` settles the segments.
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
            placed = []
            # The smaller index first: the larger one ends last, beside the import's sorts.
            for resource, (search, _, _) in sorted(self.tables.items(), key=lambda item: self.indexed[item[0]]):
                if self.closing:
                    return
                self._stage(resource)
                samples = self._samples(resource)
                self._index(resource)
                moved = fts5_structure.place(self._side(), search, self.indexed[resource], samples)
                if moved is not None:
                    placed.append(moved)
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
            if placed and not self.closing:
                fts5_structure.check(self.path, placed)
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

    def _samples(self, resource: str) -> list[tuple[int, str]]:
        """Return staged rows spread over their ids, first and last included, each with its longest search text.

        What `fts5_structure.check` looks up in the moved index: each segment holds
        a range of ids, so these reach the first and the last and most between.
        """
        side, staged = self._side(), self._staged(resource)
        low, high = side.execute(f"SELECT min(id), max(id) FROM {staged}").fetchone()
        if low is None:
            return []
        columns = ", ".join(_name(f) for f in self.tables[resource][1][1:])
        found: dict[int, str] = {}
        spread = fts5_structure.SAMPLES
        for k in range(spread + 1):
            at = low + (high - low) * k // spread
            row = side.execute(
                f"SELECT id, {columns} FROM {staged} WHERE id >= ? ORDER BY id LIMIT 1", (at,)
            ).fetchone()
            texts = [text for text in row[1:] if isinstance(text, str) and len(text) >= 3]
            if texts:
                found[row[0]] = max(texts, key=len)
        return sorted(found.items())

    def _index(self, resource: str) -> None:
        """Index every staged row of `resource` in one statement, by id."""
        search, fields, _ = self.tables[resource]
        columns = ", ".join(_name(f) for f in fields[1:])
        self._side().execute(
            f"INSERT INTO {_name(search)} (rowid, {columns}) SELECT id, {columns} FROM {self._staged(resource)}"
        )
        self._side().execute(f"DROP TABLE {self._staged(resource)}")

    def _discard(self) -> None:
        side, self.side = self.side, None
        if side is not None:
            with contextlib.suppress(sqlite3.Error):
                side.close()
        for leftover in (self.path, self.path + "-journal"):
            with contextlib.suppress(FileNotFoundError):
                os.unlink(leftover)

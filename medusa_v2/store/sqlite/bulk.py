"""Export and import in bulk: keyset pages with descendants out, one import run in.

An import into empty tables sets their indexes and triggers aside and redoes their
effects at its end; their search indexes are built beside it (search_build).
"""

from __future__ import annotations

import contextlib
import sqlite3
from collections.abc import Iterator, Mapping, Sequence
from operator import itemgetter
from typing import Any

from ...declaration import Declaration
from .. import schema
from ..base import (
    AlreadyExists,
    Item,
    StoreUnavailable,
    Tree,
    already_exists,
    by_parent,
    export_items,
    refuse_repeats,
    row_keys,
    scoped_ids,
)
from ..sql import highest_below_limit as _highest_below_limit
from ..sql import quote_name as _name
from . import ddl
from .connection import BUSY_TIMEOUT_MS
from .id_counter import _move_next_id
from .inserts import _insert_values
from .search_build import _SearchBuild


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
        parent_field = _name(decl.parent_column)
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
        grandkids = _export_kids(db, child, [values[at] for values in tuples], False, as_json) if tuples else []
        found.append(by_parent(decl, tuples, grandkids, as_json))
    return found


def export_pages(
    db: sqlite3.Connection, trees: Sequence[Tree], batch_size: int, as_json: bool
) -> Iterator[tuple[Tree, list[Item]]]:
    """Yield each tree's rows by id (keyset pages of `batch_size`) with their descendants (SQLiteStore.export_rows)."""
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
            yield tree, export_items(keys, at, tuples, kids)  # same length
            after = tuples[-1][at]


def _bulk_connection(path: str, journal: bool = False) -> tuple[sqlite3.Connection, bool]:
    """Open an import's connection; return it and whether it writes through a rollback journal."""
    db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
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
        self.unrecorded: list[str] = []  # the change triggers set aside, to create again at the end
        self.bulk: list[Declaration] = []  # the declarations whose tables' indexes and triggers are set aside
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
        # index and trigger up to date row by row costs far more than building them
        # at the end (docs/benchmarks.md, Import): set them aside, inside this
        # transaction, for the tables whose triggers' effects the end of the run
        # knows how to redo.
        if _all_empty(db, [decl.name for decl in self.decls]):
            bulk = [decl for decl in self.decls if _can_set_aside(db, decl)]
            self.aside = _set_aside(db, [decl.name for decl in bulk])
            self.bulk = bulk
            indexed = [(decl, self.columns[decl.name]) for decl in bulk if decl.search_fields]
            if indexed:
                self.search = _SearchBuild(db, indexed, self.database)
        # An import records no change (Store.import_rows): the other tables' change
        # triggers are set aside too, until the end of the run.
        self.unrecorded = _set_changes_aside(db, [decl.name for decl in self.decls if decl not in self.bulk])
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

    def _note_highest(self, decl: Declaration, rows: Sequence[Mapping[str, Any]]) -> None:
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
        for sql in self.unrecorded:
            db.execute(sql)
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


class _Failed:
    """An error of the batch producer, delivered in its place in the queue."""

    def __init__(self, error: Exception) -> None:
        self.error = error


def _all_empty(db: sqlite3.Connection, tables: Sequence[str]) -> bool:
    return all(db.execute(f"SELECT 1 FROM {_name(t)} LIMIT 1").fetchone() is None for t in tables)


def _can_set_aside(db: sqlite3.Connection, decl: Declaration) -> bool:
    """Return whether an import into `decl`'s empty table may set its indexes and triggers aside.

    Only when `_restore` and `_SearchBuild` redo what each of its triggers does: keep
    its search index (`NAME_search`, by integer id) or its totals per filter values
    (ddl.totals_sql). Any other table keeps them live: slower, always right.
    """
    if decl.by_name["id"].type is not int:
        return False  # its search index, if any, is not keyed by the id the build stages
    name = decl.name
    known = [f"{name}_search_", f"{name}_total_", f"{name}{ddl.CHANGE_TRIGGER}"]
    triggers = db.execute("SELECT name FROM sqlite_master WHERE type = 'trigger' AND tbl_name = ?", (name,))
    return all(any(trigger.startswith(prefix) for prefix in known) for (trigger,) in triggers)


def _set_aside(db: sqlite3.Connection, tables: Sequence[str]) -> list[str]:
    """Drop the tables' own indexes and triggers; return the SQL that recreates them.

    Their effects are redone: the search index is built beside the import
    (`_SearchBuild`), indexes are rebuilt by `_restore` (one sort each), the totals
    per filter values counted again there. A trigger added later with other effects
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


def _set_changes_aside(db: sqlite3.Connection, tables: Sequence[str]) -> list[str]:
    """Drop the tables' change triggers (ddl.changes_sql); return the SQL that recreates them."""
    found = db.execute("SELECT name, tbl_name, sql FROM sqlite_master WHERE type = 'trigger' AND sql IS NOT NULL")
    aside = [(name, sql) for name, on, sql in found if on in tables and name.startswith(on + ddl.CHANGE_TRIGGER)]
    for name, _ in aside:
        db.execute(f"DROP TRIGGER {_name(name)}")
    return [sql for _, sql in aside]


def _restore(db: sqlite3.Connection, statements: Sequence[str], decls: Sequence[Declaration]) -> None:
    """Recreate what `_set_aside` dropped and redo its effects for the rows now present."""
    for sql in statements:
        db.execute(sql)
    for decl in decls:  # the search index was built beside (_SearchBuild)
        ddl.count_totals(db, schema.derive(decl))


def _existing(db: sqlite3.Connection, table: str, ids: Sequence[Any]) -> set[Any]:
    """Return which of `ids` are rows of `table` (looked up by primary key, in chunks)."""
    found: set[int] = set()
    for start in range(0, len(ids), 5000):
        chunk = ids[start : start + 5000]
        marks = ", ".join("?" for _ in chunk)
        found.update(r[0] for r in db.execute(f"SELECT id FROM {table} WHERE id IN ({marks})", chunk))
    return found


def _taken(db: sqlite3.Connection, decl: Declaration, keys: Sequence[Any]) -> set[Any]:
    """Return which keys of `row_keys` are rows of `decl`'s table."""
    if not scoped_ids(decl):
        return _existing(db, _name(decl.name), keys)
    wanted = set(keys)
    parent_field = _name(decl.parent_column)
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

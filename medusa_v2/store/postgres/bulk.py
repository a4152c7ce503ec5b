"""Export and import in bulk: keyset pages with descendants out, COPY batches in one transaction in."""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import AsyncIterable, AsyncIterator, Sequence
from typing import Any

import psycopg

from ...declaration import Declaration
from .. import ddl_postgres, schema
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
from .connection import _UNAVAILABLE, _first_line
from .pool import PooledStore
from .queries import _dims
from .sequences import _advance_sequence, _sequence

log = logging.getLogger("medusa_v2.store.postgres")

ANALYZE_AFTER = 10_000  # an import of at least this many rows refreshes the planner's statistics


class BulkTransfer(PooledStore):
    """Export and import (a part of PostgresStore)."""

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


async def _add_totals(cur: psycopg.AsyncCursor[Any], decl: Declaration, counts: Counter[tuple[Any, ...]]) -> None:
    """Add an import's rows per combination of filter values to the totals (its triggers stood aside).

    Deltas, not a recount: writers committing meanwhile keep their own counts. The
    key is computed by the same SQL as the triggers' (ddl_postgres.totals_statements),
    and rows are locked in the triggers' order (keys in the "C" collation, then the
    count), so an import and a writer cannot deadlock.
    """
    dims = _dims(decl)
    changed = [(values, n) for values, n in counts.items() if n]
    if not changed:
        return
    types = {f.name: "bigint" if f.type is int else "text" for f in decl.fields}
    arrays = [[values[i] for values, _ in changed] for i in range(len(dims))]
    unnest = ", ".join([*(f"%s::{types[d]}[]" for d in dims), "%s::bigint[]"])
    columns = "".join(f"{_name(d)}, " for d in dims)
    order = f' ORDER BY {ddl_postgres.totals_key("v", dims)} COLLATE "C"' if dims else ""
    await cur.execute(
        f"INSERT INTO {_name(decl.name + schema.TOTALS_SUFFIX)} AS t (_key, _shard, {columns}_total)"
        f" SELECT {ddl_postgres.totals_key('v', dims)}, 0, {''.join(f'v.{_name(d)}, ' for d in dims)}v._n"
        f" FROM unnest({unnest}) AS v({columns}_n){order}"
        " ON CONFLICT (_key, _shard) DO UPDATE SET _total = t._total + EXCLUDED._total",
        [*arrays, [n for _, n in changed]],
    )
    # After the totals, as the triggers do: the same lock order as every writer's.
    every = _name(decl.name + schema.COUNT_SUFFIX)
    await cur.execute(
        f"INSERT INTO {every} AS t (_shard, _total) VALUES (0, %s)"
        " ON CONFLICT (_shard) DO UPDATE SET _total = t._total + EXCLUDED._total",
        (sum(n for _, n in changed),),
    )


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

"""The PostgreSQL store: resource rows on the pool, with auth state, idempotency keys and bulk transfer mixed in."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence
from typing import Any

import psycopg
from psycopg.rows import dict_row

from ...declaration import Declaration
from ...listing import ListQuery
from .. import pages, schema
from ..base import (
    COMPLETION,
    AlreadyExists,
    Check,
    NotFound,
    Parent,
    RowPage,
    StoreUnavailable,
    next_timestamp,
    timestamp,
)
from ..sql import filter_terms
from ..sql import quote_name as _name
from .auth import AuthState
from .bulk import BulkTransfer
from .changes import ChangeFeed
from .connection import POOL_MAX_SIZE, POOL_MIN_SIZE
from .idempotency import _COMPLETE, IdempotencyKeys, _completed
from .queries import _NEXT_MICROSECOND, DEEP_OFFSET, _counted, _dims, _order_by, _row_key, _where, page_sql, search_sql
from .sequences import _sequence, _skip_taken


class PostgresStore(AuthState, IdempotencyKeys, ChangeFeed, BulkTransfer):
    """Rows and shared state in PostgreSQL, through a per-process connection pool."""

    def __init__(self, url: str, *, min_size: int = POOL_MIN_SIZE, max_size: int = POOL_MAX_SIZE) -> None:
        super().__init__(url, min_size=min_size, max_size=max_size)
        # One-row reads waiting for this loop iteration's batch: table -> (decl, id -> futures).
        self._reads: dict[str, tuple[Any, dict[int, list[asyncio.Future[dict[str, Any]]]]]] = {}
        self._reads_scheduled = False
        self._batches: set[asyncio.Task[None]] = set()

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
            return await work_checked(conn)

        async def work_checked(conn: psycopg.AsyncConnection[Any]) -> dict[str, Any]:
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
                # Missing (the locked path raises NotFound, naming what is), or created
                # since the UPDATE looked: the locked path then updates it.
                return await work_checked(conn)
            return dict(updated)

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

"""Group commit: the writes of one event-loop iteration share one transaction.

A commit per row costs far more than the row (see SQLiteStore.insert_row); the store
owns one GroupCommit and gives it its transaction and its one-row insert. Inserts
are queued as rows (several of one resource go in one statement); updates and
deletes as calls, each run under a savepoint of its own, so one refused write (a
failed check, a missing row) is undone alone. Every caller is answered after the
commit.
"""

from __future__ import annotations

import asyncio
import functools
import sqlite3
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager
from typing import Any

from ...declaration import INT64_MAX, Declaration
from ..base import Check, Parent, StoreUnavailable
from ..sql import quote_name as _name
from .connection import _busy
from .id_counter import _move_next_id, _next_id
from .inserts import _insert_values
from .queries import _get_sql

Job = tuple[asyncio.Future[dict[str, Any]], Any, dict[str, Any], Parent | None, Check | None]
Call = tuple[asyncio.Future[Any], Callable[[sqlite3.Connection], Any]]


class GroupCommit:
    """The inserts asked for in one event-loop iteration, run in one transaction by `flush`."""

    def __init__(
        self,
        transaction: Callable[[], AbstractContextManager[sqlite3.Connection]],
        insert: Callable[[sqlite3.Connection, Any, dict[str, Any], Parent | None, Check | None], dict[str, Any]],
    ) -> None:
        self._transaction = transaction  # the store's write transaction
        self._insert = insert  # the store's insert of one row (its parent checked, its id chosen or assigned)
        # Inserts and other writes waiting for this loop iteration's group commit (flush).
        self.jobs: list[Job] = []
        self.calls: list[Call] = []
        self._scheduled = False

    @property
    def pending(self) -> bool:
        """Return whether writes wait for this loop iteration's commit."""
        return bool(self.jobs or self.calls)

    def add(
        self, decl: Declaration, row: dict[str, Any], parent: Parent | None, check_parent: Check | None
    ) -> asyncio.Future[dict[str, Any]]:
        """Queue one insert for this loop iteration's commit; return the future of its stored row."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[dict[str, Any]] = loop.create_future()
        self.jobs.append((future, decl, row, parent, check_parent))
        self._schedule(loop)
        return future

    def call(self, write: Callable[[sqlite3.Connection], Any]) -> asyncio.Future[Any]:
        """Queue a write (an update, a delete) for this loop iteration's commit; return the future of its result."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Any] = loop.create_future()
        self.calls.append((future, write))
        self._schedule(loop)
        return future

    def _insert_job(self, job: list[Any], db: sqlite3.Connection) -> dict[str, Any]:
        decl, row, parent, check_parent = job
        return self._insert(db, decl, row, parent, check_parent)

    def _schedule(self, loop: asyncio.AbstractEventLoop) -> None:
        if not self._scheduled:
            self._scheduled = True
            loop.call_soon(self.flush)

    def flush(self) -> None:
        """Run the queued inserts in one transaction, then answer each one."""
        self._scheduled = False
        jobs = [job for job in self.jobs if not job[0].done()]  # a cancelled caller: nothing to do
        calls = [call for call in self.calls if not call[0].done()]
        self.jobs, self.calls = [], []
        if not jobs and not calls:
            return
        outcomes: list[tuple[asyncio.Future[Any], BaseException | None, Any]] = []
        futures: list[asyncio.Future[Any]] = [job[0] for job in jobs] + [call[0] for call in calls]
        try:
            with self._transaction() as db:
                if len(futures) == 1:
                    # Alone: no savepoint; a failure rolls the transaction back (transaction()).
                    future = futures[0]
                    try:
                        if jobs:
                            _, decl, row, parent, check_parent = jobs[0]
                            outcomes.append((future, None, self._insert(db, decl, row, parent, check_parent)))
                        else:
                            outcomes.append((future, None, calls[0][1](db)))
                    except Exception as exc:  # rolled back by transaction(); the caller gets it
                        outcomes.append((future, exc, None))
                        raise
                else:
                    together, one_by_one = _together(jobs)
                    for group in together:
                        made = _insert_together(db, group[0][1], [job[2] for job in group])
                        if made is None:
                            one_by_one.extend(group)
                        else:
                            outcomes.extend((job[0], None, result) for job, result in zip(group, made, strict=True))
                    for future, *job in one_by_one:
                        # Each row under its own savepoint: a refused one is undone alone.
                        outcomes.append(_alone(db, future, functools.partial(self._insert_job, job)))
                    for future, call in calls:
                        outcomes.append(_alone(db, future, call))
        except BaseException as exc:
            failed = {id(f): e for f, e, _ in outcomes if e is not None}
            for future in futures:
                if not future.done():
                    failure: BaseException = failed.get(id(future)) or exc
                    if isinstance(failure, sqlite3.OperationalError) and _busy(failure):
                        failure = StoreUnavailable(f"the database is busy: {failure}")
                    future.set_exception(failure)
            if not isinstance(exc, Exception):
                raise
            return
        for future, error, result in outcomes:
            if future.done():
                continue
            if error is not None:
                if isinstance(error, sqlite3.OperationalError) and _busy(error):
                    error = StoreUnavailable(f"the database is busy: {error}")
                future.set_exception(error)
            else:
                future.set_result(result)


def _alone(
    db: sqlite3.Connection, future: asyncio.Future[Any], write: Callable[[sqlite3.Connection], Any]
) -> tuple[asyncio.Future[Any], BaseException | None, Any]:
    """Run one queued write under its own savepoint: (its future, its error or None, its result)."""
    db.execute("SAVEPOINT medusa_write")
    try:
        result = write(db)
    except Exception as exc:
        if not db.in_transaction:
            raise  # SQLite rolled the whole transaction back: every write of the batch fails
        db.execute("ROLLBACK TO medusa_write")
        db.execute("RELEASE medusa_write")
        return future, exc, None
    db.execute("RELEASE medusa_write")
    return future, None, result


def _insert_together(
    db: sqlite3.Connection, decl: Declaration, rows: Sequence[dict[str, Any]]
) -> list[dict[str, Any]] | None:
    """Insert rows taking the next assigned ids in one statement; return them as stored.

    Returns None, having changed nothing, when the next ids are not all free (a
    client chose one) or the statement fails (a row the store refuses): the
    caller then inserts the rows one by one, each with its own outcome. One
    statement instead of one per row: FTS5 writes one index segment per
    statement, and each row's savepoint journalled every page it touched.
    """
    table = _name(decl.name)
    first = _next_id(db, decl.name)
    last = first + len(rows) - 1
    if last > INT64_MAX:
        return None
    if db.execute(f"SELECT 1 FROM {table} WHERE id BETWEEN ? AND ? LIMIT 1", (first, last)).fetchone():
        return None
    columns = tuple(rows[0])
    db.execute("SAVEPOINT medusa_together")
    try:
        _insert_values(db, table, ("id", *columns), [(first + i, *row.values()) for i, row in enumerate(rows)])
        _move_next_id(db, decl.name, last + 1)
    except sqlite3.DatabaseError:
        if not db.in_transaction:
            raise  # SQLite rolled the whole transaction back (e.g. disk full): every row fails
        db.execute("ROLLBACK TO medusa_together")
        db.execute("RELEASE medusa_together")
        return None
    db.execute("RELEASE medusa_together")
    names, sql = _get_sql(decl, False, ranged=True)
    stored = db.execute(sql, (first, last))
    return [dict(zip(names, values, strict=True)) for values in stored]


def _together(jobs: Sequence[Any]) -> tuple[list[list[Any]], list[Any]]:
    """Split queued inserts into groups insertable in one statement, and the rest.

    A group: two or more rows of one resource with the same columns, no parent and
    no chosen id (each takes the next assigned int id). The rest go one by one (a
    parent to check, a chosen id to refuse when taken, a row alone).
    """
    groups: dict[tuple[int, tuple[str, ...]], list[Any]] = {}
    rest: list[Any] = []
    for job in jobs:
        _, decl, row, parent, _ = job
        if parent is not None or row.get("id") is not None or decl.id_field.type is not int:
            rest.append(job)
            continue
        row.pop("id", None)
        groups.setdefault((id(decl), tuple(row)), []).append(job)
    together = []
    for group in groups.values():
        if len(group) > 1:
            together.append(group)
        else:
            rest.extend(group)
    return together, rest

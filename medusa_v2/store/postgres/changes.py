"""The PostgreSQL store's change feed: changes numbered after commit by one publisher at a time (a mixin)."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Collection
from typing import TYPE_CHECKING, Any, TypeVar

import psycopg

from ..base import Change, ChangesAhead, ChangesGone

T = TypeVar("T")

# Key of the advisory lock held by whoever numbers or purges changes ("medusa2c").
PUBLISH_LOCK = 0x6D656475_73613263 & 0x7FFFFFFFFFFFFFFF
PUBLISH_BATCH = 10000  # changes numbered per statement
CHANGES_CHANNEL = "medusa_v2_changes"  # NOTIFY after a publication (its payload: the last seq)

# The changes committed and not yet numbered get the next seqs, in the order they
# were recorded (`pos`); run under PUBLISH_LOCK, in a statement that began after it
# was taken, so its snapshot sees every number given before.
_PUBLISH = f"""
WITH pending AS (
    SELECT pos, row_number() OVER (ORDER BY pos) AS n
    FROM change_event WHERE seq IS NULL ORDER BY pos LIMIT {PUBLISH_BATCH}
), numbered AS (
    UPDATE change_event SET seq = change_feed.last + pending.n
    FROM pending, change_feed WHERE change_event.pos = pending.pos
    RETURNING change_event.seq
)
UPDATE change_feed SET last = last + (SELECT COUNT(*) FROM numbered) RETURNING last, (SELECT COUNT(*) FROM numbered)
"""


class ChangeFeed:
    """`changes_after` and `publish_changes` of Store, and the purge `purge_expired` runs.

    The trigger (ddl_postgres.changes_statements) records a change by `pos`, a
    sequence value taken in the writing transaction: concurrent transactions take
    them in one order and commit in another, and a rolled-back one leaves a hole.
    So `seq` is given after commit: `publish_changes` numbers, under an advisory
    lock, the changes committed so far, in `pos` order, in one transaction, and
    NOTIFYs every process that LISTENs (AuthState's listening connection), whose
    feed pollers then read them at once (`wait_for_changes`). Writers do not
    notify: a NOTIFY serialises the commits of the transactions that send one.
    Readers see only numbered changes: each publication appears at once, after all
    the earlier ones. For one row, a later change waited for the earlier one's
    commit (its row lock) before taking its `pos`: seq order is commit order. The
    feed poller of every process with listeners publishes, and `GET /events`
    publishes before it reads, so a change is numbered within one poll of its
    commit while anyone follows the feed.
    """

    _changes_heard: asyncio.Event  # set by AuthState's listener on CHANGES_CHANNEL

    if TYPE_CHECKING:  # provided by PooledStore

        async def _run(
            self, work: Callable[[psycopg.AsyncConnection[Any]], Awaitable[T]], *, read: bool = False
        ) -> T: ...

    async def publish_changes(self) -> int:
        """Return the last seq, after numbering the committed changes (or waiting for whoever numbers them)."""

        async def work(conn: psycopg.AsyncConnection[Any]) -> int:
            cur = await conn.execute(
                "SELECT last, EXISTS (SELECT 1 FROM change_event WHERE seq IS NULL) FROM change_feed"
            )
            last, pending = await cur.fetchone() or (0, False)
            while pending:
                async with conn.transaction():
                    # Waited for, not tried: once it is ours, what another process was
                    # numbering is committed, and this statement sees it (a reader that
                    # asked after a commit gets that change).
                    await conn.execute("SELECT pg_advisory_xact_lock(%s)", (PUBLISH_LOCK,))
                    last, numbered = await _number_pending(conn)
                pending = numbered == PUBLISH_BATCH
            return int(last)

        return await self._run(work)

    async def wait_for_changes(self, timeout: float) -> None:
        """Return after `timeout` seconds, or once another process published changes (NOTIFY)."""
        heard = self._changes_heard
        try:
            await asyncio.wait_for(heard.wait(), timeout)
        except TimeoutError:
            pass
        heard.clear()

    async def changes_after(self, since: int, limit: int, resources: Collection[str] | None = None) -> list[Change]:
        """Read the feed's bounds and the numbered changes after `since`, in one statement (see Store.changes_after)."""
        where = "seq > %s"
        params: list[Any] = [since]
        if resources is not None:
            if not resources:
                return []
            where += " AND resource = ANY(%s)"
            params.append(sorted(resources))
        sql = (
            "SELECT change_feed.purged, change_feed.last, found.seq, found.resource, found.event, found.row"
            " FROM change_feed LEFT JOIN LATERAL (SELECT seq, resource, event, row FROM change_event"
            f" WHERE {where} AND seq IS NOT NULL ORDER BY seq LIMIT %s) AS found ON TRUE"
        )
        params.append(limit)

        async def work(conn: psycopg.AsyncConnection[Any]) -> list[Any]:
            cur = await conn.execute(sql, params)
            return await cur.fetchall()

        rows = await self._run(work, read=True)
        purged, last = rows[0][0], rows[0][1]
        if since < purged:
            raise ChangesGone(since, purged)
        if since > last:
            raise ChangesAhead(since, last)
        return [Change(seq, resource, event, row) for _, _, seq, resource, event, row in rows if seq is not None]


async def _number_pending(conn: psycopg.AsyncConnection[Any]) -> tuple[int, int]:
    """Give seqs to up to PUBLISH_BATCH pending changes (PUBLISH_LOCK held); return (the last seq, how many).

    Every listening process hears of them at the caller's COMMIT.
    """
    cur = await conn.execute(_PUBLISH)
    last, numbered = await cur.fetchone() or (0, 0)
    if numbered:
        await conn.execute("SELECT pg_notify(%s, %s)", (CHANGES_CHANNEL, str(last)))
    return int(last), int(numbered)


async def purge_changes(conn: psycopg.AsyncConnection[Any], before: float) -> None:
    """Delete the oldest numbered changes recorded before `before` (Unix time), in the caller's transaction.

    Only a prefix of the feed goes (up to the first change recorded at or after
    `before`), so what is kept has no gap; `change_feed.purged` says up to where.
    Under PUBLISH_LOCK, after numbering what is pending: no seq is given meanwhile.
    """
    await conn.execute("SELECT pg_advisory_xact_lock(%s)", (PUBLISH_LOCK,))
    numbered = PUBLISH_BATCH
    while numbered == PUBLISH_BATCH:  # what committed before is numbered first: purged like the rest
        _, numbered = await _number_pending(conn)
    cur = await conn.execute(
        "SELECT COALESCE((SELECT seq - 1 FROM change_event WHERE seq IS NOT NULL AND at >= %s ORDER BY seq LIMIT 1),"
        " last) FROM change_feed",
        (before,),
    )
    (through,) = await cur.fetchone() or (0,)
    await conn.execute("DELETE FROM change_event WHERE seq IS NOT NULL AND seq <= %s", (through,))
    await conn.execute("UPDATE change_feed SET purged = GREATEST(purged, %s)", (through,))

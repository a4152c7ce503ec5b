"""The SQLite store's change feed: the changes its triggers recorded, read in order, and purged (a mixin)."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Collection
from typing import TYPE_CHECKING

from ..base import Change, ChangesAhead, ChangesGone, StoreUnavailable

PURGE_CHUNK = 10000  # changes looked at per step of a purge


class ChangeFeed:
    """`changes_after` and `publish_changes` of Store; the purge `purge_expired` runs.

    One writer at a time and AUTOINCREMENT number the changes when their triggers
    record them (ddl.changes_sql), in commit order: nothing to publish after commit.
    """

    if TYPE_CHECKING:  # provided by SQLiteStore

        @property
        def db(self) -> sqlite3.Connection: ...

    async def changes_after(self, since: int, limit: int, resources: Collection[str] | None = None) -> list[Change]:
        """Read the changes after `since` in one snapshot with the feed's bounds (see Store.changes_after)."""
        db = self.db
        sql = "SELECT seq, resource, event, row FROM change_event WHERE seq > ?"
        params: list[object] = [since]
        if resources is not None:
            names = sorted(resources)
            if not names:
                return []
            sql += f" AND resource IN ({', '.join('?' for _ in names)})"
            params += names
        sql += " ORDER BY seq LIMIT ?"
        params.append(limit)
        try:
            db.execute("BEGIN")  # the bounds and the changes from one snapshot
            try:
                purged, last = _bounds(db)
                if since < purged:
                    raise ChangesGone(since, purged)
                if since > last:
                    raise ChangesAhead(since, last)
                found = db.execute(sql, params).fetchall()
            finally:
                db.execute("COMMIT")
        except sqlite3.Error as exc:
            raise StoreUnavailable(str(exc)) from exc
        return [Change(seq, resource, event, json.loads(row)) for seq, resource, event, row in found]

    async def publish_changes(self) -> int:
        """Return the last seq (numbered at commit already)."""
        try:
            return _bounds(self.db)[1]
        except sqlite3.Error as exc:
            raise StoreUnavailable(str(exc)) from exc


def _bounds(db: sqlite3.Connection) -> tuple[int, int]:
    """Return (the last purged seq, the last seq)."""
    (purged,) = db.execute("SELECT purged FROM change_feed").fetchone()
    found = db.execute("SELECT seq FROM sqlite_sequence WHERE name = 'change_event'").fetchone()
    return purged, found[0] if found else 0


def purge_changes(db: sqlite3.Connection, before: float) -> None:
    """Delete the oldest changes recorded before `before` (Unix time), in the caller's transaction.

    Only a prefix of the feed goes (up to the first change recorded at or after
    `before`, whatever its clock said later), so what is kept has no gap;
    `change_feed.purged` says up to where.
    """
    (purged,) = db.execute("SELECT purged FROM change_feed").fetchone()
    while True:
        found = db.execute(
            "SELECT seq, at FROM change_event WHERE seq > ? ORDER BY seq LIMIT ?", (purged, PURGE_CHUNK)
        ).fetchall()
        old = 0
        for seq, at in found:
            if at >= before:
                break
            old = seq
        if not old:
            break
        db.execute("DELETE FROM change_event WHERE seq <= ?", (old,))
        purged = old
        db.execute("UPDATE change_feed SET purged = ?", (purged,))
        if old != found[-1][0]:
            break

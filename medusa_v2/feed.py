"""The change feed of one API instance: changes as messages, pages of them, and one poller for every listener.

The store records every committed change of a stored row, numbered (`Store.changes_after`).
Here a change becomes the message clients read (`{"seq", "resource", "event", "id",
"<parent>Id"?, "etag"}`), encoded once. `ChangeFeed.page` reads a page of them (the
HTTP form, any process); while anyone listens (the WebSocket form), one poller task
publishes and reads the changes every `interval` seconds and hands each batch to
every listener, the batch filtered once per distinct `resources` filter. No HTTP
here: a listener decides what to do with the bytes.

Every process polls the database itself, so a change made by any process or daemon
on the same database reaches the listeners of all of them.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Awaitable, Collection, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from .codec import encode_json, etag_of
from .declaration import Declaration
from .store.base import Change, ChangesAhead, ChangesGone, Store, StoreUnavailable

POLL_INTERVAL = 0.01  # seconds between two reads of the store while anyone listens
BATCH = 1000  # changes read at most per poll (a full batch is followed at once by the next)
RETRY_AFTER = 1.0  # seconds before the poller tries a store that was unavailable again


@dataclass(frozen=True, slots=True)
class Event:
    """One message of the feed: its seq, its resource's name and its JSON bytes."""

    seq: int
    resource: str
    data: bytes


class Listener(Protocol):
    """What the poller hands batches to (a WebSocket, in practice)."""

    @property
    def resources(self) -> frozenset[str] | None:
        """Return the resource names listened to (None: every one)."""

    def deliver(self, events: Sequence[Event], shared: dict[str, Any]) -> None:
        """Take the next events (seq order, filtered).

        `shared` is one dict for every listener of this batch and filter (for what they make of it once).
        """

    def end(self, code: int, reason: str) -> Awaitable[None] | None:
        """Stop: the feed cannot go on for this listener (`code`: a close code, `reason`: why).

        May return an awaitable that is done once the listener is gone.
        """


GONE = 4010  # the changes after a cursor were purged: re-list, start again without since
AHEAD = 4009  # a cursor past the feed's last change (another database, or a feed reset)
GOING_AWAY = 1001  # the server is stopping
INTERNAL_ERROR = 1011  # the server failed (logged)


class ChangeFeed:
    """The change feed of the stored resources mounted by one API instance."""

    def __init__(
        self,
        store: Store,
        declarations: Sequence[Declaration],
        *,
        log: logging.Logger | None = None,
        interval: float = POLL_INTERVAL,
        batch: int = BATCH,
    ) -> None:
        self.store = store
        self.declarations: dict[str, Declaration] = {decl.name: decl for decl in declarations}
        self.names = frozenset(self.declarations)
        self.log = log or logging.getLogger("medusa_v2")
        self.interval = interval
        self.batch = batch
        self.last = 0  # the last seq the poller handed out
        # Listeners grouped by their filter: each batch is filtered once per group.
        self._groups: dict[frozenset[str] | None, set[Listener]] = {}
        self._poller: asyncio.Task[None] | None = None
        self._started: asyncio.Future[None] | None = None
        self._closing = False

    # -- messages --

    def message(self, change: Change) -> dict[str, Any]:
        """Return the message of a change: what a client reads, in this key order."""
        decl = self.declarations[change.resource]
        row = change.row
        message: dict[str, Any] = {"seq": change.seq, "resource": change.resource, "event": change.event}
        message["id"] = row["id"]
        if decl.parent_field is not None:
            message[decl.by_name[decl.parent_field].json_name] = row.get(decl.parent_field)
        message["etag"] = None if change.event == "deleted" else etag_of(encode_json(_representation(decl, row)))
        return message

    def event(self, change: Change) -> Event:
        """Return a change as an event: its message encoded once."""
        return Event(change.seq, change.resource, encode_json(self.message(change)))

    def check_resources(self, names: Collection[str]) -> frozenset[str]:
        """Return the names as a filter; ValueError naming the mounted ones for a name that is not."""
        unknown = sorted(set(names) - self.names)
        if unknown:
            shown = unknown[0] if len(unknown[0]) <= 40 else unknown[0][:40] + "..."
            raise ValueError(f"unknown resource {shown!r}: the feed carries {', '.join(sorted(self.names))}")
        return frozenset(names)

    # -- reading --

    async def page(self, since: int, limit: int, resources: Collection[str] | None = None) -> list[Event]:
        """Return at most `limit` events after `since`, in order (ChangesGone, ChangesAhead, StoreUnavailable).

        Changes committed by anyone are published first, so a reader sees every change
        committed before it asked, even with no poller running.
        """
        await self.store.publish_changes()
        changes = await self.store.changes_after(since, limit, self.names if resources is None else resources)
        return [self.event(change) for change in changes]

    async def backlog(
        self, since: int, upto: int, resources: Collection[str] | None = None
    ) -> AsyncIterator[list[Event]]:
        """Yield, page by page, the events after `since` up to `upto` (included), in order.

        `since` is checked even when there is nothing to read (ChangesGone, ChangesAhead).
        """
        chosen = self.names if resources is None else resources
        if since >= upto:
            await self.store.changes_after(since, 1, chosen)  # only its checks
            return
        cursor = since
        while cursor < upto:
            changes = await self.store.changes_after(cursor, self.batch, chosen)
            events = [self.event(change) for change in changes if change.seq <= upto]
            if events:
                yield events
            if len(changes) < self.batch or len(events) < len(changes):
                return  # the end of the feed, or past `upto`
            cursor = changes[-1].seq

    # -- listening --

    async def position(self) -> int:
        """Return the last seq of the feed now (numbering what committed first)."""
        return await self.store.publish_changes()

    async def subscribe(self, listener: Listener) -> int:
        """Start handing batches to `listener`; return the last seq it will not get.

        Every event after the returned seq reaches it (in order, through `deliver`),
        until `unsubscribe` or `end`.
        """
        if self._closing:
            raise StoreUnavailable("the change feed is closing")
        started = self._started
        if started is None:
            started = self._started = asyncio.ensure_future(self._start())
        try:
            await asyncio.shield(started)
        except BaseException:
            if self._started is started and started.done():
                self._started = None  # the next listener tries again
            raise
        if self._closing:
            raise StoreUnavailable("the change feed is closing")
        # No await between reading `last` and joining: the poller hands out nothing in between.
        self._groups.setdefault(listener.resources, set()).add(listener)
        if self._poller is None or self._poller.done():
            self._poller = asyncio.ensure_future(self._poll())
        return self.last

    def unsubscribe(self, listener: Listener) -> None:
        """Stop handing batches to `listener` (no matter if it was not listening)."""
        group = self._groups.get(listener.resources)
        if group is not None:
            group.discard(listener)
            if not group:
                del self._groups[listener.resources]

    @property
    def listeners(self) -> int:
        """Return how many listeners the poller serves."""
        return sum(len(group) for group in self._groups.values())

    async def close(self, grace: float = 2.0) -> None:
        """End every listener (1001, the server is stopping), wait up to `grace` seconds for them, stop the poller."""
        self._closing = True
        ending = self._end_all(GOING_AWAY, "the server is shutting down; reconnect with since=<last seq received>")
        if ending:
            await asyncio.wait([asyncio.ensure_future(e) for e in ending], timeout=grace)
        if self._poller is not None:
            self._poller.cancel()
            try:
                await self._poller
            except (asyncio.CancelledError, Exception):
                pass
            self._poller = None

    async def _start(self) -> None:
        self.last = await self.store.publish_changes()

    async def _poll(self) -> None:
        """Publish and read changes while anyone listens; hand each batch to every listener.

        With no one left it stops, and forgets where it was: the next listener starts
        from the feed's end as it is then, not from a batch nobody asked for.
        """
        try:
            await self._poll_while_listened()
        finally:
            if not self._groups:
                self._started = None

    async def _poll_while_listened(self) -> None:
        while self._groups:
            try:
                published = await self.store.publish_changes()
                changes = []
                if published > self.last:  # else nothing new: no read
                    changes = await self.store.changes_after(self.last, self.batch, self.names)
            except StoreUnavailable as exc:
                self.log.warning("change feed: the store is unavailable; trying again in %ss: %s", RETRY_AFTER, exc)
                await asyncio.sleep(RETRY_AFTER)
                continue
            except ChangesGone as exc:  # the poller fell behind the retention
                self._restart(exc.purged, GONE, "changes were purged before they were sent; re-list, then reconnect")
                continue
            except ChangesAhead as exc:  # the database's feed was reset (another database, a restore)
                self._restart(exc.last, AHEAD, "the change feed was reset; re-list, then reconnect without since")
                continue
            except Exception:  # a bug, or a store error that is not "unavailable": say so, close, go on
                self.log.exception("change feed: reading the changes failed; its sockets are closed")
                self._end_all(INTERNAL_ERROR, "internal error; reconnect with since=<last seq received>")
                await asyncio.sleep(RETRY_AFTER)
                continue
            if changes:
                self._hand_out([self.event(change) for change in changes])
            if len(changes) < self.batch:
                # Everything up to `published` was read (the rest: other resources).
                self.last = max(self.last, published)
                await self.store.wait_for_changes(self.interval)
            else:
                await asyncio.sleep(0)  # a catch-up: let requests and writes in between batches

    def _hand_out(self, events: list[Event]) -> None:
        self.last = events[-1].seq
        for names, group in list(self._groups.items()):
            chosen = events if names is None else [event for event in events if event.resource in names]
            if not chosen:
                continue
            shared: dict[str, Any] = {}
            for listener in list(group):
                try:
                    listener.deliver(chosen, shared)
                except Exception:
                    self.log.exception("change feed: a listener failed; it is dropped")
                    self.unsubscribe(listener)
                    with contextlib.suppress(Exception):
                        listener.end(INTERNAL_ERROR, "internal error; reconnect with since=<last seq received>")

    def _restart(self, last: int, code: int, reason: str) -> None:
        self.log.warning("change feed: %s (from seq %d)", reason, last)
        self._end_all(code, reason)
        self.last = last

    def _end_all(self, code: int, reason: str) -> list[Awaitable[None]]:
        groups, self._groups = self._groups, {}
        ending: list[Awaitable[None]] = []
        for group in groups.values():
            for listener in group:
                try:
                    gone = listener.end(code, reason)
                except Exception:
                    self.log.exception("change feed: a listener failed to end")
                    continue
                if gone is not None:
                    ending.append(gone)
        return ending


def _representation(decl: Declaration, row: Mapping[str, Any]) -> dict[str, Any]:
    """Return a row's JSON representation, as GET answers it (a column the row lacks: null)."""
    try:
        return decl.to_json(row)
    except KeyError:  # recorded before a migration added a field
        return {json_name: row.get(name) for name, json_name in decl.json_pairs}

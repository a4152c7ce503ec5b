"""One WebSocket listening to the change feed: resume without gap, prepared frames, a bound on what waits for it.

A `SocketListener` joins the feed first, then sends the backlog after the client's
`since` (read from the store, page by page, waiting for each part to reach the
socket), then the live events it held meanwhile (those at or before `since`
dropped), then live events as the feed hands them out. Every event goes out once,
in seq order, with no gap between backlog and live ones.

Fan-out: the feed hands the same batch to every listener of a filter; the first
listener frames it (one unmasked text frame per event, joined) and the others write
the same bytes. Tornado has no public way to send a prepared frame
(`WebSocketHandler.write_message` frames, copies and starts a task per message and
socket), so the frames are written straight to the socket's IOStream; that is what
`write_message` does underneath, for a connection without compression (this
handler offers none).

A client that does not read is not buffered for without bound: once more than
`max_pending` bytes wait in its stream (or, during the backlog, in its queue of
live events), or a part of the backlog waits more than `drain_timeout` seconds,
(IOStream's own `max_write_buffer_size` refuses the write that would pass the bound),
it is closed with 4008 and a reason saying where to resume over HTTP. Tornado
aborts a connection whose client does not answer the close within 5 seconds.
"""

from __future__ import annotations

import asyncio
import struct
from collections.abc import Sequence
from typing import Any, Protocol

from tornado.iostream import IOStream, StreamBufferFullError, StreamClosedError

from . import metrics
from .feed import AHEAD, GONE, ChangeFeed, Event
from .store.base import ChangesAhead, ChangesGone, StoreUnavailable

TOO_SLOW = 4008
TRY_AGAIN = 1013  # RFC 6455 "Try Again Later": the store is unavailable
MAX_PENDING = 1024 * 1024  # bytes that may wait in one socket's stream
DRAIN_TIMEOUT = 30.0  # seconds a part of the backlog may take to reach the socket
CHUNK = 64 * 1024  # bytes of backlog written at once (then waited for)
_MAX_REASON = 123  # bytes of a close reason (a control frame's payload is at most 125)


def text_frame(data: bytes) -> bytes:
    """Return `data` (UTF-8 text) as one final, unmasked WebSocket text frame (RFC 6455 5.2)."""
    size = len(data)
    if size < 126:
        return struct.pack("!BB", 0x81, size) + data
    if size <= 0xFFFF:
        return struct.pack("!BBH", 0x81, 126, size) + data
    return struct.pack("!BBQ", 0x81, 127, size) + data


def frames(events: Sequence[Event], shared: dict[str, Any]) -> bytes:
    """Return the events as joined frames, made once per batch for every socket sharing `shared`."""
    wire: bytes | None = shared.get("frames")
    if wire is None:
        wire = shared["frames"] = b"".join([text_frame(event.data) for event in events])
    return wire


class Socket(Protocol):
    """What a listener needs of its WebSocket handler."""

    def close(self, code: int | None = None, reason: str | None = None) -> None:
        """Start the closing handshake."""


class SocketListener:
    """Feed one WebSocket: backlog after `since`, then live events, within a bound."""

    def __init__(
        self,
        socket: Socket,
        stream: IOStream,
        feed: ChangeFeed,
        resources: frozenset[str] | None,
        *,
        retention: int,
        max_pending: int = MAX_PENDING,
        drain_timeout: float = DRAIN_TIMEOUT,
    ) -> None:
        self.socket = socket
        self.stream = stream
        self.feed = feed
        self._resources = resources
        self.retention = retention
        self.max_pending = max_pending
        self.drain_timeout = drain_timeout
        self.sent = 0  # the last seq written to the socket (or, before any, the client's since)
        self.closed = False
        self._held: list[Event] | None = []  # live events held back while the backlog goes out
        self._held_bytes = 0
        self._done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        # Past this many bytes waiting in the stream, IOStream.write raises StreamBufferFullError.
        stream.max_write_buffer_size = max_pending
        self._chunk = max(1, min(CHUNK, max_pending // 2))
        metrics.socket_opened()

    @property
    def resources(self) -> frozenset[str] | None:
        """Return the resources this socket listens to (None: all)."""
        return self._resources

    async def start(self, since: int | None) -> None:
        """Join the feed, send the backlog after `since` (if given), then go live."""
        try:
            joined = await self.feed.subscribe(self)
        except StoreUnavailable:
            self.close(TRY_AGAIN, "the store is unavailable; reconnect shortly")
            return
        if self.closed:  # the client went while the feed started: it must not stay listed
            self.feed.unsubscribe(self)
            return
        self.sent = joined if since is None else since
        if since is not None:
            try:
                async for page in self.feed.backlog(since, joined, self._resources):
                    if not await self._send_page(page):
                        return
            except ChangesGone:
                days = self.retention / 86400
                self.close(
                    GONE, f"since={since} is older than the retention ({days:g} days); re-list, reconnect without since"
                )
                return
            except ChangesAhead as exc:
                self.close(
                    AHEAD, f"since={since} is past the feed's last seq {exc.last}; re-list, reconnect without since"
                )
                return
            except StoreUnavailable:
                self.close(TRY_AGAIN, f"the store is unavailable; reconnect shortly with since={self.sent}")
                return
        if self.closed:
            return
        held, self._held = self._held or [], None
        after = max(self.sent, joined)
        live = [event for event in held if event.seq > after]
        if live:
            self._write(b"".join([text_frame(event.data) for event in live]), live[-1].seq, len(live))

    async def _send_page(self, page: list[Event]) -> bool:
        """Write a page of the backlog part by part, each part waited for; False once closed."""
        part: list[bytes] = []
        size = 0
        for at, event in enumerate(page):
            frame = text_frame(event.data)
            part.append(frame)
            size += len(frame)
            if size >= self._chunk or at == len(page) - 1:
                if self.closed:
                    return False
                try:
                    written = self.stream.write(b"".join(part))
                except StreamClosedError:
                    self.stop()
                    return False
                except StreamBufferFullError:
                    self.too_slow()
                    return False
                done, _ = await asyncio.wait({written}, timeout=self.drain_timeout)
                if not done:
                    self.too_slow()
                    return False
                if written.exception() is not None:
                    self.stop()
                    return False
                self.sent = event.seq
                metrics.events_sent(len(part))
                part, size = [], 0
        return not self.closed

    # -- the feed's Listener --

    def deliver(self, events: Sequence[Event], shared: dict[str, Any]) -> None:
        """Write a live batch (or hold it while the backlog goes out)."""
        if self.closed:
            return
        held = self._held
        if held is not None:
            held.extend(events)
            self._held_bytes += sum(len(event.data) for event in events)
            if self._held_bytes > self.max_pending:
                self.too_slow()
            return
        self._write(frames(events, shared), events[-1].seq, len(events))

    def end(self, code: int, reason: str) -> asyncio.Future[None]:
        """Close with `code` (the feed is stopping, or cannot go on); return when the socket is closed."""
        self.close(code, reason)
        return self._done

    # -- writing and closing --

    def _write(self, wire: bytes, last: int, count: int) -> None:
        try:
            self.stream.write(wire)
        except StreamBufferFullError:
            self.too_slow()
            return
        except StreamClosedError:
            self.stop()
            return
        self.sent = last
        metrics.events_sent(count)

    def too_slow(self) -> None:
        """Close a client that does not keep up, saying where to resume."""
        self.close(
            TOO_SLOW, f"too slow: catch up over HTTP with GET /events?since=<last seq received> (sent: {self.sent})"
        )

    def close(self, code: int, reason: str) -> None:
        """Leave the feed and start the closing handshake (once)."""
        if self.closed:
            return
        self.stop()
        self.stream.max_write_buffer_size = None  # the close frame goes after what waits
        self.socket.close(code, reason.encode("utf-8")[:_MAX_REASON].decode("utf-8", "ignore"))

    def stop(self) -> None:
        """Leave the feed (the socket is closed or closing)."""
        self.closed = True
        self._held = None
        self.feed.unsubscribe(self)

    def finished(self) -> None:
        """Leave the feed for good, and tell whoever waits for the connection to close."""
        self.stop()
        if not self._done.done():
            self._done.set_result(None)
            metrics.socket_closed()

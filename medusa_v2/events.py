"""`/events`: the change feed over HTTP (a page after `since`, Link paginated) and, on the same URL, as a WebSocket.

One handler answers both: a GET that asks for `Upgrade: websocket` becomes a socket
(event_socket.py), any other GET gets a page. Admission is every route's
(credentials, also `?token=`, since a browser's WebSocket sends no headers), and
every refusal before the upgrade is the usual JSON error. A socket from another
origin is accepted exactly when `[API] cors_origins` allows it; with the
browser-supplied Basic credentials it is refused from any other origin, as a
browser would send those to a page it never meant to trust.
"""

from __future__ import annotations

import asyncio
from typing import Any, ClassVar
from urllib.parse import urlencode, urlsplit

import tornado.websocket

from .answer import Answer
from .context import ApiContext
from .errors import ApiError
from .event_socket import SocketListener
from .feed import ChangeFeed
from .handler import SECRET_PARAMETERS, ApiHandler
from .store.base import ChangesAhead, ChangesGone, StoreUnavailable

DEFAULT_LIMIT = 100
MAX_LIMIT = 1000
PING_SECONDS = 20.0  # a ping on a quiet socket, so a vanished client is found out
CREDENTIALS_CHECK = 10.0  # seconds between checks that a socket's credentials still hold
CREDENTIALS_GONE = 4001  # the close code once they do not
MAX_CLIENT_MESSAGE = 4096  # bytes a client may send in one message (it has nothing to say)


def parse_seq(raw: str | None, name: str) -> int | None:
    """Return a `since` cursor (a non-negative integer), None if absent; 400 otherwise."""
    if raw is None:
        return None
    text = raw.strip()
    if not text.isascii() or not text.isdigit() or len(text) > 19 or int(text) > 2**63 - 1:
        shown = raw if len(raw) <= 40 else raw[:40] + "..."
        raise ApiError(400, f"Invalid {name} {shown!r}: a seq, an integer from 0 to 2^63-1")
    return int(text)


def parse_limit(raw: str | None) -> int:
    """Return the page size (1 to MAX_LIMIT, default DEFAULT_LIMIT); 400 otherwise."""
    if raw is None:
        return DEFAULT_LIMIT
    text = raw.strip()
    if not text.isascii() or not text.isdigit() or len(text) > 4 or not 1 <= int(text) <= MAX_LIMIT:
        shown = raw if len(raw) <= 40 else raw[:40] + "..."
        raise ApiError(400, f"Invalid limit {shown!r}: an integer from 1 to {MAX_LIMIT}")
    return int(text)


class EventsHandler(ApiHandler, tornado.websocket.WebSocketHandler):
    """GET a page of the change feed, or upgrade to its WebSocket."""

    routes: ClassVar = {"single": ("GET", "HEAD")}
    query_token: ClassVar = True

    def initialize(self, api: ApiContext, kind: str) -> None:
        """Receive the app context; the feed is the one the URL table made for it."""
        super().initialize(api, kind)
        self.listener: SocketListener | None = None

    @property
    def feed(self) -> ChangeFeed:
        """Return this API's change feed."""
        feed: ChangeFeed | None = self.api.feed
        assert feed is not None  # mounted only with one
        return feed

    # -- admission: credentials, then the request's own parameters (before any upgrade) --

    async def prepare(self) -> None:
        """Admit the request (401...), then check its parameters and, for an upgrade, its handshake."""
        await self.admit()
        if self.request.method == "OPTIONS":
            return
        query = self.query
        for name in ("since", "limit"):
            if len(query.get(name, ())) > 1:
                raise ApiError(400, f"Give {name} once")
        self.since = parse_seq(self.first_query_value("since"), "since")
        self.limit = parse_limit(self.first_query_value("limit"))
        named = [name.strip() for value in query.get("resource", ()) for name in value.split(",")]
        try:
            self.resources = self.feed.check_resources(named) if named else None
        except ValueError as exc:
            raise ApiError(400, f"Invalid resource: {exc}") from None
        if self.upgrading:
            self._check_handshake()

    @property
    def upgrading(self) -> bool:
        """Return whether the request asks for the WebSocket."""
        return self.request.method == "GET" and self.request.headers.get("Upgrade", "").lower() == "websocket"

    def _check_handshake(self) -> None:
        """Refuse a bad handshake with a JSON answer (tornado would answer in plain text)."""
        headers = self.request.headers
        if "upgrade" not in [s.strip().lower() for s in headers.get("Connection", "").split(",")]:
            raise ApiError(400, "A WebSocket upgrade needs 'Connection: Upgrade'")
        if headers.get("Sec-WebSocket-Version") != "13":
            message = "Unsupported WebSocket version: this server speaks version 13"
            raise ApiError(426, message, headers={"Sec-WebSocket-Version": "13"})
        if not headers.get("Sec-WebSocket-Key"):
            raise ApiError(400, "A WebSocket upgrade needs a Sec-WebSocket-Key header")
        origin = headers.get("Origin")
        if origin is not None and not self._same_origin(origin):
            if self.api.allow_origin(origin) is None:
                raise ApiError(403, "This origin may not open the change feed's WebSocket ([API] cors_origins)")
            if self.identity is not None and self.identity.method == "basic":
                raise ApiError(403, "From another origin, open the WebSocket with ?token= or ?api_key=, not Basic")

    def _same_origin(self, origin: str) -> bool:
        host = urlsplit(origin).netloc.lower()
        return bool(host) and host == (self.request.headers.get("Host") or "").lower()

    def check_origin(self, origin: str) -> bool:
        """Accept what `_check_handshake` accepted (it ran in prepare, with a JSON 403 for the rest)."""
        return True

    # -- the two answers --

    async def get(self, *args: Any, **kwargs: Any) -> None:
        """Upgrade to the WebSocket, or answer a page of events."""
        if self.upgrading:
            if self.since is None:
                # The upgrade's answer promises every change committed after it: where the
                # feed is now is read before the answer goes (the socket then starts there).
                self.since = await self.feed.position()
            await tornado.websocket.WebSocketHandler.get(self, *args, **kwargs)
            return
        await self.write_answer(await self._page())

    async def head(self) -> None:
        """Answer as GET does, without the body."""
        await self.write_answer(await self._page())

    async def _page(self) -> Answer:
        since = 0 if self.since is None else self.since
        try:
            try:
                events = await self.feed.page(since, self.limit, self.resources)
            except ChangesGone as exc:
                if self.since is not None:
                    raise
                since = exc.purged  # no cursor: from the oldest change kept
                events = await self.feed.page(since, self.limit, self.resources)
        except ChangesGone as exc:
            raise ApiError(410, self._gone(exc)) from None
        except ChangesAhead as exc:
            raise ApiError(
                409,
                f"since={since} is past the last seq of the change feed ({exc.last}): this cursor is not from this "
                "feed (another database, or the feed was reset); re-list, then follow the feed without since",
            ) from None
        body = b"[" + b",".join([event.data for event in events]) + b"]"
        headers: dict[str, str] = {}
        if len(events) == self.limit:
            headers["Link"] = f'<{self._next_url(events[-1].seq)}>; rel="next"'
        return self.reply(200, body, headers)

    def _gone(self, exc: ChangesGone) -> str:
        days = self.api.settings.events_retention / 86400
        return (
            f"since={exc.since} is older than the change feed keeps (changes up to seq {exc.purged} were purged; "
            f"[API] events_retention is {days:g} days): re-list the resources, then follow the feed from "
            f"since={exc.purged} or later"
        )

    def _next_url(self, since: int) -> str:
        """Return this request's URL with `since` moved on; credentials never repeated."""
        kept = [
            (name, value)
            for name, values in self.query.items()
            if name != "since" and name.lower() not in SECRET_PARAMETERS
            for value in values
        ]
        return self.absolute_origin() + self.request.path + "?" + urlencode([*kept, ("since", str(since))])

    # -- the WebSocket --

    def get_compression_options(self) -> dict[str, Any] | None:
        """Offer no compression: every socket is sent the same prepared frames (event_socket.py)."""
        return None

    @property
    def ping_interval(self) -> float | None:
        """Ping a quiet socket now and then."""
        return PING_SECONDS

    @property
    def max_message_size(self) -> int:
        """Take only small messages from clients (they have nothing to say)."""
        return MAX_CLIENT_MESSAGE

    async def open(self, *args: Any, **kwargs: Any) -> None:
        """Join the feed: the backlog after `since`, then live events."""
        connection = self.ws_connection
        assert connection is not None
        stream = connection.stream
        assert stream is not None
        self.set_nodelay(True)
        self.listener = SocketListener(
            self,
            stream,
            self.feed,
            self.resources,
            retention=self.api.settings.events_retention,
            **self.api.event_socket_options,
        )
        # Not awaited here: tornado reads the client's frames (its close, its pongs) only
        # once open() returns, and the backlog may take a while.
        self._starting = asyncio.ensure_future(self.listener.start(self.since))
        self._starting.add_done_callback(self._started)
        self._watching = asyncio.ensure_future(self._watch_credentials())

    async def _watch_credentials(self) -> None:
        """Close the socket once its credentials no longer hold (a token expired or revoked, a key changed).

        They are checked as an upgrade checks them, every CREDENTIALS_CHECK seconds and
        when a token expires.
        """
        listener = self.listener
        assert listener is not None
        expires = (self.identity.claims.get("exp") if self.identity is not None else None) or None
        while not listener.closed:
            wait = CREDENTIALS_CHECK
            if isinstance(expires, int | float):
                wait = max(0.0, min(wait, expires - self.api.clock() + 0.001))
            await asyncio.sleep(wait)
            if listener.closed:
                return
            try:
                await self.api.auth.authenticate(
                    self.request.headers,
                    self.first_query_value("api_key"),
                    self.request.remote_ip or "",
                    self.first_query_value("token"),
                )
            except ApiError as exc:
                if exc.status == 401:
                    listener.close(
                        CREDENTIALS_GONE,
                        "credentials no longer valid (expired, revoked): authenticate again,"
                        f" reconnect with since={listener.sent}",
                    )
                    return
            except StoreUnavailable:
                continue  # checked again at the next turn

    def _started(self, task: asyncio.Future[None]) -> None:
        error = None if task.cancelled() else task.exception()
        if error is not None:
            self.log_exception(type(error), error, error.__traceback__)
            self.close(1011, "internal error")

    def on_message(self, message: str | bytes) -> None:
        """Ignore what a client sends."""

    def on_close(self) -> None:
        """Leave the feed."""
        if self.listener is not None:
            self.listener.finished()
            self._watching.cancel()

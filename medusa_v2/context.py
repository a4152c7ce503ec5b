"""What one API instance needs per request: settings, store, authenticator, clock.

An `ApiContext` reaches every handler through the URL table's kwargs, so two apps
with different settings live side by side in one process. An embedding host may
own the settings (`provider`, asked before every request) and the version shown.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from . import __version__, idempotency
from .auth import Authenticator
from .settings import Settings
from .store import Store

if TYPE_CHECKING:
    from .feed import ChangeFeed

ALLOW_HEADERS = ", ".join(
    (
        "Origin",
        "Accept",
        "Authorization",
        "Content-Type",
        "X-Requested-With",
        "X-Api-Key",
        "X-Auth",
        "If-Match",
        "If-None-Match",
        "Idempotency-Key",
        "X-Request-ID",
    )
)
EXPOSE_HEADERS = ", ".join(
    (
        "Link",
        "ETag",
        "Location",
        "X-Medusa-Server",
        "X-Pagination-Page",
        "X-Pagination-Limit",
        "X-Pagination-Count",
        "X-Pagination-Total",
        "Retry-After",
        "Allow",
        "WWW-Authenticate",
        "X-Request-ID",
    )
)


SettingsProvider = Callable[[Settings], Settings]
"""Given the settings in force, return them unchanged (the same object) or the new ones.

Called before every request of an app whose host owns the settings (Medusa's
`medusa.app`, read live): it must be cheap when nothing changed.
"""


VARY = "Authorization, X-Auth, X-Api-Key"


class ApiContext:
    """The per-app dependencies shared by all of that app's handlers."""

    def __init__(
        self,
        settings: Settings,
        store: Store,
        *,
        clock: Callable[[], float] = time.time,
        log: logging.Logger | None = None,
        version: str = __version__,
        issuer: str | None = None,
        provider: SettingsProvider | None = None,
        opened: bool = True,
    ) -> None:
        """Serve `store` with `settings`; `version` is shown in X-Medusa-Server and tokens.

        `issuer` (default "Medusa <version>") is the tokens' `iss`. With `provider`,
        the settings are refreshed before every request. `opened=False`: the store is
        opened (with the mounted declarations) by the first request, on the loop that
        serves it: for hosts that build their app before their event loop runs.
        """
        self.settings = settings
        self.store = store
        self.clock = clock
        self.version = version
        self.provider = provider
        self.opened = opened
        self.declarations: Sequence[Any] = ()  # what the URL table mounts (set by get_apiv2_handlers)
        self.feed: ChangeFeed | None = None  # the change feed of the mounted stored resources (set likewise)
        # Keyword arguments of every event_socket.SocketListener (max_pending, drain_timeout): tests set them.
        self.event_socket_options: dict[str, Any] = {}
        # A route's template for the metrics (`/api/v2/ticket/{ticket_id}`), by what answers it:
        # (resource, route kind) or a handler class (set by get_apiv2_handlers).
        self.route_templates: dict[object, str] = {}
        self._opening: asyncio.Future[None] | None = None
        self.loop: asyncio.AbstractEventLoop | None = None  # the loop `open` ran on (its store lives there)
        self.log = log or logging.getLogger("medusa_v2")
        # A host that owns the settings (Medusa) mints tokens of its own, without our stamp.
        self.auth = Authenticator(settings, store, clock, version, issuer=issuer, require_stamp=provider is None)
        self._set_origins(settings)
        # Headers every response carries, computed once (the request path is hot).
        self.base_headers: tuple[tuple[str, str], ...] = (
            ("Content-Type", "application/json; charset=UTF-8"),
            ("X-Medusa-Server", version),
            ("Access-Control-Allow-Headers", ALLOW_HEADERS),
            ("Access-Control-Expose-Headers", EXPOSE_HEADERS),
            # Answers depend on who asks: no shared cache keeps them, and a private one
            # revalidates (ETag, 304) before reusing one.
            ("Cache-Control", "private, no-cache"),
        )

    async def purge_expired(self) -> None:
        """Forget expired revocations, idempotency keys past their TTL, failed logins past the window.

        And the change feed's changes older than `[API] events_retention`.
        """
        now = self.clock()
        await self.store.purge_expired(
            now,
            keys_before=now - idempotency.TTL,
            failures_before=now - self.settings.login_window,
            changes_before=now - self.settings.events_retention,
        )

    def refresh(self) -> None:
        """Apply the host's current settings, if it owns them and they changed."""
        if self.provider is not None:
            new = self.provider(self.settings)
            if new is not self.settings:
                self.apply_settings(new)

    async def open(self) -> None:
        """Open the store once, with the mounted declarations; concurrent callers wait for it."""
        if self.opened:
            return
        if self._opening is None:
            self.loop = asyncio.get_running_loop()
            self._opening = asyncio.ensure_future(self._open())
        await asyncio.shield(self._opening)

    async def _open(self) -> None:
        try:
            await self.store.open(self.declarations)
        except BaseException:
            self._opening = None  # the next request tries again
            raise
        self.opened = True
        self.log.info("medusa_v2: store opened (%s)", type(self.store).__name__)

    async def close_feed(self) -> None:
        """Close every change-feed socket (1001) and stop the feed's poller."""
        if self.feed is not None:
            await self.feed.close()

    async def close(self) -> None:
        """Close the change feed's sockets, and the store if this context opened it."""
        await self.close_feed()
        if self.opened and self._opening is not None:
            self.opened = False
            self._opening = None
            await self.store.close()

    def _set_origins(self, settings: Settings) -> None:
        self.allowed_origins = frozenset(o for o in settings.cors_origins if o != "*")
        self.any_origin = not self.allowed_origins
        # The request headers an answer depends on. Accept-Encoding: tornado's gzip
        # transform names it itself, so it is left out of `vary_compressed`.
        self.vary_compressed = VARY + ("" if self.any_origin else ", Origin")
        self.vary = self.vary_compressed + ", Accept-Encoding"

    def apply_settings(self, settings: Settings) -> None:
        """Switch the running app to new settings (PATCH /config, config.ini reloads).

        Handlers read `api.settings` per request, so the next request sees them;
        changed credentials also drop every credential the authenticator cached.
        """
        self.settings = settings
        self.auth.use(settings)
        self._set_origins(settings)

    def allow_origin(self, origin: str | None) -> str | None:
        """Return the Access-Control-Allow-Origin value for a request's Origin."""
        if self.any_origin:
            return "*"
        if origin is not None and origin in self.allowed_origins:
            return origin
        return None

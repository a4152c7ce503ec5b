"""What one API instance needs per request: settings, store, authenticator, clock.

An `ApiContext` reaches every handler through the URL table's kwargs, so two apps
with different settings live side by side in one process.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

from . import __version__
from .auth import Authenticator
from .settings import Settings
from .store import Store

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
    )
)


class ApiContext:
    """The per-app dependencies shared by all of that app's handlers."""

    def __init__(
        self,
        settings: Settings,
        store: Store,
        *,
        clock: Callable[[], float] = time.time,
        log: logging.Logger | None = None,
    ) -> None:
        self.settings = settings
        self.store = store
        self.clock = clock
        self.version = __version__
        self.log = log or logging.getLogger("medusa_v2")
        self.auth = Authenticator(settings, store, clock, __version__)
        self._set_origins(settings)
        # Headers every response carries, computed once (the request path is hot).
        self.base_headers: tuple[tuple[str, str], ...] = (
            ("Content-Type", "application/json; charset=UTF-8"),
            ("X-Medusa-Server", __version__),
            ("Access-Control-Allow-Headers", ALLOW_HEADERS),
            ("Access-Control-Expose-Headers", EXPOSE_HEADERS),
            ("Access-Control-Max-Age", "600"),
        )

    def _set_origins(self, settings: Settings) -> None:
        self.allowed_origins = frozenset(o for o in settings.cors_origins if o != "*")
        self.any_origin = not self.allowed_origins

    def apply_settings(self, settings: Settings) -> None:
        """Switch the running app to new settings (PATCH /config, config.ini reloads).

        Handlers read `api.settings` per request, so the next request sees them.
        """
        self.settings = settings
        self.auth.settings = settings
        self._set_origins(settings)

    def allow_origin(self, origin: str | None) -> str | None:
        """Return the Access-Control-Allow-Origin value for a request's Origin."""
        if self.any_origin:
            return "*"
        if origin is not None and origin in self.allowed_origins:
            return origin
        return None

"""Build a Tornado application serving the API from settings (the daemon and tests)."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Iterable
from typing import Any

import tornado.web

from .context import ApiContext
from .handler import redact_uri
from .resource import Resource
from .routes import get_apiv2_handlers
from .settings import Settings
from .store import Store, open_store

access_log = logging.getLogger("medusa_v2.access")


class LoopBufferedHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """A StreamHandler that writes its lines once per event-loop iteration.

    Under load one loop iteration answers several requests: their access-log lines
    go out in one write instead of a write and a flush each. WARNING and above, and
    records logged outside a running loop, are written at once; `flush()` (called
    by logging.shutdown) writes whatever is pending.
    """

    def __init__(self, stream: Any = None) -> None:
        super().__init__(stream)
        self._pending: list[str] = []
        self._scheduled = False

    def emit(self, record: logging.LogRecord) -> None:
        try:
            self._pending.append(self.format(record))
        except Exception:
            self.handleError(record)
            return
        if record.levelno >= logging.WARNING:
            self.flush()
            return
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            self.flush()
            return
        if not self._scheduled:
            self._scheduled = True
            loop.call_soon(self.flush)

    def flush(self) -> None:
        self.acquire()
        try:
            self._scheduled = False
            if self._pending:
                lines, self._pending = self._pending, []
                try:
                    self.stream.write(self.terminator.join(lines) + self.terminator)
                except Exception:
                    pass  # like StreamHandler: a broken stderr must not break requests
            super().flush()
        finally:
            self.release()


def log_request(handler: tornado.web.RequestHandler) -> None:
    """Write one access-log line: method, path (api_key redacted), status, milliseconds."""
    status = handler.get_status()
    level = logging.INFO if status < 500 else logging.ERROR
    if access_log.isEnabledFor(level):
        request = handler.request
        access_log.log(
            level,
            "%s %s %d %.1fms",
            request.method,
            redact_uri(request.uri or ""),
            status,
            request.request_time() * 1000,
        )


def api_root(settings: Settings) -> str:
    """Return `{web_root}/api/v2`."""
    return settings.web_root + "/api/v2"


def make_app(
    settings: Settings,
    store: Store,
    *,
    clock: Callable[[], float] = time.time,
    resources: Iterable[type[Resource]] | None = None,
    extra_handlers: Iterable[type | str] = (),
    app_class: type[tornado.web.Application] = tornado.web.Application,
    **app_settings: Any,
) -> tornado.web.Application:
    """Return an Application with the API mounted under web_root (store already open)."""
    api = ApiContext(settings, store, clock=clock)
    rules = get_apiv2_handlers(api_root(settings), api, resources=resources, extra_handlers=extra_handlers)
    options: dict[str, Any] = {"log_function": log_request, "compress_response": settings.web_use_gzip}
    options.update(app_settings)
    app = app_class(rules, **options)
    app.settings["medusa_v2_api"] = api
    return app


async def open_app(settings: Settings, **kwargs: Any) -> tornado.web.Application:
    """Open the configured store and return the application serving it."""
    store = await open_store(settings.database_url)
    return make_app(settings, store, **kwargs)

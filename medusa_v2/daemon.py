"""The standalone daemon: serve the API from config.ini in the foreground."""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import socket
import ssl
import sys
import time
from typing import Any

import tornado.httpserver
import tornado.netutil
import tornado.web

from .app import make_app
from .settings import Settings
from .store import StoreUnavailable, open_store

log = logging.getLogger("medusa_v2.daemon")


class StartupError(Exception):
    """The daemon cannot start; the message says why in one line."""

    def __init__(self, message: str, status: int = 2) -> None:
        super().__init__(message)
        self.status = status


class _Tracking(tornado.web.Application):
    """An Application that counts requests in flight, so shutdown can wait for them."""

    inflight = 0

    def find_handler(self, request: Any, **kwargs: Any) -> Any:
        self.inflight += 1
        return super().find_handler(request, **kwargs)

    def log_request(self, handler: tornado.web.RequestHandler) -> None:
        self.inflight -= 1
        super().log_request(handler)


def setup_logging(developer: bool) -> None:
    """Log to stderr, one line per event."""
    logging.basicConfig(
        stream=sys.stderr,
        level=logging.DEBUG if developer else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )


def ssl_context(settings: Settings) -> ssl.SSLContext | None:
    """Return the TLS context when enable_https, or raise StartupError for bad files."""
    if not settings.enable_https:
        return None
    for key, path in (("https_cert", settings.https_cert), ("https_key", settings.https_key)):
        if not os.path.isfile(path):
            raise StartupError(f"[General] {key}: file not found: {path} (enable_https = 1 needs it)")
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    try:
        context.load_cert_chain(settings.https_cert, settings.https_key)
    except (ssl.SSLError, OSError) as exc:
        raise StartupError(f"[General] https_cert/https_key: cannot load the certificate: {exc}") from None
    return context


def warn_if_open(settings: Settings) -> None:
    """Say loudly that anyone who can reach the port can get a token."""
    if not settings.auth_required:
        log.warning(
            "NO USERNAME/PASSWORD CONFIGURED: POST /authenticate issues a token to anyone who can "
            "reach this port. Set one with: medusa-v2 set-password --config %s",
            settings.config_path or "PATH",
        )


async def run(settings: Settings, host: str | None = None, port: int | None = None) -> int:
    """Serve until SIGTERM/SIGINT; finish in-flight requests, close the store; return 0."""
    tls = ssl_context(settings)
    try:
        store = await open_store(settings.database_url)
    except StoreUnavailable as exc:
        raise StartupError(f"[Database] url: {exc}", status=1) from None
    try:
        app = make_app(settings, store, app_class=_Tracking)
    except ValueError as exc:
        await store.close()
        raise StartupError(str(exc)) from None
    bind_host = host if host is not None else settings.web_host
    bind_port = port if port is not None else settings.web_port
    try:
        sockets = tornado.netutil.bind_sockets(bind_port, bind_host or None, family=socket.AF_UNSPEC)
    except OSError as exc:
        await store.close()
        raise StartupError(f"cannot listen on {bind_host}:{bind_port}: {exc.strerror or exc}", status=1) from None
    server = tornado.httpserver.HTTPServer(app, xheaders=settings.handle_reverse_proxy, ssl_options=tls)
    server.add_sockets(sockets)
    warn_if_open(settings)
    scheme = "https" if tls else "http"
    shown = sockets[0].getsockname()
    log.info("medusa_v2 serving %s://%s:%s%s/api/v2", scheme, shown[0], shown[1], settings.web_root)

    stopping = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stopping.set)
    await stopping.wait()
    assert isinstance(app, _Tracking)
    log.info("shutting down: no new connections; finishing %d request(s) in flight", app.inflight)
    server.stop()
    deadline = time.monotonic() + settings.shutdown_timeout
    while app.inflight > 0 and time.monotonic() < deadline:
        await asyncio.sleep(0.02)
    if app.inflight > 0:
        log.warning("shutdown timeout: %d request(s) still in flight are cut off", app.inflight)
    await server.close_all_connections()
    await store.close()
    log.info("stopped")
    return 0


def serve(settings: Settings, host: str | None = None, port: int | None = None) -> int:
    """Run the daemon in the foreground; return the process exit status."""
    setup_logging(settings.developer)
    return asyncio.run(run(settings, host, port))

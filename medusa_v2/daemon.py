"""The standalone daemon: serve the API from config.ini in the foreground."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import socket
import ssl
import sys
import time
from collections.abc import Callable
from typing import Any

import tornado.httpserver
import tornado.httputil
import tornado.ioloop
import tornado.iostream
import tornado.netutil
import tornado.web

from . import __version__, metrics
from .accesslog import LOG_FORMAT, JsonFormatter, LoopBufferedHandler
from .app import make_app
from .config_endpoint import ConfigWatcher
from .fastpath import ApiApplication
from .metrics_endpoint import start_listener
from .settings import Settings
from .store import StoreUnavailable, open_store
from .url_table import declarations_for

log = logging.getLogger("medusa_v2.daemon")
MAX_HEADER_BYTES = 64 * 1024  # the request line and headers; beyond it the connection is closed


PURGE_EVERY = 3600  # seconds between deletions of expired shared state
SAMPLE_EVERY = 1  # seconds between samples of the metrics' gauges in each worker


def _purge(api: Any) -> None:
    """Start one purge of expired shared state; a store that fails now is tried again next time."""

    async def run() -> None:
        try:
            await api.purge_expired()
        except StoreUnavailable as exc:
            log.warning("housekeeping: the store is unavailable; expired state stays until the next try: %s", exc)

    asyncio.ensure_future(run())


class StartupError(Exception):
    """The daemon cannot start; the message says why in one line."""

    def __init__(self, message: str, status: int = 2) -> None:
        super().__init__(message)
        self.status = status


class _Tracking(ApiApplication):
    """An Application that knows its requests in flight, so shutdown can wait for them.

    A request is in flight from its routing until its answer is logged, or until its
    connection closes first (a client gone mid-body, a body tornado refuses to read):
    then no answer will ever be logged for it.
    """

    draining = False

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.requests: set[Any] = set()
        self.routed: Any = None

    @property
    def inflight(self) -> int:
        """Return the number of requests routed and not yet answered (or abandoned)."""
        return len(self.requests)

    def start_request(self, server_conn: object, request_conn: Any) -> Any:
        return _Ending(self, super().start_request(server_conn, request_conn))

    def find_handler(self, request: Any, **kwargs: Any) -> Any:
        self.requests.add(request)
        self.routed = request  # for the _Ending whose headers_received is routing it
        if self.draining:
            # A request on a kept-alive connection while stopping: answer it, with
            # `Connection: close`, so the client reconnects elsewhere (tornado adds the
            # header and closes once the response is written). Tornado has no public way
            # to ask that of one response (`no_keep_alive` is the whole server's): this
            # sets HTTP1Connection's private flag, as Tornado 6.5.2 and 6.6.1 name it
            # (tests/test_tornado_versions.py); without it the connection stays open.
            connection = request.connection
            if hasattr(connection, "_disconnect_on_finish"):
                connection._disconnect_on_finish = True
        return super().find_handler(request, **kwargs)

    def log_request(self, handler: tornado.web.RequestHandler) -> None:
        self.requests.discard(handler.request)
        super().log_request(handler)


class _Ending(tornado.httputil.HTTPMessageDelegate):
    """Tell the application when a request's connection closes before its answer was logged."""

    def __init__(self, app: _Tracking, delegate: Any) -> None:
        self.app = app
        self.delegate = delegate
        self.request: Any = None

    def headers_received(self, start_line: Any, headers: Any) -> Any:
        self.app.routed = None
        answer = self.delegate.headers_received(start_line, headers)  # routes the request at once
        self.request = self.app.routed
        return answer

    def data_received(self, chunk: bytes) -> Any:
        return self.delegate.data_received(chunk)

    def finish(self) -> None:
        self.delegate.finish()

    def on_connection_close(self) -> None:
        self.app.requests.discard(self.request)
        self.delegate.on_connection_close()


def setup_logging(developer: bool, log_format: str = "text") -> None:
    """Log to stderr, one line per event (written once per event-loop iteration), in text or JSON."""
    handler = LoopBufferedHandler(sys.stderr)
    if log_format == "json":
        handler.setFormatter(JsonFormatter())
    logging.basicConfig(
        handlers=[handler],
        level=logging.DEBUG if developer else logging.INFO,
        format=LOG_FORMAT,
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


async def check_startup(settings: Settings) -> None:
    """Open the store once (creating or migrating its schema) and build the URL table.

    Done in the parent before any worker starts, so a bad resource list or an
    unreachable database stops the daemon at once, and N workers never race to migrate.
    """
    try:
        declarations = declarations_for(settings)
    except ValueError as exc:  # a resource or handler that cannot be mounted
        raise StartupError(str(exc)) from None
    try:
        store = await open_store(settings.database_url, declarations)
    except ValueError as exc:  # a url option the store does not know
        raise StartupError(f"[Database] url: {exc}") from None
    except StoreUnavailable as exc:
        raise StartupError(f"[Database] url: {exc}", status=1) from None
    try:
        make_app(settings, store)
    except ValueError as exc:
        raise StartupError(str(exc)) from None
    finally:
        await store.close()


class _Server(tornado.httpserver.HTTPServer):
    """An HTTPServer that holds at most `max_connections` open connections.

    One more is answered at once with a 503 (JSON, Retry-After) and closed, before
    anything of it is read: many idle or slow clients cost a fixed amount, not one
    more buffer each.
    """

    max_connections = 1000
    open_connections = 0
    shed: bytes = b""

    def handle_stream(self, stream: Any, address: Any) -> None:
        if self.open_connections >= self.max_connections:
            if isinstance(stream, tornado.iostream.SSLIOStream):
                stream.close()  # no handshake for a connection refused anyway (it could hang on one)
                return
            try:
                stream.write(self.shed).add_done_callback(lambda _: stream.close())
            except tornado.iostream.StreamClosedError:
                return
            tornado.ioloop.IOLoop.current().call_later(5, stream.close)  # a reader that never reads
            return
        self.open_connections += 1
        super().handle_stream(stream, address)

    def on_close(self, server_conn: object) -> None:
        self.open_connections -= 1
        super().on_close(server_conn)


def _allow_open_files(needed: int) -> None:
    """Raise the process's soft limit of open files towards `needed` (up to the hard limit)."""
    try:
        import resource
    except ImportError:  # pragma: no cover - not on POSIX
        return
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != resource.RLIM_INFINITY and soft < needed:
        target = needed if hard == resource.RLIM_INFINITY else min(needed, hard)
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
        if target < needed:
            log.warning("max_connections: only %d files may be open (ulimit -n); lower it or raise the limit", hard)


def shed_answer(version: str) -> bytes:
    """Return the whole 503 a connection over the limit gets."""
    body = b'{"error":"Too many open connections; retry shortly"}'
    return (
        b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json; charset=UTF-8\r\n"
        b"Retry-After: 1\r\nConnection: close\r\nX-Medusa-Server: " + version.encode("ascii", "replace") + b"\r\n"
        b"Content-Length: " + str(len(body)).encode() + b"\r\n\r\n" + body
    )


class _SharedSocketServer(_Server):
    """An HTTPServer that takes one connection per wake-up from a socket it shares with other workers.

    Tornado accepts up to 128 waiting connections each time a listening socket is
    readable. Every worker waits on the same socket, so the first one to run took a
    whole burst: often all of a benchmark's connections went to one of the workers,
    and the others idled (docs/benchmarks.md, "Several processes"). Taking one and
    going back to the event loop lets the socket wake the other workers too, and a
    busy worker takes fewer.
    """

    def add_sockets(self, sockets: Any) -> None:
        accept = getattr(self, "_handle_connection", None)
        if accept is None:  # pragma: no cover - a Tornado without it: its own accept loop
            super().add_sockets(sockets)
            return
        io_loop = tornado.ioloop.IOLoop.current()
        for sock in sockets:

            def accept_one(fd: Any, events: int, sock: socket.socket = sock) -> None:
                try:
                    connection, address = sock.accept()
                except (BlockingIOError, ConnectionAbortedError):
                    return  # another worker took it, or the client left while it waited
                accept(connection, address)

            def remove(sock: socket.socket = sock) -> None:
                io_loop.remove_handler(sock)

            io_loop.add_handler(sock, accept_one, tornado.ioloop.IOLoop.READ)
            self._sockets[sock.fileno()] = sock
            self._handlers[sock.fileno()] = remove


async def run_worker(
    settings: Settings,
    sockets: list[socket.socket],
    tls: ssl.SSLContext | None,
    announce: Callable[[], None] | None = None,
    shared: bool = False,
    metrics_sockets: list[socket.socket] | None = None,
) -> int:
    """Serve on already-bound sockets until SIGTERM/SIGINT; drain, close the store, return 0.

    `shared`: other worker processes accept on the same sockets (`_SharedSocketServer`).
    `metrics_sockets`: the metrics listener's (`[API] metrics_port`), shared the same way.
    """
    try:
        store = await open_store(settings.database_url, declarations_for(settings))
    except StoreUnavailable as exc:
        log.error("cannot open the store: %s", exc)
        return 1
    app = make_app(settings, store, app_class=_Tracking)
    assert isinstance(app, _Tracking)
    api = app.settings["medusa_v2_api"]
    server = (_SharedSocketServer if shared else _Server)(
        app,
        xheaders=settings.handle_reverse_proxy,
        ssl_options=tls,
        # Slow or idle clients cannot hold a connection for ever: headers must arrive
        # within idle_timeout of the connection going quiet, a body within body_timeout.
        idle_connection_timeout=settings.idle_timeout,
        body_timeout=settings.body_timeout,
        max_header_size=MAX_HEADER_BYTES,
    )
    _allow_open_files(settings.max_connections + 100)  # connections, the store, logs, listening sockets
    server.max_connections = settings.max_connections
    server.shed = shed_answer(api.version)
    server.add_sockets(sockets)
    watcher = None
    if settings.config_path:
        # Another worker's PATCH /config (or an edit) reaches this one within a second.
        config_watcher = ConfigWatcher(api, settings.config_path)
        config_watcher.check()
        watcher = tornado.ioloop.PeriodicCallback(config_watcher.check, 1000)
        watcher.start()
    # Shared state that expires (revocations, idempotency keys, failed logins) is
    # deleted now and then, so the tables stay the size of what is still in use.
    housekeeping = tornado.ioloop.PeriodicCallback(lambda: _purge(api), PURGE_EVERY * 1000, jitter=0.1)
    _purge(api)
    housekeeping.start()

    # The gauges (requests in flight, the store's pool), sampled: at each scrape in the
    # worker that answers it, every second in each worker (a scrape in any one sums them).
    def sample() -> None:
        metrics.requests_in_flight(app.inflight)
        metrics.observe_store(store)

    app.settings["medusa_v2_sample"] = sample
    sampling = tornado.ioloop.PeriodicCallback(sample, SAMPLE_EVERY * 1000)
    sampling.start()
    metrics_server = start_listener(sample, metrics_sockets, settings.idle_timeout) if metrics_sockets else None

    stopping = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stopping.set)
    if announce is not None:
        announce()  # only now: a signal from here on is a clean stop
    await stopping.wait()
    log.info("shutting down: no new connections; finishing %d request(s) in flight", app.inflight)
    server.stop()
    await api.close_feed()  # change-feed sockets: closed at once, with 1001 (they resume with since=)
    housekeeping.stop()
    sampling.stop()
    if metrics_server is not None:
        metrics_server.stop()
    if watcher is not None:
        watcher.stop()
    app.draining = True
    deadline = time.monotonic() + api.settings.shutdown_timeout
    while app.inflight > 0 and time.monotonic() < deadline:
        await asyncio.sleep(0.02)
    if app.inflight > 0:
        log.warning("shutdown timeout: %d request(s) still in flight are cut off", app.inflight)
    await server.close_all_connections()
    if metrics_server is not None:
        await metrics_server.close_all_connections()
    await store.close()
    log.info("stopped")
    return 0


def worker_count(settings: Settings) -> int:
    """Return how many worker processes to run (`processes = 0`: one per core)."""
    return settings.processes or os.cpu_count() or 1


def serve(settings: Settings, host: str | None = None, port: int | None = None) -> int:
    """Run the daemon in the foreground; return the process exit status."""
    setup_logging(settings.developer, settings.log_format)
    workers = worker_count(settings)
    if workers == 1:
        return _serve(settings, host, port, workers)
    with metrics.shared_between_processes():  # before anything is counted, so before the workers fork
        return _serve(settings, host, port, workers)


def _bind(what: str, port: int, host: str) -> list[socket.socket]:
    try:
        return tornado.netutil.bind_sockets(port, host or None, family=socket.AF_UNSPEC)
    except OSError as exc:
        raise StartupError(f"cannot listen on {host}:{port}{what}: {exc.strerror or exc}", status=1) from None


def _serve(settings: Settings, host: str | None, port: int | None, workers: int) -> int:
    tls = ssl_context(settings)
    asyncio.run(check_startup(settings))
    bind_host = host if host is not None else settings.web_host
    bind_port = port if port is not None else settings.web_port
    sockets = _bind("", bind_port, bind_host)
    metrics_sockets: list[socket.socket] = []
    if settings.metrics_port:
        metrics_sockets = _bind(" ([API] metrics_host, metrics_port)", settings.metrics_port, settings.metrics_host)
    warn_if_open(settings)
    shown = sockets[0].getsockname()

    def announce() -> None:
        log.info(
            "medusa_v2 %s serving %s://%s:%s%s/api/v2 with %d process(es)",
            __version__,
            "https" if tls else "http",
            shown[0],
            shown[1],
            settings.web_root,
            workers,
        )
        if metrics_sockets:
            where = metrics_sockets[0].getsockname()
            log.info("metrics without credentials at http://%s:%s/metrics", where[0], where[1])

    if workers == 1:
        return asyncio.run(run_worker(settings, sockets, tls, announce, metrics_sockets=metrics_sockets))
    return Supervisor(settings, sockets, tls, workers, metrics_sockets).run(announce)


class Supervisor:
    """Fork workers that share the listening sockets; replace any that dies; stop them all on SIGTERM."""

    RESTART_DELAY = 0.5

    def __init__(
        self,
        settings: Settings,
        sockets: list[socket.socket],
        tls: ssl.SSLContext | None,
        count: int,
        metrics_sockets: list[socket.socket] | None = None,
    ) -> None:
        self.settings = settings
        self.sockets = sockets
        self.metrics_sockets = metrics_sockets or []
        self.tls = tls
        self.count = count
        self.children: dict[int, int] = {}  # pid -> slot
        self.stopping = False

    def spawn(self, slot: int) -> None:
        """Fork one worker for `slot`."""
        pid = os.fork()
        if pid == 0:  # the worker: serve, then leave without running the parent's cleanup
            status = 1
            try:
                signal.signal(signal.SIGTERM, signal.SIG_DFL)
                signal.signal(signal.SIGINT, signal.SIG_DFL)
                status = asyncio.run(
                    run_worker(self.settings, self.sockets, self.tls, shared=True, metrics_sockets=self.metrics_sockets)
                )
            except BaseException:
                log.exception("worker %d failed", os.getpid())
            finally:
                logging.shutdown()
                os._exit(status)
        self.children[pid] = slot

    def _stop(self, signum: int, frame: object) -> None:
        if not self.stopping:
            log.info("received signal %d: stopping %d worker(s)", signum, len(self.children))
        self.stopping = True
        for pid in list(self.children):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM)

    def run(self, announce: Callable[[], None]) -> int:
        """Supervise until every worker has exited after a stop signal; return 0."""
        signal.signal(signal.SIGTERM, self._stop)
        signal.signal(signal.SIGINT, self._stop)
        announce()
        for slot in range(self.count):
            self.spawn(slot)
        kill_at: float | None = None
        while self.children:
            if self.stopping and kill_at is None:
                kill_at = time.monotonic() + self.settings.shutdown_timeout + 5
            if kill_at is not None and time.monotonic() > kill_at:
                for pid in list(self.children):
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(pid, signal.SIGKILL)
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                break
            if pid == 0:
                time.sleep(0.05)
                continue
            slot = self.children.pop(pid, -1)
            metrics.process_exited(pid)  # its gauges leave the sums; its counters stay counted
            if slot < 0 or self.stopping:
                continue
            log.warning("worker %d exited (%s); starting a new one", pid, _describe(status))
            time.sleep(self.RESTART_DELAY)  # no hot loop if workers die at start
            if not self.stopping:
                self.spawn(slot)
        for sock in self.sockets + self.metrics_sockets:
            sock.close()
        log.info("all workers stopped")
        return 0


def _describe(status: int) -> str:
    if os.WIFSIGNALED(status):
        return f"killed by signal {os.WTERMSIG(status)}"
    return f"exit status {os.waitstatus_to_exitcode(status)}"

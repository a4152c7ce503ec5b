"""The process's Prometheus metrics (prometheus_client): what is counted, and their exposition.

Metrics belong to the process, as Prometheus sees it: every app of the process adds
to the same series (prometheus_client's default registry), created on first use.
The recording functions are cheap (a dict lookup and an increment) and always
work, whether or not anything exposes the metrics:

- `observe_request(method, route, status, seconds)`: `medusa_v2_http_requests_total`
  by method, route template (`/api/v2/ticket/{ticket_id}`, never a raw path) and
  status, and `medusa_v2_http_request_duration_seconds` by method and route;
- `requests_in_flight(n)`; `socket_opened()`, `socket_closed()` (the event feed's
  WebSockets); `events_sent(n)`; `import_rows(n)`; `observe_store(store)` (its
  connection pool, on PostgreSQL).

A daemon with several worker processes calls `use_multiprocess(directory)` before
anything is counted (before it forks): every process then writes its values to
files there and `exposition()` adds them up, whichever worker answers the scrape
(prometheus_client's multiprocess mode). `process_exited(pid)` drops the gauges of
a worker that died (its counters stay counted).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from typing import Any

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"  # prometheus_client's switch to multiprocess mode
OTHER_ROUTE = "(other)"  # a request no API rule served (a host's own handler, tornado's 404)
UNMATCHED_ROUTE = "(unmatched)"  # the API's JSON 404 for a path under its root that no rule matches
_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
# Seconds: most answers of this API take well under a millisecond of the server's time.
LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


class _Metrics:
    """The metric objects, made once per process (in multiprocess mode, after `use_multiprocess`)."""

    def __init__(self) -> None:
        from prometheus_client import Counter, Gauge, Histogram

        self.requests = Counter(
            "medusa_v2_http_requests",
            "Requests answered, by method, route template and status.",
            ("method", "route", "status"),
        )
        self.latency = Histogram(
            "medusa_v2_http_request_duration_seconds",
            "Seconds from a request's arrival to its answer, by method and route template.",
            ("method", "route"),
            buckets=LATENCY_BUCKETS,
        )
        self.in_flight = Gauge(
            "medusa_v2_http_requests_in_flight", "Requests routed and not answered yet.", multiprocess_mode="livesum"
        )
        self.websockets = Gauge("medusa_v2_websockets_open", "Open event-feed WebSockets.", multiprocess_mode="livesum")
        self.events = Counter("medusa_v2_events_sent", "Change events sent to WebSocket clients.")
        self.pool_size = Gauge(
            "medusa_v2_store_pool_connections",
            "Connections the store's pool holds (PostgreSQL).",
            multiprocess_mode="livesum",
        )
        self.pool_available = Gauge(
            "medusa_v2_store_pool_available",
            "Idle connections in the store's pool (PostgreSQL).",
            multiprocess_mode="livesum",
        )
        self.pool_waiting = Gauge(
            "medusa_v2_store_pool_waiting",
            "Requests waiting for a connection of the store's pool (PostgreSQL).",
            multiprocess_mode="livesum",
        )
        self.import_rows = Counter("medusa_v2_import_rows", "Items imported (top-level and nested) by `import`.")
        self.imports_running = Gauge("medusa_v2_imports_running", "Imports running.", multiprocess_mode="livesum")
        # (method, route, status) -> (its counter's inc, its histogram's observe): `.labels()` once per series.
        self.series: dict[tuple[str, str, int], tuple[Callable[[], None], Callable[[float], None]]] = {}

    def series_of(self, key: tuple[str, str, int]) -> tuple[Callable[[], None], Callable[[float], None]]:
        method, route, status = key
        found = (self.requests.labels(method, route, str(status)).inc, self.latency.labels(method, route).observe)
        self.series[key] = found
        return found


_made: _Metrics | None = None


def _metrics() -> _Metrics:
    global _made
    if _made is None:
        _made = _Metrics()
    return _made


def use_multiprocess(directory: str) -> None:
    """Count in files under `directory` (private, empty), summed across processes; before anything is counted."""
    if _made is not None:
        raise RuntimeError("metrics were counted before use_multiprocess: they would not be shared")
    os.environ[MULTIPROC_ENV] = directory
    from prometheus_client import values

    # prometheus_client picks its value class when imported; it may have been imported already.
    values.ValueClass = values.get_value_class()


@contextlib.contextmanager
def shared_between_processes() -> Iterator[str]:
    """Count in a private directory (0700) while the block runs, for it and the processes it forks; remove it after.

    Only the process that made the directory removes it (a forked worker leaving the block does not).
    """
    directory = tempfile.mkdtemp(prefix="medusa_v2-metrics-")
    owner = os.getpid()
    try:
        use_multiprocess(directory)
        yield directory
    finally:
        if os.getpid() == owner:
            shutil.rmtree(directory, ignore_errors=True)


def multiprocess_directory() -> str | None:
    """Return the directory of multiprocess mode, or None for one process."""
    return os.environ.get(MULTIPROC_ENV) or None


def process_exited(pid: int) -> None:
    """Forget the live gauges (in flight, sockets, pool) of a worker process that has exited."""
    directory = multiprocess_directory()
    if directory is not None:
        from prometheus_client import multiprocess

        multiprocess.mark_process_dead(pid, directory)


# -- recording ---------------------------------------------------------------------------


def method_label(method: str | None) -> str:
    """Return a method as a label value: the verbs the API knows, `OTHER` for the rest (bounded)."""
    return method if method is not None and method in _METHODS else "OTHER"


def observe_request(method: str | None, route: str, status: int, seconds: float) -> None:
    """Count one answered request and its latency."""
    metrics = _made or _metrics()
    key = (method_label(method), route, status)
    inc, observe = metrics.series.get(key) or metrics.series_of(key)
    inc()
    observe(seconds)


def requests_in_flight(count: int) -> None:
    """Set how many requests this process is answering."""
    (_made or _metrics()).in_flight.set(count)


def socket_opened() -> None:
    """Count an event-feed WebSocket that opened."""
    (_made or _metrics()).websockets.inc()


def socket_closed() -> None:
    """Count an event-feed WebSocket that closed."""
    (_made or _metrics()).websockets.dec()


def events_sent(n: int) -> None:
    """Count `n` change events sent to WebSocket clients."""
    if n > 0:
        (_made or _metrics()).events.inc(n)


def import_rows(n: int) -> None:
    """Count `n` items an import has read and validated."""
    if n > 0:
        (_made or _metrics()).import_rows.inc(n)


def import_started() -> None:
    """Count an import that runs."""
    (_made or _metrics()).imports_running.inc()


def import_ended() -> None:
    """Count an import that has ended (imported or failed)."""
    (_made or _metrics()).imports_running.dec()


def observe_store(store: Any) -> None:
    """Record the store's connection pool (size, idle, waiting), if it has one."""
    stats = store.pool_stats()
    if stats:
        metrics = _made or _metrics()
        metrics.pool_size.set(stats.get("pool_size", 0))
        metrics.pool_available.set(stats.get("pool_available", 0))
        metrics.pool_waiting.set(stats.get("requests_waiting", 0))


# -- exposition --------------------------------------------------------------------------


def exposition() -> tuple[bytes, str]:
    """Return the metrics in Prometheus text format and its Content-Type: this process's, or every process's."""
    from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, CollectorRegistry, generate_latest, multiprocess

    _metrics()  # every series is shown from the first scrape on, even at zero
    directory = multiprocess_directory()
    if directory is None:
        return generate_latest(REGISTRY), CONTENT_TYPE_LATEST
    registry = CollectorRegistry()
    multiprocess.MultiProcessCollector(registry, directory)
    return generate_latest(registry), CONTENT_TYPE_LATEST

"""GET /metrics: the Prometheus exposition, under the API with credentials, or on a listener of its own without.

Under the API (`{web_root}/api/v2/metrics`) it takes the credentials every API route
takes (401 JSON without). `[API] metrics_port` (with `metrics_host`, 127.0.0.1 by
default) opens a listener that serves `/metrics` to anyone who can reach that
address, for a Prometheus server that scrapes without credentials; anything else
there is a JSON 404 (405 for another verb on /metrics).
"""

from __future__ import annotations

import socket
from collections.abc import Callable
from typing import Any, ClassVar

import tornado.httpserver
import tornado.web

from . import metrics
from .answer import Answer, error_answer
from .handler import MAX_HEADER_BYTES, ApiHandler
from .request_id import HEADER as REQUEST_ID_HEADER
from .request_id import request_id


class MetricsHandler(ApiHandler):
    """The API's /metrics: every worker process's metrics, for a client with credentials."""

    routes: ClassVar = {"single": ("GET", "HEAD")}

    async def get(self) -> None:
        """Answer the metrics in Prometheus text format."""
        # The daemon samples its gauges itself; in any other app, the store's pool is read here.
        sample = self.application.settings.get("medusa_v2_sample") or (lambda: metrics.observe_store(self.api.store))
        await self.write_answer(scrape(sample))

    async def head(self) -> None:
        """Answer as GET does, without the body."""
        await self.get()


def scrape(sample: Callable[[], None]) -> Answer:
    """Return the answer to a scrape: the gauges sampled now, then every metric."""
    sample()
    body, content_type = metrics.exposition()
    return Answer(200, {"Content-Type": content_type, "Cache-Control": "no-store"}, body)


class _ListenerHandler(tornado.web.RequestHandler):
    """A request on the metrics listener: JSON errors, the request id echoed."""

    def initialize(self, sample: Callable[[], None]) -> None:
        """Receive what samples the gauges before a scrape."""
        self.sample = sample

    def set_default_headers(self) -> None:
        """Echo the request id on every answer, errors included."""
        self._headers[REQUEST_ID_HEADER] = request_id(self.request)

    def write_error(self, status_code: int, **kwargs: Any) -> None:
        """Answer an error as the API does: `{"error": ...}`."""
        exc_info = kwargs.get("exc_info")
        answer = error_answer(
            exc_info[1] if exc_info else None,
            allow="GET, HEAD",
            head=False,
            developer=False,
            status=status_code,
            reason=self._reason,
        )
        self.set_header("Content-Type", "application/json; charset=UTF-8")
        for name, value in answer.headers.items():
            self.set_header(name, value)
        self.finish(answer.body)


class ListenerMetricsHandler(_ListenerHandler):
    """GET /metrics on the metrics listener, without credentials."""

    SUPPORTED_METHODS = ("GET", "HEAD")

    def get(self) -> None:
        """Answer the metrics in Prometheus text format."""
        answer = scrape(self.sample)
        for name, value in answer.headers.items():
            self.set_header(name, value)
        self.finish(answer.body)

    def head(self) -> None:
        """Answer as GET does, without the body."""
        self.get()


class _ListenerNotFound(_ListenerHandler):
    def prepare(self) -> None:
        raise tornado.web.HTTPError(404, reason="Not found: the metrics are at /metrics")


def start_listener(
    sample: Callable[[], None], sockets: list[socket.socket], idle_timeout: float
) -> tornado.httpserver.HTTPServer:
    """Serve `listener_app` on bound sockets (another worker process may accept on them too)."""
    server = tornado.httpserver.HTTPServer(
        listener_app(sample), idle_connection_timeout=idle_timeout, max_header_size=MAX_HEADER_BYTES
    )
    server.add_sockets(sockets)
    return server


def listener_app(sample: Callable[[], None]) -> tornado.web.Application:
    """Return the application of the metrics listener: `/metrics`, and a JSON 404 for anything else.

    `sample`: sets the gauges before each scrape (`metrics.observe_store`...).
    """
    return tornado.web.Application(
        [(r"/metrics/?", ListenerMetricsHandler, {"sample": sample})],
        default_handler_class=_ListenerNotFound,
        default_handler_args={"sample": sample},
        log_function=lambda handler: None,  # a scraper every few seconds: no access-log line each time
    )

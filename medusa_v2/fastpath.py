"""A short path for GETs on resource routes: the same answer, written without a RequestHandler.

Tornado's RequestHandler costs about as much per request as its HTTP server does:
a bare `HTTPMessageDelegate` answers clearly more requests per second than a bare
RequestHandler (docs/benchmarks.md, "A fast path for GETs"). So `ApiApplication`
answers a GET without a body on a resource route itself: `ResourceView.respond`
makes the answer, whatever it is (200, 304, 401, 404, 503...), exactly as it does
for ResourceHandler, and this module only writes it. A request it cannot take (a
body, a host's live settings, a store not opened yet, a path that is not UTF-8)
goes to ResourceHandler before anything is done with it: no request runs twice.
tests/test_fastpath.py compares both paths answer by answer.

An app built by something else (an embedder's `tornado.web.Application` holding our
URL table), and an ApiApplication with gzip or a `log_function` of its own (which may
read any RequestHandler attribute), take ResourceHandler for everything.
"""

from __future__ import annotations

import time
from types import MappingProxyType
from typing import Any

import tornado
import tornado.httputil
import tornado.web

from . import metrics
from .accesslog import log_request
from .answer import Answer
from .handler import default_headers
from .request_id import HEADER as REQUEST_ID_HEADER
from .request_id import request_id
from .resource import ResourceHandler, ResourceView

_SERVER = "TornadoServer/" + tornado.version  # what RequestHandler.clear() sends
# Each status's start line, its reason as RequestHandler.set_status gives it, made once.
_START_LINES = MappingProxyType(
    {code: tornado.httputil.ResponseStartLine("", code, reason) for code, reason in tornado.httputil.responses.items()}
)


class ApiApplication(tornado.web.Application):
    """A tornado Application that answers resource GETs on the fast path."""

    fast_answers = 0  # requests answered on the fast path (the rest went to the handlers)

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        # A log function of the app's own may read any RequestHandler attribute: with
        # one, every request takes the handlers. So does gzip (tornado's transforms).
        self.fast_path = not self.transforms and self.settings.get("log_function", log_request) is log_request
        self._date_second = -1
        self._date_text = ""

    def date_header(self) -> str:
        """Return the Date header's value, formatted once per second."""
        now = time.time()
        second = int(now)
        if second != self._date_second:
            self._date_text = tornado.httputil.format_timestamp(now)
            self._date_second = second
        return self._date_text

    def log_request(self, handler: tornado.web.RequestHandler) -> None:
        """Count the request in the metrics (by its route template), then write its access-log line."""
        request = handler.request
        route = getattr(handler, "route_template", metrics.OTHER_ROUTE)
        metrics.observe_request(request.method, route, handler.get_status(), request.request_time())
        super().log_request(handler)

    # tornado annotates its own _HandlerDelegate; its router takes any HTTPMessageDelegate.
    def get_handler_delegate(  # type: ignore[override]
        self,
        request: tornado.httputil.HTTPServerRequest,
        target_class: type[tornado.web.RequestHandler],
        target_kwargs: dict[str, Any] | None = None,
        path_args: list[bytes] | None = None,
        path_kwargs: dict[str, bytes] | None = None,
    ) -> tornado.httputil.HTTPMessageDelegate:
        """Return the fast delegate for a GET on a resource route, tornado's otherwise."""
        if target_class is ResourceHandler and request.method == "GET" and self.fast_path and target_kwargs:
            return FastGet(self, request, target_kwargs, path_args, path_kwargs)
        return super().get_handler_delegate(request, target_class, target_kwargs, path_args, path_kwargs)


class FastGet(ResourceView, tornado.httputil.HTTPMessageDelegate):
    """Write the answer to one GET on a resource route, or hand the GET, untouched, to ResourceHandler."""

    application: ApiApplication

    def __init__(
        self,
        application: ApiApplication,
        request: tornado.httputil.HTTPServerRequest,
        kwargs: dict[str, Any],
        path_args: list[bytes] | None,
        path_kwargs: dict[str, bytes] | None,
    ) -> None:
        self.application = application
        self.request = request
        self.kwargs = kwargs
        self.path_args = path_args
        self.path_kwargs = path_kwargs
        self.api = kwargs["api"]
        self.kind = kwargs["kind"]
        self.resource = kwargs["resource"]
        self.declaration = self.resource.declaration
        self.verbs, self.allow = self.resource.verb_tables[self.kind]
        self.identity = None
        self._query = None
        self.fallback: tornado.httputil.HTTPMessageDelegate | None = None
        self.answer: Answer | None = None

    # -- tornado's HTTPMessageDelegate --

    def headers_received(
        self,
        start_line: tornado.httputil.RequestStartLine | tornado.httputil.ResponseStartLine,
        headers: tornado.httputil.HTTPHeaders,
    ) -> Any:
        """Answer from the head alone, or hand over before doing anything."""
        path = self._text_path()
        if (
            path is not None
            and self.api.opened
            and self.api.provider is None  # a host's live settings: ResourceHandler refreshes them
            and "Transfer-Encoding" not in headers
            and headers.get("Content-Length", "0") == "0"
        ):
            return self._respond(path)
        self.fallback = tornado.web.Application.get_handler_delegate(
            self.application, self.request, ResourceHandler, self.kwargs, self.path_args, self.path_kwargs
        )
        return self.fallback.headers_received(start_line, headers)

    def data_received(self, chunk: bytes) -> Any:
        """Only a handed-over request has a body."""
        if self.fallback is not None:
            return self.fallback.data_received(chunk)
        return None

    def finish(self) -> None:
        """Write the answer (the request has been read in full), as RequestHandler would."""
        if self.fallback is not None:
            self.fallback.finish()
            return
        answer = self.answer
        assert answer is not None
        connection = self.request.connection
        assert connection is not None
        headers = tornado.httputil.HTTPHeaders()
        # RequestHandler.clear()'s headers, in its order: both paths send the same bytes.
        headers["Server"] = _SERVER
        headers["Content-Type"] = ""  # its value comes from default_headers
        headers["Date"] = self.application.date_header()
        default_headers(headers, self.api, self.allow, self.request.headers)
        headers[REQUEST_ID_HEADER] = request_id(self.request)
        for name, value in answer.headers.items():
            headers[name] = value
        start = _START_LINES.get(answer.status) or tornado.httputil.ResponseStartLine("", answer.status, "Unknown")
        if answer.body is None:
            del headers["Content-Type"]
            connection.write_headers(start, headers)
        else:
            headers["Content-Length"] = str(len(answer.body))
            connection.write_headers(start, headers, answer.body)
        connection.finish()
        self.application.fast_answers += 1
        self.application.log_request(self)  # type: ignore[arg-type]

    def on_connection_close(self) -> None:
        """Tell a handed-over request's handler; an answer of ours needs nothing."""
        if self.fallback is not None:
            self.fallback.on_connection_close()

    # -- what the access log (log_request) reads --

    def get_status(self) -> int:
        """Return the answer's status code."""
        return self.answer.status if self.answer is not None else 200

    # -- the work --

    def _text_path(self) -> dict[str, str] | None:
        """Return the path arguments as text, or None when they are not UTF-8 (tornado's own 400)."""
        try:
            return {k: v.decode("utf-8") for k, v in (self.path_kwargs or {}).items() if v is not None}
        except UnicodeDecodeError:
            return None

    async def _respond(self, path: dict[str, str]) -> None:
        self.answer = await self.respond(path)

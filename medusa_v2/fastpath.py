"""A short path for the commonest answers: successful GETs on resource routes.

Tornado's RequestHandler costs about as much per request as its HTTP server does:
a bare `HTTPMessageDelegate` answers clearly more requests per second than a bare
RequestHandler (docs/benchmarks.md, "A fast path for GETs"). So
`ApiApplication` answers a GET on a resource route itself, with the same functions
ResourceHandler uses (`list_answer`, `retrieve_answer`, `default_headers`, the
Authenticator), when the answer is a 200 or a 304. Anything else goes, untouched, to
ResourceHandler: a body, HEAD, Basic credentials (a failed one counts towards the
login throttle, so it must be checked once), an oversized request, and every
failure (401, 400, 404, 503, a bug), which ResourceHandler then answers as it always
does. Nothing the fast path does before handing over has an effect a client could
see, so there is one contract; tests/test_fastpath.py compares both paths answer by
answer.

An app built by something else (an embedder's `tornado.web.Application` holding our
URL table), and an ApiApplication with gzip or a `log_function` of its own (which may
read any RequestHandler attribute), take ResourceHandler for everything.
"""

from __future__ import annotations

import time
from typing import Any

import tornado
import tornado.httputil
import tornado.web

from .accesslog import log_request
from .auth import credential
from .errors import ApiError
from .handler import default_headers, not_modified
from .resource import ResourceHandler, ResourceView, list_answer, retrieve_answer

_SERVER = "TornadoServer/" + tornado.version  # what RequestHandler.clear() sends
_OK = tornado.httputil.ResponseStartLine("", 200, "OK")
_NOT_MODIFIED = tornado.httputil.ResponseStartLine("", 304, "Not Modified")


class ApiApplication(tornado.web.Application):
    """A tornado Application that answers successful resource GETs on the fast path."""

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
    """Answer one GET on a resource route, or hand it to ResourceHandler."""

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
        self.resource = kwargs["resource"]
        self.declaration = self.resource.declaration
        self._query = None
        self.fallback: tornado.httputil.HTTPMessageDelegate | None = None
        self.status = 200
        self.answer: tuple[bytes, dict[str, str]] | None = None

    # -- tornado's HTTPMessageDelegate --

    def headers_received(
        self,
        start_line: tornado.httputil.RequestStartLine | tornado.httputil.ResponseStartLine,
        headers: tornado.httputil.HTTPHeaders,
    ) -> Any:
        """Decide, from the head alone, whether this request may take the fast path."""
        kind = self.kwargs["kind"]
        if (
            self.api.opened
            and self.api.provider is None  # a host's live settings: ResourceHandler refreshes them
            and "GET" in self.resource.verbs[kind]
            and "Transfer-Encoding" not in headers
            and headers.get("Content-Length", "0") == "0"
            and not self._by_basic(headers)
        ):
            return self._try(start_line, headers, kind)
        return self._hand_over(start_line, headers)

    def data_received(self, chunk: bytes) -> Any:
        """Only a handed-over request has a body."""
        if self.fallback is not None:
            return self.fallback.data_received(chunk)
        return None

    def finish(self) -> None:
        """Write the answer (the request has been read in full)."""
        if self.fallback is not None:
            self.fallback.finish()
            return
        assert self.answer is not None
        body, extra = self.answer
        connection = self.request.connection
        assert connection is not None
        headers = tornado.httputil.HTTPHeaders()
        headers["Server"] = _SERVER
        headers["Date"] = self.application.date_header()
        default_headers(headers, self.api, self.resource.allow[self.kwargs["kind"]], self.request.headers)
        for name, value in extra.items():
            headers[name] = value
        if self.status == 304:
            del headers["Content-Type"]
            connection.write_headers(_NOT_MODIFIED, headers)
        else:
            headers["Content-Length"] = str(len(body))
            connection.write_headers(_OK, headers, body)
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
        return self.status

    # -- the work --

    def _by_basic(self, headers: tornado.httputil.HTTPHeaders) -> bool:
        try:
            return credential(headers, self.first_query_value("api_key"))[0] == "basic"
        except ApiError:
            return True  # a query that is not UTF-8: ResourceHandler answers the 400

    async def _try(
        self,
        start_line: tornado.httputil.RequestStartLine | tornado.httputil.ResponseStartLine,
        headers: tornado.httputil.HTTPHeaders,
        kind: str,
    ) -> None:
        try:
            self.check_request_size()
            await self.api.auth.authenticate(headers, self.first_query_value("api_key"), self.request.remote_ip or "")
            path = {k: v.decode("utf-8") for k, v in (self.path_kwargs or {}).items() if v is not None}
            ids = self.parse_ids(path, self.resource.id_fields)
            answer = await (list_answer if kind == "collection" else retrieve_answer)(self, ids)
        except Exception:
            # Whatever it is (401, 400, 404, 503, a bug), ResourceHandler answers it
            # from the start, as it would have without this path.
            waiter = self._hand_over(start_line, headers)
            if waiter is not None:
                await waiter
            return
        self.answer = answer
        if not_modified(headers, answer[1]["ETag"]):
            self.status = 304

    def _hand_over(
        self,
        start_line: tornado.httputil.RequestStartLine | tornado.httputil.ResponseStartLine,
        headers: tornado.httputil.HTTPHeaders,
    ) -> Any:
        self.fallback = tornado.web.Application.get_handler_delegate(
            self.application, self.request, ResourceHandler, self.kwargs, self.path_args, self.path_kwargs
        )
        return self.fallback.headers_received(start_line, headers)

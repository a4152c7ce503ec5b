"""The base handler: HTTP verbs to resource methods, and everything around them.

A subclass declares `routes` (route kind -> verb -> method name) and implements the
methods it supports. From that one table come the dispatch, `Allow`, the 405 answer
and the CORS method list. The base owns authentication, CORS, the error format,
JSON in and out, pagination headers, ETags and conditional requests: a resource
method only parses, calls the store and returns data.

`RequestView` is what a request needs whichever path answers it (admission, reading
the request, building an `Answer`); `ApiHandler` is the RequestHandler that writes
answers, the fast path (fastpath.py) the other writer.
"""

from __future__ import annotations

import json
import re
import urllib.parse
from collections.abc import Awaitable, Mapping, Sequence
from types import TracebackType
from typing import Any, ClassVar

import tornado.httputil
import tornado.iostream
import tornado.web

from .answer import GZIP_SUFFIX as GZIP_SUFFIX  # re-exported: their home until medusa_v2.answer
from .answer import Answer, error_answer, expected
from .answer import etag_matches as etag_matches
from .answer import not_modified as not_modified
from .auth import Identity
from .casing import camelize
from .codec import encode_json as encode_json  # re-exported, as below: their home until medusa_v2.codec
from .codec import encode_json_text as encode_json_text  # (config_endpoint.py and embedders import them from here)
from .codec import etag_of as etag_of
from .context import ApiContext
from .declaration import Declaration, Field
from .errors import ApiError
from .metrics import OTHER_ROUTE
from .request_id import HEADER as REQUEST_ID_HEADER
from .request_id import request_id

BODY_METHODS = frozenset({"POST", "PUT", "PATCH"})
PREFLIGHT_MAX_AGE = "600"  # seconds a browser may reuse a preflight's answer
# One client must not make the API parse or log unbounded request heads. (A daemon's
# HTTP server also closes connections whose head passes 64 KiB before any handler runs.)
MAX_URI_LENGTH = 8192
MAX_HEADER_BYTES = 16384
_HOST = re.compile(r"^[A-Za-z0-9.\-_]+(:[0-9]{1,5})?$|^\[[0-9A-Fa-f:.]+\](:[0-9]{1,5})?$")
_JSON_TYPE = re.compile(r"^application/(?:[\w.+-]+\+)?json$")

IF_MATCH_PARAMETER: dict[str, Any] = {
    "name": "If-Match",
    "in": "header",
    "required": False,
    "schema": {"type": "string"},
    "description": "An ETag (or `*`): the write happens only if it is current, else 412 "
    "(a value naming no current tag, an empty one included, is 412: RFC 9110 13.1.1).",
}
"""The If-Match header in the OpenAPI document, for every write that takes it."""


def default_headers(
    headers: Any, api: ApiContext, allow: str, request_headers: Mapping[str, str], compressing: bool = False
) -> None:
    """Set the headers every answer carries: version, content type, caching and CORS.

    `compressing`: the app's gzip transform runs after us (it adds Accept-Encoding to Vary).
    """
    for name, value in api.base_headers:
        headers[name] = value
    headers["Access-Control-Allow-Methods"] = allow
    headers["Vary"] = api.vary_compressed if compressing else api.vary
    if api.any_origin:
        headers["Access-Control-Allow-Origin"] = "*"
    else:
        allowed = api.allow_origin(request_headers.get("Origin"))
        if allowed is not None:
            headers["Access-Control-Allow-Origin"] = allowed


SECRET_PARAMETERS = frozenset({"api_key", "token"})
"""Query parameters that carry credentials: redacted in logs, never repeated in Link URLs."""


def redact_uri(uri: str) -> str:
    """Return a request URI with the value of every `api_key` and `token` parameter hidden.

    Tornado percent-decodes parameter names, so `api%5Fkey=...` authenticates too:
    names are compared decoded.
    """
    lowered = uri.lower()
    if "%" not in uri and "+" not in uri and "api_key" not in lowered and "token" not in lowered:
        return uri  # the common case, one scan: nothing to hide
    uri = re.sub(r"(?i)([?&;](?:api_key|token)=)[^&;#]*", r"\1[redacted]", uri)
    path, sep, query = uri.partition("?")
    if not sep or "%" not in query and "+" not in query:
        return uri
    parts = re.split(r"([&;])", query)
    for i in range(0, len(parts), 2):
        name, eq, _ = parts[i].partition("=")
        if eq and urllib.parse.unquote_plus(name).strip().lower() in SECRET_PARAMETERS:
            parts[i] = name + "=[redacted]"
    return path + sep + "".join(parts)


# Headers whose values the base handler makes itself from digits and hex digests.
_SAFE_HEADERS = frozenset(
    {"ETag", "X-Pagination-Page", "X-Pagination-Limit", "X-Pagination-Count", "X-Pagination-Total"}
)


_NO_VERBS: tuple[frozenset[str], str] = (frozenset(), "OPTIONS")


def verbs_and_allow(verbs: Sequence[str]) -> tuple[frozenset[str], str]:
    """Return the verbs a route answers (besides OPTIONS) and its `Allow` value."""
    return frozenset(verbs), ", ".join([*verbs, "OPTIONS"])


class _AnyMethod(tuple[str, ...]):
    """Let every verb (TRACE, PROPFIND...) reach prepare(), which answers 405 or 404.

    Tornado would refuse verbs outside its own list with a bare 405 before prepare(),
    so the catch-all could not say 404 and the 405 would not come from `routes`.
    """

    def __contains__(self, method: object) -> bool:
        return True


class RequestView:
    """A request being answered, whichever path writes the answer (ApiHandler or the fast path).

    Needs `api` (the ApiContext), `application`, `request` (tornado's
    HTTPServerRequest), the route's `verbs` and `allow`, `identity` (None until
    admitted) and `_query` (None until the query is first decoded).
    """

    api: ApiContext
    application: tornado.web.Application
    request: tornado.httputil.HTTPServerRequest
    verbs: frozenset[str]
    allow: str
    identity: Identity | None
    public: ClassVar[frozenset[str]] = frozenset()  # verbs that need no credentials
    query_token: ClassVar[bool] = False  # a token is also taken from `?token=` (the WebSocket's form)
    _query: dict[str, list[str]] | None

    @property
    def route_template(self) -> str:
        """Return the template of the route this request came by (the metrics' `route` label)."""
        return self.api.route_templates.get(type(self), OTHER_ROUTE)

    # -- admission: what every request passes before its method runs --

    async def admit(self) -> None:
        """Refuse what is not allowed before the body is read: 414, 431, 405, 401, 400, 413, 415."""
        method = self.request.method
        self.check_request_size()
        if method == "OPTIONS":
            return
        if not self.api.opened:
            await self.api.open()
        if method not in self.verbs:
            raise self._not_allowed()
        if method not in self.public:
            self.identity = await self.api.auth.authenticate(
                self.request.headers,
                self.first_query_value("api_key"),
                self.request.remote_ip or "",
                self.first_query_value("token") if self.query_token else None,
            )
        if method in BODY_METHODS:
            self._check_body_headers()

    def _check_body_headers(self) -> None:
        headers = self.request.headers
        length = headers.get("Content-Length")
        if length is not None:
            if not length.isdigit():
                raise ApiError(400, "Invalid Content-Length header")
            if int(length) > self.body_limit():
                raise self._too_large()
        has_body = bool(headers.get("Transfer-Encoding")) or (length is not None and int(length) > 0)
        if has_body:
            ctype, _, params = headers.get("Content-Type", "").partition(";")
            charset = re.search(r"charset\s*=\s*\"?([\w-]+)", params, re.I)
            if not _JSON_TYPE.match(ctype.strip().lower()) or (
                charset and charset.group(1).lower() not in ("utf-8", "utf8")
            ):
                raise ApiError(415, "Unsupported Content-Type: send the body as application/json (UTF-8)")

    def body_limit(self) -> int:
        """Return the largest body this handler reads (`[API] max_body_size`)."""
        return self.api.settings.max_body_size

    def _too_large(self) -> ApiError:
        return ApiError(413, f"Request body too large: the limit is {self.body_limit()} bytes")

    def _not_allowed(self) -> ApiError:
        return ApiError(
            405, f"Method {self.request.method} not allowed; allowed: {self.allow}", headers={"Allow": self.allow}
        )

    # -- answers --

    def reply(self, status: int, body: bytes | None, headers: Mapping[str, str] | None = None) -> Answer:
        """Return an answer; its ETag names the gzipped representation when gzip will send one."""
        headers = headers or {}
        if body is not None and "ETag" in headers and self.gzipped(len(body)):
            headers = {**headers, "ETag": headers["ETag"][:-1] + GZIP_SUFFIX}
        return Answer(status, headers, body)

    def cacheable(self, body: bytes, headers: Mapping[str, str]) -> Answer:
        """Return 200 with the body, or 304 (its headers, no body) when If-None-Match names its ETag."""
        answer = self.reply(200, body, headers)
        if not_modified(self.request.headers, headers["ETag"]):
            return Answer(304, answer.headers, None)
        return answer

    def failed(self, exc: Exception) -> Answer:
        """Return the error answer to `exc`, and log it when it is a bug rather than a refusal."""
        if not expected(exc):
            self.api.log.error("Uncaught exception in %s", self._request_summary(), exc_info=exc)
        head = self.request.method == "HEAD"
        return error_answer(exc, allow=self.allow, head=head, developer=self.api.settings.developer)

    def gzipped(self, length: int) -> bool:
        """Return whether tornado's gzip transform will compress a JSON answer of `length` bytes."""
        return (
            tornado.web.GZipContentEncoding in self.application.transforms
            and "gzip" in self.request.headers.get("Accept-Encoding", "")
            and length >= tornado.web.GZipContentEncoding.MIN_LENGTH
        )

    # -- reading the request --

    def parse_ids(self, path: Mapping[str, str], fields: Mapping[str, Field]) -> dict[str, Any]:
        """Return the path identifiers parsed by their resources' id fields, or raise 400."""
        ids: dict[str, Any] = {}
        for key, raw in path.items():
            if raw is None:
                continue
            try:
                ids[key] = fields[key].parse_id(raw)
            except ValueError as exc:
                shown = raw if len(raw) <= 40 else raw[:40] + "..."
                label = key[:-3] if key.endswith("_id") else key
                raise ApiError(400, f"Invalid {label} id '{shown}': {exc}") from None
        return ids

    @property
    def query(self) -> dict[str, list[str]]:
        """Return the query arguments as text (400 when they are not UTF-8)."""
        if self._query is None:
            try:
                self._query = {
                    k: [v.decode("utf-8") for v in values] for k, values in self.request.query_arguments.items()
                }
            except UnicodeDecodeError:
                raise ApiError(400, "Query string is not valid UTF-8") from None
        return self._query

    def first_query_value(self, name: str) -> str | None:
        """Return one query argument's first value, if given."""
        values = self.query.get(name)
        return values[0] if values else None

    def absolute_origin(self) -> str:
        """Return `[API] public_url`, else `scheme://host` as the client sees it (proxy headers only if trusted)."""
        if self.api.settings.public_url:
            return self.api.settings.public_url
        proto, host = self.request.protocol, self.request.host
        if self.api.settings.handle_reverse_proxy:
            fwd_host = self.request.headers.get("X-Forwarded-Host")
            if fwd_host:
                host = fwd_host.split(",")[0].strip()
            fwd_proto = self.request.headers.get("X-Forwarded-Proto", "").split(",")[0].strip().lower()
            if fwd_proto in ("http", "https"):
                proto = fwd_proto
        if not _HOST.match(host):
            raise ApiError(400, "Invalid Host header")
        return f"{proto}://{host}"

    def _request_summary(self) -> str:
        return f"{self.request.method} {redact_uri(self.request.uri or '')} ({self.request.remote_ip})"

    def check_request_size(self) -> None:
        """Refuse overlong URIs (414) and header sets (431) before any other work."""
        if len(self.request.uri or "") > MAX_URI_LENGTH:
            raise ApiError(414, f"Request URI too long: the limit is {MAX_URI_LENGTH} characters")
        size = 0
        for name, value in self.request.headers.get_all():
            size += len(name) + len(value) + 4
        if size > MAX_HEADER_BYTES:
            raise ApiError(431, f"Request header fields too large: the limit is {MAX_HEADER_BYTES} bytes")


@tornado.web.stream_request_body
class ApiHandler(RequestView, tornado.web.RequestHandler):
    """Base of every API v2 handler; subclasses fill `routes` and implement methods."""

    SUPPORTED_METHODS = _AnyMethod(tornado.web.RequestHandler.SUPPORTED_METHODS)

    # Route kind -> the verbs this handler answers (besides OPTIONS), e.g.
    # {"single": ("POST", "DELETE")}; a verb's tornado method must exist.
    routes: ClassVar[Mapping[str, tuple[str, ...]]] = {}
    declaration: Declaration | None = None
    # Route kind -> verbs_and_allow(its verbs): derived from `routes` once per class.
    verb_tables: ClassVar[Mapping[str, tuple[frozenset[str], str]]] = {}

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        cls.verb_tables = {kind: verbs_and_allow(verbs) for kind, verbs in cls.routes.items()}

    # -- set-up --

    def initialize(self, api: ApiContext, kind: str) -> None:
        """Receive this app's context and the route kind from the URL table."""
        api.refresh()  # a host that owns the settings: its current ones, before anything reads them
        self.api = api
        self.kind = kind
        self.verbs, self.allow = self.verb_table(kind)
        self.identity: Identity | None = None
        self._body_parts: list[bytes] = []
        self._body_size = 0
        self._body_too_large = False
        self._query: dict[str, list[str]] | None = None
        self._apply_default_headers()
        headers = self.request.headers
        self.bodiless = "Transfer-Encoding" not in headers and headers.get("Content-Length", "0") == "0"
        if self.bodiless:
            # Bodies are streamed, so tornado calls prepare() before it marks the read
            # done, and an answer given there (401, 404, 405) would close the kept-alive
            # connection. A request without a body has nothing left to read: say so.
            # Tornado has no public way to say it: this writes HTTP1Connection's private
            # flag, as Tornado 6.5.2 and 6.6.1 name it (tests/test_tornado_versions.py
            # runs the suite on both). Where it is missing, nothing is written and such
            # an early answer only closes the connection.
            connection = self.request.connection
            if getattr(connection, "_read_finished", True) is False:
                connection._read_finished = True  # type: ignore[union-attr]

    def compute_etag(self) -> str | None:
        """Leave ETags to the answers (tornado would hash every GET body)."""
        return None

    def verb_table(self, kind: str) -> tuple[frozenset[str], str]:
        """Return the verbs answered on this route kind and its `Allow` value (computed once, not per request)."""
        return self.verb_tables.get(kind, _NO_VERBS)

    def set_default_headers(self) -> None:
        """Put the version, content type and CORS headers back after send_error's clear()."""
        if hasattr(self, "api"):
            self._apply_default_headers()

    def _apply_default_headers(self) -> None:
        # Straight into the header table: these values are constants of the code and
        # of config.ini (an echoed Origin is one of the configured ones), checked
        # once, so set_header's per-call conversion and validation is skipped.
        default_headers(self._headers, self.api, self.allow, self.request.headers, bool(self.application.transforms))
        self._headers[REQUEST_ID_HEADER] = request_id(self.request)  # sane characters only (request_id.py)

    # -- the request pipeline --

    async def prepare(self) -> None:
        """Refuse what is not allowed before the body is read (see RequestView.admit)."""
        await self.admit()

    def data_received(self, chunk: bytes) -> None:
        """Collect the body up to max_body_size; beyond it, remember and discard.

        Only a POST, PUT or PATCH body is kept, and only once prepare() let the
        request through (its credentials checked from the head): any other body
        (OPTIONS, GET, DELETE...) is read and dropped, never buffered.
        """
        if self._body_too_large or self.request.method not in BODY_METHODS:
            return
        self._body_size += len(chunk)
        if self._body_size > self.body_limit():
            self._body_too_large = True
            self._body_parts = []
            return
        self._body_parts.append(chunk)

    async def options(self, **_: str) -> None:
        """Answer a preflight or an OPTIONS call: 204 with Allow, no credentials needed.

        Access-Control-Max-Age only means something on a preflight's answer: it is sent here only.
        """
        self.set_header("Allow", self.allow)
        self.set_header("Access-Control-Max-Age", PREFLIGHT_MAX_AGE)
        self.set_status(204)
        self.clear_header("Content-Type")
        await self.finish()

    # -- request helpers for subclasses --

    def json_body(self) -> dict[str, Any]:
        """Return the request body as a JSON object, or raise 400/413."""
        if self._body_too_large:
            raise self._too_large()
        raw = b"".join(self._body_parts)
        if not raw.strip():
            raise ApiError(400, "Request body is empty: send a JSON object")
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError:
            raise ApiError(400, "Request body is not valid UTF-8") from None
        try:
            value = json.loads(text, parse_constant=_refuse_constant)
        except ValueError as exc:
            detail = exc.msg if isinstance(exc, json.JSONDecodeError) else str(exc)
            raise ApiError(400, f"Malformed JSON in request body: {detail}") from None
        except RecursionError:
            raise ApiError(400, "Malformed JSON in request body: nested too deeply") from None
        if not isinstance(value, dict):
            raise ApiError(400, "Request body must be a JSON object")
        return value

    # -- responses --

    def send_json(self, status: int, value: Any, headers: Mapping[str, str] | None = None) -> Awaitable[None]:
        """Finish with a JSON body, dict keys made camelCase."""
        return self._send(status, encode_json(camelize(value)), headers)

    def _send(self, status: int, body: bytes | None, headers: Mapping[str, str] | None = None) -> Awaitable[None]:
        return self.write_answer(self.reply(status, body, headers))

    def send_cacheable(self, body: bytes, headers: dict[str, str]) -> Awaitable[None]:
        """Answer 200 with the body, or 304 when If-None-Match names its ETag."""
        return self.write_answer(self.cacheable(body, headers))

    def write_answer(self, answer: Answer) -> Awaitable[None]:
        """Finish with an answer: its status, its headers over every answer's, its body."""
        if answer.status != self._status_code:  # an error tornado began keeps its reason phrase
            self.set_status(answer.status)
        table = self._headers
        for name, value in answer.headers.items():
            if name in _SAFE_HEADERS:
                table[name] = value  # our own digits and hex: set_header's checks skipped
            else:
                self.set_header(name, value)
        if answer.body is None:
            self.clear_header("Content-Type")
            return self.finish()
        return self.finish(answer.body)

    def write_error(self, status_code: int, **kwargs: Any) -> None:
        """Answer an error tornado caught (a handler's or its own) as `failed` renders it."""
        exc_info: tuple[type[BaseException], BaseException, TracebackType] | None = kwargs.get("exc_info")
        head = self.request.method == "HEAD"
        answer = error_answer(
            exc_info[1] if exc_info else None,
            allow=self.allow,
            head=head,
            developer=self.api.settings.developer,
            status=status_code,
            reason=self._reason,
        )
        self.write_answer(answer)

    def log_exception(
        self, typ: type[BaseException] | None, value: BaseException | None, tb: TracebackType | None
    ) -> None:
        """Log unexpected errors with a summary that holds no credentials and no body."""
        if expected(value):
            return  # answered as a 4xx/503; the access log has the line
        if isinstance(value, tornado.iostream.StreamClosedError) and self._finished:
            return  # the client left before its answer was written; the access log has the line
        self.api.log.error("Uncaught exception in %s", self._request_summary(), exc_info=(typ, value, tb))  # type: ignore[arg-type]


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")

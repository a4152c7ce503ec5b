"""What a request gets back (status, headers, body), conditional answers, and errors as answers.

A resource request becomes an `Answer` in one place (`ResourceView.respond`); the
RequestHandler and the fast path only write it. An error becomes its answer here
and nowhere else, whichever path raised it.
"""

from __future__ import annotations

import traceback
from collections.abc import Mapping
from typing import NamedTuple

import tornado.httputil
import tornado.web

from .codec import encode_json
from .errors import ApiError
from .invalid import InvalidRequest
from .store import StoreUnavailable

GZIP_SUFFIX = '-gzip"'
"""Ends the ETag of an answer sent gzipped: another encoding, another tag (RFC 9110 8.8.3)."""


class Answer(NamedTuple):
    """A request's status, its own headers (besides those every answer carries), and its body.

    `body` None: no body and no Content-Type (204, 304).
    """

    status: int
    headers: Mapping[str, str]
    body: bytes | None


def etag_matches(header: str, etag: str, *, weak: bool) -> bool:
    """Return whether an If-Match / If-None-Match value names `etag` (or is `*`).

    A gzipped answer's tag names the same representation: it matches as the plain one.
    """
    if header.strip() == "*":
        return True
    for candidate in header.split(","):
        candidate = candidate.strip()
        if weak and candidate.startswith("W/"):
            candidate = candidate[2:]
        if candidate.endswith(GZIP_SUFFIX):
            candidate = candidate[: -len(GZIP_SUFFIX)] + '"'
        if candidate == etag:
            return True
    return False


def not_modified(request_headers: Mapping[str, str], etag: str) -> bool:
    """Return whether a GET's If-None-Match names `etag` (answer 304)."""
    inm = request_headers.get("If-None-Match")
    return inm is not None and etag_matches(inm, etag, weak=True)


def expected(exc: BaseException | None) -> bool:
    """Return whether an exception is a refusal (4xx, 503) rather than a bug worth a log line."""
    return isinstance(exc, (tornado.web.HTTPError, InvalidRequest, StoreUnavailable))


def error_answer(
    exc: BaseException | None,
    *,
    allow: str,
    head: bool,
    developer: bool,
    status: int = 500,
    reason: str | None = None,
) -> Answer:
    """Return the answer to a request that failed with `exc`: `{"error": ...}` and its headers.

    `status` and `reason` are tornado's, for an error it raised itself (or None);
    `allow` goes in the `Allow` of a 405; a HEAD's answer has an empty body; the
    traceback is shown only to a developer.
    """
    headers: dict[str, str] = {}
    doc: dict[str, object]
    if isinstance(exc, (ApiError, InvalidRequest)):
        status = exc.status
        doc = exc.body()
        if isinstance(exc, ApiError):
            headers.update(exc.headers)
    elif isinstance(exc, tornado.web.HTTPError) or exc is None:
        if exc is not None:
            status, reason = exc.status_code, exc.reason or reason
        doc = {"error": reason or tornado.httputil.responses.get(status, "Unknown")}
    elif isinstance(exc, StoreUnavailable):
        # Raised by a store call outside a resource method (auth, health).
        status = 503
        headers["Retry-After"] = "1"
        doc = {"error": "The store is unavailable; retry shortly"}
    else:
        status = 500
        doc = {"error": "Internal server error"}
        if developer:
            doc["traceback"] = traceback.format_exception(type(exc), exc, exc.__traceback__)
    if status == 405 and "Allow" not in headers:
        headers["Allow"] = allow
    return Answer(status, headers, b"" if head else encode_json(doc))

"""The pieces every operation of the document is made of.

Security schemes, the shared response headers, status texts, error responses, the
common header parameters (If-None-Match, Idempotency-Key), and the HEAD and OPTIONS
operations derived from a route's other verbs. Nothing here knows a resource.
"""

from __future__ import annotations

import copy
import re
from collections.abc import Iterable, Mapping
from typing import Any

from .. import idempotency

JSON = "application/json"

# Every scheme the authenticator accepts (auth.Authenticator.authenticate).
SECURITY_SCHEMES: dict[str, dict[str, Any]] = {
    "apiKeyHeader": {"type": "apiKey", "in": "header", "name": "x-api-key", "description": "The API key."},
    "apiKeyQuery": {
        "type": "apiKey",
        "in": "query",
        "name": "api_key",
        "description": "The API key as a query parameter (never repeated in Link URLs).",
    },
    "bearerAuth": {
        "type": "http",
        "scheme": "bearer",
        "bearerFormat": "JWT",
        "description": "`Authorization: Bearer <token>` with a token from `POST /authenticate`.",
    },
    "xAuth": {
        "type": "apiKey",
        "in": "header",
        "name": "x-auth",
        "description": "`x-auth: Bearer <token>` with a token from `POST /authenticate` (Medusa's web UI form).",
    },
    "basicAuth": {"type": "http", "scheme": "basic", "description": "The configured web username and password."},
}
ANY_CREDENTIAL: list[dict[str, list[str]]] = [{name: []} for name in SECURITY_SCHEMES]
TOKEN_ONLY: list[dict[str, list[str]]] = [{"bearerAuth": []}, {"xAuth": []}]

STATUS_TEXT = {
    200: "OK",
    201: "Created",
    204: "No Content",
    304: "Not Modified: the representation still has the ETag named by If-None-Match",
    400: "Bad request: an invalid identifier, parameter or body (the message says which)",
    401: "No credentials, or invalid ones",
    403: "Forbidden (a WebSocket from an origin `[API] cors_origins` does not allow)",
    404: "Not found",
    409: "Conflict",
    410: "Gone: the changes after `since` are older than `[API] events_retention`; re-list",
    412: "Precondition failed: If-Match does not name the current ETag; nothing changed",
    413: "Request body too large",
    415: "The body is not JSON (application/json, UTF-8)",
    422: "Idempotency-Key already used with another request body",
    426: "Upgrade required: a WebSocket version other than 13",
    429: "Too many failed logins from this client",
    503: "The store is unavailable; retry after Retry-After seconds",
}


def _header(schema: dict[str, Any], description: str, *, required: bool = False) -> dict[str, Any]:
    return {"description": description, "required": required, "schema": schema}


_COUNT = {"type": "integer", "minimum": 0}
_POSITIVE = {"type": "integer", "minimum": 1}
SERVER_HEADER = {"X-Medusa-Server": {"$ref": "#/components/headers/X-Medusa-Server"}}

COMPONENT_HEADERS: dict[str, dict[str, Any]] = {
    "X-Medusa-Server": _header({"type": "string"}, "The server's version; on every response.", required=True),
    "ETag": _header(
        {"type": "string", "pattern": '^(W/)?".*"$'}, "Strong entity tag of the representation.", required=True
    ),
    "Location": _header({"type": "string", "format": "uri"}, "Absolute URL of the created resource.", required=True),
    "Link": _header(
        {"type": "string"},
        'Pagination links: rel="first", "previous" and "prev" (after page 1), "next" (before the last page), "last". '
        "Absolute URLs keeping every other query parameter but api_key.",
        required=True,
    ),
    "X-Pagination-Page": _header(_POSITIVE, "This page's number.", required=True),
    "X-Pagination-Limit": _header(_POSITIVE, "Items per page.", required=True),
    "X-Pagination-Count": _header(_COUNT, "Number of matching items.", required=True),
    "X-Pagination-Total": _header(_POSITIVE, "Number of pages (at least 1).", required=True),
    "Retry-After": _header(_POSITIVE, "Seconds to wait before retrying.", required=True),
    "WWW-Authenticate": _header({"type": "string"}, "The accepted schemes (Bearer, Basic).", required=True),
    "Allow": _header({"type": "string"}, "The methods this route answers.", required=True),
}

PAGINATION = ("Link", "X-Pagination-Page", "X-Pagination-Limit", "X-Pagination-Count", "X-Pagination-Total")


def response_headers(*names: str, optional: Iterable[str] = ()) -> dict[str, Any]:
    out: dict[str, Any] = dict(SERVER_HEADER)
    for name in names:
        out[name] = {"$ref": f"#/components/headers/{name}"}
    for name in optional:
        out[name] = {**COMPONENT_HEADERS[name], "required": False}
    return out


def json_content(schema: dict[str, Any]) -> dict[str, Any]:
    return {JSON: {"schema": schema}}


def error_response(status: int, *headers: str) -> dict[str, Any]:
    return {
        "description": STATUS_TEXT[status],
        "headers": response_headers(*headers),
        "content": json_content({"$ref": "#/components/schemas/Error"}),
    }


def error_responses(*statuses: int) -> dict[str, Any]:
    special = {401: ("WWW-Authenticate",), 429: ("Retry-After",), 503: ("Retry-After",)}
    return {str(s): error_response(s, *special.get(s, ())) for s in statuses}


def schema_ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def pascal(name: str) -> str:
    return "".join(part[:1].upper() + part[1:] for part in re.split(r"[-_]", name) if part)


IF_NONE_MATCH = {
    "name": "If-None-Match",
    "in": "header",
    "required": False,
    "schema": {"type": "string"},
    "description": "An ETag (or `*`): 304 without a body when it matches.",
}
IDEMPOTENCY_KEY = {
    "name": idempotency.HEADER,
    "in": "header",
    "required": False,
    "schema": {
        "type": "string",
        "minLength": 1,
        "maxLength": idempotency.MAX_KEY_LENGTH,
        "pattern": "^[!-~](?:[ -~]*[!-~])?$",
    },
    "description": "A retry with the same key and body replays the first answer; another body is 422; "
    "while the first is in flight, 409.",
}


def head_of(get: Mapping[str, Any]) -> dict[str, Any]:
    """Return the HEAD operation of a GET one: the same statuses and headers, no bodies."""
    op = copy.deepcopy(dict(get))
    if "operationId" in op:  # else the handler's own default (verb and path) is given later
        op["operationId"] = "head" + op["operationId"][:1].upper() + op["operationId"][1:]
    if "summary" in op:
        op["summary"] = "Headers only: " + op["summary"][:1].lower() + op["summary"][1:]
    for response in op.get("responses", {}).values():
        if isinstance(response, dict):
            response.pop("content", None)
            response.pop("links", None)
    return op


def options_operation(verbs: Iterable[str], what: str, path_params: list[dict[str, Any]]) -> dict[str, Any]:
    allow = ", ".join([*verbs, "OPTIONS"])
    op: dict[str, Any] = {
        "summary": f"CORS preflight / the methods of the {what} route",
        "description": f"No credentials needed; identifiers are not checked. `Allow: {allow}`.",
        "operationId": None,  # filled by build_openapi with a unique id
        "security": [],
        "responses": {"204": {"description": f"Allow: {allow}", "headers": response_headers("Allow")}},
    }
    if path_params:
        # A preflight answers 204 whatever the identifiers are: any path segment will do.
        op["parameters"] = [{**p, "schema": {"type": "string", "minLength": 1}} for p in path_params]
    return op

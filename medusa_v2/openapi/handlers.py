"""Operations of the routes that are not resources.

The built-in endpoints (/authenticate, /health, /openapi.json) are described here
verb by verb; an embedder's plain handler by its class attribute `openapi`
(`{"GET": {...operation...}}`), else generically. /config describes itself
(`ConfigHandler.openapi`, config_endpoint.py).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from typing import Any

from ..auth import DEFAULT_TOKEN_SECONDS, MAX_TOKEN_SECONDS
from ..endpoints import AuthenticateHandler, HealthHandler, OpenAPIHandler
from ..events import DEFAULT_LIMIT, MAX_LIMIT, EventsHandler
from ..metrics_endpoint import MetricsHandler
from .parts import (
    ANY_CREDENTIAL,
    IF_NONE_MATCH,
    STATUS_TEXT,
    TOKEN_ONLY,
    error_responses,
    head_of,
    json_content,
    options_operation,
    pascal,
    response_headers,
)


def handler_entry(
    path: str, cls: type, verbs: Iterable[str], public: Iterable[str], stored: Iterable[str] = ()
) -> tuple[str, dict[str, Any]]:
    """Return the path template of a plain handler's route and its path item (every verb, and OPTIONS).

    `stored`: the names of the mounted stored resources (what /events may be narrowed to).
    """
    template, params = _template(path)
    entry: dict[str, Any] = {}
    if params:
        entry["parameters"] = params
    public = frozenset(public)
    described = next((ops for known, ops in _FIXED.items() if issubclass(cls, known)), {})
    verbs = tuple(verbs)
    for verb in verbs:
        op = dict(_handler_operation(cls, described, verb, verbs))
        op.setdefault("responses", {"default": {"description": "Any answer.", "headers": response_headers()}})
        if verb not in public:
            op.setdefault("security", ANY_CREDENTIAL)
            extra = [s for s in (401, 429, 503) if str(s) not in op["responses"]]
            op["responses"] = {**op["responses"], **error_responses(*extra)}
        else:
            op["security"] = []
        op.setdefault("operationId", f"{verb.lower()}{pascal(template.strip('/').replace('/', '-').replace('.', '-'))}")
        if issubclass(cls, EventsHandler):
            _narrow_resources(op, sorted(stored))
        entry[verb.lower()] = op
    entry["options"] = options_operation(verbs, template, params)
    return template, entry


def _narrow_resources(op: dict[str, Any], names: list[str]) -> None:
    """Give /events' `resource` parameter the mounted names: one, or a comma list of them."""
    if not names:
        return
    one = "(?:" + "|".join(re.escape(name) for name in names) + ")"
    narrowed = {"type": "string", "pattern": f"^{one}(?:,{one})*$"}
    op["parameters"] = [  # copies: the operation's parameters are shared with every document
        {**param, "schema": narrowed, "description": param["description"] + f" Mounted: {', '.join(names)}."}
        if param["name"] == "resource"
        else param
        for param in op.get("parameters", ())
    ]


def _template(path: str) -> tuple[str, list[dict[str, Any]]]:
    """Turn a plain handler's path regex (named groups) into a template and parameters."""
    params: list[dict[str, Any]] = []

    def repl(match: re.Match[str]) -> str:
        params.append({"name": match.group(1), "in": "path", "required": True, "schema": {"type": "string"}})
        return "{" + match.group(1) + "}"

    return re.sub(r"\(\?P<(\w+)>[^)]*\)", repl, path), params


def _handler_operation(cls: type, described: Mapping[str, Any], verb: str, verbs: tuple[str, ...]) -> Any:
    """Return a handler's operation as described (ours, or its class's `openapi`), else a generic one."""
    own = described.get(verb) or getattr(cls, "openapi", {}).get(verb)
    if own is None and verb == "HEAD" and "GET" in verbs:
        return head_of(_handler_operation(cls, described, "GET", verbs))
    return own or _generic_operation(verb)


def _generic_operation(verb: str) -> dict[str, Any]:
    body_verbs = ("POST", "PUT", "PATCH")
    op: dict[str, Any] = {
        "summary": f"{verb} (an embedder's handler)",
        "responses": {
            "default": {"description": "Any answer.", "headers": response_headers()},
            **error_responses(400, 404, *((413, 415) if verb in body_verbs else ())),
        },
    }
    if verb in body_verbs:
        op["requestBody"] = {"required": False, "content": json_content({"type": "object"})}
    return op


def _fixed_operations(max_token_seconds: int) -> dict[type, dict[str, dict[str, Any]]]:
    """Describe the non-resource endpoints of `endpoints.py`, verb by verb."""
    token_body = {
        "type": "object",
        "properties": {
            "username": {"type": "string"},
            "password": {"type": "string", "format": "password"},
            "exp": {
                "type": "integer",
                "minimum": 1,
                "maximum": max_token_seconds,
                "default": DEFAULT_TOKEN_SECONDS,
                "description": "Token lifetime in seconds.",
            },
        },
        "description": "Without configured credentials a token is issued to anyone (the daemon warns).",
    }
    health = {
        "type": "object",
        "properties": {"status": {"type": "string", "enum": ["ok", "unavailable"]}},
        "required": ["status"],
        "additionalProperties": False,
    }
    return {
        EventsHandler: {"GET": _events_operation()},
        AuthenticateHandler: {
            "POST": {
                "operationId": "login",
                "tags": ["authentication"],
                "summary": "Get a JWT for the web username and password",
                "requestBody": {"required": True, "content": json_content(token_body)},
                "responses": {
                    "200": {
                        "description": "A signed token (HS256).",
                        "headers": response_headers(),
                        "content": json_content(
                            {
                                "type": "object",
                                "properties": {"token": {"type": "string"}},
                                "required": ["token"],
                                "additionalProperties": False,
                            }
                        ),
                    },
                    **error_responses(400, 401, 413, 415, 429, 503),
                },
            },
            "DELETE": {
                "operationId": "logout",
                "tags": ["authentication"],
                "summary": "Revoke the token this request presents",
                "security": TOKEN_ONLY,
                "responses": {
                    "204": {
                        "description": "Revoked, in every process. A token that is not valid (expired, "
                        "forged, already revoked) is 204 as well: it works nowhere (RFC 7009 2.2).",
                        "headers": response_headers(),
                    },
                    **error_responses(400, 401, 429, 503),
                },
            },
        },
        HealthHandler: {
            "GET": {
                "operationId": "health",
                "tags": ["health"],
                "summary": "Liveness for load balancers",
                "responses": {
                    "200": {
                        "description": "The store answers.",
                        "headers": response_headers(),
                        "content": json_content(health),
                    },
                    "503": {
                        "description": "The store does not answer.",
                        "headers": response_headers("Retry-After"),
                        "content": json_content(health),
                    },
                },
            },
            "HEAD": {
                "operationId": "healthHead",
                "tags": ["health"],
                "summary": "Liveness, without a body",
                "responses": {
                    "200": {"description": "The store answers.", "headers": response_headers()},
                    "503": {"description": "The store does not answer.", "headers": response_headers("Retry-After")},
                },
            },
        },
        MetricsHandler: {
            verb: {
                "operationId": "metrics" if verb == "GET" else "metricsHead",
                "tags": ["meta"],
                "summary": "Prometheus metrics of every worker process" + ("" if verb == "GET" else ", without a body"),
                "description": "Requests by method, route template and status, latency by route template, requests "
                "in flight, open event sockets, events sent, the store's connection pool and imports, summed across "
                "the daemon's worker processes. Also served without credentials on `[API] metrics_host:metrics_port` "
                "when that is set.",
                "responses": {
                    "200": {
                        "description": "The Prometheus text exposition format (version 0.0.4).",
                        "headers": response_headers(),
                        **({"content": {"text/plain": {"schema": {"type": "string"}}}} if verb == "GET" else {}),
                    },
                    **error_responses(401, 429, 503),
                },
            }
            for verb in ("GET", "HEAD")
        },
        OpenAPIHandler: {
            "GET": {
                "operationId": "openapi",
                "tags": ["meta"],
                "summary": "This document",
                "parameters": [IF_NONE_MATCH],
                "responses": {
                    "200": {
                        "description": "The OpenAPI 3.1 description of this API.",
                        "headers": response_headers("ETag"),
                        "content": json_content({"type": "object"}),
                    },
                    "304": {"description": STATUS_TEXT[304], "headers": response_headers("ETag")},
                },
            },
        },
    }


EVENT_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "seq": {"type": "integer", "minimum": 1, "description": "The change's number: strictly increasing, no gap."},
        "resource": {"type": "string", "description": "The stored resource's name (ticket, message...)."},
        "event": {"type": "string", "enum": ["created", "updated", "deleted"]},
        "id": {"type": ["integer", "string"], "description": "The item's id."},
        "etag": {
            "type": ["string", "null"],
            "description": "The ETag a GET of the item answered at this version (without gzip); null on delete.",
        },
    },
    "required": ["seq", "resource", "event", "id", "etag"],
    "additionalProperties": {
        "type": ["integer", "string"],
        "description": "A nested resource's parent id, under its parent field's name (`ticketId`).",
    },
}


def _events_operation() -> dict[str, Any]:
    """Describe GET /events: a page of the change feed, and the WebSocket on the same URL."""

    def query(name: str, schema: dict[str, Any], description: str) -> dict[str, Any]:
        return {"name": name, "in": "query", "required": False, "schema": schema, "description": description}

    return {
        "operationId": "events",
        "tags": ["events"],
        "summary": "The change feed: every committed change of a stored resource, in order",
        "description": (
            "Answers the changes after `since`, oldest first: `seq` is strictly increasing and never seen with a "
            "gap, whichever process or daemon made the change. A full page carries `Link: <...>; "
            'rel="next"` (since moved to its last seq; credentials never repeated).\n\n'
            "**WebSocket**: the same URL with `Upgrade: websocket` (credentials also as `?token=<JWT>`, "
            "since browsers send no headers on a WebSocket; refused with a JSON 401 without them, 403 from an "
            "origin `[API] cors_origins` does not allow) sends one text message per committed change, each "
            "this same object, in seq order. `?since=SEQ` first sends the changes after SEQ, then the live ones, "
            "without gap or repeat; `?resource=` narrows. Close codes: 4010 (since older than the retention: "
            "re-list), 4009 (since past the feed's end), 4008 (the client reads too slowly: catch up over HTTP), "
            "1013 (the store is unavailable), 1001 (the server stops)."
        ),
        "parameters": [
            query("since", {"type": "integer", "minimum": 0, "default": 0}, "Answer the changes after this seq."),
            query(
                "limit",
                {"type": "integer", "minimum": 1, "maximum": MAX_LIMIT, "default": DEFAULT_LIMIT},
                "Changes per page.",
            ),
            query(
                "resource",
                {"type": "string"},
                "Only the changes of these stored resources (a name, or a comma list of names).",
            ),
            query("token", {"type": "string"}, "A token from POST /authenticate (the WebSocket's form)."),
        ],
        "responses": {
            "200": {
                "description": "The changes after since (an empty array: none yet).",
                "headers": response_headers(optional=("Link",)),
                "content": json_content({"type": "array", "items": EVENT_SCHEMA}),
            },
            "101": {"description": "Switching to the WebSocket (a request with `Upgrade: websocket`)."},
            **error_responses(400, 401, 403, 409, 410, 426, 429, 503),
        },
    }


_FIXED = _fixed_operations(MAX_TOKEN_SECONDS)

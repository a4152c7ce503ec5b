"""The API description (OpenAPI 3.1), generated from what drives the handlers.

Every resource path, verb, parameter and body schema comes from the same sources
the handlers use: `Resource.verbs` (from `resource.ROUTES`), the resource's
`Declaration` (fields, bounds, choices, read-only, sort/filter/search whitelists),
the listing limits in `listing`, and the `routes`/`public` tables of the fixed
handlers. Nothing is listed per resource, so the document cannot drift from the
code: add a `Field(...)` and it appears here, drop a method and its operation goes.

`build_openapi()` returns the document as a dict; the URL table builds it once and
`OpenAPIHandler` serves it at `{web_root}/api/v2/openapi.json`.
"""

from __future__ import annotations

import copy
import re
from collections.abc import Iterable, Mapping
from typing import Any

from . import __version__, idempotency
from .auth import DEFAULT_TOKEN_SECONDS, MAX_TOKEN_SECONDS
from .declaration import INT64_MAX, INT64_MIN, MISSING, Declaration, Field
from .endpoints import AuthenticateHandler, HealthHandler, OpenAPIHandler
from .handler import IF_MATCH_PARAMETER
from .listing import DEFAULT_LIMIT, MAX_LIMIT, MAX_PAGE, MAX_Q_LENGTH
from .resource import ROUTES, Resource
from .settings import Settings

__all__ = ["OPENAPI_PATH", "build_openapi"]

OPENAPI_PATH = "/openapi.json"
"""Where the document is served, below the API root."""

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

_STATUS_TEXT = {
    200: "OK",
    201: "Created",
    204: "No Content",
    304: "Not Modified: the representation still has the ETag named by If-None-Match",
    400: "Bad request: an invalid identifier, parameter or body (the message says which)",
    401: "No credentials, or invalid ones",
    404: "Not found",
    409: "Conflict",
    412: "Precondition failed: If-Match does not name the current ETag; nothing changed",
    413: "Request body too large",
    415: "The body is not JSON (application/json, UTF-8)",
    422: "Idempotency-Key already used with another request body",
    429: "Too many failed logins from this client",
    503: "The store is unavailable; retry after Retry-After seconds",
}


# -- small schema helpers --


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

_PAGINATION = ("Link", "X-Pagination-Page", "X-Pagination-Limit", "X-Pagination-Count", "X-Pagination-Total")


def _headers(*names: str, optional: Iterable[str] = ()) -> dict[str, Any]:
    out: dict[str, Any] = dict(SERVER_HEADER)
    for name in names:
        out[name] = {"$ref": f"#/components/headers/{name}"}
    for name in optional:
        out[name] = {**COMPONENT_HEADERS[name], "required": False}
    return out


def _json(schema: dict[str, Any]) -> dict[str, Any]:
    return {JSON: {"schema": schema}}


def _error(status: int, *headers: str) -> dict[str, Any]:
    return {
        "description": _STATUS_TEXT[status],
        "headers": _headers(*headers),
        "content": _json({"$ref": "#/components/schemas/Error"}),
    }


def _errors(*statuses: int) -> dict[str, Any]:
    special = {401: ("WWW-Authenticate",), 429: ("Retry-After",), 503: ("Retry-After",)}
    return {str(s): _error(s, *special.get(s, ())) for s in statuses}


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def _pascal(name: str) -> str:
    return "".join(part[:1].upper() + part[1:] for part in re.split(r"[-_]", name) if part)


def _escape(text: str) -> str:
    """Escape regex syntax the same way in Python and ECMA 262 (re.escape also escapes `-`)."""
    return re.sub(r"([\\^$.|?*+()\[\]{}])", r"\\\1", text)


def _alternatives(values: Iterable[str]) -> str:
    return "(?:" + "|".join(_escape(v) for v in values) + ")"


# -- declarations to JSON Schema --


def field_schema(f: Field, *, read_only: bool = False) -> dict[str, Any]:
    """Return the JSON Schema of one declared field (its bounds, choices, nullability)."""
    schema: dict[str, Any]
    if f.type is int:
        schema = {
            "type": "integer",
            "format": "int64",
            "minimum": INT64_MIN if f.min is None else f.min,
            "maximum": INT64_MAX if f.max is None else f.max,
        }
    elif f.choices is not None:
        schema = {"type": "string", "enum": list(f.choices)}
    else:
        schema = {"type": "string", "minLength": f.min or 0}
        if f.max is not None:
            schema["maxLength"] = f.max
        # The whole value matches the declared pattern; free text holds no NUL (check_text).
        schema["pattern"] = f"^(?:{f.pattern})$" if f.pattern is not None else NO_NUL
    if f.nullable:
        schema["type"] = [schema["type"], "null"]
        if "enum" in schema:
            schema["enum"].append(None)
    if f.default is not MISSING:
        schema["default"] = f.default
    if read_only:
        schema["readOnly"] = True
    return schema


def item_schema(decl: Declaration) -> dict[str, Any]:
    """Return the schema of a representation: every field, read-only ones marked."""
    return {
        "type": "object",
        "properties": {f.json_name: field_schema(f, read_only=not f.writable) for f in decl.fields},
        "required": [f.json_name for f in decl.fields],
        "additionalProperties": False,
    }


def create_schema(decl: Declaration) -> dict[str, Any]:
    """Return the POST body schema: writable fields (and read-only ones settable on create)."""
    fields = [f for f in decl.fields if f.writable or f.settable_on_create]
    return {
        "type": "object",
        "properties": {f.json_name: field_schema(f) for f in fields},
        "required": [f.json_name for f in fields if f.required],
        "additionalProperties": False,
        "description": "Unknown and read-only fields are refused (400); absent optional fields take their defaults.",
    }


def replace_schema(decl: Declaration) -> dict[str, Any]:
    """Return the PUT body schema: every writable field; absent optional ones are defaulted."""
    return {
        "type": "object",
        "properties": {f.json_name: field_schema(f) for f in decl.writable},
        "required": [f.json_name for f in decl.writable if f.required],
        "additionalProperties": False,
        "description": "Replaces every writable field; absent optional fields fall back to their defaults.",
    }


def update_schema(decl: Declaration) -> dict[str, Any]:
    """Return the PATCH body schema: writable fields, all optional; others are ignored."""
    return {
        "type": "object",
        "properties": {f.json_name: field_schema(f) for f in decl.writable},
        "additionalProperties": True,
        "description": "Only writable fields are applied; unknown and read-only fields are ignored.",
    }


def accepted_schema(decl: Declaration) -> dict[str, Any]:
    """Return the PATCH answer schema: exactly the accepted fields with their new values."""
    return {
        "type": "object",
        "properties": {f.json_name: field_schema(f) for f in decl.writable},
        "additionalProperties": False,
    }


GENERIC_OBJECT: dict[str, Any] = {"type": "object", "description": "A JSON object (the resource declares no fields)."}


def error_schema(settings: Settings | None) -> dict[str, Any]:
    """Return the error body: `{"error": ..., "errors"?: {field: reason}}`."""
    properties: dict[str, Any] = {
        "error": {"type": "string", "description": "Human-readable message."},
        "errors": {
            "type": "object",
            "additionalProperties": {"type": "string"},
            "description": "Per-field reasons of a validation error.",
        },
    }
    if settings is not None and settings.developer:
        properties["traceback"] = {"type": "array", "items": {"type": "string"}}
    return {"type": "object", "properties": properties, "required": ["error"], "additionalProperties": False}


# -- list parameters (listing.parse_list_query) --


NO_NUL = "^[^\\u0000]*$"
"""Text the API refuses when it holds a NUL character (no store can keep one)."""


def list_parameters(decl: Declaration | None) -> list[dict[str, Any]]:
    """Return page, limit, sort, order, each filter and q, as the listing parser reads them."""
    params: list[dict[str, Any]] = [
        _query("page", {"type": "integer", "minimum": 1, "maximum": MAX_PAGE, "default": 1}, "Page number."),
        _query(
            "limit",
            {"type": "integer", "minimum": 1, "maximum": MAX_LIMIT, "default": DEFAULT_LIMIT},
            "Items per page.",
        ),
    ]
    sort_fields = decl.sort_fields if decl is not None else {}
    if sort_fields:
        names = sorted(sort_fields, key=lambda a: (-len(a), a))
        term = "[+-]?" + _alternatives(names)
        shown = ", ".join(sorted({f.dash_name for f in sort_fields.values()}))
        params.append(
            _query(
                "sort",
                {"type": "string", "pattern": f"^{term}(?:,{term})*$"},
                f"Comma list of fields to sort by ({shown}; dash-case or camelCase); a `-` prefix sorts "
                "descending, `+` ascending. The id is always the last tiebreaker.",
            )
        )
        params.append(
            _query(
                "order",
                {"type": "string", "enum": ["asc", "desc"]},
                "Direction of the `sort` fields that have no prefix; without `sort`, of the default order (id).",
            )
        )
    for f in decl.filter_fields if decl is not None else ():
        params.append(_query(f.dash_name, _filter_schema(f), _filter_description(f)))
    if decl is not None and decl.search_fields:
        searched = ", ".join(f.json_name for f in decl.search_fields)
        params.append(
            _query(
                "q",
                {"type": "string", "maxLength": MAX_Q_LENGTH, "pattern": NO_NUL},
                f"Case-insensitive substring search in {searched}.",
            )
        )
    return params


def _query(name: str, schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {"name": name, "in": "query", "required": False, "schema": schema, "description": description}


def _filter_schema(f: Field) -> dict[str, Any]:
    if f.filter == "one":
        schema = field_schema(f)
        schema.pop("default", None)
        if f.nullable:  # a query value is never null
            schema["type"] = schema["type"][0]
            if "enum" in schema:
                schema["enum"] = [v for v in schema["enum"] if v is not None]
        return schema
    # "many": one value or a comma list of values.
    if f.choices is not None:
        value = _alternatives(f.choices)
    elif f.type is int and f.min is not None and f.max is not None and f.max - f.min <= 100:
        value = _alternatives(str(v) for v in range(f.min, f.max + 1))
    elif f.type is int:
        value = "-?[0-9]+"
    else:
        value = "[^,\\u0000]+"
    return {"type": "string", "pattern": f"^{value}(?:,{value})*$"}


def _filter_description(f: Field) -> str:
    many = " One value or a comma list of values." if f.filter == "many" else ""
    aliases = sorted({f.json_name, f.name} - {f.dash_name})
    also = f" Also accepted as {', '.join(aliases)}." if aliases else ""
    return f"Only items whose {f.json_name} equals the value.{many}{also}"


# -- operations --


def _path_parameter(key: str, label: str, ident: Field) -> dict[str, Any]:
    if ident.type is int:
        what = "a positive 64-bit integer"
        schema: dict[str, Any] = {"type": "integer", "format": "int64", "minimum": 1, "maximum": INT64_MAX}
    else:
        what = f"matching {ident.pattern}"
        schema = field_schema(ident)
    return {
        "name": key,
        "in": "path",
        "required": True,
        "description": f"The {label} id: {what} (anything else is 400).",
        "schema": schema,
    }


_IF_NONE_MATCH = {
    "name": "If-None-Match",
    "in": "header",
    "required": False,
    "schema": {"type": "string"},
    "description": "An ETag (or `*`): 304 without a body when it matches.",
}
_IDEMPOTENCY_KEY = {
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


class _Builder:
    """Collects paths and component schemas for one document."""

    def __init__(self, root: str, settings: Settings | None) -> None:
        self.root = root
        self.settings = settings
        self.paths: dict[str, dict[str, Any]] = {}
        self.schemas: dict[str, Any] = {"Error": error_schema(settings)}
        self.names: dict[type[Resource], str] = {}

    # naming

    def component_name(self, res: type[Resource]) -> str:
        """Return a unique component name per resource (`Ticket`, `TicketMessage` on a clash)."""
        if res in self.names:
            return self.names[res]
        name = _pascal(res.name)
        chain = res.parent
        while name in self.names.values() and chain is not None:
            name = _pascal(chain.name) + name
            chain = chain.parent
        base, n = name, 2
        while name in self.names.values():
            name, n = f"{base}{n}", n + 1
        self.names[res] = name
        return name

    # resources

    def add_resource(self, res: type[Resource], mounted: Iterable[type[Resource]]) -> None:
        decl = res.declaration
        comp = self.component_name(res)
        label = decl.label if decl is not None else res.name
        if decl is not None:
            self.schemas[comp] = item_schema(decl)
            self.schemas[comp + "Create"] = create_schema(decl)
            self.schemas[comp + "Replace"] = replace_schema(decl)
            self.schemas[comp + "Update"] = update_schema(decl)
            self.schemas[comp + "Accepted"] = accepted_schema(decl)
        else:
            for suffix in ("", "Create", "Replace", "Update", "Accepted"):
                self.schemas[comp + suffix] = GENERIC_OBJECT

        # Path template and parameters, parents first (Resource.path_pattern's shape).
        chain: list[type[Resource]] = []
        node: type[Resource] | None = res
        while node is not None:
            chain.insert(0, node)
            node = node.parent
        collection = ""
        parent_params: list[dict[str, Any]] = []
        for ancestor in chain[:-1]:
            collection += f"/{ancestor.name}/{{{ancestor.id_key()}}}"
            a_label = ancestor.declaration.label if ancestor.declaration is not None else ancestor.name
            parent_params.append(
                _path_parameter(ancestor.id_key(), a_label.lower(), ancestor.id_fields[ancestor.id_key()])
            )
        collection += "/" + res.name
        item = f"{collection}/{{{res.id_key()}}}"
        own_param = _path_parameter(res.id_key(), label.lower(), res.id_fields[res.id_key()])
        children = [m for m in mounted if m.parent is res]

        for kind, path, params in (
            ("collection", collection, parent_params),
            ("item", item, [*parent_params, own_param]),
        ):
            verbs = res.verbs.get(kind, ())
            entry: dict[str, Any] = {}
            if params:
                entry["parameters"] = params
            for verb in verbs:
                method = ROUTES[kind][verb]
                op = self.resource_operation(res, comp, label, method, bool(parent_params), children)
                entry[verb.lower()] = head_of(op) if verb == "HEAD" else op
            entry["options"] = _options_operation(verbs, f"{label} {kind}", params)
            self.paths[path] = entry

    def resource_operation(
        self,
        res: type[Resource],
        comp: str,
        label: str,
        method: str,
        nested: bool,
        children: list[type[Resource]],
    ) -> dict[str, Any]:
        """Return the operation of one resource method, with every status its runner can answer."""
        body_errors = (400, 401, 404, 412, 413, 415, 429, 503)
        op: dict[str, Any] = {"operationId": f"{method}{comp}", "tags": [comp], "security": ANY_CREDENTIAL}
        if method == "list":
            op["summary"] = f"List {label.lower()} items (paginated, sortable, filterable)"
            op["parameters"] = [*list_parameters(res.declaration), _IF_NONE_MATCH]
            op["responses"] = {
                "200": {
                    "description": "One page of items; a page past the end is `[]`.",
                    "headers": _headers("ETag", *_PAGINATION),
                    "content": _json({"type": "array", "items": _ref(comp)}),
                },
                "304": {"description": _STATUS_TEXT[304], "headers": _headers("ETag", optional=_PAGINATION)},
                **_errors(400, 401, *((404,) if nested else ()), 429, 503),
            }
        elif method == "retrieve":
            op["summary"] = f"Get one {label.lower()}"
            op["parameters"] = [_IF_NONE_MATCH]
            op["responses"] = {
                "200": {"description": "The item.", "headers": _headers("ETag"), "content": _json(_ref(comp))},
                "304": {"description": _STATUS_TEXT[304], "headers": _headers("ETag")},
                **_errors(400, 401, 404, 429, 503),
            }
        elif method == "create":
            op["summary"] = f"Create a {label.lower()}"
            op["parameters"] = [_IDEMPOTENCY_KEY]
            op["requestBody"] = {"required": True, "content": _json(_ref(comp + "Create"))}
            op["responses"] = {
                "201": {
                    "description": "Created; the body is the new item.",
                    "headers": _headers("Location", "ETag"),
                    "content": _json(_ref(comp)),
                    "links": self.links_from_create(res, comp, children),
                },
                **_errors(400, 401, *((404,) if nested else ()), 409, 413, 415, 422, 429, 503),
            }
            if not op["responses"]["201"]["links"]:
                del op["responses"]["201"]["links"]
        elif method == "replace":
            op["summary"] = f"Replace a {label.lower()}"
            op["parameters"] = [IF_MATCH_PARAMETER]
            op["requestBody"] = {"required": True, "content": _json(_ref(comp + "Replace"))}
            op["responses"] = {
                "204": {"description": "Replaced.", "headers": _headers("ETag")},
                **_errors(*body_errors),
            }
        elif method == "update":
            op["summary"] = f"Update some fields of a {label.lower()}"
            op["parameters"] = [IF_MATCH_PARAMETER]
            op["requestBody"] = {"required": True, "content": _json(_ref(comp + "Update"))}
            op["responses"] = {
                "200": {
                    "description": "Exactly the accepted fields, with their new values; ETag of the new state.",
                    "headers": _headers("ETag"),
                    "content": _json(_ref(comp + "Accepted")),
                },
                **_errors(*body_errors),
            }
        elif method == "delete":
            op["summary"] = f"Delete a {label.lower()}"
            op["parameters"] = [IF_MATCH_PARAMETER]
            op["responses"] = {
                "204": {"description": "Deleted.", "headers": _headers()},
                **_errors(400, 401, 404, 412, 429, 503),
            }
        return op

    def links_from_create(self, res: type[Resource], comp: str, children: list[type[Resource]]) -> dict[str, Any]:
        """Return the links from a created item to its item operations and its children's collections."""
        ids = {p.id_key(): f"$request.path.{p.id_key()}" for p in _ancestors(res)}
        own = {**ids, res.id_key(): "$response.body#/id"}
        links: dict[str, Any] = {}
        for verb in res.verbs.get("item", ()):
            if verb == "HEAD":
                continue  # GET's link says it
            method = ROUTES["item"][verb]
            links[f"{_pascal(method)}{comp}"] = {"operationId": f"{method}{comp}", "parameters": own}
        for child in children:
            child_comp = self.component_name(child)
            for verb in child.verbs.get("collection", ()):
                if verb == "HEAD":
                    continue
                method = ROUTES["collection"][verb]
                links[f"{_pascal(method)}{child_comp}"] = {"operationId": f"{method}{child_comp}", "parameters": own}
        return links

    # fixed and plain handlers

    def add_handler(self, path: str, cls: type, verbs: Iterable[str], public: Iterable[str]) -> None:
        template, params = _template(path)
        entry: dict[str, Any] = {}
        if params:
            entry["parameters"] = params
        public = frozenset(public)
        described = next((ops for known, ops in _FIXED.items() if issubclass(cls, known)), {})
        verbs = tuple(verbs)
        for verb in verbs:
            op = dict(_handler_operation(cls, described, verb, verbs))
            op.setdefault("responses", {"default": {"description": "Any answer.", "headers": _headers()}})
            if verb not in public:
                op.setdefault("security", ANY_CREDENTIAL)
                extra = [s for s in (401, 429, 503) if str(s) not in op["responses"]]
                op["responses"] = {**op["responses"], **_errors(*extra)}
            else:
                op["security"] = []
            op.setdefault(
                "operationId", f"{verb.lower()}{_pascal(template.strip('/').replace('/', '-').replace('.', '-'))}"
            )
            entry[verb.lower()] = op
        entry["options"] = _options_operation(verbs, template, params)
        self.paths[template] = entry

    def document(self, version: str) -> dict[str, Any]:
        return {
            "openapi": "3.1.0",
            "info": {
                "title": "Medusa API v2",
                "version": version,
                "description": "Generated from the resource declarations that drive the handlers. "
                'Errors are `{"error": message}` (validation errors add `errors`). '
                "Every response carries `X-Medusa-Server`. A method a path does not list is answered "
                "`405` with an `Allow` header naming those it does. Text holds no NUL character (400).",
            },
            "servers": [{"url": self.root or "/"}],
            "paths": self.paths,
            "components": {
                "schemas": self.schemas,
                "headers": COMPONENT_HEADERS,
                "securitySchemes": SECURITY_SCHEMES,
            },
            "security": ANY_CREDENTIAL,
        }


def _ancestors(res: type[Resource]) -> list[type[Resource]]:
    out: list[type[Resource]] = []
    node = res.parent
    while node is not None:
        out.insert(0, node)
        node = node.parent
    return out


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


def _options_operation(verbs: Iterable[str], what: str, path_params: list[dict[str, Any]]) -> dict[str, Any]:
    allow = ", ".join([*verbs, "OPTIONS"])
    op: dict[str, Any] = {
        "summary": f"CORS preflight / the methods of the {what} route",
        "description": f"No credentials needed; identifiers are not checked. `Allow: {allow}`.",
        "operationId": None,  # filled by build_openapi with a unique id
        "security": [],
        "responses": {"204": {"description": f"Allow: {allow}", "headers": _headers("Allow")}},
    }
    if path_params:
        # A preflight answers 204 whatever the identifiers are: any path segment will do.
        op["parameters"] = [{**p, "schema": {"type": "string", "minLength": 1}} for p in path_params]
    return op


def _generic_operation(verb: str) -> dict[str, Any]:
    body_verbs = ("POST", "PUT", "PATCH")
    op: dict[str, Any] = {
        "summary": f"{verb} (an embedder's handler)",
        "responses": {
            "default": {"description": "Any answer.", "headers": _headers()},
            **_errors(400, 404, *((413, 415) if verb in body_verbs else ())),
        },
    }
    if verb in body_verbs:
        op["requestBody"] = {"required": False, "content": _json({"type": "object"})}
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
        AuthenticateHandler: {
            "POST": {
                "operationId": "login",
                "tags": ["authentication"],
                "summary": "Get a JWT for the web username and password",
                "requestBody": {"required": True, "content": _json(token_body)},
                "responses": {
                    "200": {
                        "description": "A signed token (HS256).",
                        "headers": _headers(),
                        "content": _json(
                            {
                                "type": "object",
                                "properties": {"token": {"type": "string"}},
                                "required": ["token"],
                                "additionalProperties": False,
                            }
                        ),
                    },
                    **_errors(400, 401, 413, 415, 429, 503),
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
                        "headers": _headers(),
                    },
                    **_errors(400, 401, 429, 503),
                },
            },
        },
        HealthHandler: {
            "GET": {
                "operationId": "health",
                "tags": ["health"],
                "summary": "Liveness for load balancers",
                "responses": {
                    "200": {"description": "The store answers.", "headers": _headers(), "content": _json(health)},
                    "503": {
                        "description": "The store does not answer.",
                        "headers": _headers("Retry-After"),
                        "content": _json(health),
                    },
                },
            },
            "HEAD": {
                "operationId": "healthHead",
                "tags": ["health"],
                "summary": "Liveness, without a body",
                "responses": {
                    "200": {"description": "The store answers.", "headers": _headers()},
                    "503": {"description": "The store does not answer.", "headers": _headers("Retry-After")},
                },
            },
        },
        OpenAPIHandler: {
            "GET": {
                "operationId": "openapi",
                "tags": ["meta"],
                "summary": "This document",
                "parameters": [_IF_NONE_MATCH],
                "responses": {
                    "200": {
                        "description": "The OpenAPI 3.1 description of this API.",
                        "headers": _headers("ETag"),
                        "content": _json({"type": "object"}),
                    },
                    "304": {"description": _STATUS_TEXT[304], "headers": _headers("ETag")},
                },
            },
        },
    }


_FIXED = _fixed_operations(MAX_TOKEN_SECONDS)


def build_openapi(
    api_root_url_path: str,
    resources: Iterable[type[Resource]],
    settings: Settings | None = None,
    *,
    handlers: Iterable[tuple[str, type]] = (),
    version: str = __version__,
) -> dict[str, Any]:
    """Return the OpenAPI 3.1 document of an API mounted at `api_root_url_path`.

    `resources` are the mounted Resource classes (parents included), `handlers` the
    `(path, ApiHandler class)` pairs of the other routes (/authenticate, /health,
    /openapi.json, an embedder's plain handlers); their verbs come from each class's
    `routes["single"]` and `public`. A plain handler may describe its operations
    with a class attribute `openapi = {"GET": {...operation...}}`.
    """
    builder = _Builder(api_root_url_path.rstrip("/"), settings)
    mounted = list(resources)
    for res in mounted:
        builder.component_name(res)
    for res in mounted:
        builder.add_resource(res, mounted)
    for path, cls in handlers:
        routes: Mapping[str, tuple[str, ...]] = getattr(cls, "routes", {})
        builder.add_handler(path, cls, routes.get("single", ()), getattr(cls, "public", frozenset()))
    doc = builder.document(version)
    seen: set[str] = set()
    for template, entry in doc["paths"].items():
        for method, op in entry.items():
            if method == "parameters":
                continue
            if not op.get("operationId"):
                slug = _pascal(re.sub(r"[^A-Za-z0-9]+", "-", template).strip("-")) or "Root"
                op["operationId"] = f"{method}{slug}"
            base, n = op["operationId"], 2
            while op["operationId"] in seen:
                op["operationId"], n = f"{base}{n}", n + 1
            seen.add(op["operationId"])
    return copy.deepcopy(doc)  # no part shared with module constants or another document

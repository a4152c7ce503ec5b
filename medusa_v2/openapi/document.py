"""Assemble the OpenAPI document: a path item per mounted route, components, operation ids.

Resource routes are described here from `Resource.verbs` and `resource.ROUTES`, with
the schemas their declarations give (schemas.py); the other routes by handlers.py.
"""

from __future__ import annotations

import copy
import re
from collections.abc import Iterable, Mapping
from typing import Any

from .. import __version__
from ..handler import IF_MATCH_PARAMETER
from ..resource import ROUTES, Resource
from ..settings import Settings
from .handlers import handler_entry
from .parts import (
    ANY_CREDENTIAL,
    COMPONENT_HEADERS,
    IDEMPOTENCY_KEY,
    IF_NONE_MATCH,
    PAGINATION,
    SECURITY_SCHEMES,
    STATUS_TEXT,
    error_responses,
    head_of,
    json_content,
    options_operation,
    pascal,
    response_headers,
    schema_ref,
)
from .schemas import (
    GENERIC_OBJECT,
    accepted_schema,
    create_schema,
    error_schema,
    item_schema,
    list_parameters,
    path_parameter,
    replace_schema,
    update_schema,
)

OPENAPI_PATH = "/openapi.json"
"""Where the document is served, below the API root."""


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
        name = pascal(res.name)
        chain = res.parent
        while name in self.names.values() and chain is not None:
            name = pascal(chain.name) + name
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
                path_parameter(ancestor.id_key(), a_label.lower(), ancestor.id_fields[ancestor.id_key()])
            )
        collection += "/" + res.name
        item = f"{collection}/{{{res.id_key()}}}"
        own_param = path_parameter(res.id_key(), label.lower(), res.id_fields[res.id_key()])
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
            entry["options"] = options_operation(verbs, f"{label} {kind}", params)
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
            op["parameters"] = [*list_parameters(res.declaration), IF_NONE_MATCH]
            op["responses"] = {
                "200": {
                    "description": "One page of items; a page past the end is `[]`.",
                    "headers": response_headers("ETag", *PAGINATION),
                    "content": json_content({"type": "array", "items": schema_ref(comp)}),
                },
                "304": {"description": STATUS_TEXT[304], "headers": response_headers("ETag", optional=PAGINATION)},
                **error_responses(400, 401, *((404,) if nested else ()), 429, 503),
            }
        elif method == "retrieve":
            op["summary"] = f"Get one {label.lower()}"
            op["parameters"] = [IF_NONE_MATCH]
            op["responses"] = {
                "200": {
                    "description": "The item.",
                    "headers": response_headers("ETag"),
                    "content": json_content(schema_ref(comp)),
                },
                "304": {"description": STATUS_TEXT[304], "headers": response_headers("ETag")},
                **error_responses(400, 401, 404, 429, 503),
            }
        elif method == "create":
            op["summary"] = f"Create a {label.lower()}"
            op["parameters"] = [IDEMPOTENCY_KEY]
            op["requestBody"] = {"required": True, "content": json_content(schema_ref(comp + "Create"))}
            op["responses"] = {
                "201": {
                    "description": "Created; the body is the new item.",
                    "headers": response_headers("Location", "ETag"),
                    "content": json_content(schema_ref(comp)),
                    "links": self.links_from_create(res, comp, children),
                },
                **error_responses(400, 401, *((404,) if nested else ()), 409, 413, 415, 422, 429, 503),
            }
            if not op["responses"]["201"]["links"]:
                del op["responses"]["201"]["links"]
        elif method == "replace":
            op["summary"] = f"Replace a {label.lower()}"
            op["parameters"] = [IF_MATCH_PARAMETER]
            op["requestBody"] = {"required": True, "content": json_content(schema_ref(comp + "Replace"))}
            op["responses"] = {
                "204": {"description": "Replaced.", "headers": response_headers("ETag")},
                **error_responses(*body_errors),
            }
        elif method == "update":
            op["summary"] = f"Update some fields of a {label.lower()}"
            op["parameters"] = [IF_MATCH_PARAMETER]
            op["requestBody"] = {"required": True, "content": json_content(schema_ref(comp + "Update"))}
            op["responses"] = {
                "200": {
                    "description": "Exactly the accepted fields, with their new values; ETag of the new state.",
                    "headers": response_headers("ETag"),
                    "content": json_content(schema_ref(comp + "Accepted")),
                },
                **error_responses(*body_errors),
            }
        elif method == "delete":
            op["summary"] = f"Delete a {label.lower()}"
            op["parameters"] = [IF_MATCH_PARAMETER]
            op["responses"] = {
                "204": {"description": "Deleted.", "headers": response_headers()},
                **error_responses(400, 401, 404, 412, 429, 503),
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
            links[f"{pascal(method)}{comp}"] = {"operationId": f"{method}{comp}", "parameters": own}
        for child in children:
            child_comp = self.component_name(child)
            for verb in child.verbs.get("collection", ()):
                if verb == "HEAD":
                    continue
                method = ROUTES["collection"][verb]
                links[f"{pascal(method)}{child_comp}"] = {"operationId": f"{method}{child_comp}", "parameters": own}
        return links

    # fixed and plain handlers

    def add_handler(
        self, path: str, cls: type, verbs: Iterable[str], public: Iterable[str], stored: Iterable[str] = ()
    ) -> None:
        template, entry = handler_entry(path, cls, verbs, public, stored)
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
    stored = [res.declaration.name for res in mounted if res.stored and res.declaration is not None]
    for path, cls in handlers:
        routes: Mapping[str, tuple[str, ...]] = getattr(cls, "routes", {})
        builder.add_handler(path, cls, routes.get("single", ()), getattr(cls, "public", frozenset()), stored)
    doc = builder.document(version)
    seen: set[str] = set()
    for template, entry in doc["paths"].items():
        for method, op in entry.items():
            if method == "parameters":
                continue
            if not op.get("operationId"):
                slug = pascal(re.sub(r"[^A-Za-z0-9]+", "-", template).strip("-")) or "Root"
                op["operationId"] = f"{method}{slug}"
            base, n = op["operationId"], 2
            while op["operationId"] in seen:
                op["operationId"], n = f"{base}{n}", n + 1
            seen.add(op["operationId"])
    return copy.deepcopy(doc)  # no part shared with module constants or another document

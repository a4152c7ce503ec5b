"""Resources: plain objects with list/retrieve/create/replace/update/delete.

A resource declares its `name`, optional `parent` and `declaration`, and implements
only the methods it supports. `ResourceHandler` turns HTTP verbs into those methods
through `ROUTES`, the one table that also yields `Allow`, the 405 answer and the CORS
method list. A resource never writes headers: it returns data and the handler
answers with the status, ETag, Location and pagination headers the contract names.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from typing import TYPE_CHECKING, Any, ClassVar, Protocol, cast
from urllib.parse import quote

from . import idempotency
from .casing import camelize
from .codec import encode_json, etag_of
from .declaration import Declaration, Field
from .errors import ApiError
from .handler import ApiHandler, RequestView, etag_matches, verbs_and_allow
from .listing import ListQuery, Page, link_header, pagination_headers, parse_list_query
from .store.base import IdempotentResponse

if TYPE_CHECKING:
    from .context import ApiContext

# Route kind -> HTTP verb -> resource method. The single source of verb mapping. HEAD is
# GET without the body (RFC 9110 9.3.2): wherever GET is answered, so is HEAD.
ROUTES: Mapping[str, Mapping[str, str]] = {
    "collection": {"GET": "list", "HEAD": "list", "POST": "create"},
    "item": {"GET": "retrieve", "HEAD": "retrieve", "PUT": "replace", "PATCH": "update", "DELETE": "delete"},
}

INT_ID = Field("id", int, writable=False, min=1)
"""The identifier of a resource without a declaration: a positive 64-bit integer."""

Precondition = Callable[[Mapping[str, Any]], None]
"""Called with the current representation inside a write; raises 412 when stale."""


class ResourceMethods(Protocol):
    """The resource methods, one per verb of `ROUTES`; a resource implements those it supports.

    `ids` are the path identifiers, parsed by each declaration's id field: ints such
    as `ticket_id=12, message_id=5`, or slugs. With a `declaration`, `values` are
    validated store values (snake_case names) and returned items are JSON
    representations (`declaration.to_json`); without one, `values` is the JSON body
    and returned dicts are camelCased on the way out.
    """

    async def list(self, query: ListQuery, **ids: Any) -> Page:
        """Return one page of items and how many match."""

    async def retrieve(self, **ids: Any) -> Mapping[str, Any]:
        """Return one item."""

    async def create(self, values: dict[str, Any], **ids: Any) -> Mapping[str, Any]:
        """Create an item; return it, with its "id"."""

    async def replace(self, values: dict[str, Any], precondition: Precondition | None, **ids: Any) -> Mapping[str, Any]:
        """Replace an item's writable fields; return its new state."""

    async def update(self, values: dict[str, Any], precondition: Precondition | None, **ids: Any) -> Mapping[str, Any]:
        """Set some of an item's fields; return its new state."""

    async def delete(self, precondition: Precondition | None, **ids: Any) -> None:
        """Delete an item."""


class Resource:
    """Base of every resource; subclasses implement the methods of `ResourceMethods` they support."""

    name: ClassVar[str]
    parent: ClassVar[type[Resource] | None] = None
    declaration: ClassVar[Declaration | None] = None
    stored: ClassVar[bool] = False  # kept in the store: its tables come from `declaration`
    verbs: ClassVar[dict[str, tuple[str, ...]]] = {}
    verb_tables: ClassVar[dict[str, tuple[frozenset[str], str]]] = {}  # route kind -> handler.verbs_and_allow
    allow: ClassVar[dict[str, str]] = {}  # route kind -> the `Allow` value (verbs and OPTIONS)
    # Path argument (`ticket_id`) -> the field that parses it: this resource's and its parents'.
    id_fields: ClassVar[dict[str, Field]] = {}

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if isinstance(getattr(cls, "name", None), str):
            own = cls.declaration.id_field if cls.declaration is not None else INT_ID
            cls.id_fields = {**(cls.parent.id_fields if cls.parent else {}), cls.id_key(): own}
        cls.verbs = {
            kind: tuple(verb for verb, method in table.items() if getattr(cls, method, None) is not None)
            for kind, table in ROUTES.items()
        }
        cls.verb_tables = {kind: verbs_and_allow(verbs) for kind, verbs in cls.verbs.items()}
        cls.allow = {kind: allow for kind, (_, allow) in cls.verb_tables.items()}

    def __init__(self, api: ApiContext) -> None:
        self.api = api
        self.store = api.store

    @classmethod
    def id_key(cls) -> str:
        """Return the path argument naming this resource's identifier (`ticket_id`)."""
        return cls.name.replace("-", "_") + "_id"

    @classmethod
    def path_pattern(cls) -> str:
        """Return the collection path regex below the API root (parents included)."""
        own = "/" + cls.name
        if cls.parent is None:
            return own
        return f"{cls.parent.path_pattern()}/(?P<{cls.parent.id_key()}>[^/]+){own}"

    def check_for(self, precondition: Precondition | None) -> Callable[[Mapping[str, Any]], None] | None:
        """Adapt a precondition on representations to a store check on rows."""
        if precondition is None or self.declaration is None:
            return precondition
        to_json = self.declaration.to_json
        return lambda row: precondition(to_json(row))


class ResourceView(RequestView):
    """A request on a resource route: the resource, and how its answers are encoded."""

    resource: Resource
    declaration: Declaration | None

    def represent(self, value: Any) -> bytes:
        """Encode what the resource returned (declared items are JSON-ready already)."""
        return encode_json(value if self.declaration is not None else camelize(value))

    @property
    def methods(self) -> ResourceMethods:
        """Return the resource, typed by its verb methods.

        A resource defines only some of them, and only those are ever called: a verb
        reaches its method only when `Resource.verbs` (the methods the class defines)
        lists it, in prepare() (else 405) and on the fast path alike.
        """
        return cast(ResourceMethods, self.resource)


class ResourceHandler(ResourceView, ApiHandler):
    """Serve one resource's collection or item route."""

    def initialize(self, api: ApiContext, kind: str, resource: Resource) -> None:  # type: ignore[override]
        """Receive the app context, route kind and the resource object."""
        self.resource = resource
        self.declaration = resource.declaration
        super().initialize(api, kind)

    def verb_table(self, kind: str) -> tuple[frozenset[str], str]:
        """Return the verbs the resource implements on this route kind."""
        return self.resource.verb_tables[kind]

    async def prepare(self) -> None:
        """Answer a GET without a body here, once it is allowed and authenticated.

        Bodies are streamed, so after prepare() tornado would wait for the end of a
        body that a GET (or HEAD) does not have (two more event-loop turns per request).
        """
        await super().prepare()
        if self.bodiless and not self._finished and self.request.method in ("GET", "HEAD"):
            await self._run(self.path_kwargs)

    async def get(self, **path: str) -> None:
        """Dispatch GET to list or retrieve."""
        await self._run(path)

    async def head(self, **path: str) -> None:
        """Answer as GET does; tornado sends the headers (Content-Length included) without the body."""
        await self._run(path)

    async def post(self, **path: str) -> None:
        """Dispatch POST to create."""
        await self._run(path)

    async def put(self, **path: str) -> None:
        """Dispatch PUT to replace."""
        await self._run(path)

    async def patch(self, **path: str) -> None:
        """Dispatch PATCH to update."""
        await self._run(path)

    async def delete(self, **path: str) -> None:
        """Dispatch DELETE to delete."""
        await self._run(path)

    async def _run(self, path: Mapping[str, str]) -> None:
        method = ROUTES[self.kind][self.request.method]  # prepare() let only these through
        await _RUNNERS[method](self, self.parse_ids(path, self.resource.id_fields))

    def precondition(self) -> Precondition | None:
        """Return the If-Match check for a write, or None without If-Match."""
        if_match = self.request.headers.get("If-Match")
        if if_match is None:
            return None
        represent = self.represent

        def check(current: Mapping[str, Any]) -> None:
            if not etag_matches(if_match, etag_of(represent(current)), weak=False):
                raise ApiError(412, "Precondition failed: the resource has changed (If-Match does not match)")

        return check

    def parse_values(self, mode: str) -> dict[str, Any]:
        """Return the JSON body, validated by the declaration when there is one."""
        body = self.json_body()
        decl = self.declaration
        if decl is None:
            return body
        if mode == "create":
            return decl.parse_create(body)
        if mode == "replace":
            return decl.parse_replace(body)
        return decl.parse_update(body)


async def list_answer(view: ResourceView, ids: dict[str, int]) -> tuple[bytes, dict[str, str]]:
    """Return a list's body and headers (ETag, pagination, Link)."""
    query: ListQuery = parse_list_query(view.declaration, view.query)
    page: Page = await view.methods.list(query, **ids)
    body = view.represent(list(page.items))
    headers = pagination_headers(query, page.count)
    headers["Link"] = link_header(view.absolute_origin() + view.request.path, view.query, query, page.count)
    # The count is part of what a list says, not only its items (think of a page past the end).
    headers["ETag"] = etag_of(body, b"\n" + headers["X-Pagination-Count"].encode())
    return body, headers


async def retrieve_answer(view: ResourceView, ids: dict[str, int]) -> tuple[bytes, dict[str, str]]:
    """Return an item's body and its ETag."""
    body = view.represent(await view.methods.retrieve(**ids))
    return body, {"ETag": etag_of(body)}


async def _run_list(self: ResourceHandler, ids: dict[str, int]) -> None:
    await self.send_cacheable(*await list_answer(self, ids))


async def _run_retrieve(self: ResourceHandler, ids: dict[str, int]) -> None:
    await self.send_cacheable(*await retrieve_answer(self, ids))


async def _run_create(self: ResourceHandler, ids: dict[str, Any]) -> None:
    origin = self.absolute_origin()  # a bad Host is 400 before anything is created
    key = idempotency.parse_key(self.request.headers)
    if key is None:
        response = await _create(self, ids)
    else:
        principal = self.identity.username if self.identity is not None else ""
        response = await idempotency.once(
            self.api.store,
            self.api.clock(),
            idempotency.scope(principal, self.request.path),
            key,
            self.json_body(),
            lambda: _create(self, ids),
            _respond_from_row(self),
        )
    # Kept with the id alone (older records: a whole URL), the Location is this request's:
    # a replay through another origin or proxy gets its own, never the first caller's Host.
    created = response.headers["Location"].rsplit("/", 1)[-1]
    location = origin + self.request.path.rstrip("/") + "/" + created
    await self._send(response.status, response.body, {**response.headers, "Location": location})


async def _create(self: ResourceHandler, ids: dict[str, Any]) -> IdempotentResponse:
    values = self.parse_values("create")
    return _created(self, await self.methods.create(values, **ids))


def _created(self: ResourceView, created: Mapping[str, Any]) -> IdempotentResponse:
    """Return the 201 of a created item (Location kept as its id: the replaying request's origin is added)."""
    body = self.represent(created)
    return IdempotentResponse(201, {"Location": quote(str(created["id"]), safe=""), "ETag": etag_of(body)}, body)


def _respond_from_row(self: ResourceHandler) -> Callable[[Mapping[str, Any]], IdempotentResponse] | None:
    """Return how the store builds the 201 from the row it inserts (a stored resource's own create only)."""
    from .resources.stored import StoredResource  # it builds on this module

    decl = self.declaration
    if decl is None or getattr(type(self.resource), "create", None) is not StoredResource.create:
        return None  # an override may return something else than the row's representation
    return lambda row: _created(self, decl.to_json(row))


async def _run_replace(self: ResourceHandler, ids: dict[str, int]) -> None:
    values = self.parse_values("replace")
    state = await self.methods.replace(values, self.precondition(), **ids)
    await self._send(204, None, {"ETag": etag_of(self.represent(state))})


async def _run_update(self: ResourceHandler, ids: dict[str, int]) -> None:
    values = self.parse_values("update")
    state = await self.methods.update(values, self.precondition(), **ids)
    if self.declaration is not None:
        names = {self.declaration.by_name[name].json_name for name in values}
        shown = state
    else:
        names = {k for k in camelize(dict.fromkeys(values))}
        shown = camelize(state)
    accepted = {k: v for k, v in shown.items() if k in names}
    await self._send(200, encode_json(accepted), {"ETag": etag_of(encode_json(shown))})


async def _run_delete(self: ResourceHandler, ids: dict[str, int]) -> None:
    await self.methods.delete(self.precondition(), **ids)
    await self._send(204, None)


_RUNNERS: dict[str, Callable[[ResourceHandler, dict[str, int]], Awaitable[None]]] = {
    "list": _run_list,
    "retrieve": _run_retrieve,
    "create": _run_create,
    "replace": _run_replace,
    "update": _run_update,
    "delete": _run_delete,
}

"""Resources: plain objects with list/retrieve/create/replace/update/delete.

A resource declares its `name`, optional `parent` and `declaration`, and implements
only the methods it supports. `ResourceHandler` turns HTTP verbs into those methods
through `ROUTES`, the one table that also yields `Allow`, the 405 answer and the CORS
method list. A resource never writes headers: it returns data and the handler
answers with the status, ETag, Location and pagination headers the contract names.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any, ClassVar, Protocol, cast
from urllib.parse import quote

from . import idempotency
from .answer import Answer, etag_matches
from .casing import camelize
from .codec import encode_json, etag_of
from .declaration import Declaration, Field
from .errors import ApiError
from .handler import ApiHandler, RequestView, verbs_and_allow
from .listing import ListQuery, Page, link_header, pagination_headers, parse_list_query
from .metrics import OTHER_ROUTE
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
    """A request on a resource route: the resource, and how it becomes an answer.

    `respond` is the one place a resource request becomes its answer (status,
    headers, body), errors included; ResourceHandler and the fast path only write it.
    """

    kind: str
    resource: Resource
    declaration: Declaration | None

    @property
    def route_template(self) -> str:
        """Return the template of this resource route (the metrics' `route` label)."""
        return self.api.route_templates.get((self.resource, self.kind), OTHER_ROUTE)

    async def respond(self, path: Mapping[str, str] | None, *, admitted: bool = False) -> Answer | None:
        """Return this request's answer: admission, then the resource method, any error rendered.

        `path` None: admit only, as the body is still to come (None back: admitted).
        `admitted`: admission already passed (the body has arrived).
        """
        try:
            if not admitted:
                await self.admit()
            if path is None:
                return None
            method = ROUTES[self.kind][self.request.method]  # admission let only these through
            run = getattr(self, "answer_" + method)
            answer: Answer = await run(self.parse_ids(path, self.resource.id_fields))
            return answer
        except Exception as exc:
            return self.failed(exc)

    def represent(self, value: Any) -> bytes:
        """Encode what the resource returned (declared items are JSON-ready already)."""
        return encode_json(value if self.declaration is not None else camelize(value))

    @property
    def methods(self) -> ResourceMethods:
        """Return the resource, typed by its verb methods.

        A resource defines only some of them, and only those are ever called: a verb
        reaches its method only when `Resource.verbs` (the methods the class defines)
        lists it (admission answers 405 otherwise).
        """
        return cast(ResourceMethods, self.resource)

    async def answer_list(self, ids: dict[str, Any]) -> Answer:
        """Answer a list: one page, its ETag, pagination headers and Link."""
        query: ListQuery = parse_list_query(self.declaration, self.query)
        page: Page = await self.methods.list(query, **ids)
        body = self.represent(list(page.items))
        headers = pagination_headers(query, page.count)
        headers["Link"] = link_header(self.absolute_origin() + self.request.path, self.query, query, page.count)
        # The count is part of what a list says, not only its items (think of a page past the end).
        headers["ETag"] = etag_of(body, b"\n" + headers["X-Pagination-Count"].encode())
        return self.cacheable(body, headers)

    async def answer_retrieve(self, ids: dict[str, Any]) -> Answer:
        """Answer an item with its ETag (304 when the client holds it)."""
        body = self.represent(await self.methods.retrieve(**ids))
        return self.cacheable(body, {"ETag": etag_of(body)})


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
        """Admit the request; answer a GET or HEAD without a body here, whole.

        Bodies are streamed, so after prepare() tornado would wait for the end of a
        body that a GET (or HEAD) does not have (two more event-loop turns per request).
        """
        whole = self.bodiless and self.request.method in ("GET", "HEAD")
        await self._answer(self.path_kwargs if whole else None)

    async def get(self, **path: str) -> None:
        """Answer a GET that came with a body (read and ignored)."""
        await self._answer(path, admitted=True)

    async def head(self, **path: str) -> None:
        """Answer as GET does; tornado sends the headers (Content-Length included) without the body."""
        await self._answer(path, admitted=True)

    async def post(self, **path: str) -> None:
        """Answer POST (create) once its body has arrived."""
        await self._answer(path, admitted=True)

    async def put(self, **path: str) -> None:
        """Answer PUT (replace) once its body has arrived."""
        await self._answer(path, admitted=True)

    async def patch(self, **path: str) -> None:
        """Answer PATCH (update) once its body has arrived."""
        await self._answer(path, admitted=True)

    async def delete(self, **path: str) -> None:
        """Answer DELETE."""
        await self._answer(path, admitted=True)

    async def _answer(self, path: Mapping[str, str] | None, *, admitted: bool = False) -> None:
        answer = await self.respond(path, admitted=admitted)
        if answer is not None:
            await self.write_answer(answer)

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

    async def answer_create(self, ids: dict[str, Any]) -> Answer:
        """Answer 201 with the created item, its Location and ETag (once per Idempotency-Key)."""
        origin = self.absolute_origin()  # a bad Host is 400 before anything is created
        key = idempotency.parse_key(self.request.headers)
        if key is None:
            response = await self._create(ids)
        else:
            principal = self.identity.username if self.identity is not None else ""
            response = await idempotency.once(
                self.api.store,
                self.api.clock(),
                idempotency.scope(principal, self.request.path),
                key,
                self.json_body(),
                lambda: self._create(ids),
                self._respond_from_row(),
            )
        # Kept with the id alone (older records: a whole URL), the Location is this request's:
        # a replay through another origin or proxy gets its own, never the first caller's Host.
        created = response.headers["Location"].rsplit("/", 1)[-1]
        location = origin + self.request.path.rstrip("/") + "/" + created
        return self.reply(response.status, response.body, {**response.headers, "Location": location})

    async def _create(self, ids: dict[str, Any]) -> IdempotentResponse:
        values = self.parse_values("create")
        return self._created(await self.methods.create(values, **ids))

    def _created(self, created: Mapping[str, Any]) -> IdempotentResponse:
        """Return the 201 of a created item (Location kept as its id: the replaying request's origin is added)."""
        body = self.represent(created)
        return IdempotentResponse(201, {"Location": quote(str(created["id"]), safe=""), "ETag": etag_of(body)}, body)

    def _respond_from_row(self) -> Callable[[Mapping[str, Any]], IdempotentResponse] | None:
        """Return how the store builds the 201 from the row it inserts (a stored resource's own create only)."""
        from .resources.stored import StoredResource  # it builds on this module

        decl = self.declaration
        if decl is None or getattr(type(self.resource), "create", None) is not StoredResource.create:
            return None  # an override may return something else than the row's representation
        return lambda row: self._created(decl.to_json(row))

    async def answer_replace(self, ids: dict[str, Any]) -> Answer:
        """Answer 204 with the new ETag."""
        values = self.parse_values("replace")
        state = await self.methods.replace(values, self.precondition(), **ids)
        return self.reply(204, None, {"ETag": etag_of(self.represent(state))})

    async def answer_update(self, ids: dict[str, Any]) -> Answer:
        """Answer 200 with exactly the accepted fields and the new state's ETag."""
        values = self.parse_values("update")
        state = await self.methods.update(values, self.precondition(), **ids)
        if self.declaration is not None:
            names = {self.declaration.by_name[name].json_name for name in values}
            shown = state
        else:
            names = {k for k in camelize(dict.fromkeys(values))}
            shown = camelize(state)
        accepted = {k: v for k, v in shown.items() if k in names}
        return self.reply(200, encode_json(accepted), {"ETag": etag_of(encode_json(shown))})

    async def answer_delete(self, ids: dict[str, Any]) -> Answer:
        """Answer 204."""
        await self.methods.delete(self.precondition(), **ids)
        return self.reply(204, None)

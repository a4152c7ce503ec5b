"""The store interface the handlers use; implementations live beside it.

Every method is a coroutine so a store over a network driver (PostgreSQL) fits
without touching handlers. The store never imports tornado and knows nothing of HTTP.
"""

from __future__ import annotations

import abc
import asyncio
from collections.abc import AsyncIterable, AsyncIterator, Callable, Collection, Iterator, Mapping, Sequence
from contextvars import ContextVar
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from ..declaration import Declaration
from ..listing import ListQuery


class StoreError(Exception):
    """Base of the errors a store raises."""


class StoreUnavailable(StoreError):
    """The store cannot be reached now; the request may be retried."""


def check_schema_version(version: int, known: int) -> None:
    """Refuse a database whose built-in schema is newer than the `known` migrations of this medusa_v2."""
    if version > known:
        raise StoreUnavailable(
            f"the database schema (version {version}) is newer than this medusa_v2 (version {known}); upgrade medusa_v2"
        )


class NotFound(StoreError):
    """The addressed row does not exist (or not under that parent).

    `resource` and `id` name what was missing (for a nested row, possibly its parent).
    """

    def __init__(self, resource: str = "", id: Any = None) -> None:
        super().__init__(f"{resource} {id} not found" if resource else "not found")
        self.resource = resource
        self.id = id


class AlreadyExists(StoreError):
    """A create chose an id that is taken.

    `parent_id` names the parent too when the resource's ids are unique only under
    their parent (`scoped_ids`).
    """

    def __init__(self, resource: str = "", id: Any = None, parent_id: Any = None) -> None:
        super().__init__(f"{resource} {id} already exists" if resource else "already exists")
        self.resource = resource
        self.id = id
        self.parent_id = parent_id


@dataclass(frozen=True, slots=True)
class IdempotentResponse:
    """A stored response to replay for a repeated Idempotency-Key."""

    status: int
    headers: Mapping[str, str]
    body: bytes


@dataclass(slots=True)
class Completion:
    """An Idempotency-Key's response, to be recorded by the insert that creates its resource.

    Set in `COMPLETION` around a create: the store's `insert_row` records
    `respond(row)` for (scope, key) in the insert's own transaction, so a crash
    leaves either no row, or the row and its replayable response. `response` is
    set once recorded.
    """

    scope: str
    key: str
    respond: Callable[[Mapping[str, Any]], IdempotentResponse]
    response: IdempotentResponse | None = None


COMPLETION: ContextVar[Completion | None] = ContextVar("medusa_v2_completion", default=None)
"""The Completion of the create running in this context (None: no Idempotency-Key)."""


Check = Callable[[Mapping[str, Any]], None]
"""Called with the current row inside a write's transaction; raising aborts the write."""


class Store(abc.ABC):
    """Persistent state: auth bookkeeping, idempotency keys and resource rows."""

    @abc.abstractmethod
    async def open(self, declarations: Sequence[Declaration] = ()) -> None:
        """Connect and bring the schema up to date (forward migrations).

        Then each of `declarations` (`medusa_v2.declaration.Declaration`; their
        parents come first, added if missing) gets its table, constraints, indexes,
        search index and cascade, derived from it (`store/schema.py`), or is migrated
        to its current form, in the migration's transaction. A declaration that
        cannot be honoured (a field removed, a required field added to rows that
        have no value for it) raises `schema.SchemaError` naming resource and field.
        """

    @abc.abstractmethod
    async def close(self) -> None:
        """Release connections; later calls raise StoreUnavailable."""

    @abc.abstractmethod
    async def ping(self) -> None:
        """Return when the store answers; raise StoreUnavailable otherwise."""

    def pool_stats(self) -> Mapping[str, int]:
        """Return the pool's figures (`pool_size`, `pool_available`, `requests_waiting`), {} without a pool."""
        return {}

    # -- authentication state, shared by every process on this store --

    @abc.abstractmethod
    async def revoke_token(self, jti: str, expires_at: float) -> None:
        """Remember that token `jti` is revoked until it would have expired anyway."""

    @abc.abstractmethod
    async def is_token_revoked(self, jti: str) -> bool:
        """Return whether token `jti` was revoked."""

    @abc.abstractmethod
    async def purge_expired(
        self, now: float, *, keys_before: float, failures_before: float, changes_before: float | None = None
    ) -> None:
        """Forget expired state, in one transaction.

        That is: revocations of expired tokens (refused anyway), idempotency keys
        created before `keys_before`, failed logins before `failures_before`, and
        (unless None) the change feed's changes recorded before `changes_before`.
        """

    @abc.abstractmethod
    async def login_failures(self, client: str, since: float) -> Sequence[float]:
        """Return the times of `client`'s failed logins at or after `since`, oldest first."""

    @abc.abstractmethod
    async def record_login_failure(self, client: str, at: float, forget_before: float) -> None:
        """Record a failed login; forget this client's failures older than `forget_before`."""

    @abc.abstractmethod
    async def clear_login_failures(self, client: str) -> None:
        """Forget a client's failed logins (after a successful one)."""

    # -- resource rows, generic over a resource declaration --
    #
    # `decl` is a `medusa_v2.declaration.Declaration` (the store reads only its
    # name, field names, sortable/filter/search flags): table = decl.name, columns =
    # field names. Rows are dicts keyed by field name. `parent` is
    # (parent declaration, its id): the row must belong to that parent, and a row
    # under another parent is NotFound. `now` is the app clock's time in seconds.

    @abc.abstractmethod
    async def list_rows(self, decl: Declaration, query: ListQuery, parent: Parent | None = None) -> RowPage:
        """Return one page of rows matching `query` (a ListQuery) and the number matching."""

    @abc.abstractmethod
    async def get_row(self, decl: Declaration, id: int, parent: Parent | None = None) -> dict[str, Any]:
        """Return one row; NotFound when absent (or under another parent)."""

    @abc.abstractmethod
    async def insert_row(
        self,
        decl: Declaration,
        values: Mapping[str, Any],
        now: float,
        parent: Parent | None = None,
        check_parent: Check | None = None,
    ) -> dict[str, Any]:
        """Insert a row (id assigned unless given; AlreadyExists when taken); return it.

        `check_parent` is called with the parent row inside the transaction. With a
        `COMPLETION` in the caller's context, its response for the new row is
        recorded in the same transaction (`complete_idempotency_key`'s work).
        """

    @abc.abstractmethod
    async def update_row(
        self,
        decl: Declaration,
        id: int,
        values: Mapping[str, Any],
        now: float,
        check: Check | None = None,
        parent: Parent | None = None,
    ) -> dict[str, Any]:
        """Set `values` (updated_at always moves forward), after `check`; return the new row."""

    @abc.abstractmethod
    async def delete_row(
        self, decl: Declaration, id: int, check: Check | None = None, parent: Parent | None = None
    ) -> None:
        """Delete a row (and, by foreign key, its children), after `check`."""

    # -- the change feed: every committed change of a stored row, numbered --
    #
    # Each insert, update and delete of a row of a derived (stored) resource, the
    # rows ON DELETE CASCADE removes included, is recorded in the transaction that
    # makes it. Its `seq` is strictly increasing and gap-free as observed: a reader
    # never sees N+1 before N, with any number of writers and processes; for any one
    # row, seq order is commit order. An import (`import_rows`) records no change.

    @abc.abstractmethod
    async def changes_after(self, since: int, limit: int, resources: Collection[str] | None = None) -> list[Change]:
        """Return at most `limit` changes with seq > `since`, in seq order (only of `resources`, by name, if given).

        Raises ChangesGone when changes after `since` were purged, ChangesAhead when
        `since` is past the last change.
        """

    @abc.abstractmethod
    async def publish_changes(self) -> int:
        """Return the last seq, after numbering the changes committed since (a store numbering after commit)."""

    async def wait_for_changes(self, timeout: float) -> None:
        """Return after `timeout` seconds, or sooner when this store hears of changes numbered elsewhere."""
        await asyncio.sleep(timeout)

    # -- bulk transfer (medusa-v2 export / import), generic like the row methods --
    #
    # `trees` are the stored resources to move, each a `Tree`: a top-level
    # declaration (ticket, show) and the trees of the declarations nested under it
    # (message, note; episode), whose `parent_field` holds their parent's id. Rows
    # are complete store rows (every field of the declaration, snake_case keys, ids
    # and created_at/updated_at included), exactly as get_row returns them. An
    # `Item` is (row, kids): `kids[i]` lists the items of `tree.children[i]` under
    # that row, in id order (an empty sequence for a tree without children).

    @abc.abstractmethod
    def export_rows(
        self, trees: Sequence[Tree], *, batch_size: int = 1000, as_json: bool = False
    ) -> AsyncIterator[tuple[Tree, Sequence[Item]]]:
        """Yield (tree, items) for every row of each tree's top declaration, tree after tree.

        Rows come in id order, in batches of at most `batch_size` top-level rows,
        each with its descendants; with `as_json`, each row comes as its JSON
        representation (`to_json` of its declaration), which a store may build
        straight from the values it reads. All batches of every tree come from one
        consistent snapshot (a backup never mixes two states); memory stays bounded
        by one batch (keyset pagination by id, never the whole table).
        Implementations are async generators (`async def ... yield`).
        """

    @abc.abstractmethod
    async def import_rows(
        self,
        trees: Sequence[Tree],
        batches: AsyncIterable[tuple[Tree, Sequence[Item]]],
        *,
        replace: bool = False,
        exclusive: bool = False,
    ) -> int:
        """Insert every (tree, items) of `batches` as given, in ONE transaction; return the top-level row count.

        Each batch's tree is one of `trees`. Ids, created_at and updated_at are kept
        as given (already validated by the caller); a nested row carries its
        parent's id in `parent_field`. A top-level id that exists raises
        AlreadyExists(decl.name, id) unless `replace`, which first deletes that row
        and, by cascade, every row nested under it; an id given twice in one run, and
        a nested id that exists (after replaced rows are gone), raise AlreadyExists
        too (ids of `scoped_ids` resources are compared with their parent's). Any
        exception (including one raised by `batches` itself, e.g. a bad input line)
        rolls the whole run back: nothing of it is applied. Search indexes and any
        counters stay consistent with the rows: an integer id counter moves past the
        ids imported (below a store's limit), never back. `exclusive`: the caller
        uses this store for nothing else until the import returns (the import
        command), so the store may close its own connections meanwhile and write in
        a way that keeps other connections waiting, when none is open.
        """

    # -- idempotency keys, shared by every process on this store --

    @abc.abstractmethod
    async def claim_idempotency_key(
        self, scope: str, key: str, fingerprint: str, now: float, *, expire_before: float, stale_before: float
    ) -> IdempotentResponse | None:
        """Claim (scope, key) for a new request, or return the response to replay.

        Returns None when the caller now holds the key (in flight). Raises
        KeyInFlight when another request holds it since `stale_before` or later,
        KeyMismatch when it was used with another fingerprint. Keys created before
        `expire_before` are forgotten (purged).
        """

    @abc.abstractmethod
    async def complete_idempotency_key(self, scope: str, key: str, response: IdempotentResponse) -> None:
        """Record the response of the request holding (scope, key)."""

    @abc.abstractmethod
    async def release_idempotency_key(self, scope: str, key: str) -> None:
        """Forget an in-flight key (its request failed and may be retried)."""


@dataclass(frozen=True, slots=True)
class Change:
    """One committed change of a stored row, as the change feed recorded it.

    `row` is the row after the change (created, updated: every column, as get_row
    returns it), or the deleted row's id and parent field (deleted).
    """

    seq: int
    resource: str  # the declaration's name
    event: str  # "created", "updated" or "deleted"
    row: Mapping[str, Any]


class ChangesGone(StoreError):
    """The changes after a seq were purged (older than the retention): `purged` is the last purged seq."""

    def __init__(self, since: int, purged: int) -> None:
        super().__init__(f"the changes after seq {since} are no longer kept (changes up to {purged} were purged)")
        self.since = since
        self.purged = purged


class ChangesAhead(StoreError):
    """A seq past the last change (another database's, or one reset since): `last` is the last seq."""

    def __init__(self, since: int, last: int) -> None:
        super().__init__(f"seq {since} is ahead of the change feed (its last seq is {last})")
        self.since = since
        self.last = last


class KeyInFlight(StoreError):
    """An idempotency key is held by a request that has not finished."""


class KeyMismatch(StoreError):
    """An idempotency key was already used with another request body."""


IMPORT_LOOKAHEAD = 8
"""Batches an import may parse ahead of the one the store writes (errors name their line)."""


class RowPage:
    """One page of rows and how many rows match in all.

    A store gives either the rows as dicts, or (cheaper) their column names and value
    tuples, from which `rows` is built only if someone asks for it.
    """

    __slots__ = ("_rows", "columns", "count", "tuples")

    def __init__(
        self,
        rows: Sequence[dict[str, Any]] | None,
        count: int,
        *,
        columns: Sequence[str] = (),
        tuples: Sequence[Sequence[Any]] = (),
    ) -> None:
        self._rows = rows
        self.count = count
        self.columns = tuple(columns)
        self.tuples = tuples

    @property
    def rows(self) -> Sequence[dict[str, Any]]:
        """Return the rows as dicts (column name -> value)."""
        if self._rows is None:
            self._rows = [dict(zip(self.columns, values, strict=True)) for values in self.tuples]
        return self._rows

    def __eq__(self, other: object) -> bool:
        return isinstance(other, RowPage) and (self.rows, self.count) == (other.rows, other.count)

    def __repr__(self) -> str:
        return f"RowPage(rows={self.rows!r}, count={self.count!r})"


Parent = tuple[Declaration, Any]
"""(parent declaration, parent id: an int, or a str for a resource with string ids) for a nested resource's rows."""


@dataclass(frozen=True, slots=True)
class Tree:
    """A stored resource's declaration and the trees of the resources nested under it.

    Each child's `decl.parent_field` holds the id of a row of `decl`. The unit of a
    bulk export or import (`Store.export_rows`, `Store.import_rows`).
    """

    decl: Declaration
    children: tuple[Tree, ...] = ()

    def walk(self) -> Iterator[Tree]:
        """Yield this tree, then every tree below it (each parent before its children)."""
        yield self
        for child in self.children:
            yield from child.walk()

    def levels(self, items: Sequence[Item]) -> Iterator[tuple[Tree, list[Item]]]:
        """Yield (tree, items) for `items` of this tree, then for all their descendants, level by level.

        Parents come before their children, so rows inserted in this order always
        find their parent.
        """
        yield self, list(items)
        for at, child in enumerate(self.children):
            below = [item for _, kids in items for item in kids[at]]
            if below:
                yield from child.levels(below)


Item = tuple[Mapping[str, Any], Sequence[Sequence[Any]]]
"""(row, kids): a row and, per child tree, the items nested under it (see Store.export_rows)."""


def scoped_ids(decl: Declaration) -> bool:
    """Return whether a resource's ids are unique only under its parent.

    A nested resource identified by strings is (Medusa's episodes: `s01e01` of each
    show); integer ids come from one counter per table, unique in the table.
    """
    return decl.parent_field is not None and decl.by_name["id"].type is str


def row_keys(decl: Declaration, rows: Sequence[Mapping[str, Any]]) -> list[Any]:
    """Return what identifies each row in its table: its id, or (parent id, id) for `scoped_ids`."""
    if scoped_ids(decl):
        parent_field = decl.parent_column
        return [(row[parent_field], row["id"]) for row in rows]
    return [row["id"] for row in rows]


def already_exists(decl: Declaration, key: Any) -> AlreadyExists:
    """Return the AlreadyExists for a key of `row_keys`."""
    if scoped_ids(decl):
        return AlreadyExists(decl.name, key[1], parent_id=key[0])
    return AlreadyExists(decl.name, key)


def refuse_repeats(decl: Declaration, keys: Sequence[Any]) -> None:
    """Raise AlreadyExists for the first key of `row_keys` given twice."""
    if len(set(keys)) != len(keys):
        seen: set[Any] = set()
        for key in keys:
            if key in seen:
                raise already_exists(decl, key)
            seen.add(key)


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_FORMAT = "%Y-%m-%dT%H:%M:%S.%fZ"


def timestamp(seconds: float) -> str:
    """Return RFC 3339 UTC with microseconds (`2026-11-27T20:11:02.123456Z`).

    Fixed width, so the text sorts in time order (and sorts in SQL as text).
    """
    return (_EPOCH + timedelta(microseconds=round(seconds * 1_000_000))).strftime(_FORMAT)


def next_timestamp(seconds: float, previous: str) -> str:
    """Return the time `seconds`, or one microsecond after `previous` if that is later.

    Every modification moves updatedAt forward even when the clock did not (same
    microsecond, a clock stepped back), so its ETag changes.
    """
    now = round(seconds * 1_000_000)
    before = (datetime.strptime(previous, _FORMAT).replace(tzinfo=UTC) - _EPOCH) // timedelta(microseconds=1)
    return (_EPOCH + timedelta(microseconds=max(now, before + 1))).strftime(_FORMAT)


def export_items(
    keys: Sequence[str], at: int, tuples: Sequence[Sequence[Any]], kids: Sequence[Mapping[Any, list[Item]]]
) -> list[Item]:
    """Pair each row's values with `keys`, and with its kids (found by its id at `at`): an export's items.

    Each row has exactly len(keys) values (its table's columns): zip needs no length check.
    """
    if not kids:
        return [(dict(zip(keys, values, strict=False)), ()) for values in tuples]
    if len(kids) == 1:
        get = kids[0].get
        return [(dict(zip(keys, values, strict=False)), (get(values[at], ()),)) for values in tuples]
    return [
        (dict(zip(keys, values, strict=False)), tuple(found.get(values[at], ()) for found in kids)) for values in tuples
    ]


def by_parent(
    decl: Declaration, tuples: Sequence[Sequence[Any]], grandkids: Sequence[Mapping[Any, list[Item]]], as_json: bool
) -> dict[Any, list[Item]]:
    """Return a child table's exported items (its rows in `decl.column_order`) grouped by their parent's id."""
    at = decl.column_order.index("id")
    parent_at = decl.column_order.index(decl.parent_field)
    keys = decl.json_names if as_json else decl.column_order
    grouped: dict[Any, list[Item]] = {}
    for values, item in zip(tuples, export_items(keys, at, tuples, grandkids), strict=True):
        grouped.setdefault(values[parent_at], []).append(item)
    return grouped

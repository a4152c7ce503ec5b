"""Bulk export and import: JSON Lines, one top-level item per line with everything nested under it.

What moves is every stored resource the daemon mounts (`[API] resources`: the
built-in `ticket` and `message`, and an embedder's own Resource classes with a
`declaration`), following the tree of mounted resources. The format is the API's
own representation, so a file is readable, diffable and usable by other tools:

    {"id":1,"title":"...","description":"","state":"open","priority":3,"assignee":null,
     "createdAt":"2026-11-27T20:11:02.123456Z","updatedAt":"...","messages":[{"id":7,
     "ticketId":1,"author":"ann","body":"...","createdAt":"...","updatedAt":"..."}],
     "notes":[...]}
    {"resource":"show","id":"tvdb83462","title":"...","status":"ended",...,
     "episodes":[{"id":"s01e01","showId":"tvdb83462",...}]}

- Each item is exactly what `GET` returns for it, in the same bytes (compact,
  ASCII-escaped JSON), plus one array per resource mounted under it, named by the
  child's resource name in camelCase followed by `s` (`message` -> `messages`,
  `note` -> `notes`, `episode` -> `episodes`), always present (`[]` when empty),
  in the order the resources are mounted. A child item carries its own children
  the same way (grandchildren nested inside their parent item).
- A ticket line has no marker. A line of another top-level resource starts with
  `"resource": "<name>"` (a ticket line may carry `"resource": "ticket"` too). So a
  file from a store with only tickets and messages is byte for byte what this
  format always was, and old files import unchanged. An export writes the tickets
  first, then each other top-level resource in mounted order, each in id order.
- A mounted resource whose field would be named like one of these keys (`resource`,
  or a child's array) cannot be transferred: export and import refuse to start.

Ids and timestamps are kept: export from one store and import into another is a
migration, and an export is a backup (one consistent snapshot of every resource).

Import validates every item as POST would (its resource's declaration), plus what
POST does not accept but a restore needs: `id` (a positive 64-bit integer, or the
declared pattern of a string id), `createdAt` and `updatedAt` (any RFC 3339
timestamp, kept normalised to UTC with microseconds, `...Z`, as the store writes
them) are required; a child item's
parent id field (`ticketId`, `showId`) may be omitted, or must be its parent's id.
The first bad line stops the import with `line N: reason`; the whole run is one
transaction, so nothing of it is applied. With `--replace`, a top-level item whose
id exists replaces it and everything nested under it. Exit statuses of the
commands: 0 done, 1 the data or the store refused (bad line, id conflict, store
unavailable), 2 usage or config.ini errors.
"""

from __future__ import annotations

import collections
import json
import os
import re
import sys
import time
from collections.abc import AsyncIterator, Iterable, Mapping, Sequence
from datetime import UTC, datetime, timedelta, timezone
from typing import IO, TYPE_CHECKING, Any

from .casing import to_camel
from .codec import encode_json_text
from .declaration import MISSING, Declaration
from .invalid import InvalidRequest
from .listing import ListQuery
from .store.base import IMPORT_LOOKAHEAD, AlreadyExists, Item, Store, Tree, scoped_ids

if TYPE_CHECKING:
    from .resource import Resource

BATCH = 1000  # top-level items per store call of an export: bounded memory, few round trips
# Top-level items per store call of an import. Larger than an export's: the store writes each
# batch on a thread of its own, and each hand-off between that thread and the parser
# costs both of them a wait for the GIL (batches of 1,000 against 5,000: docs/benchmarks.md,
# Import).
IMPORT_BATCH = 5000
MARKER = "resource"  # the key naming a line's top-level resource
DEFAULT_RESOURCE = "ticket"  # the resource of a line without MARKER (every line of the original format)
TIMESTAMP_FIELDS = frozenset({"created_at", "updated_at"})
_TIMESTAMP = re.compile(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{6}Z\Z", re.ASCII)
_RFC3339 = re.compile(
    r"(\d{4})-(\d{2})-(\d{2})[Tt](\d{2}):(\d{2}):(\d{2})(?:\.(\d{1,9}))?([Zz]|[+-]\d{2}:\d{2})\Z", re.ASCII
)
# A timestamp valid in any month (days 1-28, year 1 on): taken without a datetime
# (every row has two); other days are checked by one (_kept_timestamp).
_ANY_MONTH_TIMESTAMP = re.compile(
    r"(?!0000)\d{4}-(?:0[1-9]|1[0-2])-(?:0[1-9]|1\d|2[0-8])T(?:[01]\d|2[0-3]):[0-5]\d:[0-5]\d\.\d{6}Z\Z", re.ASCII
)


class TransferError(Exception):
    """An import or export cannot go on; the message says where and why (one line)."""


class Progress:
    """A one-line progress bar (count, rate, ETA) on a terminal; silent elsewhere."""

    def __init__(self, stream: IO[str] | None, unit: str, total: int | None = None) -> None:
        self.stream = stream if stream is not None and _isatty(stream) else None
        self.unit = unit
        self.total = total
        self.start = time.monotonic()
        self._shown = 0.0

    def update(self, count: int, fraction: float | None = None, *, force: bool = False) -> None:
        """Redraw at most five times a second; `fraction` done (else count / total)."""
        if self.stream is None:
            return
        now = time.monotonic()
        if not force and now - self._shown < 0.2:
            return
        self._shown = now
        elapsed = max(now - self.start, 1e-9)
        rate = count / elapsed
        if fraction is None and self.total:
            fraction = min(count / self.total, 1.0)
        line = f"{count:,} {self.unit}  {rate:,.0f}/s"
        if fraction is not None and fraction > 0:
            width = 24
            filled = int(width * fraction)
            eta = elapsed * (1 - fraction) / fraction
            line = f"[{'#' * filled}{'.' * (width - filled)}] {fraction:4.0%}  {line}  ETA {eta:,.0f}s"
        self.stream.write("\r" + line + "\033[K")
        self.stream.flush()

    def done(self, count: int) -> None:
        """Draw the final state and end the line."""
        if self.stream is None:
            return
        self.update(count, 1.0 if self.total is not None or count else None, force=True)
        self.stream.write("\n")
        self.stream.flush()


def _isatty(stream: IO[str]) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):
        return False


# -- what moves: the tree of mounted stored resources --


def mounted_resources(settings: Any) -> list[type[Resource]]:
    """Return the Resource classes the daemon mounts for these settings (TransferError naming a bad one)."""
    from .url_table import mounted_resources as mounted

    try:
        return mounted(settings)[0]
    except ValueError as exc:
        raise TransferError(str(exc)) from None


def collection_key(decl: Declaration) -> str:
    """Return the key of a child resource's array inside its parent's item (`message` -> `messages`)."""
    return to_camel(decl.name) + "s"


_NONE_LIST: list[Any] = []  # a child array absent from its parent item: read as empty (never changed)
_ABSENT: Any = object()  # a line without MARKER


class _Node:
    """One stored resource of a transfer: its tree, its key in its parent's item, its parsers."""

    def __init__(self, tree: Tree, children: Sequence[_Node]) -> None:
        self.tree = tree
        self.decl: Declaration = tree.decl
        self.name = self.decl.name
        self.key = collection_key(self.decl)
        self.children = tuple(children)
        self.leaf = not self.children
        self.keys = tuple(child.key for child in self.children)
        self.no_kids: tuple[Sequence[Item], ...] = tuple(() for _ in self.children)  # shared: never changed
        try:
            self.shape = _FastShape(self.decl)
        except ValueError as exc:
            raise TransferError(str(exc)) from None

    def walk(self) -> Iterable[_Node]:
        """Yield this node, then every node below it."""
        yield self
        for child in self.children:
            yield from child.walk()

    # -- export --

    def attach(self, doc: dict[str, Any], kids: Sequence[Sequence[Item]], counts: dict[str, int]) -> dict[str, Any]:
        """Put the items under `doc` into it, one array per child resource; count them."""
        for child, items in zip(self.children, kids, strict=True):
            if not items:
                doc[child.key] = []
                continue
            counts[child.name] += len(items)
            if child.leaf:
                doc[child.key] = [item for item, _ in items]
            else:
                doc[child.key] = [child.attach(item, below, counts) for item, below in items]  # type: ignore[arg-type]
        return doc

    # -- import --

    def parse(self, doc: Any, plain: bool, parent_id: Any = None, prefix: str = "") -> Item:
        """Validate one item and those under it; return it as (row, kids) for the store.

        Every line goes through here: an item with no child items (most of them)
        returns after one check per child resource.
        """
        arrays: list[Any] = []
        some = False
        if self.keys and type(doc) is dict:
            pop = doc.pop
            for key in self.keys:
                items = pop(key, _NONE_LIST)
                if type(items) is not list:
                    raise TransferError(f"{prefix}{key}: must be an array")
                if items:
                    some = True
                arrays.append(items)
        row = (self.shape.row(doc, parent_id) if plain and type(doc) is dict else None) or parse_item(
            self.decl, doc, parent_id, prefix
        )
        if not some:
            return row, self.no_kids
        own_id = row["id"]
        kids: list[list[Item]] = []
        for child, items in zip(self.children, arrays, strict=True):
            if not items:
                kids.append([])
            elif child.leaf:
                shape, decl, key = child.shape, child.decl, child.key
                out: list[Item] = []
                for i, item in enumerate(items):
                    fast = shape.row(item, own_id) if plain and type(item) is dict else None
                    out.append((fast or parse_item(decl, item, own_id, f"{prefix}{key}[{i}]."), ()))
                kids.append(out)
            else:
                kids.append(
                    [child.parse(item, plain, own_id, f"{prefix}{child.key}[{i}].") for i, item in enumerate(items)]
                )
        return row, tuple(kids)

    def count(self, items: Sequence[Item], counts: dict[str, int]) -> None:
        """Add the items and everything under them to `counts`, per resource."""
        counts[self.name] += len(items)
        for at, child in enumerate(self.children):
            if child.leaf:
                counts[child.name] += sum(len(kids[at]) for _, kids in items)
            else:
                child.count([item for _, kids in items for item in kids[at]], counts)

    def holds(self, item: Item, resource: str, id: Any, parent_id: Any) -> bool:
        """Return whether `item`, or an item under it, is the row `id` of `resource` (under `parent_id`)."""
        row, kids = item
        if self.name == resource and row["id"] == id:
            if parent_id is None or row.get(self.decl.parent_field or "") == parent_id:
                return True
        return any(
            child.holds(below, resource, id, parent_id)
            for child, items in zip(self.children, kids, strict=False)
            for below in items
        )


def _plan(resources: Iterable[type[Resource]] | None) -> list[_Node]:
    """Return the top-level nodes of the stored resources among `resources`: ticket first, then as mounted.

    None: the built-in resources (ticket and message). Raises TransferError for a
    set of resources that cannot be written as lines (see the module's docstring).
    """
    if resources is None:
        from .url_table import builtin_resources

        resources = builtin_resources().values()
    decls: list[Declaration] = [cls.declaration for cls in resources if cls.declaration is not None]
    names = [decl.name for decl in decls]
    for decl in decls:
        if names.count(decl.name) > 1:
            raise TransferError(f"resource {decl.name!r} is mounted twice")
        if decl.parent is not None and decl.parent.name not in names:
            raise TransferError(f"resource {decl.name!r} needs its parent {decl.parent.name!r} mounted too")

    def node(decl: Declaration) -> _Node:
        below = [d for d in decls if d.parent is not None and d.parent.name == decl.name]
        if below and scoped_ids(decl):
            raise TransferError(
                f"resource {decl.name!r}: its ids are unique only under its parent, so the rows nested under "
                f"it ({', '.join(d.name for d in below)}) cannot be told apart"
            )
        children = [node(d) for d in below]
        taken = {f.json_name for f in decl.fields}
        for child in children:
            if child.key in taken:
                raise TransferError(
                    f"resource {decl.name!r}: the array of {child.name!r} ({child.key!r}) would be named"
                    " like a field or another array"
                )
            taken.add(child.key)
        return _Node(Tree(decl, tuple(child.tree for child in children)), children)

    tops = sorted((d for d in decls if d.parent is None), key=lambda d: d.name != DEFAULT_RESOURCE)
    plan = [node(d) for d in tops]
    for top in plan:
        if MARKER in top.decl.by_json:
            raise TransferError(f"resource {top.name!r}: its field {MARKER!r} would be read as the line's resource")
    return plan


def _counts(plan: Sequence[_Node]) -> dict[str, int]:
    return {node.name: 0 for top in plan for node in top.walk()}


# -- export --


async def export_jsonl(
    store: Store,
    out: IO[bytes],
    *,
    resources: Iterable[type[Resource]] | None = None,
    progress: IO[str] | None = None,
) -> dict[str, int]:
    """Write every stored resource of `resources` as JSON Lines; return the items written per resource.

    `resources`: the mounted Resource classes (`mounted_resources`; None: the
    built-in ticket and message). Top-level items go one per line, with everything
    nested under them.
    """
    plan = _plan(resources)
    total = None
    if _isatty_or_none(progress):
        total = sum([(await store.list_rows(top.decl, ListQuery(limit=1))).count for top in plan])
    bar = Progress(progress, _unit(plan), total)
    counts = _counts(plan)
    nodes = {id(top.tree): top for top in plan}
    lines_written = 0
    async for tree, batch in store.export_rows([top.tree for top in plan], batch_size=BATCH, as_json=True):
        node = nodes[id(tree)]
        counts[node.name] += len(batch)
        lines = []
        only = node.children[0] if len(node.children) == 1 and node.children[0].leaf else None
        if only is not None and node.name == DEFAULT_RESOURCE:
            # Tickets with one kind of child (messages), every line of the common case: attach inlined.
            key, nested = only.key, 0
            for doc, (items,) in batch:
                if items:
                    nested += len(items)
                    doc[key] = [item for item, _ in items]  # type: ignore[index]  # as_json: dicts of our own
                else:
                    doc[key] = []  # type: ignore[index]
                lines.append(encode_json_text(doc))
            counts[only.name] += nested
        else:
            marked = node.name != DEFAULT_RESOURCE
            for doc, kids in batch:
                if marked:
                    doc = {MARKER: node.name, **doc}
                if node.children:
                    node.attach(doc, kids, counts)  # type: ignore[arg-type]
                lines.append(encode_json_text(doc))
        lines.append("")
        out.write("\n".join(lines).encode("ascii"))  # encode_json's bytes, one conversion per batch
        lines_written += len(batch)
        bar.update(lines_written)
    out.flush()
    bar.done(lines_written)
    return counts


def _unit(plan: Sequence[_Node]) -> str:
    return plan[0].name + "s" if len(plan) == 1 else "lines"


def _isatty_or_none(stream: IO[str] | None) -> bool:
    return stream is not None and _isatty(stream)


# -- import --


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


# One decoder for every line (json.loads with an option builds a new one per call).
_DECODER = json.JSONDecoder(parse_constant=_refuse_constant)


def _decode_line(text: str) -> Any:
    """Decode one line: raw_decode, then `decode` only for leading or trailing text (and its error)."""
    try:
        doc, end = _DECODER.raw_decode(text)
    except json.JSONDecodeError:
        return _DECODER.decode(text)  # leading whitespace, or the precise error
    if end != len(text) and text[end:].strip(" \t\n\r"):  # JSON's own whitespace, as `decode` skips
        return _DECODER.decode(text)  # raises: extra data
    return doc


def _reason(errors: Mapping[str, str], prefix: str = "") -> str:
    return "; ".join(f"{prefix}{name}: {why}" for name, why in sorted(errors.items()))


def parse_item(decl: Declaration, doc: Any, parent_id: Any = None, prefix: str = "") -> dict[str, Any]:
    """Validate one exported item as POST would, plus its kept id and timestamps; return a store row.

    Raises TransferError(reason) naming every bad field.
    """
    if not isinstance(doc, dict):
        raise TransferError(f"{prefix or 'the line'} must be a JSON object".lstrip())
    body = dict(doc)
    kept: dict[str, Any] = {}
    errors: dict[str, str] = {}
    for f in decl.fields:
        if f.writable:
            continue
        if f.settable_on_create and f.type is str:
            # A string id: POST requires it and checks its pattern (parse_create below).
            if f.json_name not in body:
                errors[f.json_name] = "required field (an import keeps ids and timestamps)"
            continue
        value = body.pop(f.json_name, MISSING)
        if f.name == decl.parent_field:
            if value is not MISSING and (type(value) is not type(parent_id) or value != parent_id):
                errors[f.json_name] = f"must be the id of the item it is listed under ({parent_id}) or omitted"
            kept[f.name] = parent_id
        elif value is MISSING:
            errors[f.json_name] = "required field (an import keeps ids and timestamps)"
        elif f.name in TIMESTAMP_FIELDS:
            normalised = rfc3339_utc(value) if isinstance(value, str) else None
            if normalised is None:
                errors[f.json_name] = "must be an RFC 3339 timestamp, like 2026-11-27T20:11:02.123456Z"
            else:
                kept[f.name] = normalised
        else:
            try:
                kept[f.name] = f.check(value)
            except ValueError as exc:
                errors[f.json_name] = str(exc)
    try:
        values = decl.parse_create(body)
    except InvalidRequest as exc:
        for name, why in (exc.errors or {"body": exc.message}).items():
            errors.setdefault(name, why)
        values = {}
    if errors:
        raise TransferError(_reason(errors, prefix))
    created, updated = kept.get("created_at"), kept.get("updated_at")
    if created is not None and updated is not None and updated < created:
        raise TransferError(f"{prefix}updatedAt: must not be earlier than createdAt")
    values.update(kept)
    return values


def rfc3339_utc(value: str) -> str | None:
    """Return an RFC 3339 timestamp as the store writes them (UTC, microseconds, `Z`); None if it is not one.

    Any offset (`Z`, `+01:00`), `t`/`z` in either case, and 0 to 9 fraction digits
    (beyond microseconds they are dropped) are accepted, as other tools write them.
    """
    if _kept_timestamp(value):
        return value
    found = _RFC3339.match(value)
    if found is None:
        return None
    year, month, day, hour, minute, second, fraction, zone = found.groups()
    try:
        if zone in ("Z", "z"):
            offset = UTC
        else:
            sign = -1 if zone[0] == "-" else 1
            offset = timezone(sign * timedelta(hours=int(zone[1:3]), minutes=int(zone[4:6])))
        moment = datetime(
            int(year),
            int(month),
            int(day),
            int(hour),
            int(minute),
            int(second),
            int((fraction or "").ljust(6, "0")[:6]),
            tzinfo=offset,
        ).astimezone(UTC)
    except (ValueError, OverflowError):  # no such date or time (a leap second, month 13), or before year 1
        return None
    return (
        f"{moment.year:04d}-{moment.month:02d}-{moment.day:02d}T"
        f"{moment.hour:02d}:{moment.minute:02d}:{moment.second:02d}.{moment.microsecond:06d}Z"
    )


def _kept_timestamp(value: str) -> bool:
    """Return whether `value` is a timestamp as the store writes them (RFC 3339 UTC, microseconds)."""
    if _ANY_MONTH_TIMESTAMP.match(value):
        return True
    if not _TIMESTAMP.match(value):
        return False
    try:
        datetime.fromisoformat(value[:-1])
    except ValueError:
        return False
    return True


class _FastShape:
    """A quick check of an item that has every field and plain values.

    Accepts only what `parse_item` accepts; anything else (a missing or unknown
    field, a wrong value, text the fast checks cannot vouch for) returns None and
    goes through `parse_item`, which says exactly what is wrong. The fields are
    grouped by the check they get, so each loop makes one kind of check (the
    import parses every line through here).
    """

    def __init__(self, decl: Declaration) -> None:
        from .declaration import INT64_MAX, INT64_MIN

        self.keys = frozenset(f.json_name for f in decl.fields)
        self.keys_without_parent = frozenset(f.json_name for f in decl.fields if f.name != decl.parent_field)
        self.parent: tuple[str, str] | None = None
        # (json name, name, low, high, nullable): an int in [low, high]; text of that length.
        self.ints: list[tuple[str, str, int, int, bool]] = []
        self.texts: list[tuple[str, str, int, int, bool]] = []
        self.choices: list[tuple[str, str, tuple[Any, ...], bool]] = []  # one of these values
        self.times: list[tuple[str, str]] = []  # kept timestamps
        self.patterns: list[tuple[str, re.Pattern[str]]] = []  # text that must also match (string ids)
        for f in decl.fields:
            if f.pattern is not None:
                self.patterns.append((f.name, re.compile(f.pattern)))
            if f.name == decl.parent_field:
                self.parent = (f.json_name, f.name)
            elif f.name in TIMESTAMP_FIELDS and not f.writable:
                self.times.append((f.json_name, f.name))
            elif not f.writable and not f.settable_on_create and f.name != "id":
                raise ValueError(f"{decl.name}.{f.name}: an import does not know how to keep this field")
            elif f.choices is not None:
                self.choices.append((f.json_name, f.name, tuple(f.choices), f.nullable))
            elif f.type is int:
                low = f.min if f.min is not None else INT64_MIN
                high = f.max if f.max is not None else INT64_MAX
                self.ints.append((f.json_name, f.name, low, high, f.nullable))
            else:
                low = f.min if f.min is not None else 0
                high = f.max if f.max is not None else 1 << 62
                self.texts.append((f.json_name, f.name, low, high, f.nullable))

    def row(self, doc: dict[str, Any], parent_id: Any) -> dict[str, Any] | None:
        keys = doc.keys()
        if keys != self.keys and keys != self.keys_without_parent:
            return None
        row: dict[str, Any] = {}
        if self.parent is not None:
            json_name, name = self.parent
            value = doc.get(json_name, parent_id)
            if type(value) is not type(parent_id) or value != parent_id:
                return None
            row[name] = parent_id
        for json_name, name, low, high, nullable in self.ints:
            value = doc[json_name]
            if value is None:
                if not nullable:
                    return None
            elif type(value) is not int or not low <= value <= high:
                return None
            row[name] = value
        for json_name, name, low, high, nullable in self.texts:
            value = doc[json_name]
            if value is None:
                if not nullable:
                    return None
            elif type(value) is not str or not low <= len(value) <= high:
                return None
            row[name] = value
        for json_name, name, choices, nullable in self.choices:
            value = doc[json_name]
            if value is None:
                if not nullable:
                    return None
            elif type(value) is not str or value not in choices:
                return None
            row[name] = value
        for json_name, name in self.times:
            value = doc[json_name]
            if type(value) is not str or not _kept_timestamp(value):
                return None
            row[name] = value
        if self.patterns:
            for name, pattern in self.patterns:
                value = row[name]
                if value is not None and pattern.fullmatch(value) is None:
                    return None
        if row.get("updated_at", "") < row.get("created_at", ""):
            return None
        return row


class _Batches:
    """Read, validate and batch the input lines; remember where each id came from."""

    def __init__(self, lines: Iterable[bytes], plan: Sequence[_Node], bar: Progress, size: int | None) -> None:
        self.lines = lines
        self.plan = plan
        self.tops = {top.name: top for top in plan}
        self.default = self.tops.get(DEFAULT_RESOURCE)
        self.bar = bar
        self.size = size
        self.count = 0  # lines (top-level items)
        self.counts = _counts(plan)
        # The last few batches with the line of each item: a store may read up to
        # IMPORT_LOOKAHEAD batches ahead of the one it writes, and an error names the
        # line of the id it refused (looked up only then: see line_of).
        self.recent: collections.deque[tuple[_Node, list[Item], list[int]]] = collections.deque(
            maxlen=IMPORT_LOOKAHEAD + 3
        )

    async def __aiter__(self) -> AsyncIterator[tuple[Tree, list[Item]]]:
        node: _Node | None = None
        batch: list[Item] = []
        numbers: list[int] = []  # the line of each item of the batch
        read = 0
        parse_line = self.parse_line
        for number, raw in enumerate(self.lines, 1):
            read += len(raw)
            if not raw or raw.isspace():
                continue
            top, item = parse_line(raw, number)
            if top is not node and batch:
                assert node is not None
                self._complete(node, batch, numbers)
                yield node.tree, batch
                batch, numbers = [], []
            node = top
            batch.append(item)
            numbers.append(number)
            if len(batch) >= IMPORT_BATCH:
                self._complete(node, batch, numbers)
                yield node.tree, batch
                batch, numbers = [], []
                self.bar.update(self.count, read / self.size if self.size else None)
        if batch:
            assert node is not None
            self._complete(node, batch, numbers)
            yield node.tree, batch
        self.bar.done(self.count)

    def _complete(self, node: _Node, batch: list[Item], numbers: list[int]) -> None:
        self.recent.append((node, batch, numbers))
        self.count += len(batch)
        node.count(batch, self.counts)

    def line_of(self, resource: str, id: Any, parent_id: Any = None) -> int | None:
        """Return the line of an id in the recent batches (the last one given: a repeat is the bad one)."""
        for node, batch, numbers in reversed(self.recent):
            for item, number in zip(reversed(batch), reversed(numbers), strict=True):
                if node.holds(item, resource, id, parent_id):
                    return number
        return None

    def parse_line(self, raw: bytes, number: int) -> tuple[_Node, Item]:
        try:
            try:
                text = raw.decode("utf-8")
            except UnicodeDecodeError:
                raise TransferError("not valid UTF-8") from None
            try:
                doc = _decode_line(text)
            except ValueError as exc:
                detail = exc.msg if isinstance(exc, json.JSONDecodeError) else str(exc)
                raise TransferError(f"malformed JSON: {detail}") from None
            except RecursionError:
                raise TransferError("malformed JSON: nested too deeply") from None
            if not isinstance(doc, dict):
                raise TransferError("must be a JSON object (one item per line)")
            marker = doc.pop(MARKER, _ABSENT)
            top = self.default if marker is _ABSENT and self.default is not None else self._top(marker)
            # JSON text holds NUL characters and lone surrogates only as \u escapes: without
            # any `\u0000` or `\ud...`, every string is text a store keeps exactly.
            plain = b"\\u" not in raw or (b"\\u0000" not in raw and b"\\ud" not in raw and b"\\uD" not in raw)
            return top, top.parse(doc, plain)
        except TransferError as exc:
            raise TransferError(f"line {number}: {exc}") from None

    def _top(self, marker: Any) -> _Node:
        """Return the top-level resource a line's marker names (none: a ticket)."""
        if marker is _ABSENT:
            if self.default is None:
                raise TransferError(f"{MARKER}: required field ({DEFAULT_RESOURCE} is not mounted)")
            return self.default
        top = self.tops.get(marker) if isinstance(marker, str) else None
        if top is None:
            taken = ", ".join(self.tops)
            raise TransferError(
                f"{MARKER}: {json.dumps(marker)} is not a mounted top-level resource (mounted: {taken})"
            )
        return top


async def import_jsonl(
    store: Store,
    lines: Iterable[bytes],
    *,
    replace: bool = False,
    resources: Iterable[type[Resource]] | None = None,
    progress: IO[str] | None = None,
    size: int | None = None,
    exclusive: bool = False,
) -> dict[str, int]:
    """Validate and store every line in one transaction; return the items imported per resource.

    `resources`: the mounted Resource classes (`mounted_resources`; None: the
    built-in ticket and message); `size` (bytes of input, when known) lets the
    progress bar show an ETA; `exclusive`: the caller uses `store` for nothing else
    meanwhile (Store.import_rows). Raises TransferError (`line N: reason`) when a
    line is invalid or an id is taken; the store then has nothing of this run.
    """
    plan = _plan(resources)
    bar = Progress(progress, _unit(plan))
    batches = _Batches(lines, plan, bar, size)
    try:
        await store.import_rows([top.tree for top in plan], batches, replace=replace, exclusive=exclusive)
    except AlreadyExists as exc:
        where = batches.line_of(exc.resource, exc.id, exc.parent_id)
        decl = next((node.decl for top in plan for node in top.walk() if node.name == exc.resource), None)
        label = decl.label if decl is not None else exc.resource
        under = ""
        if exc.parent_id is not None and decl is not None and decl.parent is not None:
            under = f" under {decl.parent.label.lower()} {exc.parent_id}"
        top_level = exc.resource in batches.tops
        hint = "" if replace or not top_level else " (use --replace to replace existing items)"
        reason = f"{label.lower()} id {exc.id}{under} already exists or is given twice{hint}"
        raise TransferError(f"line {where}: {reason}" if where else reason) from None
    return batches.counts


def summary(counts: Mapping[str, int]) -> str:
    """Return `3 ticket(s), 4 message(s) and 1 note(s)` for the counts of an export or import."""
    said = [f"{count} {name}(s)" for name, count in counts.items()]
    return " and ".join([", ".join(said[:-1]), said[-1]]) if len(said) > 1 else "".join(said) or "nothing"


def input_size(stream: IO[bytes]) -> int | None:
    """Return the size of a regular file being read (for the ETA), else None."""
    try:
        info = os.fstat(stream.fileno())
    except (OSError, AttributeError, ValueError):
        return None
    import stat

    return info.st_size if stat.S_ISREG(info.st_mode) else None


def progress_stream() -> IO[str] | None:
    """Return stderr when it is a terminal (the bar is drawn there), else None."""
    return sys.stderr if _isatty(sys.stderr) else None

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
from collections.abc import AsyncIterator, Iterable, Mapping, Sequence
from typing import IO, TYPE_CHECKING, Any

from . import metrics
from .codec import encode_json_text
from .listing import ListQuery
from .progress import Progress, isatty
from .store.base import IMPORT_LOOKAHEAD, AlreadyExists, Item, Store, Tree
from .transfer_item import TransferError, parse_item
from .transfer_plan import DEFAULT_RESOURCE, MARKER, TransferNode, plan_for, zero_counts

if TYPE_CHECKING:
    from .resource import Resource

__all__ = [
    "BATCH",
    "IMPORT_BATCH",
    "TransferError",
    "export_jsonl",
    "import_jsonl",
    "input_size",
    "mounted_resources",
    "parse_item",
    "summary",
]

BATCH = 1000  # top-level items per store call of an export: bounded memory, few round trips
# Top-level items per store call of an import. Larger than an export's: the store writes each
# batch on a thread of its own, and each hand-off between that thread and the parser
# costs both of them a wait for the GIL (batches of 1,000 against 5,000: docs/benchmarks.md,
# Import).
IMPORT_BATCH = 5000


def mounted_resources(settings: Any) -> list[type[Resource]]:
    """Return the Resource classes the daemon mounts for these settings (TransferError naming a bad one)."""
    from .url_table import mounted_resources as mounted

    try:
        return mounted(settings)[0]
    except ValueError as exc:
        raise TransferError(str(exc)) from None


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
    plan = plan_for(resources)
    total = None
    if _isatty_or_none(progress):
        total = sum([(await store.list_rows(top.decl, ListQuery(limit=1))).count for top in plan])
    bar = Progress(progress, _unit(plan), total)
    counts = zero_counts(plan)
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


def _unit(plan: Sequence[TransferNode]) -> str:
    return plan[0].name + "s" if len(plan) == 1 else "lines"


def _isatty_or_none(stream: IO[str] | None) -> bool:
    return stream is not None and isatty(stream)


# -- import --


_ABSENT: Any = object()  # a line without MARKER


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


class _Batches:
    """Read, validate and batch the input lines; remember where each id came from."""

    def __init__(self, lines: Iterable[bytes], plan: Sequence[TransferNode], bar: Progress, size: int | None) -> None:
        self.lines = lines
        self.plan = plan
        self.tops = {top.name: top for top in plan}
        self.default = self.tops.get(DEFAULT_RESOURCE)
        self.bar = bar
        self.size = size
        self.count = 0  # lines (top-level items)
        self.counts = zero_counts(plan)
        # The last few batches with the line of each item: a store may read up to
        # IMPORT_LOOKAHEAD batches ahead of the one it writes, and an error names the
        # line of the id it refused (looked up only then: see line_of).
        self.recent: collections.deque[tuple[TransferNode, list[Item], list[int]]] = collections.deque(
            maxlen=IMPORT_LOOKAHEAD + 3
        )

    async def __aiter__(self) -> AsyncIterator[tuple[Tree, list[Item]]]:
        node: TransferNode | None = None
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

    def _complete(self, node: TransferNode, batch: list[Item], numbers: list[int]) -> None:
        self.recent.append((node, batch, numbers))
        self.count += len(batch)
        before = sum(self.counts.values())
        node.count(batch, self.counts)
        metrics.import_rows(sum(self.counts.values()) - before)  # validated and handed to the store

    def line_of(self, resource: str, id: Any, parent_id: Any = None) -> int | None:
        """Return the line of an id in the recent batches (the last one given: a repeat is the bad one)."""
        for node, batch, numbers in reversed(self.recent):
            for item, number in zip(reversed(batch), reversed(numbers), strict=True):
                if node.holds(item, resource, id, parent_id):
                    return number
        return None

    def parse_line(self, raw: bytes, number: int) -> tuple[TransferNode, Item]:
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

    def _top(self, marker: Any) -> TransferNode:
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
    plan = plan_for(resources)
    bar = Progress(progress, _unit(plan))
    batches = _Batches(lines, plan, bar, size)
    metrics.import_started()
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
    finally:
        metrics.import_ended()
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

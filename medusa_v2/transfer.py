"""Bulk export and import: JSON Lines, one ticket per line with its messages.

The format is the API's own representation, so a file is readable, diffable and
usable by other tools:

    {"id":1,"title":"...","description":"","state":"open","priority":3,"assignee":null,
     "createdAt":"2026-11-27T20:11:02.123456Z","updatedAt":"...","messages":[{"id":7,
     "ticketId":1,"author":"ann","body":"...","createdAt":"...","updatedAt":"..."}]}

Each ticket (and each message) is exactly what `GET` returns for it, in the same
bytes (compact, ASCII-escaped JSON), plus the `messages` array. Ids and timestamps
are kept: export from one store and import into another is a migration, and an
export is a backup.

Import validates every line as POST would (the resource declarations), plus what
POST does not accept but a restore needs: `id` (a positive 64-bit integer),
`createdAt` and `updatedAt` (RFC 3339 UTC with microseconds, `...Z`, as the store
writes them) are required; a message's `ticketId` may be omitted, or must be its
ticket's id. The first bad line stops the import with `line N: reason`; the whole
run is one transaction, so nothing of it is applied. Exit statuses of the commands:
0 done, 1 the data or the store refused (bad line, id conflict, store unavailable),
2 usage or config.ini errors.
"""

from __future__ import annotations

import collections
import json
import os
import re
import sys
import time
from collections.abc import AsyncIterator, Iterable, Mapping
from datetime import datetime
from typing import IO, Any

from .declaration import MISSING, Declaration
from .errors import ApiError
from .handler import encode_json_text
from .listing import ListQuery
from .resources.message import MESSAGE
from .resources.ticket import TICKET
from .store.base import IMPORT_LOOKAHEAD, AlreadyExists, Store

BATCH = 1000  # tickets per store call of an export: bounded memory, few round trips
# Tickets per store call of an import. Larger than an export's: the store writes each
# batch on a thread of its own, and each hand-off between that thread and the parser
# costs both of them a wait for the GIL (1M tickets: 26.6 s to parse and insert in
# batches of 1,000, 21.9 s in batches of 5,000; parsing alone takes 16.4 s).
IMPORT_BATCH = 5000
TIMESTAMP_FIELDS = frozenset({"created_at", "updated_at"})
_TIMESTAMP = re.compile(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{6}Z\Z", re.ASCII)
# A timestamp valid in any month (days 1-28, year 1 on): taken without a datetime
# (2.4M of them at 1M tickets); other days are checked by one (_kept_timestamp).
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


# -- export --


async def export_jsonl(
    store: Store,
    out: IO[bytes],
    *,
    decl: Declaration = TICKET,
    child: Declaration | None = MESSAGE,
    progress: IO[str] | None = None,
) -> tuple[int, int]:
    """Write every row of `decl` (with its children) as JSON Lines; return (rows, children)."""
    total = (await store.list_rows(decl, ListQuery(limit=1))).count if _isatty_or_none(progress) else None
    bar = Progress(progress, decl.name + "s", total)
    rows = children = 0
    async for batch in store.export_rows(decl, child, batch_size=BATCH, as_json=True):
        lines = []
        for doc, items in batch:
            if child is not None:
                doc["messages"] = items
                children += len(items)
            lines.append(encode_json_text(doc))
        lines.append("")
        out.write("\n".join(lines).encode("ascii"))  # encode_json's bytes, one conversion per batch
        rows += len(batch)
        bar.update(rows)
    out.flush()
    bar.done(rows)
    return rows, children


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


def parse_item(decl: Declaration, doc: Any, parent_id: int | None = None, prefix: str = "") -> dict[str, Any]:
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
        value = body.pop(f.json_name, MISSING)
        if f.name == decl.parent_field:
            if value is not MISSING and (type(value) is not int or value != parent_id):
                errors[f.json_name] = f"must be the id of the item it is listed under ({parent_id}) or omitted"
            kept[f.name] = parent_id
        elif value is MISSING:
            errors[f.json_name] = "required field (an import keeps ids and timestamps)"
        elif f.name in TIMESTAMP_FIELDS:
            if not (isinstance(value, str) and _kept_timestamp(value)):
                errors[f.json_name] = "must be RFC 3339 UTC with microseconds, like 2026-11-27T20:11:02.123456Z"
            else:
                kept[f.name] = value
        else:
            try:
                kept[f.name] = f.check(value)
            except ValueError as exc:
                errors[f.json_name] = str(exc)
    try:
        values = decl.parse_create(body)
    except ApiError as exc:
        errors.update(exc.errors or {"body": exc.message})
        values = {}
    if errors:
        raise TransferError(_reason(errors, prefix))
    created, updated = kept.get("created_at"), kept.get("updated_at")
    if created is not None and updated is not None and updated < created:
        raise TransferError(f"{prefix}updatedAt: must not be earlier than createdAt")
    values.update(kept)
    return values


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
        for f in decl.fields:
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

    def row(self, doc: dict[str, Any], parent_id: int | None) -> dict[str, Any] | None:
        keys = doc.keys()
        if keys != self.keys and keys != self.keys_without_parent:
            return None
        row: dict[str, Any] = {}
        if self.parent is not None:
            json_name, name = self.parent
            value = doc.get(json_name, parent_id)
            if type(value) is not int or value != parent_id:
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
        if row.get("updated_at", "") < row.get("created_at", ""):
            return None
        return row


class _Batches:
    """Read, validate and batch the input lines; remember where each id came from."""

    def __init__(
        self, lines: Iterable[bytes], decl: Declaration, child: Declaration | None, bar: Progress, size: int | None
    ) -> None:
        self.lines = lines
        self.decl = decl
        self.child = child
        self.bar = bar
        self.size = size
        self.count = 0
        self.children = 0
        # The last few batches with the line of each item: a store may read up to
        # IMPORT_LOOKAHEAD batches ahead of the one it writes, and an error names the
        # line of the id it refused (looked up only then: see line_of).
        self.recent: collections.deque[tuple[list[tuple[dict[str, Any], list[dict[str, Any]]]], list[int]]] = (
            collections.deque(maxlen=IMPORT_LOOKAHEAD + 3)
        )
        self.shape = _FastShape(decl)
        self.child_shape = _FastShape(child) if child is not None else None

    async def __aiter__(self) -> AsyncIterator[list[tuple[dict[str, Any], list[dict[str, Any]]]]]:
        batch: list[tuple[dict[str, Any], list[dict[str, Any]]]] = []
        numbers: list[int] = []  # the line of each item of the batch
        read = 0
        parse_line = self.parse_line
        for number, raw in enumerate(self.lines, 1):
            read += len(raw)
            if not raw or raw.isspace():
                continue
            batch.append(parse_line(raw, number))
            numbers.append(number)
            if len(batch) >= IMPORT_BATCH:
                self._complete(batch, numbers)
                yield batch
                batch, numbers = [], []
                self.bar.update(self.count, read / self.size if self.size else None)
        if batch:
            self._complete(batch, numbers)
            yield batch
        self.bar.done(self.count)

    def _complete(self, batch: list[tuple[dict[str, Any], list[dict[str, Any]]]], numbers: list[int]) -> None:
        self.recent.append((batch, numbers))
        self.count += len(batch)
        self.children += sum(len(items) for _, items in batch)

    def line_of(self, resource: str, id: int) -> int | None:
        """Return the line of an id in the recent batches (the last one given: a repeat is the bad one)."""
        is_row = resource == self.decl.name
        if not is_row and (self.child is None or resource != self.child.name):
            return None
        for batch, numbers in reversed(self.recent):
            for (row, items), number in zip(reversed(batch), reversed(numbers), strict=True):
                if row["id"] == id if is_row else any(item["id"] == id for item in items):
                    return number
        return None

    def parse_line(self, raw: bytes, number: int) -> tuple[dict[str, Any], list[dict[str, Any]]]:
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
            items: Any = []
            if self.child is not None:
                items = doc.pop("messages", [])
                if not isinstance(items, list):
                    raise TransferError("messages: must be an array")
            # JSON text holds NUL characters and lone surrogates only as \u escapes: without
            # any `\u0000` or `\ud...`, every string is text a store keeps exactly.
            plain = b"\\u" not in raw or (b"\\u0000" not in raw and b"\\ud" not in raw and b"\\uD" not in raw)
            row = (self.shape.row(doc, None) if plain else None) or parse_item(self.decl, doc)
            if self.child is None or not items:
                return row, []
            assert self.child_shape is not None
            out = []
            for i, item in enumerate(items):
                fast = self.child_shape.row(item, row["id"]) if plain and isinstance(item, dict) else None
                out.append(fast or parse_item(self.child, item, row["id"], f"messages[{i}]."))
            return row, out
        except TransferError as exc:
            raise TransferError(f"line {number}: {exc}") from None


async def import_jsonl(
    store: Store,
    lines: Iterable[bytes],
    *,
    replace: bool = False,
    decl: Declaration = TICKET,
    child: Declaration | None = MESSAGE,
    progress: IO[str] | None = None,
    size: int | None = None,
    exclusive: bool = False,
) -> tuple[int, int]:
    """Validate and store every line in one transaction; return (rows, children).

    `size` (bytes of input, when known) lets the progress bar show an ETA;
    `exclusive`: the caller uses `store` for nothing else meanwhile (Store.import_rows). Raises
    TransferError (`line N: reason`) when a line is invalid or an id is taken; the
    store then has nothing of this run.
    """
    bar = Progress(progress, decl.name + "s")
    batches = _Batches(lines, decl, child, bar, size)
    try:
        await store.import_rows(decl, child, batches, replace=replace, exclusive=exclusive)
    except AlreadyExists as exc:
        where = batches.line_of(exc.resource, exc.id or 0)
        label = decl.label if exc.resource == decl.name else child.label if child is not None else exc.resource
        hint = "" if replace or exc.resource != decl.name else " (use --replace to replace existing items)"
        reason = f"{label.lower()} id {exc.id} already exists or is given twice{hint}"
        raise TransferError(f"line {where}: {reason}" if where else reason) from None
    return batches.count, batches.children


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

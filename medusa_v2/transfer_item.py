"""One item of a transfer file: validated as POST would, plus the id and timestamps an import keeps.

`parse_item` says exactly what is wrong with an item; `FastShape` accepts, much
faster, only items `parse_item` would accept (every line of an import goes through
it first). Timestamps are kept normalised to UTC with microseconds (`rfc3339_utc`).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

from .declaration import MISSING, Declaration
from .invalid import InvalidRequest

TIMESTAMP_FIELDS = frozenset({"created_at", "updated_at"})
_TIMESTAMP = re.compile(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{6}Z\Z", re.ASCII)
_RFC3339 = re.compile(
    r"(\d{4})-(\d{2})-(\d{2})[Tt](\d{2}):(\d{2}):(\d{2})(?:\.(\d{1,9}))?([Zz]|[+-]\d{2}:\d{2})\Z", re.ASCII
)
# A timestamp valid in any month (days 1-28, year 1 on): taken without a datetime
# (every row has two); other days are checked by one (kept_timestamp).
_ANY_MONTH_TIMESTAMP = re.compile(
    r"(?!0000)\d{4}-(?:0[1-9]|1[0-2])-(?:0[1-9]|1\d|2[0-8])T(?:[01]\d|2[0-3]):[0-5]\d:[0-5]\d\.\d{6}Z\Z", re.ASCII
)


class TransferError(Exception):
    """An import or export cannot go on; the message says where and why (one line)."""


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
    if kept_timestamp(value):
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


def kept_timestamp(value: str) -> bool:
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


class FastShape:
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
            if type(value) is not str or not kept_timestamp(value):
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

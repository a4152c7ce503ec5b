"""Resource declarations: one table of fields drives validation, names and whitelists.

A `Declaration` lists a resource's fields once; from it come request validation
(POST, PUT, PATCH), the JSON (camelCase) names, the PATCH acceptance set, the sort
and filter whitelists, the search fields and, later, the API description.
Adding a field to a resource is one `Field(...)` line.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from .casing import to_camel
from .invalid import InvalidRequest

INT64_MAX = 2**63 - 1
INT64_MIN = -(2**63)


class _Missing:
    def __repr__(self) -> str:
        return "MISSING"


MISSING: Any = _Missing()


@dataclass(frozen=True, slots=True)
class Field:
    """One field of a resource: its type, bounds and what clients may do with it."""

    name: str  # snake_case; also the store's column name
    type: type  # int or str
    required: bool = False
    default: Any = MISSING  # MISSING: no default (required fields, read-only ones)
    nullable: bool = False
    min: int | None = None  # length for str, value for int
    max: int | None = None
    choices: tuple[str, ...] | None = None
    writable: bool = True  # False: read-only, refused on POST/PUT, ignored on PATCH
    settable_on_create: bool = False  # read-only field a client may choose on POST (ids)
    sortable: bool = False
    filter: str | None = None  # None, "one" (exact value) or "many" (comma list)
    searchable: bool = False
    pattern: str | None = None  # str fields: the whole value must match (identifiers: slugs)
    json_name: str = ""
    _regex: re.Pattern[str] | None = field(default=None, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if not self.json_name:
            object.__setattr__(self, "json_name", to_camel(self.name))
        if self.type not in (int, str):
            raise TypeError(f"field {self.name}: unsupported type {self.type!r}")
        if self.pattern is not None:
            if self.type is not str:
                raise TypeError(f"field {self.name}: a pattern is for str fields")
            object.__setattr__(self, "_regex", re.compile(self.pattern))

    @property
    def dash_name(self) -> str:
        """Return the dash-case name used in query parameters (`created-at`)."""
        return self.name.replace("_", "-")

    def check(self, value: Any) -> Any:
        """Return `value` if it is valid for this field, else raise ValueError(reason)."""
        if value is None:
            if self.nullable:
                return None
            raise ValueError("must not be null")
        if self.type is int:
            return self._check_int(value)
        return self._check_str(value)

    def _check_int(self, value: Any) -> int:
        value = json_integer(value)
        if value is None:
            raise ValueError("must be an integer")
        low = INT64_MIN if self.min is None else self.min
        high = INT64_MAX if self.max is None else self.max
        if not low <= value <= high:
            raise ValueError(f"must be between {low} and {high}")
        return value

    def _check_str(self, value: Any) -> str:
        if not isinstance(value, str):
            raise ValueError("must be a string")
        check_text(value)
        if self.choices is not None:
            if value not in self.choices:
                raise ValueError("must be one of " + ", ".join(self.choices))
            return value
        low = 0 if self.min is None else self.min
        if len(value) < low:
            raise ValueError("must not be empty" if low == 1 else f"must be at least {low} characters")
        if self.max is not None and len(value) > self.max:
            raise ValueError(f"must be at most {self.max} characters")
        if self._regex is not None and self._regex.fullmatch(value) is None:
            raise ValueError(f"must match {self.pattern}")
        return value

    def parse_id(self, raw: str) -> Any:
        """Return a path identifier as this (id) field's value, else raise ValueError(reason)."""
        if self.type is int:
            value = text_integer(raw, 1, INT64_MAX)
            if value is None:
                raise ValueError("must be a positive 64-bit integer")
            return value
        return self.check(raw)

    def parse_query_value(self, raw: str) -> Any:
        """Convert a query-string value to this field's type (ValueError when invalid)."""
        if self.type is int:
            text = raw.strip()
            if not text.lstrip("-").isdigit() or not text.isascii():
                raise ValueError("must be an integer")
            return self.check(int(text))
        return self.check(raw)


def json_integer(value: Any) -> int | None:
    """Return a JSON number that is an integer as an int (5 and 5.0 alike), else None.

    JSON Schema counts 5.0 as an integer, and so does the OpenAPI document; 5.5 is
    not one, nor is a boolean (an int subclass in Python).
    """
    if type(value) is int:
        return value
    if type(value) is float and value.is_integer():
        return int(value)
    return None


_NUMBER = re.compile(r"[0-9]+(?:\.[0-9]+)?(?:[eE][+-]?[0-9]+)?")


def text_integer(raw: str, low: int, high: int) -> int | None:
    """Return a URL's number from `low` to `high` as an int, else None.

    The OpenAPI document types path identifiers, `page` and `limit` as integers, and
    JSON Schema counts 77.0 (or 7.7e1) as one, as `json_integer` does in bodies.
    """
    if raw.isascii() and raw.isdigit() and len(raw) <= 19:
        value = int(raw)
        return value if low <= value <= high else None
    if not raw.isascii() or len(raw) > 64 or _NUMBER.fullmatch(raw) is None:
        return None
    number = Decimal(raw)
    # Range first: int() of a huge exponent would expand it digit by digit.
    if not low <= number <= high or number != number.to_integral_value():
        return None
    return int(number)


def check_text(value: str) -> None:
    """Refuse text that no store can keep exactly: NUL characters and lone surrogates."""
    if "\x00" in value:
        raise ValueError("must not contain NUL characters")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise ValueError("must be valid Unicode (no lone surrogates)") from None


@dataclass(frozen=True)
class Declaration:
    """A resource's name, fields and parent; derived whitelists are computed once."""

    name: str
    fields: tuple[Field, ...]
    parent: Declaration | None = None
    parent_field: str | None = None  # the field holding the parent's id (`ticket_id`)
    label: str = ""  # human name in messages ("Ticket")
    by_name: Mapping[str, Field] = field(init=False, repr=False)
    by_json: Mapping[str, Field] = field(init=False, repr=False)
    sort_fields: Mapping[str, Field] = field(init=False, repr=False)
    filter_fields: tuple[Field, ...] = field(init=False, repr=False)
    search_fields: tuple[Field, ...] = field(init=False, repr=False)
    # (store name, JSON name) of every field, in declared order: to_json's table.
    json_pairs: tuple[tuple[str, str], ...] = field(init=False, repr=False, compare=False)
    column_order: tuple[str, ...] = field(init=False, repr=False, compare=False)  # store names, declared order
    json_names: tuple[str, ...] = field(init=False, repr=False, compare=False)  # JSON names, declared order

    def __post_init__(self) -> None:
        names = [f.name for f in self.fields]
        if len(set(names)) != len(names):
            raise ValueError(f"resource {self.name}: duplicate field names")
        if "id" not in names:
            raise ValueError(f"resource {self.name}: an 'id' field is required")
        ident = self.fields[names.index("id")]
        if ident.writable or ident.nullable:
            raise ValueError(f"resource {self.name}: the 'id' field is read-only and never null")
        if ident.type is str and (ident.pattern is None or not ident.settable_on_create):
            raise ValueError(
                f"resource {self.name}: a string 'id' declares its pattern and is chosen on create "
                "(pattern=..., settable_on_create=True)"
            )
        set_ = object.__setattr__
        set_(self, "label", self.label or self.name.replace("-", " ").capitalize())
        set_(self, "by_name", {f.name: f for f in self.fields})
        set_(self, "by_json", {f.json_name: f for f in self.fields})
        sort_fields: dict[str, Field] = {}
        for f in self.fields:
            if f.sortable:
                for alias in (f.name, f.json_name, f.dash_name):
                    sort_fields[alias] = f
        set_(self, "sort_fields", sort_fields)
        set_(self, "filter_fields", tuple(f for f in self.fields if f.filter))
        set_(self, "search_fields", tuple(f for f in self.fields if f.searchable))
        set_(self, "json_pairs", tuple((f.name, f.json_name) for f in self.fields))
        set_(self, "column_order", tuple(f.name for f in self.fields))
        set_(self, "json_names", tuple(f.json_name for f in self.fields))

    @property
    def id_field(self) -> Field:
        """Return the identifier field (int: assigned by the store; str: chosen by the client)."""
        return self.by_name["id"]

    @property
    def parent_column(self) -> str:
        """Return the field holding the parent's id, for the store (a nested resource's only)."""
        if self.parent_field is None:
            raise ValueError(f"resource {self.name}: no parent_field, so no parent")
        return self.parent_field

    @property
    def writable(self) -> tuple[Field, ...]:
        """Return the fields a client may write."""
        return tuple(f for f in self.fields if f.writable)

    def parse_create(self, body: Mapping[str, Any]) -> dict[str, Any]:
        """Validate a POST body; return store values (snake names) with defaults filled."""
        return self._parse_full(body, creating=True)

    def parse_replace(self, body: Mapping[str, Any]) -> dict[str, Any]:
        """Validate a PUT body: every writable field, absent optional ones defaulted."""
        return self._parse_full(body, creating=False)

    def parse_update(self, body: Mapping[str, Any]) -> dict[str, Any]:
        """Validate a PATCH body: keep writable fields, ignore the rest; all-or-nothing."""
        accepted: dict[str, Any] = {}
        errors: dict[str, str] = {}
        for key, value in body.items():
            f = self.by_json.get(key)
            if f is None or not f.writable:
                continue  # the contract: unknown and read-only fields are ignored
            try:
                accepted[f.name] = f.check(value)
            except ValueError as exc:
                errors[f.json_name] = str(exc)
        if errors:
            raise invalid(errors)
        return accepted

    def _parse_full(self, body: Mapping[str, Any], *, creating: bool) -> dict[str, Any]:
        errors: dict[str, str] = {}
        values: dict[str, Any] = {}
        for key, value in body.items():
            f = self.by_json.get(key)
            if f is None:
                errors[key] = "unknown field"
            elif not f.writable and not (creating and f.settable_on_create):
                errors[key] = "read-only field"
            else:
                try:
                    values[f.name] = f.check(value)
                except ValueError as exc:
                    errors[key] = str(exc)
        ident = self.by_name["id"]
        if creating and ident.type is str and "id" not in values and ident.json_name not in errors:
            errors[ident.json_name] = "required field"  # nothing assigns a slug but the client
        for f in self.writable:
            if f.name in values or f.json_name in errors:
                continue
            if f.required:
                errors[f.json_name] = "required field"
            elif f.default is not MISSING:
                values[f.name] = f.default
        if errors:
            raise invalid(errors)
        return values

    def to_json(self, row: Mapping[str, Any]) -> dict[str, Any]:
        """Return a store row as its JSON representation (camelCase, declared order)."""
        return {json_name: row[name] for name, json_name in self.json_pairs}

    def page_to_json(self, page: Any) -> list[dict[str, Any]]:
        """Return `to_json` of each row of a store's RowPage (from its value tuples when it can)."""
        if page.columns == self.column_order:
            # The columns come in declared order: pair the values with the JSON names.
            json_names = self.json_names
            return [dict(zip(json_names, values, strict=False)) for values in page.tuples]  # same length
        return [self.to_json(row) for row in page.rows]


def invalid(errors: Mapping[str, str]) -> InvalidRequest:
    """Return the 400 for field errors, naming each field in the message."""
    listed = "; ".join(f"{name}: {why}" for name, why in sorted(errors.items()))
    return InvalidRequest(f"Invalid request body: {listed}", errors=errors)

"""JSON Schemas and parameters derived from a resource's declaration.

Field schemas (bounds, choices, nullability, patterns), the bodies of POST, PUT and
PATCH and PATCH's answer, the error body, the list parameters as the listing parser
reads them (page, limit, sort, order, filters, q) and identifier path parameters.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Any

from ..declaration import INT64_MAX, INT64_MIN, MISSING, Declaration, Field
from ..listing import DEFAULT_LIMIT, MAX_LIMIT, MAX_PAGE, MAX_Q_LENGTH
from ..settings import Settings


def _escape(text: str) -> str:
    """Escape regex syntax the same way in Python and ECMA 262 (re.escape also escapes `-`)."""
    return re.sub(r"([\\^$.|?*+()\[\]{}])", r"\\\1", text)


def _alternatives(values: Iterable[str]) -> str:
    return "(?:" + "|".join(_escape(v) for v in values) + ")"


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


def path_parameter(key: str, label: str, ident: Field) -> dict[str, Any]:
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

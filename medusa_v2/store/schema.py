"""A stored resource's schema, derived from its declaration, and the steps from one version to the next.

Dialect-neutral: `derive` turns a `Declaration` into a spec (plain JSON data: the
columns with their bounds, the key, the parent, the indexes and the search fields),
which the stores record beside a version number in `resource_schema`; `plan`
compares a recorded spec with the one derived now and says what must change.
Each store renders a plan in its own SQL (`sqlite/ddl.py`, `ddl_postgres`).

What is derived:

- columns: NOT NULL unless nullable, DEFAULT from the field's default, a CHECK from
  its bounds (int value range, str length range, choices);
- key: `id`; for a nested resource with string ids, (parent field, id): a slug is
  unique under its parent only (`s01e01` exists under many shows);
- parent: its field REFERENCES the parent's table ON DELETE CASCADE;
- indexes: one per filtered or sortable column, `(column, id)`, or
  `(parent field, column, id)` plus `(parent field, id)` for a nested resource: one
  index per column, not per combination, so a declaration never multiplies them.
  A top-level resource's indexes also carry its other filter fields after the id:
  a walk in sort order, or over one filter's rows, checks the other filters in the
  index itself, reading a row only once it matches (store/pages.py);
- search: the searchable fields, indexed the way the store indexes ticket's;
- totals: for a top-level resource, its filter fields (maybe none): the store keeps
  how many rows hold each combination of their values (`NAME__totals`, kept by
  triggers in every writing transaction), so that the exact count of a list under
  any filters is a sum over those few combinations, not a walk over the rows.
  A nested resource's lists are counted under one parent, on its index.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from ..declaration import MISSING, Declaration
from .base import StoreUnavailable

SPEC_FORMAT = 1  # bumped if the spec's own shape changes (recorded specs are then re-read)
MAX_NAME = 63  # PostgreSQL's identifier limit, for both stores' sake
TOTALS_SUFFIX = "__totals"  # a top-level resource's totals per filter values: NAME__totals (totals_table)
COUNT_SUFFIX = "__count"  # and its rows in all (an unfiltered list's count): NAME__count


class SchemaError(StoreUnavailable):
    """A declaration's schema cannot be derived or migrated: it names the resource and field.

    Raised by `Store.open`; a StoreUnavailable, so that starting a daemon reports it and
    stops, as for an unreachable database. Retrying does not help: the declaration
    (or the data) must change.
    """


Spec = dict[str, Any]


def unique_id(decl: Declaration) -> bool:
    """Return whether `id` alone identifies a row of `decl` (else with its parent field)."""
    return decl.parent is None or decl.id_field.type is int


def derive(decl: Declaration) -> Spec:
    """Return the schema spec of a declaration (JSON data; equal declarations, equal specs)."""
    name = decl.name
    columns = [_column(f) for f in decl.fields]
    parent = None
    key = ["id"]
    if decl.parent is not None:
        pf = decl.by_name.get(decl.parent_field or "")
        if pf is None:
            raise SchemaError(f"resource {name}: its parent_field {decl.parent_field!r} is not one of its fields")
        if pf.type is not decl.parent.id_field.type:
            raise SchemaError(f"resource {name}: field {pf.name} must have the type of {decl.parent.name}'s id")
        if not unique_id(decl.parent):
            raise SchemaError(
                f"resource {name}: its parent {decl.parent.name} has string ids unique only under its own parent"
            )
        parent = {"table": decl.parent.name, "field": pf.name}
        if decl.id_field.type is str:
            key = [pf.name, "id"]
    indexes: dict[str, list[str]] = {}
    lead = [parent["field"]] if parent else []
    if parent and key != lead + ["id"]:
        indexes[_index_name(name, parent["table"])] = lead + ["id"]
    dims = [] if parent else [f.name for f in decl.filter_fields]
    for f in decl.fields:
        if (f.filter or f.sortable) and f.name != "id" and f.name not in lead:
            parts = [parent["table"], f.name] if parent else [f.name]
            indexes[_index_name(name, *parts)] = [*lead, f.name, "id", *(d for d in dims if d != f.name)]
    spec = {
        "format": SPEC_FORMAT,
        "name": name,
        "key": key,
        "parent": parent,
        "columns": columns,
        "indexes": indexes,
        "search": [f.name for f in decl.search_fields],
    }
    if parent is None:
        spec["totals"] = [f.name for f in decl.filter_fields]
    return spec


def totals_table(spec: Spec) -> str | None:
    """Return the name of the table of a spec's totals per filter values (None: it has none)."""
    if spec.get("totals") is None:
        return None
    name = spec["name"] + TOTALS_SUFFIX
    reserved = {"_key", "_shard", "_total"} & set(spec["totals"])
    if reserved:
        raise SchemaError(f"resource {spec['name']}: a filter field may not be named {reserved.pop()}")
    for field_name in spec["totals"]:
        _index_name(name, field_name)  # the totals table's index on the field fits the limit
    if len(name) + len("_update") > MAX_NAME:
        raise SchemaError(f"resource {spec['name']}: its totals table name {name} is too long")
    return name


def _column(f: Any) -> dict[str, Any]:
    column: dict[str, Any] = {"name": f.name, "type": f.type.__name__, "null": bool(f.nullable)}
    if f.default is not MISSING:
        column["default"] = f.default
    if f.type is str and f.choices is not None:
        column["choices"] = list(f.choices)
    else:
        if f.min is not None:
            column["min"] = f.min
        if f.max is not None:
            column["max"] = f.max
    return column


def _index_name(table: str, *parts: str) -> str:
    name = "_".join((table, *parts))
    if len(name) > MAX_NAME:
        raise SchemaError(f"resource {table}: index name {name} is longer than {MAX_NAME} characters")
    return name


def ordered(declarations: Iterable[Declaration]) -> list[Declaration]:
    """Return the declarations with their parents, parents first, each name once.

    Two different declarations of one name are refused: one table cannot follow both.
    """
    found: dict[str, Declaration] = {}

    def visit(decl: Declaration) -> None:
        if decl.parent is not None:
            visit(decl.parent)
        seen = found.get(decl.name)
        if seen is None:
            found[decl.name] = decl
        elif seen is not decl and derive(seen) != derive(decl):
            raise SchemaError(f"resource {decl.name}: two different declarations of it were given")

    for decl in declarations:
        visit(decl)
    return list(found.values())


@dataclass(frozen=True)
class Plan:
    """What brings a resource's tables from a recorded spec to the derived one."""

    name: str
    create: bool = False
    add: tuple[Mapping[str, Any], ...] = ()  # new columns, in declared order
    alter: tuple[tuple[Mapping[str, Any], Mapping[str, Any]], ...] = ()  # (old, new) column: bounds/default/null
    drop_indexes: tuple[str, ...] = ()
    create_indexes: tuple[str, ...] = ()  # names in the new spec's `indexes`
    search: bool = False  # the search fields changed: drop the search index, make the new one
    totals: bool = False  # the totals' fields changed (or it has none yet): drop them, count again
    changed: bool = field(default=False)

    def required(self) -> list[str]:
        """Return the added columns that no existing row could fill (NOT NULL, no default)."""
        return [c["name"] for c in self.add if not c["null"] and "default" not in c]


def plan(old: Spec | None, new: Spec) -> Plan:
    """Return the steps from `old` (None: nothing yet) to `new`; SchemaError for a change refused.

    Refused, because data would be lost or reinterpreted: a removed field, a field
    whose type changed, another key or another parent.
    """
    name = new["name"]
    if old is None:
        return Plan(name, create=True, changed=True)
    if old == new:
        return Plan(name)
    if old.get("format") != new["format"]:
        raise SchemaError(f"resource {name}: its recorded schema has format {old.get('format')}, not {new['format']}")
    if old["key"] != new["key"]:
        raise SchemaError(f"resource {name}: its key changed from {old['key']} to {new['key']}")
    if old["parent"] != new["parent"]:
        raise SchemaError(f"resource {name}: its parent changed from {old['parent']} to {new['parent']}")
    before = {c["name"]: c for c in old["columns"]}
    after = {c["name"]: c for c in new["columns"]}
    removed = [n for n in before if n not in after]
    if removed:
        raise SchemaError(
            f"resource {name}: field {', '.join(removed)} was removed from its declaration; its stored values "
            "would be lost, so the store keeps the column: declare the field again (e.g. nullable, not writable)"
        )
    for column_name, column in after.items():
        was = before.get(column_name)
        if was is not None and was["type"] != column["type"]:
            raise SchemaError(
                f"resource {name}: field {column_name} changed type from {was['type']} to {column['type']}"
            )
    add = tuple(c for n, c in after.items() if n not in before)
    alter = tuple((before[n], c) for n, c in after.items() if n in before and before[n] != c)
    old_indexes, new_indexes = old["indexes"], new["indexes"]
    drop = tuple(n for n, cols in old_indexes.items() if new_indexes.get(n) != cols)
    create = tuple(n for n, cols in new_indexes.items() if old_indexes.get(n) != cols)
    return Plan(
        name,
        add=add,
        alter=alter,
        drop_indexes=drop,
        create_indexes=create,
        search=old["search"] != new["search"],
        totals=old.get("totals") != new.get("totals"),
        changed=True,
    )


# The specs of the built-in ticket and message as released with `resource_schema`
# (SQLite migration 6, PostgreSQL migration 5), recorded as their version 1 by that
# migration: their tables, hand-tuned indexes, search and totals already exist, so
# nothing is created. Frozen like a migration (never edit it): when TICKET or
# MESSAGE change, the difference from these is migrated as for any declaration.
BUILTIN_V1: dict[str, Spec] = {
    "ticket": {
        "format": 1,
        "name": "ticket",
        "key": ["id"],
        "parent": None,
        "columns": [
            {"name": "id", "type": "int", "null": False, "min": 1},
            {"name": "title", "type": "str", "null": False, "min": 1, "max": 200},
            {"name": "description", "type": "str", "null": False, "default": "", "max": 10000},
            {
                "name": "state",
                "type": "str",
                "null": False,
                "default": "open",
                "choices": ["open", "pending", "closed"],
            },
            {"name": "priority", "type": "int", "null": False, "default": 3, "min": 1, "max": 5},
            {"name": "assignee", "type": "str", "null": True, "default": None, "min": 1, "max": 100},
            {"name": "created_at", "type": "str", "null": False},
            {"name": "updated_at", "type": "str", "null": False},
        ],
        "indexes": {
            "ticket_title": ["title", "id"],
            "ticket_state": ["state", "id"],
            "ticket_priority": ["priority", "id"],
            "ticket_assignee": ["assignee", "id"],
            "ticket_created_at": ["created_at", "id"],
            "ticket_updated_at": ["updated_at", "id"],
        },
        "search": ["title", "description"],
    },
    "message": {
        "format": 1,
        "name": "message",
        "key": ["id"],
        "parent": {"table": "ticket", "field": "ticket_id"},
        "columns": [
            {"name": "id", "type": "int", "null": False, "min": 1},
            {"name": "ticket_id", "type": "int", "null": False, "min": 1},
            {"name": "author", "type": "str", "null": False, "min": 1, "max": 100},
            {"name": "body", "type": "str", "null": False, "min": 1, "max": 10000},
            {"name": "created_at", "type": "str", "null": False},
            {"name": "updated_at", "type": "str", "null": False},
        ],
        "indexes": {
            "message_ticket": ["ticket_id", "id"],
            "message_ticket_author": ["ticket_id", "author", "id"],
            "message_ticket_created_at": ["ticket_id", "created_at", "id"],
            "message_ticket_updated_at": ["ticket_id", "updated_at", "id"],
        },
        "search": ["body"],
    },
}


# Ticket's spec as SQLite's migration 7 and PostgreSQL's migration 6 leave the
# released one (version 2 of its recorded spec): its totals per filter values,
# replacing the hand-written ones, and its indexes carrying the filter fields after
# the id. Those migrations apply the plan from the recorded spec to `builtin_v2` of
# it, as for any declaration (each store's migrate), so a ticket an embedder had
# already changed keeps its changes. Frozen like a migration (never edit it).
BUILTIN_V2: dict[str, Spec] = {
    "ticket": {
        **BUILTIN_V1["ticket"],
        "indexes": {
            "ticket_title": ["title", "id", "state", "priority", "assignee"],
            "ticket_state": ["state", "id", "priority", "assignee"],
            "ticket_priority": ["priority", "id", "state", "assignee"],
            "ticket_assignee": ["assignee", "id", "state", "priority"],
            "ticket_created_at": ["created_at", "id", "state", "priority", "assignee"],
            "ticket_updated_at": ["updated_at", "id", "state", "priority", "assignee"],
        },
        "totals": ["state", "priority", "assignee"],
    },
}


def builtin_v2(recorded: Spec) -> Spec:
    """Return a recorded ticket spec as the totals migration leaves it (BUILTIN_V2 for the released one).

    What the migration adds, whatever else an embedder changed in ticket: totals over
    ticket's released filter fields still declared, and the top-level `(column, id)`
    indexes widened with them. An embedder's own declaration then migrates as usual.
    """
    names = {c["name"] for c in recorded["columns"]}
    dims = [f for f in BUILTIN_V2["ticket"]["totals"] if f in names]
    indexes = {
        name: [*cols, *(d for d in dims if d != cols[0])] if len(cols) == 2 and cols[1] == "id" else cols
        for name, cols in recorded["indexes"].items()
    }
    return {**recorded, "indexes": indexes, "totals": dims}

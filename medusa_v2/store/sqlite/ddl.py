"""SQLite rendering of derived schemas (schema.py): create a resource's tables, or migrate them.

Everything runs on the caller's connection inside its open transaction (the store's
migration, BEGIN IMMEDIATE), with foreign keys off: a table whose constraints change
is rebuilt by SQLite's documented procedure (https://sqlite.org/lang_altertable.html,
"Making Other Kinds Of Table Schema Changes"), which needs them off so that dropping
the old table does not cascade into its children.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Mapping
from typing import Any

from ..schema import COUNT_SUFFIX, Plan, SchemaError, Spec, totals_table
from ..sql import check_expression, literal, quote_name


def search_key(spec: Spec) -> str:
    """Return the column the search index keys rows by: the INTEGER PRIMARY KEY, else the implicit rowid.

    The implicit rowid survives updates and the rebuild below (copied), but SQLite
    says a VACUUM may renumber it: the store never runs one (docs/schema.md).
    """
    return "id" if _int_key(spec) else "rowid"


def _int_key(spec: Spec) -> bool:
    return spec["key"] == ["id"] and spec["columns"][_at(spec, "id")]["type"] == "int"


def _at(spec: Spec, name: str) -> int:
    return next(i for i, c in enumerate(spec["columns"]) if c["name"] == name)


def create(db: sqlite3.Connection, spec: Spec) -> None:
    """Create a resource's table, indexes, search index and id counter."""
    db.execute(table_sql(spec, spec["name"]))
    for name in spec["indexes"]:
        db.execute(_index_sql(spec, name))
    for statement in _search_sql(spec):
        db.execute(statement)
    for statement in totals_sql(spec):
        db.execute(statement)
    for statement in changes_sql(spec):
        db.execute(statement)
    if _int_key(spec):
        db.execute(
            "INSERT INTO id_counter (name, next_id) VALUES (?, 1) ON CONFLICT (name) DO NOTHING", (spec["name"],)
        )


def migrate(db: sqlite3.Connection, old: Spec, new: Spec, plan: Plan) -> bool:
    """Apply a plan; return whether the table was rebuilt (the caller then checks foreign keys)."""
    table = quote_name(new["name"])
    required = plan.required()
    if required and db.execute(f"SELECT 1 FROM {table} LIMIT 1").fetchone() is not None:
        raise SchemaError(
            f"resource {new['name']}: field {', '.join(required)} was added as required without a default,"
            " and existing rows have no value for it: give it a default (or make it nullable)"
        )
    # SQLite cannot change a column's CHECK, DEFAULT or NOT NULL, nor add a NOT NULL
    # column without a default (even to an empty table): the table is rebuilt.
    rebuild = bool(plan.alter or required)
    if rebuild:
        _rebuild(db, old, new)
    else:
        for column in plan.add:
            db.execute(f"ALTER TABLE {table} ADD COLUMN {_column_sql(new, column)}")
    for name in plan.drop_indexes:
        db.execute(f"DROP INDEX IF EXISTS {quote_name(name)}")
    for name in plan.create_indexes:
        db.execute(_index_sql(new, name))
    if plan.search:
        for statement in _drop_search_sql(old):
            db.execute(statement)
        for statement in _search_sql(new):
            db.execute(statement)
        if new["search"]:
            _rebuild_search(db, new)
    elif rebuild and new["search"]:
        _rebuild_search(db, new)
    if plan.totals:
        for statement in _drop_totals_sql(old):
            db.execute(statement)
        for statement in totals_sql(new):
            db.execute(statement)
        count_totals(db, new)
    for statement in changes_sql(new):  # its columns may have changed
        db.execute(statement)
    return rebuild


def table_sql(spec: Spec, table: str) -> str:
    """Return the CREATE TABLE statement of a spec, named `table`."""
    lines = [_column_sql(spec, column) for column in spec["columns"]]
    if len(spec["key"]) > 1:
        lines.append(f"PRIMARY KEY ({', '.join(quote_name(k) for k in spec['key'])})")
    return f"CREATE TABLE {quote_name(table)} (\n    " + ",\n    ".join(lines) + "\n)"


def _column_sql(spec: Spec, column: Mapping[str, Any]) -> str:
    name = column["name"]
    parts = [quote_name(name), "INTEGER" if column["type"] == "int" else "TEXT"]
    if spec["key"] == ["id"] and name == "id":
        # TEXT keys need NOT NULL said: only INTEGER PRIMARY KEY implies it in SQLite.
        parts.append("PRIMARY KEY" if column["type"] == "int" else "NOT NULL PRIMARY KEY")
    elif not column["null"]:
        parts.append("NOT NULL")
    if column.get("default") is not None:
        parts.append(f"DEFAULT {literal(column['default'])}")
    check = check_expression(column)
    if check is not None:
        parts.append(f"CHECK ({check})")
    parent = spec["parent"]
    if parent is not None and name == parent["field"]:
        parts.append(f"REFERENCES {quote_name(parent['table'])} (id) ON DELETE CASCADE")
    return " ".join(parts)


def _index_sql(spec: Spec, name: str) -> str:
    columns = ", ".join(quote_name(c) for c in spec["indexes"][name])
    return f"CREATE INDEX IF NOT EXISTS {quote_name(name)} ON {quote_name(spec['name'])} ({columns})"


def _search_sql(spec: Spec) -> list[str]:
    """Return the FTS5 external-content trigram table and its triggers, as ticket's (migration 2)."""
    fields = spec["search"]
    if not fields:
        return []
    table, key = spec["name"], search_key(spec)
    search = quote_name(table + "_search")
    columns = ", ".join(quote_name(f) for f in fields)
    new = ", ".join(f"new.{quote_name(f)}" for f in fields)
    old = ", ".join(f"old.{quote_name(f)}" for f in fields)
    delete = f"INSERT INTO {search} ({search}, rowid, {columns}) VALUES ('delete', old.{key}, {old});"
    insert = f"INSERT INTO {search} (rowid, {columns}) VALUES (new.{key}, {new});"
    on = quote_name(table)
    return [
        f"CREATE VIRTUAL TABLE {search} USING fts5 ({columns}, content={literal(table)},"
        f" content_rowid={literal(key)}, tokenize='trigram')",
        f"CREATE TRIGGER {quote_name(table + '_search_insert')} AFTER INSERT ON {on} BEGIN {insert} END",
        # Also fires for the rows ON DELETE CASCADE removes with their parent.
        f"CREATE TRIGGER {quote_name(table + '_search_delete')} AFTER DELETE ON {on} BEGIN {delete} END",
        f"CREATE TRIGGER {quote_name(table + '_search_update')} AFTER UPDATE OF {columns} ON {on}"
        f" BEGIN {delete} {insert} END",
    ]


def totals_sql(spec: Spec) -> list[str]:
    """Return the totals table of a spec (schema.py) and the triggers keeping it, in each writing transaction.

    One row per combination of the filter fields' values, keyed by their quoted
    values (NULL included), with an index per field for the sums under a filter.
    Totals that drop to 0 stay. Beside it, NAME__count holds the rows in all, one
    row read for an unfiltered list instead of a sum over every combination. The
    triggers' names start with `TABLE_total_` (bulk.py sets them aside during an
    import and counts again).
    """
    table = totals_table(spec)
    if table is None:
        return []
    fields = spec["totals"]
    types = {c["name"]: c["type"] for c in spec["columns"]}
    totals, on = quote_name(table), quote_name(spec["name"])
    columns = "".join(f"{quote_name(f)} {'INTEGER' if types[f] == 'int' else 'TEXT'}, " for f in fields)
    names = "".join(f"{quote_name(f)}, " for f in fields)

    def key(row: str) -> str:
        return " || ',' || ".join(f"quote({row}.{quote_name(f)})" for f in fields) or "''"

    def add(row: str) -> str:
        values = "".join(f"{row}.{quote_name(f)}, " for f in fields)
        return (
            f"INSERT INTO {totals} (_key, {names}_total) VALUES ({key(row)}, {values}1)"
            " ON CONFLICT (_key) DO UPDATE SET _total = _total + 1;"
        )

    def remove(row: str) -> str:
        return f"UPDATE {totals} SET _total = _total - 1 WHERE _key = {key(row)};"

    count = quote_name(spec["name"] + COUNT_SUFFIX)
    statements = [
        f"CREATE TABLE {totals} (_key TEXT PRIMARY KEY, {columns}_total INTEGER NOT NULL) WITHOUT ROWID",
        *(f"CREATE INDEX {quote_name(f'{table}_{f}')} ON {totals} ({quote_name(f)})" for f in fields),
        f"CREATE TABLE {count} (_one INTEGER PRIMARY KEY CHECK (_one = 1), _total INTEGER NOT NULL)",
        f"INSERT INTO {count} (_one, _total) VALUES (1, 0)",
        f"CREATE TRIGGER {quote_name(spec['name'] + '_total_insert')} AFTER INSERT ON {on}"
        f" BEGIN {add('new')} UPDATE {count} SET _total = _total + 1; END",
        # Also fires for the rows ON DELETE CASCADE removes with their parent.
        f"CREATE TRIGGER {quote_name(spec['name'] + '_total_delete')} AFTER DELETE ON {on}"
        f" BEGIN {remove('old')} UPDATE {count} SET _total = _total - 1; END",
    ]
    if fields:
        changed = " OR ".join(f"new.{quote_name(f)} IS NOT old.{quote_name(f)}" for f in fields)
        statements.append(
            f"CREATE TRIGGER {quote_name(spec['name'] + '_total_update')}"
            f" AFTER UPDATE OF {', '.join(quote_name(f) for f in fields)} ON {on} WHEN {changed}"
            f" BEGIN {remove('old')} {add('new')} END"
        )
    return statements


CHANGE_TRIGGER = "_change_"  # a resource's change triggers are named TABLE_change_insert, _update, _delete
_NOW = "(julianday('now') - 2440587.5) * 86400.0"  # the Unix time, in seconds


def changes_sql(spec: Spec) -> list[str]:
    """Return the triggers recording each change of a spec's rows in the change feed (migration 8), replacing any.

    A created or updated row is recorded whole (its columns as a JSON object), a
    deleted one by its id and parent field; in the writing transaction, so a change
    is numbered (AUTOINCREMENT: never reused, one writer at a time, so in commit
    order and without gaps) exactly when it commits. Fires for the rows ON DELETE
    CASCADE removes too.
    """
    table = spec["name"]
    on = quote_name(table)
    columns = [c["name"] for c in spec["columns"]]
    key = ["id", *([spec["parent"]["field"]] if spec["parent"] else [])]

    def record(event: str, row: str, names: list[str]) -> str:
        pairs = ", ".join(f"{literal(n)}, {row}.{quote_name(n)}" for n in names)
        return (
            "INSERT INTO change_event (resource, event, row, at)"
            f" VALUES ({literal(table)}, {literal(event)}, json_object({pairs}), {_NOW});"
        )

    triggers = [
        ("insert", "INSERT", record("created", "new", columns)),
        ("update", "UPDATE", record("updated", "new", columns)),
        ("delete", "DELETE", record("deleted", "old", key)),
    ]
    statements = [f"DROP TRIGGER IF EXISTS {quote_name(table + CHANGE_TRIGGER + name)}" for name, _, _ in triggers]
    statements += [
        f"CREATE TRIGGER {quote_name(table + CHANGE_TRIGGER + name)} AFTER {verb} ON {on} BEGIN {body} END"
        for name, verb, body in triggers
    ]
    return statements


def count_totals(db: sqlite3.Connection, spec: Spec) -> None:
    """Count a spec's totals again from its rows (after an import, or when its filter fields change)."""
    table = totals_table(spec)
    if table is None:
        return
    fields = spec["totals"]
    names = ", ".join(quote_name(f) for f in fields)
    key = " || ',' || ".join(f"quote({quote_name(f)})" for f in fields) or "''"
    db.execute(f"DELETE FROM {quote_name(table)}")
    db.execute(
        f"INSERT INTO {quote_name(table)} (_key, {names + ', ' if fields else ''}_total)"
        f" SELECT {key}, {names + ', ' if fields else ''}COUNT(*) FROM {quote_name(spec['name'])}"
        + (f" GROUP BY {names}" if fields else "")
    )
    db.execute(
        f"UPDATE {quote_name(spec['name'] + COUNT_SUFFIX)} SET _total = (SELECT COALESCE(SUM(_total), 0)"
        f" FROM {quote_name(table)})"
    )


def _drop_totals_sql(spec: Spec) -> list[str]:
    table = totals_table(spec)
    if table is None:
        return []
    triggers = [f"{spec['name']}_total_{event}" for event in ("insert", "delete", "update")]
    return [
        *(f"DROP TRIGGER IF EXISTS {quote_name(t)}" for t in triggers),
        f"DROP TABLE IF EXISTS {quote_name(table)}",
        f"DROP TABLE IF EXISTS {quote_name(spec['name'] + COUNT_SUFFIX)}",
    ]


def _drop_search_sql(spec: Spec) -> list[str]:
    table = spec["name"]
    triggers = [f"{table}_search_{event}" for event in ("insert", "delete", "update")]
    return [
        *(f"DROP TRIGGER IF EXISTS {quote_name(t)}" for t in triggers),
        f"DROP TABLE IF EXISTS {quote_name(table + '_search')}",
    ]


def _rebuild_search(db: sqlite3.Connection, spec: Spec) -> None:
    search = quote_name(spec["name"] + "_search")
    db.execute(f"INSERT INTO {search} ({search}) VALUES ('rebuild')")


def _rebuild(db: sqlite3.Connection, old: Spec, new: Spec) -> None:
    """Rebuild a table with the new spec's constraints (the documented 12 steps, in the caller's transaction).

    Its own indexes and triggers (derived or hand-written: a built-in's totals) are
    read first and recreated after; children's REFERENCES name the table, so they
    hold again once the new table has its name. Rows keep their rowid: a TEXT-keyed
    table's search index is keyed by it.
    """
    name = new["name"]
    table, scratch = quote_name(name), quote_name(f"medusa_new_{name}")
    kept = db.execute(
        "SELECT sql FROM sqlite_master WHERE tbl_name = ? AND type IN ('index', 'trigger') AND sql IS NOT NULL",
        (name,),
    ).fetchall()
    db.execute(table_sql(new, f"medusa_new_{name}"))
    columns = ", ".join(quote_name(c["name"]) for c in old["columns"])  # added columns take their defaults
    rowid = "" if _int_key(new) else "rowid, "
    try:
        db.execute(f"INSERT INTO {scratch} ({rowid}{columns}) SELECT {rowid}{columns} FROM {table}")
    except sqlite3.IntegrityError as exc:
        raise SchemaError(
            f"resource {name}: stored rows do not fit its new declaration ({exc}): change them, or the bounds"
        ) from None
    db.execute(f"DROP TABLE {table}")
    db.execute(f"ALTER TABLE {scratch} RENAME TO {table}")
    for (sql,) in kept:
        db.execute(sql)

"""PostgreSQL rendering of derived schemas (schema.py): create a resource's tables, or migrate them.

As the built-in tables (postgres.py, migration 2): text in the "C" collation, ids
from a sequence that never goes back, NULLs first in the indexes of nullable
columns, and `q` served by a pg_trgm GIN index per search field. Statements run on
the caller's cursor inside the migration's transaction (under its advisory lock).
CHECK constraints are named `<table>_<column>_check`, PostgreSQL's own name for a
column's CHECK, so a built-in's hand-written ones are replaced the same way.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from .schema import Plan, Spec
from .sql import check_expression, literal, quote_name


def create_statements(spec: Spec) -> list[str]:
    """Return the statements creating a resource's table, id sequence, indexes and search indexes."""
    name = spec["name"]
    table = quote_name(name)
    lines = [_column_sql(spec, column) for column in spec["columns"]]
    lines.append(f"PRIMARY KEY ({', '.join(quote_name(k) for k in spec['key'])})")
    statements = [f"CREATE TABLE {table} (\n    " + ",\n    ".join(lines) + "\n)"]
    if _int_id(spec):
        statements.append(f"CREATE SEQUENCE {quote_name(name + '_id_seq')} AS BIGINT OWNED BY {table}.id")
    statements.extend(_index_sql(spec, index) for index in spec["indexes"])
    statements.extend(_search_sql(name, field) for field in spec["search"])
    return statements


def migrate_statements(old: Spec, new: Spec, plan: Plan) -> list[str]:
    """Return the statements applying a plan (the caller has refused what `plan.required()` forbids)."""
    name = new["name"]
    table = quote_name(name)
    statements = [f"ALTER TABLE {table} ADD COLUMN {_column_sql(new, column)}" for column in plan.add]
    for before, after in plan.alter:
        column = quote_name(after["name"])
        alter = f"ALTER TABLE {table} ALTER COLUMN {column}"
        if before.get("default") != after.get("default") or ("default" in before) != ("default" in after):
            default = after.get("default")
            statements.append(
                f"{alter} SET DEFAULT {literal(default)}" if default is not None else f"{alter} DROP DEFAULT"
            )
        if before["null"] != after["null"] and after["name"] not in new["key"]:
            statements.append(f"{alter} {'DROP' if after['null'] else 'SET'} NOT NULL")
        if check_expression(before) != check_expression(after):
            constraint = quote_name(f"{name}_{after['name']}_check")
            statements.append(f"ALTER TABLE {table} DROP CONSTRAINT IF EXISTS {constraint}")
            check = check_expression(after)
            if check is not None:
                statements.append(f"ALTER TABLE {table} ADD CONSTRAINT {constraint} CHECK ({check})")
    statements.extend(f"DROP INDEX IF EXISTS {quote_name(index)}" for index in plan.drop_indexes)
    statements.extend(_index_sql(new, index) for index in plan.create_indexes)
    if plan.search:
        statements.extend(
            f"DROP INDEX IF EXISTS {quote_name(f'{name}_{field}_trgm')}"
            for field in old["search"]
            if field not in new["search"]
        )
        statements.extend(_search_sql(name, field) for field in new["search"] if field not in old["search"])
    return statements


def _int_id(spec: Spec) -> bool:
    return next(c for c in spec["columns"] if c["name"] == "id")["type"] == "int"


def _column_sql(spec: Spec, column: Mapping[str, Any]) -> str:
    name = column["name"]
    parts = [quote_name(name), "BIGINT" if column["type"] == "int" else 'TEXT COLLATE "C"']
    if not column["null"] and name not in spec["key"]:
        parts.append("NOT NULL")  # the primary key implies it
    if column.get("default") is not None:
        parts.append(f"DEFAULT {literal(column['default'])}")
    check = check_expression(column)
    if check is not None:
        parts.append(f"CONSTRAINT {quote_name(spec['name'] + '_' + name + '_check')} CHECK ({check})")
    parent = spec["parent"]
    if parent is not None and name == parent["field"]:
        parts.append(f"REFERENCES {quote_name(parent['table'])} (id) ON DELETE CASCADE")
    return " ".join(parts)


def _index_sql(spec: Spec, index: str) -> str:
    nullable = {c["name"] for c in spec["columns"] if c["null"]}
    columns = ", ".join(quote_name(c) + (" NULLS FIRST" if c in nullable else "") for c in spec["indexes"][index])
    return f"CREATE INDEX IF NOT EXISTS {quote_name(index)} ON {quote_name(spec['name'])} ({columns})"


def _search_sql(table: str, field: str) -> str:
    # In the default collation: the one ILIKE folds case with (postgres._where).
    return (
        f"CREATE INDEX IF NOT EXISTS {quote_name(f'{table}_{field}_trgm')} ON {quote_name(table)}"
        f' USING gin ({quote_name(field)} COLLATE "default" gin_trgm_ops)'
    )

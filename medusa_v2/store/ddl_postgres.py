"""PostgreSQL rendering of derived schemas (schema.py): create a resource's tables, or migrate them.

As the built-in tables (postgres/migrations.py, migration 2): text in the "C" collation, ids
from a sequence that never goes back, NULLs first in the indexes of nullable
columns, and `q` served by a pg_trgm GIN index per search field. Statements run on
the caller's cursor inside the migration's transaction (under its advisory lock).
CHECK constraints are named `<table>_<column>_check`, PostgreSQL's own name for a
column's CHECK, so a built-in's hand-written ones are replaced the same way.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from .schema import COUNT_SUFFIX, Plan, Spec, totals_table
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
    statements.extend(totals_statements(spec))
    statements.extend(changes_statements(spec))
    return statements


def changes_statements(spec: Spec) -> list[str]:
    """Return the trigger recording every change of a spec's rows in the change feed (migration 7), replacing it.

    Its function (`medusa_v2_change`, migration 7) records a created or updated row
    whole, a deleted one by its id and parent field; the row's columns are read
    at each change, so the trigger outlives added columns. It fires for the rows
    ON DELETE CASCADE removes too, and stands aside during an import.
    """
    name = spec["name"]
    trigger = quote_name(name + "_change")
    parent = [literal(spec["parent"]["field"])] if spec["parent"] else []
    return [
        f"DROP TRIGGER IF EXISTS {trigger} ON {quote_name(name)}",
        f"CREATE TRIGGER {trigger} AFTER INSERT OR UPDATE OR DELETE ON {quote_name(name)}"
        f" FOR EACH ROW EXECUTE FUNCTION medusa_v2_change({', '.join([literal(name), *parent])})",
    ]


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
    if plan.totals:
        statements.extend(_drop_totals_statements(old))
        statements.extend(totals_statements(new))
    return statements


_TEXT = 'TEXT COLLATE "C"'


def _int_id(spec: Spec) -> bool:
    return next(c for c in spec["columns"] if c["name"] == "id")["type"] == "int"


def _column_sql(spec: Spec, column: Mapping[str, Any]) -> str:
    name = column["name"]
    parts = [quote_name(name), "BIGINT" if column["type"] == "int" else _TEXT]
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
    # In the default collation: the one ILIKE folds case with (postgres.queries._where).
    return (
        f"CREATE INDEX IF NOT EXISTS {quote_name(f'{table}_{field}_trgm')} ON {quote_name(table)}"
        f' USING gin ({quote_name(field)} COLLATE "default" gin_trgm_ops)'
    )


TOTAL_SHARDS = 16  # rows per combination of values, one per group of backends (see totals_statements)


def totals_statements(spec: Spec) -> list[str]:
    """Return the totals table of a spec (schema.py), the triggers keeping it, and its first count.

    As SQLite's (sqlite/ddl.totals_sql), one total per combination of the filter
    fields' values, and, so that concurrent writers do not queue on one row lock until
    each other's commit, per shard: the writing backend's pid modulo TOTAL_SHARDS. A
    count is the SUM over the shards, in the reader's snapshot. Inserts and deletes
    add per statement (an import's COPY adds once per batch); an update that changes
    a filter field moves one row's count; both lock rows in key order (no deadlock
    between two writers on one shard). NAME__count holds the rows in all per shard
    (an unfiltered count reads at most TOTAL_SHARDS rows, not every combination);
    inserts and deletes add to it in the same statement trigger, after the totals.
    """
    table = totals_table(spec)
    if table is None:
        return []
    fields = spec["totals"]
    types = {c["name"]: c["type"] for c in spec["columns"]}
    name = spec["name"]
    totals, on = quote_name(table), quote_name(name)
    columns = "".join(f"{quote_name(f)} {'BIGINT' if types[f] == 'int' else _TEXT}, " for f in fields)
    names = "".join(f"{quote_name(f)}, " for f in fields)

    def key(row: str) -> str:
        return totals_key(row, fields)

    every = quote_name(name + COUNT_SUFFIX)

    # Rows locked in the keys' byte order, as the update trigger and an import lock them.
    order = f' ORDER BY {key("r")} COLLATE "C"' if fields else ""

    def add_all(rows: str, sign: str) -> str:
        values = "".join(f"r.{quote_name(f)}, " for f in fields)
        group = f" GROUP BY {', '.join(f'r.{quote_name(f)}' for f in fields)}" if fields else ""
        return (
            f"INSERT INTO {totals} AS t (_key, _shard, {names}_total)"
            f" SELECT {key('r')}, pg_backend_pid() % {TOTAL_SHARDS}, {values}{sign}COUNT(*) FROM {rows} AS r{group}"
            f"{order}"
            " ON CONFLICT (_key, _shard) DO UPDATE SET _total = t._total + EXCLUDED._total;"
            f" INSERT INTO {every} AS t (_shard, _total) SELECT pg_backend_pid() % {TOTAL_SHARDS}, {sign}COUNT(*)"
            f" FROM {rows} HAVING COUNT(*) <> 0 ON CONFLICT (_shard) DO UPDATE SET _total = t._total + EXCLUDED._total;"
        )

    def add_one(row: str, delta: int) -> str:
        values = "".join(f"{row}.{quote_name(f)}, " for f in fields)
        return (
            f"INSERT INTO {totals} AS t (_key, _shard, {names}_total)"
            f" VALUES ({key(row)}, pg_backend_pid() % {TOTAL_SHARDS}, {values}{delta})"
            f" ON CONFLICT (_key, _shard) DO UPDATE SET _total = t._total + EXCLUDED._total;"
        )

    count = quote_name(f"{table}_count")
    move = quote_name(f"{table}_move")
    statements = [
        f"CREATE TABLE {totals} (_key {_TEXT} NOT NULL, _shard INTEGER NOT NULL, {columns}"
        "_total BIGINT NOT NULL, PRIMARY KEY (_key, _shard))",
        *(f"CREATE INDEX {quote_name(f'{table}_{f}')} ON {totals} ({quote_name(f)})" for f in fields),
        f"CREATE TABLE {every} (_shard INTEGER PRIMARY KEY, _total BIGINT NOT NULL)",
        f"""CREATE FUNCTION {count}() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
            IF TG_OP <> 'TRUNCATE' AND current_setting('medusa_v2.bulk_import', true) = 'on' THEN
                RETURN NULL;  -- an import adds its counts itself, once (postgres._add_totals)
            ELSIF TG_OP = 'INSERT' THEN
                {add_all("new_rows", "")}
            ELSIF TG_OP = 'DELETE' THEN
                {add_all("old_rows", "-")}
            ELSE
                DELETE FROM {totals};
                DELETE FROM {every};
            END IF;
            RETURN NULL;
        END $$""",
        f"CREATE TRIGGER {quote_name(name + '_total_insert')} AFTER INSERT ON {on}"
        f" REFERENCING NEW TABLE AS new_rows FOR EACH STATEMENT EXECUTE FUNCTION {count}()",
        # Also fires for the rows ON DELETE CASCADE removes with their parent.
        f"CREATE TRIGGER {quote_name(name + '_total_delete')} AFTER DELETE ON {on}"
        f" REFERENCING OLD TABLE AS old_rows FOR EACH STATEMENT EXECUTE FUNCTION {count}()",
        f"CREATE TRIGGER {quote_name(name + '_total_truncate')} AFTER TRUNCATE ON {on}"
        f" FOR EACH STATEMENT EXECUTE FUNCTION {count}()",
    ]
    if fields:
        changed = " OR ".join(f"OLD.{quote_name(f)} IS DISTINCT FROM NEW.{quote_name(f)}" for f in fields)
        statements += [
            f"""CREATE FUNCTION {move}() RETURNS trigger LANGUAGE plpgsql AS $$
            BEGIN
                IF {key("OLD")} < {key("NEW")} COLLATE "C" THEN
                    {add_one("OLD", -1)}
                    {add_one("NEW", 1)}
                ELSE
                    {add_one("NEW", 1)}
                    {add_one("OLD", -1)}
                END IF;
                RETURN NULL;
            END $$""",
            f"CREATE TRIGGER {quote_name(name + '_total_update')} AFTER UPDATE ON {on}"
            f" FOR EACH ROW WHEN ({changed}) EXECUTE FUNCTION {move}()",
        ]
    statements.append(
        f"INSERT INTO {totals} (_key, _shard, {names}_total)"
        f" SELECT {key('r')}, 0, {''.join(f'r.{quote_name(f)}, ' for f in fields)}COUNT(*) FROM {on} AS r"
        + (f" GROUP BY {', '.join(f'r.{quote_name(f)}' for f in fields)}" if fields else "")
    )
    statements.append(f"INSERT INTO {every} (_shard, _total) SELECT 0, COUNT(*) FROM {on}")
    return statements


def totals_key(row: str, fields: Sequence[str]) -> str:
    """Return the SQL of a totals row's key: the quoted values of `row`'s filter fields (NULL included)."""
    if not fields:
        return "''"  # concat_ws takes at least one value to join
    return "concat_ws(','" + "".join(f", quote_nullable({row}.{quote_name(f)})" for f in fields) + ")"


def _drop_totals_statements(spec: Spec) -> list[str]:
    table = totals_table(spec)
    if table is None:
        return []
    # Its triggers go with the functions they execute.
    return [
        f"DROP TABLE IF EXISTS {quote_name(table)}",
        f"DROP TABLE IF EXISTS {quote_name(spec['name'] + COUNT_SUFFIX)}",
        f"DROP FUNCTION IF EXISTS {quote_name(f'{table}_count')}() CASCADE",
        f"DROP FUNCTION IF EXISTS {quote_name(f'{table}_move')}() CASCADE",
    ]

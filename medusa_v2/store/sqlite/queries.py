"""The SQL of reads: one row by id, a list's WHERE, ORDER BY, count and page."""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from typing import Any

from ...declaration import Declaration
from ...listing import ListQuery
from .. import schema
from ..base import Parent
from ..sql import quote_name as _name

_TOTALS = frozenset({"ticket"})  # tables whose row total a trigger keeps in row_total (migration 4)
# Columns whose rows per value triggers keep in value_total, named `table.column` (migration 5).
_VALUE_TOTALS = {"ticket": frozenset({"state", "priority"})}
_DEEP_OFFSET = 1000  # from this offset on, a page is found by id first


_GET_SQL: dict[tuple[int, bool, bool], tuple[Any, tuple[str, ...], str]] = {}


def _get_sql(decl: Declaration, nested: bool, ranged: bool = False) -> tuple[tuple[str, ...], str]:
    """Return (column names, SQL) reading one row by id (and parent), built once per declaration.

    `ranged`: the rows of ids from one to another, in id order, instead.
    """
    found = _GET_SQL.get((id(decl), nested, ranged))
    if found is None or found[0] is not decl:
        names = tuple(f.name for f in decl.fields)
        sql = f"SELECT {', '.join(_name(n) for n in names)} FROM {_name(decl.name)}"
        sql += " WHERE id BETWEEN ? AND ?" if ranged else " WHERE id = ?"
        if nested:
            sql += f" AND {_name(decl.parent_column)} = ?"
        if ranged:
            sql += " ORDER BY id"
        if len(_GET_SQL) > 1024:
            _GET_SQL.clear()
        found = _GET_SQL[(id(decl), nested, ranged)] = (decl, names, sql)
    return found[1], found[2]


def _fold(text: str | None) -> str | None:
    return None if text is None else text.lower()


def read_page(
    db: sqlite3.Connection, decl: Declaration, query: ListQuery, parent: Parent | None
) -> tuple[int, list[str], list[Any]]:
    """Count a list's matching rows, then read its page: (count, column names, rows), in the caller's snapshot."""
    table = _name(decl.name)
    where, params = _where(decl, query, parent)
    order = _order_by(query.sort)
    if not where and decl.name in _TOTALS:
        count = db.execute("SELECT total FROM row_total WHERE name = ?", (decl.name,)).fetchone()[0]
    elif (counted := _counted_filter(decl, query, parent)) is not None:
        count = db.execute(*counted).fetchone()[0]
    else:
        count = db.execute(f"SELECT COUNT(*) FROM {table}{where}", params).fetchone()[0]
    columns: list[str] = []
    tuples: list[Any] = []
    if query.offset < count:
        if query.offset >= _DEEP_OFFSET and schema.unique_id(decl):
            # Skip rows on the ids alone (an index, or the narrow rowid
            # order), then read only the page's rows in full.
            sql = (
                f"SELECT * FROM {table} WHERE id IN (SELECT id FROM {table}{where}"
                f" ORDER BY {order} LIMIT ? OFFSET ?) ORDER BY {order}"
            )
        else:
            sql = f"SELECT * FROM {table}{where} ORDER BY {order} LIMIT ? OFFSET ?"
        cursor = db.execute(sql, [*params, query.limit, query.offset])
        columns = [d[0] for d in cursor.description]
        tuples = cursor.fetchall()
    return count, columns, tuples


def _where(decl: Declaration, query: ListQuery, parent: Parent | None) -> tuple[str, list[Any]]:
    """Return ` WHERE ...` and its parameters for a list's parent, filters and q."""
    terms: list[str] = []
    params: list[Any] = []
    if parent is not None:
        terms.append(f"{_name(decl.parent_column)} = ?")
        params.append(parent[1])
    for name, allowed in query.filters.items():
        terms.append(f"{_name(name)} IN ({', '.join('?' for _ in allowed)})")
        params.extend(allowed)
    if query.q:
        search = _name(decl.name + "_search")
        if len(query.q) >= 3 and parent is None:
            # A double-quoted FTS5 string is one phrase: operators and quotes in q are literal.
            # The index keys rows by id, or by the implicit rowid of a table with string ids.
            key = "id" if decl.id_field.type is int else "rowid"
            terms.append(f"{key} IN (SELECT rowid FROM {search} WHERE {search} MATCH ?)")
            params.append('"' + query.q.replace('"', '""') + '"')
        else:
            # Trigrams cannot find 1-2 characters; and under one parent, its few rows
            # (found by the parent index) are cheaper to check than every match in the
            # whole table. Compare folded text; instr: % and _ are literal.
            fields = [f.name for f in decl.search_fields]
            terms.append("(" + " OR ".join(f"instr(medusa_fold({_name(f)}), ?) > 0" for f in fields) + ")")
            params.extend([_fold(query.q)] * len(fields))
    return (" WHERE " + " AND ".join(terms) if terms else ""), params


def _row_key(decl: Declaration, id: Any, parent: Parent | None) -> tuple[str, tuple[Any, ...]]:
    """Return ` WHERE ...` and its parameters addressing one row (a string id is unique under its parent only)."""
    if schema.unique_id(decl) or parent is None:
        return " WHERE id = ?", (id,)
    return f" WHERE id = ? AND {_name(decl.parent_column)} = ?", (id, parent[1])


def _counted_filter(decl: Declaration, query: ListQuery, parent: Parent | None) -> tuple[str, list[Any]] | None:
    """Return the query of a list's count from value_total, when its only filter is on a counted column."""
    if parent is not None or query.q or len(query.filters) != 1:
        return None
    ((name, allowed),) = query.filters.items()
    if name not in _VALUE_TOTALS.get(decl.name, ()):
        return None
    marks = ", ".join("?" for _ in allowed)
    # IN: a value given twice counts once, as in the list's own WHERE.
    sql = f"SELECT COALESCE(SUM(total), 0) FROM value_total WHERE name = ? AND value IN ({marks})"
    return sql, [f"{decl.name}.{name}", *allowed]


def _order_by(sort: Sequence[tuple[str, bool]]) -> str:
    """Return the ORDER BY list: the requested keys, then id in the last key's direction.

    The id makes the order total (pages never overlap or skip, NULLs included); in the
    last key's direction, an index on (key, id) serves it in one scan.
    """
    terms: list[str] = []
    for name, desc in sort:
        terms.append(f"{_name(name)} {'DESC' if desc else 'ASC'}")
        if name == "id":
            return ", ".join(terms)  # unique: later keys could not change the order
    terms.append("id DESC" if sort and sort[-1][1] else "id ASC")
    return ", ".join(terms)

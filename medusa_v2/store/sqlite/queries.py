"""The SQL of reads: one row by id, a list's WHERE, ORDER BY, count and page."""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from typing import Any

from ...declaration import Declaration
from ...listing import ListQuery
from .. import pages, schema
from ..base import Parent
from ..sql import filter_terms
from ..sql import quote_name as _name

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
    if parent is not None or query.q:
        source, params = _source(decl, query, parent)
        where, more = _where(decl, query, parent)
        if _indexed_search(query, parent) and not query.filters:
            search = _name(decl.name + "_search")
            sql, params = f"SELECT COUNT(*) FROM {search}{_MATCH.format(search)}", [_phrase(query.q or "")]
        else:
            sql, params = f"SELECT COUNT(*) FROM {source}{where}", [*params, *more]
        count = db.execute(sql, params).fetchone()[0]
        whole = pages.whole(query.filters, query.sort, query.offset, query.limit, count)
        return count, *_read(db, decl, whole, query, parent)
    # A top-level list without q: counted from its totals (ddl.totals_sql), per group of
    # its leading sort keys that are filter fields, and read as planned (pages.py).
    totals = _name(decl.name + schema.TOTALS_SUFFIX)
    where, params = _filters(query.filters)
    keys = pages.split_keys(query.sort, [f.name for f in decl.filter_fields])
    parts: list[pages.Part] | None = None
    if keys:
        names = ", ".join(_name(k) for k in keys)
        found = db.execute(f"SELECT {names}, SUM(_total) FROM {totals}{where} GROUP BY {names}", params).fetchall()
        groups = [(tuple(row[:-1]), row[-1]) for row in found]
        count = sum(n for _, n in groups)
        parts = pages.split(query.filters, query.sort, query.offset, query.limit, keys, groups)
    elif where:
        count = db.execute(f"SELECT COALESCE(SUM(_total), 0) FROM {totals}{where}", params).fetchone()[0]
    else:
        count = db.execute(f"SELECT _total FROM {_name(decl.name + schema.COUNT_SUFFIX)}").fetchone()[0]
    if parts is None:
        parts = pages.whole(query.filters, query.sort, query.offset, query.limit, count)
    return count, *_read(db, decl, parts, query, None)


def _read(
    db: sqlite3.Connection, decl: Declaration, parts: Sequence[pages.Part], query: ListQuery, parent: Parent | None
) -> tuple[list[str], list[Any]]:
    """Read the parts of a page in turn: (column names, rows)."""
    table = _name(decl.name)
    columns: list[str] = []
    tuples: list[Any] = []
    for part in parts:
        source, params = _source(decl, query, parent)
        where, more = _where(decl, query, parent, part.filters)
        order = _order_by(part.sort, part.reverse)
        if part.filters and parent is None and not query.q:
            source = f"{table} {_index_for(db, decl, part)}"
        if part.offset >= _DEEP_OFFSET and schema.unique_id(decl):
            # Skip rows on the ids alone (an index, or the narrow rowid
            # order), then read only the page's rows in full.
            sql = (
                f"SELECT * FROM {table} WHERE id IN (SELECT id FROM {source}{where}"
                f" ORDER BY {order} LIMIT ? OFFSET ?) ORDER BY {order}"
            )
        else:
            sql = f"SELECT {table}.* FROM {source}{where} ORDER BY {order} LIMIT ? OFFSET ?"
        cursor = db.execute(sql, [*params, *more, part.limit, part.offset])
        columns = [d[0] for d in cursor.description]
        found = cursor.fetchall()
        tuples.extend(reversed(found) if part.reverse else found)
    return columns, tuples


WALK = 4.0  # sorting a matching row costs about as much as walking this many index entries


def _index_for(db: sqlite3.Connection, decl: Declaration, part: pages.Part) -> str:
    """Return the index clause of a filtered part of a top-level list: the walk or the filter it reads.

    SQLite keeps no statistics here, so it would guess; the totals say exactly how
    many rows each filter matches. Every index carries the filter fields (schema.py),
    so both ways check the filters in the index: walk the sort key's index until the
    page is found (pages.walk_cost entries), or read the rows of the most selective
    filter's index and sort the matches, whichever reads less.
    """
    key = part.sort[0][0] if part.sort else "id"
    if key != "id":
        walk = f"INDEXED BY {_name(decl.name + '_' + key)}"  # derived for every sortable field
    else:
        walk = "NOT INDEXED" if decl.id_field.type is int else ""  # the rowid order
    (rows,) = db.execute(f"SELECT _total FROM {_name(decl.name + schema.COUNT_SUFFIX)}").fetchone()
    cost = pages.walk_cost(part, rows)
    if cost <= WALK * part.count:
        return walk  # cheaper than sorting the matches, whatever a filter's index would read
    names = list(part.filters)
    sums = ", ".join(f"SUM(CASE WHEN {term} THEN _total ELSE 0 END)" for term in filter_terms(part.filters, "?")[0])
    params = [v for name in names for v in part.filters[name] if v is not None]
    single = db.execute(f"SELECT {sums} FROM {_name(decl.name + schema.TOTALS_SUFFIX)}", params).fetchone()
    best = min(range(len(names)), key=lambda i: single[i])
    if cost <= (single[best] or 0) + WALK * part.count:
        return walk
    if names[best] == "id":
        return ""  # the primary key: SQLite takes it itself (no derived index on id)
    return f"INDEXED BY {_name(decl.name + '_' + names[best])}"  # derived for every filter field but id


def _filters(filters: Any) -> tuple[str, list[Any]]:
    """Return ` WHERE ...` and its parameters for filters (None among the values: IS NULL)."""
    terms, params = filter_terms(filters, "?")
    return (" WHERE " + " AND ".join(terms) if terms else ""), params


def _where(decl: Declaration, query: ListQuery, parent: Parent | None, filters: Any = None) -> tuple[str, list[Any]]:
    """Return ` WHERE ...` and its parameters for a list's parent, filters (or a part's) and a q not indexed."""
    terms: list[str] = []
    params: list[Any] = []
    if parent is not None:
        terms.append(f"{_name(decl.parent_column)} = ?")
        params.append(parent[1])
    more, values = filter_terms(query.filters if filters is None else filters, "?")
    terms.extend(more)
    params.extend(values)
    if _indexed_search(query, parent) and not query.filters:
        # No filter to check: walking the order and probing the matches (gathered once)
        # finds a page sooner than looking every match up (_source).
        key = "id" if decl.id_field.type is int else "rowid"
        search = _name(decl.name + "_search")
        terms.append(f"{key} IN (SELECT rowid FROM {search}{_MATCH.format(search)})")
        params.append(_phrase(query.q or ""))
    elif query.q and not _indexed_search(query, parent):
        # Trigrams cannot find 1-2 characters; and under one parent, its few rows
        # (found by the parent index) are cheaper to check than every match in the
        # whole table. Compare folded text; instr: % and _ are literal.
        fields = [f.name for f in decl.search_fields]
        terms.append("(" + " OR ".join(f"instr(medusa_fold({_name(f)}), ?) > 0" for f in fields) + ")")
        params.extend([_fold(query.q)] * len(fields))
    return (" WHERE " + " AND ".join(terms) if terms else ""), params


_MATCH = " WHERE {0} MATCH ?"


def _indexed_search(query: ListQuery, parent: Parent | None) -> bool:
    """Return whether a list's q is found by the search index (else by checking each row: _where)."""
    return bool(query.q) and len(query.q or "") >= 3 and parent is None


def _source(decl: Declaration, query: ListQuery, parent: Parent | None) -> tuple[str, list[Any]]:
    """Return the FROM of a list's rows and its parameters: the table, or the search's matches joined to it.

    Under filters, the matches drive (CROSS JOIN keeps them the outer loop): each is
    looked up by its key, and the filters are checked on the row. `key IN (SELECT rowid ...)`
    made SQLite gather every match first and then probe them from a filter's index,
    two to three times slower for a word in most rows. A double-quoted FTS5 string
    is one phrase: operators and quotes in q are literal. The index keys rows by id,
    or by the implicit rowid of a table with string ids.
    """
    table = _name(decl.name)
    if not _indexed_search(query, parent) or not query.filters:
        return table, []
    search = _name(decl.name + "_search")
    key = "id" if decl.id_field.type is int else "rowid"
    found = f"(SELECT rowid AS medusa_match FROM {search}{_MATCH.format(search)}) AS medusa_found"
    return f"{found} CROSS JOIN {table} ON {table}.{key} = medusa_found.medusa_match", [_phrase(query.q or "")]


def _phrase(q: str) -> str:
    return '"' + q.replace('"', '""') + '"'


def _row_key(decl: Declaration, id: Any, parent: Parent | None) -> tuple[str, tuple[Any, ...]]:
    """Return ` WHERE ...` and its parameters addressing one row (a string id is unique under its parent only)."""
    if schema.unique_id(decl) or parent is None:
        return " WHERE id = ?", (id,)
    return f" WHERE id = ? AND {_name(decl.parent_column)} = ?", (id, parent[1])


def _order_by(sort: Sequence[tuple[str, bool]], reverse: bool = False) -> str:
    """Return the ORDER BY list: the requested keys, then id in the last key's direction (all turned if `reverse`).

    The id makes the order total (pages never overlap or skip, NULLs included); in the
    last key's direction, an index on (key, id) serves it in one scan.
    """
    terms: list[str] = []
    for name, desc in sort:
        terms.append(f"{_name(name)} {'DESC' if desc != reverse else 'ASC'}")
        if name == "id":
            return ", ".join(terms)  # unique: later keys could not change the order
    terms.append("id DESC" if (bool(sort) and sort[-1][1]) != reverse else "id ASC")
    return ", ".join(terms)

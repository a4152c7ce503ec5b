"""The SQL of reads and row writes: a list's WHERE, ORDER BY, count and page, one row's key."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from ...declaration import Declaration
from ...listing import ListQuery
from .. import schema
from ..base import Parent
from ..sql import filter_terms
from ..sql import quote_name as _name

DEEP_OFFSET = 1000  # from this offset on, a page's ids are found first (page_sql)


def _row_key(decl: Declaration, id: Any, parent: Parent | None) -> tuple[str, tuple[Any, ...]]:
    """Return ` WHERE ...` and its parameters addressing one row (a string id is unique under its parent only)."""
    if schema.unique_id(decl) or parent is None:
        return " WHERE id = %s", (id,)
    return f" WHERE id = %s AND {_name(decl.parent_column)} = %s", (id, parent[1])


def page_sql(table: str, where: str, order: str, deep: bool = False) -> str:
    """Return the statement reading one page (LIMIT and OFFSET left as parameters).

    A deep page (`deep`: offset DEEP_OFFSET or more) skips rows on the ids alone,
    an index-only scan of the sort order's index (which ends with id), and reads
    only the page's rows in full.
    """
    if deep:
        return (
            f"SELECT * FROM {table} WHERE id IN (SELECT id FROM {table}{where} ORDER BY {order} LIMIT %s OFFSET %s)"
            f" ORDER BY {order}"
        )
    return f"SELECT * FROM {table}{where} ORDER BY {order} LIMIT %s OFFSET %s"


def search_sql(decl: Declaration, table: str, where: str, sort: Sequence[tuple[str, bool]]) -> str:
    """Return the statement counting a list with q and reading its page (LIMIT and OFFSET left as parameters).

    The matches are found once, in a MATERIALIZED set the planner cannot merge into
    the sort (its guess that a substring matches ~1% of the rows would make it walk
    the sort order's index filtering every row until it has a page: for a rare term,
    most of the table, instead of a few trigram index pages). The set is narrow (the
    key and the sort columns); the count and the page both read it, and only the
    page's rows are read in full. An empty page still yields the count (NULL row).
    """
    key = ["id"] if schema.unique_id(decl) else [decl.parent_column, "id"]
    kept = ", ".join(_name(c) for c in dict.fromkeys([*key, *(name for name, _ in sort)]))
    joined = " AND ".join(f"t.{_name(c)} = ids.{_name(c)}" for c in key)
    return (
        f"WITH found AS MATERIALIZED (SELECT {kept} FROM {table}{where}),"
        f" ids AS (SELECT {kept} FROM found ORDER BY {_order_by(decl, sort)} LIMIT %s OFFSET %s),"
        f" page AS (SELECT t.* FROM {table} AS t JOIN ids ON {joined} ORDER BY {_order_by(decl, sort, table='t')})"
        " SELECT (SELECT COUNT(*) FROM found)::BIGINT AS medusa_count, page.*"
        " FROM (SELECT 1) AS one LEFT JOIN page ON TRUE"
    )


def _like_pattern(q: str) -> str:
    """Return an ILIKE pattern matching `q` as a literal substring (`\\` is LIKE's default escape)."""
    return "%" + q.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"


def _where(decl: Declaration, query: ListQuery, parent: Parent | None) -> tuple[str, list[Any]]:
    """Return ` WHERE ...` and its parameters for a list's parent, filters and q."""
    terms: list[str] = []
    params: list[Any] = []
    if parent is not None:
        terms.append(f"{_name(decl.parent_column)} = %s")
        params.append(parent[1])
    more, values = filter_terms(query.filters, "%s")
    terms.extend(more)
    params.extend(values)
    if query.q:
        # ILIKE in the default collation (case folded by its LC_CTYPE), which the
        # trigram indexes are built in, so the planner can use them for q of 3+ characters.
        fields = [f.name for f in decl.search_fields]
        terms.append("(" + " OR ".join(f'({_name(f)} COLLATE "default") ILIKE %s' for f in fields) + ")")
        params.extend([_like_pattern(query.q)] * len(fields))
    return (" WHERE " + " AND ".join(terms) if terms else ""), params


def _dims(decl: Declaration) -> list[str]:
    return [f.name for f in decl.filter_fields]


# One microsecond after a row's updated_at, in base.timestamp's format.
_NEXT_MICROSECOND = """to_char(updated_at::timestamp + interval '1 microsecond', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"')"""


def _counted(decl: Declaration, filters: Any) -> tuple[str, list[Any]]:
    """Return the query of a top-level list's exact count under its filters, from its totals (all: its count)."""
    terms, params = filter_terms(filters, "%s")
    if not terms:
        return f"SELECT COALESCE(SUM(_total), 0) FROM {_name(decl.name + schema.COUNT_SUFFIX)}", []
    where = " WHERE " + " AND ".join(terms)
    return f"SELECT COALESCE(SUM(_total), 0) FROM {_name(decl.name + schema.TOTALS_SUFFIX)}{where}", params


def _order_by(decl: Declaration, sort: Sequence[tuple[str, bool]], reverse: bool = False, table: str = "") -> str:
    """Return the ORDER BY list: the requested keys, then id in the last key's direction (all turned if `reverse`).

    As in SQLite: NULLs first ascending, last descending (said only for nullable
    columns: their index is built NULLS FIRST, and its backward scan gives DESC NULLS
    LAST; a NOT NULL column keeps the default, which its plain index serves both
    ways); the id makes the order total. `table`: the columns' qualifier, if needed.
    """
    nullable = {f.name for f in decl.fields if getattr(f, "nullable", False)}
    at = f"{table}." if table else ""
    terms: list[str] = []
    for name, asked in sort:
        desc = asked != reverse
        nulls = (" NULLS LAST" if desc else " NULLS FIRST") if name in nullable else ""
        terms.append(f"{at}{_name(name)} {'DESC' if desc else 'ASC'}{nulls}")
        if name == "id":
            return ", ".join(terms)  # unique: later keys could not change the order
    terms.append(f"{at}id DESC" if (bool(sort) and sort[-1][1]) != reverse else f"{at}id ASC")
    return ", ".join(terms)

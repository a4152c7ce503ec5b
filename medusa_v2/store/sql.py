"""SQL text both stores write the same way: quoted names, literals, CHECK expressions, id helpers.

Names and values rendered here come from declarations (the embedder's code), never
from clients: clients' values are always bound parameters.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

# An import moves an id counter (SQLite) or sequence (PostgreSQL) past its highest id
# below this; a huge chosen id (up to 2^63 - 1) leaves it alone, so one row never
# exhausts it.
COUNTER_LIMIT = 2**62


def quote_name(identifier: str) -> str:
    """Quote a table or column name (names come from declarations, never from clients)."""
    if not identifier.replace("_", "").isalnum() or not identifier.isascii():
        raise ValueError(f"not a plain SQL identifier: {identifier!r}")
    return f'"{identifier}"'


def literal(value: Any) -> str:
    """Return a declared default as an SQL literal (int, str or None)."""
    if value is None:
        return "NULL"
    if isinstance(value, bool):
        return str(int(value))
    if isinstance(value, int):
        return str(value)
    if isinstance(value, str):
        return "'" + value.replace("'", "''") + "'"
    raise TypeError(f"no SQL literal for {value!r}")


def check_expression(column: Mapping[str, Any]) -> str | None:
    """Return the CHECK expression of a derived column's bounds (see schema.derive), or None.

    Ints: a value range; strings: the choices, else a length range. NULL passes a
    CHECK in both SQL dialects, so a nullable column needs no special case.
    """
    name = quote_name(column["name"])
    if column["type"] == "str":
        if column.get("choices") is not None:
            return f"{name} IN ({', '.join(literal(c) for c in column['choices'])})"
        name = f"length({name})"
    low, high = column.get("min"), column.get("max")
    if column["type"] == "str" and not low:
        low = None  # every string is at least 0 characters long
    if low is not None and high is not None:
        return f"{name} BETWEEN {low} AND {high}"
    if low is not None:
        return f"{name} >= {low}"
    if high is not None:
        return f"{name} <= {high}"
    return None


def filter_terms(filters: Mapping[str, Sequence[Any]], mark: str) -> tuple[list[str], list[Any]]:
    """Return the WHERE terms and parameters of filters: each field IN its values (None: IS NULL).

    `mark` is the dialect's placeholder (`?` or `%s`). Clients' filters never hold
    None; the groups a page is split into (store/pages.py) may.
    """
    terms: list[str] = []
    params: list[Any] = []
    for name, allowed in filters.items():
        values = [v for v in allowed if v is not None]
        term = f"{quote_name(name)} IN ({', '.join(mark for _ in values)})" if values else ""
        if len(values) < len(allowed):
            term = f"({term} OR {quote_name(name)} IS NULL)" if term else f"{quote_name(name)} IS NULL"
        terms.append(term)
        params.extend(values)
    return terms, params


def highest_below_limit(ids: Sequence[int]) -> int:
    """Return the highest of `ids` below COUNTER_LIMIT (0 if none)."""
    return max((i for i in ids if i < COUNTER_LIMIT), default=0)

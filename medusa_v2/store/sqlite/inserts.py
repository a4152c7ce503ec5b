"""Insert many rows with few statements: multi-row INSERTs, bound variables permitting."""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from itertools import chain
from typing import Any

from ..sql import quote_name as _name


def _insert_values(
    db: sqlite3.Connection, table: str, columns: Sequence[str], values: Sequence[Sequence[Any]], most: int = 5000
) -> None:
    """Insert rows with multi-row INSERT statements (up to `most` rows each, bound variables permitting).

    Not executemany: FTS5 flushes its pending terms at every statement's end, so one
    statement per row makes one tiny index segment per row (much slower imports); and
    the values of a statement are bound in one call, not row by row, so an import's
    worker thread takes the GIL from the parsing thread once per statement (and
    waits for it each time: few, large statements).
    """
    names = ", ".join(_name(c) for c in columns)
    one = "(" + ", ".join("?" for _ in columns) + ")"
    per = max(1, min(most, db.getlimit(sqlite3.SQLITE_LIMIT_VARIABLE_NUMBER) // len(columns)))
    full_sql = ""
    for start in range(0, len(values), per):
        chunk = values[start : start + per]
        if len(chunk) == per and full_sql:
            sql = full_sql
        else:
            sql = f"INSERT INTO {table} ({names}) VALUES " + ", ".join([one] * len(chunk))
            if len(chunk) == per:
                full_sql = sql
        db.execute(sql, list(chain.from_iterable(chunk)))  # in C: this thread holds the GIL meanwhile

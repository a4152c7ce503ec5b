"""Id sequences: a table's, stepping past chosen ids on insert, moving past an import's ids."""

from __future__ import annotations

from typing import Any

import psycopg

from ..sql import quote_name as _name


def _sequence(table: str) -> str:
    _name(table)  # validated
    return f"{table}_id_seq"


async def _skip_taken(cur: psycopg.AsyncCursor[Any], table: str, sequence: str, taken: int) -> None:
    """Move the sequence past the block of chosen ids that starts at `taken`.

    Only forward (nextval), never setval: concurrent inserts can never be handed an
    id twice, and a deleted id never comes back.
    """
    await cur.execute(
        f"SELECT t.id FROM {table} t WHERE t.id >= %s"
        f" AND NOT EXISTS (SELECT 1 FROM {table} u WHERE u.id = t.id + 1) ORDER BY t.id LIMIT 1",
        (taken,),
    )
    found = await cur.fetchone()
    last = next(iter(found.values())) if found else taken  # the end of the taken block
    if last > taken:
        await cur.execute(
            f"SELECT MAX(v) FROM (SELECT nextval('{sequence}') AS v FROM generate_series(1, %s)) s", (last - taken,)
        )


async def _advance_sequence(cur: psycopg.AsyncCursor[Any], sequence: str, taken: int) -> None:
    """Move the sequence so its next value is past `taken` (never backwards).

    ALTER SEQUENCE holds off every other nextval/setval on it until this transaction
    ends, so nothing is handed out between reading the position and setting it.
    """
    await cur.execute(f"ALTER SEQUENCE {sequence} AS BIGINT")
    await cur.execute(f"SELECT last_value, is_called FROM {sequence}")
    last, called = await cur.fetchone()  # type: ignore[misc]
    upcoming = last + 1 if called else last
    if taken >= upcoming:
        await cur.execute("SELECT setval(%s, %s, true)", (sequence, taken))

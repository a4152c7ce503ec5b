"""The id counters of tables with assigned int ids: they only move forward (migration 3)."""

from __future__ import annotations

import sqlite3


def _assign_id(db: sqlite3.Connection, name: str, table: str) -> int:
    """Take the next id from the table's counter (inside the insert's transaction).

    The counter only moves forward: a deleted row's id is never given out again. An
    id a client chose (which does not move the counter) is skipped: the first free
    id after it is taken instead.
    """
    candidate = _next_id(db, name)
    if db.execute(f"SELECT 1 FROM {table} WHERE id = ?", (candidate,)).fetchone() is not None:
        candidate = db.execute(
            f"SELECT t.id + 1 FROM {table} t WHERE t.id >= ?"
            f" AND NOT EXISTS (SELECT 1 FROM {table} u WHERE u.id = t.id + 1) ORDER BY t.id LIMIT 1",
            (candidate,),
        ).fetchone()[0]
    _move_next_id(db, name, candidate + 1)
    return candidate


def _next_id(db: sqlite3.Connection, name: str) -> int:
    """Return the id the counter would give next (it may be taken by a chosen id)."""
    found = db.execute("SELECT next_id FROM id_counter WHERE name = ?", (name,)).fetchone()
    return found[0] if found is not None else 1


def _move_next_id(db: sqlite3.Connection, name: str, next_id: int) -> None:
    """Move the counter forward to `next_id` (never back: a deleted row's id is not given out again)."""
    db.execute(
        "INSERT INTO id_counter (name, next_id) VALUES (?, ?)"
        " ON CONFLICT (name) DO UPDATE SET next_id = MAX(next_id, excluded.next_id)",
        (name, next_id),
    )

"""FTS5's structure record: where an import's freshly built search segments are placed.

This is the one module that reads or writes FTS5's undocumented on-disk structure
record (the `%_data` row with id 10, fts5_index.c's "format 1"). Everything else
talks to FTS5 through its documented SQL interface.

Why at all: an import's search build (search_build) leaves a few big segments on
level 0. Left there, the first POSTs' automerge rewrites them all (a slow POST);
merged into one by FTS5's documented 'optimize', the segment sits on level 1 and
is merged whole again a few hundred writes later, a pause growing with the index
(docs/benchmarks.md, Import). An index grown by N writes keeps its oldest rows on
level ~log16(N), merged again only after about N more writes, so `place` moves
each built segment up to such a level in the structure record.

The switch and the fallback: `ENABLED` (on), and only on an SQLite version in
`TESTED_SQLITE` (the ones the tests check this against, each with FTS5's own
'integrity-check' after every import path: tests/test_fts5_import.py). Off, on
another version, on a record this module cannot rewrite (it reads format 1 only,
exactly), or when the self-check (`check`) finds the index reads differently after
the move, the import runs FTS5's documented 'optimize' instead: a correct index, merged once more at
the import's end and again after some hundreds of later writes.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from ..sql import quote_name as _name
from .migrations import SEARCH_AUTOMERGE

ENABLED = True  # False: every import uses FTS5's documented 'optimize' (see the module's docstring)
# (major, minor) SQLite versions the structure record is rewritten on; any other uses 'optimize'.
# Kept in step with the versions tests/test_fts5_import.py runs on (docs/schema.md, The search index of an import).
TESTED_SQLITE = ((3, 40), (3, 51))

_FTS5_STRUCTURE_ROWID = 10  # the %_data row of an FTS5 index's structure record
_FTS5_LEVELS = 64  # FTS5_MAX_LEVEL
_FTS5_MERGE_AT = SEARCH_AUTOMERGE  # a level with this many segments is merged (automerge; crisismerge's default too)
_PROBE_TERMS = 8  # terms of the index read before and after a move (`check`)
SAMPLES = 64  # rows (and the first) looked up in the index before and after a move (`check`)


@dataclass
class Placed:
    """A search index whose structure record `place` rewrote: what `check` compares and restores."""

    search: str
    original: bytes
    samples: Sequence[tuple[int, str]]
    probe: list[tuple[Any, ...]]


def tested(db: sqlite3.Connection) -> bool:
    """Return whether `db`'s SQLite library is one the structure record rewrite is tested on."""
    version = db.execute("SELECT sqlite_version()").fetchone()[0]
    return tuple(int(part) for part in version.split(".")[:2]) in TESTED_SQLITE


def place(db: sqlite3.Connection, search: str, rows: int, samples: Sequence[tuple[int, str]]) -> Placed | None:
    """Settle a freshly built index of `rows` rows (in `db`'s open transaction); return it if moved.

    Each segment of R rows goes to a level of its own from the lowest L with
    16 ** (L + 1) >= R up, the oldest highest. Anything else ends in 'optimize':
    the switch off, an untested SQLite, a record that cannot be rewritten so
    (another format, a merge under way, too many segments; after 'optimize',
    its one segment is moved if it can be). `samples`: (id, a text of that
    row) spread over the index's ids, for `check`.
    """
    if not (ENABLED and tested(db)):
        optimize(db, search)
        return None
    record = _record(db, search)
    if record is None:  # nothing indexed
        return None
    read = _structure_segments(record)
    if read is not None and not read[1]:
        return None
    moved = _structure_on_levels(record, _level_for(rows // len(read[1]))) if read is not None else None
    if moved is None:
        optimize(db, search)
        record = _record(db, search)
        moved = _structure_on_levels(record, _level_for(rows)) if record is not None else None
    if record is None or moved is None:
        return None
    placed = Placed(search, record, samples, _probe(db, search, samples))
    db.execute(f"UPDATE {_name(search + '_data')} SET block = ? WHERE id = {_FTS5_STRUCTURE_ROWID}", (moved,))
    return placed


def check(path: str, placed: Sequence[Placed]) -> list[str]:
    """Read each moved index of the database at `path` afresh; put back and 'optimize' any that reads differently.

    The self-check: on a new connection (no FTS5 state cached), FTS5 must accept
    the record, the first terms of the index must have the row and occurrence
    counts (fts5vocab) they had before the move, and each sample row must be
    found (or not) by the first trigram of its text as before. Return the search
    tables that failed it (and were optimized instead).
    """
    failed = []
    probe = sqlite3.connect(path, isolation_level=None)
    try:
        for item in placed:
            try:
                same = _probe(probe, item.search, item.samples) == item.probe
            except sqlite3.DatabaseError:
                same = False
            if not same:
                failed.append(item.search)
    finally:
        probe.close()
    if failed:
        redo = sqlite3.connect(path, isolation_level=None)
        try:
            redo.execute("BEGIN")
            for item in placed:
                if item.search in failed:
                    redo.execute(
                        f"UPDATE {_name(item.search + '_data')} SET block = ? WHERE id = {_FTS5_STRUCTURE_ROWID}",
                        (item.original,),
                    )
                    optimize(redo, item.search)
            redo.execute("COMMIT")
        finally:
            redo.close()
    return failed


def optimize(db: sqlite3.Connection, search: str) -> None:
    """Merge every segment of a search index into one: FTS5's documented 'optimize'."""
    db.execute(f"INSERT INTO {_name(search)} ({_name(search)}) VALUES ('optimize')")


def _record(db: sqlite3.Connection, search: str) -> bytes | None:
    found = db.execute(f"SELECT block FROM {_name(search + '_data')} WHERE id = {_FTS5_STRUCTURE_ROWID}").fetchone()
    return found[0] if found is not None else None


def _probe(db: sqlite3.Connection, search: str, samples: Sequence[tuple[int, str]]) -> list[tuple[Any, ...]]:
    """Return what an index says of its first terms (FTS5's fts5vocab) and of each sample row."""
    vocab = _name(f"medusa_probe_{search}")
    db.execute(f"CREATE VIRTUAL TABLE IF NOT EXISTS temp.{vocab} USING fts5vocab(main, {_name(search)}, 'row')")
    try:
        found = [tuple(row) for row in db.execute(f"SELECT term, doc, cnt FROM temp.{vocab} LIMIT {_PROBE_TERMS}")]
    finally:
        db.execute(f"DROP TABLE temp.{vocab}")
    sql = f"SELECT count(*) FROM {_name(search)} WHERE {_name(search)} MATCH ? AND rowid = ?"
    for rowid, text in samples:
        phrase = '"' + text[:3].replace('"', '""') + '"'  # one trigram: one term looked up per segment
        found.append((rowid, db.execute(sql, (phrase, rowid)).fetchone()[0]))
    return found


def _varint(data: bytes, at: int) -> tuple[int, int]:
    """Read an SQLite varint (as FTS5 writes them) at `at`; return it and the offset past it."""
    value = 0
    for n in range(8):
        byte = data[at + n]
        value = (value << 7) | (byte & 0x7F)
        if byte < 0x80:
            return value, at + n + 1
    return (value << 8) | data[at + 8], at + 9


def _put_varint(value: int) -> bytes:
    """Write a small (< 2**56) non-negative SQLite varint."""
    out = [value & 0x7F]
    value >>= 7
    while value:
        out.append(0x80 | (value & 0x7F))
        value >>= 7
    return bytes(reversed(out))


def _structure_segments(record: bytes) -> tuple[int, list[tuple[int, int, int, int]]] | None:
    """Read an FTS5 structure record: its write counter and (level, segment id, first, last leaf page)s.

    Format 1 (fts5_index.c): a 4-byte cookie, then varints: the number of levels,
    of segments and the write counter, and for each level the segments in an
    ongoing merge, its number of segments and each one's id, first and last leaf
    page. None for anything else (a newer format, a merge under way, bytes left).
    """
    if record[4:8] == b"\xff\x00\x00\x01":  # format 2 (contentless-delete tables)
        return None
    found: list[tuple[int, int, int, int]] = []
    try:
        levels, at = _varint(record, 4)
        segments, at = _varint(record, at)
        writes, at = _varint(record, at)
        for level in range(levels):
            merging, at = _varint(record, at)
            count, at = _varint(record, at)
            if merging:
                return None
            for _ in range(count):
                segid, at = _varint(record, at)
                first, at = _varint(record, at)
                last, at = _varint(record, at)
                found.append((level, segid, first, last))
    except IndexError:
        return None
    return (writes, found) if at == len(record) and segments == len(found) else None


def _level_for(rows: int) -> int:
    """Return the lowest level L with 16 ** (L + 1) >= rows: where an index grown by `rows` writes keeps them."""
    level = 0
    while _FTS5_MERGE_AT ** (level + 1) < rows:
        level += 1
    return level


def _structure_on_levels(record: bytes, lowest: int) -> bytes | None:
    """Return an FTS5 structure record with its segments moved up to levels `lowest` and over, or None.

    One segment per level while the levels last (FTS5 has 64), the oldest (first
    listed) highest; else evenly, fewer than _FTS5_MERGE_AT per level. None unless
    the record is format 1 (`_structure_segments`) with every segment on level 0,
    `lowest` is above it, and they fit.
    """
    read = _structure_segments(record)
    if read is None or not read[1] or any(level for level, *_ in read[1]) or not 0 < lowest < _FTS5_LEVELS:
        return None
    writes, found = read
    per_level = -(-len(found) // (_FTS5_LEVELS - lowest))
    if per_level >= _FTS5_MERGE_AT:
        return None
    groups = [found[at : at + per_level] for at in range(0, len(found), per_level)]
    groups.reverse()  # the oldest segments on the highest level
    out = [record[:4], _put_varint(lowest + len(groups)), _put_varint(len(found)), _put_varint(writes)]
    out.append(b"\x00\x00" * lowest)
    for group in groups:
        out.append(b"\x00" + _put_varint(len(group)))
        out.extend(_put_varint(value) for _, *segment in group for value in segment)
    return b"".join(out)

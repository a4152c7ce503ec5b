"""Every SQLite import path, then FTS5's own 'integrity-check' and searches: run by tests/test_fts5_import.py.

`python tests/fts5_import_scenarios.py LIBRARY` runs each scenario on SQLite
through LIBRARY (`sqlite3`: Python's own; `pysqlite3`: the newer SQLite of
pysqlite3-binary, put in place of `sqlite3` before medusa_v2 is imported) and
prints one JSON object: the SQLite version and, per scenario, its facts or its
error. A process per library, since medusa_v2's modules bind `sqlite3` once.
"""

from __future__ import annotations

import asyncio
import io
import json
import sys
import tempfile
import traceback
from pathlib import Path
from typing import Any

if __name__ == "__main__" and sys.argv[1:] == ["pysqlite3"]:
    import pysqlite3.dbapi2

    class _Connection(pysqlite3.dbapi2.Connection):
        """pysqlite3's connection, with the `getlimit` of Python 3.11's sqlite3 that the store reads."""

        def getlimit(self, category: int) -> int:
            # The one limit the store reads: SQLite's default maximum of bound variables (3.32 on).
            assert category == pysqlite3.dbapi2.SQLITE_LIMIT_VARIABLE_NUMBER
            return 32766

    def _connect(*args: Any, **kwargs: Any) -> Any:
        return _pysqlite3_connect(*args, factory=_Connection, **kwargs)

    pysqlite3.dbapi2.SQLITE_LIMIT_VARIABLE_NUMBER = 9  # SQLite's number for it (sqlite3.h)
    _pysqlite3_connect = pysqlite3.dbapi2.connect
    pysqlite3.dbapi2.connect = _connect
    sys.modules["sqlite3"] = pysqlite3.dbapi2

import sqlite3  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "examples"))

from mypkg.notes import NoteResource  # noqa: E402
from mypkg.shows import EpisodeResource, ShowResource  # noqa: E402

from medusa_v2.handler import encode_json  # noqa: E402
from medusa_v2.listing import ListQuery  # noqa: E402
from medusa_v2.resources.message import MESSAGE, MessageResource  # noqa: E402
from medusa_v2.resources.ticket import TICKET, TicketResource  # noqa: E402
from medusa_v2.store import open_store  # noqa: E402
from medusa_v2.store.sqlite import fts5_structure, search_build  # noqa: E402
from medusa_v2.transfer import import_jsonl  # noqa: E402

T0 = "2026-01-02T03:04:05.000001Z"
WORDS = ["printer", "jam", "Straße", "日本語", "kumquat", "vpn", "tab\there", "😀 emoji", "a],[b", 'quo"te']
BUILT_IN = [TicketResource, MessageResource]
TREE = [TicketResource, MessageResource, NoteResource, ShowResource, EpisodeResource]


def ticket(i: int, title: str, description: str, messages: list[dict[str, Any]], notes: list[dict[str, Any]] | None):
    doc = {"id": i, "title": title, "description": description, "state": "open", "priority": 3, "assignee": None}
    doc.update(createdAt=T0, updatedAt=T0, messages=messages)
    if notes is not None:
        doc["notes"] = notes
    return doc


def tickets(first: int, last: int, tag: str = "", notes: bool = False) -> list[dict[str, Any]]:
    """Tickets whose titles, descriptions and messages mix WORDS (and `tag`), some with messages (and notes)."""
    docs = []
    for i in range(first, last + 1):
        msgs = [
            {"id": i * 10 + k, "ticketId": i, "author": "ann", "body": f"{WORDS[(i + k) % 10]} reply {i * 10 + k}"}
            for k in range(i % 3)
        ]
        for m in msgs:
            m.update(createdAt=T0, updatedAt=T0)
        kids = None
        if notes:
            kids = [{"id": i, "ticketId": i, "kind": "comment", "rank": 0, "text": f"note {WORDS[i % 7]} {i}"}]
            kids[0].update(createdAt=T0, updatedAt=T0)
        desc = f"{WORDS[(i * 7) % 10]} and {WORDS[(i * 3) % 5]} {tag}"
        docs.append(ticket(i, f"{tag}{WORDS[i % 10]} {i}", desc, msgs, kids))
    return docs


def shows(n: int) -> list[dict[str, Any]]:
    docs = []
    for i in range(1, n + 1):
        eps = [{"id": "s01e01", "showId": f"tvdb{i}", "name": f"pilot {WORDS[i % 10]}", "watched": 0}]
        eps[0].update(createdAt=T0, updatedAt=T0)
        doc = {"resource": "show", "id": f"tvdb{i}", "title": f"show {WORDS[i % 10]} {i}", "status": "continuing"}
        doc.update(createdAt=T0, updatedAt=T0, episodes=eps)
        docs.append(doc)
    return docs


def lines(docs: list[dict[str, Any]]) -> io.BytesIO:
    return io.BytesIO(b"".join(encode_json(d) + b"\n" for d in docs))


def expected(docs: list[dict[str, Any]], word: str, *fields: str) -> list[Any]:
    return sorted(d["id"] for d in docs if any(word.lower() in d[f].lower() for f in fields))


async def found(store: Any, decl: Any, q: str) -> list[Any]:
    ids: list[Any] = []
    page = 1
    while rows := (await store.list_rows(decl, ListQuery(q=q, limit=1000, page=page))).rows:
        ids += (row["id"] for row in rows)
        page += 1
    return sorted(ids)


def checked(store: Any) -> list[str]:
    """Run SQLite's and each FTS5 index's own integrity check; return the search tables checked."""
    db = store.db
    assert db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    searches = [
        name
        for (name,) in db.execute(
            "SELECT name FROM sqlite_master WHERE type = 'table' AND sql LIKE 'CREATE VIRTUAL TABLE%' ORDER BY name"
        )
    ]
    for search in searches:
        db.execute(f"INSERT INTO {search} ({search}) VALUES ('integrity-check')")
    return searches


def levels(store: Any, search: str = "ticket_search") -> list[int]:
    record = store.db.execute(f"SELECT block FROM {search}_data WHERE id = 10").fetchone()[0]
    read = fts5_structure._structure_segments(record)
    assert read is not None
    return [level for level, *_ in read[1]]


async def searches_find_their_rows(store: Any, docs: list[dict[str, Any]]) -> None:
    for word in ("printer", "straße", "日本語", "a],[b", "kumquat and"):
        assert await found(store, TICKET, word) == expected(docs, word, "title", "description"), word
    bodies = [m for d in docs for m in d["messages"]]
    for word in ("jam reply", 'quo"te'):
        assert await found(store, MESSAGE, word) == expected(bodies, word, "body"), word


async def opened(directory: Path, resources: list[Any]) -> Any:
    url = f"sqlite:///{directory / 'test.db'}"
    return await open_store(url, [r.declaration for r in resources if r not in BUILT_IN])


async def empty_staged(directory: Path) -> dict[str, Any]:
    """Into empty tables: the staged search build, its several segments moved (or optimized), then writes."""
    store = await opened(directory, BUILT_IN)
    try:
        docs = tickets(1, 3000)
        search_build._SEARCH_BUILD_OPTIONS["hashsize"] = 32 << 10  # several segments to place
        await import_jsonl(store, lines(docs), exclusive=True)
        built = levels(store)
        checked(store)
        await searches_find_their_rows(store, docs)
        for i in range(300):
            row = {"title": f"later printer {i}", "description": "x"}
            docs.append({"id": (await store.insert_row(TICKET, row, 1.8e9 + i))["id"], **row, "messages": []})
        checked(store)
        await searches_find_their_rows(store, docs)
        return {"levels": built}
    finally:
        await store.close()


async def empty_staged_switch_off(directory: Path) -> dict[str, Any]:
    """The switch off: FTS5's documented 'optimize' settles the build."""
    fts5_structure.ENABLED = False
    return await empty_staged(directory)


async def empty_staged_untested_sqlite(directory: Path) -> dict[str, Any]:
    """An SQLite version the rewrite is not tested on: 'optimize', automatically."""
    fts5_structure.TESTED_SQLITE = ()
    return await empty_staged(directory)


async def empty_staged_self_check_fails(directory: Path) -> dict[str, Any]:
    """A moved record that loses a segment: the self-check puts the original back and optimizes it."""
    original = fts5_structure._structure_on_levels
    failures: list[list[str]] = []
    check = fts5_structure.check

    def lossy(record: bytes, lowest: int) -> bytes | None:
        moved = original(record, lowest)
        read = fts5_structure._structure_segments(moved) if moved is not None else None
        if read is None or len(read[1]) < 2:
            return moved
        writes, segments = read
        put = fts5_structure._put_varint
        kept = segments[1:]  # the highest level's (oldest) segment is forgotten
        out = [record[:4], put(lowest + 1), put(len(kept)), put(writes), b"\x00\x00" * lowest]
        out += [b"\x00", put(len(kept)), *(put(v) for _, *segment in kept for v in segment)]
        return b"".join(out)

    def counted(path: str, placed: Any) -> list[str]:
        failures.append(check(path, placed))
        return failures[-1]

    fts5_structure._structure_on_levels = lossy
    fts5_structure.check = counted
    facts = await empty_staged(directory)
    return {**facts, "failed": failures}


async def non_empty(directory: Path) -> dict[str, Any]:
    """Into a table that has rows: indexes and search triggers stay live."""
    store = await opened(directory, BUILT_IN)
    try:
        first = await store.insert_row(TICKET, {"title": "printer first", "description": ""}, 1.7e9)
        docs = tickets(2, 800)
        await import_jsonl(store, lines(docs))
        docs.append({"id": first["id"], "title": "printer first", "description": "", "messages": []})
        checked(store)
        await searches_find_their_rows(store, docs)
        return {}
    finally:
        await store.close()


async def replace(directory: Path) -> dict[str, Any]:
    """An import into empty tables, then a replace import over half of its ids and new ones."""
    store = await opened(directory, BUILT_IN)
    try:
        old = tickets(1, 600)
        await import_jsonl(store, lines(old))
        new = tickets(301, 900, tag="renewed ")
        await import_jsonl(store, lines(new), replace=True)
        docs = old[:300] + new
        checked(store)
        await searches_find_their_rows(store, docs)
        assert await found(store, TICKET, "renewed") == list(range(301, 901))
        return {}
    finally:
        await store.close()


async def nested_and_string_ids(directory: Path) -> dict[str, Any]:
    """Tickets with messages and notes (integer ids, staged) beside shows and episodes (slugs: triggers live)."""
    store = await opened(directory, TREE)
    try:
        docs = tickets(1, 500, notes=True)
        more = shows(200)
        await import_jsonl(store, lines(docs + more), resources=TREE)
        searched = checked(store)
        await searches_find_their_rows(store, docs)
        note_rows = [n for d in docs for n in d["notes"]]
        assert await found(store, NoteResource.declaration, "note kumquat") == expected(note_rows, "kumquat", "text")
        assert await found(store, ShowResource.declaration, "show vpn") == expected(more, "vpn", "title")
        return {"searched": searched}
    finally:
        await store.close()


SCENARIOS = [
    empty_staged,
    empty_staged_switch_off,
    empty_staged_untested_sqlite,
    empty_staged_self_check_fails,
    non_empty,
    replace,
    nested_and_string_ids,
]


def main() -> None:
    results: dict[str, Any] = {}
    saved = dict(vars(fts5_structure)), dict(search_build._SEARCH_BUILD_OPTIONS)
    for scenario in SCENARIOS:
        try:
            with tempfile.TemporaryDirectory() as directory:
                results[scenario.__name__] = {"facts": asyncio.run(scenario(Path(directory))), "error": None}
        except Exception:
            results[scenario.__name__] = {"facts": None, "error": traceback.format_exc()}
        finally:
            vars(fts5_structure).update(saved[0])
            search_build._SEARCH_BUILD_OPTIONS.update(saved[1])
    print(json.dumps({"sqlite": sqlite3.sqlite_version, "results": results}))


if __name__ == "__main__":
    main()

"""Bulk export and import (medusa-v2 export / import): JSON Lines round trips."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
from pathlib import Path
from urllib.parse import urlencode

import pytest

from medusa_v2.handler import encode_json
from medusa_v2.store.sqlite import SQLiteStore
from medusa_v2.transfer import TransferError, export_jsonl, import_jsonl

ROOT = Path(__file__).resolve().parent.parent
LAUNCHER = ROOT / "bin" / "medusa-v2"

T0 = "2026-01-02T03:04:05.000001Z"
T1 = "2026-01-03T03:04:05.123456Z"


def ticket(id, title="t", messages=(), **over):
    doc = {
        "id": id,
        "title": title,
        "description": "",
        "state": "open",
        "priority": 3,
        "assignee": None,
        "createdAt": T0,
        "updatedAt": T1,
    }
    doc.update(over)
    doc["messages"] = list(messages)
    return doc


def message(id, ticket_id, body="b", **over):
    doc = {"id": id, "ticketId": ticket_id, "author": "ann", "body": body, "createdAt": T0, "updatedAt": T0}
    doc.update(over)
    return doc


def jsonl(*docs) -> bytes:
    return b"".join(encode_json(d) + b"\n" for d in docs)


SAMPLE = [
    ticket(
        1, "Drucker streikt — ü ß 日本語 🙂", [message(10, 1, "Привет 🙂"), message(11, 1, "second")], assignee="zoë"
    ),
    ticket(2, "no messages", description='multi\nline "quoted" \\ text', state="pending", priority=5),
    ticket(9_223_372_036_854_775_807, "largest id", [message(12, 9_223_372_036_854_775_807)], state="closed"),
]


def counted(docs):
    """What an import of these ticket lines returns: the items per resource."""
    return {"ticket": len(docs), "message": sum(len(d["messages"]) for d in docs)}


def run(io_loop, coro):
    return io_loop.run_sync(lambda: coro)


def lines_of(data: bytes):
    return io.BytesIO(data)


def export_bytes(io_loop, store) -> bytes:
    out = io.BytesIO()
    run(io_loop, export_jsonl(store, out))
    return out.getvalue()


def count(store, table):
    return store.db.execute(f"SELECT COUNT(*) FROM {table}").fetchone()[0]


@pytest.mark.gen_test
async def test_import_then_get_is_the_exported_representation(io_loop, store, client):
    data = jsonl(*SAMPLE)
    assert await import_jsonl(store, lines_of(data)) == {"ticket": 3, "message": 3}
    for doc in SAMPLE:
        r = await client.get(f"/ticket/{doc['id']}")
        assert r.code == 200
        expected = {k: v for k, v in doc.items() if k != "messages"}
        assert r.body == encode_json(expected)  # byte for byte what the line holds
        r = await client.get(f"/ticket/{doc['id']}/message")
        assert r.body == encode_json(doc["messages"])
    out = io.BytesIO()
    assert await export_jsonl(store, out) == {"ticket": 3, "message": 3}
    assert out.getvalue() == data


@pytest.mark.gen_test
async def test_round_trip_of_data_made_through_the_api(io_loop, store, client, tmp_path):
    for i in range(25):
        r = await client.post("/ticket", json_body={"title": f"printer {i} ✓", "assignee": "bob" if i % 2 else None})
        assert r.code == 201
        if i % 3 == 0:
            await client.post(f"/ticket/{r.json['id']}/message", json_body={"author": "ann", "body": f"hello {i} ⚙"})
    await client.patch("/ticket/3", json_body={"state": "closed"})
    await client.delete("/ticket/4")
    exported = io.BytesIO()
    await export_jsonl(store, exported)
    other = SQLiteStore(str(tmp_path / "other.db"))
    await other.open()
    try:
        await import_jsonl(other, lines_of(exported.getvalue()))
        again = io.BytesIO()
        await export_jsonl(other, again)
        assert again.getvalue() == exported.getvalue()
        for table in ("ticket", "message"):
            assert count(other, table) == count(store, table)
        # The search index and the counts follow the imported rows.
        other.db.execute("INSERT INTO ticket_search (ticket_search) VALUES ('integrity-check')")
        other.db.execute("INSERT INTO message_search (message_search) VALUES ('integrity-check')")
    finally:
        await other.close()
    assert len(exported.getvalue().splitlines()) == 24


@pytest.mark.gen_test
async def test_imported_rows_are_searchable_and_counted(io_loop, store, client):
    await import_jsonl(store, lines_of(jsonl(*SAMPLE)))
    r = await client.get("/ticket?" + urlencode({"q": "日本語"}))
    assert [t["id"] for t in r.json] == [1]
    r = await client.get("/ticket")
    assert r.headers["X-Pagination-Count"] == "3"
    r = await client.get("/ticket/1/message?" + urlencode({"q": "Привет"}))
    assert [m["id"] for m in r.json] == [10]


@pytest.mark.gen_test
async def test_export_streams_in_batches(io_loop, store, monkeypatch):
    import medusa_v2.transfer as transfer

    monkeypatch.setattr(transfer, "BATCH", 7)
    docs = [ticket(i, f"t{i}", [message(1000 + i, i)] if i % 5 == 0 else []) for i in range(1, 51)]
    await import_jsonl(store, lines_of(jsonl(*docs)))
    out = io.BytesIO()
    assert await export_jsonl(store, out) == {"ticket": 50, "message": 10}
    assert out.getvalue() == jsonl(*docs)


@pytest.mark.parametrize(
    ("line", "reason"),
    [
        (b"{not json", "malformed JSON"),
        (encode_json(ticket(3)) + b" {}", "malformed JSON: Extra data"),
        (encode_json(ticket(3)) + b"\x0c", "malformed JSON: Extra data"),  # not JSON whitespace
        (b"[1, 2]", "must be a JSON object"),
        (b"\xff\xfe", "not valid UTF-8"),
        (encode_json({k: v for k, v in ticket(3).items() if k != "title"}), "title: required field"),
        (encode_json(ticket(3, "")), "title: must not be empty"),
        (encode_json(ticket(3, priority=9)), "priority: must be between 1 and 5"),
        (encode_json(ticket(3, priority=True)), "priority: must be an integer"),
        (encode_json(ticket(3, state="done")), "state: must be one of"),
        (encode_json(ticket(3, colour="red")), "colour: unknown field"),
        (encode_json(ticket(0)), "id: must be between 1 and"),
        (encode_json(ticket(2**63)), "id: must be between 1 and"),
        (encode_json({k: v for k, v in ticket(3).items() if k != "id"}), "id: required field"),
        (encode_json(ticket(3, createdAt="2026-01-02 03:04:05Z")), "createdAt: must be an RFC 3339 timestamp"),
        (encode_json(ticket(3, updatedAt="2026-13-02T03:04:05.000000Z")), "updatedAt: must be an RFC 3339"),
        (encode_json(ticket(3, updatedAt="2026-01-02T03:04:05.000000")), "updatedAt: must be an RFC 3339"),
        (encode_json(ticket(3, updatedAt="2026-06-30T23:59:60Z")), "updatedAt: must be an RFC 3339"),
        (encode_json(ticket(3, updatedAt="2025-01-01T00:00:00.000000Z")), "updatedAt: must not be earlier"),
        (encode_json(ticket(3, "nul \u0000 inside")), "title: must not contain NUL"),
        (
            b'{"id": 3, "title": "lone \\ud800", "createdAt": "'
            + T0.encode()
            + b'", "updatedAt": "'
            + T1.encode()
            + b'"}',
            "title: must be valid Unicode",
        ),
        (b'{"id": 3, "title": "x", "priority": NaN}', "NaN is not valid JSON"),
        (encode_json(ticket(3, messages=[message(20, 4)])), "messages[0].ticketId: must be the id"),
        (encode_json(ticket(3, messages=[message(20, 3, body="")])), "messages[0].body: must not be empty"),
        (
            encode_json(ticket(3, messages=[{"id": 20, "ticketId": 3, "author": "a", "body": "b"}])),
            "messages[0].createdAt: required field",
        ),
        (encode_json({**ticket(3), "messages": {"id": 1}}), "messages: must be an array"),
    ],
)
@pytest.mark.gen_test
async def test_a_bad_line_stops_the_import_and_nothing_is_applied(io_loop, store, line, reason):
    data = jsonl(ticket(1, messages=[message(1, 1)]), ticket(2)) + line + b"\n" + jsonl(ticket(4))
    with pytest.raises(TransferError) as caught:
        await import_jsonl(store, lines_of(data))
    assert str(caught.value).startswith("line 3: "), str(caught.value)
    assert reason in str(caught.value)
    assert count(store, "ticket") == count(store, "message") == 0
    assert not store.db.in_transaction


@pytest.mark.gen_test
async def test_a_bad_line_in_a_later_batch_undoes_earlier_batches(io_loop, store, monkeypatch):
    import medusa_v2.transfer as transfer

    schema = store.db.execute("SELECT type, name, sql FROM sqlite_master ORDER BY name").fetchall()
    monkeypatch.setattr(transfer, "IMPORT_BATCH", 2)
    data = jsonl(*[ticket(i) for i in range(1, 8)]) + b"{}\n"
    with pytest.raises(TransferError, match="^line 8: "):
        await import_jsonl(store, lines_of(data))
    assert count(store, "ticket") == 0
    # Indexes and triggers set aside for a load into empty tables are back.
    assert store.db.execute("SELECT type, name, sql FROM sqlite_master ORDER BY name").fetchall() == schema
    r = await store.list_rows(transfer_ticket(), transfer.ListQuery())
    assert r.count == 0


@pytest.mark.gen_test
async def test_blank_lines_are_skipped_and_ticket_id_may_be_omitted(io_loop, store):
    m = {k: v for k, v in message(5, 1).items() if k != "ticketId"}
    data = b"\n" + jsonl(ticket(1, messages=[m])) + b"  \n \t\r\n" + b" \t" + encode_json(ticket(2)) + b" \r\n"
    assert await import_jsonl(store, lines_of(data)) == {"ticket": 2, "message": 1}
    assert (await store.get_row(transfer_message(), 5))["ticket_id"] == 1


def transfer_message():
    from medusa_v2.resources.message import MESSAGE

    return MESSAGE


@pytest.mark.gen_test
async def test_an_existing_id_is_an_error_and_nothing_is_applied(io_loop, store, client):
    r = await client.post("/ticket", json_body={"id": 2, "title": "already here"})
    assert r.code == 201
    data = jsonl(ticket(1), ticket(2, "new"), ticket(3))
    with pytest.raises(TransferError) as caught:
        await import_jsonl(store, lines_of(data))
    assert str(caught.value) == (
        "line 2: ticket id 2 already exists or is given twice (use --replace to replace existing items)"
    )
    assert [row[0] for row in store.db.execute("SELECT id FROM ticket")] == [2]
    assert (await client.get("/ticket/2")).json["title"] == "already here"


@pytest.mark.gen_test
async def test_an_existing_message_id_is_an_error(io_loop, store, client):
    await client.post("/ticket", json_body={"id": 1, "title": "x"})
    r = await client.post("/ticket/1/message", json_body={"author": "a", "body": "b"})
    taken = r.json["id"]
    with pytest.raises(TransferError, match=f"^line 2: message id {taken} already exists"):
        await import_jsonl(store, lines_of(jsonl(ticket(5), ticket(6, messages=[message(taken, 6)]))))
    assert count(store, "ticket") == 1


@pytest.mark.gen_test
async def test_an_id_given_twice_is_an_error(io_loop, store):
    for replace in (False, True):
        with pytest.raises(TransferError, match="^line 3: ticket id 1 already exists or is given twice"):
            await import_jsonl(store, lines_of(jsonl(ticket(1), ticket(2), ticket(1))), replace=replace)
        assert count(store, "ticket") == 0
    with pytest.raises(TransferError, match="^line 2: message id 7 "):
        await import_jsonl(
            store, lines_of(jsonl(ticket(1, messages=[message(7, 1)]), ticket(2, messages=[message(7, 2)])))
        )


@pytest.mark.gen_test
async def test_replace_replaces_tickets_and_their_messages(io_loop, store, client):
    await import_jsonl(store, lines_of(jsonl(ticket(1, "old", [message(1, 1), message(2, 1)]), ticket(2, "keep"))))
    new = ticket(1, "new", [message(3, 1, "fresh")], priority=1)
    assert await import_jsonl(store, lines_of(jsonl(new, ticket(5))), replace=True) == {"ticket": 2, "message": 1}
    assert (await client.get("/ticket/1")).body == encode_json({k: v for k, v in new.items() if k != "messages"})
    assert [m["id"] for m in (await client.get("/ticket/1/message")).json] == [3]
    assert (await client.get("/ticket/2")).json["title"] == "keep"
    assert (await client.get("/ticket?q=old")).json == []
    assert (await client.get("/ticket")).headers["X-Pagination-Count"] == "3"
    store.db.execute("INSERT INTO ticket_search (ticket_search) VALUES ('integrity-check')")


# -- the commands --


def cli(settings, *args, stdin: bytes | None = None):
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.run(
        [sys.executable, str(LAUNCHER), *args[:1], "--config", str(settings.config_path), *args[1:]],
        input=stdin,
        capture_output=True,
        timeout=60,
        env=env,
    )


def test_commands_round_trip_through_files_and_pipes(settings, tmp_path):
    source = tmp_path / "in.jsonl"
    source.write_bytes(jsonl(*SAMPLE))
    done = cli(settings, "import", str(source))
    assert done.returncode == 0, done.stderr
    assert b"3 ticket(s) and 3 message(s) imported" in done.stderr
    assert b"\r" not in done.stderr  # no progress bar when stderr is not a terminal
    out = cli(settings, "export", "-")
    assert out.returncode == 0, out.stderr
    assert out.stdout == jsonl(*SAMPLE)
    target = tmp_path / "backup.jsonl"
    assert cli(settings, "export", str(target)).returncode == 0
    assert target.read_bytes() == jsonl(*SAMPLE)
    assert not (tmp_path / "backup.jsonl.partial").exists()
    # stdin: a conflict without --replace, then with it.
    again = cli(settings, "import", "-", stdin=jsonl(ticket(2, "changed")))
    assert again.returncode == 1
    assert b"line 1: ticket id 2 already exists" in again.stderr
    assert b"nothing was imported" in again.stderr
    replaced = cli(settings, "import", "-", "--replace", stdin=jsonl(ticket(2, "changed")))
    assert replaced.returncode == 0, replaced.stderr
    assert json.loads(cli(settings, "export", "-").stdout.splitlines()[1])["title"] == "changed"


def test_command_reports_a_bad_line_with_status_1(settings):
    bad = cli(settings, "import", "-", stdin=jsonl(ticket(1)) + b'{"id": 2}\n')
    assert bad.returncode == 1
    assert bad.stderr.decode().strip() == (
        "medusa-v2: import failed: line 2: createdAt: required field (an import keeps ids and timestamps); "
        "title: required field; updatedAt: required field (an import keeps ids and timestamps); nothing was imported"
    )
    assert cli(settings, "export", "-").stdout == b""


def test_command_missing_file_is_status_1(settings, tmp_path):
    r = cli(settings, "import", str(tmp_path / "nope.jsonl"))
    assert r.returncode == 1
    assert b"No such file or directory" in r.stderr


@pytest.mark.gen_test
async def test_ids_repeated_across_batches_of_a_fresh_import_name_their_line(io_loop, store, monkeypatch):
    import medusa_v2.transfer as transfer

    monkeypatch.setattr(transfer, "IMPORT_BATCH", 2)  # the repeat is in another batch, past the first's check
    data = jsonl(ticket(1), ticket(2), ticket(3, messages=[message(9, 3)]), ticket(4), ticket(5), ticket(2))
    with pytest.raises(TransferError, match="^line 6: ticket id 2 already exists or is given twice"):
        await import_jsonl(store, lines_of(data))
    data = jsonl(ticket(1, messages=[message(9, 1)]), ticket(2), ticket(3, messages=[message(9, 3)]))
    with pytest.raises(TransferError, match="^line 3: message id 9 already exists or is given twice"):
        await import_jsonl(store, lines_of(data))
    assert count(store, "ticket") == count(store, "message") == 0
    assert not store.db.in_transaction


@pytest.mark.gen_test
async def test_every_character_a_field_may_hold_survives_a_fresh_import(io_loop, store):
    text = 'tab\t unit\x1f bell\x07 quote" backslash\\ slash/ \u2028 é ✓ 😀 \ufeff'
    doc = ticket(7, text, [message(8, 7, text + "\n" + text)], description=text, assignee=text)
    data = jsonl(doc)
    assert await import_jsonl(store, lines_of(data)) == {"ticket": 1, "message": 1}
    row = await store.get_row(transfer_message(), 8)
    assert row["body"] == text + "\n" + text
    out = io.BytesIO()
    await export_jsonl(store, out)
    assert out.getvalue() == data
    found = await store.list_rows(transfer_ticket(), transfer_query(q="unit\x1f bell"))
    assert [r["id"] for r in found.rows] == [7]  # the search index holds the same text


def transfer_ticket():
    from medusa_v2.resources.ticket import TICKET

    return TICKET


def transfer_query(**kwargs):
    from medusa_v2.listing import ListQuery

    return ListQuery(**kwargs)


# -- the search indexes of an import into empty tables: built beside it, then moved in --

WORDS = ["printer", "jam", "Straße", "日本語", "kumquat", "vpn", "tab\there", "😀 emoji", "a],[b", 'quo"te']


def varied_tickets(n):
    """Tickets whose titles, descriptions and message bodies mix WORDS differently, some with messages."""
    docs, mid = [], 0
    for i in range(1, n + 1):
        msgs = []
        for _ in range(i % 3):
            mid += 1
            msgs.append(message(mid, i, f"{WORDS[(i + mid) % len(WORDS)]} reply {mid}"))
        title = f"{WORDS[i % len(WORDS)]} {i}"
        docs.append(ticket(i, title, msgs, description=f"{WORDS[(i * 7) % len(WORDS)]} and {WORDS[(i * 3) % 5]}"))
    return docs


def scratch_files(directory):
    return sorted(p.name for p in Path(directory).glob(".*import-search-*"))


def search_threads():
    import threading

    return [t for t in threading.enumerate() if t.name == "medusa-import-search"]


def integrity_check(db):
    for search in ("ticket_search", "message_search"):
        db.execute(f"INSERT INTO {search} ({search}) VALUES ('integrity-check')")


async def q_ids(client, path, q):
    r = await client.get(f"{path}?" + urlencode({"q": q, "limit": 100}))
    assert r.code == 200, r.body
    return sorted(item["id"] for item in r.json)


def small_batches(monkeypatch):
    """Batches of 3 tickets, search statements of 4 rows: several segments for the build to merge."""
    import medusa_v2.store.sqlite.search_build as search_build
    import medusa_v2.transfer as transfer

    monkeypatch.setattr(transfer, "IMPORT_BATCH", 3)
    monkeypatch.setattr(search_build, "_TEXT_CHUNK", 4)


@pytest.mark.gen_test
async def test_a_fresh_import_moves_in_search_indexes_that_match_the_rows(io_loop, store, client, monkeypatch):
    from medusa_v2.store.sqlite import SEARCH_AUTOMERGE

    small_batches(monkeypatch)
    docs = varied_tickets(40)
    assert await q_ids(client, "/ticket", "printer") == []  # the store's connection has read the old index
    assert await import_jsonl(store, lines_of(jsonl(*docs))) == counted(docs)
    assert scratch_files(store.path.rsplit("/", 1)[0]) == [] and search_threads() == []
    integrity_check(store.db)  # FTS5 checks the moved index against the ticket and message rows
    for word in ("printer", "straße", "STRASSE"[:3], "日本語", "a],[b", 'quo"te', "😀 emoji", "tab\there"):
        want = sorted(d["id"] for d in docs if word.lower() in (d["title"] + " " + d["description"]).lower())
        assert await q_ids(client, "/ticket", word) == want, word
    bodies = {m["id"]: m["body"] for d in docs for m in d["messages"] if m["ticketId"] == 5}
    assert await q_ids(client, "/ticket/5/message", "reply") == sorted(bodies)
    # The store's own settings, not the build's: its merge level, and no flush size of the build's.
    config = dict(store.db.execute("SELECT k, v FROM ticket_search_config"))
    assert config.get("automerge") == SEARCH_AUTOMERGE and not {"hashsize", "crisismerge"} & set(config)
    # Writes after the import keep the moved index exact.
    r = await client.post("/ticket", json_body={"title": "a kumquat printer", "description": "new"})
    created = r.json["id"]
    await client.patch("/ticket/1", json_body={"title": "renamed kumquat"})
    await client.delete("/ticket/2")
    await client.post("/ticket/3/message", json_body={"author": "ann", "body": "kumquat reply"})
    integrity_check(store.db)
    want = sorted(d["id"] for d in docs[2:] if "kumquat" in (d["title"] + d["description"]).lower())
    assert await q_ids(client, "/ticket", "kumquat") == sorted([1, created, *want])


@pytest.mark.gen_test
async def test_a_fresh_import_into_a_memory_store_keeps_its_search_exact(io_loop, monkeypatch):
    from medusa_v2.listing import ListQuery
    from medusa_v2.resources.message import MESSAGE
    from medusa_v2.resources.ticket import TICKET

    small_batches(monkeypatch)
    store = SQLiteStore(":memory:")
    await store.open()
    try:
        # The connection that imports keeps serving: nothing it knew of the old index may remain.
        assert (await store.list_rows(TICKET, ListQuery(q="printer"))).count == 0
        docs = varied_tickets(25)
        await import_jsonl(store, lines_of(jsonl(*docs)))
        integrity_check(store.db)
        want = sorted(d["id"] for d in docs if "printer" in d["title"] + d["description"])
        assert sorted(r["id"] for r in (await store.list_rows(TICKET, ListQuery(q="printer", limit=100))).rows) == want
        await store.insert_row(TICKET, {"title": "one more printer"}, 1_800_000_000.0)
        await store.insert_row(MESSAGE, {"author": "a", "body": "printer"}, 1_800_000_000.0, (TICKET, 1))
        integrity_check(store.db)
        assert (await store.list_rows(TICKET, ListQuery(q="printer", limit=100))).count == len(want) + 1
        assert store.db.execute("PRAGMA database_list").fetchall()[1:] == []  # the build's file is detached
    finally:
        await store.close()
    assert search_threads() == []


@pytest.mark.gen_test
async def test_a_failing_search_build_fails_the_import_and_leaves_nothing(io_loop, store, client, monkeypatch):
    import sqlite3

    import medusa_v2.store.sqlite.search_build as search_build
    from medusa_v2.store.base import StoreUnavailable

    small_batches(monkeypatch)
    calls = []

    def full(self, resource):
        calls.append(resource)
        raise sqlite3.OperationalError("database or disk is full")

    monkeypatch.setattr(search_build._SearchBuild, "_index", full)
    with pytest.raises(StoreUnavailable, match="database or disk is full"):
        await import_jsonl(store, lines_of(jsonl(*varied_tickets(30))))
    assert calls  # the build did fail (the import did not pass by it)
    assert count(store, "ticket") == count(store, "message") == 0
    assert scratch_files(store.path.rsplit("/", 1)[0]) == [] and search_threads() == []
    monkeypatch.undo()
    docs = varied_tickets(5)
    assert await import_jsonl(store, lines_of(jsonl(*docs))) == counted(docs)
    integrity_check(store.db)
    assert await q_ids(client, "/ticket", "printer") == [
        d["id"] for d in docs if "printer" in d["title"] + d["description"]
    ]


@pytest.mark.gen_test
async def test_a_failure_after_the_search_tables_are_replaced_rolls_them_back(io_loop, store, client, monkeypatch):
    import sqlite3

    import medusa_v2.store.sqlite.search_build as search_build
    from medusa_v2.store.base import StoreUnavailable

    await client.post("/ticket", json_body={"title": "lone printer"})
    await client.delete("/ticket/1")  # empty again: the next import is a fresh one
    schema = store.db.execute("SELECT type, name, sql FROM sqlite_master ORDER BY name").fetchall()
    move_into = search_build._SearchBuild.move_into

    def move_then_fail(self, db):
        move_into(self, db)
        raise sqlite3.OperationalError("disk I/O error")

    monkeypatch.setattr(search_build._SearchBuild, "move_into", move_then_fail)
    with pytest.raises(StoreUnavailable, match="disk I/O error"):
        await import_jsonl(store, lines_of(jsonl(*varied_tickets(12))))
    assert count(store, "ticket") == 0
    assert store.db.execute("SELECT type, name, sql FROM sqlite_master ORDER BY name").fetchall() == schema
    assert scratch_files(store.path.rsplit("/", 1)[0]) == [] and search_threads() == []
    integrity_check(store.db)
    r = await client.post("/ticket", json_body={"title": "second printer"})
    assert await q_ids(client, "/ticket", "printer") == [r.json["id"]]
    integrity_check(store.db)


@pytest.mark.gen_test
async def test_a_scratch_file_left_by_a_killed_import_is_deleted_by_the_next(io_loop, store, client):
    directory = Path(store.path).parent
    name = Path(store.path).name
    left = directory / f".{name}.import-search-killed.db"
    left.write_bytes(b"half an index")
    other = directory / ".other.db.import-search-running.db"  # another database's: not ours to delete
    other.write_bytes(b"")
    await import_jsonl(store, lines_of(jsonl(*varied_tickets(5))))
    assert scratch_files(directory) == [other.name]
    integrity_check(store.db)


def search_segments(store, search="ticket_search"):
    """(level, segment id, first page, last page) of each segment of a search index."""
    from medusa_v2.store.sqlite import fts5_structure

    record = store.db.execute(f"SELECT block FROM {search}_data WHERE id = 10").fetchone()[0]
    read = fts5_structure._structure_segments(record)
    assert read is not None
    return read[1]


@pytest.mark.gen_test
@pytest.mark.parametrize("hashsize", [None, 128 << 10])
async def test_writes_after_a_fresh_import_do_not_soon_merge_the_whole_search_index(
    io_loop, store, monkeypatch, hashsize
):
    import medusa_v2.store.sqlite.search_build as search_build
    from medusa_v2.resources.ticket import TICKET

    if hashsize is not None:  # FTS5 flushes a segment per 128 KB of terms: a build of several segments
        monkeypatch.setitem(search_build._SEARCH_BUILD_OPTIONS, "hashsize", hashsize)
    docs = [ticket(i, f"printer {i}", description=f"kumquat {i % 97} jam") for i in range(1, 5001)]
    await import_jsonl(store, lines_of(jsonl(*docs)))
    bulk = search_segments(store)
    if hashsize is None:
        # One segment, on the level an index grown by 5,000 writes keeps its oldest rows:
        # 16 ** 4 >= 5,000 > 16 ** 3 (FTS5 merges a level's 16 segments into the next).
        assert [level for level, *_ in bulk] == [3]
    else:
        # Each on a level of its own from where an index grown by its rows keeps them, the
        # first written (lowest id) highest.
        assert 3 <= len(bulk) < 16, bulk
        assert 16**2 < 5000 // len(bulk) <= 16**3  # rows per segment: from level 2 up
        assert [level for level, *_ in bulk] == list(range(2, 2 + len(bulk)))
        ids = [segment_id for _, segment_id, *_ in bulk]
        assert ids == sorted(ids, reverse=True)
    integrity_check(store.db)
    # Left on level 1 ('optimize' alone put its one segment there), a segment was merged
    # again by these writes (rewritten at the 8th hundred here); where they are, they stay.
    for i in range(1000):
        await store.insert_row(TICKET, {"title": f"new printer {i}", "description": "x" * 50}, 1_800_000_000.0 + i)
    after = search_segments(store)
    assert all(segment in after for segment in bulk)
    integrity_check(store.db)
    r = await store.list_rows(TICKET, transfer_query(q="printer", limit=1))
    assert r.count == 6000
    r = await store.list_rows(TICKET, transfer_query(q="kumquat 13 ", limit=100))
    assert [row["id"] for row in r.rows] == [i for i in range(1, 5001) if i % 97 == 13]


def structure_record(levels, writes=7):
    """An FTS5 structure record (format 1): `levels` lists each level's (segment id, first, last page)s."""
    from medusa_v2.store.sqlite.fts5_structure import _put_varint

    total = sum(len(level) for level in levels)
    body = [_put_varint(len(levels)), _put_varint(total), _put_varint(writes)]
    for level in levels:
        body += [b"\x00", _put_varint(len(level)), *(_put_varint(v) for segment in level for v in segment)]
    return b"\x00\x00\x00\x03" + b"".join(body)


def test_a_built_index_segments_go_on_levels_of_their_own_or_are_refused():
    from medusa_v2.store.sqlite.fts5_structure import _structure_on_levels, _structure_segments

    three = [(1, 1, 11), (2, 1, 12), (3, 1, 300)]
    moved = _structure_on_levels(structure_record([three]), 5)
    assert _structure_segments(moved) == (7, [(5, 3, 1, 300), (6, 2, 1, 12), (7, 1, 1, 11)])
    # More segments than levels left: evenly, the oldest highest.
    eight = [(i, 1, 2) for i in range(1, 9)]
    spread = _structure_segments(_structure_on_levels(structure_record([eight]), 61))[1]
    levels = [(level, segment_id) for level, segment_id, *_ in spread]
    assert levels == [(61, 7), (61, 8), (62, 4), (62, 5), (62, 6), (63, 1), (63, 2), (63, 3)]
    # A level of 16 would be merged at the next write: refused, as is anything not all on level 0.
    assert _structure_on_levels(structure_record([[(i, 1, 2) for i in range(1, 50)]]), 61) is None
    assert _structure_on_levels(structure_record([[], three]), 5) is None
    assert _structure_on_levels(structure_record([three]), 0) is None
    assert _structure_on_levels(structure_record([three]) + b"\x00", 5) is None


# -- an exclusive import (the import command) writes through a rollback journal when it can --


def journal_files(store):
    name = Path(store.path).name
    return tuple(sorted(p.name[len(name) :] for p in Path(store.path).parent.glob(name + "-*")))


class Watched:
    """The lines of `data`, noting the database's journal files as each is read."""

    def __init__(self, store, data: bytes):
        self.store = store
        self.data = data
        self.seen: set[tuple[str, ...]] = set()

    def __iter__(self):
        for line in self.data.splitlines(keepends=True):
            self.seen.add(journal_files(self.store))
            yield line


@pytest.mark.gen_test
async def test_an_exclusive_import_writes_through_a_rollback_journal_then_goes_back_to_wal(io_loop, store, client):
    import sqlite3

    docs = varied_tickets(40)
    lines = Watched(store, jsonl(*docs))
    assert await import_jsonl(store, lines, exclusive=True) == counted(docs)
    assert lines.seen == {("-journal",)}  # no WAL while it ran: its pages were written once
    assert store.db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"  # the store's own connection, again
    integrity_check(store.db)
    want = sorted(d["id"] for d in docs if "printer" in (d["title"] + " " + d["description"]).lower())
    assert await q_ids(client, "/ticket", "printer") == want
    other = sqlite3.connect(store.path)
    try:
        assert other.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert other.execute("SELECT COUNT(*) FROM ticket").fetchone()[0] == 40
    finally:
        other.close()
    r = await client.post("/ticket", json_body={"title": "after the import"})
    assert r.code == 201 and r.json["id"] == 41


@pytest.mark.gen_test
async def test_an_exclusive_import_goes_through_the_wal_while_another_connection_reads(io_loop, store):
    import sqlite3

    other = sqlite3.connect(store.path, isolation_level=None)
    try:
        assert other.execute("SELECT COUNT(*) FROM ticket").fetchone()[0] == 0
        lines = Watched(store, jsonl(*varied_tickets(20)))
        await import_jsonl(store, lines, exclusive=True)
        assert lines.seen and all("-wal" in seen and "-journal" not in seen for seen in lines.seen)
        assert other.execute("SELECT COUNT(*) FROM ticket").fetchone()[0] == 20  # it read on meanwhile
    finally:
        other.close()
    assert store.db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


@pytest.mark.gen_test
async def test_a_failed_exclusive_import_leaves_nothing_and_the_store_open(io_loop, store, client):
    schema = store.db.execute("SELECT type, name, sql FROM sqlite_master ORDER BY name").fetchall()
    data = jsonl(*varied_tickets(20)) + b'{"id": 21}\n'
    with pytest.raises(TransferError, match="^line 21: "):
        await import_jsonl(store, lines_of(data), exclusive=True)
    assert count(store, "ticket") == count(store, "message") == 0
    assert store.db.execute("SELECT type, name, sql FROM sqlite_master ORDER BY name").fetchall() == schema
    assert store.db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert journal_files(store) != () and "-journal" not in journal_files(store)
    r = await client.post("/ticket", json_body={"title": "lone printer"})
    assert await q_ids(client, "/ticket", "printer") == [r.json["id"]]
    integrity_check(store.db)


def test_an_import_command_killed_midway_leaves_the_database_as_it_was(settings, tmp_path):
    import signal
    import sqlite3
    import time

    source = tmp_path / "big.jsonl"
    source.write_bytes(jsonl(*varied_tickets(30_000)))
    from medusa_v2.store.sqlite import path_from_url

    database = Path(path_from_url(settings.database_url))
    assert cli(settings, "import", "-", stdin=jsonl(ticket(1, "kept printer"))).returncode == 0
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    argv = [sys.executable, str(LAUNCHER), "import", "--config", str(settings.config_path), "--replace", str(source)]
    proc = subprocess.Popen(argv, env=env, stderr=subprocess.PIPE)
    journal = Path(f"{database}-journal")
    # The run's journal: there for 0.1 s (opening the store writes one for a moment).
    deadline, since = time.monotonic() + 30, None
    while proc.poll() is None and time.monotonic() < deadline:
        if not journal.exists():
            since = None
        elif since is None:
            since = time.monotonic()
        elif time.monotonic() - since > 0.1:
            break
        time.sleep(0.005)
    assert proc.poll() is None, proc.stderr.read() if proc.stderr else ""
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    proc.stderr.close()
    assert journal.exists()  # a hot journal: the next connection rolls the run back
    db = sqlite3.connect(database)
    try:
        assert db.execute("SELECT id, title FROM ticket").fetchall() == [(1, "kept printer")]
        assert db.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
    finally:
        db.close()
    done = cli(settings, "import", "-", "--replace", stdin=jsonl(ticket(1, "replaced"), ticket(2)))
    assert done.returncode == 0, done.stderr
    assert [json.loads(line)["title"] for line in cli(settings, "export", "-").stdout.splitlines()] == ["replaced", "t"]
    check = sqlite3.connect(database)
    try:
        assert check.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        check.execute("INSERT INTO ticket_search (ticket_search) VALUES ('integrity-check')")
    finally:
        check.close()


@pytest.mark.parametrize(
    ("given", "kept"),
    [
        ("2026-01-01T00:00:00Z", "2026-01-01T00:00:00.000000Z"),
        ("2026-01-01T01:30:00+01:00", "2026-01-01T00:30:00.000000Z"),
        ("2025-12-31T19:00:00.5-05:00", "2026-01-01T00:00:00.500000Z"),
        ("2026-01-01t00:00:00.123456789z", "2026-01-01T00:00:00.123456Z"),
    ],
)
@pytest.mark.gen_test
async def test_any_rfc3339_timestamp_is_imported_normalised_to_utc_microseconds(io_loop, store, given, kept):
    """Other tools write `Z` without fractions, offsets, fewer or more fraction digits: all are RFC 3339."""
    doc = {**ticket(3), "createdAt": given, "updatedAt": given}
    assert (await import_jsonl(store, lines_of(encode_json(doc) + b"\n")))["ticket"] == 1
    row = store.db.execute("SELECT created_at, updated_at FROM ticket WHERE id = 3").fetchone()
    assert tuple(row) == (kept, kept)

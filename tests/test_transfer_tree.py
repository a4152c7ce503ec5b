"""Export and import follow the tree of mounted resources: an embedder's notes, shows and episodes.

examples/mypkg declares `note` (nested under ticket, integer ids), `show` (top-level,
slug ids) and `episode` (nested under show, slugs unique within their show). Every
test runs on both stores.
"""

from __future__ import annotations

import io
import sys
from pathlib import Path

import pytest

from medusa_v2.declaration import Declaration, Field
from medusa_v2.handler import encode_json
from medusa_v2.resources.message import MessageResource
from medusa_v2.resources.stored import StoredResource
from medusa_v2.resources.ticket import TicketResource
from medusa_v2.transfer import TransferError, export_jsonl, import_jsonl, mounted_resources

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT / "examples") not in sys.path:
    sys.path.insert(0, str(ROOT / "examples"))

from mypkg.notes import NoteResource  # noqa: E402
from mypkg.shows import EpisodeResource, ShowResource  # noqa: E402

pytestmark = pytest.mark.stores("sqlite", "postgresql")

MOUNTED = [TicketResource, MessageResource, NoteResource, ShowResource, EpisodeResource]
TABLES = ("ticket", "message", "note", "show", "episode")

T0 = "2026-01-02T03:04:05.000001Z"
T1 = "2026-01-03T03:04:05.123456Z"


async def sql(store, statement, params=()):
    """Run one statement on the test's store; return its rows (none for DDL)."""
    if hasattr(store, "pool"):
        async with store.pool.connection() as conn:
            cur = await conn.execute(statement.replace("?", "%s"), params)
            return await cur.fetchall() if cur.description else []
    return store.db.execute(statement, params).fetchall()


@pytest.fixture
def resources():
    """Mount the example's resources beside the built-in ones: the store derives their tables."""
    return [*MOUNTED, ReactionResource]


def ticket(id, title="t", messages=(), notes=(), **over):
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
    doc["notes"] = list(notes)
    return doc


def message(id, ticket_id, body="b"):
    return {"id": id, "ticketId": ticket_id, "author": "ann", "body": body, "createdAt": T0, "updatedAt": T0}


def note(id, ticket_id, text="n", **over):
    doc = {
        "id": id,
        "ticketId": ticket_id,
        "kind": "comment",
        "rank": 0,
        "text": text,
        "createdAt": T0,
        "updatedAt": T1,
    }
    doc.update(over)
    return doc


def show(id, title="a show", episodes=(), **over):
    doc = {"resource": "show", "id": id, "title": title, "status": "continuing", "createdAt": T0, "updatedAt": T1}
    doc.update(over)
    doc["episodes"] = list(episodes)
    return doc


def episode(id, show_id, name="", **over):
    doc = {"id": id, "showId": show_id, "name": name, "watched": 0, "createdAt": T0, "updatedAt": T0}
    doc.update(over)
    return doc


def jsonl(*docs) -> bytes:
    return b"".join(encode_json(d) + b"\n" for d in docs)


def without(doc, *keys):
    return {k: v for k, v in doc.items() if k not in keys}


SAMPLE = [
    ticket(1, "first", [message(10, 1, "hello")], [note(20, 1, "call back"), note(21, 1, "done", kind="done", rank=7)]),
    ticket(2, "no children"),
    ticket(3, "notes only", notes=[note(22, 3, "ünïcode ✓ 🙂")]),
    show("tvdb83462", "Castle", [episode("s01e01", "tvdb83462", "Flowers"), episode("s01e02", "tvdb83462")]),
    show("imdb7", "Other", [episode("s01e01", "imdb7", "the same id, another show")], status="ended"),
    show("tvdb1", "no episodes"),
]
EVERYTHING = {"ticket": 3, "message": 1, "note": 3, "show": 3, "episode": 3}


async def counts(store):
    return {table: (await sql(store, f"SELECT COUNT(*) FROM {table}"))[0][0] for table in TABLES}


async def exported(store) -> bytes:
    out = io.BytesIO()
    await export_jsonl(store, out, resources=MOUNTED)
    return out.getvalue()


async def search_is_exact(store):
    """SQLite: FTS5 checks each search index against its rows (PostgreSQL indexes the rows themselves)."""
    if not hasattr(store, "pool"):
        for search in ("ticket_search", "message_search", "note_search", "show_search"):
            await sql(store, f"INSERT INTO {search} ({search}) VALUES ('integrity-check')")


@pytest.mark.gen_test
async def test_tickets_with_messages_and_notes_and_shows_with_episodes_round_trip(io_loop, store, client):
    data = jsonl(*SAMPLE)
    assert await import_jsonl(store, io.BytesIO(data), resources=MOUNTED) == EVERYTHING
    assert await counts(store) == EVERYTHING
    # Each item is byte for byte its GET representation.
    for doc in SAMPLE[:3]:
        r = await client.get(f"/ticket/{doc['id']}")
        assert r.body == encode_json(without(doc, "messages", "notes"))
        for n in doc["notes"]:
            assert (await client.get(f"/ticket/{doc['id']}/note/{n['id']}")).body == encode_json(n)
        assert (await client.get(f"/ticket/{doc['id']}/note")).body == encode_json(doc["notes"])
    for doc in SAMPLE[3:]:
        assert (await client.get(f"/show/{doc['id']}")).body == encode_json(without(doc, "resource", "episodes"))
        for e in doc["episodes"]:
            assert (await client.get(f"/show/{doc['id']}/episode/{e['id']}")).body == encode_json(e)
    # Tickets first, then shows, each in id order.
    assert await exported(store) == jsonl(*SAMPLE[:3], *sorted(SAMPLE[3:], key=lambda d: d["id"]))
    await search_is_exact(store)


@pytest.mark.gen_test
async def test_an_export_is_in_id_order_and_in_batches(io_loop, store, monkeypatch):
    import medusa_v2.transfer as transfer

    monkeypatch.setattr(transfer, "BATCH", 2)
    monkeypatch.setattr(transfer, "IMPORT_BATCH", 2)
    docs = [ticket(i, notes=[note(100 + i, i)] if i % 2 else []) for i in range(1, 8)]
    docs += [show(f"s{i}", episodes=[episode("s01e01", f"s{i}")]) for i in range(9, 2, -1)]  # given out of order
    await import_jsonl(store, io.BytesIO(jsonl(*docs)), resources=MOUNTED)
    assert await exported(store) == jsonl(*docs[:7], *sorted(docs[7:], key=lambda d: d["id"]))


@pytest.mark.gen_test
async def test_an_export_is_one_snapshot_of_every_resource(io_loop, store):
    from medusa_v2.resources.ticket import TICKET
    from medusa_v2.store.base import Tree

    await import_jsonl(store, io.BytesIO(jsonl(*SAMPLE)), resources=MOUNTED)
    trees = [Tree(TICKET, (Tree(NoteResource.declaration),)), Tree(ShowResource.declaration)]
    seen = []
    async for tree, batch in store.export_rows(trees, batch_size=1):
        if not seen:  # written after the export's first page: in none of its pages
            await store.insert_row(ShowResource.declaration, {"id": "abc1", "title": "late"}, 1_800_000_000.0)
            await store.delete_row(TICKET, 3)
        seen += [(tree.decl.name, row["id"], [n["id"] for n, _ in kids[0]] if kids else None) for row, kids in batch]
    assert seen == [
        ("ticket", 1, [20, 21]),
        ("ticket", 2, []),
        ("ticket", 3, [22]),
        ("show", "imdb7", None),
        ("show", "tvdb1", None),
        ("show", "tvdb83462", None),
    ]
    assert await counts(store) == {**EVERYTHING, "ticket": 2, "note": 2, "show": 4}


@pytest.mark.gen_test
async def test_a_file_of_the_original_format_imports_with_more_resources_mounted(io_loop, store, client):
    old = {k: v for k, v in ticket(1, messages=[message(5, 1)]).items() if k != "notes"}
    unmarked = {k: v for k, v in show("tvdb2").items()}
    assert await import_jsonl(store, io.BytesIO(jsonl(old)), resources=MOUNTED) == {
        "ticket": 1,
        "message": 1,
        "note": 0,
        "show": 0,
        "episode": 0,
    }
    assert (await client.get("/ticket/1/message/5")).json["body"] == "b"
    # An explicit marker for a ticket is accepted too; the export writes none for tickets.
    again = {"resource": "ticket", **without(ticket(2), "notes")}
    await import_jsonl(store, io.BytesIO(jsonl(again, unmarked)), resources=MOUNTED)
    assert await exported(store) == jsonl({**old, "notes": []}, ticket(2), show("tvdb2"))


BAD_LINES = [
    (note(30, 2, kind="urgent"), "line 3: notes[0].kind: must be one of comment, todo, done"),
    (note(30, 9), "line 3: notes[0].ticketId: must be the id of the item it is listed under (2) or omitted"),
    (without(note(30, 2), "createdAt"), "line 3: notes[0].createdAt: required field (an import keeps ids"),
    (note(30, 2, text=""), "line 3: notes[0].text: must not be empty"),
    ({**note(30, 2), "colour": 1}, "line 3: notes[0].colour: unknown field"),
]


@pytest.mark.gen_test
@pytest.mark.parametrize(("bad", "reason"), BAD_LINES)
async def test_a_bad_child_names_its_line_and_nothing_is_applied(io_loop, store, bad, reason):
    data = jsonl(*SAMPLE[:1], SAMPLE[3], ticket(2, notes=[bad]), ticket(4))
    with pytest.raises(TransferError) as caught:
        await import_jsonl(store, io.BytesIO(data), resources=MOUNTED)
    assert str(caught.value).startswith(reason), str(caught.value)
    assert await counts(store) == dict.fromkeys(TABLES, 0)


@pytest.mark.gen_test
@pytest.mark.parametrize(
    ("line", "reason"),
    [
        (show("tvdb5", episodes=[episode("e1", "tvdb5")]), "line 2: episodes[0].id: must match s[0-9]{2}e[0-9]{2,3}"),
        (show("tvdb5", episodes=[episode("s01e01", "tvdb6")]), "line 2: episodes[0].showId: must be the id of"),
        (show("tvdb5", episodes=[episode("s01e01", "tvdb5", watched=2)]), "line 2: episodes[0].watched: must be"),
        (without(show("tvdb5"), "id"), "line 2: id: required field (an import keeps ids"),
        (show("Bad Slug"), "line 2: id: must match [a-z]+[0-9]+"),
        ({**show("tvdb5"), "episodes": {}}, "line 2: episodes: must be an array"),
        ({**ticket(5), "notes": "x"}, "line 2: notes: must be an array"),
        ({**show("tvdb5"), "resource": "movie"}, 'line 2: resource: "movie" is not a mounted top-level resource'),
        ({**show("tvdb5"), "resource": "episode"}, 'line 2: resource: "episode" is not a mounted top-level'),
        ({**ticket(5), "resource": None}, "line 2: resource: null is not a mounted top-level resource"),
        ({**ticket(5), "messages": [message(6, 5)], "resource": "show"}, "line 2: assignee: unknown field"),
    ],
)
async def test_a_bad_line_of_another_resource_names_its_line(io_loop, store, line, reason):
    data = jsonl(SAMPLE[0], line, SAMPLE[4])
    with pytest.raises(TransferError) as caught:
        await import_jsonl(store, io.BytesIO(data), resources=MOUNTED)
    assert str(caught.value).startswith(reason), str(caught.value)
    assert await counts(store) == dict.fromkeys(TABLES, 0)


@pytest.mark.gen_test
async def test_replace_replaces_every_kind_of_child_of_the_replaced_items(io_loop, store, client):
    await import_jsonl(store, io.BytesIO(jsonl(*SAMPLE)), resources=MOUNTED)
    new_ticket = ticket(1, "renewed", notes=[note(40, 1, "fresh")])
    new_show = show("tvdb83462", "Castle (2009)", [episode("s02e01", "tvdb83462")])
    done = await import_jsonl(store, io.BytesIO(jsonl(new_ticket, new_show)), replace=True, resources=MOUNTED)
    assert done == {"ticket": 1, "message": 0, "note": 1, "show": 1, "episode": 1}
    # The replaced items' messages, notes and episodes are gone; the others are as they were.
    assert await counts(store) == {"ticket": 3, "message": 0, "note": 2, "show": 3, "episode": 2}
    assert (await client.get("/ticket/1/note")).body == encode_json(new_ticket["notes"])
    assert (await client.get("/ticket/1/message")).json == []
    assert [e["id"] for e in (await client.get("/show/tvdb83462/episode")).json] == ["s02e01"]
    assert [e["id"] for e in (await client.get("/show/imdb7/episode")).json] == ["s01e01"]
    assert (await client.get("/ticket/3/note")).json[0]["text"] == "ünïcode ✓ 🙂"
    await search_is_exact(store)
    # Given twice in one run is an error even when replacing.
    with pytest.raises(TransferError, match="^line 2: show id tvdb1 already exists or is given twice$"):
        await import_jsonl(store, io.BytesIO(jsonl(show("tvdb1"), show("tvdb1"))), replace=True, resources=MOUNTED)


@pytest.mark.gen_test
async def test_a_taken_child_id_is_an_error_and_nothing_is_applied(io_loop, store):
    await import_jsonl(store, io.BytesIO(jsonl(*SAMPLE)), resources=MOUNTED)
    before = await counts(store)
    data = jsonl(ticket(7), ticket(8, notes=[note(21, 8)]))  # note 21 is ticket 1's
    with pytest.raises(TransferError, match="^line 2: note id 21 already exists or is given twice$"):
        await import_jsonl(store, io.BytesIO(data), resources=MOUNTED)
    # Even with --replace: ticket 1 is not replaced by this run.
    with pytest.raises(TransferError, match="^line 2: note id 21 already exists"):
        await import_jsonl(store, io.BytesIO(data), replace=True, resources=MOUNTED)
    assert await counts(store) == before


@pytest.mark.gen_test
@pytest.mark.parametrize("fresh", [True, False])
async def test_a_child_id_given_twice_names_the_line_of_the_second(io_loop, store, fresh):
    if not fresh:  # tables with rows: each batch is checked before it is written
        await import_jsonl(store, io.BytesIO(jsonl(show("zz9"))), resources=MOUNTED)
    before = await counts(store)
    data = jsonl(ticket(1, notes=[note(5, 1)]), ticket(2), ticket(3, notes=[note(5, 3)]))
    with pytest.raises(TransferError, match="^line 3: note id 5 already exists or is given twice$"):
        await import_jsonl(store, io.BytesIO(data), resources=MOUNTED)
    # Episode ids are unique within their show: the same id under two shows is fine, twice under one is not.
    data = jsonl(show("a1", episodes=[episode("s01e01", "a1")]), show("b2", episodes=[episode("s01e01", "b2")] * 2))
    with pytest.raises(TransferError, match="^line 2: episode id s01e01 under show b2 already exists or is given"):
        await import_jsonl(store, io.BytesIO(data), resources=MOUNTED)
    assert await counts(store) == before


@pytest.mark.gen_test
async def test_episode_ids_are_unique_only_within_their_show_in_later_runs_too(io_loop, store, client):
    await import_jsonl(store, io.BytesIO(jsonl(*SAMPLE)), resources=MOUNTED)
    later = show("tvdb2", episodes=[episode("s01e01", "tvdb2", "yet another s01e01")])
    assert (await import_jsonl(store, io.BytesIO(jsonl(later)), resources=MOUNTED))["episode"] == 1
    r = await client.get("/show/tvdb2/episode/s01e01")
    assert r.json["name"] == "yet another s01e01"
    assert (await client.get("/show/tvdb83462/episode/s01e01")).json["name"] == "Flowers"


@pytest.mark.gen_test
async def test_counters_move_past_imported_ids_and_lists_count_imported_items(io_loop, store, client):
    await import_jsonl(store, io.BytesIO(jsonl(*SAMPLE)), resources=MOUNTED)
    r = await client.post("/ticket/2/note", json_body={"text": "after the import"})
    assert r.code == 201, r.body
    assert r.json["id"] == 23  # past the highest imported note id, 22
    r = await client.post("/ticket", json_body={"title": "new"})
    assert r.json["id"] == 4
    r = await client.get("/show")
    assert r.headers["X-Pagination-Count"] == "3"
    assert [s["id"] for s in r.json] == ["imdb7", "tvdb1", "tvdb83462"]
    r = await client.get("/ticket/1/note")
    assert r.headers["X-Pagination-Count"] == "2"


# -- grandchildren: nested inside their parent item, the same way --

REACTION = Declaration(
    "reaction",
    (
        Field("id", int, writable=False, min=1, sortable=True),
        Field("note_id", int, writable=False, min=1),
        Field("emoji", str, required=True, min=1, max=8),
        Field("created_at", str, writable=False, sortable=True),
        Field("updated_at", str, writable=False, sortable=True),
    ),
    parent=NoteResource.declaration,
    parent_field="note_id",
)


class ReactionResource(StoredResource):
    """A note's reactions: a resource nested two levels down (ticket > note > reaction)."""

    name = "reaction"
    parent = NoteResource
    declaration = REACTION


DEEP = [TicketResource, MessageResource, NoteResource, ReactionResource]


def reaction(id, note_id, emoji="+1"):
    return {"id": id, "noteId": note_id, "emoji": emoji, "createdAt": T0, "updatedAt": T0}


def reacted(id, ticket_id, reactions=()):
    return {**note(id, ticket_id), "reactions": list(reactions)}


@pytest.mark.gen_test
async def test_grandchildren_are_nested_inside_their_parent_item(io_loop, store, monkeypatch):
    import medusa_v2.transfer as transfer

    monkeypatch.setattr(transfer, "BATCH", 2)  # several pages: the reactions of each page's notes only
    monkeypatch.setattr(transfer, "IMPORT_BATCH", 2)
    docs = [
        ticket(
            i,
            notes=[
                reacted(10 * i + n, i, [reaction(100 * i + n * 10 + r, 10 * i + n) for r in range(n)]) for n in range(3)
            ],
        )
        for i in range(1, 6)
    ]
    docs[2]["notes"] = []
    data = jsonl(*docs)
    assert await import_jsonl(store, io.BytesIO(data), resources=DEEP) == {
        "ticket": 5,
        "message": 0,
        "note": 12,
        "reaction": 12,
    }
    out = io.BytesIO()
    assert (await export_jsonl(store, out, resources=DEEP))["reaction"] == 12
    assert out.getvalue() == data
    row = (await sql(store, "SELECT id, note_id, emoji FROM reaction WHERE id = ?", (421,)))[0]
    assert tuple(row) == (421, 42, "+1")
    # A bad grandchild names its line and where in it; a taken one its line; nothing applied.
    bad = ticket(7, notes=[reacted(70, 7, [reaction(700, 70), reaction(701, 70, "")])])
    with pytest.raises(TransferError, match=r"^line 2: notes\[0\]\.reactions\[1\]\.emoji: must not be empty$"):
        await import_jsonl(store, io.BytesIO(jsonl(ticket(6), bad)), resources=DEEP)
    taken = ticket(7, notes=[reacted(70, 7, [reaction(421, 70)])])
    with pytest.raises(TransferError, match="^line 2: reaction id 421 already exists or is given twice$"):
        await import_jsonl(store, io.BytesIO(jsonl(ticket(6), taken)), resources=DEEP)
    wrong_parent = ticket(7, notes=[reacted(70, 7, [reaction(702, 71)])])
    with pytest.raises(TransferError, match=r"^line 1: notes\[0\]\.reactions\[0\]\.noteId: must be the id"):
        await import_jsonl(store, io.BytesIO(jsonl(wrong_parent)), resources=DEEP)
    assert (await counts(store))["ticket"] == 5
    # Replacing a ticket takes its notes' reactions with them.
    await import_jsonl(store, io.BytesIO(jsonl(ticket(4))), replace=True, resources=DEEP)
    assert (await sql(store, "SELECT COUNT(*) FROM reaction"))[0][0] == 12 - 3
    assert (await sql(store, "SELECT COUNT(*) FROM note"))[0][0] == 12 - 3


# -- what is transferred: the mounted stored resources --


class Settings:
    def __init__(self, resources, extra_handlers=()):
        self.resources = resources
        self.extra_handlers = extra_handlers


@pytest.mark.stores("sqlite")
def test_mounted_resources_are_built_in_names_dotted_paths_and_extra_handlers(database_backend):
    found = mounted_resources(
        Settings(("ticket", "message", "mypkg.shows.ShowResource"), ("mypkg.notes.NoteResource",))
    )
    assert found == [TicketResource, MessageResource, ShowResource, NoteResource]
    with pytest.raises(TransferError, match="cannot load"):
        mounted_resources(Settings(("ticket", "mypkg.nothing.Here")))
    with pytest.raises(TransferError, match="is not a Resource class"):
        mounted_resources(Settings(("medusa_v2.transfer.TransferError",)))


@pytest.mark.stores("sqlite")
@pytest.mark.gen_test
async def test_resources_that_cannot_be_written_as_lines_are_refused(io_loop, database_backend):
    stamp = (Field("created_at", str, writable=False), Field("updated_at", str, writable=False))
    odd = Declaration("odd", (Field("id", int, writable=False, min=1), Field("resource", str), *stamp))

    class OddResource(StoredResource):
        name = "odd"
        declaration = odd

    deep = Declaration(
        "scene",
        (Field("id", int, writable=False, min=1), Field("episode_id", str, writable=False), *stamp),
        parent=EpisodeResource.declaration,
        parent_field="episode_id",
    )

    class SceneResource(StoredResource):
        name = "scene"
        parent = EpisodeResource
        declaration = deep

    for mounted, reason in (
        ([TicketResource, OddResource], "its field 'resource' would be read as the line's resource"),
        ([ShowResource, EpisodeResource, SceneResource], "its ids are unique only under its parent"),
        ([MessageResource], "needs its parent 'ticket' mounted too"),
    ):
        with pytest.raises(TransferError, match=reason):
            await export_jsonl(None, io.BytesIO(), resources=mounted)
        with pytest.raises(TransferError, match=reason):
            await import_jsonl(None, io.BytesIO(b""), resources=mounted)


@pytest.mark.stores("sqlite")
def test_the_commands_move_every_resource_the_daemon_mounts(database_backend, settings, tmp_path):
    import os
    import subprocess

    config = tmp_path / "mounted.ini"
    config.write_text(
        Path(settings.config_path).read_text(encoding="utf-8")
        + "[API]\nextra_handlers = mypkg.notes.NoteResource, mypkg.shows.ShowResource, mypkg.shows.EpisodeResource\n",
        encoding="utf-8",
    )
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), str(ROOT / "examples")])}

    def cli(*args, stdin=None):
        argv = [sys.executable, str(ROOT / "bin" / "medusa-v2"), args[0], "--config", str(config), *args[1:]]
        return subprocess.run(argv, input=stdin, capture_output=True, timeout=60, env=env)

    done = cli("import", "-", stdin=jsonl(*SAMPLE))
    assert done.returncode == 0, done.stderr
    assert b"3 ticket(s), 1 message(s), 3 note(s), 3 show(s) and 3 episode(s) imported from standard input" in (
        done.stderr
    )
    out = cli("export", "-")
    assert out.returncode == 0, out.stderr
    assert out.stdout == jsonl(*SAMPLE[:3], *sorted(SAMPLE[3:], key=lambda d: d["id"]))
    bad = cli("import", "-", "--replace", stdin=jsonl(ticket(9), show("tvdb1", episodes=[episode("s1", "tvdb1")])))
    assert bad.returncode == 1
    assert bad.stderr.decode().strip() == (
        "medusa-v2: import failed: line 2: episodes[0].id: must match s[0-9]{2}e[0-9]{2,3}; nothing was imported"
    )
    assert cli("export", "-").stdout == out.stdout

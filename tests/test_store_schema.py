"""Stored resources derived from their declarations, on SQLite and PostgreSQL (`stores` marker).

An embedder's declaration alone gives its table, constraints, indexes, search index,
cascade and versioned migrations (medusa_v2/store/schema.py); the built-in ticket
and message keep their hand-written schema, recorded as version 1.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import random
import secrets
import sqlite3
import sys
import threading
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from conftest import expected_order

from medusa_v2.declaration import Declaration, Field
from medusa_v2.listing import ListQuery
from medusa_v2.resources.message import MESSAGE
from medusa_v2.resources.ticket import TICKET
from medusa_v2.store import open_store
from medusa_v2.store.base import AlreadyExists, NotFound, timestamp
from medusa_v2.store.schema import BUILTIN_V1, BUILTIN_V2, SchemaError, derive, plan
from medusa_v2.store.sqlite import path_from_url

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "examples"))

from mypkg.notes import NOTE  # noqa: E402
from mypkg.shows import EPISODE, SHOW  # noqa: E402

pytestmark = pytest.mark.stores("sqlite", "postgresql")

NOW = 1_800_000_000.0


def run(io_loop, coro):
    return io_loop.run_sync(lambda: coro)


@pytest.fixture
def fresh_url(database_backend, tmp_path, request):
    """Return the url of a brand-new database of its own (migrations must not touch the session's)."""
    if database_backend == "sqlite":
        yield f"sqlite:///{tmp_path / 'fresh.db'}"
        return
    import psycopg

    server = request.getfixturevalue("postgres_server_url")
    name = f"medusa_v2_test_{secrets.token_hex(6)}"
    with psycopg.connect(server, autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
        admin.execute(f'ALTER DATABASE "{name}" SET synchronous_commit = off')
    yield urlsplit(server)._replace(path="/" + name, query="pool_min_size=1&pool_max_size=2").geturl()
    with psycopg.connect(server, autocommit=True) as admin:
        admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def sql(url, statement, params=()):
    """Run one statement on the database directly (`?` marks); return its rows."""
    if url.startswith("sqlite:"):
        db = sqlite3.connect(path_from_url(url.partition("?")[0]), isolation_level=None)
        try:
            return [tuple(r) for r in db.execute(statement, params).fetchall()]
        finally:
            db.close()
    import psycopg

    with psycopg.connect(url.partition("?")[0], autocommit=True) as conn:
        cur = conn.execute(statement.replace("?", "%s"), params)
        return [tuple(r) for r in cur.fetchall()] if cur.description else []


def catalog(url):
    """Return every table, column, index, constraint and trigger of the database, with its definition."""
    if url.startswith("sqlite:"):
        return set(sql(url, "SELECT type, name, tbl_name, sql FROM sqlite_master"))
    found = set()
    for kind, query in (
        ("table", "SELECT tablename FROM pg_tables WHERE schemaname = 'public'"),
        (
            "column",
            "SELECT table_name, column_name, data_type, column_default, is_nullable, collation_name"
            " FROM information_schema.columns WHERE table_schema = 'public'",
        ),
        ("index", "SELECT indexname, indexdef FROM pg_indexes WHERE schemaname = 'public'"),
        (
            "constraint",
            "SELECT conrelid::regclass::text, conname, pg_get_constraintdef(oid) FROM pg_constraint"
            " WHERE connamespace = 'public'::regnamespace",
        ),
        ("trigger", "SELECT tgrelid::regclass::text, tgname FROM pg_trigger WHERE NOT tgisinternal"),
        ("sequence", "SELECT sequencename FROM pg_sequences WHERE schemaname = 'public'"),
    ):
        found.update((kind, *row) for row in sql(url, query))
    return found


def names(url, kind):
    """Return the names of the database's indexes or tables."""
    if url.startswith("sqlite:"):
        return {r[0] for r in sql(url, "SELECT name FROM sqlite_master WHERE type = ?", (kind,))}
    if kind == "index":
        return {r[0] for r in sql(url, "SELECT indexname FROM pg_indexes WHERE schemaname = 'public'")}
    return {r[0] for r in sql(url, "SELECT tablename FROM pg_tables WHERE schemaname = 'public'")}


def recorded(url, name):
    """Return (version, spec) recorded for a resource, or None."""
    found = sql(url, "SELECT version, spec FROM resource_schema WHERE name = ?", (name,))
    return (found[0][0], json.loads(found[0][1])) if found else None


def integrity_errors():
    errors: tuple[type[BaseException], ...] = (sqlite3.IntegrityError,)
    try:
        import psycopg
    except ImportError:
        return errors
    return (*errors, psycopg.IntegrityError)


def opened(io_loop, url, declarations=()):
    return run(io_loop, open_store(url, declarations))


def ids(page):
    return [r["id"] for r in page.rows]


def add_ticket(io_loop, store, **values):
    values.setdefault("title", "t")
    return run(io_loop, store.insert_row(TICKET, values, NOW))


# -- derivation (no database) --


def test_the_spec_says_constraints_indexes_search_and_key():
    note = derive(NOTE)
    columns = {c["name"]: c for c in note["columns"]}
    assert columns["kind"] == {
        "name": "kind",
        "type": "str",
        "null": False,
        "default": "comment",
        "choices": ["comment", "todo", "done"],
    }
    assert columns["rank"] == {"name": "rank", "type": "int", "null": False, "default": 0, "min": 0, "max": 1000}
    assert note["parent"] == {"table": "ticket", "field": "ticket_id"}
    assert note["key"] == ["id"]
    # per column, not per combination; each after the parent and ending with id
    assert note["indexes"] == {
        "note_ticket": ["ticket_id", "id"],
        "note_ticket_kind": ["ticket_id", "kind", "id"],
        "note_ticket_rank": ["ticket_id", "rank", "id"],
        "note_ticket_created_at": ["ticket_id", "created_at", "id"],
        "note_ticket_updated_at": ["ticket_id", "updated_at", "id"],
    }
    assert note["search"] == ["text"]
    episode = derive(EPISODE)
    assert episode["key"] == ["show_id", "id"]  # a slug is unique under its show only
    assert "episode_show" not in episode["indexes"]  # the key serves (show_id, id)
    assert derive(SHOW)["indexes"]["show_status"] == ["status", "id"]


def test_the_released_builtin_specs_are_what_the_declarations_derive():
    # Ticket's version 2: its totals per filter values, its indexes carrying the filter fields.
    assert BUILTIN_V2 == {"ticket": derive(TICKET)}
    assert BUILTIN_V1["message"] == derive(MESSAGE)


def test_plans_refuse_what_would_lose_or_reinterpret_data():
    v1 = derive(NOTE)
    assert not plan(v1, v1).changed
    assert plan(None, v1).create
    fewer = dataclasses.replace(NOTE, fields=tuple(f for f in NOTE.fields if f.name != "rank"))
    with pytest.raises(SchemaError, match=r"resource note: field rank was removed"):
        plan(v1, derive(fewer))
    retyped = dataclasses.replace(
        NOTE, fields=tuple(Field("rank", str) if f.name == "rank" else f for f in NOTE.fields)
    )
    with pytest.raises(SchemaError, match="resource note: field rank changed type"):
        plan(v1, derive(retyped))
    moved = dataclasses.replace(NOTE, parent=SHOW, parent_field="ticket_id")
    with pytest.raises(SchemaError, match="resource note"):
        derive(moved)  # an int field cannot hold a show's slug


# -- created from the declaration --


def test_tables_indexes_and_search_are_created_from_declarations(io_loop, fresh_url):
    store = opened(io_loop, fresh_url, [NOTE, EPISODE])  # parents (ticket, show) come with them
    run(io_loop, store.close())
    assert {"note", "show", "episode"} <= names(fresh_url, "table")
    indexes = names(fresh_url, "index")
    assert set(derive(NOTE)["indexes"]) | set(derive(SHOW)["indexes"]) | set(derive(EPISODE)["indexes"]) <= indexes
    if fresh_url.startswith("sqlite:"):
        assert {"note_search", "show_search", "episode_search"} <= names(fresh_url, "table")
        triggers = names(fresh_url, "trigger")
        assert {"note_search_insert", "note_search_delete", "note_search_update"} <= triggers
        assert sql(fresh_url, "SELECT v FROM note_search_config WHERE k = 'automerge'") == [(16,)]
        assert sql(fresh_url, "SELECT next_id FROM id_counter WHERE name = 'note'") == [(1,)]
    else:
        assert {"note_text_trgm", "show_title_trgm", "episode_name_trgm"} <= indexes
    for name in ("note", "show", "episode"):
        assert recorded(fresh_url, name)[0] == 1
    again = opened(io_loop, fresh_url, [NOTE, EPISODE])  # equal: nothing to do
    run(io_loop, again.close())
    assert recorded(fresh_url, "note")[0] == 1


# -- rows of any declaration --


def test_notes_crud_filters_sort_search_and_counts(io_loop, database_url):
    store = opened(io_loop, database_url, [NOTE])
    try:
        t = add_ticket(io_loop, store)
        other = add_ticket(io_loop, store)
        parent = (TICKET, t["id"])
        made = []
        for i, (kind, rank) in enumerate([("todo", 5), ("done", 1), ("comment", 5), ("todo", 9), ("todo", 5)]):
            values = {"kind": kind, "rank": rank, "text": f"note {i} " + ("needle" if i % 2 else "hay")}
            made.append(run(io_loop, store.insert_row(NOTE, values, NOW + i, parent)))
        assert [n["id"] for n in made] == [1, 2, 3, 4, 5]  # from the note's own counter
        assert made[0] == {
            "id": 1,
            "ticket_id": t["id"],
            "kind": "todo",
            "rank": 5,
            "text": "note 0 hay",
            "created_at": timestamp(NOW),
            "updated_at": timestamp(NOW),
        }
        run(io_loop, store.insert_row(NOTE, {"text": "elsewhere needle"}, NOW, (TICKET, other["id"])))

        def listed(**query):
            return run(io_loop, store.list_rows(NOTE, ListQuery(**query), parent))

        page = listed(filters={"kind": ("todo", "done")})
        assert (ids(page), page.count) == ([1, 2, 4, 5], 4)
        assert ids(listed(filters={"rank": (5,)})) == [1, 3, 5]
        assert ids(listed(sort=(("rank", True),))) == [4, 5, 3, 1, 2]  # id last, in the last key's direction
        assert ids(listed(sort=(("kind", False), ("rank", False)))) == [3, 2, 1, 5, 4]
        page = listed(q="NEEDLE")
        assert (ids(page), page.count) == ([2, 4], 2)
        page = listed(limit=2, page=2)
        assert (ids(page), page.count) == ([3, 4], 5)
        assert ids(listed(limit=2, page=4)) == []
        everywhere = run(io_loop, store.list_rows(NOTE, ListQuery(q="needle")))  # the search index, not a parent
        assert sorted(ids(everywhere)) == [2, 4, 6]
        assert run(io_loop, store.list_rows(NOTE, ListQuery(q="ne"))).count == 3  # short q: no trigram

        updated = run(io_loop, store.update_row(NOTE, 1, {"text": "now a needle", "rank": 7}, NOW + 9, None, parent))
        assert (updated["rank"], updated["updated_at"]) == (7, timestamp(NOW + 9))
        assert ids(listed(q="needle")) == [1, 2, 4]
        with pytest.raises(NotFound) as caught:
            run(io_loop, store.get_row(NOTE, 1, (TICKET, other["id"])))
        assert caught.value.resource == "note"
        run(io_loop, store.delete_row(NOTE, 1, None, parent))
        assert listed().count == 4
        with pytest.raises(AlreadyExists):
            run(io_loop, store.insert_row(NOTE, {"id": 2, "text": "x"}, NOW, parent))
    finally:
        run(io_loop, store.close())


def test_many_notes_at_once_share_the_group_commit(io_loop, database_url):
    store = opened(io_loop, database_url, [NOTE])
    try:
        t = add_ticket(io_loop, store)

        async def many():
            return await asyncio.gather(
                *(store.insert_row(NOTE, {"text": f"n{i}"}, NOW, (TICKET, t["id"])) for i in range(20))
            )

        rows = run(io_loop, many())
        assert sorted(r["id"] for r in rows) == list(range(1, 21))
        assert run(io_loop, store.list_rows(NOTE, ListQuery(), (TICKET, t["id"]))).count == 20
    finally:
        run(io_loop, store.close())


KINDS = ["bolt", "nut", "washer"]
PART_NO = Declaration(
    "part_no",
    (
        Field("id", str, writable=False, settable_on_create=True, pattern=r"p[0-9]+", max=10, sortable=True),
        Field("maker", str, default=None, nullable=True, min=1, max=20, sortable=True, filter="many"),
        Field("size", int, default=None, nullable=True, min=0, max=10**6, sortable=True, filter="one"),
        Field("kind", str, default="bolt", choices=("bolt", "nut", "washer"), filter="many"),
        Field("created_at", str, writable=False, sortable=True),
        Field("updated_at", str, writable=False, sortable=True),
    ),
)


MEMO = Declaration(
    "memo",
    (
        Field("id", int, writable=False, min=1, sortable=True),
        Field("text", str, required=True, min=1, max=50),
        Field("created_at", str, writable=False),
        Field("updated_at", str, writable=False),
    ),
)


def test_a_resource_without_filters_is_counted_too(io_loop, database_url):
    """No filter fields: its totals are one combination, kept by writes and by an import."""
    from medusa_v2.store.base import Tree

    store = opened(io_loop, database_url, [MEMO])
    try:
        made = [run(io_loop, store.insert_row(MEMO, {"text": f"m{i}"}, NOW)) for i in range(3)]
        run(io_loop, store.delete_row(MEMO, made[0]["id"]))
        stamp = timestamp(NOW)
        rows = [({"id": 100 + i, "text": "in", "created_at": stamp, "updated_at": stamp}, ()) for i in range(2)]

        async def batches():
            yield Tree(MEMO), rows

        assert run(io_loop, store.import_rows([Tree(MEMO)], batches())) == 2
        page = run(io_loop, store.list_rows(MEMO, ListQuery(limit=2, page=2, sort=(("id", True),))))
        assert (page.count, ids(page)) == (4, [made[2]["id"], made[1]["id"]])
    finally:
        run(io_loop, store.close())


def test_a_filter_on_id_is_answered(io_loop, database_url):
    """`id` may be a filter: no derived index exists for it, and none is named."""
    label = Declaration(
        "label",
        (
            Field("id", int, writable=False, min=1, sortable=True, filter="one"),
            Field("color", str, default="red", choices=("red", "blue"), filter="one"),
            Field("created_at", str, writable=False),
            Field("updated_at", str, writable=False),
        ),
    )
    store = opened(io_loop, database_url, [label])
    try:
        for i in range(12):
            run(io_loop, store.insert_row(label, {"color": ("red", "blue")[i % 2]}, NOW))
        page = run(io_loop, store.list_rows(label, ListQuery(filters={"id": (5,), "color": ("red",)})))
        assert (page.count, ids(page)) == (1, [5])
    finally:
        run(io_loop, store.close())


def test_an_embedders_resource_gets_exact_counts_and_planned_pages(io_loop, database_url):
    """String ids, nullable filters of any kind, a filter not sortable: counts and every page as for ticket."""
    store = opened(io_loop, database_url, [PART_NO])
    rng = random.Random(11)
    makers, sizes = ["acme", "bosch", "ikea"], [0, 7, 10**6]
    try:
        for i in range(60):
            values = {"maker": rng.choice([None, *makers]), "size": rng.choice([None, *sizes])}
            run(io_loop, store.insert_row(PART_NO, {"id": f"p{i:03d}", "kind": rng.choice(KINDS), **values}, NOW))
        for i in rng.sample(range(60), 15):  # moves between combinations, and deletes
            if i % 3:
                run(io_loop, store.update_row(PART_NO, f"p{i:03d}", {"maker": rng.choice(makers), "size": 7}, NOW))
            else:
                run(io_loop, store.delete_row(PART_NO, f"p{i:03d}"))
        rows = run(io_loop, store.list_rows(PART_NO, ListQuery(limit=1000))).rows
        values = {"maker": makers, "size": sizes, "kind": KINDS}
        for _ in range(20):
            names = rng.sample(list(values), rng.randint(0, 2))
            filters = {n: tuple(rng.sample(values[n], 2 if n != "size" else 1)) for n in names}
            sort = tuple((n, rng.random() < 0.5) for n in rng.sample(["maker", "size", "id", "updated_at"], 2))
            want = [r["id"] for r in expected_order(rows, sort) if all(r[n] in v for n, v in filters.items())]
            for limit in (3, 8):
                for page in range(1, len(want) // limit + 2):
                    query = ListQuery(page=page, limit=limit, sort=sort, filters=filters)
                    found = run(io_loop, store.list_rows(PART_NO, query))
                    assert (found.count, ids(found)) == (len(want), want[(page - 1) * limit : page * limit]), query
    finally:
        run(io_loop, store.close())


def test_shows_and_episodes_with_string_ids(io_loop, database_url):
    store = opened(io_loop, database_url, [EPISODE])
    try:
        lost = run(io_loop, store.insert_row(SHOW, {"id": "tvdb83462", "title": "Lost"}, NOW))
        assert lost["id"] == "tvdb83462"
        run(io_loop, store.insert_row(SHOW, {"id": "tvdb2", "title": "Castle", "status": "ended"}, NOW))
        with pytest.raises(AlreadyExists) as caught:
            run(io_loop, store.insert_row(SHOW, {"id": "tvdb2", "title": "again"}, NOW))
        assert (caught.value.resource, caught.value.id) == ("show", "tvdb2")
        assert run(io_loop, store.get_row(SHOW, "tvdb2"))["status"] == "ended"
        assert ids(run(io_loop, store.list_rows(SHOW, ListQuery(q="los")))) == ["tvdb83462"]  # search by rowid
        assert ids(run(io_loop, store.list_rows(SHOW, ListQuery(filters={"status": ("ended",)})))) == ["tvdb2"]
        assert ids(run(io_loop, store.list_rows(SHOW, ListQuery(sort=(("title", False),))))) == ["tvdb2", "tvdb83462"]

        lost_parent, castle = (SHOW, "tvdb83462"), (SHOW, "tvdb2")
        for parent, name in ((lost_parent, "Pilot"), (castle, "Flowers for Your Grave")):
            row = run(io_loop, store.insert_row(EPISODE, {"id": "s01e01", "name": name}, NOW, parent))
            assert (row["id"], row["show_id"], row["name"]) == ("s01e01", parent[1], name)
        run(io_loop, store.insert_row(EPISODE, {"id": "s01e02", "name": "Pilot, part 2"}, NOW, lost_parent))
        with pytest.raises(AlreadyExists):
            run(io_loop, store.insert_row(EPISODE, {"id": "s01e01"}, NOW, lost_parent))
        assert run(io_loop, store.get_row(EPISODE, "s01e01", castle))["name"] == "Flowers for Your Grave"
        updated = run(io_loop, store.update_row(EPISODE, "s01e01", {"watched": 1}, NOW + 1, None, lost_parent))
        assert (updated["show_id"], updated["watched"]) == ("tvdb83462", 1)
        assert run(io_loop, store.get_row(EPISODE, "s01e01", castle))["watched"] == 0  # the other show's: untouched
        page = run(io_loop, store.list_rows(EPISODE, ListQuery(filters={"watched": (0,)}), lost_parent))
        assert (ids(page), page.count) == (["s01e02"], 1)
        assert ids(run(io_loop, store.list_rows(EPISODE, ListQuery(q="pilot"), lost_parent))) == ["s01e01", "s01e02"]
        everywhere = run(io_loop, store.list_rows(EPISODE, ListQuery(q="pilot")))
        assert sorted((r["show_id"], r["id"]) for r in everywhere.rows) == [
            ("tvdb83462", "s01e01"),
            ("tvdb83462", "s01e02"),
        ]
        run(io_loop, store.delete_row(EPISODE, "s01e01", None, castle))
        with pytest.raises(NotFound):
            run(io_loop, store.get_row(EPISODE, "s01e01", castle))
        assert run(io_loop, store.get_row(EPISODE, "s01e01", lost_parent))["watched"] == 1

        # deleting a show deletes its episodes (and their search rows), not the other show's
        run(io_loop, store.insert_row(EPISODE, {"id": "s02e01", "name": "Pilot again"}, NOW, castle))
        run(io_loop, store.delete_row(SHOW, "tvdb83462"))
        with pytest.raises(NotFound) as caught:
            run(io_loop, store.list_rows(EPISODE, ListQuery(), lost_parent))
        assert caught.value.resource == "show"
        everywhere = run(io_loop, store.list_rows(EPISODE, ListQuery(q="pilot")))
        assert [(r["show_id"], r["id"]) for r in everywhere.rows] == [("tvdb2", "s02e01")]
    finally:
        run(io_loop, store.close())
    assert sql(database_url, "SELECT COUNT(*) FROM episode WHERE show_id = ?", ("tvdb83462",)) == [(0,)]
    if database_url.startswith("sqlite:"):
        assert sql(database_url, "SELECT COUNT(*) FROM episode_search") == [(1,)]
        sql(database_url, "INSERT INTO episode_search (episode_search) VALUES ('integrity-check')")


def test_checks_refuse_out_of_bounds_values_at_the_store(io_loop, database_url):
    store = opened(io_loop, database_url, [NOTE, EPISODE])
    try:
        t = add_ticket(io_loop, store)
        parent = (TICKET, t["id"])
        for values in (
            {"text": "x", "rank": 1001},
            {"text": "x", "rank": -1},
            {"text": "x", "kind": "bogus"},
            {"text": ""},
            {"text": "x" * 5001},
            {"text": None},
        ):
            with pytest.raises(integrity_errors()):
                run(io_loop, store.insert_row(NOTE, values, NOW, parent))
        note = run(io_loop, store.insert_row(NOTE, {"text": "ok"}, NOW, parent))
        assert (note["kind"], note["rank"]) == ("comment", 0)  # the columns' defaults
        with pytest.raises(integrity_errors()):
            run(io_loop, store.update_row(NOTE, note["id"], {"rank": 5000}, NOW, None, parent))
        with pytest.raises(integrity_errors()):
            run(io_loop, store.insert_row(SHOW, {"id": "x" * 41, "title": "too long an id"}, NOW))
        with pytest.raises(integrity_errors()):  # the parent must exist (REFERENCES)
            run(io_loop, store.insert_row(EPISODE, {"id": "s01e01", "show_id": "nothing"}, NOW))
        assert run(io_loop, store.list_rows(NOTE, ListQuery(), parent)).count == 1
    finally:
        run(io_loop, store.close())


def test_deleting_a_ticket_deletes_its_notes_and_their_search_rows(io_loop, database_url):
    store = opened(io_loop, database_url, [NOTE])
    try:
        t, kept = add_ticket(io_loop, store), add_ticket(io_loop, store)
        for i in range(3):
            run(io_loop, store.insert_row(NOTE, {"text": f"needle {i}"}, NOW, (TICKET, t["id"])))
        run(io_loop, store.insert_row(NOTE, {"text": "needle kept"}, NOW, (TICKET, kept["id"])))
        run(io_loop, store.delete_row(TICKET, t["id"]))
        assert ids(run(io_loop, store.list_rows(NOTE, ListQuery(q="needle")))) == [4]
        with pytest.raises(NotFound):
            run(io_loop, store.get_row(NOTE, 1))
    finally:
        run(io_loop, store.close())
    assert sql(database_url, "SELECT id FROM note") == [(4,)]
    if database_url.startswith("sqlite:"):
        # the delete trigger fired for the cascaded rows: only note 4 is indexed
        assert sql(database_url, "SELECT rowid FROM note_search WHERE note_search MATCH '\"needle\"'") == [(4,)]
        sql(database_url, "INSERT INTO note_search (note_search) VALUES ('integrity-check')")


# -- migrations --

GADGET_FIELDS = (
    Field("id", int, writable=False, min=1, sortable=True),
    Field("title", str, required=True, min=1, max=20, sortable=True, searchable=True),
    Field("size", int, default=1, min=1, max=10, filter="one"),
    Field("created_at", str, writable=False),
    Field("updated_at", str, writable=False),
)
GADGET = Declaration("gadget", GADGET_FIELDS)
PART = Declaration(
    "part",
    (
        Field("id", int, writable=False, min=1),
        Field("gadget_id", int, writable=False, min=1),
        Field("name", str, required=True, min=1, max=50, searchable=True),
        Field("created_at", str, writable=False),
        Field("updated_at", str, writable=False),
    ),
    parent=GADGET,
    parent_field="gadget_id",
)


def gadget(*fields, replace=None, drop=()):
    """Return GADGET with `fields` added, fields named in `replace` swapped, `drop` removed."""
    kept = tuple((replace or {}).get(f.name, f) for f in GADGET_FIELDS if f.name not in drop)
    return Declaration("gadget", kept + fields)


def part_of(parent):
    return dataclasses.replace(PART, parent=parent)


def seed_gadgets(io_loop, url, titles=("one", "two")):
    store = opened(io_loop, url, [PART])
    try:
        rows = [run(io_loop, store.insert_row(GADGET, {"title": t}, NOW)) for t in titles]
        run(io_loop, store.insert_row(PART, {"name": "bolt"}, NOW, (GADGET, rows[0]["id"])))
        return rows
    finally:
        run(io_loop, store.close())


def test_an_added_field_is_a_column_with_its_default_and_the_data_kept(io_loop, fresh_url):
    seed_gadgets(io_loop, fresh_url)
    v2 = gadget(Field("color", str, default="red", choices=("red", "blue"), sortable=True, filter="one"))
    store = opened(io_loop, fresh_url, [part_of(v2)])
    try:
        assert [(r["title"], r["color"]) for r in run(io_loop, store.list_rows(v2, ListQuery())).rows] == [
            ("one", "red"),
            ("two", "red"),
        ]
        run(io_loop, store.insert_row(v2, {"title": "three", "color": "blue"}, NOW))
        assert ids(run(io_loop, store.list_rows(v2, ListQuery(filters={"color": ("blue",)})))) == [3]
        with pytest.raises(integrity_errors()):
            run(io_loop, store.insert_row(v2, {"title": "four", "color": "green"}, NOW))
        assert run(io_loop, store.list_rows(PART, ListQuery(), (v2, 1))).count == 1
    finally:
        run(io_loop, store.close())
    version, spec = recorded(fresh_url, "gadget")
    assert (version, spec) == (2, derive(v2))
    assert "gadget_color" in names(fresh_url, "index")


def test_changed_bounds_replace_the_constraints_and_children_survive(io_loop, fresh_url):
    seed_gadgets(io_loop, fresh_url, titles=("one", "two", "three"))
    narrower = Field("title", str, required=True, min=1, max=5, sortable=True, searchable=True)
    wider_size = Field("size", int, default=2, min=1, max=100, filter="one")
    v2 = gadget(replace={"title": narrower, "size": wider_size})
    store = opened(io_loop, fresh_url, [part_of(v2)])
    try:
        assert [r["title"] for r in run(io_loop, store.list_rows(v2, ListQuery())).rows] == ["one", "two", "three"]
        with pytest.raises(integrity_errors()):
            run(io_loop, store.insert_row(v2, {"title": "sixsix"}, NOW))  # max was 20
        row = run(io_loop, store.insert_row(v2, {"title": "four", "size": 50}, NOW))  # max was 10
        assert row["id"] > 3 and row["size"] == 50  # the id counter goes on
        assert run(io_loop, store.insert_row(v2, {"title": "five"}, NOW))["size"] == 2  # the new default
        assert ids(run(io_loop, store.list_rows(v2, ListQuery(q="hre")))) == [3]  # search rebuilt
        assert ids(run(io_loop, store.list_rows(v2, ListQuery(filters={"size": (50,)})))) == [row["id"]]
        assert run(io_loop, store.list_rows(PART, ListQuery(), (v2, 1))).count == 1
        run(io_loop, store.delete_row(v2, 1))  # the children's REFERENCES still cascade
    finally:
        run(io_loop, store.close())
    assert sql(fresh_url, "SELECT COUNT(*) FROM part") == [(0,)]
    assert recorded(fresh_url, "gadget")[0] == 2
    assert {"gadget_title", "gadget_size"} <= names(fresh_url, "index")  # recreated after the rebuild
    if fresh_url.startswith("sqlite:"):
        sql(fresh_url, "INSERT INTO gadget_search (gadget_search) VALUES ('integrity-check')")

    # rows that do not fit tighter bounds: refused, nothing changed
    tiny = Field("title", str, required=True, min=1, max=3, sortable=True, searchable=True)
    v3 = gadget(replace={"title": tiny, "size": wider_size})
    with pytest.raises(SchemaError, match="resource gadget"):
        opened(io_loop, fresh_url, [v3])
    assert recorded(fresh_url, "gadget")[0] == 2


def test_a_removed_field_is_refused_clearly(io_loop, fresh_url):
    seed_gadgets(io_loop, fresh_url)
    with pytest.raises(SchemaError, match=r"resource gadget: field size was removed") as caught:
        opened(io_loop, fresh_url, [gadget(drop=("size",))])
    assert "lost" in str(caught.value)
    assert recorded(fresh_url, "gadget") == (1, derive(GADGET))
    assert sql(fresh_url, "SELECT size FROM gadget ORDER BY id") == [(1,), (1,)]


def test_a_required_field_needs_a_default_only_when_rows_exist(io_loop, fresh_url, database_backend):
    seed_gadgets(io_loop, fresh_url)
    v2 = gadget(Field("serial", str, required=True, min=1, max=30))
    with pytest.raises(SchemaError, match="resource gadget: field serial was added as required"):
        opened(io_loop, fresh_url, [v2])
    assert recorded(fresh_url, "gadget")[0] == 1
    # on an empty table it is fine
    sql(fresh_url, "DELETE FROM part")
    sql(fresh_url, "DELETE FROM gadget")
    store = opened(io_loop, fresh_url, [part_of(v2)])
    try:
        with pytest.raises(integrity_errors()):
            run(io_loop, store.insert_row(v2, {"title": "x"}, NOW))  # NOT NULL, no default
        assert run(io_loop, store.insert_row(v2, {"title": "x", "serial": "A1"}, NOW))["serial"] == "A1"
    finally:
        run(io_loop, store.close())
    assert recorded(fresh_url, "gadget")[0] == 2


def test_filters_sorts_and_search_come_and_go(io_loop, fresh_url):
    seed_gadgets(io_loop, fresh_url, titles=("alpha", "beta"))
    v2 = Declaration(
        "gadget",
        (
            GADGET_FIELDS[0],
            Field("title", str, required=True, min=1, max=20),  # no longer sorted nor searched
            Field("size", int, default=1, min=1, max=10, sortable=True),  # sorted, not filtered
            Field("note", str, default="", max=100, searchable=True, filter="one"),
            *GADGET_FIELDS[3:],
        ),
    )
    store = opened(io_loop, fresh_url, [v2])
    try:
        run(io_loop, store.update_row(v2, 2, {"note": "fragile glass"}, NOW))
        assert ids(run(io_loop, store.list_rows(v2, ListQuery(q="glass")))) == [2]
        assert ids(run(io_loop, store.list_rows(v2, ListQuery(q="alpha")))) == []  # title left the search
    finally:
        run(io_loop, store.close())
    indexes = names(fresh_url, "index")
    assert "gadget_title" not in indexes
    assert {"gadget_size", "gadget_note"} <= indexes
    if fresh_url.startswith("sqlite:"):
        sql(fresh_url, "INSERT INTO gadget_search (gadget_search) VALUES ('integrity-check')")
        assert sql(fresh_url, "SELECT COUNT(*) FROM gadget_search WHERE gadget_search MATCH '\"glass\"'") == [(1,)]
    else:
        assert "gadget_title_trgm" not in indexes
        assert "gadget_note_trgm" in indexes
    assert recorded(fresh_url, "gadget")[0] == 2


def test_several_processes_opening_at_once_migrate_once(fresh_url):
    async def seed():
        await (await open_store(fresh_url, [PART])).close()

    asyncio.run(seed())
    v2 = gadget(Field("color", str, default="red", max=10))
    errors = []

    def start():
        async def open_close():
            store = await open_store(fresh_url, [part_of(v2), EPISODE])
            await store.close()

        try:
            asyncio.run(open_close())
        except BaseException as exc:  # reported below
            errors.append(exc)

    threads = [threading.Thread(target=start) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert recorded(fresh_url, "gadget")[0] == 2  # migrated once, not once per opener
    assert recorded(fresh_url, "episode")[0] == 1


# -- the built-in ticket and message --


def test_builtins_are_recorded_and_untouched_on_a_fresh_database(io_loop, fresh_url):
    store = opened(io_loop, fresh_url)
    run(io_loop, store.close())
    before = catalog(fresh_url)
    assert recorded(fresh_url, "ticket") == (2, derive(TICKET))
    assert recorded(fresh_url, "message") == (1, derive(MESSAGE))
    store = opened(io_loop, fresh_url, [TICKET, MESSAGE])
    run(io_loop, store.close())
    assert catalog(fresh_url) == before  # no derived DDL
    assert recorded(fresh_url, "ticket") == (2, derive(TICKET))


def test_builtins_are_recorded_and_untouched_on_an_existing_database(io_loop, fresh_url, database_backend):
    """A database from before resource_schema keeps its schema and rows; the built-ins get version 1."""
    if database_backend == "sqlite":
        from medusa_v2.store.sqlite import MIGRATIONS, RESOURCE_SCHEMA_MIGRATION, split_statements

        db = sqlite3.connect(path_from_url(fresh_url), isolation_level=None)
        db.execute("CREATE TABLE schema_version (version INTEGER NOT NULL)")
        db.execute("INSERT INTO schema_version VALUES (?)", (RESOURCE_SCHEMA_MIGRATION - 1,))
        for script in MIGRATIONS[: RESOURCE_SCHEMA_MIGRATION - 1]:
            for statement in split_statements(script):
                db.execute(statement)
        db.close()
    else:
        import psycopg

        from medusa_v2.store.postgres import MIGRATIONS, RESOURCE_SCHEMA_MIGRATION, split_statements

        with psycopg.connect(fresh_url.partition("?")[0], autocommit=True) as conn:
            conn.execute("CREATE TABLE schema_version (version INTEGER NOT NULL)")
            conn.execute("INSERT INTO schema_version VALUES (%s)", (RESOURCE_SCHEMA_MIGRATION - 1,))
            for script in MIGRATIONS[: RESOURCE_SCHEMA_MIGRATION - 1]:
                for statement in split_statements(script):
                    conn.execute(statement)
    sql(fresh_url, "INSERT INTO ticket (id, title, created_at, updated_at) VALUES (7, 'old', 'a', 'b')")
    before = catalog(fresh_url)
    store = opened(io_loop, fresh_url, [TICKET, MESSAGE])
    try:
        assert run(io_loop, store.get_row(TICKET, 7))["title"] == "old"
        assert add_ticket(io_loop, store)["id"] >= 1
        # the row from before the totals migration is counted by them, under filters too
        assert run(io_loop, store.list_rows(TICKET, ListQuery())).count == 2
        assert (
            run(io_loop, store.list_rows(TICKET, ListQuery(filters={"state": ("open",), "priority": (3,)}))).count == 2
        )
    finally:
        run(io_loop, store.close())
    assert recorded(fresh_url, "ticket") == (2, derive(TICKET))
    assert recorded(fresh_url, "message") == (1, derive(MESSAGE))
    existing = catalog(fresh_url)
    # ticket's hand-written totals went (replaced by its totals per filter values), and its
    # derived indexes now carry the filter fields
    widened = set(BUILTIN_V2["ticket"]["indexes"])
    assert {item[1] for item in before - existing} <= widened | {
        "row_total",
        "row_total_pkey",
        "value_total",
        *(f"ticket_{kind}total_{event}" for kind in ("", "value_") for event in ("insert", "delete")),
        "ticket_value_total_state",
        "ticket_value_total_priority",
        "medusa_v2_row_total",
    }, before - existing
    # only the new tables (resource_schema, ticket's totals) and the widened indexes: no other derived DDL
    # tables, indexes, triggers (and functions), the change feed's included
    ours = (
        "resource_schema",
        "ticket__totals",
        "ticket__count",
        "ticket_total_",
        "change_",
        "medusa_v2_change",
        "sqlite_sequence",
    )
    ours += ("ticket_change_", "message_change_")
    new = {item for item in existing - before if not any(str(part).startswith(ours) for part in item)}
    assert {item[1] for item in new} <= widened, new

    # the same schema as a database created fresh today
    other = fresh_url.replace("fresh.db", "today.db") if database_backend == "sqlite" else None
    if other is not None:
        store = opened(io_loop, other, [TICKET, MESSAGE])
        run(io_loop, store.close())
        assert catalog(other) == existing


def test_the_totals_migration_keeps_what_an_embedder_changed_in_ticket(io_loop, fresh_url, database_backend):
    """A database whose ticket an embedder had extended before the totals migration opens and keeps its field."""
    ticket_v2 = dataclasses.replace(
        TICKET, fields=(*TICKET.fields, Field("estimate", int, default=0, min=0, max=1000, sortable=True))
    )
    # ticket_v2's spec as the release before the totals recorded it
    before = json.loads(json.dumps(BUILTIN_V1["ticket"]))
    before["columns"].append({"name": "estimate", "type": "int", "null": False, "default": 0, "min": 0, "max": 1000})
    before["indexes"]["ticket_estimate"] = ["estimate", "id"]
    if database_backend == "sqlite":
        from medusa_v2.store.sqlite import MIGRATIONS, ddl, split_statements
        from medusa_v2.store.sqlite.migrations import TOTALS_MIGRATION

        db = sqlite3.connect(path_from_url(fresh_url), isolation_level=None)
        db.execute("CREATE TABLE schema_version (version INTEGER NOT NULL)")
        db.execute("INSERT INTO schema_version VALUES (?)", (TOTALS_MIGRATION - 1,))
        for script in MIGRATIONS[: TOTALS_MIGRATION - 1]:
            for statement in split_statements(script):
                db.execute(statement)
        db.executemany(
            "INSERT INTO resource_schema (name, version, spec) VALUES (?, 1, ?)",
            [(name, json.dumps(spec)) for name, spec in BUILTIN_V1.items()],
        )
        ddl.migrate(db, BUILTIN_V1["ticket"], before, plan(BUILTIN_V1["ticket"], before))
        for event in ("insert", "update", "delete"):  # that release had no change feed (migration 8)
            db.execute(f"DROP TRIGGER ticket_change_{event}")
        db.close()
    else:
        import psycopg

        from medusa_v2.store import ddl_postgres
        from medusa_v2.store.postgres import MIGRATIONS, TOTALS_MIGRATION, split_statements

        with psycopg.connect(fresh_url.partition("?")[0], autocommit=True) as conn:
            conn.execute("CREATE TABLE schema_version (version INTEGER NOT NULL)")
            conn.execute("INSERT INTO schema_version VALUES (%s)", (TOTALS_MIGRATION - 1,))
            for script in MIGRATIONS[: TOTALS_MIGRATION - 1]:
                for statement in split_statements(script):
                    conn.execute(statement)
            for name, spec in BUILTIN_V1.items():
                conn.execute(
                    "INSERT INTO resource_schema (name, version, spec) VALUES (%s, 1, %s)", (name, json.dumps(spec))
                )
            for statement in ddl_postgres.migrate_statements(
                BUILTIN_V1["ticket"], before, plan(BUILTIN_V1["ticket"], before)
            ):
                conn.execute(statement)
    sql(fresh_url, "UPDATE resource_schema SET version = 2, spec = ? WHERE name = 'ticket'", (json.dumps(before),))
    sql(
        fresh_url,
        "INSERT INTO ticket (id, title, state, estimate, created_at, updated_at)"
        " VALUES (7, 'old', 'closed', 900, 'a', 'b')",
    )
    store = opened(io_loop, fresh_url, [ticket_v2, dataclasses.replace(MESSAGE, parent=ticket_v2)])
    try:
        assert run(io_loop, store.get_row(ticket_v2, 7))["estimate"] == 900
        add_ticket(io_loop, store)
        assert run(io_loop, store.list_rows(ticket_v2, ListQuery())).count == 2
        page = run(io_loop, store.list_rows(ticket_v2, ListQuery(filters={"state": ("closed",)})))
        assert (page.count, ids(page)) == (1, [7])
    finally:
        run(io_loop, store.close())
    assert recorded(fresh_url, "ticket")[1] == derive(ticket_v2)


def test_a_field_added_to_ticket_is_an_add_column_migration(io_loop, fresh_url):
    store = opened(io_loop, fresh_url)
    try:
        for title in ("a", "b"):
            add_ticket(io_loop, store, title=title, state="pending")
    finally:
        run(io_loop, store.close())
    before = catalog(fresh_url)
    ticket_v2 = dataclasses.replace(
        TICKET, fields=(*TICKET.fields, Field("estimate", int, default=0, min=0, max=1000, sortable=True))
    )
    store = opened(io_loop, fresh_url, [ticket_v2, dataclasses.replace(MESSAGE, parent=ticket_v2)])
    try:
        rows = run(io_loop, store.list_rows(ticket_v2, ListQuery())).rows
        assert [(r["title"], r["state"], r["estimate"]) for r in rows] == [("a", "pending", 0), ("b", "pending", 0)]
        made = run(io_loop, store.insert_row(ticket_v2, {"title": "c", "estimate": 8}, NOW))
        assert made["estimate"] == 8
        page = run(io_loop, store.list_rows(ticket_v2, ListQuery(sort=(("estimate", True),))))
        assert (ids(page)[0], page.count) == (made["id"], 3)  # the count still from the kept totals
        page = run(io_loop, store.list_rows(ticket_v2, ListQuery(filters={"state": ("pending",)})))
        assert page.count == 2
        with pytest.raises(integrity_errors()):
            run(io_loop, store.insert_row(ticket_v2, {"title": "d", "estimate": 1001}, NOW))
    finally:
        run(io_loop, store.close())
    after = catalog(fresh_url)
    # hand-tuned indexes, search triggers and totals kept: only additions
    lost = before - after
    if fresh_url.startswith("sqlite:"):
        lost = {item for item in lost if item[1] != "ticket"}  # the table's own CREATE grew a column
        # and the change triggers record the new column too
        lost = {item for item in lost if item[1] not in ("ticket_change_insert", "ticket_change_update")}
        insert = sql(fresh_url, "SELECT sql FROM sqlite_master WHERE name = 'ticket_change_insert'")
        assert "'estimate', new.\"estimate\"" in insert[0][0]
    assert lost == set()
    assert "ticket_estimate" in names(fresh_url, "index")
    assert recorded(fresh_url, "ticket") == (3, derive(ticket_v2))
    if fresh_url.startswith("sqlite:"):
        # ALTER TABLE ADD COLUMN, not a rebuild: the hand-written CREATE is still there, with the column added
        ((create,),) = sql(fresh_url, "SELECT sql FROM sqlite_master WHERE name = 'ticket'")
        assert "id INTEGER PRIMARY KEY CHECK (id > 0)" in create
        assert create.endswith(', "estimate" INTEGER NOT NULL DEFAULT 0 CHECK ("estimate" BETWEEN 0 AND 1000))')
    assert recorded(fresh_url, "message")[0] == 1


def test_changed_ticket_bounds_keep_its_hand_tuned_indexes_search_and_totals(io_loop, fresh_url):
    store = opened(io_loop, fresh_url)
    try:
        for title in ("alpha", "beta"):
            add_ticket(io_loop, store, title=title, priority=5)
        t = add_ticket(io_loop, store, title="gamma")
        run(io_loop, store.insert_row(MESSAGE, {"author": "a", "body": "hello"}, NOW, (TICKET, t["id"])))
    finally:
        run(io_loop, store.close())
    kept = {name for name in names(fresh_url, "index") if name.startswith("ticket_")}
    wider = Field("priority", int, default=3, min=1, max=9, sortable=True, filter="many")
    ticket_v2 = dataclasses.replace(TICKET, fields=tuple(wider if f.name == "priority" else f for f in TICKET.fields))
    message_v2 = dataclasses.replace(MESSAGE, parent=ticket_v2)
    store = opened(io_loop, fresh_url, [message_v2])
    try:
        made = run(io_loop, store.insert_row(ticket_v2, {"title": "delta", "priority": 9}, NOW))
        assert run(io_loop, store.list_rows(ticket_v2, ListQuery())).count == 4  # the totals, kept by their triggers
        page = run(io_loop, store.list_rows(ticket_v2, ListQuery(filters={"priority": (9, 5)})))
        assert (ids(page), page.count) == ([1, 2, made["id"]], 3)
        assert ids(run(io_loop, store.list_rows(ticket_v2, ListQuery(q="amm")))) == [t["id"]]  # search
        with pytest.raises(integrity_errors()):
            run(io_loop, store.insert_row(ticket_v2, {"title": "x", "priority": 10}, NOW))
        run(io_loop, store.delete_row(ticket_v2, t["id"]))  # message's REFERENCES still cascade
    finally:
        run(io_loop, store.close())
    assert kept <= names(fresh_url, "index")
    assert sql(fresh_url, "SELECT COUNT(*) FROM message") == [(0,)]
    assert recorded(fresh_url, "ticket")[0] == 3
    if fresh_url.startswith("sqlite:"):
        assert sql(fresh_url, "SELECT SUM(_total) FROM ticket__totals") == [(3,)]
        sql(fresh_url, "INSERT INTO ticket_search (ticket_search) VALUES ('integrity-check')")


def test_top_level_inserts_at_once_take_the_resources_own_ids(io_loop, database_url):
    store = opened(io_loop, database_url, [EPISODE, Declaration("widget", GADGET_FIELDS)])
    widget = Declaration("widget", GADGET_FIELDS)
    try:

        async def many():
            return await asyncio.gather(*(store.insert_row(widget, {"title": f"w{i}"}, NOW) for i in range(10)))

        rows = run(io_loop, many())
        assert sorted(r["id"] for r in rows) == list(range(1, 11))
        by_title = {r["title"]: r["id"] for r in rows}  # PostgreSQL's concurrent inserts take ids in any order
        assert ids(run(io_loop, store.list_rows(widget, ListQuery(q="w7")))) == [by_title["w7"]]
        add_ticket(io_loop, store)
        assert add_ticket(io_loop, store)["id"] == 2  # ticket's counter is its own

        async def slugless():
            return await asyncio.gather(
                *(store.insert_row(SHOW, {"title": "no id"}, NOW) for _ in range(2)), return_exceptions=True
            )

        assert all(isinstance(r, ValueError) for r in run(io_loop, slugless()))
    finally:
        run(io_loop, store.close())

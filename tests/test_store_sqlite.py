"""The SQLite store: migrations, generic row methods, transactions, index use."""

from __future__ import annotations

import asyncio
import sqlite3

import pytest

from medusa_v2.errors import ApiError
from medusa_v2.listing import ListQuery
from medusa_v2.resources.message import MESSAGE
from medusa_v2.resources.ticket import TICKET
from medusa_v2.store.base import AlreadyExists, NotFound, StoreUnavailable, next_timestamp, timestamp
from medusa_v2.store.sqlite import MIGRATIONS, SQLiteStore

NOW = 1_800_000_000.0


def run(io_loop, coro):
    return io_loop.run_sync(lambda: coro)


def test_timestamps():
    assert timestamp(0) == "1970-01-01T00:00:00.000000Z"
    assert timestamp(NOW + 0.123456) == "2027-01-15T08:00:00.123456Z"
    assert next_timestamp(NOW + 5, timestamp(NOW)) == timestamp(NOW + 5)
    assert next_timestamp(NOW, timestamp(NOW)) == "2027-01-15T08:00:00.000001Z"
    assert next_timestamp(NOW - 60, timestamp(NOW)) == "2027-01-15T08:00:00.000001Z"  # clock stepped back
    assert sorted([timestamp(NOW + 10), timestamp(NOW + 9.5), timestamp(NOW)]) == [
        timestamp(NOW),
        timestamp(NOW + 9.5),
        timestamp(NOW + 10),
    ]


def test_migrating_from_version_1_keeps_auth_state(io_loop, tmp_path):
    path = str(tmp_path / "old.db")
    db = sqlite3.connect(path)
    db.executescript(MIGRATIONS[0])
    db.execute("CREATE TABLE schema_version (version INTEGER NOT NULL)")
    db.execute("INSERT INTO schema_version VALUES (1)")
    db.execute("INSERT INTO revoked_token VALUES ('jti-1', 1e12)")
    db.commit()
    db.close()
    store = SQLiteStore(path)
    run(io_loop, store.open())
    try:
        assert store.db.execute("SELECT version FROM schema_version").fetchone()[0] == len(MIGRATIONS)
        assert run(io_loop, store.is_token_revoked("jti-1"))
        row = run(io_loop, store.insert_row(TICKET, {"title": "t", "priority": 3, "state": "open"}, NOW))
        assert row["id"] == 1
    finally:
        run(io_loop, store.close())


def test_a_newer_schema_is_refused(io_loop, tmp_path):
    """A database migrated by a later medusa_v2 is not opened (as on PostgreSQL: test_postgres)."""
    path = str(tmp_path / "newer.db")
    store = SQLiteStore(path)
    run(io_loop, store.open())
    run(io_loop, store.close())
    db = sqlite3.connect(path)
    db.execute("UPDATE schema_version SET version = ?", (len(MIGRATIONS) + 1,))
    db.commit()
    db.close()
    with pytest.raises(StoreUnavailable, match="newer than this medusa_v2"):
        run(io_loop, SQLiteStore(path).open())


def test_migrating_from_version_4_counts_the_rows_per_value(io_loop, tmp_path):
    from medusa_v2.store.sqlite import split_statements

    path = str(tmp_path / "v4.db")
    db = sqlite3.connect(path, isolation_level=None)
    db.execute("BEGIN")
    for script in MIGRATIONS[:4]:
        for statement in split_statements(script):
            db.execute(statement)
    db.execute("CREATE TABLE schema_version (version INTEGER NOT NULL)")
    db.execute("INSERT INTO schema_version VALUES (4)")
    db.executemany(
        "INSERT INTO ticket (id, title, state, priority, created_at, updated_at) VALUES (?, 't', ?, ?, ?, ?)",
        [(i, ("open", "pending", "closed")[i % 3], i % 4 + 1, timestamp(NOW), timestamp(NOW)) for i in range(1, 101)],
    )
    db.execute("COMMIT")
    db.close()
    store = SQLiteStore(path)
    run(io_loop, store.open())
    try:
        assert store.db.execute("SELECT version FROM schema_version").fetchone()[0] == len(MIGRATIONS)

        def count(**filters):
            return run(io_loop, store.list_rows(TICKET, ListQuery(filters=filters))).count

        assert [count(state=(s,)) for s in ("open", "pending", "closed")] == [33, 34, 33]
        assert [count(priority=(p,)) for p in (1, 2, 3, 4, 5)] == [25, 25, 25, 25, 0]
        run(io_loop, store.update_row(TICKET, 3, {"state": "closed", "priority": 5}, NOW))
        assert count(state=("open",)) == 32 and count(state=("closed",)) == 34 and count(priority=(5,)) == 1
    finally:
        run(io_loop, store.close())


def test_a_list_under_any_filters_is_counted_from_the_totals_not_the_table(io_loop, store):
    for i in range(6):
        run(io_loop, store.insert_row(TICKET, {"title": "t", "state": ("open", "closed")[i % 2]}, NOW))
    statements: list[str] = []
    store.db.set_trace_callback(statements.append)
    try:
        page = run(io_loop, store.list_rows(TICKET, ListQuery(filters={"state": ("open",)})))
        both = run(io_loop, store.list_rows(TICKET, ListQuery(filters={"state": ("open",), "priority": (3,)})))
        three = run(
            io_loop, store.list_rows(TICKET, ListQuery(filters={"state": ("open", "closed"), "assignee": ("x",)}))
        )
        searched = run(io_loop, store.list_rows(TICKET, ListQuery(filters={"state": ("open",)}, q="t")))
    finally:
        store.db.set_trace_callback(None)
    assert (page.count, len(page.rows), both.count, three.count, searched.count) == (3, 3, 3, 0, 3)
    counted = [sql for sql in statements if "COUNT(" in sql]
    assert len(counted) == 1 and 'COUNT(*) FROM "ticket"' in counted[0], statements  # q: the matching rows
    summed = [sql for sql in statements if "SUM(" in sql]
    assert len(summed) >= 3 and all('FROM "ticket__totals"' in sql for sql in summed), statements


def test_updates_and_deletes_of_one_iteration_share_one_commit(io_loop, store):
    made = [run(io_loop, store.insert_row(TICKET, {"title": f"t{i}"}, NOW)) for i in range(5)]
    statements: list[str] = []
    store.db.set_trace_callback(statements.append)

    async def together():
        return await asyncio.gather(
            *(store.update_row(TICKET, row["id"], {"priority": 1}, NOW) for row in made[:4]),
            store.delete_row(TICKET, made[4]["id"]),
        )

    try:
        run(io_loop, together())
    finally:
        store.db.set_trace_callback(None)
    assert statements.count("COMMIT") == 1, statements
    assert run(io_loop, store.list_rows(TICKET, ListQuery(filters={"priority": (1,)}))).count == 4


def test_auth_methods_still_work(io_loop, store):
    run(io_loop, store.revoke_token("j", NOW + 10))
    assert run(io_loop, store.is_token_revoked("j"))
    run(io_loop, store.record_login_failure("c", NOW, NOW - 100))
    assert list(run(io_loop, store.login_failures("c", NOW - 1))) == [NOW]
    run(io_loop, store.clear_login_failures("c"))
    assert list(run(io_loop, store.login_failures("c", 0))) == []


def test_rows_survive_reopening(io_loop, tmp_path):
    path = str(tmp_path / "d.db")
    store = SQLiteStore(path)
    run(io_loop, store.open())
    run(io_loop, store.insert_row(TICKET, {"title": "durable"}, NOW))
    run(io_loop, store.close())
    again = SQLiteStore(path)
    run(io_loop, again.open())
    assert run(io_loop, again.get_row(TICKET, 1))["title"] == "durable"
    run(io_loop, again.close())


def test_insert_get_update_delete(io_loop, store):
    row = run(io_loop, store.insert_row(TICKET, {"title": "t", "description": "", "priority": 2}, NOW))
    assert row["created_at"] == row["updated_at"] == timestamp(NOW)
    with pytest.raises(AlreadyExists):
        run(io_loop, store.insert_row(TICKET, {"id": row["id"], "title": "again"}, NOW))
    updated = run(io_loop, store.update_row(TICKET, row["id"], {"priority": 4}, NOW))
    assert updated["priority"] == 4
    assert updated["updated_at"] > row["updated_at"]
    assert updated["created_at"] == row["created_at"]
    with pytest.raises(NotFound) as caught:
        run(io_loop, store.update_row(TICKET, 999, {"priority": 4}, NOW))
    assert (caught.value.resource, caught.value.id) == ("ticket", 999)
    run(io_loop, store.delete_row(TICKET, row["id"]))
    with pytest.raises(NotFound):
        run(io_loop, store.get_row(TICKET, row["id"]))


def test_a_failing_check_changes_nothing(io_loop, store):
    row = run(io_loop, store.insert_row(TICKET, {"title": "t"}, NOW))

    def refuse(current):
        assert current == row
        raise ApiError(412, "stale")

    with pytest.raises(ApiError):
        run(io_loop, store.update_row(TICKET, row["id"], {"title": "changed"}, NOW + 1, refuse))
    with pytest.raises(ApiError):
        run(io_loop, store.delete_row(TICKET, row["id"], refuse))
    assert run(io_loop, store.get_row(TICKET, row["id"])) == row
    assert not store.db.in_transaction


def test_cascade_removes_messages_and_their_search_rows(io_loop, store):
    t = run(io_loop, store.insert_row(TICKET, {"title": "t"}, NOW))
    for i in range(3):
        run(io_loop, store.insert_row(MESSAGE, {"author": "a", "body": f"needle {i}"}, NOW, (TICKET, t["id"])))
    run(io_loop, store.delete_row(TICKET, t["id"]))
    db = store.db
    assert db.execute("SELECT COUNT(*) FROM message").fetchone()[0] == 0
    assert db.execute("SELECT COUNT(*) FROM message_search WHERE message_search MATCH 'needle'").fetchone()[0] == 0
    db.execute("INSERT INTO message_search (message_search) VALUES ('integrity-check')")
    db.execute("INSERT INTO ticket_search (ticket_search) VALUES ('integrity-check')")


def test_message_parent_rules(io_loop, store):
    t = run(io_loop, store.insert_row(TICKET, {"title": "t"}, NOW))
    with pytest.raises(NotFound) as caught:
        run(io_loop, store.insert_row(MESSAGE, {"author": "a", "body": "b"}, NOW, (TICKET, t["id"] + 1)))
    assert caught.value.resource == "ticket"
    m = run(io_loop, store.insert_row(MESSAGE, {"author": "a", "body": "b"}, NOW, (TICKET, t["id"])))
    assert m["ticket_id"] == t["id"]
    other = run(io_loop, store.insert_row(TICKET, {"title": "u"}, NOW))
    with pytest.raises(NotFound) as caught:
        run(io_loop, store.get_row(MESSAGE, m["id"], (TICKET, other["id"])))
    assert caught.value.resource == "message"


# -- query plans: every list this API serves is index-backed --

# sqlite_stat1 of a database of 1,000,000 tickets and 300,000 messages (ANALYZE), so
# the planner chooses here what it would choose in production.
STATS = [
    ("ticket", "ticket_state", "1000000 333334 1"),
    ("ticket", "ticket_state_updated_at", "1000000 333334 1 1"),
    ("ticket", "ticket_updated_at", "1000000 1 1"),
    ("ticket", "ticket_created_at", "1000000 1 1"),
    ("ticket", "ticket_title", "1000000 1 1"),
    ("ticket", "ticket_assignee", "1000000 19608 1"),
    ("ticket", "ticket_priority", "1000000 200000 1"),
    ("ticket", "ticket_state_priority", "1000000 333334 66667 1"),
    ("ticket", "ticket_priority_updated_at", "1000000 200000 1 1"),
    ("ticket", "ticket_state_priority_updated_at", "1000000 333334 66667 1 1"),
    ("message", "message_ticket_updated_at", "300000 3 3 1"),
    ("message", "message_ticket_author", "300000 3 1 1"),
    ("message", "message_ticket", "300000 3 1"),
]


@pytest.fixture
def big(io_loop, store):
    for i in range(3):
        run(
            io_loop,
            store.insert_row(TICKET, {"title": f"printer {i}", "state": "open", "priority": 2, "assignee": "ann"}, NOW),
        )
        run(io_loop, store.insert_row(MESSAGE, {"author": "ann", "body": "needle"}, NOW, (TICKET, 1)))
    db = store.db
    db.execute("ANALYZE")
    db.execute("DELETE FROM sqlite_stat1 WHERE tbl IN ('ticket', 'message')")
    db.executemany("INSERT INTO sqlite_stat1 (tbl, idx, stat) VALUES (?, ?, ?)", STATS)
    db.execute("ANALYZE sqlite_schema")  # reload the statistics
    return store


def plans(io_loop, store, decl, query, parent=None) -> list[list[str]]:
    """Return the EXPLAIN QUERY PLAN of each statement a list runs."""
    statements: list[str] = []
    store.db.set_trace_callback(statements.append)
    try:
        run(io_loop, store.list_rows(decl, query, parent))
    finally:
        store.db.set_trace_callback(None)
    out = []
    for sql in statements:
        if sql.startswith("SELECT") and (f'"{decl.name}"' in sql or f'FROM "{decl.name}_search"' in sql):
            out.append([row[3] for row in store.db.execute("EXPLAIN QUERY PLAN " + sql)])
    return out


def unbounded_scan(plan: list[str], table: str) -> bool:
    """Return whether a plan reads the whole table, or sorts a result it could not bound."""
    bare = any(line == f"SCAN {table}" for line in plan)
    return bare and any("TEMP B-TREE" in line for line in plan)


@pytest.mark.parametrize(
    "query",
    [
        ListQuery(),
        ListQuery(page=3, limit=1),
        ListQuery(sort=(("priority", True),)),
        ListQuery(sort=(("priority", False),)),
        ListQuery(sort=(("updated_at", True),)),
        ListQuery(sort=(("created_at", False),)),
        ListQuery(sort=(("title", False),)),
        ListQuery(sort=(("assignee", True),)),
        ListQuery(sort=(("state", True),)),
        ListQuery(filters={"state": ("open",)}, sort=(("priority", True),)),
        ListQuery(filters={"state": ("open",)}, sort=(("updated_at", True),)),
        ListQuery(filters={"priority": (2,)}),
        ListQuery(filters={"assignee": ("ann",)}),
        ListQuery(filters={"state": ("open",), "priority": (1, 2)}),
        ListQuery(q="printer"),
        ListQuery(q="printer", filters={"state": ("open",)}, sort=(("priority", True),)),
    ],
)
def test_ticket_lists_use_indexes(io_loop, big, query):
    found = plans(io_loop, big, TICKET, query)  # both run: the page is not past the end
    if not query.q:
        # Under any filters, the count is a sum of the trigger-kept totals per filter
        # values (ticket__totals), not a query of ticket.
        assert len(found) == 1, found
        found = [found[0], found[0]]
    count_plan, page_plan = found
    for plan in (count_plan, page_plan):
        assert not unbounded_scan(plan, "ticket"), plan
    if query.sort and not query.q and not query.filters:
        # Served in index order: the page is read, not the table sorted.
        assert not any("TEMP B-TREE" in line for line in page_plan), page_plan
    if query.filters and not query.q:
        # Found on a filter's index, or walked in the sort order (no sort) until the page is full.
        assert any("INDEX" in line for line in page_plan) or not any("TEMP B-TREE" in line for line in page_plan)
    if query.q:
        for plan in (count_plan, page_plan):
            assert any("ticket_search VIRTUAL TABLE INDEX" in line for line in plan), plan
        # Each match is looked up by its id, not the table scanned for matches (a count
        # without filters reads the search index alone).
        looked_up = [count_plan, page_plan] if query.filters else [page_plan]
        for plan in looked_up:
            assert any(line.startswith("SEARCH ticket") and ("rowid=?" in line or "id=?" in line) for line in plan), (
                plan
            )
            assert not any(line.startswith("SCAN ticket ") or line == "SCAN ticket" for line in plan), plan


@pytest.mark.parametrize(
    "query",
    [
        ListQuery(),
        ListQuery(filters={"author": ("ann",)}),
        ListQuery(sort=(("author", False),)),
        ListQuery(sort=(("updated_at", True),)),
        ListQuery(q="needle"),
        ListQuery(q="ne"),
    ],
)
def test_message_lists_use_the_ticket_index(io_loop, big, query):
    for plan in plans(io_loop, big, MESSAGE, query, (TICKET, 1)):
        assert any(line.startswith("SEARCH message USING") and "ticket_id=?" in line for line in plan), plan


def test_the_kept_total_follows_inserts_deletes_and_cascades(io_loop, store):
    def total():
        return run(io_loop, store.list_rows(TICKET, ListQuery())).count

    rows = [run(io_loop, store.insert_row(TICKET, {"title": f"t{i}"}, NOW)) for i in range(5)]
    run(io_loop, store.insert_row(MESSAGE, {"author": "a", "body": "b"}, NOW, (TICKET, rows[0]["id"])))
    assert total() == 5
    run(io_loop, store.delete_row(TICKET, rows[0]["id"]))
    with pytest.raises(AlreadyExists):
        run(io_loop, store.insert_row(TICKET, {"id": rows[1]["id"], "title": "again"}, NOW))
    assert total() == 4 == store.db.execute("SELECT COUNT(*) FROM ticket").fetchone()[0]


def test_a_deep_page_is_the_same_rows_as_a_plain_offset(io_loop, store):
    import medusa_v2.store.sqlite.queries as queries

    store.db.executemany(
        "INSERT INTO ticket (id, title, priority, updated_at, created_at) VALUES (?, ?, ?, ?, ?)",
        [(i, f"t{i}", i % 5 + 1, timestamp(NOW + i % 7), timestamp(NOW)) for i in range(1, 1201)],
    )
    for query in (
        ListQuery(page=60, limit=20),
        ListQuery(page=30, limit=40, sort=(("priority", True), ("updated_at", False))),
        ListQuery(page=6, limit=200, filters={"priority": (1, 2, 3, 4, 5)}, sort=(("title", True),)),
    ):
        deep = run(io_loop, store.list_rows(TICKET, query))
        old = queries._DEEP_OFFSET
        queries._DEEP_OFFSET = 10**12
        try:
            plain = run(io_loop, store.list_rows(TICKET, query))
        finally:
            queries._DEEP_OFFSET = old
        assert deep == plain and deep.rows, query


@pytest.mark.parametrize("url,expected", [("", 1), ("?synchronous=full", 2), ("?synchronous=normal", 1)])
def test_sqlite_url_chooses_the_synchronous_level(tmp_path, url, expected):
    import asyncio

    from medusa_v2.store import store_from_url

    store = store_from_url(f"sqlite:///{tmp_path / 'db.sqlite'}{url}")
    asyncio.run(store.open())
    try:
        assert store.db.execute("PRAGMA synchronous").fetchone()[0] == expected  # 1 NORMAL, 2 FULL
    finally:
        asyncio.run(store.close())


def test_sqlite_url_refuses_unknown_options(tmp_path):
    from medusa_v2.store import store_from_url

    with pytest.raises(ValueError, match="synchronus"):
        store_from_url(f"sqlite:///{tmp_path / 'db.sqlite'}?synchronus=full")


# -- inserts of one event-loop iteration (group commit) --


def insert_together(io_loop, store, calls):
    """Ask for every insert in one loop iteration; return each one's row or exception, and the INSERT statements run."""
    import asyncio

    statements: list[str] = []
    store.db.set_trace_callback(statements.append)
    try:

        async def together():
            return await asyncio.gather(*(store.insert_row(*call) for call in calls), return_exceptions=True)

        outcomes = run(io_loop, together())
    finally:
        store.db.set_trace_callback(None)
    # Each statement once (it is traced again at the start of each trigger it fires).
    return outcomes, list(dict.fromkeys(s for s in statements if s.startswith('INSERT INTO "ticket"')))


def search_integrity(store):
    for search in ("ticket_search", "message_search"):
        store.db.execute(f"INSERT INTO {search} ({search}) VALUES ('integrity-check')")


def test_inserts_of_one_iteration_go_in_one_statement_each_with_its_own_row(io_loop, store):
    parent = run(io_loop, store.insert_row(TICKET, {"title": "parent"}, NOW))
    calls = [
        (TICKET, {"title": f"plain {i}", "state": ("open", "closed")[i % 2], "priority": i % 5 + 1}, NOW + i)
        for i in range(12)
    ]
    calls += [(TICKET, {"title": "other columns", "assignee": "bob"}, NOW)]  # alone with its columns
    calls += [(TICKET, {"title": f"few {i}"}, NOW) for i in range(2)]  # another group
    calls += [(MESSAGE, {"author": "ann", "body": "under parent"}, NOW, (TICKET, parent["id"]))]
    calls += [(TICKET, {"id": 500, "title": "chosen"}, NOW)]
    outcomes, inserts = insert_together(io_loop, store, calls)
    assert not [o for o in outcomes if isinstance(o, BaseException)], outcomes
    for call, row in zip(calls, outcomes, strict=True):
        assert {k: row[k] for k in call[1]} == call[1]
        assert row == run(io_loop, store.get_row(call[0], row["id"], call[3] if len(call) > 3 else None))
        assert row["created_at"] == timestamp(call[2])
    plain = [row["id"] for row in outcomes[:12]]
    assert plain == list(range(plain[0], plain[0] + 12))  # the next ids, in the order asked
    ticket_ids = [row["id"] for call, row in zip(calls, outcomes, strict=True) if call[0] is TICKET]
    assert len(set(ticket_ids)) == len(ticket_ids) and 500 in ticket_ids
    # Two groups in one statement each; the row alone and the chosen id, one each.
    assert len(inserts) == 4 and sum(s.count("), (") for s in inserts) == 11 + 1
    page = run(io_loop, store.list_rows(TICKET, ListQuery(filters={"state": ("closed",)})))
    assert page.count == 6 == len(page.rows)
    assert run(io_loop, store.list_rows(TICKET, ListQuery(q="plain 1"))).count == 3  # plain 1, 10, 11
    assert run(io_loop, store.list_rows(TICKET, ListQuery())).count == 1 + 15 + 1
    search_integrity(store)
    # The counter moved past the group: the next insert takes the id after it.
    assert (
        run(io_loop, store.insert_row(TICKET, {"title": "next"}, NOW))["id"]
        == max(i for i in ticket_ids if i < 500) + 1
    )


def test_a_group_whose_next_ids_are_taken_goes_one_by_one_skipping_them(io_loop, store):
    first = run(io_loop, store.insert_row(TICKET, {"title": "first"}, NOW))
    run(io_loop, store.insert_row(TICKET, {"id": first["id"] + 3, "title": "chosen ahead"}, NOW))
    outcomes, inserts = insert_together(io_loop, store, [(TICKET, {"title": f"t{i}"}, NOW) for i in range(5)])
    assert [row["id"] for row in outcomes] == [first["id"] + n for n in (1, 2, 4, 5, 6)]
    assert [row["title"] for row in outcomes] == [f"t{i}" for i in range(5)]
    assert len(inserts) == 5  # one by one
    assert run(io_loop, store.get_row(TICKET, first["id"] + 3))["title"] == "chosen ahead"
    assert run(io_loop, store.list_rows(TICKET, ListQuery())).count == 7
    search_integrity(store)


def test_a_row_the_database_refuses_fails_alone_and_its_group_goes_in(io_loop, store):
    calls = [(TICKET, {"title": f"t{i}", "state": "bogus" if i == 2 else "open"}, NOW) for i in range(5)]
    outcomes, inserts = insert_together(io_loop, store, calls)
    assert isinstance(outcomes[2], sqlite3.IntegrityError)
    kept = [outcomes[i] for i in (0, 1, 3, 4)]
    assert [row["title"] for row in kept] == ["t0", "t1", "t3", "t4"]
    assert [row["id"] for row in kept] == [1, 2, 3, 4]  # the refused row's id was not used up
    assert len(inserts) == 1 + 5  # the group's statement, undone; then one by one
    assert run(io_loop, store.list_rows(TICKET, ListQuery())).count == 4
    assert run(io_loop, store.list_rows(TICKET, ListQuery(filters={"state": ("open",)}))).count == 4
    assert run(io_loop, store.list_rows(TICKET, ListQuery(q="t2"))).count == 0
    search_integrity(store)


# -- token revocations --


def test_revocation_checks_of_one_iteration_share_a_look_up(io_loop, store, tmp_path):
    import asyncio

    statements: list[str] = []

    async def checks():
        store.db.set_trace_callback(statements.append)
        try:
            return await asyncio.gather(*(store.is_token_revoked(jti) for jti in ("a", "a", "b", "a", "b")))
        finally:
            store.db.set_trace_callback(None)

    assert run(io_loop, checks()) == [False] * 5
    assert len([s for s in statements if "revoked_token" in s]) == 2  # one per jti

    async def revoked_here():
        # Revoked by this store in the same iteration: refused at once.
        assert not await store.is_token_revoked("c")
        await store.revoke_token("c", NOW + 60)
        return await store.is_token_revoked("c")

    assert run(io_loop, revoked_here())

    async def revoked_elsewhere():
        other = SQLiteStore(store.path)
        await other.open()
        try:
            assert not await store.is_token_revoked("d")
            await other.revoke_token("d", NOW + 60)
            before = await store.is_token_revoked("d")  # this iteration's answer, as of its look-up
            await asyncio.sleep(0)  # the next iteration looks again
            return before, await store.is_token_revoked("d")
        finally:
            await other.close()

    assert run(io_loop, revoked_elsewhere()) == (False, True)

"""The Store contract, run unchanged on SQLite and on PostgreSQL (`stores` marker).

Whatever one store answers, the other answers identically: ids, timestamps, list
order (NULLs, ties), filters, `q`, errors, idempotency keys and auth state.
"""

from __future__ import annotations

import asyncio
import itertools
import random

import pytest
from conftest import expected_order

from medusa_v2.errors import ApiError
from medusa_v2.listing import ListQuery
from medusa_v2.resources.message import MESSAGE
from medusa_v2.resources.ticket import TICKET
from medusa_v2.store.base import (
    AlreadyExists,
    IdempotentResponse,
    KeyInFlight,
    KeyMismatch,
    NotFound,
    StoreUnavailable,
    Tree,
    timestamp,
)

pytestmark = pytest.mark.stores("sqlite", "postgresql")

NOW = 1_800_000_000.0
MAX_ID = 2**63 - 1


def run(io_loop, coro):
    return io_loop.run_sync(lambda: coro)


def add(io_loop, store, **values):
    values.setdefault("title", "t")
    return run(io_loop, store.insert_row(TICKET, values, NOW))


def ids(page):
    return [r["id"] for r in page.rows]


# -- rows --


def test_insert_get_update_delete(io_loop, store):
    row = add(io_loop, store, title="t", description="", priority=2)
    assert row == {
        "id": 1,
        "title": "t",
        "description": "",
        "state": "open",
        "priority": 2,
        "assignee": None,
        "created_at": timestamp(NOW),
        "updated_at": timestamp(NOW),
    }
    assert run(io_loop, store.get_row(TICKET, 1)) == row
    with pytest.raises(AlreadyExists) as caught:
        add(io_loop, store, id=1, title="again")
    assert (caught.value.resource, caught.value.id) == ("ticket", 1)
    updated = run(io_loop, store.update_row(TICKET, 1, {"priority": 4}, NOW))
    assert updated["priority"] == 4
    assert updated["updated_at"] == "2027-01-15T08:00:00.000001Z"  # moved forward on the same clock
    assert updated["created_at"] == row["created_at"]
    assert run(io_loop, store.update_row(TICKET, 1, {}, NOW + 5)) == updated  # nothing to change
    with pytest.raises(NotFound) as caught:
        run(io_loop, store.update_row(TICKET, 999, {"priority": 4}, NOW))
    assert (caught.value.resource, caught.value.id) == ("ticket", 999)
    with pytest.raises(NotFound):
        run(io_loop, store.delete_row(TICKET, 999))
    run(io_loop, store.delete_row(TICKET, 1))
    with pytest.raises(NotFound):
        run(io_loop, store.get_row(TICKET, 1))


def test_a_failing_check_changes_nothing(io_loop, store):
    row = add(io_loop, store)
    seen = []

    def refuse(current):
        seen.append(current)
        raise ApiError(412, "stale")

    with pytest.raises(ApiError):
        run(io_loop, store.update_row(TICKET, row["id"], {"title": "changed"}, NOW + 1, refuse))
    with pytest.raises(ApiError):
        run(io_loop, store.delete_row(TICKET, row["id"], refuse))
    assert seen == [row, row]
    assert run(io_loop, store.get_row(TICKET, row["id"])) == row
    # the store is still usable (no transaction left open)
    assert run(io_loop, store.update_row(TICKET, row["id"], {"title": "ok"}, NOW + 2))["title"] == "ok"


def test_check_parent_refusal_creates_nothing(io_loop, store):
    t = add(io_loop, store, state="closed")

    def closed(parent_row):
        assert parent_row == t
        raise ApiError(409, "closed")

    with pytest.raises(ApiError):
        run(io_loop, store.insert_row(MESSAGE, {"author": "a", "body": "b"}, NOW, (TICKET, t["id"]), closed))
    assert run(io_loop, store.list_rows(MESSAGE, ListQuery(), (TICKET, t["id"]))).count == 0


def test_message_parent_rules_and_cascade(io_loop, store):
    t = add(io_loop, store)
    with pytest.raises(NotFound) as caught:
        run(io_loop, store.insert_row(MESSAGE, {"author": "a", "body": "b"}, NOW, (TICKET, t["id"] + 1)))
    assert caught.value.resource == "ticket"
    m = run(io_loop, store.insert_row(MESSAGE, {"author": "a", "body": "b"}, NOW, (TICKET, t["id"])))
    assert m == {
        "id": 1,
        "ticket_id": t["id"],
        "author": "a",
        "body": "b",
        "created_at": timestamp(NOW),
        "updated_at": timestamp(NOW),
    }
    other = add(io_loop, store)
    with pytest.raises(NotFound) as caught:
        run(io_loop, store.get_row(MESSAGE, m["id"], (TICKET, other["id"])))
    assert caught.value.resource == "message"
    with pytest.raises(NotFound) as caught:
        run(io_loop, store.get_row(MESSAGE, m["id"], (TICKET, 12345)))
    assert caught.value.resource == "ticket"
    with pytest.raises(NotFound) as caught:
        run(io_loop, store.list_rows(MESSAGE, ListQuery(), (TICKET, 12345)))
    assert caught.value.resource == "ticket"
    for i in range(3):
        run(io_loop, store.insert_row(MESSAGE, {"author": "a", "body": f"needle {i}"}, NOW, (TICKET, t["id"])))
    run(io_loop, store.delete_row(TICKET, t["id"]))
    with pytest.raises(NotFound):
        run(io_loop, store.get_row(MESSAGE, m["id"]))
    other_m = run(io_loop, store.insert_row(MESSAGE, {"author": "a", "body": "needle"}, NOW, (TICKET, other["id"])))
    page = run(io_loop, store.list_rows(MESSAGE, ListQuery(q="needle"), (TICKET, other["id"])))
    assert ids(page) == [other_m["id"]]


# -- ids: a counter that never goes back --


def test_a_deleted_id_is_never_assigned_again(io_loop, store):
    for _ in range(3):
        add(io_loop, store)
    run(io_loop, store.delete_row(TICKET, 3))
    assert add(io_loop, store)["id"] == 4
    run(io_loop, store.delete_row(TICKET, 4))
    run(io_loop, store.delete_row(TICKET, 2))
    assert add(io_loop, store)["id"] == 5


def test_chosen_ids_do_not_move_the_counter_and_are_skipped(io_loop, store):
    assert add(io_loop, store, id=MAX_ID)["id"] == MAX_ID  # does not exhaust anything
    assert add(io_loop, store)["id"] == 1
    for chosen in (2, 3, 4):
        add(io_loop, store, id=chosen)
    assert add(io_loop, store)["id"] == 5  # 2..4 taken: skipped, in one step
    assert add(io_loop, store)["id"] == 6
    add(io_loop, store, id=100)
    assert [add(io_loop, store)["id"] for _ in range(2)] == [7, 8]
    with pytest.raises(AlreadyExists):
        add(io_loop, store, id=7)


STATES = ("open", "pending", "closed")
TREE = Tree(TICKET, (Tree(MESSAGE),))


def imported(io_loop, store, tickets, replace=False, vary=False):
    """Import tickets given as (id, [message ids]) through Store.import_rows, in two batches.

    Each is open with priority 3, or with `vary`, has a state and priority picked by its id.
    """
    stamp = timestamp(NOW)
    docs = [
        (
            {
                "id": i,
                "title": f"imported {i}",
                "description": "",
                "state": STATES[i % 3] if vary else "open",
                "priority": i % 5 + 1 if vary else 3,
                "assignee": None,
                "created_at": stamp,
                "updated_at": stamp,
            },
            [
                {"id": m, "ticket_id": i, "author": "a", "body": "b", "created_at": stamp, "updated_at": stamp}
                for m in messages
            ],
        )
        for i, messages in tickets
    ]

    async def batches():
        half = len(docs) // 2
        for batch in (docs[:half], docs[half:]):
            if batch:
                yield TREE, [(row, ([(item, ()) for item in items],)) for row, items in batch]

    return run(io_loop, store.import_rows([TREE], batches(), replace=replace))


def add_message(io_loop, store, ticket_id):
    return run(io_loop, store.insert_row(MESSAGE, {"author": "a", "body": "b"}, NOW, (TICKET, ticket_id)))


PEOPLE = (None, "ann", "bob")


def test_counts_under_any_filters_stay_exact_through_every_kind_of_write(io_loop, store):
    """The count of every filter combination is the number of rows it matches, whatever wrote them."""
    rng = random.Random(20261205)
    imported(io_loop, store, [(i, [i * 10]) for i in range(1, 21)], vary=True)  # into empty tables
    live: set[int] = set(range(1, 21))

    def check():
        rows = run(io_loop, store.list_rows(TICKET, ListQuery(limit=1000))).rows
        assert sorted(r["id"] for r in rows) == sorted(live)
        values = {"state": STATES, "priority": (1, 2, 3, 4, 5), "assignee": PEOPLE[1:]}
        for size in range(4):
            for names in itertools.combinations(values, size):
                filters = {n: tuple(rng.sample(values[n], rng.randint(1, 2))) for n in names}
                want = [r["id"] for r in rows if all(r[n] in allowed for n, allowed in filters.items())]
                page = run(io_loop, store.list_rows(TICKET, ListQuery(filters=filters, limit=1000)))
                assert (page.count, sorted(ids(page))) == (len(want), sorted(want)), filters

    check()
    for step in range(120):
        action = rng.choice(("insert", "insert", "update", "update", "delete", "import"))
        if action == "insert":
            fields = {"state": rng.choice(STATES), "priority": rng.randint(1, 5), "assignee": rng.choice(PEOPLE)}
            live.add(add(io_loop, store, **fields)["id"])
        elif action == "update" and live:
            changes = rng.choice(
                [{"title": f"t{step}"}, {"state": rng.choice(STATES)}, {"assignee": rng.choice(PEOPLE)}]
                + [{"priority": rng.randint(1, 5), "state": rng.choice(STATES), "assignee": rng.choice(PEOPLE)}]
            )
            run(io_loop, store.update_row(TICKET, rng.choice(sorted(live)), changes, NOW))
        elif action == "delete" and live:
            gone = rng.choice(sorted(live))
            run(io_loop, store.delete_row(TICKET, gone))
            live.discard(gone)
        elif action == "import":
            # Replaces some rows (their messages go by cascade) and adds others.
            chosen = rng.sample(sorted(live), min(3, len(live))) + [1000 + step]
            imported(io_loop, store, [(i, []) for i in chosen], replace=True, vary=True)
            live.update(chosen)
        if step % 12 == 11:
            check()


def test_every_page_of_any_filters_and_sort_is_the_sorted_slice(io_loop, store):
    """Pages found by groups of sort keys, read from the nearer end or walked: all equal the plain sorted slice."""
    rng = random.Random(5)
    for _ in range(70):
        add(
            io_loop,
            store,
            title=rng.choice("abc") * rng.randint(1, 2),
            state=rng.choice(STATES),
            priority=rng.choice((1, 3, 3, 5)),
            assignee=rng.choice(PEOPLE + PEOPLE[:1]),
        )
    rows = run(io_loop, store.list_rows(TICKET, ListQuery(limit=1000))).rows
    sortable = ["state", "priority", "assignee", "title", "id"]
    values = {"state": STATES, "priority": (1, 3, 5), "assignee": PEOPLE[1:]}
    for _ in range(25):
        names = rng.sample(list(values), rng.randint(0, 2))
        filters = {n: tuple(rng.sample(values[n], rng.randint(1, 2))) for n in names}
        sort = tuple((name, rng.random() < 0.5) for name in rng.sample(sortable, rng.randint(0, 3)))
        matching = [r for r in rows if all(r[n] in allowed for n, allowed in filters.items())]
        want = [r["id"] for r in expected_order(matching, sort)]
        for limit in (1, 4, 9):
            for page in range(1, len(want) // limit + 3):
                query = ListQuery(page=page, limit=limit, sort=sort, filters=filters)
                found = run(io_loop, store.list_rows(TICKET, query))
                start = (page - 1) * limit
                assert (found.count, ids(found)) == (len(want), want[start : start + limit]), query


@pytest.mark.parametrize("checked", [False, True])
def test_every_update_moves_updated_at_forward_even_when_the_clock_does_not(io_loop, store, checked):
    check = (lambda row: None) if checked else None  # the locked read, or the one-statement update
    edge = 1_799_999_999.999999  # one microsecond before a second (and minute) turns
    row = run(io_loop, store.insert_row(TICKET, {"title": "t"}, edge))
    stamps = [row["updated_at"]]
    for now, title in ((edge, "same microsecond"), (edge - 60, "clock stepped back"), (NOW + 10, "later")):
        stamps.append(run(io_loop, store.update_row(TICKET, row["id"], {"title": title}, now, check))["updated_at"])
    assert stamps == [
        timestamp(edge),
        "2027-01-15T08:00:00.000000Z",
        "2027-01-15T08:00:00.000001Z",
        timestamp(NOW + 10),
    ]
    assert run(io_loop, store.get_row(TICKET, row["id"]))["updated_at"] == stamps[-1]
    with pytest.raises(NotFound):
        run(io_loop, store.update_row(TICKET, 999, {"title": "x"}, NOW, check))


def test_concurrent_writes_each_get_their_own_outcome(io_loop, store):
    """Writes asked for together (one event-loop iteration) succeed or fail each on its own."""
    rows = [add(io_loop, store, title=f"t{i}") for i in range(4)]

    def refuse(row):
        raise ApiError(412, "Precondition Failed")

    async def together():
        return await asyncio.gather(
            store.update_row(TICKET, rows[0]["id"], {"state": "closed"}, NOW + 1),
            store.update_row(TICKET, rows[1]["id"], {"state": "closed"}, NOW + 1, refuse),
            store.update_row(TICKET, 999, {"title": "x"}, NOW + 1),
            store.delete_row(TICKET, rows[2]["id"]),
            store.delete_row(TICKET, rows[3]["id"], refuse),
            store.insert_row(TICKET, {"title": "new", "state": "pending"}, NOW + 1),
            store.update_row(TICKET, rows[0]["id"], {"priority": 5}, NOW + 1),
            return_exceptions=True,
        )

    first, refused, missing, deleted, kept, made, second = run(io_loop, together())
    assert first["state"] == "closed" and second["priority"] == 5 and first["updated_at"] != second["updated_at"]
    both = run(io_loop, store.get_row(TICKET, rows[0]["id"]))  # the two updates of one row both applied
    assert (both["state"], both["priority"]) == ("closed", 5)
    assert isinstance(refused, ApiError) and isinstance(kept, ApiError)
    assert isinstance(missing, NotFound) and deleted is None and made["state"] == "pending"
    assert run(io_loop, store.get_row(TICKET, rows[1]["id"]))["state"] == "open"  # refused: unchanged
    assert run(io_loop, store.get_row(TICKET, rows[3]["id"]))["title"] == "t3"  # refused: still there
    with pytest.raises(NotFound):
        run(io_loop, store.get_row(TICKET, rows[2]["id"]))
    page = run(io_loop, store.list_rows(TICKET, ListQuery(filters={"state": ("closed",)})))
    assert (page.count, ids(page)) == (1, [rows[0]["id"]])  # the totals saw only what committed
    assert run(io_loop, store.list_rows(TICKET, ListQuery())).count == 4


def test_an_import_moves_the_counters_past_its_ids(io_loop, store):
    huge = 2**62  # from here on, an imported id leaves the counter alone (never exhausted)
    assert imported(io_loop, store, [(3, [7]), (1_000_000, [900_000, 5]), (huge, [huge + 1]), (MAX_ID, [])]) == 4
    assert add(io_loop, store)["id"] == 1_000_001  # no walk over the imported block
    assert add_message(io_loop, store, 3)["id"] == 900_001
    assert imported(io_loop, store, [(10, [])]) == 1  # below the counter: it does not go back
    assert add(io_loop, store)["id"] == 1_000_002
    assert imported(io_loop, store, [(1_000_000, [])], replace=True) == 1
    assert add(io_loop, store)["id"] == 1_000_003


def test_an_import_of_huge_ids_only_leaves_the_counters_alone(io_loop, store):
    assert imported(io_loop, store, [(MAX_ID, [MAX_ID]), (2**62, [2**62])]) == 2
    assert add(io_loop, store)["id"] == 1
    assert add_message(io_loop, store, 1)["id"] == 1


def test_the_unfiltered_count_follows_inserts_imports_and_deletes(io_loop, store):
    def total():
        return run(io_loop, store.list_rows(TICKET, ListQuery())).count

    assert total() == 0
    for _ in range(3):
        add(io_loop, store)
    imported(io_loop, store, [(10, [11]), (20, []), (30, [])])
    assert total() == 6
    imported(io_loop, store, [(20, []), (40, [])], replace=True)  # one replaced, one new
    assert total() == 7
    run(io_loop, store.delete_row(TICKET, 10))
    with pytest.raises(NotFound):
        run(io_loop, store.delete_row(TICKET, 10))
    with pytest.raises(AlreadyExists):
        add(io_loop, store, id=1)
    assert total() == 6
    assert total() == run(io_loop, store.list_rows(TICKET, ListQuery(filters={"state": ("open", "closed")}))).count


def test_filtered_counts_follow_every_kind_of_write(io_loop, store):
    def count(**filters):
        return run(io_loop, store.list_rows(TICKET, ListQuery(filters=filters))).count

    def check():
        everything = run(io_loop, store.list_rows(TICKET, ListQuery(limit=1000))).rows
        for name, values in (("state", STATES), ("priority", (1, 2, 3, 4, 5))):
            for value in values:
                assert count(**{name: (value,)}) == sum(r[name] == value for r in everything), (name, value)
            pair = values[:2]
            assert count(**{name: pair}) == sum(r[name] in pair for r in everything), (name, pair)
            assert count(**{name: (values[0], values[0])}) == count(**{name: (values[0],)})  # once, not twice
        both = sum(r["state"] == "open" and r["priority"] in (1, 3) for r in everything)
        assert count(state=("open",), priority=(1, 3)) == both

    imported(io_loop, store, [(i, [100 + i]) for i in range(1, 31)], vary=True)  # into empty tables
    check()
    assert count(state=("open",)) == 10 and count(priority=(5,)) == 6
    for i in range(12):
        add(io_loop, store, state=STATES[i % 3], priority=5 - i % 5)
    check()
    update = store.update_row
    run(io_loop, update(TICKET, 1, {"state": "closed"}, NOW))  # pending -> closed
    run(io_loop, update(TICKET, 2, {"priority": 5}, NOW))
    run(io_loop, update(TICKET, 3, {"state": "pending", "priority": 1}, NOW))
    run(io_loop, update(TICKET, 4, {"state": "pending", "priority": 5}, NOW))  # as it was
    run(io_loop, update(TICKET, 5, {"title": "only the title"}, NOW))
    check()
    run(io_loop, store.delete_row(TICKET, 6))  # with its message
    with pytest.raises(AlreadyExists):
        add(io_loop, store, id=7, state="closed", priority=1)
    with pytest.raises(NotFound):
        run(io_loop, update(TICKET, 6, {"state": "open"}, NOW))
    check()
    imported(io_loop, store, [(8, []), (9, []), (1000, [])], replace=True)  # two replaced (now open, 3), one new
    check()


def test_an_export_as_json_is_the_json_of_the_plain_export(io_loop, store):
    imported(io_loop, store, [(i, [100 + i, 200 + i] if i % 3 == 0 else []) for i in range(1, 12)], vary=True)
    add(io_loop, store, title="ünïcode \u2028", assignee="ann", description="d")
    run(io_loop, store.update_row(TICKET, 3, {"state": "closed"}, NOW + 5))

    async def export(as_json):
        batches = []
        async for tree, batch in store.export_rows([TREE], batch_size=4, as_json=as_json):
            assert tree is TREE
            batches.append([(row, [item for item, below in kids[0] if below == ()]) for row, kids in batch])
        return batches

    plain, as_json = run(io_loop, export(False)), run(io_loop, export(True))
    assert [len(b) for b in plain] == [len(b) for b in as_json] == [4, 4, 4]
    expected = [[(TICKET.to_json(r), [MESSAGE.to_json(m) for m in ms]) for r, ms in b] for b in plain]
    assert as_json == expected
    assert [list(doc) for doc, _ in as_json[0]] == list(map(list, [TICKET.json_names] * 4))  # declared order
    assert as_json[0][2][1] == [MESSAGE.to_json(m) for m in plain[0][2][1]] and len(as_json[0][2][1]) == 2
    assert as_json[2][3][0]["title"] == "ünïcode \u2028" and as_json[0][2][0]["state"] == "closed"


def test_message_ids_never_reused_either(io_loop, store):
    t = add(io_loop, store)
    made = [
        run(io_loop, store.insert_row(MESSAGE, {"author": "a", "body": "b"}, NOW, (TICKET, t["id"]))) for _ in range(2)
    ]
    run(io_loop, store.delete_row(MESSAGE, made[-1]["id"]))
    again = run(io_loop, store.insert_row(MESSAGE, {"author": "a", "body": "b"}, NOW, (TICKET, t["id"])))
    assert again["id"] == 3


# -- lists --

TITLES = ["b", "A", "a", "é", "É", "Z", "b", "_x", "%y", "\\z"]
ASSIGNEES = [None, "ann", "Bob", None, "ann", "zed", None, "ann", "bob", "Ann"]


@pytest.fixture
def rows(io_loop, store):
    made = []
    for i, (title, assignee) in enumerate(zip(TITLES, ASSIGNEES, strict=True)):
        made.append(
            add(
                io_loop,
                store,
                title=title,
                description=f"desc {i} 100% done_{i}" if i % 3 == 0 else "",
                state=("open", "pending", "closed")[i % 3],
                priority=1 + i % 5,
                assignee=assignee,
            )
        )
    # different creation times
    for i, r in enumerate(made):
        run(io_loop, store.update_row(TICKET, r["id"], {"priority": r["priority"]}, NOW + 100 - i * 7))
    return [run(io_loop, store.get_row(TICKET, r["id"])) for r in made]


def expected(rows, sort):
    """SQLite's order: NULLs first ascending / last descending, bytes for text, id last."""
    ordered = sorted(rows, key=lambda r: r["id"], reverse=bool(sort) and sort[-1][1])
    if any(name == "id" for name, _ in sort):
        ordered = sorted(rows, key=lambda r: r["id"])
    for name, desc in reversed(sort):
        if name == "id":
            ordered = sorted(ordered, key=lambda r: r["id"], reverse=desc)
            continue
        ordered = sorted(ordered, key=lambda r: (r[name] is not None, r[name] or 0), reverse=desc)
    return [r["id"] for r in ordered]


SORTS = [
    (),
    (("assignee", False),),
    (("assignee", True),),
    (("title", False),),
    (("title", True),),
    (("priority", True), ("title", False)),
    (("state", False), ("assignee", True)),
    (("updated_at", True),),
    (("created_at", False),),
    (("id", True), ("title", False)),
    (("priority", False), ("id", True)),
]


@pytest.mark.parametrize("sort", SORTS, ids=lambda s: ",".join(("-" if d else "") + n for n, d in s) or "default")
def test_list_order_is_sqlites_including_nulls_and_ties(io_loop, store, rows, sort):
    want = expected(rows, sort)
    page = run(io_loop, store.list_rows(TICKET, ListQuery(sort=sort, limit=1000)))
    assert (ids(page), page.count) == (want, len(rows))
    # pages in a row give the same order, without overlap
    paged = []
    for number in range(1, 5):
        paged += ids(run(io_loop, store.list_rows(TICKET, ListQuery(sort=sort, page=number, limit=3))))
    assert paged == want


def test_page_past_the_end_still_counts(io_loop, store, rows):
    page = run(io_loop, store.list_rows(TICKET, ListQuery(page=50, limit=5)))
    assert (page.rows, page.count) == ([], len(rows))
    empty = run(io_loop, store.list_rows(TICKET, ListQuery(filters={"assignee": ("nobody",)})))
    assert (list(empty.rows), empty.count) == ([], 0)


@pytest.mark.parametrize(
    ("filters", "match"),
    [
        ({"state": ("open",)}, lambda r: r["state"] == "open"),
        ({"state": ("open", "closed")}, lambda r: r["state"] in ("open", "closed")),
        ({"priority": (2, 5)}, lambda r: r["priority"] in (2, 5)),
        ({"assignee": ("ann",)}, lambda r: r["assignee"] == "ann"),  # case-sensitive equality
        ({"state": ("pending",), "priority": (2,)}, lambda r: r["state"] == "pending" and r["priority"] == 2),
    ],
)
def test_filters(io_loop, store, rows, filters, match):
    page = run(io_loop, store.list_rows(TICKET, ListQuery(filters=filters, limit=1000)))
    want = [r["id"] for r in rows if match(r)]
    assert (ids(page), page.count) == (want, len(want))


@pytest.mark.parametrize("q", ["a", "É", "é", "_", "%", "\\", "_x", "%y", "\\z", "100%", "done_3", "DESC 0", "zz", "b"])
def test_q_is_a_literal_case_insensitive_substring(io_loop, store, rows, q):
    folded = q.lower()
    want = [r["id"] for r in rows if folded in r["title"].lower() or folded in r["description"].lower()]
    page = run(io_loop, store.list_rows(TICKET, ListQuery(q=q, limit=1000)))
    assert (ids(page), page.count) == (want, len(want))


def test_q_with_filters_and_sort(io_loop, store, rows):
    query = ListQuery(q="done", filters={"state": ("open",)}, sort=(("priority", True),))
    matching = [r for r in rows if "done" in r["description"] and r["state"] == "open"]
    assert ids(run(io_loop, store.list_rows(TICKET, query))) == expected(matching, query.sort)


# -- auth state --


def test_revocations(io_loop, store):
    assert not run(io_loop, store.is_token_revoked("j"))
    run(io_loop, store.revoke_token("j", NOW + 10))
    run(io_loop, store.revoke_token("j", NOW + 10))  # twice: no error
    assert run(io_loop, store.is_token_revoked("j"))
    assert not run(io_loop, store.is_token_revoked("J"))


def test_purge_forgets_only_what_expired(io_loop, store):
    run(io_loop, store.revoke_token("live", NOW + 10))
    run(io_loop, store.revoke_token("dead", NOW - 1))
    claim = dict(expire_before=0, stale_before=0)
    assert run(io_loop, store.claim_idempotency_key("s", "old", "f", NOW - 100, **claim)) is None
    assert run(io_loop, store.claim_idempotency_key("s", "new", "f", NOW, **claim)) is None
    run(io_loop, store.record_login_failure("c", NOW - 500, 0))
    run(io_loop, store.record_login_failure("c", NOW, 0))
    run(io_loop, store.purge_expired(NOW, keys_before=NOW - 50, failures_before=NOW - 300))
    assert run(io_loop, store.is_token_revoked("live"))
    # The old key is forgotten (free to claim again); the new one is still held.
    assert run(io_loop, store.claim_idempotency_key("s", "old", "other", NOW, **claim)) is None
    with pytest.raises(KeyInFlight):
        run(io_loop, store.claim_idempotency_key("s", "new", "f", NOW, **claim))
    assert list(run(io_loop, store.login_failures("c", 0))) == [NOW]


def test_login_failures(io_loop, store):
    run(io_loop, store.record_login_failure("c", NOW, NOW - 100))
    run(io_loop, store.record_login_failure("c", NOW + 1.5, NOW - 100))
    run(io_loop, store.record_login_failure("other", NOW, NOW - 100))
    assert list(run(io_loop, store.login_failures("c", NOW - 1))) == [NOW, NOW + 1.5]
    assert list(run(io_loop, store.login_failures("c", NOW + 1))) == [NOW + 1.5]
    # recording forgets this client's failures before `forget_before`
    run(io_loop, store.record_login_failure("c", NOW + 200, NOW + 1))
    assert list(run(io_loop, store.login_failures("c", 0))) == [NOW + 1.5, NOW + 200]
    run(io_loop, store.clear_login_failures("c"))
    assert list(run(io_loop, store.login_failures("c", 0))) == []
    assert list(run(io_loop, store.login_failures("other", 0))) == [NOW]


# -- idempotency keys --


def claim(io_loop, store, key="k", fp="f1", now=NOW, scope="s"):
    return run(
        io_loop, store.claim_idempotency_key(scope, key, fp, now, expire_before=now - 3600, stale_before=now - 60)
    )


def test_idempotency_key_lifecycle(io_loop, store):
    assert claim(io_loop, store) is None  # claimed
    with pytest.raises(KeyInFlight):
        claim(io_loop, store, now=NOW + 1)
    with pytest.raises(KeyMismatch):
        claim(io_loop, store, fp="f2", now=NOW + 1)
    response = IdempotentResponse(201, {"Location": "http://x/ticket/1", "ETag": '"e"'}, b'{"id": 1}\x00\xff')
    run(io_loop, store.complete_idempotency_key("s", "k", response))
    assert claim(io_loop, store, now=NOW + 2) == response
    run(io_loop, store.release_idempotency_key("s", "k"))  # a finished key is kept
    assert claim(io_loop, store, now=NOW + 3) == response
    assert claim(io_loop, store, scope="other", now=NOW + 3) is None  # scopes are separate
    # expired: forgotten, claimable again (even with another body)
    assert claim(io_loop, store, fp="f2", now=NOW + 3601) is None


def test_released_and_stale_keys_can_be_claimed_again(io_loop, store):
    assert claim(io_loop, store) is None
    run(io_loop, store.release_idempotency_key("s", "k"))
    assert claim(io_loop, store, now=NOW + 1) is None
    with pytest.raises(KeyInFlight):
        claim(io_loop, store, now=NOW + 60)
    assert claim(io_loop, store, now=NOW + 62) is None  # its holder died: taken over
    with pytest.raises(KeyInFlight):
        claim(io_loop, store, now=NOW + 63)


def test_a_closed_store_is_unavailable(io_loop, store):
    run(io_loop, store.close())
    run(io_loop, store.close())  # idempotent
    with pytest.raises(StoreUnavailable):
        run(io_loop, store.get_row(TICKET, 1))
    with pytest.raises(StoreUnavailable):
        run(io_loop, store.ping())


def test_an_insert_records_its_idempotent_response_in_its_own_transaction(io_loop, store):
    """A crash after the create's commit cannot lose the response: both commit together, or neither."""
    from medusa_v2.store.base import COMPLETION, Completion

    claim = dict(expire_before=0, stale_before=0)
    assert run(io_loop, store.claim_idempotency_key("s", "k", "f", NOW, **claim)) is None
    completion = Completion("s", "k", lambda row: IdempotentResponse(201, {"Location": str(row["id"])}, b"made"))

    async def create(values):
        token = COMPLETION.set(completion)
        try:
            return await store.insert_row(TICKET, values, NOW)
        finally:
            COMPLETION.reset(token)

    row = run(io_loop, create({"title": "t"}))
    assert completion.response == IdempotentResponse(201, {"Location": str(row["id"])}, b"made")
    # Recorded already: a retry replays it, with nothing more from the caller.
    assert run(io_loop, store.claim_idempotency_key("s", "k", "f", NOW, **claim)) == completion.response
    # A refused insert records nothing: the key stays in flight, the row absent.
    assert run(io_loop, store.claim_idempotency_key("s", "k2", "f", NOW, **claim)) is None
    refused = Completion("s", "k2", lambda row: IdempotentResponse(201, {}, b"never"))
    token = COMPLETION.set(refused)
    try:
        with pytest.raises(AlreadyExists):
            run(io_loop, store.insert_row(TICKET, {"id": row["id"], "title": "again"}, NOW))
    finally:
        COMPLETION.reset(token)
    assert refused.response is None
    with pytest.raises(KeyInFlight):
        run(io_loop, store.claim_idempotency_key("s", "k2", "f", NOW, **claim))

"""Property tests: valid tickets round-trip unchanged; garbage never gets a 5xx."""

from __future__ import annotations

import json

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

# The app and its store live for the whole test; each example adds to them, which is
# what a long-running daemon sees too.
PROPERTY = settings(max_examples=50, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])

# Any Unicode scalar value but NUL (refused by design) and lone surrogates (not text).
CHARS = st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00")


def text(low: int, high: int):
    return st.text(CHARS, min_size=low, max_size=high)


TICKETS = st.fixed_dictionaries(
    {"title": text(1, 200)},
    optional={
        "description": text(0, 300) | st.just("d" * 10000),
        "state": st.sampled_from(["open", "pending", "closed"]),
        "priority": st.integers(1, 5),
        "assignee": st.none() | text(1, 100),
    },
)

JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner, max_size=4),
    max_leaves=10,
)
NAMES = [
    "id",
    "title",
    "description",
    "state",
    "priority",
    "assignee",
    "createdAt",
    "updatedAt",
    "author",
    "body",
    "ticketId",
]
# Bodies that look almost right: real field names with wrong values, and the odd stranger.
NEAR = st.dictionaries(st.sampled_from(NAMES) | st.text(max_size=8), JSON, max_size=6)
RAW = st.one_of(
    NEAR.map(lambda d: json.dumps(d).encode()),
    JSON.map(lambda v: json.dumps(v).encode()),
    st.binary(max_size=60),
    st.text(max_size=60).map(lambda t: t.encode("utf-8", "surrogatepass")),
)


def call(io_loop, coro_fn):
    return io_loop.run_sync(coro_fn)


@PROPERTY
@given(ticket=TICKETS)
def test_valid_tickets_round_trip_unchanged(io_loop, client, ticket):
    async def go():
        created = await client.post("/ticket", json_body=ticket)
        assert created.code == 201, created.body
        got = await client.get(f"/ticket/{created.json['id']}")
        assert got.code == 200
        assert got.json == created.json
        expected = {"description": "", "state": "open", "priority": 3, "assignee": None, **ticket}
        assert {k: got.json[k] for k in expected} == expected
        # And so does the raw UTF-8 form of the same body.
        raw = json.dumps(ticket, ensure_ascii=False).encode("utf-8")
        again = await client.post("/ticket", body=raw, headers={"Content-Type": "application/json"})
        assert again.code == 201
        assert {k: again.json[k] for k in expected} == expected

    call(io_loop, go)


@pytest.fixture
def existing(io_loop, client):
    async def go():
        t = await client.post("/ticket", json_body={"title": "target"})
        m = await client.post(f"/ticket/{t.json['id']}/message", json_body={"author": "a", "body": "b"})
        return t.json["id"], m.json["id"]

    return call(io_loop, go)


@PROPERTY
@given(raw=RAW, target=st.sampled_from(["POST /ticket", "PUT t", "PATCH t", "POST m", "PUT m", "PATCH m"]))
def test_garbage_bodies_never_get_a_5xx(io_loop, client, existing, raw, target):
    tid, mid = existing
    method, where = target.split()
    path = {"/ticket": "/ticket", "t": f"/ticket/{tid}", "m": f"/ticket/{tid}/message"}[where]
    if where == "m" and method != "POST":
        path += f"/{mid}"

    async def go():
        r = await client.request(method, path, body=raw, headers={"Content-Type": "application/json"})
        assert r.code < 500, (r.code, r.body)
        if r.code >= 400:
            assert isinstance(r.json["error"], str)
        # The resources the garbage aimed at are still there and readable.
        assert (await client.get(f"/ticket/{tid}")).code == 200

    call(io_loop, go)


QUERY = st.dictionaries(
    st.sampled_from(["page", "limit", "sort", "order", "q", "state", "priority", "assignee", "author", "x"]),
    st.text(max_size=12),
    max_size=4,
)


@PROPERTY
@given(args=QUERY, nested=st.booleans())
def test_garbage_list_queries_never_get_a_5xx(io_loop, client, existing, args, nested):
    from urllib.parse import urlencode

    tid, _ = existing
    path = f"/ticket/{tid}/message" if nested else "/ticket"
    query = urlencode({k: v.encode("utf-8", "surrogatepass") for k, v in args.items()})

    async def go():
        r = await client.get(f"{path}?{query}")
        assert r.code in (200, 400), (r.code, r.body, query)
        assert isinstance(r.json, list) or isinstance(r.json["error"], str)

    call(io_loop, go)


# Letters with case, the LIKE wildcards, FTS5 syntax and non-ASCII case pairs.
SEARCH_ALPHABET = st.sampled_from(list('aAbB %_"*()-^:.éÉ\u200fÿŸß'))


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(title=st.text(SEARCH_ALPHABET, min_size=1, max_size=12), q=st.text(SEARCH_ALPHABET, min_size=1, max_size=5))
def test_q_matches_exactly_the_case_insensitive_substrings(io_loop, store, title, q):
    from medusa_v2.listing import ListQuery
    from medusa_v2.resources.ticket import TICKET

    async def go():
        store.db.execute("DELETE FROM ticket")
        await store.insert_row(TICKET, {"title": title, "description": ""}, 0.0)
        return await store.list_rows(TICKET, ListQuery(q=q))

    page = call(io_loop, go)
    assert page.count == (1 if q.lower() in title.lower() else 0), (title, q)


# An import line's item: a valid ticket or message, then often one change: a field given
# a wrong or edge value (type, range, choice, timestamp format), removed, or one added.
STAMPS = st.sampled_from(["2026-01-02T03:04:05.000001Z", "2026-01-03T03:04:05.123456Z"])
ODD_STAMPS = st.sampled_from(
    [
        "2026-02-30T03:04:05.000000Z",  # no such day
        "2026-01-02T03:04:05Z",
        "2026-01-02 03:04:05.000001Z",
        "2026-01-01T00:00:00.000000Z",  # before createdAt when it is updatedAt
        "\uff12026-01-02T03:04:05.000001Z",  # a full-width digit: \\d in Unicode regexes
    ]
)
VALID = {
    "id": st.integers(1, 2**63 - 1),
    "title": text(1, 200),
    "description": text(0, 5),
    "state": st.sampled_from(["open", "pending", "closed"]),
    "priority": st.integers(1, 5),
    "assignee": st.none() | text(1, 5),
    "createdAt": st.just("2026-01-02T03:04:05.000001Z"),
    "updatedAt": STAMPS,
    "ticketId": st.just(7),
    "author": text(1, 5),
    "body": text(1, 5),
}
WRONG = (
    st.none()
    | st.booleans()
    | st.integers(-(2**64), 2**64)
    | st.sampled_from([0, 6, 8, 2**63, -1, 1.0, "1", "", "t" * 201, "Open", "open "])
    | st.floats(allow_nan=False)
    | text(0, 3)
    | ODD_STAMPS
)
TICKET_KEYS = ["id", "title", "description", "state", "priority", "assignee", "createdAt", "updatedAt"]
MESSAGE_KEYS = ["id", "ticketId", "author", "body", "createdAt", "updatedAt"]


@pytest.mark.parametrize("keys", [TICKET_KEYS, MESSAGE_KEYS], ids=["ticket", "message"])
@settings(max_examples=400, deadline=None)
@given(data=st.data())
def test_the_import_fast_check_accepts_only_what_the_full_check_accepts(keys, data):
    from medusa_v2.resources.message import MESSAGE
    from medusa_v2.resources.ticket import TICKET
    from medusa_v2.transfer_item import FastShape, TransferError, parse_item

    decl, parent = (TICKET, None) if keys is TICKET_KEYS else (MESSAGE, 7)
    doc = data.draw(st.fixed_dictionaries({k: VALID[k] for k in keys}))
    change = data.draw(st.sampled_from(["none", "value", "value", "value", "remove", "add"]))
    if change == "value":
        doc[data.draw(st.sampled_from(keys))] = data.draw(WRONG)
    elif change == "remove":
        del doc[data.draw(st.sampled_from(keys))]
    elif change == "add":
        doc[data.draw(st.sampled_from(["colour", "messages", "Title"]))] = data.draw(WRONG)
    fast = FastShape(decl).row(doc, parent)
    try:
        full = parse_item(decl, dict(doc), parent)
    except TransferError:
        full = None
    if change == "none":
        assert fast is not None and fast == full  # a valid item takes the fast path
    elif fast is not None:  # None: the full check decides (and names what is wrong)
        assert full == fast


ANY_JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False) | st.text(),
    lambda inner: st.lists(inner, max_size=5) | st.dictionaries(st.text(max_size=8), inner, max_size=5),
    max_leaves=30,
)


@settings(max_examples=500, deadline=None)
@given(value=ANY_JSON)
def test_encode_json_is_the_standard_compact_ascii_json(value):
    from medusa_v2.handler import encode_json

    # The reusable C encoder must give JSONEncoder's own bytes (ensure_ascii, compact).
    assert encode_json(value) == json.dumps(value, separators=(",", ":"), allow_nan=False).encode("ascii")


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), [1, {"x": -float("inf")}]])
def test_encode_json_refuses_what_json_cannot_say(bad):
    from medusa_v2.handler import encode_json

    with pytest.raises(ValueError, match="Out of range float values are not JSON compliant"):
        encode_json(bad)

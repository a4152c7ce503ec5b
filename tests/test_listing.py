"""Lists over HTTP: pagination headers, Link, filters, sort, search, conditional GET."""

from __future__ import annotations

import re
from urllib.parse import parse_qs, quote, urlsplit

import pytest
from conftest import assert_304_headers

STATES = ("open", "pending", "closed")
NAMES = (None, "ann", "bob", None, "Cy")
TITLES = ("Printer", "printer", "Network", "Zebra", "alpha")


def spec(i: int) -> dict:
    """Return ticket i's fields: many ties on every sort key, so the id tiebreak matters."""
    return {
        "title": TITLES[i % len(TITLES)],
        "description": f"ticket number {i}",
        "state": STATES[i % 3],
        "priority": 1 + i % 5,
        "assignee": NAMES[i % len(NAMES)],
    }


@pytest.fixture
def tickets(io_loop, client, clock):
    """Create 23 tickets (ids 1..23), one clock second apart, some updated later."""

    async def fill():
        made = []
        for i in range(23):
            clock.advance(1)
            r = await client.post("/ticket", json_body=spec(i))
            assert r.code == 201
            made.append(r.json)
        # Reverse updatedAt for a few, so created-at and updated-at orders differ.
        for t in made[:5]:
            clock.advance(1)
            r = await client.patch(f"/ticket/{t['id']}", json_body={"description": t["description"] + "."})
            assert r.code == 200
        r = await client.get("/ticket?limit=1000")
        return r.json

    return io_loop.run_sync(fill)


def links(response) -> dict[str, str]:
    header = response.headers.get("Link", "")
    found = re.findall(r'<([^>]*)>; rel="([a-z]+)"', header)
    assert len(found) == header.count("rel="), header
    return {rel: url for url, rel in found}


def page_of(url: str) -> int:
    return int(parse_qs(urlsplit(url).query)["page"][0])


def ids(response) -> list[int]:
    return [t["id"] for t in response.json]


@pytest.mark.gen_test
async def test_defaults_and_headers(client, tickets):
    r = await client.get("/ticket")
    assert r.code == 200
    assert ids(r) == list(range(1, 21))
    assert r.headers["X-Pagination-Page"] == "1"
    assert r.headers["X-Pagination-Limit"] == "20"
    assert r.headers["X-Pagination-Count"] == "23"
    assert r.headers["X-Pagination-Total"] == "2"


@pytest.mark.gen_test
async def test_integral_page_and_limit(client, tickets):
    """`page` and `limit` are integers in the OpenAPI document; 2.0 is one (JSON Schema)."""
    plain = await client.get("/ticket?page=2&limit=5")
    r = await client.get("/ticket?page=2.0&limit=5e0")
    assert r.code == 200 and r.body == plain.body
    assert r.headers["X-Pagination-Page"] == "2" and r.headers["X-Pagination-Limit"] == "5"
    assert 'page=3>; rel="next"' in r.headers["Link"]


@pytest.mark.gen_test
async def test_empty_list(client):
    r = await client.get("/ticket")
    assert r.code == 200
    assert r.json == []
    assert r.headers["X-Pagination-Count"] == "0"
    assert r.headers["X-Pagination-Total"] == "1"
    assert set(links(r)) == {"first", "last"}


@pytest.mark.gen_test
async def test_link_on_first_middle_last_and_past_end(client, tickets, base_url):
    q = "limit=5&state=open,pending&sort=-priority&q=number&api_key=0123456789abcdef0123456789abcdef"
    first = await client.get("/ticket?" + q, auth=None)
    assert first.code == 200
    count = int(first.headers["X-Pagination-Count"])
    assert count == len([t for t in tickets if t["state"] != "closed"]) == 16
    assert first.headers["X-Pagination-Total"] == "4"
    lf = links(first)
    assert set(lf) == {"first", "next", "last"}
    assert (page_of(lf["first"]), page_of(lf["next"]), page_of(lf["last"])) == (1, 2, 4)
    for url in lf.values():
        parts = urlsplit(url)
        assert f"{parts.scheme}://{parts.netloc}" == base_url
        assert parts.path == "/api/v2/ticket"
        args = parse_qs(parts.query)
        assert "api_key" not in args
        assert "0123456789abcdef" not in url
        assert args["limit"] == ["5"]
        assert args["state"] == ["open,pending"]
        assert args["sort"] == ["-priority"]
        assert args["q"] == ["number"]

    middle = await client.get("/ticket?" + q.replace("limit=5", "limit=5&page=2"), auth=None)
    lm = links(middle)
    assert list(lm) == ["first", "previous", "prev", "next", "last"]
    assert [page_of(lm[r]) for r in lm] == [1, 1, 1, 3, 4]

    last = await client.get("/ticket?" + q + "&page=4", auth=None)
    assert len(last.json) == 1
    ll = links(last)
    assert list(ll) == ["first", "previous", "prev", "last"]
    assert [page_of(ll[r]) for r in ll] == [1, 3, 3, 4]

    past = await client.get("/ticket?" + q + "&page=9", auth=None)
    assert past.code == 200
    assert past.json == []
    assert past.headers["X-Pagination-Page"] == "9"
    lp = links(past)
    assert list(lp) == ["first", "previous", "prev", "last"]
    assert page_of(lp["last"]) == 4
    # Past the end, "previous" leads back to the last page that has items.
    assert page_of(lp["previous"]) == 4

    # Following next from the first page reaches every item once.
    seen, url = [], lf["first"]
    while True:
        path = url[len(base_url) + len("/api/v2") :]
        r = await client.get(path)
        seen += ids(r)
        if "next" not in links(r):
            break
        url = links(r)["next"]
    assert sorted(seen) == sorted(t["id"] for t in tickets if t["state"] != "closed")
    assert len(seen) == len(set(seen))


@pytest.mark.gen_test
async def test_single_page_has_first_and_last_only(client, tickets):
    r = await client.get("/ticket?limit=1000")
    assert set(links(r)) == {"first", "last"}


SORTS = [
    "id",
    "-id",
    "title",
    "-title",
    "state",
    "priority",
    "-priority",
    "assignee",
    "-assignee",
    "created-at",
    "createdAt",
    "-updated-at",
    "updatedAt",
    "-priority,title",
    "state,-assignee",
    "+priority,-title,state",
]


def expected_order(tickets, sort: str) -> list[int]:
    """Return the ids in the documented order: the keys, then id in the last key's direction."""
    from medusa_v2.casing import to_snake

    keys = []
    for term in sort.split(","):
        desc = term.startswith("-")
        name = to_snake(term.lstrip("+-")).replace("_", "")
        field = {"createdat": "createdAt", "updatedat": "updatedAt"}.get(name, name)
        keys.append((field, desc))
    if keys[-1][0] != "id":
        keys.append(("id", keys[-1][1]))
    rows = list(tickets)
    for field, desc in reversed(keys):
        # NULL sorts first ascending, last descending (SQLite's rule, documented in DESIGN notes).
        rows.sort(key=lambda t: (t[field] is not None, t[field] if t[field] is not None else ""), reverse=desc)
    return [t["id"] for t in rows]


@pytest.mark.gen_test
@pytest.mark.parametrize("sort", SORTS)
async def test_sorted_paging_never_overlaps_or_skips(client, tickets, sort):
    walked = []
    for page in range(1, 8):  # 6 pages of 4, then one past the end
        r = await client.get(f"/ticket?sort={sort.replace('+', '%2B')}&limit=4&page={page}")
        assert r.code == 200
        assert len(r.json) == (4 if page < 6 else 3 if page == 6 else 0)
        walked += ids(r)
    assert len(walked) == len(set(walked)) == 23
    assert walked == expected_order(tickets, sort)


@pytest.mark.gen_test
async def test_unescaped_plus_in_sort_means_ascending(client, tickets):
    r = await client.get("/ticket?sort=-state,+priority&limit=100")
    assert r.code == 200
    assert ids(r) == expected_order(tickets, "-state,+priority")
    r = await client.get("/ticket?sort=+title&limit=100")
    assert ids(r) == expected_order(tickets, "title")


@pytest.mark.gen_test
@pytest.mark.parametrize("field", ["priority", "title", "assignee", "created-at", "updatedAt"])
async def test_order_desc_matches_minus(client, tickets, field):
    a = await client.get(f"/ticket?sort={field}&order=desc&limit=100")
    b = await client.get(f"/ticket?sort=-{field}&limit=100")
    assert a.code == b.code == 200
    assert ids(a) == ids(b) == expected_order(tickets, "-" + field)
    asc = await client.get(f"/ticket?sort={field}&order=asc&limit=100")
    assert ids(asc) == expected_order(tickets, field)


@pytest.mark.gen_test
async def test_filters(client, tickets):
    def where(pred):
        return [t["id"] for t in tickets if pred(t)]

    r = await client.get("/ticket?state=open&limit=100")
    assert ids(r) == where(lambda t: t["state"] == "open")
    assert r.headers["X-Pagination-Count"] == str(len(ids(r)))
    r = await client.get("/ticket?state=open,closed&limit=100")
    assert ids(r) == where(lambda t: t["state"] in ("open", "closed"))
    r = await client.get("/ticket?priority=5&limit=100")
    assert ids(r) == where(lambda t: t["priority"] == 5)
    r = await client.get("/ticket?priority=1,2&state=pending&limit=100")
    assert ids(r) == where(lambda t: t["priority"] in (1, 2) and t["state"] == "pending")
    r = await client.get("/ticket?assignee=ann&limit=100")
    assert ids(r) == where(lambda t: t["assignee"] == "ann")
    r = await client.get("/ticket?assignee=ANN")
    assert r.json == []
    r = await client.get("/ticket?state=pending&sort=-priority&limit=100")
    assert ids(r) == [i for i in expected_order(tickets, "-priority") if i in where(lambda t: t["state"] == "pending")]


@pytest.mark.gen_test
@pytest.mark.parametrize(
    ("query", "name"),
    [
        ("state=done", "state"),
        ("state=open,done", "state"),
        ("state=", "state"),
        ("priority=6", "priority"),
        ("priority=0", "priority"),
        ("priority=x", "priority"),
        ("priority=1,", "priority"),
        ("priority=1.5", "priority"),
        ("priority=99999999999999999999999", "priority"),
        ("assignee=", "assignee"),
        ("assignee=" + "a" * 101, "assignee"),
        ("page=0", "page"),
        ("page=-1", "page"),
        ("page=x", "page"),
        ("page=1.5", "page"),
        ("page=1e-1", "page"),
        ("limit=1e4", "limit"),
        ("limit=2.5", "limit"),
        ("page=99999999999999999999", "page"),
        ("limit=0", "limit"),
        ("limit=1001", "limit"),
        ("limit=-5", "limit"),
        ("limit=", "limit"),
        ("sort=bogus", "sort"),
        ("sort=description", "sort"),
        ("sort=id;drop%20table%20ticket", "sort"),
        ("sort=id%3Bdrop%20table%20ticket", "sort"),
        ("sort=", "sort"),
        ("sort=-", "sort"),
        ("sort=id&order=sideways", "order"),
        ("page=1&page=2", "page"),
        ("q=" + "x" * 201, "q"),
        ("q=a%00b", "q"),
    ],
)
async def test_invalid_parameters_are_400_naming_them(client, tickets, query, name):
    r = await client.get("/ticket?" + query)
    assert r.code == 400, (query, r.body)
    assert name in r.json["error"]
    assert len((await client.get("/ticket?limit=1000")).json) == 23


@pytest.mark.gen_test
async def test_order_alone_is_the_direction_of_the_default_order(client, tickets):
    everything = ids(await client.get("/ticket?limit=1000"))
    assert ids(await client.get("/ticket?limit=1000&order=desc")) == everything[::-1]
    assert ids(await client.get("/ticket?limit=1000&order=asc")) == everything
    assert ids(await client.get("/ticket?limit=5&page=2&order=desc")) == everything[::-1][5:10]


@pytest.mark.gen_test
async def test_limit_bounds(client, tickets):
    assert len((await client.get("/ticket?limit=1")).json) == 1
    r = await client.get("/ticket?limit=1000")
    assert len(r.json) == 23
    assert r.headers["X-Pagination-Limit"] == "1000"


@pytest.mark.gen_test
async def test_page_past_the_end_is_empty(client, tickets):
    r = await client.get("/ticket?page=1000000")
    assert r.code == 200
    assert r.json == []
    assert r.headers["X-Pagination-Count"] == "23"


@pytest.mark.gen_test
async def test_list_etag_and_304(client, tickets):
    r = await client.get("/ticket?state=open")
    etag = r.headers["ETag"]
    again = await client.get("/ticket?state=open", headers={"If-None-Match": etag})
    assert again.code == 304
    assert again.body == b""
    assert again.headers["ETag"] == etag
    assert_304_headers(again)
    await client.patch(f"/ticket/{ids(r)[0]}", json_body={"priority": 1})
    changed = await client.get("/ticket?state=open", headers={"If-None-Match": etag})
    assert changed.code == 200
    assert changed.headers["ETag"] != etag
    # Two past-the-end pages of different lists differ (the count is in the ETag).
    a = await client.get("/ticket?page=99&state=open")
    b = await client.get("/ticket?page=99&state=closed")
    assert a.headers["ETag"] != b.headers["ETag"]


# -- search --


@pytest.fixture
def corpus(io_loop, client):
    texts = [
        ("Printer ON FIRE", "third floor"),
        ("Coffee machine", "It says 100% done_ but no coffee"),
        ("Network", "wifi drops; see printer"),
        ("Déjà vu ÉCRAN", 'quote " and (paren) AND NOT OR * ^ near'),
        ("x", "50%off"),
        ("ab", "a_b"),
    ]

    async def fill():
        out = []
        for i, (title, description) in enumerate(texts):
            r = await client.post(
                "/ticket", json_body={"title": title, "description": description, "priority": min(5, 1 + i)}
            )
            assert r.code == 201
            out.append(r.json["id"])
        return out

    return io_loop.run_sync(fill)


SEARCHES = [
    ("printer", [0, 2]),
    ("PRINTER", [0, 2]),
    ("nter on fi", [0]),
    ("fire", [0]),
    ("100%", [1]),
    ("%", [1, 4]),
    ("_", [1, 5]),
    ("%_", []),
    ("% done_", [1]),
    ("a_b", [5]),
    ("a%b", []),
    ("ab", [5]),
    ("x", [4]),
    ("é", [3]),
    ("écran", [3]),
    ("ÉCRAN", [3]),
    ("déjà", [3]),
    ('"', [3]),
    ('quote "', [3]),
    ('" and', [3]),
    ("AND NOT", [3]),
    ("(paren)", [3]),
    ("* ^", [3]),
    ("or", [0, 2, 3]),  # flOOR, netwORk, OR
    ("nothing like this", []),
    ("zz", []),
]


@pytest.mark.gen_test
@pytest.mark.parametrize(("q", "which"), SEARCHES)
async def test_q_is_a_case_insensitive_literal_substring(client, corpus, q, which):
    r = await client.get("/ticket?q=" + quote(q))
    assert r.code == 200, r.body
    assert sorted(ids(r)) == sorted(corpus[i] for i in which)
    assert r.headers["X-Pagination-Count"] == str(len(which))


@pytest.mark.gen_test
async def test_q_with_filter_and_sort(client, corpus):
    r = await client.get("/ticket?q=printer&priority=1")
    assert ids(r) == [corpus[0]]
    r = await client.get("/ticket?q=printer&sort=-priority")
    assert ids(r) == [corpus[2], corpus[0]]
    r = await client.get("/ticket?q=o&priority=1,2,3&sort=-title&limit=1&page=2")
    assert r.headers["X-Pagination-Count"] == "3"  # Printer ON FIRE, Network, Coffee machine
    assert ids(r) == [corpus[2]]


@pytest.mark.gen_test
async def test_q_searches_title_and_description_only(client, corpus):
    r = await client.post("/ticket", json_body={"title": "plain", "assignee": "quokka", "state": "pending"})
    assert r.code == 201
    assert ids(await client.get("/ticket?q=quokka")) == []  # the assignee is not searched
    assert ids(await client.get("/ticket?q=pending")) == []  # nor the state
    assert ids(await client.get("/ticket?q=plain")) == [r.json["id"]]


@pytest.mark.gen_test
async def test_search_follows_updates_and_deletes(client, corpus):
    assert (await client.patch(f"/ticket/{corpus[0]}", json_body={"title": "Scanner"})).code == 200
    assert ids(await client.get("/ticket?q=printer")) == [corpus[2]]
    assert ids(await client.get("/ticket?q=scanner")) == [corpus[0]]
    assert (await client.put(f"/ticket/{corpus[2]}", json_body={"title": "Net"})).code == 204
    assert ids(await client.get("/ticket?q=printer")) == []
    assert (await client.delete(f"/ticket/{corpus[0]}")).code == 204
    assert ids(await client.get("/ticket?q=scanner")) == []


@pytest.mark.gen_test
async def test_empty_q_means_no_search(client, corpus):
    r = await client.get("/ticket?q=")
    assert len(r.json) == len(corpus)

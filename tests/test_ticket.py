"""The ticket resource over HTTP: every line of DESIGN.md's resource contract."""

from __future__ import annotations

import json

import pytest
from conftest import assert_304_headers

from medusa_v2.declaration import INT64_MAX

VALID = {"title": "Printer on fire", "description": "Third floor", "state": "pending", "priority": 5, "assignee": "ann"}
BAD_IDS = ["abc", "0", "-1", "1.5", "99999999999999999999999", str(INT64_MAX + 1)]


async def make(client, **fields):
    body = {"title": "A ticket", **fields}
    r = await client.post("/ticket", json_body=body)
    assert r.code == 201, r.body
    return r.json


async def everything(client):
    r = await client.get("/ticket?limit=1000")
    assert r.code == 200
    return r.json


# -- POST --


@pytest.mark.gen_test
async def test_create_answers_201_location_body_etag(client, base_url):
    r = await client.post("/ticket", json_body=VALID)
    assert r.code == 201
    body = r.json
    assert body["id"] >= 1
    assert r.headers["Location"] == f"{base_url}/api/v2/ticket/{body['id']}"
    assert {k: body[k] for k in VALID} == VALID
    assert body["createdAt"] == body["updatedAt"] == "2027-01-15T08:00:00.000000Z"  # the FakeClock's time
    assert list(body) == ["id", "title", "description", "state", "priority", "assignee", "createdAt", "updatedAt"]
    assert r.headers["ETag"].startswith('"')
    got = await client.get(f"/ticket/{body['id']}")
    assert got.json == body
    assert got.headers["ETag"] == r.headers["ETag"]


@pytest.mark.gen_test
async def test_create_fills_defaults(client):
    body = await make(client)
    assert (body["description"], body["state"], body["priority"], body["assignee"]) == ("", "open", 3, None)


@pytest.mark.gen_test
async def test_create_with_trailing_slash(client, base_url):
    r = await client.post("/ticket/", json_body={"title": "t"})
    assert r.code == 201
    assert r.headers["Location"] == f"{base_url}/api/v2/ticket/{r.json['id']}"


@pytest.mark.gen_test
async def test_create_with_chosen_id_then_409(client, base_url):
    r = await client.post("/ticket", json_body={"id": 4242, "title": "imported"})
    assert r.code == 201
    assert r.json["id"] == 4242
    assert r.headers["Location"] == f"{base_url}/api/v2/ticket/4242"
    again = await client.post("/ticket", json_body={"id": 4242, "title": "other"})
    assert again.code == 409
    assert "4242" in again.json["error"]
    assert (await client.get("/ticket/4242")).json["title"] == "imported"
    nxt = await client.post("/ticket", json_body={"title": "next"})
    assert nxt.json["id"] != 4242


@pytest.mark.gen_test
async def test_create_with_largest_id(client):
    r = await client.post("/ticket", json_body={"id": INT64_MAX, "title": "max"})
    assert r.code == 201
    assert (await client.get(f"/ticket/{INT64_MAX}")).json["id"] == INT64_MAX
    # The next assigned id must still work (no AUTOINCREMENT ceiling).
    assert (await client.post("/ticket", json_body={"title": "after"})).code == 201


@pytest.mark.gen_test
@pytest.mark.parametrize("chosen", [0, -1, 1.5, "7", True, INT64_MAX + 1])
async def test_create_with_invalid_chosen_id(client, chosen):
    r = await client.post("/ticket", json_body={"id": chosen, "title": "t"})
    assert r.code == 400
    assert "id" in r.json["errors"]
    assert await everything(client) == []


# -- GET one --


@pytest.mark.gen_test
async def test_get_one_etag_and_304(client):
    t = await make(client)
    r = await client.get(f"/ticket/{t['id']}")
    assert r.code == 200
    etag = r.headers["ETag"]
    again = await client.get(f"/ticket/{t['id']}", headers={"If-None-Match": etag})
    assert again.code == 304
    assert again.body == b""
    assert again.headers["ETag"] == etag
    assert_304_headers(again)
    other = await client.get(f"/ticket/{t['id']}", headers={"If-None-Match": '"nope"'})
    assert other.code == 200


@pytest.mark.gen_test
async def test_get_missing_is_404(client):
    r = await client.get("/ticket/12")
    assert r.code == 404
    assert r.json == {"error": "Ticket 12 not found"}


@pytest.mark.gen_test
@pytest.mark.parametrize("bad", BAD_IDS)
@pytest.mark.parametrize("method", ["GET", "PUT", "PATCH", "DELETE"])
async def test_invalid_id_is_400(client, bad, method):
    await make(client)
    kw = {"json_body": {"title": "x"}} if method in ("PUT", "PATCH") else {}
    r = await client.request(method, f"/ticket/{bad}", **kw)
    assert r.code == 400, (bad, r.code, r.body)
    assert "id" in r.json["error"]
    assert [t["title"] for t in await everything(client)] == ["A ticket"]


@pytest.mark.gen_test
async def test_an_integral_number_in_the_path_is_the_id(client):
    """The OpenAPI document types ids as integers, and JSON Schema counts 7.0 as one."""
    t = await make(client)
    for same in (f"{t['id']}.0", f"{t['id']}.000", f"{t['id']}e0", f"{t['id'] * 10}e-1"):
        r = await client.get(f"/ticket/{same}")
        assert r.code == 200 and r.json == t, same
    for bad in (
        "1.5",
        "1e-1",
        "1e19",
        "1e999999999",
        "1.",
        ".0",
        "1e",
        "1_0",
        "%201",
        "1.0.0",
        "nan",
        "inf",
        "%EF%BC%91",
    ):
        r = await client.get(f"/ticket/{bad}")
        assert r.code == 400 and "id" in r.json["error"], (bad, r.code, r.body)
    assert (await client.patch(f"/ticket/{t['id']}.0", json_body={"priority": 4})).json == {"priority": 4}


# -- PUT --


@pytest.mark.gen_test
async def test_put_replaces_and_restores_defaults(client, clock):
    t = await make(client, **{k: v for k, v in VALID.items() if k != "title"})
    clock.advance(60)
    r = await client.put(f"/ticket/{t['id']}", json_body={"title": "Only a title"})
    assert r.code == 204
    assert r.body == b""
    got = await client.get(f"/ticket/{t['id']}")
    assert got.headers["ETag"] == r.headers["ETag"]
    body = got.json
    assert body["title"] == "Only a title"
    assert (body["description"], body["state"], body["priority"], body["assignee"]) == ("", "open", 3, None)
    assert body["createdAt"] == t["createdAt"]
    assert body["updatedAt"] == "2027-01-15T08:01:00.000000Z"


@pytest.mark.gen_test
async def test_put_missing_is_404(client):
    r = await client.put("/ticket/77", json_body={"title": "x"})
    assert r.code == 404
    assert (await client.get("/ticket/77")).code == 404


@pytest.mark.gen_test
@pytest.mark.parametrize(
    "body",
    [
        {},
        {"description": "no title"},
        {"title": ""},
        {"title": "x", "id": 1},
        {"title": "x", "createdAt": "2020-01-01T00:00:00Z"},
        {"title": "x", "updatedAt": "2020-01-01T00:00:00Z"},
        {"title": "x", "bogus": 1},
        {"title": "x", "priority": 6},
    ],
)
async def test_put_refuses_invalid_bodies(client, body):
    t = await make(client)
    r = await client.put(f"/ticket/{t['id']}", json_body=body)
    assert r.code == 400
    assert r.json["error"]
    assert r.json["errors"]
    assert (await client.get(f"/ticket/{t['id']}")).json == t


@pytest.mark.gen_test
async def test_updated_at_moves_even_when_clock_does_not(client):
    t = await make(client)
    created = (await client.get(f"/ticket/{t['id']}")).headers["ETag"]
    first = await client.put(f"/ticket/{t['id']}", json_body={"title": "A ticket"})
    second = await client.put(f"/ticket/{t['id']}", json_body={"title": "A ticket"})
    assert len({created, first.headers["ETag"], second.headers["ETag"]}) == 3
    body = (await client.get(f"/ticket/{t['id']}")).json
    assert body["updatedAt"] == "2027-01-15T08:00:00.000002Z"
    assert body["createdAt"] == t["createdAt"]


# -- PATCH --


@pytest.mark.gen_test
async def test_patch_answers_exactly_accepted_fields(client, clock):
    t = await make(client)
    old = (await client.get(f"/ticket/{t['id']}")).headers["ETag"]
    clock.advance(1.5)
    r = await client.patch(
        f"/ticket/{t['id']}",
        json_body={"priority": 1, "assignee": "bo", "bogus": 3, "id": 99, "createdAt": "x", "updatedAt": "y"},
    )
    assert r.code == 200
    assert r.json == {"priority": 1, "assignee": "bo"}
    assert r.headers["ETag"] != old
    got = await client.get(f"/ticket/{t['id']}")
    assert got.headers["ETag"] == r.headers["ETag"]
    assert got.json == {**t, "priority": 1, "assignee": "bo", "updatedAt": "2027-01-15T08:00:01.500000Z"}
    assert (await client.get("/ticket/99")).code == 404


@pytest.mark.gen_test
async def test_patch_can_null_the_assignee(client):
    t = await make(client, assignee="ann")
    r = await client.patch(f"/ticket/{t['id']}", json_body={"assignee": None})
    assert r.code == 200
    assert r.json == {"assignee": None}
    assert (await client.get(f"/ticket/{t['id']}")).json["assignee"] is None


@pytest.mark.gen_test
async def test_patch_is_all_or_nothing(client):
    t = await make(client)
    r = await client.patch(f"/ticket/{t['id']}", json_body={"title": "new", "priority": 9})
    assert r.code == 400
    assert list(r.json["errors"]) == ["priority"]
    assert (await client.get(f"/ticket/{t['id']}")).json == t


@pytest.mark.gen_test
async def test_patch_of_ignored_fields_only_changes_nothing(client):
    t = await make(client)
    r = await client.patch(f"/ticket/{t['id']}", json_body={"bogus": 1})
    assert r.code == 200
    assert r.json == {}
    assert (await client.get(f"/ticket/{t['id']}")).json == t


@pytest.mark.gen_test
async def test_patch_missing_is_404(client):
    assert (await client.patch("/ticket/5", json_body={"title": "x"})).code == 404


# -- DELETE --


@pytest.mark.gen_test
async def test_delete_then_404(client):
    t = await make(client)
    r = await client.delete(f"/ticket/{t['id']}")
    assert r.code == 204
    assert r.body == b""
    assert (await client.get(f"/ticket/{t['id']}")).code == 404
    assert (await client.delete(f"/ticket/{t['id']}")).code == 404


# -- If-Match --


@pytest.mark.gen_test
@pytest.mark.parametrize(
    ("method", "body"), [("PUT", {"title": "changed"}), ("PATCH", {"title": "changed"}), ("DELETE", None)]
)
async def test_stale_if_match_is_412_and_changes_nothing(client, method, body):
    t = await make(client)
    r = await client.request(method, f"/ticket/{t['id']}", json_body=body, headers={"If-Match": '"stale"'})
    assert r.code == 412
    assert r.json["error"]
    assert (await client.get(f"/ticket/{t['id']}")).json == t


@pytest.mark.gen_test
@pytest.mark.parametrize(
    ("method", "body", "code"),
    [("PUT", {"title": "changed"}, 204), ("PATCH", {"title": "changed"}, 200), ("DELETE", None, 204)],
)
async def test_current_if_match_is_accepted(client, method, body, code):
    t = await make(client)
    etag = (await client.get(f"/ticket/{t['id']}")).headers["ETag"]
    r = await client.request(method, f"/ticket/{t['id']}", json_body=body, headers={"If-Match": etag})
    assert r.code == code


@pytest.mark.gen_test
@pytest.mark.parametrize(
    ("method", "body"), [("PUT", {"title": "changed"}), ("PATCH", {"title": "changed"}), ("DELETE", None)]
)
@pytest.mark.parametrize("bad", ["", " ", "0", "stale", '"open', 'W/"a", junk', '"a" "b"', 'w/"a"'])
async def test_malformed_if_match_is_412_and_changes_nothing(client, method, body, bad):
    """A value naming no current tag, empty or malformed, is a false condition (RFC 9110 13.1.1)."""
    t = await make(client)
    r = await client.request(method, f"/ticket/{t['id']}", json_body=body, headers={"If-Match": bad})
    assert r.code == 412 and "If-Match" in r.json["error"], (bad, r.code, r.body)
    assert (await client.get(f"/ticket/{t['id']}")).json == t


@pytest.mark.gen_test
async def test_if_match_lists_and_weak_tags_are_read(client):
    t = await make(client)
    etag = (await client.get(f"/ticket/{t['id']}")).headers["ETag"]
    r = await client.patch(
        f"/ticket/{t['id']}", json_body={"priority": 2}, headers={"If-Match": f' "x" ,W/"y",{etag} '}
    )
    assert r.code == 200
    r = await client.patch(f"/ticket/{t['id']}", json_body={"priority": 3}, headers={"If-Match": f"W/{etag}"})
    assert r.code == 412  # a weak tag never matches for a write (RFC 9110 13.1.1)


@pytest.mark.gen_test
async def test_if_match_after_a_change_is_stale(client):
    t = await make(client)
    etag = (await client.get(f"/ticket/{t['id']}")).headers["ETag"]
    assert (await client.patch(f"/ticket/{t['id']}", json_body={"priority": 4})).code == 200
    r = await client.delete(f"/ticket/{t['id']}", headers={"If-Match": etag})
    assert r.code == 412
    assert (await client.get(f"/ticket/{t['id']}")).code == 200


# -- bad input: a clear 4xx JSON error, nothing changed --

LONG = "x" * 201
BAD_BODIES = [
    ({"description": "no title"}, "title"),
    ({"title": ""}, "title"),
    ({"title": LONG}, "title"),
    ({"title": None}, "title"),
    ({"title": ["a"]}, "title"),
    ({"title": 5}, "title"),
    ({"title": "t", "priority": "1"}, "priority"),
    ({"title": "t", "priority": True}, "priority"),
    ({"title": "t", "priority": 1.5}, "priority"),
    ({"title": "t", "priority": 1e30}, "priority"),
    ({"title": "t", "priority": 2**80}, "priority"),
    ({"title": "t", "priority": 0}, "priority"),
    ({"title": "t", "priority": None}, "priority"),
    ({"title": "t", "state": "done"}, "state"),
    ({"title": "t", "assignee": ""}, "assignee"),
    ({"title": "t", "assignee": "a" * 101}, "assignee"),
    ({"title": "t", "description": "d" * 10001}, "description"),
    ({"title": "t", "description": None}, "description"),
    ({"title": "t", "bogus": 1}, "bogus"),
    ({"title": "t", "created_at": "x"}, "created_at"),
    ({"title": "t", "createdAt": "2020-01-01T00:00:00Z"}, "createdAt"),
    ({"title": "t", "updatedAt": "2020-01-01T00:00:00Z"}, "updatedAt"),
    ({"title": "bad\x00nul"}, "title"),
    ({"title": "t", "description": "nul\x00"}, "description"),
]


@pytest.mark.gen_test
@pytest.mark.parametrize(("body", "field"), BAD_BODIES)
async def test_bad_post_bodies_are_400_naming_the_field(client, body, field):
    r = await client.post("/ticket", json_body=body)
    assert r.code == 400, r.body
    assert r.headers["Content-Type"].startswith("application/json")
    assert field in r.json["errors"]
    assert field in r.json["error"]
    assert await everything(client) == []


@pytest.mark.gen_test
@pytest.mark.parametrize(("body", "field"), [b for b in BAD_BODIES if b[1] != "title" or "title" in b[0]])
async def test_bad_put_bodies_are_400(client, body, field):
    t = await make(client)
    r = await client.put(f"/ticket/{t['id']}", json_body=body)
    assert r.code == 400
    assert field in r.json["errors"]
    assert (await client.get(f"/ticket/{t['id']}")).json == t


@pytest.mark.gen_test
async def test_boundary_lengths_are_accepted(client):
    t = await make(client, title="x" * 200, description="d" * 10000, assignee="a" * 100)
    assert len(t["description"]) == 10000
    assert (await make(client, title="x"))["title"] == "x"


@pytest.mark.gen_test
@pytest.mark.parametrize(
    ("raw", "ctype", "code"),
    [
        (b'{"title": "x"', "application/json", 400),
        (b"null", "application/json", 400),
        (b'["title"]', "application/json", 400),
        (b'"title"', "application/json", 400),
        (b"", "application/json", 400),
        (b"   ", "application/json", 400),
        (b'{"title": NaN}', "application/json", 400),
        (b'{"title": "\xff"}', "application/json", 400),
        (b"title=x", "application/x-www-form-urlencoded", 415),
        (b'{"title": "x"}', "text/plain", 415),
    ],
)
@pytest.mark.parametrize("method", ["POST", "PUT", "PATCH"])
async def test_malformed_bodies_are_refused_cleanly(client, raw, ctype, code, method):
    t = await make(client)
    path = "/ticket" if method == "POST" else f"/ticket/{t['id']}"
    r = await client.request(method, path, body=raw, headers={"Content-Type": ctype})
    assert r.code == code, (raw, r.body)
    assert r.json["error"]
    assert await everything(client) == [t]


@pytest.mark.gen_test
async def test_text_round_trips_exactly(client):
    text = "Emoji 🎫🔥, RTL \u200fשלום\u200f, combining e\u0301, zero-width \u200b, \U0010fffd"
    t = await make(client, title=text[:200], description=text, assignee="\u202eann")
    got = (await client.get(f"/ticket/{t['id']}")).json
    assert got["title"] == text[:200]
    assert got["description"] == text
    assert got["assignee"] == "\u202eann"


@pytest.mark.gen_test
async def test_raw_utf8_body_round_trips(client):
    raw = json.dumps({"title": "🎫 \u200f"}, ensure_ascii=False).encode("utf-8")
    r = await client.post("/ticket", body=raw, headers={"Content-Type": "application/json; charset=utf-8"})
    assert r.code == 201
    assert (await client.get(f"/ticket/{r.json['id']}")).json["title"] == "🎫 \u200f"


@pytest.mark.gen_test
async def test_lone_surrogate_is_refused(client):
    r = await client.post("/ticket", body=b'{"title": "\\ud800"}', headers={"Content-Type": "application/json"})
    assert r.code == 400
    assert await everything(client) == []


@pytest.mark.gen_test
async def test_forwarded_host_is_ignored_by_default(client, base_url):
    r = await client.post(
        "/ticket", json_body={"title": "t"}, headers={"X-Forwarded-Host": "evil.example", "X-Forwarded-Proto": "https"}
    )
    assert r.code == 201
    assert r.headers["Location"] == f"{base_url}/api/v2/ticket/{r.json['id']}"


class TestBehindProxy:
    @pytest.fixture
    def settings(self, settings):
        return settings.replace(handle_reverse_proxy=True)

    @pytest.mark.gen_test
    async def test_forwarded_host_is_honoured(self, client):
        r = await client.post(
            "/ticket",
            json_body={"title": "t"},
            headers={"X-Forwarded-Host": "tickets.example", "X-Forwarded-Proto": "https"},
        )
        assert r.code == 201
        assert r.headers["Location"] == f"https://tickets.example/api/v2/ticket/{r.json['id']}"


class TestWebRoot:
    @pytest.fixture
    def settings(self, settings):
        return settings.replace(web_root="/medusa")

    @pytest.mark.gen_test
    async def test_location_under_web_root(self, client, base_url):
        r = await client.post("/ticket", json_body={"title": "t"})
        assert r.code == 201
        assert r.headers["Location"] == f"{base_url}/medusa/api/v2/ticket/{r.json['id']}"


@pytest.mark.gen_test
async def test_verbs_and_405(client):
    r = await client.request("POST", "/ticket/1", json_body={"title": "x"})
    assert r.code == 405
    assert r.headers["Allow"] == "GET, HEAD, PUT, PATCH, DELETE, OPTIONS"
    r = await client.request("DELETE", "/ticket")
    assert r.code == 405
    assert r.headers["Allow"] == "GET, HEAD, POST, OPTIONS"


@pytest.mark.gen_test
async def test_requires_credentials(client):
    r = await client.get("/ticket", auth=None)
    assert r.code == 401
    r = await client.post("/ticket", json_body={"title": "x"}, auth=None)
    assert r.code == 401
    assert await everything(client) == []


@pytest.mark.gen_test
async def test_a_client_gone_before_its_201_costs_no_error_log_and_the_ticket_stays(
    client, store, base_url, caplog, monkeypatch
):
    """A POST whose client hung up while it was stored: committed, logged once as 201, no traceback."""
    import asyncio
    import logging
    from urllib.parse import urlsplit

    entered, release = asyncio.Event(), asyncio.Event()
    insert_row = store.insert_row

    async def slow_insert(*args, **kwargs):
        entered.set()
        await release.wait()
        return await insert_row(*args, **kwargs)

    monkeypatch.setattr(store, "insert_row", slow_insert)
    parts = urlsplit(base_url)
    body = json.dumps({"title": "asked by a client that left"}).encode()
    with caplog.at_level(logging.INFO):
        reader, writer = await asyncio.open_connection(parts.hostname, parts.port)
        writer.write(
            b"POST /api/v2/ticket HTTP/1.1\r\nHost: x\r\nX-Api-Key: " + client.headers["X-Api-Key"].encode() + b"\r\n"
            b"Content-Type: application/json\r\nContent-Length: " + str(len(body)).encode() + b"\r\n\r\n" + body
        )
        await asyncio.wait_for(entered.wait(), 5)
        writer.close()  # the client gives up while the ticket is being stored
        await writer.wait_closed()
        await asyncio.sleep(0.05)
        release.set()
        for _ in range(100):  # until the handler is done with it
            if any("POST /api/v2/ticket" in record.getMessage() for record in caplog.records):
                break
            await asyncio.sleep(0.01)
    monkeypatch.undo()
    lines = [record.getMessage() for record in caplog.records if "POST /api/v2/ticket" in record.getMessage()]
    assert len(lines) == 1 and " 201 " in lines[0], lines
    assert not [record for record in caplog.records if record.levelno >= logging.ERROR], caplog.text
    listed = await everything(client)
    assert [ticket["title"] for ticket in listed] == ["asked by a client that left"]


@pytest.mark.gen_test
async def test_head_is_get_without_the_body(client):
    """RFC 9110 9.1/9.3.2: HEAD wherever GET is, with GET's status and headers."""
    r = await client.post("/ticket", json_body={"title": "Headed"})
    tid = r.json["id"]
    await client.post(f"/ticket/{tid}/message", json_body={"author": "ann", "body": "hi"})
    for path in (f"/ticket/{tid}", "/ticket?limit=1", f"/ticket/{tid}/message", "/openapi.json", "/ticket/999999"):
        got = await client.get(path)
        head = await client.head(path)
        assert head.code == got.code, path
        assert head.body == b"", path
        for name in ("ETag", "Content-Type", "X-Pagination-Count", "Link", "X-Medusa-Server"):
            assert head.headers.get(name) == got.headers.get(name), (path, name)
        if got.code == 200:
            assert int(head.headers["Content-Length"]) == len(got.body), path
    etag = (await client.get(f"/ticket/{tid}")).headers["ETag"]
    r = await client.head(f"/ticket/{tid}", headers={"If-None-Match": etag})
    assert r.code == 304 and r.headers["ETag"] == etag
    assert (await client.head(f"/ticket/{tid}", auth=None)).code == 401
    assert (await client.head("/ticket/abc")).code == 400


@pytest.mark.gen_test
async def test_an_integral_number_is_an_integer(client):
    """JSON Schema (and so the OpenAPI document) counts 5.0 as an integer; 5.5 is not one."""
    r = await client.post("/ticket", json_body={"title": "x", "priority": 5.0})
    assert r.code == 201 and r.json["priority"] == 5 and isinstance(r.json["priority"], int)
    r = await client.patch(f"/ticket/{r.json['id']}", json_body={"priority": 2.0})
    assert r.code == 200 and r.json == {"priority": 2}
    for bad in (5.5, True, "5", 6.0, 0.0, 1e300):
        r = await client.post("/ticket", json_body={"title": "x", "priority": bad})
        assert r.code == 400 and "priority" in r.json["errors"], bad
    r = await client.post("/ticket", json_body={"id": 77.0, "title": "chosen"})
    assert r.code == 201 and r.json["id"] == 77

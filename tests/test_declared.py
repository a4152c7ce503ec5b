"""An embedder's own stored resources, mounted by `[API] resources` class paths, over HTTP.

`examples/mypkg` declares them and nothing else: notes nested under tickets (int ids),
and Medusa-like shows and episodes identified by slugs. Every rule here comes from
the declarations, on both stores.
"""

from __future__ import annotations

import pytest

NOTES = "mypkg.notes.NoteResource"
SHOWS = ("mypkg.shows.ShowResource", "mypkg.shows.EpisodeResource")


@pytest.fixture
def config_values(config_values):
    config_values["API"] = {"resources": ["ticket", "message", NOTES, *SHOWS]}
    return config_values


async def ticket(client, **fields):
    r = await client.post("/ticket", json_body={"title": "T", **fields})
    assert r.code == 201, r.body
    return r.json["id"]


async def note(client, tid, **fields):
    r = await client.post(f"/ticket/{tid}/note", json_body={"text": "remember", **fields})
    assert r.code == 201, r.body
    return r.json


@pytest.mark.stores("sqlite", "postgresql")
@pytest.mark.gen_test
async def test_note_crud(client, base_url):
    tid = await ticket(client)
    r = await client.post(f"/ticket/{tid}/note", json_body={"text": "buy milk", "kind": "todo"})
    assert r.code == 201, r.body
    n = r.json
    assert r.headers["Location"] == f"{base_url}/api/v2/ticket/{tid}/note/{n['id']}"
    assert n == {
        "id": n["id"],
        "ticketId": tid,
        "kind": "todo",
        "rank": 0,
        "text": "buy milk",
        "createdAt": n["createdAt"],
        "updatedAt": n["updatedAt"],
    }
    got = await client.get(f"/ticket/{tid}/note/{n['id']}")
    assert got.code == 200 and got.json == n and got.headers["ETag"] == r.headers["ETag"]
    assert (
        await client.get(f"/ticket/{tid}/note/{n['id']}", headers={"If-None-Match": got.headers["ETag"]})
    ).code == 304
    r = await client.patch(f"/ticket/{tid}/note/{n['id']}", json_body={"kind": "done", "id": 7, "bogus": 1})
    assert r.code == 200 and r.json == {"kind": "done"}
    r = await client.put(f"/ticket/{tid}/note/{n['id']}", json_body={"text": "replaced"})
    assert r.code == 204
    got = (await client.get(f"/ticket/{tid}/note/{n['id']}")).json
    assert (got["kind"], got["rank"], got["text"]) == ("comment", 0, "replaced")  # PUT: defaults back
    r = await client.put(f"/ticket/{tid}/note/{n['id']}", json_body={"text": "x"}, headers={"If-Match": '"stale"'})
    assert r.code == 412
    assert (await client.delete(f"/ticket/{tid}/note/{n['id']}")).code == 204
    assert (await client.get(f"/ticket/{tid}/note/{n['id']}")).code == 404


@pytest.mark.stores("sqlite", "postgresql")
@pytest.mark.gen_test
@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({}, "text"),
        ({"text": ""}, "text"),
        ({"text": "x" * 5001}, "text"),
        ({"text": "x", "kind": "idea"}, "kind"),
        ({"text": "x", "rank": 1001}, "rank"),
        ({"text": "x", "rank": -1}, "rank"),
        ({"text": "x", "rank": "1"}, "rank"),
        ({"text": "x", "ticketId": 3}, "ticketId"),
    ],
)
async def test_note_bad_bodies_are_400_and_change_nothing(client, body, field):
    tid = await ticket(client)
    r = await client.post(f"/ticket/{tid}/note", json_body=body)
    assert r.code == 400 and field in r.json["errors"], r.body
    assert (await client.get(f"/ticket/{tid}/note")).json == []


@pytest.mark.stores("sqlite", "postgresql")
@pytest.mark.gen_test
async def test_note_ids_and_parents(client):
    tid = await ticket(client)
    other = await ticket(client)
    n = await note(client, tid)
    assert (await client.get(f"/ticket/{other}/note/{n['id']}")).code == 404  # another ticket's note
    assert (await client.post("/ticket/999999/note", json_body={"text": "x"})).code == 404
    for bad in ("abc", "0", "-1", "1.5"):
        assert (await client.get(f"/ticket/{tid}/note/{bad}")).code == 400
        assert (await client.get(f"/ticket/{bad}/note")).code == 400


@pytest.mark.stores("sqlite", "postgresql")
@pytest.mark.gen_test
async def test_note_filters_sort_search_pagination(client):
    tid = await ticket(client)
    made = []
    for i, (kind, rank, text) in enumerate(
        [("todo", 5, "Call the plumber"), ("done", 1, "plumbing fixed"), ("comment", 5, "nothing"), ("todo", 2, "x")]
    ):
        made.append(await note(client, tid, kind=kind, rank=rank, text=text))
        assert made[-1]["id"] > (made[-2]["id"] if i else 0)
    ids = [n["id"] for n in made]
    r = await client.get(f"/ticket/{tid}/note?kind=todo,done&sort=-rank,id")
    assert [n["id"] for n in r.json] == [ids[0], ids[3], ids[1]]
    assert r.headers["X-Pagination-Count"] == "3"
    r = await client.get(f"/ticket/{tid}/note?rank=5&sort=created-at&order=desc")
    assert [n["id"] for n in r.json] == [ids[2], ids[0]]
    r = await client.get(f"/ticket/{tid}/note?q=PLUMB")
    assert sorted(n["id"] for n in r.json) == [ids[0], ids[1]]
    r = await client.get(f"/ticket/{tid}/note?limit=1&page=2&sort=id")
    assert [n["id"] for n in r.json] == [ids[1]]
    assert r.headers["X-Pagination-Total"] == "4"
    assert 'rel="next"' in r.headers["Link"] and 'rel="prev"' in r.headers["Link"]
    for bad in ("kind=idea", "rank=x", "sort=text", "sort=bogus", "author=x&sort=-nope"):
        assert (await client.get(f"/ticket/{tid}/note?{bad}")).code == 400, bad


@pytest.mark.stores("sqlite", "postgresql")
@pytest.mark.gen_test
async def test_deleting_a_ticket_deletes_its_notes(client):
    tid = await ticket(client)
    keep = await ticket(client)
    n = await note(client, tid, text="cascade me")
    kept = await note(client, keep, text="cascade me not")
    assert (await client.delete(f"/ticket/{tid}")).code == 204
    assert (await client.get(f"/ticket/{tid}/note/{n['id']}")).code == 404
    r = await client.get(f"/ticket/{keep}/note?q=cascade")
    assert [x["id"] for x in r.json] == [kept["id"]]


@pytest.mark.stores("sqlite", "postgresql")
@pytest.mark.gen_test
async def test_slug_identified_shows_and_episodes(client, base_url):
    r = await client.post("/show", json_body={"id": "tvdb83462", "title": "Castle"})
    assert r.code == 201, r.body
    assert r.headers["Location"] == f"{base_url}/api/v2/show/tvdb83462"
    assert (await client.post("/show", json_body={"id": "tvdb83462", "title": "Again"})).code == 409
    assert (await client.post("/show", json_body={"title": "No id"})).code == 400
    assert (await client.post("/show", json_body={"id": "Bad Slug!", "title": "x"})).code == 400
    assert (await client.get("/show/Bad!")).code == 400
    assert (await client.get("/show/tvdb1")).code == 404
    await client.post("/show", json_body={"id": "tvdb121361", "title": "Game of Thrones", "status": "ended"})
    for show in ("tvdb83462", "tvdb121361"):  # the same episode slug under two shows
        r = await client.post(f"/show/{show}/episode", json_body={"id": "s01e01", "name": f"Pilot of {show}"})
        assert r.code == 201, r.body
        assert r.json["showId"] == show
    r = await client.get("/show/tvdb83462/episode/s01e01")
    assert r.code == 200 and r.json["name"] == "Pilot of tvdb83462"
    assert (await client.get("/show/tvdb83462/episode/e01")).code == 400
    r = await client.get("/show?status=ended")
    assert [s["id"] for s in r.json] == ["tvdb121361"]
    r = await client.get("/show?sort=-id")
    assert [s["id"] for s in r.json] == ["tvdb83462", "tvdb121361"]
    r = await client.get("/show?q=thrones")
    assert [s["id"] for s in r.json] == ["tvdb121361"]
    r = await client.patch("/show/tvdb83462/episode/s01e01", json_body={"watched": 1})
    assert r.code == 200 and r.json == {"watched": 1}
    assert (await client.delete("/show/tvdb83462")).code == 204
    assert (await client.get("/show/tvdb83462/episode/s01e01")).code == 404
    assert (await client.get("/show/tvdb121361/episode/s01e01")).code == 200


@pytest.mark.gen_test
async def test_openapi_describes_the_declared_resources(client):
    doc = (await client.get("/openapi.json")).json
    assert {"/ticket/{ticket_id}/note", "/ticket/{ticket_id}/note/{note_id}", "/show/{show_id}/episode"} <= set(
        doc["paths"]
    )
    params = doc["paths"]["/show/{show_id}/episode/{episode_id}"]["parameters"]
    assert [p["schema"]["pattern"] for p in params] == ["^(?:[a-z]+[0-9]+)$", "^(?:s[0-9]{2}e[0-9]{2,3})$"]

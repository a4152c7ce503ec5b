"""An embedder's own stored resources over HTTP, their tables derived from declarations (examples/mypkg).

The plugin's `store` opens the store with the declarations of `resources`, so a
mounted NoteResource or ShowResource needs no SQL on either store.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from medusa_v2.resources.message import MessageResource
from medusa_v2.resources.ticket import TicketResource

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "examples"))

from mypkg.notes import NoteResource  # noqa: E402
from mypkg.shows import EpisodeResource, ShowResource  # noqa: E402

pytestmark = pytest.mark.stores("sqlite", "postgresql")


@pytest.fixture
def resources():
    return [TicketResource, MessageResource, NoteResource, ShowResource, EpisodeResource]


@pytest.mark.gen_test
async def test_notes_under_a_ticket(client):
    r = await client.post("/ticket", json_body={"title": "t"})
    assert r.code == 201
    tid = r.json["id"]
    for kind, text in (("todo", "buy milk"), ("done", "fix the roof"), ("todo", "call mum")):
        r = await client.post(f"/ticket/{tid}/note", json_body={"kind": kind, "text": text})
        assert r.code == 201, r.body
    r = await client.get(f"/ticket/{tid}/note?kind=todo&sort=-id")
    assert r.code == 200
    assert [n["text"] for n in r.json] == ["call mum", "buy milk"]
    assert r.headers["X-Pagination-Count"] == "2"
    r = await client.get(f"/ticket/{tid}/note?q=ROOF")
    assert [n["kind"] for n in r.json] == ["done"]
    r = await client.patch(f"/ticket/{tid}/note/1", json_body={"rank": 7})
    assert (r.code, r.json) == (200, {"rank": 7})
    assert (await client.delete(f"/ticket/{tid}")).code == 204
    assert (await client.get(f"/ticket/{tid}/note/1")).code == 404


@pytest.mark.gen_test
async def test_shows_and_episodes_by_slug(client):
    for slug, title in (("tvdb83462", "Lost"), ("tvdb2", "Castle")):
        r = await client.post("/show", json_body={"id": slug, "title": title})
        assert r.code == 201, r.body
    assert (await client.post("/show", json_body={"id": "tvdb2", "title": "again"})).code == 409
    for slug in ("tvdb83462", "tvdb2"):
        r = await client.post(f"/show/{slug}/episode", json_body={"id": "s01e01", "name": f"Pilot of {slug}"})
        assert r.code == 201, r.body
    r = await client.get("/show/tvdb2/episode/s01e01")
    assert (r.code, r.json["name"], r.json["showId"]) == (200, "Pilot of tvdb2", "tvdb2")
    assert (await client.post("/show/tvdb2/episode", json_body={"id": "s01e01"})).code == 409
    r = await client.patch("/show/tvdb2/episode/s01e01", json_body={"watched": 1})
    assert r.code == 200
    assert (await client.get("/show/tvdb83462/episode/s01e01")).json["watched"] == 0
    assert (await client.delete("/show/tvdb83462")).code == 204
    assert (await client.get("/show/tvdb83462/episode/s01e01")).code == 404
    r = await client.get("/show?q=cast")
    assert [s["id"] for s in r.json] == ["tvdb2"]

"""Idempotency-Key on POST: replay, 422, 409 in flight, release on failure, expiry."""

from __future__ import annotations

import json

import pytest

from medusa_v2 import idempotency
from medusa_v2.store.base import IdempotentResponse


async def count(client, path="/ticket"):
    r = await client.get(path + "?limit=1000")
    return len(r.json)


def keyed(key: str) -> dict[str, str]:
    return {"Idempotency-Key": key}


@pytest.mark.gen_test
async def test_same_key_same_body_replays_the_original_response(client, clock):
    first = await client.post("/ticket", json_body={"title": "once"}, headers=keyed("k-1"))
    assert first.code == 201
    clock.advance(3600)
    # Same JSON object, other key order and spacing: the same request.
    raw = b'{ "title" : "once" }'
    second = await client.post("/ticket", body=raw, headers={**keyed("k-1"), "Content-Type": "application/json"})
    assert second.code == 201
    assert second.body == first.body
    assert second.headers["Location"] == first.headers["Location"]
    assert second.headers["ETag"] == first.headers["ETag"]
    assert second.headers["Content-Type"].startswith("application/json")
    assert await count(client) == 1


@pytest.mark.gen_test
async def test_replay_survives_a_later_change(client):
    first = await client.post("/ticket", json_body={"title": "once"}, headers=keyed("k-2"))
    await client.patch(f"/ticket/{first.json['id']}", json_body={"title": "changed"})
    second = await client.post("/ticket", json_body={"title": "once"}, headers=keyed("k-2"))
    assert second.code == 201
    assert second.body == first.body  # the original response, not the current state
    assert await count(client) == 1


@pytest.mark.gen_test
async def test_same_key_other_body_is_422(client):
    assert (await client.post("/ticket", json_body={"title": "a"}, headers=keyed("k-3"))).code == 201
    r = await client.post("/ticket", json_body={"title": "b"}, headers=keyed("k-3"))
    assert r.code == 422
    assert "Idempotency-Key" in r.json["error"]
    assert await count(client) == 1


@pytest.mark.gen_test
async def test_without_key_every_post_creates(client):
    for _ in range(2):
        assert (await client.post("/ticket", json_body={"title": "a"})).code == 201
    assert await count(client) == 2


@pytest.mark.gen_test
async def test_other_keys_are_independent(client):
    assert (await client.post("/ticket", json_body={"title": "a"}, headers=keyed("k-4"))).code == 201
    assert (await client.post("/ticket", json_body={"title": "a"}, headers=keyed("k-5"))).code == 201
    assert await count(client) == 2


@pytest.mark.gen_test
async def test_in_flight_key_is_409_until_its_lease_ends(client, store, clock):
    # Another process holds the key: claimed, no response yet.
    scope = idempotency.scope("", "/api/v2/ticket")
    body = {"title": "a"}
    claimed = await store.claim_idempotency_key(
        scope, "k-6", idempotency.fingerprint(body), clock(), expire_before=0, stale_before=0
    )
    assert claimed is None
    r = await client.post("/ticket", json_body=body, headers=keyed("k-6"))
    assert r.code == 409
    assert "in progress" in r.json["error"]
    assert await count(client) == 0
    clock.advance(idempotency.LEASE + 1)  # its process died: the key may be taken over
    r = await client.post("/ticket", json_body=body, headers=keyed("k-6"))
    assert r.code == 201
    assert await count(client) == 1


@pytest.mark.gen_test
async def test_a_failed_create_releases_the_key(client):
    r = await client.post("/ticket", json_body={"title": ""}, headers=keyed("k-7"))
    assert r.code == 400
    r = await client.post("/ticket", json_body={"title": "fixed"}, headers=keyed("k-7"))
    assert r.code == 201
    assert await count(client) == 1
    # A 409 (chosen id taken) is released too: after the clash is gone, the retry works.
    taken = r.json["id"]
    r = await client.post("/ticket", json_body={"id": taken, "title": "x"}, headers=keyed("k-8"))
    assert r.code == 409
    assert (await client.delete(f"/ticket/{taken}")).code == 204
    r = await client.post("/ticket", json_body={"id": taken, "title": "x"}, headers=keyed("k-8"))
    assert r.code == 201


@pytest.mark.gen_test
async def test_keys_expire_after_24_hours(client, clock):
    assert (await client.post("/ticket", json_body={"title": "a"}, headers=keyed("k-9"))).code == 201
    clock.advance(idempotency.TTL - 1)
    assert (await client.post("/ticket", json_body={"title": "b"}, headers=keyed("k-9"))).code == 422
    clock.advance(2)
    assert (await client.post("/ticket", json_body={"title": "b"}, headers=keyed("k-9"))).code == 201
    assert await count(client) == 2


@pytest.mark.gen_test
@pytest.mark.parametrize("key", ["", "x" * 256, "tab\there", "caf\u00e9"])
async def test_malformed_keys_are_400(client, key):
    r = await client.post(
        "/ticket",
        body=json.dumps({"title": "a"}).encode(),
        headers={"Idempotency-Key": key, "Content-Type": "application/json"},
    )
    assert r.code == 400
    assert "Idempotency-Key" in r.json["error"]
    assert await count(client) == 0


@pytest.mark.gen_test
async def test_longest_key_is_accepted(client):
    key = "~" * 255
    assert (await client.post("/ticket", json_body={"title": "a"}, headers=keyed(key))).code == 201
    assert (await client.post("/ticket", json_body={"title": "a"}, headers=keyed(key))).code == 201
    assert await count(client) == 1


@pytest.mark.gen_test
async def test_malformed_body_with_key_is_400_and_claims_nothing(client):
    r = await client.post("/ticket", body=b"{", headers={**keyed("k-10"), "Content-Type": "application/json"})
    assert r.code == 400
    assert (await client.post("/ticket", json_body={"title": "a"}, headers=keyed("k-10"))).code == 201


@pytest.mark.gen_test
async def test_store_keeps_and_releases(store):
    args = {"expire_before": 0.0, "stale_before": 0.0}
    assert await store.claim_idempotency_key("s", "k", "f", 10.0, **args) is None
    response = IdempotentResponse(201, {"Location": "http://x/1", "ETag": '"e"'}, b'{"id":1}')
    await store.complete_idempotency_key("s", "k", response)
    assert await store.claim_idempotency_key("s", "k", "f", 11.0, **args) == response
    await store.release_idempotency_key("s", "k")  # a finished key is kept
    assert await store.claim_idempotency_key("s", "k", "f", 12.0, **args) == response
    assert await store.claim_idempotency_key("other", "k", "g", 12.0, **args) is None
    await store.release_idempotency_key("other", "k")
    assert await store.claim_idempotency_key("other", "k", "h", 13.0, **args) is None


@pytest.mark.gen_test
async def test_a_replay_gets_a_location_of_its_own_request(client, base_url):
    """The Host of the first request is not kept: a poisoned one never reaches a later retry."""
    first = await client.post(
        "/ticket", json_body={"title": "once"}, headers={**keyed("k-host"), "Host": "evil.example"}
    )
    assert first.code == 201
    assert first.headers["Location"].startswith("http://evil.example/api/v2/ticket/")
    second = await client.post("/ticket", json_body={"title": "once"}, headers=keyed("k-host"))
    assert second.code == 201 and second.body == first.body
    assert second.headers["Location"] == f"{base_url}/api/v2/ticket/{first.json['id']}"
    assert await count(client) == 1


@pytest.mark.gen_test
async def test_a_bad_host_creates_nothing(client):
    r = await client.post("/ticket", json_body={"title": "x"}, headers={"Host": "bad host/"})
    assert r.code == 400
    assert await count(client) == 0


@pytest.fixture
def config_values(config_values, request):
    public = getattr(request, "param", None)
    if public:
        config_values["API"] = {"public_url": public}
    return config_values


@pytest.mark.parametrize("config_values", ["HTTPS://API.Example:443/"], indirect=True)
@pytest.mark.gen_test
async def test_public_url_is_the_origin_of_location_and_link(client, settings):
    assert settings.public_url == "https://api.example"
    r = await client.post("/ticket", json_body={"title": "x"}, headers={**keyed("k-pub"), "Host": "evil.example"})
    assert r.headers["Location"] == f"https://api.example/api/v2/ticket/{r.json['id']}"
    await client.post("/ticket", json_body={"title": "y"})
    r = await client.get("/ticket?limit=1", headers={"Host": "evil.example"})
    assert "evil" not in r.headers["Link"] and "<https://api.example/api/v2/ticket?" in r.headers["Link"]

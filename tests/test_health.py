"""GET /health: liveness without credentials; 503 with Retry-After when the store is gone."""

from __future__ import annotations

import json

import pytest
from conftest import API_KEY, PASSWORD, SECRET, USERNAME

import medusa_v2
from medusa_v2.listing import Page
from medusa_v2.resource import Resource


class Thing(Resource):
    name = "thing"

    async def list(self, query, **ids):
        return Page([], 0)


@pytest.fixture
def resources():
    return [Thing]


@pytest.mark.parametrize("path", ["/health", "/health/"])
@pytest.mark.gen_test
async def test_health_is_ok_without_credentials(client, path):
    r = await client.get(path, auth=None)
    assert r.code == 200
    assert r.json == {"status": "ok"}
    assert r.headers["X-Medusa-Server"] == medusa_v2.__version__
    assert r.headers["Content-Type"] == "application/json; charset=UTF-8"
    assert r.headers["Access-Control-Allow-Origin"] == "*"
    assert "WWW-Authenticate" not in r.headers


@pytest.mark.gen_test
async def test_health_ignores_bad_credentials(client):
    r = await client.get("/health", headers={"X-Api-Key": "wrong", "x-auth": "Bearer junk"}, auth=None)
    assert r.code == 200


@pytest.mark.gen_test
async def test_health_says_nothing_secret(client, settings, tmp_path):
    r = await client.get("/health", auth=None)
    text = r.body.decode() + json.dumps(dict(r.headers.get_all()))
    for secret in (API_KEY, SECRET, PASSWORD, USERNAME, str(tmp_path)):
        assert secret not in text


@pytest.mark.gen_test
async def test_health_is_503_when_the_store_is_closed(client, store, tmp_path):
    await store.close()
    r = await client.get("/health", auth=None)
    assert r.code == 503
    assert r.headers["Retry-After"].isdigit()
    assert int(r.headers["Retry-After"]) >= 1
    assert r.headers["X-Medusa-Server"] == medusa_v2.__version__
    assert r.headers["Content-Type"] == "application/json; charset=UTF-8"
    assert r.json["status"] != "ok"
    assert str(tmp_path) not in r.body.decode()


@pytest.mark.gen_test
async def test_store_outage_during_login_is_503_not_500(client, store):
    await store.close()
    r = await client.post("/authenticate", json_body={"username": USERNAME, "password": PASSWORD}, auth=None)
    assert r.code == 503
    assert r.headers["Retry-After"].isdigit()
    assert set(r.json) == {"error"}
    assert "Traceback" not in r.body.decode()


@pytest.mark.gen_test
async def test_store_outage_during_token_check_is_503_not_500(client, store):
    r = await client.post("/authenticate", json_body={"username": USERNAME, "password": PASSWORD}, auth=None)
    token = r.json["token"]
    await store.close()
    r = await client.get("/thing", headers={"x-auth": f"Bearer {token}"}, auth=None)
    assert r.code == 503
    assert r.headers["X-Medusa-Server"] == medusa_v2.__version__
    # An API key needs no store: requests authenticated by it still reach the resource.
    r = await client.get("/thing")
    assert r.code == 200


@pytest.mark.gen_test
async def test_health_only_answers_get_and_head(client):
    r = await client.post("/health", json_body={}, auth=None)
    assert r.code == 405
    assert {m.strip() for m in r.headers["Allow"].split(",")} == {"GET", "HEAD", "OPTIONS"}
    r = await client.options("/health", auth=None)
    assert r.code == 204
    assert {m.strip() for m in r.headers["Access-Control-Allow-Methods"].split(",")} == {"GET", "HEAD", "OPTIONS"}


@pytest.mark.gen_test
async def test_head_health_answers_like_get_without_a_body(client):
    r = await client.request("HEAD", "/health", auth=None)
    assert r.code == 200
    assert r.body == b""
    assert r.headers["X-Medusa-Server"]

"""The general embedding API: mount() into a host that has an API of its own."""

from __future__ import annotations

import asyncio
import logging
from typing import Any, ClassVar

import jwt
import pytest
import tornado.web

from medusa_v2.context import ApiContext
from medusa_v2.declaration import Declaration, Field
from medusa_v2.listing import Page
from medusa_v2.mount import mount
from medusa_v2.resource import Resource
from medusa_v2.resources import BUILTIN
from medusa_v2.store import store_from_url
from medusa_v2.testing import Client
from medusa_v2.url_table import get_apiv2_handlers


class HostAuth(tornado.web.RequestHandler):
    def post(self):
        self.finish({"host": "authenticate"})


class HostConfig(tornado.web.RequestHandler):
    def get(self, *_):
        self.finish({"host": "config"})


class HostNotFound(tornado.web.RequestHandler):
    def get(self, *_):
        self.set_status(404)
        self.finish({"host": "404"})


SLUG = Declaration(
    "series",
    (
        Field("id", str, writable=False, settable_on_create=True, pattern=r"[a-z]+[0-9]+", max=40),
        Field("title", str, required=True, min=1, max=100),
    ),
)


class Series(Resource):
    """A resource identified by slugs, kept in memory (no store)."""

    name = "series"
    declaration = SLUG
    items: ClassVar[dict[str, dict[str, Any]]] = {"tvdb83462": {"id": "tvdb83462", "title": "Castle"}}

    async def list(self, query, **ids):
        return Page(list(self.items.values()), len(self.items))

    async def retrieve(self, **ids):
        item = self.items.get(ids["series_id"])
        if item is None:
            from medusa_v2.errors import ApiError

            raise ApiError(404, "Series not found")
        return item


class HostSettings:
    """A host's settings provider: a mutable object read before every request."""

    def __init__(self, settings):
        self.values = {}
        self.current = settings

    def __call__(self, current):
        if not self.values:
            return current
        new = current.replace(**self.values)
        self.values = {}
        return new


@pytest.fixture
def host_settings(settings):
    return HostSettings(settings)


@pytest.fixture
def api(settings, host_settings, database_url):
    return ApiContext(
        settings,
        store_from_url(settings.database_url),
        opened=False,
        version="9.8.7",
        issuer="MyHost 9.8.7",
        provider=host_settings,
    )


@pytest.fixture
def app(api, io_loop):
    host = tornado.web.Application(
        [
            (r"/api/v2/authenticate/?", HostAuth),
            (r"/api/v2/config(/?.*)", HostConfig),
            (r"/api/v2(/?.*)", HostNotFound),
        ]
    )
    mount(
        host,
        "/api/v2",
        api,
        resources=[BUILTIN["ticket"], BUILTIN["message"], Series],
        endpoints=("health", "openapi"),
        catch_all=False,
    )
    yield host
    io_loop.run_sync(api.close)


@pytest.mark.gen_test
async def test_ours_first_the_hosts_for_the_rest(client, http_client, base_url):
    r = await client.post("/ticket", json_body={"title": "mounted"})
    assert r.code == 201 and r.headers["X-Medusa-Server"] == "9.8.7"
    assert (await client.get("/series/tvdb83462")).json == {"id": "tvdb83462", "title": "Castle"}
    assert (await client.post("/authenticate", json_body={})).json == {"host": "authenticate"}
    assert (await client.get("/config")).json == {"host": "config"}
    r = await client.get("/nothing/here")
    assert r.code == 404 and r.json == {"host": "404"}
    assert (await client.get("/openapi.json")).json["info"]["version"] == "9.8.7"


@pytest.mark.gen_test
async def test_openapi_describes_only_what_is_mounted(client):
    doc = (await client.get("/openapi.json")).json
    assert set(doc["paths"]) == {
        "/health",
        "/openapi.json",
        "/ticket",
        "/ticket/{ticket_id}",
        "/ticket/{ticket_id}/message",
        "/ticket/{ticket_id}/message/{message_id}",
        "/series",
        "/series/{series_id}",
    }
    param = doc["paths"]["/series/{series_id}"]["parameters"][0]
    assert param["schema"]["type"] == "string" and param["schema"]["pattern"] == "^(?:[a-z]+[0-9]+)$"


@pytest.mark.gen_test
async def test_slug_identifiers_are_checked_by_their_pattern(client):
    r = await client.get("/series/Tvdb!1")
    assert r.code == 400
    assert r.json["error"] == "Invalid series id 'Tvdb!1': must match [a-z]+[0-9]+"
    assert (await client.get("/series/tvdb1")).code == 404
    assert (await client.get("/ticket/tvdb1")).code == 400  # the built-ins keep integer ids


@pytest.mark.gen_test
async def test_host_settings_apply_at_the_next_request(client, http_client, base_url, host_settings, api):
    assert (await client.get("/ticket")).code == 200
    host_settings.values = {"api_key": "b" * 32}
    r = await client.get("/ticket")
    assert r.code == 401
    r = await Client(http_client, base_url, headers={"X-Api-Key": "b" * 32}).get("/ticket")
    assert r.code == 200
    token = api.auth.issue_token("someone", 60)
    assert jwt.decode(token, options={"verify_signature": False})["iss"] == "MyHost 9.8.7"


@pytest.mark.gen_test
async def test_the_store_opens_once_for_concurrent_first_requests(client, api):
    opened = []
    real_open = api.store.open

    async def counting_open(*args):
        opened.append(args)
        await asyncio.sleep(0.01)
        await real_open(*args)

    api.store.open = counting_open
    answers = await asyncio.gather(*(client.get("/ticket") for _ in range(5)))
    assert [r.code for r in answers] == [200] * 5
    assert len(opened) == 1
    assert {d.name for d in opened[0][0]} == {"ticket", "message"}  # the stored resources mounted


@pytest.mark.gen_test
async def test_a_store_that_fails_to_open_is_503_then_retried(client, api):
    real_open = api.store.open
    calls = []

    async def failing_once(*args):
        calls.append(1)
        if len(calls) == 1:
            from medusa_v2.store import StoreUnavailable

            raise StoreUnavailable("not yet")
        await real_open(*args)

    api.store.open = failing_once
    r = await client.get("/ticket")
    assert r.code == 503 and "error" in r.json
    assert (await client.get("/ticket")).code == 200


def test_first_false_leaves_the_hosts_catch_all_in_front(settings):
    host = tornado.web.Application()
    host.add_handlers(r".*$", [(r"/api/v2(/?.*)", HostNotFound)])
    api = ApiContext(settings, store_from_url(settings.database_url), opened=False)
    rules = mount(host, "/api/v2", api, endpoints=(), first=False)
    assert host.default_router.rules[0].target.rules[0].target is HostNotFound
    assert host.default_router.rules[1].target.rules == rules
    host2 = tornado.web.Application()
    host2.add_handlers(r".*$", [(r"/api/v2(/?.*)", HostNotFound)])
    mount(host2, "/api/v2", api, endpoints=())
    assert host2.default_router.rules[1].target.rules[0].target is HostNotFound


def test_unknown_endpoint_is_refused_at_start(settings):
    api = ApiContext(settings, store_from_url(settings.database_url), opened=False)
    with pytest.raises(ValueError, match="unknown endpoint 'login'"):
        get_apiv2_handlers("/api/v2", api, endpoints=("health", "login"))


@pytest.mark.gen_test
async def test_our_requests_in_our_access_log_the_hosts_in_tornados(client, caplog):
    caplog.set_level(logging.INFO)
    assert (await client.get("/ticket/999")).code == 404
    assert (await client.get("/nothing/here")).code == 404
    ours = [(r.levelno, r.getMessage()) for r in caplog.records if r.name == "medusa_v2.access"]
    hosts = [(r.levelno, r.getMessage()) for r in caplog.records if r.name == "tornado.access"]
    assert [level for level, message in ours if "/ticket/999 404" in message] == [logging.INFO]
    assert [level for level, message in hosts if "/nothing/here" in message] == [logging.WARNING]
    assert not [m for _, m in hosts if "/ticket/999" in m]

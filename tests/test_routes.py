"""The URL table: web_root, the catch-all, two apps in one process, extra handlers,
embedding with add_handlers, build-time errors, and the access log.
"""

from __future__ import annotations

import logging
import re
from typing import Any

import pytest
import tornado.httpserver
import tornado.testing
import tornado.web
from conftest import API_KEY, PASSWORD, USERNAME, Client

import medusa_v2
from medusa_v2 import get_apiv2_handlers
from medusa_v2.app import make_app
from medusa_v2.context import ApiContext
from medusa_v2.endpoints import AuthenticateHandler, HealthHandler, NotFoundHandler
from medusa_v2.errors import ApiError
from medusa_v2.handler import ApiHandler
from medusa_v2.listing import Page
from medusa_v2.resource import Resource


class Shelf(Resource):
    name = "shelf"

    async def list(self, query, **ids):
        return Page([{"id": 1}], 1)

    async def retrieve(self, shelf_id):
        if shelf_id > 10:
            raise ApiError(404, f"Shelf {shelf_id} not found")
        return {"id": shelf_id}


class Book(Resource):
    """Nested under shelf: /shelf/{shelf_id}/book/{book_id}."""

    name = "book"
    parent = Shelf

    async def list(self, query, shelf_id):
        return Page([{"id": 7, "shelf_id": shelf_id}], 1)

    async def retrieve(self, shelf_id, book_id):
        return {"id": book_id, "shelf_id": shelf_id}


class Lamp(Resource):
    """Mounted through `extra_handlers` as a class."""

    name = "lamp"

    async def retrieve(self, lamp_id):
        return {"id": lamp_id, "is_on": True}


class PingHandler(ApiHandler):
    """A plain handler mounted by dotted path from settings.extra_handlers."""

    path = "/ping"
    routes = {"single": ("GET",)}

    async def get(self) -> None:
        await self.send_json(200, {"pong_value": True})


class NotAHandler:
    pass


@pytest.fixture
def resources():
    return [Shelf, Book]


@pytest.fixture
def overrides() -> dict[str, Any]:
    return {}


@pytest.fixture
def settings(settings, overrides):
    return settings.replace(**overrides)


@pytest.fixture
def serve(io_loop, http_client, store, clock):
    """Serve another app (own settings) in this process; returns a Client for it."""
    servers: list[tornado.httpserver.HTTPServer] = []

    def start(app_settings, **kwargs) -> Client:
        app = make_app(app_settings, store, clock=clock, **kwargs)
        sock, port = tornado.testing.bind_unused_port()
        server = tornado.httpserver.HTTPServer(app)
        server.add_sockets([sock])
        servers.append(server)
        return Client(http_client, f"http://127.0.0.1:{port}", app_settings.web_root + "/api/v2")

    yield start
    for server in servers:
        server.stop()
        io_loop.run_sync(server.close_all_connections)


def api_for(settings, store) -> ApiContext:
    return ApiContext(settings, store)


# -- web_root ------------------------------------------------------------------------


@pytest.mark.parametrize("overrides", [{"web_root": "/medusa"}])
@pytest.mark.gen_test
async def test_web_root_prefixes_every_route(client, http_client, base_url):
    assert client.root == "/medusa/api/v2"
    assert (await client.get("/shelf/1")).code == 200
    assert (await client.get("/shelf/1/book/2")).json == {"id": 2, "shelfId": 1}
    assert (await client.get("/health", auth=None)).json == {"status": "ok"}
    r = await client.post("/authenticate", json_body={"username": USERNAME, "password": PASSWORD}, auth=None)
    assert r.code == 200
    r = await client.get("/anything/at/all", auth=None)
    assert r.code == 404
    assert r.json["error"]
    assert r.headers["X-Medusa-Server"] == medusa_v2.__version__
    # Nothing is served at the root-less path.
    r = await http_client.fetch(base_url + "/api/v2/shelf/1", headers={"X-Api-Key": API_KEY}, raise_error=False)
    assert r.code == 404


@pytest.mark.parametrize("path", ["/shelfx", "/shelf/1/2", "/shelf/1/book/2/3", "/shelf/1/bookx", "/Shelf/1"])
@pytest.mark.gen_test
async def test_routes_are_anchored(client, path):
    r = await client.get(path, auth=None)
    assert r.code == 404, path
    assert r.headers["Content-Type"] == "application/json; charset=UTF-8"


@pytest.mark.gen_test
async def test_nested_routes_reach_the_child(client):
    r = await client.get("/shelf/3/book")
    assert r.code == 200
    assert r.json == [{"id": 7, "shelfId": 3}]
    assert (await client.get("/shelf/3/book/9/")).json == {"id": 9, "shelfId": 3}
    # Both identifiers are checked.
    assert (await client.get("/shelf/abc/book/9")).code == 400
    assert (await client.get("/shelf/3/book/0")).code == 400


@pytest.mark.parametrize(
    "raw", ["abc", "0", "-1", "1.5", "9223372036854775808", "99999999999999999999999", "%20", "１"]
)
@pytest.mark.gen_test
async def test_bad_identifiers_are_400(client, raw):
    r = await client.get(f"/shelf/{raw}")
    assert r.code == 400, raw
    assert r.json["error"]


@pytest.mark.gen_test
async def test_largest_identifier_reaches_the_resource(client):
    r = await client.get("/shelf/9223372036854775807")
    assert r.code == 404
    assert r.json == {"error": "Shelf 9223372036854775807 not found"}


# -- two apps in one process -----------------------------------------------------------


@pytest.mark.gen_test
async def test_two_apps_with_different_settings(client, serve, settings):
    other_settings = settings.replace(
        api_key="another-key-" + "b" * 20, web_root="/medusa", encryption_secret="another-secret-" + "c" * 40
    )
    other = serve(other_settings, resources=[Shelf])
    assert (await client.get("/shelf/1")).code == 200
    assert (await other.get("/shelf/1", headers={"X-Api-Key": other_settings.api_key}, auth=None)).code == 200
    r = await client.get("/shelf/1", headers={"X-Api-Key": other_settings.api_key}, auth=None)
    assert r.code == 401 and 'error_description="Invalid API key."' in r.headers["WWW-Authenticate"]
    r = await other.get("/shelf/1")  # this app's key
    assert r.code == 401 and 'error_description="Invalid API key."' in r.headers["WWW-Authenticate"]
    # Tokens are signed per app.
    r = await client.post("/authenticate", json_body={"username": USERNAME, "password": PASSWORD}, auth=None)
    token = r.json["token"]
    r = await other.get("/shelf/1", headers={"x-auth": f"Bearer {token}"}, auth=None)
    assert r.code == 401 and r.json["error"] == "Invalid token."
    # Each serves only its own resources and root.
    assert (await other.get("/shelf/1/book", headers={"X-Api-Key": other_settings.api_key}, auth=None)).code == 404
    assert (await client.get("/shelf/1/book")).code == 200


@pytest.mark.gen_test
async def test_the_resources_setting_chooses_the_builtins_served(serve, settings):
    only_tickets = serve(settings.replace(resources=("ticket",)), resources=None)
    made = await only_tickets.post("/ticket", json_body={"title": "t"})
    assert made.code == 201
    assert (await only_tickets.get(f"/ticket/{made.json['id']}")).code == 200
    for path in (f"/ticket/{made.json['id']}/message", f"/ticket/{made.json['id']}/message/1"):
        r = await only_tickets.get(path)
        assert r.code == 404 and r.json["error"] and r.headers["X-Medusa-Server"], path
    both = serve(settings.replace(resources=("ticket", "message")), resources=None)
    assert (await both.get(f"/ticket/{made.json['id']}/message")).json == []
    none = serve(settings.replace(resources=()), resources=None)
    assert (await none.get("/ticket")).code == 404
    assert (await none.get("/health", auth=None)).code == 200  # the built-in endpoints stay


@pytest.mark.gen_test
async def test_two_apps_with_different_cors(client, serve, settings):
    other = serve(settings.replace(cors_origins=("https://only.example",)), resources=[Shelf])
    r = await client.get("/shelf/1", headers={"Origin": "https://x.example"})
    assert r.headers["Access-Control-Allow-Origin"] == "*"
    r = await other.get("/shelf/1", headers={"Origin": "https://x.example"})
    assert "Access-Control-Allow-Origin" not in r.headers


# -- the table itself ----------------------------------------------------------------


def test_table_order_catch_all_last(settings, store):
    table = get_apiv2_handlers("/api/v2", api_for(settings, store), resources=[Shelf, Book])
    handlers = [rule.target for rule in table]
    assert handlers[-1] is NotFoundHandler
    assert handlers.count(NotFoundHandler) == 1
    assert AuthenticateHandler in handlers and HealthHandler in handlers
    patterns = [rule.regex.pattern for rule in table]
    book_item = next(i for i, p in enumerate(patterns) if "book_id" in p)
    shelf_item = next(i for i, p in enumerate(patterns) if "shelf_id" in p and "book" not in p)
    shelf_collection = patterns.index(r"/api/v2/shelf/?$")
    assert book_item < shelf_item < shelf_collection
    for rule in table:
        assert rule.regex.pattern.startswith("/api/v2")
        assert rule.regex.pattern.endswith("$")


def test_table_with_base_trailing_slash(settings, store):
    table = get_apiv2_handlers("/medusa/api/v2/", api_for(settings, store), resources=[Shelf])
    assert all(rule.regex.pattern.startswith("/medusa/api/v2") for rule in table)
    assert table[-1].regex.match("/medusa/api/v2/anything")
    assert table[-1].regex.match("/medusa/api/v2")
    assert not table[-1].regex.match("/medusa/api/v2x")


def test_web_root_with_regex_characters_is_literal(settings, store):
    table = get_apiv2_handlers("/a.b+/api/v2", api_for(settings, store), resources=[Shelf])
    assert table[-1].regex.match("/a.b+/api/v2/x")
    assert not table[-1].regex.match("/aXbb/api/v2/x")


@pytest.mark.gen_test
async def test_embedding_with_add_handlers(http_client, settings, store, clock):
    class Home(tornado.web.RequestHandler):
        def get(self):
            self.write("home")

    app = tornado.web.Application([(r"/home", Home)])
    api = ApiContext(settings.replace(web_root="/medusa"), store, clock=clock)
    app.add_handlers(r".*$", get_apiv2_handlers("/medusa/api/v2", api, resources=[Shelf]))
    sock, port = tornado.testing.bind_unused_port()
    server = tornado.httpserver.HTTPServer(app)
    server.add_sockets([sock])
    try:
        base = f"http://127.0.0.1:{port}"
        r = await http_client.fetch(base + "/home")
        assert r.body == b"home"
        r = await http_client.fetch(base + "/medusa/api/v2/shelf/2", headers={"X-Api-Key": API_KEY})
        assert r.code == 200 and r.headers["X-Medusa-Server"] == medusa_v2.__version__
        r = await http_client.fetch(base + "/medusa/api/v2/nothing", raise_error=False)
        assert r.code == 404 and r.headers["Content-Type"] == "application/json; charset=UTF-8"
    finally:
        server.stop()
        await server.close_all_connections()


@pytest.mark.parametrize("overrides", [{"extra_handlers": ("test_routes.PingHandler",)}])
@pytest.mark.gen_test
async def test_dotted_extra_handler_from_settings_is_mounted(client, app):
    r = await client.get("/ping")
    assert r.code == 200
    assert r.json == {"pongValue": True}
    assert r.headers["X-Medusa-Server"] == medusa_v2.__version__
    r = await client.get("/ping", auth=None)
    assert r.code == 401
    r = await client.post("/ping", json_body={})
    assert r.code == 405
    assert {m.strip() for m in r.headers["Allow"].split(",")} == {"GET", "OPTIONS"}


@pytest.mark.parametrize("overrides", [{"extra_handlers": ("test_routes:PingHandler",)}])
@pytest.mark.gen_test
async def test_colon_form_extra_handler(client):
    assert (await client.get("/ping")).code == 200


@pytest.mark.gen_test
async def test_extra_resource_class(serve, settings):
    other = serve(settings, resources=[Shelf], extra_handlers=[Lamp])
    r = await other.get("/lamp/4")
    assert r.code == 200 and r.json == {"id": 4, "isOn": True}


@pytest.mark.parametrize(
    "changes, kwargs, words",
    [
        ({"resources": ("no-such-resource",)}, {"resources": None}, "no-such-resource"),
        ({"extra_handlers": ("test_routes.Missing",)}, {}, "test_routes.Missing"),
        ({"extra_handlers": ("no_such_module_xyz.Handler",)}, {}, "no_such_module_xyz"),
        ({"extra_handlers": ("test_routes.NotAHandler",)}, {}, "NotAHandler"),
        ({"extra_handlers": ("test_routes.API_KEY",)}, {}, "API_KEY"),
        ({}, {"resources": [Book]}, "shelf"),
        ({}, {"resources": [Shelf, Shelf]}, "shelf"),
    ],
)
def test_bad_tables_fail_at_build_time(settings, store, changes, kwargs, words):
    kwargs = {"resources": [Shelf], **kwargs}
    with pytest.raises(ValueError, match=re.escape(words)):
        make_app(settings.replace(**changes), store, **kwargs)


# -- the access log ------------------------------------------------------------------


@pytest.mark.gen_test
async def test_access_log_line(client, caplog):
    with caplog.at_level(logging.INFO, logger="medusa_v2.access"):
        await client.get(f"/shelf/1?x=1&api_key={API_KEY}&y=2", auth=None)
        await client.get("/nowhere", auth=None)
    lines = [rec for rec in caplog.records if rec.name == "medusa_v2.access"]
    assert len(lines) == 2
    first, second = (rec.getMessage() for rec in lines)
    assert re.fullmatch(r"GET /api/v2/shelf/1\?x=1&api_key=\[redacted\]&y=2 200 \d+\.\dms request_id=\w{16}", first), (
        first
    )
    assert re.fullmatch(r"GET /api/v2/nowhere 404 \d+\.\dms request_id=\w{16}", second), second
    assert API_KEY not in caplog.text
    assert lines[0].levelno == logging.INFO


@pytest.mark.gen_test
async def test_access_log_redacts_every_api_key_spelling(client, caplog):
    with caplog.at_level(logging.INFO, logger="medusa_v2.access"):
        await client.get(f"/shelf/1?API_KEY={API_KEY}&api_key={API_KEY}", auth=None)
        await client.get(f"/shelf/1;api_key={API_KEY}", auth=None)
    assert API_KEY not in caplog.text
    assert len([rec for rec in caplog.records if rec.name == "medusa_v2.access"]) == 2


@pytest.mark.gen_test
async def test_access_log_redacts_a_percent_encoded_api_key_name(client, caplog):
    # Tornado decodes parameter names, so `api%5Fkey` authenticates like `api_key`.
    with caplog.at_level(logging.INFO, logger="medusa_v2.access"):
        r = await client.get(f"/shelf/1?api%5Fkey={API_KEY}", auth=None)
        await client.get(f"/shelf/1?api%5fkey={API_KEY}&q=1", auth=None)
    assert r.code == 200
    assert API_KEY not in caplog.text
    assert "[redacted]" in caplog.text


@pytest.mark.gen_test
async def test_uncaught_error_log_redacts_a_percent_encoded_api_key_name(client, caplog, serve, settings):
    class Broken(Resource):
        name = "broken"

        async def retrieve(self, broken_id):
            raise RuntimeError("broken")

    other = serve(settings, resources=[Broken])
    with caplog.at_level(logging.INFO):
        r = await other.get(f"/broken/1?api%5Fkey={API_KEY}", auth=None)
    assert r.code == 500
    assert "GET /api/v2/broken/1" in caplog.text
    assert API_KEY not in caplog.text


def test_a_resource_cannot_shadow_a_builtin_route(settings, store):
    from medusa_v2.context import ApiContext
    from medusa_v2.resource import Resource

    class Health(Resource):
        name = "health"

        async def list(self, query):
            raise AssertionError("never mounted")

    with pytest.raises(ValueError, match="/health"):
        get_apiv2_handlers("/api/v2", ApiContext(settings, store), resources=[Health])

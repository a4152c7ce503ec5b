"""The one-line Medusa integration, against a replica of Medusa's web server (tests/medusa_replica).

`AppWebServer` there builds its Application as Medusa's core.py does (its API v2
handlers ending in its own catch-all, then WebSocket, static, v1 and web UI rules);
the line under test is inserted right after Medusa's own API v2 handlers, exactly
as docs/embedding.md tells a Medusa developer to write it.
"""

from __future__ import annotations

import base64
import json
import logging
import os
import sys

import jwt
import pytest
import tornado.httpserver
import tornado.testing

from medusa_v2.testing import Client

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "medusa_replica"))

from medusa import app as medusa_app  # noqa: E402  (the replica's settings module)
from medusa.server import core  # noqa: E402

THE_LINE = "from medusa_v2.medusa import mount_in_medusa; mount_in_medusa(self.app, self.options['api_v2_root'])"
MEDUSA_DEFAULTS = {k: v for k, v in vars(medusa_app).items() if k.isupper()}
API = "/api/v2"


@pytest.fixture
def medusa(tmp_path, request):
    """Reset medusa.app to its defaults, with a data dir and a config.ini of Medusa's own."""
    for key, value in MEDUSA_DEFAULTS.items():
        setattr(medusa_app, key, value)
    medusa_app.DATA_DIR = str(tmp_path)
    medusa_app.CONFIG_FILE = str(tmp_path / "config.ini")
    database = getattr(request, "param", None)
    text = "[General]\nweb_port = 8081\napi_key = 0123456789abcdef0123456789abcdef\n[Subtitles]\nx = 1\n"
    if database:
        text += f"[Database]\nurl = {request.getfixturevalue('database_url')}\n"
    (tmp_path / "config.ini").write_text(text)
    return medusa_app


class Records(logging.Handler):
    def __init__(self):
        super().__init__()
        self.records = []

    def emit(self, record):
        self.records.append(record)


@pytest.fixture
def medusa_log():
    """What Medusa's log handlers receive (Medusa sets them on its own named loggers)."""
    logger = logging.getLogger("medusa.server.core")
    records = Records()
    logger.addHandler(records)
    logger.setLevel(logging.INFO)
    ours = logging.getLogger("medusa_v2")
    saved = (list(ours.handlers), ours.level, ours.propagate)
    yield records.records
    logger.removeHandler(records)
    ours.handlers[:], ours.level, ours.propagate = saved


@pytest.fixture
def server(medusa, medusa_log, io_loop):
    """Medusa's AppWebServer with the one line in place."""
    core.AppWebServer.MOUNT = THE_LINE
    try:
        web = core.AppWebServer({"web_root": ""})
    finally:
        core.AppWebServer.MOUNT = None
    yield web
    api = _our_context(web.app)
    io_loop.run_sync(api.close)


@pytest.fixture
def app(server):
    return server.app


def _our_context(app):
    for rule in app.default_router.rules[0].target.rules:
        kwargs = getattr(rule, "kwargs", None) or getattr(rule, "target_kwargs", {})
        if "api" in kwargs:
            return kwargs["api"]
    raise AssertionError("medusa_v2 is not the first host rule")


@pytest.fixture
def key_client(http_client, base_url):
    return Client(http_client, base_url, headers={"X-Api-Key": medusa_app.API_KEY})


async def _medusa_token(http_client, base_url) -> str:
    r = await Client(http_client, base_url, headers={}).post(
        "/authenticate", json_body={"username": medusa_app.WEB_USERNAME, "password": medusa_app.WEB_PASSWORD}
    )
    assert r.code == 200, r.body
    return r.json["token"]


@pytest.mark.gen_test
async def test_medusa_keeps_its_own_api_404_and_web_ui(server, http_client, base_url, key_client):
    r = await key_client.get("/series")
    assert r.code == 200 and r.json == [{"id": {"slug": "tvdb83462"}, "title": "Castle"}]
    r = await key_client.get("/config/main")
    assert r.code == 200 and "main" in r.json
    token = await _medusa_token(http_client, base_url)
    assert jwt.decode(token, options={"verify_signature": False})["iss"] == "Medusa 1.0.26"
    # Medusa's own catch-all answers what neither of us serves: its empty 404, not our JSON one.
    for path in ("/nothing", "/ticketx", "/"):
        r = await key_client.get(path)
        assert r.code == 404, path
        assert r.body == b"", path
    r = await http_client.fetch(base_url + "/home/", raise_error=False)
    assert r.code == 200 and b"Medusa home" in r.body


@pytest.mark.gen_test
async def test_ticket_crud_with_medusas_key_and_token(server, http_client, base_url, key_client, medusa):
    r = await key_client.post("/ticket", json_body={"title": "From Medusa"})
    assert r.code == 201, r.body
    assert r.headers["X-Medusa-Server"] == "1.0.26"
    ticket_id = r.json["id"]
    assert r.headers["Location"].endswith(f"{API}/ticket/{ticket_id}")
    token = await _medusa_token(http_client, base_url)
    bearer = Client(http_client, base_url, headers={"x-auth": f"Bearer {token}"})
    r = await bearer.get(f"/ticket/{ticket_id}")
    assert r.code == 200 and r.json["title"] == "From Medusa"
    r = await bearer.patch(f"/ticket/{ticket_id}", json_body={"state": "closed"})
    assert r.code == 200 and r.json == {"state": "closed"}
    r = await bearer.get("/ticket?state=closed")
    assert r.code == 200 and [t["id"] for t in r.json] == [ticket_id]
    r = await bearer.delete(f"/ticket/{ticket_id}")
    assert r.code == 204
    # The same version on Medusa's answers and ours.
    medusa_answer = await key_client.get("/series")
    ours = await key_client.get("/ticket")
    assert medusa_answer.headers["X-Medusa-Server"] == ours.headers["X-Medusa-Server"] == "1.0.26"
    # The store is an SQLite file in Medusa's data dir.
    assert os.path.exists(os.path.join(medusa.DATA_DIR, "medusa_v2.db"))


@pytest.mark.gen_test
async def test_our_tokens_work_on_medusas_routes(server, http_client, base_url):
    api = _our_context(server.app)
    token = api.auth.issue_token("medusa", 60)
    assert jwt.decode(token, options={"verify_signature": False})["iss"] == "Medusa 1.0.26"
    r = await Client(http_client, base_url, headers={"x-auth": f"Bearer {token}"}).get("/series")
    assert r.code == 200


@pytest.mark.gen_test
async def test_key_rotation_through_medusas_config_applies_at_once(server, http_client, base_url, key_client):
    old_key = medusa_app.API_KEY
    assert (await key_client.get("/ticket")).code == 200
    new_key = "fedcba9876543210fedcba9876543210"
    r = await key_client.patch("/config/main", json_body={"webInterface": {"apiKey": new_key}})
    assert r.code == 200 and medusa_app.API_KEY == new_key
    old = Client(http_client, base_url, headers={"X-Api-Key": old_key})
    r = await old.get("/ticket")
    assert r.code == 401
    assert r.json == {"error": "No authorization token."}  # Medusa's answer to a wrong key
    r = await old.get(f"/ticket?api_key={old_key}")
    assert r.code == 401
    new = Client(http_client, base_url, headers={"X-Api-Key": new_key})
    assert (await new.get("/ticket")).code == 200
    assert (await new.get("/series")).code == 200


@pytest.mark.gen_test
async def test_a_value_we_cannot_use_does_not_hold_back_a_key_rotation(server, http_client, base_url, monkeypatch):
    """Medusa takes a web root with a space; we cannot serve under it, yet the new key applies."""
    old_key = medusa_app.API_KEY
    new_key = "0a1b2c3d4e5f60718293a4b5c6d7e8f9"
    monkeypatch.setattr(medusa_app, "WEB_ROOT", "/my medusa")
    monkeypatch.setattr(medusa_app, "API_KEY", new_key)
    r = await Client(http_client, base_url, headers={"X-Api-Key": old_key}).get("/ticket")
    assert r.code == 401
    assert (await Client(http_client, base_url, headers={"X-Api-Key": new_key}).get("/ticket")).code == 200


@pytest.mark.gen_test
async def test_password_change_refuses_the_old_password_even_once_verified(server, http_client, base_url, key_client):
    def basic(password):
        text = f"{medusa_app.WEB_USERNAME}:{password}".encode()
        return Client(http_client, base_url, headers={"Authorization": "Basic " + base64.b64encode(text).decode()})

    old_password = medusa_app.WEB_PASSWORD
    assert (await basic(old_password).get("/ticket")).code == 200  # verified once: cached
    r = await key_client.patch("/config/main", json_body={"webInterface": {"password": "a-new-password"}})
    assert r.code == 200
    r = await basic(old_password).get("/ticket")
    assert r.code == 401 and r.json == {"error": "Invalid user/pass."}
    assert (await basic("a-new-password").get("/ticket")).code == 200


@pytest.mark.gen_test
async def test_secret_change_refuses_tokens_verified_before(server, http_client, base_url):
    token = await _medusa_token(http_client, base_url)
    bearer = Client(http_client, base_url, headers={"x-auth": f"Bearer {token}"})
    assert (await bearer.get("/ticket")).code == 200
    medusa_app.ENCRYPTION_SECRET = "another-secret-another-secret-another"
    r = await bearer.get("/ticket")
    assert r.code == 401 and r.json == {"error": "Invalid token."}


@pytest.mark.gen_test
async def test_openapi_describes_only_what_is_mounted(server, key_client):
    r = await key_client.get("/openapi.json")
    assert r.code == 200
    paths = set(r.json["paths"])
    assert "/ticket" in paths and "/ticket/{ticket_id}/message" in paths
    assert not {"/authenticate", "/config"} & paths
    assert r.json["info"]["version"] == "1.0.26"
    assert (await key_client.get("/health")).json == {"status": "ok"}


@pytest.mark.gen_test
async def test_our_4xx_add_no_warnings_to_medusas_log(server, key_client, medusa_log):
    assert any("mounted under /api/v2" in r.getMessage() for r in medusa_log)  # our lines reach Medusa's log
    assert (await key_client.get("/ticket/999")).code == 404
    assert (await key_client.post("/ticket", json_body={"nope": 1})).code == 400
    assert (await key_client.get("/ticket/abc")).code == 400
    assert [r.getMessage() for r in medusa_log if r.levelno >= logging.WARNING] == []
    assert not any(uri.startswith(f"{API}/ticket") for _, _, uri in server.log_lines)  # not Medusa's log_request
    lines = [r.getMessage() for r in medusa_log if r.name == "medusa_v2.access"]
    assert any(line.startswith("GET /api/v2/ticket/999 404 ") for line in lines)  # our access log, as INFO
    medusa_app.WEB_LOG = False  # Medusa's web log switch applies to our lines too
    medusa_log.clear()
    assert (await key_client.get("/ticket/998")).code == 404
    assert [r for r in medusa_log if r.name == "medusa_v2.access"] == []


@pytest.mark.gen_test
async def test_medusas_config_ini_is_never_written(server, key_client, medusa):
    path = medusa.CONFIG_FILE
    before = open(path, "rb").read()
    r = await key_client.post("/ticket", json_body={"title": "x"})
    assert r.code == 201
    assert open(path, "rb").read() == before
    assert sorted(os.listdir(medusa.DATA_DIR)) == ["config.ini", "medusa_v2.db", "medusa_v2.db-shm", "medusa_v2.db-wal"]


@pytest.mark.parametrize("medusa", ["database"], indirect=True)
@pytest.mark.stores("postgresql")
@pytest.mark.gen_test
async def test_database_url_from_medusas_config_ini(server, key_client, medusa, database_backend):
    r = await key_client.post("/ticket", json_body={"title": "on PostgreSQL"})
    assert r.code == 201
    assert type(_our_context(server.app).store).__name__ == "PostgresStore"
    assert not os.path.exists(os.path.join(medusa.DATA_DIR, "medusa_v2.db"))
    assert json.loads((await key_client.get(f"/ticket/{r.json['id']}")).body)["title"] == "on PostgreSQL"


@pytest.mark.gen_test
async def test_under_medusas_web_root(medusa, medusa_log, io_loop, http_client, base_url):
    """Medusa's web_root moves its API root, and ours with it."""
    medusa.WEB_ROOT = "/medusa"
    core.AppWebServer.MOUNT = THE_LINE
    try:
        web = core.AppWebServer({"web_root": "/medusa"})
    finally:
        core.AppWebServer.MOUNT = None
    api = _our_context(web.app)
    try:
        assert api.settings.web_root == "/medusa"
        server = tornado.httpserver.HTTPServer(web.app)
        sock, port = tornado.testing.bind_unused_port()
        server.add_sockets([sock])
        client = Client(http_client, f"http://127.0.0.1:{port}", "/medusa/api/v2", {"X-Api-Key": medusa.API_KEY})
        r = await client.post("/ticket", json_body={"title": "rooted"})
        assert r.code == 201 and r.headers["Location"] == f"http://127.0.0.1:{port}/medusa/api/v2/ticket/{r.json['id']}"
        assert (await client.get("/series")).code == 200
        r = await http_client.fetch(f"http://127.0.0.1:{port}/api/v2/ticket", raise_error=False)
        assert r.code == 404
        server.stop()
    finally:
        await api.close()


def test_the_store_closes_at_exit_on_its_own_stopped_loop(medusa, medusa_log):
    """Medusa serves from a thread of its own and stops that loop at shutdown; atexit closes the store on it."""
    import asyncio
    import threading

    import tornado.web

    from medusa_v2.medusa import close_at_exit, mount_medusa_app

    app = tornado.web.Application()
    api = mount_medusa_app(app, "/api/v2", medusa)
    loop = asyncio.new_event_loop()
    started = threading.Event()

    def serve():
        asyncio.set_event_loop(loop)
        loop.call_soon(started.set)
        loop.run_until_complete(api.open())
        loop.run_forever()

    thread = threading.Thread(target=serve)
    thread.start()
    started.wait(5)
    while not api.opened:
        threading.Event().wait(0.01)
    loop.call_soon_threadsafe(loop.stop)  # Medusa's shutDown()
    thread.join(5)
    assert api.store._db is not None  # still open after the loop stopped
    close_at_exit(api)
    assert api.store._db is None and not api.opened
    loop.close()
    close_at_exit(api)  # a second call (or a closed loop) is harmless

"""The fast path for resource GETs writes exactly the answer ResourceHandler writes.

Two servers share one store: one runs the daemon's application class (with the fast
path), the other a plain `tornado.web.Application` holding the same URL table, as an
embedder would (every request through ResourceHandler). Each request below goes to
both as the same bytes; the status line, the headers (in order, bar Date) and the
body must be identical. The requests cover what the fast path answers (200, 304 and
its errors: 400, 401, 404, 405, 414, 431, 500, 503), with the CORS allow-list in
force, and what it hands over untouched: HEAD, OPTIONS, bodies, a path not UTF-8.
Every request runs its resource method once, whichever path answers it.
"""

from __future__ import annotations

import base64
import logging
import re

import pytest
import tornado.httpserver
import tornado.httputil
import tornado.iostream
import tornado.tcpclient
import tornado.testing
import tornado.web
from conftest import API_KEY, PASSWORD, USERNAME

from medusa_v2.app import make_app
from medusa_v2.daemon import _Tracking
from medusa_v2.errors import ApiError
from medusa_v2.fastpath import ApiApplication, FastGet
from medusa_v2.listing import Page
from medusa_v2.resource import Resource, ResourceHandler
from medusa_v2.store import StoreUnavailable
from medusa_v2.url_table import builtin_resources

ORIGIN = "https://ui.example.org"


class Counter(Resource):
    """An embedder's resource that counts its calls: items 1-99 exist, others fail as named."""

    name = "counter"
    calls: list[str] = []  # set afresh by the `pair` fixture

    async def list(self, query, **ids):
        self.calls.append("list")
        return Page([{"id": 1}], 1)

    async def retrieve(self, counter_id):
        self.calls.append("retrieve")
        if counter_id == 500:
            raise RuntimeError("kaboom in retrieve")
        if counter_id == 503:
            raise StoreUnavailable("the store is down")
        if counter_id >= 100:
            raise ApiError(404, f"Counter {counter_id} not found")
        return {"id": counter_id, "seenBy": "counter"}

    async def delete(self, precondition, counter_id):
        self.calls.append("delete")


class Sink(Resource):
    """A resource without GET: its routes answer a GET 405."""

    name = "sink"

    async def create(self, values):
        return {"id": 1}


@pytest.fixture
def config_values(config_values):
    # Where config.py reads it (docs/configuration.md, [API]): the allow-list is in force.
    config_values["API"] = {**config_values.get("API", {}), "cors_origins": [ORIGIN]}
    return config_values


@pytest.fixture
def pair(io_loop, settings, store, clock, monkeypatch):
    """Start the fast app and the plain app (built-ins, Counter and Sink mounted); return their ports."""
    assert settings.cors_origins == (ORIGIN,)
    monkeypatch.setattr(Counter, "calls", [])
    known = builtin_resources()
    resources = [*(known[name] for name in settings.resources), Counter, Sink]
    servers = []

    def start(app: tornado.web.Application) -> int:
        sock, port = tornado.testing.bind_unused_port()
        server = tornado.httpserver.HTTPServer(app)
        server.add_sockets([sock])
        servers.append(server)
        return port

    fast = make_app(settings, store, clock=clock, resources=resources, app_class=_Tracking)
    plain = make_app(settings, store, clock=clock, resources=resources, app_class=tornado.web.Application)
    assert isinstance(fast, ApiApplication) and not isinstance(plain, ApiApplication)
    yield fast, start(fast), start(plain)
    for server in servers:
        server.stop()


async def raw(port: int, head: str, body: bytes = b"") -> tuple[str, list[tuple[str, str]], bytes]:
    """Send one request as bytes (Connection: close); return the status line, headers in order, body."""
    stream = await tornado.tcpclient.TCPClient().connect("127.0.0.1", port)
    stream.write(head.replace("\n", "\r\n").encode("latin-1") + b"\r\n" + body)
    data = await stream.read_until_close()
    top, _, payload = data.partition(b"\r\n\r\n")
    lines = top.decode("latin-1").split("\r\n")
    headers = [tuple(line.split(": ", 1)) for line in lines[1:]]
    return lines[0], headers, payload  # type: ignore[return-value]


def request(method: str, target: str, *headers: str, host: str = "localhost") -> str:
    lines = [f"{method} {target} HTTP/1.1", f"Host: {host}", "Connection: close", *headers]
    return "\n".join(lines) + "\n"


async def same(fast_port: int, plain_port: int, head: str, body: bytes = b"") -> tuple[int, dict[str, str], bytes]:
    """Send `head` to both apps; assert both answers are the same bytes, bar the Date; return it.

    Without an X-Request-ID in `head`, each app generates its own: compared as "generated".
    """
    fast = await raw(fast_port, head, body)
    plain = await raw(plain_port, head, body)
    sent = "x-request-id:" in head.lower()

    def drop_date(headers: list[tuple[str, str]]) -> list[tuple[str, str]]:
        kept = [(k, v) for k, v in headers if k != "Date"]
        if sent or not headers:  # sent: echoed as is; no headers: tornado's HTTP server refused the request
            return kept
        assert [v for k, v in kept if k.lower() == "x-request-id" and re.fullmatch("[0-9a-f]{16}", v)], (head, headers)
        return [(k, "generated" if k.lower() == "x-request-id" else v) for k, v in kept]

    assert (fast[0], drop_date(fast[1]), fast[2]) == (plain[0], drop_date(plain[1]), plain[2]), head
    assert len(fast[1]) - len(drop_date(fast[1])) <= 1, head
    return int(fast[0].split(" ")[1]), dict(fast[1]), fast[2]


async def seed(client) -> dict[str, str]:
    """Two tickets (one with a message, one with non-ASCII text) and a token."""
    one = await client.post("/ticket", json_body={"title": "Printer on fire", "priority": 5})
    two = await client.post("/ticket", json_body={"title": "Écran noir ✓", "description": "naïve"})
    message = await client.post(
        f"/ticket/{one.json['id']}/message", json_body={"author": "ann", "body": "Still burning"}
    )
    token = (
        await client.post("/authenticate", json_body={"username": USERNAME, "password": PASSWORD}, auth=None)
    ).json["token"]
    return {
        "one": str(one.json["id"]),
        "two": str(two.json["id"]),
        "message": str(message.json["id"]),
        "etag": one.headers["ETag"],
        "token": token,
    }


KEY = f"X-Api-Key: {API_KEY}"


@pytest.mark.gen_test
async def test_every_answer_is_the_same_on_both_paths(client, pair):
    app, fast, plain = pair
    s = await seed(client)
    one, etag, token = s["one"], s["etag"], s["token"]
    basic_ok = base64.b64encode(f"{USERNAME}:{PASSWORD}".encode()).decode()
    basic_bad = base64.b64encode(f"{USERNAME}:wrong".encode()).decode()
    api = "/api/v2"
    answered_fast = [
        request("GET", f"{api}/ticket/{one}", KEY),
        request("GET", f"{api}/ticket/{s['two']}", KEY),
        request("GET", f"{api}/ticket/{one}/", KEY),
        request("GET", f"{api}/ticket/{one}?api_key={API_KEY}"),
        request("GET", f"{api}/ticket/{one}", f"X-Auth: Bearer {token}"),
        request("GET", f"{api}/ticket/{one}", f"Authorization: Bearer {token}"),
        request("GET", f"{api}/ticket/{one}", KEY, f"If-None-Match: {etag}"),
        request("GET", f"{api}/ticket/{one}", KEY, f"If-None-Match: W/{etag}"),
        request("GET", f"{api}/ticket/{one}", KEY, "If-None-Match: *"),
        request("GET", f"{api}/ticket/{one}", KEY, 'If-None-Match: "other"'),
        request("GET", f"{api}/ticket/{one}", KEY, f"Origin: {ORIGIN}"),
        request("GET", f"{api}/ticket/{one}", KEY, "Origin: https://evil.example"),
        request("GET", f"{api}/ticket/{one}", KEY, "Content-Length: 0"),
        request("GET", f"{api}/ticket", KEY),
        request("GET", f"{api}/ticket?limit=1&page=2", KEY),
        request("GET", f"{api}/ticket?sort=-priority,updated-at&state=open", KEY),
        request("GET", f"{api}/ticket?q=fire", KEY),
        request("GET", f"{api}/ticket?page=99", KEY),
        request("GET", f"{api}/ticket/{one}/message", KEY),
        request("GET", f"{api}/ticket/{one}/message/{s['message']}", KEY),
        request("GET", f"{api}/ticket?limit=1", KEY, host="api.example.org:8081"),
        request("GET", f"{api}/ticket/{one}?api%5Fkey={API_KEY}"),  # tornado decodes names
        request("GET", f"{api}/ticket?colour=red", KEY),  # not a parameter of ours: ignored
        # Errors: the fast path writes the answer the pipeline made, as ResourceHandler does.
        request("GET", f"{api}/ticket/999", KEY),
        request("GET", f"{api}/ticket/abc", KEY),
        request("GET", f"{api}/ticket/0", KEY),
        request("GET", f"{api}/ticket/99999999999999999999", KEY),
        request("GET", f"{api}/ticket/999/message", KEY),
        request("GET", f"{api}/ticket/{one}/message/999", KEY),
        request("GET", f"{api}/ticket/{one}"),
        request("GET", f"{api}/ticket/{one}", f"Origin: {ORIGIN}"),
        request("GET", f"{api}/ticket/{one}", "X-Api-Key: wrong"),
        request("GET", f"{api}/ticket/{one}?api_key=wrong"),
        request("GET", f"{api}/ticket/{one}", "X-Auth: Bearer not-a-token"),
        request("GET", f"{api}/ticket/{one}", "Authorization: Token abc"),
        request("GET", f"{api}/ticket/{one}", f"Authorization: Basic {basic_ok}"),
        request("GET", f"{api}/ticket/{one}?api_key=", f"Authorization: Basic {basic_bad}"),
        request("GET", f"{api}/ticket?page=0", KEY),
        request("GET", f"{api}/ticket?limit=abc", KEY),
        request("GET", f"{api}/ticket?sort=nope", KEY, f"Origin: {ORIGIN}"),
        request("GET", f"{api}/ticket?state=open&state=closed&state=bogus", KEY),
        request("GET", f"{api}/ticket?q=%FF", KEY),
        request("GET", f"{api}/ticket?limit=1&limit=2", KEY),
        request("GET", f"{api}/ticket/{one}?x=" + "a" * 8200, KEY),  # 414
        request("GET", f"{api}/ticket/{one}", KEY, *[f"X-Filler-{i}: {'y' * 100}" for i in range(200)]),
        request("GET", f"{api}/sink", KEY, f"Origin: {ORIGIN}"),
        request("GET", f"{api}/sink/1", KEY),
        request("GET", f"{api}/sink"),
        request("GET", f"{api}/counter/1", KEY, f"Origin: {ORIGIN}"),
        request("GET", f"{api}/counter/404", KEY),
        request("GET", f"{api}/counter/500", KEY, f"Origin: {ORIGIN}"),
        request("GET", f"{api}/counter/503", KEY),
    ]
    handed_over = [
        request("GET", f"{api}/ticket/%FF", KEY),  # tornado refuses a path that is not UTF-8 itself
        request("HEAD", f"{api}/ticket/{one}", KEY),
        request("HEAD", f"{api}/ticket", KEY),
        request("HEAD", f"{api}/ticket/999", KEY),
        request("OPTIONS", f"{api}/ticket/{one}", f"Origin: {ORIGIN}"),
        request("GET", f"{api}/ticket", KEY, host="bad host"),  # refused by tornado's HTTP server itself
    ]
    statuses = set()
    for cases, by_fast_path in ((answered_fast, 1), (handed_over, 0)):
        for head in cases:
            before = app.fast_answers
            status, _, _ = await same(fast, plain, head)
            assert app.fast_answers - before == by_fast_path, (status, head[:200])
            statuses.add(status)
    assert statuses >= {200, 204, 304, 400, 401, 404, 405, 414, 431, 500, 503}
    # A GET with a body goes to ResourceHandler (which reads and ignores it).
    before = app.fast_answers
    status, _, _ = await same(fast, plain, request("GET", f"{api}/ticket/{one}", KEY, "Content-Length: 2"), b"{}")
    assert status == 200 and app.fast_answers == before
    assert app.inflight == 0  # every request, fast or handed over, was logged once


@pytest.mark.gen_test
async def test_answers_cover_the_contract_headers(client, pair):
    _, fast, plain = pair
    s = await seed(client)
    status, headers, body = await same(fast, plain, request("GET", f"/api/v2/ticket/{s['one']}", KEY))
    assert status == 200 and b'"title":"Printer on fire"' in body
    assert headers["Content-Type"] == "application/json; charset=UTF-8"
    assert headers["Content-Length"] == str(len(body)) and headers["Etag"] == s["etag"]
    assert (
        headers["X-Medusa-Server"]
        and headers["Access-Control-Allow-Methods"] == "GET, HEAD, PUT, PATCH, DELETE, OPTIONS"
    )
    status, headers, body = await same(
        fast, plain, request("GET", f"/api/v2/ticket/{s['one']}", KEY, f"If-None-Match: {s['etag']}")
    )
    assert (status, body) == (304, b"") and "Content-Type" not in headers and headers["Etag"] == s["etag"]
    status, headers, body = await same(fast, plain, request("GET", "/api/v2/ticket?limit=1", KEY))
    assert headers["X-Pagination-Count"] == "2" and 'rel="next"' in headers["Link"]
    # The CORS allow-list: a listed Origin is echoed, another gets none; both vary on Origin.
    for origin, allowed in ((ORIGIN, ORIGIN), ("https://evil.example", None)):
        for path in (f"/api/v2/ticket/{s['one']}", "/api/v2/ticket/999"):
            status, headers, _ = await same(fast, plain, request("GET", path, KEY, f"Origin: {origin}"))
            assert headers.get("Access-Control-Allow-Origin") == allowed and "Origin" in headers["Vary"], path


@pytest.mark.gen_test
async def test_a_resource_method_runs_once_per_request_on_every_path(client, pair, caplog):
    app, fast, plain = pair
    caplog.set_level(logging.CRITICAL, "medusa_v2")  # the 500's traceback is expected here
    api = "/api/v2/counter"
    cases = [
        (request("GET", f"{api}/1", KEY), 200, "retrieve"),
        (request("GET", f"{api}/1", KEY, "If-None-Match: *"), 304, "retrieve"),
        (request("GET", api, KEY), 200, "list"),
        (request("GET", f"{api}/404", KEY), 404, "retrieve"),
        (request("GET", f"{api}/500", KEY), 500, "retrieve"),
        (request("GET", f"{api}/503", KEY), 503, "retrieve"),
        (request("HEAD", f"{api}/1", KEY), 200, "retrieve"),
        (request("HEAD", f"{api}/404", KEY), 404, "retrieve"),
        (request("DELETE", f"{api}/1", KEY), 204, "delete"),
        (request("GET", f"{api}/1"), 401, None),
        (request("POST", api, KEY), 405, None),
    ]
    for port in (fast, plain):
        for head, code, method in cases:
            Counter.calls.clear()
            status, _, _ = await raw(port, head)
            assert int(status.split(" ")[1]) == code, head
            assert Counter.calls == ([method] if method else []), head
        Counter.calls.clear()
        status, _, _ = await raw(port, request("GET", f"{api}/404", KEY, "Content-Length: 2"), b"{}")
        assert int(status.split(" ")[1]) == 404 and Counter.calls == ["retrieve"]


@pytest.mark.gen_test
async def test_a_kept_alive_connection_serves_fast_and_handed_over_requests(client, pair):
    _, fast, _ = pair
    s = await seed(client)
    stream = await tornado.tcpclient.TCPClient().connect("127.0.0.1", fast)
    for path, code in [(s["one"], 200), ("999", 404), (s["one"], 200), ("abc", 400), ("%FF", 400), (s["two"], 200)]:
        stream.write(f"GET /api/v2/ticket/{path} HTTP/1.1\r\nHost: x\r\n{KEY}\r\n\r\n".encode())
        top = await stream.read_until(b"\r\n\r\n")
        assert top.startswith(f"HTTP/1.1 {code} ".encode()), top
        length = int(top.split(b"Content-Length: ")[1].split(b"\r\n")[0])
        await stream.read_bytes(length)
    stream.close()


@pytest.mark.gen_test
async def test_the_access_log_has_one_line_per_request_on_either_path(client, pair, caplog):
    _, fast, plain = pair
    s = await seed(client)
    caplog.set_level(logging.INFO, "medusa_v2.access")
    for port in (fast, plain):
        await raw(port, request("GET", f"/api/v2/ticket/{s['one']}?api_key={API_KEY}"))
        await raw(port, request("GET", "/api/v2/ticket/999", KEY))
    lines = [r.getMessage().rsplit(" ", 2)[0] for r in caplog.records if r.name == "medusa_v2.access"]
    expected = [f"GET /api/v2/ticket/{s['one']}?api_key=[redacted] 200", "GET /api/v2/ticket/999 404"]
    assert lines == expected * 2


@pytest.mark.parametrize(
    "options", [{}, {"compress_response": True}, {"log_function": lambda handler: None}], ids=["plain", "gzip", "log"]
)
def test_only_resource_gets_of_plain_apps_take_the_fast_path(settings, store, options):
    app = make_app(settings, store, **options)
    plain = not options
    rules = app.wildcard_router.rules
    assert rules
    for method in ("GET", "HEAD", "POST"):
        start = tornado.httputil.RequestStartLine(method, "/api/v2/ticket/1", "HTTP/1.1")
        request = tornado.httputil.HTTPServerRequest(start_line=start, headers=tornado.httputil.HTTPHeaders(Host="x"))
        for rule in rules:
            delegate = app.get_handler_delegate(request, rule.target, rule.target_kwargs, [], {})
            fast = rule.target is ResourceHandler and method == "GET" and plain
            assert isinstance(delegate, FastGet) is fast, (method, rule.target)

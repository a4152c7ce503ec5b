"""The change feed: GET /events (pages after since) and the WebSocket on the same URL, on both stores."""

from __future__ import annotations

import asyncio
import json
import logging
import socket
import struct
import time
from base64 import b64encode
from urllib.parse import urlencode

import pytest
import tornado.httpclient
import tornado.httpserver
import tornado.testing
from conftest import API_KEY, Client
from tornado.websocket import WebSocketClientConnection, websocket_connect

from medusa_v2 import events
from medusa_v2.app import make_app
from medusa_v2.handler import redact_uri
from medusa_v2.resources.ticket import TICKET
from medusa_v2.store import store_from_url
from medusa_v2.url_table import declarations_for

pytestmark = pytest.mark.stores("sqlite", "postgresql")

WAIT = 10.0  # seconds any expected message may take (they take milliseconds)


# -- helpers --


def ws_url(base_url: str, **query: object) -> str:
    url = base_url.replace("http://", "ws://", 1) + "/api/v2/events"
    return url + "?" + urlencode(query) if query else url


async def connect(base_url: str, headers: dict[str, str] | None = None, **query: object) -> WebSocketClientConnection:
    request = tornado.httpclient.HTTPRequest(ws_url(base_url, **query), headers=headers or {})
    return await asyncio.wait_for(websocket_connect(request), WAIT)


async def refused(base_url: str, headers: dict[str, str] | None = None, **query: object):
    """Return the HTTP error of an upgrade the server refuses."""
    with pytest.raises(tornado.httpclient.HTTPClientError) as caught:
        ws = await connect(base_url, headers, **query)
        ws.close()
    return caught.value


async def receive(ws: WebSocketClientConnection, count: int) -> list[dict]:
    """Return the next `count` messages (failing if the socket closes or they do not come)."""
    out = []
    for _ in range(count):
        text = await asyncio.wait_for(ws.read_message(), WAIT)
        assert text is not None, f"closed after {len(out)} message(s): {ws.close_code} {ws.close_reason}"
        out.append(json.loads(text))
    return out


async def closed(ws: WebSocketClientConnection) -> tuple[int | None, str | None, list[dict]]:
    """Read until the server closes; return the close code, the reason and what came before."""
    before = []
    while (text := await asyncio.wait_for(ws.read_message(), WAIT)) is not None:
        before.append(json.loads(text))
    return ws.close_code, ws.close_reason, before


async def nothing_more(ws: WebSocketClientConnection, seconds: float = 0.3) -> None:
    """Assert no message comes within `seconds` (after everything expected has come)."""
    with pytest.raises(asyncio.TimeoutError):
        text = await asyncio.wait_for(ws.read_message(), seconds)
        pytest.fail(f"unexpected message: {text}")


async def everything(client: Client, since: int = 0, limit: int = 1000, **query: str) -> list[dict]:
    """Follow the feed over HTTP from `since` to its end, page by page (Link rel="next")."""
    out: list[dict] = []
    r = await client.get("/events?" + urlencode({"since": since, "limit": limit, **query}))
    while True:
        assert r.code == 200, r.body
        out += r.json
        link = r.headers.get("Link")
        if link is None:
            return out
        url = link.split(">", 1)[0].lstrip("<")
        r = await client.get(url.split("/api/v2", 1)[1])


def api_of(app):
    return app.settings["medusa_v2_api"]


# -- credentials --


@pytest.mark.gen_test
async def test_http_and_upgrade_need_credentials(anonymous_client, client, base_url, app):
    r = await anonymous_client.get("/events", auth=None)
    assert (r.code, r.json) == (401, {"error": "No authorization token."})
    assert "Bearer" in r.headers["WWW-Authenticate"]
    assert (await anonymous_client.get("/events?token=not-a-token", auth=None)).code == 401
    assert (await anonymous_client.get(f"/events?api_key={API_KEY}", auth=None)).code == 200
    for query in ({}, {"api_key": "wrong"}, {"token": "not.a.token"}):
        error = await refused(base_url, **query)
        assert error.code == 401
        assert "error" in json.loads(error.response.body)
    assert (await refused(base_url, {"X-Api-Key": "wrong"})).code == 401
    # Every accepted form opens it: the query key, the header, a token in the query or a header.
    token = api_of(app).auth.issue_token("medusa", 3600)
    for headers, query in (
        ({}, {"api_key": API_KEY}),
        ({"X-Api-Key": API_KEY}, {}),
        ({}, {"token": token}),
        ({"X-Auth": f"Bearer {token}"}, {}),
    ):
        ws = await connect(base_url, headers, **query)
        ws.close()


@pytest.mark.gen_test
async def test_a_revoked_token_is_refused(client, base_url, app):
    token = api_of(app).auth.issue_token("medusa", 3600)
    assert (await client.delete("/authenticate", headers={"X-Auth": f"Bearer {token}"}, auth=None)).code == 204
    error = await refused(base_url, token=token)
    assert (error.code, json.loads(error.response.body)) == (401, {"error": "Invalid token."})


@pytest.mark.gen_test(timeout=30)
async def test_a_socket_is_closed_once_its_token_is_revoked_or_expires(client, base_url, app, monkeypatch, clock):
    monkeypatch.setattr(events, "CREDENTIALS_CHECK", 0.2)
    api = api_of(app)
    revoked, short = api.auth.issue_token("medusa", 3600), api.auth.issue_token("medusa", 2)
    kept = api.auth.issue_token("medusa", 3600)
    on_revoked, on_short, on_kept = [await connect(base_url, token=t) for t in (revoked, short, kept)]
    assert (await client.delete("/authenticate", headers={"X-Auth": f"Bearer {revoked}"}, auth=None)).code == 204
    code, reason, _ = await closed(on_revoked)
    assert code == 4001 and "authenticate again" in reason and "since=" in reason
    clock.now += 3  # past the short token's expiry
    code, reason, _ = await closed(on_short)
    assert code == 4001
    assert (await client.post("/ticket", json_body={"title": "still here"})).code == 201
    (message,) = await receive(on_kept, 1)  # a valid token keeps its socket
    assert message["event"] == "created"
    on_kept.close()


@pytest.mark.gen_test
async def test_credentials_stay_out_of_the_access_log_and_of_link_urls(client, base_url, app, caplog):
    token = api_of(app).auth.issue_token("medusa", 3600)
    for _ in range(3):
        assert (await client.post("/ticket", json_body={"title": "t"})).code == 201
    with caplog.at_level(logging.INFO, logger="medusa_v2.access"):
        ws = await connect(base_url, api_key=API_KEY, since=0)
        await receive(ws, 3)
        ws.close()
        ws = await connect(base_url, token=token)
        ws.close()
        r = await client.get(f"/events?limit=1&api_key={API_KEY}&token={token}", auth=None)
    assert r.code == 200
    assert "since=1" in r.headers["Link"] and API_KEY not in r.headers["Link"] and token not in r.headers["Link"]
    lines = [record.getMessage() for record in caplog.records if record.name == "medusa_v2.access"]
    upgrades = [line for line in lines if " 101 " in line]
    assert len(upgrades) == 2, lines
    assert all("[redacted]" in line for line in upgrades)
    assert not any(API_KEY in line or token in line for line in lines), lines


def test_token_values_are_redacted_however_the_name_is_spelled():
    assert redact_uri("/api/v2/events?token=abc.def&since=3") == "/api/v2/events?token=[redacted]&since=3"
    assert redact_uri("/api/v2/events?since=3&TOKEN=abc") == "/api/v2/events?since=3&TOKEN=[redacted]"
    assert "abc" not in redact_uri("/api/v2/events?tok%65n=abc")  # tornado decodes names: it authenticates
    assert redact_uri("/api/v2/ticket?my_token=1") == "/api/v2/ticket?my_token=1"  # another parameter


# -- the messages --


@pytest.mark.gen_test
async def test_messages_say_what_changed_with_the_etag_a_get_answered(client, base_url):
    ws = await connect(base_url, api_key=API_KEY)
    created = await client.post("/ticket", json_body={"title": "printer", "priority": 5})
    ticket = created.json["id"]
    got_ticket = await client.get(f"/ticket/{ticket}")
    posted = await client.post(f"/ticket/{ticket}/message", json_body={"author": "ann", "body": "on fire"})
    message = posted.json["id"]
    got_message = await client.get(f"/ticket/{ticket}/message/{message}")
    patched = await client.patch(f"/ticket/{ticket}", json_body={"state": "pending"})
    got_patched = await client.get(f"/ticket/{ticket}")
    assert (await client.delete(f"/ticket/{ticket}")).code == 204  # its message goes with it

    live = await receive(ws, 5)
    assert live[:3] == [
        {
            "seq": live[0]["seq"],
            "resource": "ticket",
            "event": "created",
            "id": ticket,
            "etag": got_ticket.headers["ETag"],
        },
        {
            "seq": live[0]["seq"] + 1,
            "resource": "message",
            "event": "created",
            "id": message,
            "ticketId": ticket,
            "etag": got_message.headers["ETag"],
        },
        {
            "seq": live[0]["seq"] + 2,
            "resource": "ticket",
            "event": "updated",
            "id": ticket,
            "etag": got_patched.headers["ETag"],
        },
    ]
    assert created.headers["ETag"] == got_ticket.headers["ETag"] and patched.headers["ETag"] == live[2]["etag"]
    # The delete and its cascade: each recorded, etag null.
    deletes = sorted(live[3:], key=lambda m: m["resource"])
    assert deletes == [
        {
            "seq": deletes[0]["seq"],
            "resource": "message",
            "event": "deleted",
            "id": message,
            "ticketId": ticket,
            "etag": None,
        },
        {"seq": deletes[1]["seq"], "resource": "ticket", "event": "deleted", "id": ticket, "etag": None},
    ]
    assert [m["seq"] for m in live] == list(range(live[0]["seq"], live[0]["seq"] + 5))
    # Over HTTP: the same objects, byte for byte.
    assert await everything(client) == live
    await nothing_more(ws)
    ws.close()


@pytest.mark.gen_test
async def test_resource_narrows_both_forms(client, base_url):
    ws = await connect(base_url, api_key=API_KEY, resource="message")
    both = await connect(base_url, api_key=API_KEY, resource="ticket,message")
    ticket = (await client.post("/ticket", json_body={"title": "t"})).json["id"]
    for i in range(3):
        await client.post(f"/ticket/{ticket}/message", json_body={"author": "a", "body": str(i)})
    await client.patch(f"/ticket/{ticket}", json_body={"title": "u"})
    messages = await receive(ws, 3)
    assert [(m["resource"], m["event"]) for m in messages] == [("message", "created")] * 3
    assert [m["seq"] for m in messages] == [2, 3, 4]
    assert [m["seq"] for m in await receive(both, 5)] == [1, 2, 3, 4, 5]
    assert await everything(client, resource="message") == messages
    assert [m["seq"] for m in await everything(client, resource="ticket")] == [1, 5]
    await nothing_more(ws)
    ws.close()
    both.close()


@pytest.mark.gen_test
async def test_pages_link_to_the_next_and_stop_at_the_end(client):
    for i in range(5):
        await client.post("/ticket", json_body={"title": f"t{i}"})
    first = await client.get("/events?limit=2&resource=ticket")
    assert [m["seq"] for m in first.json] == [1, 2]
    link = first.headers["Link"]
    assert link.endswith('>; rel="next"') and "since=2" in link and "limit=2" in link and "resource=ticket" in link
    last = await client.get("/events?since=4&limit=2")
    assert [m["seq"] for m in last.json] == [5] and "Link" not in last.headers
    empty = await client.get("/events?since=5")
    assert (empty.code, empty.json) == (200, [])
    assert [m["seq"] for m in await everything(client, limit=2)] == [1, 2, 3, 4, 5]
    head = await client.head("/events?limit=2")
    assert head.code == 200 and head.body == b""
    options = await client.options("/events", auth=None)
    assert options.code == 204 and "GET" in options.headers["Allow"]


@pytest.mark.parametrize(
    ("query", "says"),
    [
        ("since=-1", "Invalid since"),
        ("since=abc", "Invalid since"),
        ("since=1.5", "Invalid since"),
        ("since=99999999999999999999", "Invalid since"),
        ("since=1&since=2", "Give since once"),
        ("limit=0", "Invalid limit"),
        ("limit=1001", "Invalid limit"),
        ("limit=x", "Invalid limit"),
        ("resource=bogus", "the feed carries message, ticket"),
        ("resource=", "the feed carries message, ticket"),
        ("resource=ticket,nope", "'nope'"),
    ],
)
@pytest.mark.gen_test
async def test_bad_parameters_are_400_naming_what_is_wrong(client, base_url, query, says):
    r = await client.get("/events?" + query)
    assert r.code == 400 and says in r.json["error"], r.body
    request = tornado.httpclient.HTTPRequest(ws_url(base_url) + f"?api_key={API_KEY}&{query}")
    with pytest.raises(tornado.httpclient.HTTPClientError) as caught:
        await websocket_connect(request)
    assert caught.value.code == 400 and says in json.loads(caught.value.response.body)["error"]


# -- ordering: no gap, no repeat --


@pytest.mark.gen_test(timeout=120)
async def test_eight_concurrent_writers_leave_no_gap(client, base_url):
    live = await connect(base_url, api_key=API_KEY)
    etags: list[str] = []

    async def writer(n: int) -> None:
        for i in range(6):
            r = await client.post("/ticket", json_body={"title": f"w{n}-{i}"})
            assert r.code == 201
            etags.append(r.headers["ETag"])
            ticket = r.json["id"]
            r = await client.patch(f"/ticket/{ticket}", json_body={"priority": 1 + i % 5})
            assert r.code == 200
            etags.append(r.headers["ETag"])
            r = await client.post(f"/ticket/{ticket}/message", json_body={"author": "w", "body": "b"})
            assert r.code == 201
            etags.append(r.headers["ETag"])

    await asyncio.gather(*(writer(n) for n in range(8)))
    total = 8 * 6 * 3
    over_http = await everything(client, limit=7)
    assert [m["seq"] for m in over_http] == list(range(1, total + 1))
    assert sorted(m["etag"] for m in over_http) == sorted(etags)  # every write's change, once
    assert await receive(live, total) == over_http
    backlog = await connect(base_url, api_key=API_KEY, since=0)
    assert await receive(backlog, total) == over_http
    await nothing_more(live)
    live.close()
    backlog.close()


@pytest.mark.gen_test(timeout=60)
async def test_resume_with_since_sends_the_backlog_then_live_without_gap_or_repeat(client, base_url):
    for i in range(5):
        await client.post("/ticket", json_body={"title": f"t{i}"})
    ws = await connect(base_url, api_key=API_KEY, since=2)
    assert [m["seq"] for m in await receive(ws, 3)] == [3, 4, 5]
    await client.post("/ticket", json_body={"title": "live"})
    assert [m["seq"] for m in await receive(ws, 1)] == [6]
    ws.close()
    # Writers busy while sockets resume: each gets everything after its since, exactly once.
    stop = asyncio.Event()

    async def write() -> None:
        while not stop.is_set():
            assert (await client.post("/ticket", json_body={"title": "busy"})).code == 201

    writers = [asyncio.ensure_future(write()) for _ in range(3)]
    sockets = []
    for since in (0, 3, 6):
        sockets.append((since, await connect(base_url, api_key=API_KEY, since=since)))
        await asyncio.sleep(0.02)
    await asyncio.sleep(0.2)
    stop.set()
    await asyncio.gather(*writers)
    last = (await everything(client))[-1]["seq"]
    for since, ws in sockets:
        assert [m["seq"] for m in await receive(ws, last - since)] == list(range(since + 1, last + 1))
        await nothing_more(ws, 0.1)
        ws.close()


@pytest.mark.gen_test
async def test_a_since_past_the_end_is_409_and_closes_the_socket_with_4009(client, base_url):
    await client.post("/ticket", json_body={"title": "t"})
    r = await client.get("/events?since=1000")
    assert r.code == 409 and "past the last seq" in r.json["error"]
    ws = await connect(base_url, api_key=API_KEY, since=1000)
    code, reason, before = await closed(ws)
    assert (code, before) == (4009, []) and "since=1000" in reason


@pytest.mark.gen_test
async def test_changes_older_than_the_retention_are_gone_410_and_4010(client, base_url, app, clock):
    for i in range(3):
        await client.post("/ticket", json_body={"title": f"old{i}"})
    api = api_of(app)
    clock.now = time.time() + api.settings.events_retention + 60  # every change so far is past the retention
    await api.purge_expired()
    await client.post("/ticket", json_body={"title": "new"})
    r = await client.get("/events?since=0")
    assert r.code == 410
    assert "re-list" in r.json["error"] and "7 days" in r.json["error"] and "seq 3" in r.json["error"]
    assert [m["seq"] for m in (await client.get("/events?since=3")).json] == [4]
    ws = await connect(base_url, api_key=API_KEY, since=1)
    code, reason, before = await closed(ws)
    assert (code, before) == (4010, []) and "retention" in reason and "re-list" in reason
    ws = await connect(base_url, api_key=API_KEY, since=3)
    assert [m["seq"] for m in await receive(ws, 1)] == [4]
    ws.close()


# -- across apps, processes and daemons --


@pytest.fixture
def second_app(io_loop, settings, clock):
    """Start another app on the same database, with a store (and connections) of its own."""
    started = []

    async def start() -> str:
        store = store_from_url(settings.database_url)
        await store.open(declarations_for(settings))
        app = make_app(settings, store, clock=clock)
        sock, port = tornado.testing.bind_unused_port()
        server = tornado.httpserver.HTTPServer(app)
        server.add_sockets([sock])
        started.append((server, app, store))
        return f"http://127.0.0.1:{port}"

    yield start
    for server, app, store in started:
        server.stop()
        io_loop.run_sync(api_of(app).close_feed)
        io_loop.run_sync(store.close)


@pytest.mark.gen_test(timeout=60)
async def test_a_change_made_through_one_app_reaches_sockets_on_another(client, base_url, second_app):
    other = await second_app()
    here = await connect(base_url, api_key=API_KEY)
    there = await connect(other, api_key=API_KEY)
    for i in range(4):
        await client.post("/ticket", json_body={"title": f"a{i}"})
    b = Client(client.http, other)
    for i in range(4):
        await b.post("/ticket", json_body={"title": f"b{i}"})
    want = list(range(1, 9))
    assert [m["seq"] for m in await receive(here, 8)] == want
    assert [m["seq"] for m in await receive(there, 8)] == want
    here.close()
    there.close()


# -- the server's side: shutdown, slow clients, origins --


@pytest.mark.gen_test
async def test_closing_the_feed_closes_sockets_with_1001(client, base_url, app):
    ws = await connect(base_url, api_key=API_KEY)
    await client.post("/ticket", json_body={"title": "t"})
    await receive(ws, 1)
    await api_of(app).close_feed()
    code, reason, _ = await closed(ws)
    assert code == 1001 and "since=" in reason
    assert api_of(app).feed.listeners == 0


class RawSocket:
    """A WebSocket client that sends the upgrade, reads the answer's head, then reads only when told."""

    def __init__(self, port: int) -> None:
        self.sock = socket.socket()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # a small window: the server's writes stall
        self.sock.connect(("127.0.0.1", port))
        key = b64encode(b"0123456789abcdef").decode()
        self.sock.sendall(
            (
                f"GET /api/v2/events?api_key={API_KEY} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
                f"Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
                "Sec-WebSocket-Version: 13\r\n\r\n"
            ).encode()
        )
        self.data = b""

    async def head(self) -> bytes:
        loop = asyncio.get_running_loop()
        self.sock.setblocking(False)
        while b"\r\n\r\n" not in self.data:
            self.data += await asyncio.wait_for(loop.sock_recv(self.sock, 4096), WAIT)
        head, _, self.data = self.data.partition(b"\r\n\r\n")
        return head

    async def close_frame(self) -> tuple[int, str]:
        """Read every frame until the close frame; return its code and reason."""
        loop = asyncio.get_running_loop()
        while True:
            while len(self.data) < 2 or len(self.data) < self._frame_end():
                chunk = await asyncio.wait_for(loop.sock_recv(self.sock, 65536), WAIT)
                assert chunk, "the connection ended without a close frame"
                self.data += chunk
            end = self._frame_end()
            frame, self.data = self.data[:end], self.data[end:]
            if frame[0] & 0x0F == 0x8:
                payload = frame[2:]
                return struct.unpack("!H", payload[:2])[0], payload[2:].decode()

    def _frame_end(self) -> int:
        size = self.data[1] & 0x7F
        if size == 126:
            return 4 + struct.unpack("!H", self.data[2:4])[0] if len(self.data) >= 4 else 1 << 30
        if size == 127:
            return 10 + struct.unpack("!Q", self.data[2:10])[0] if len(self.data) >= 10 else 1 << 30
        return 2 + size


@pytest.mark.gen_test(timeout=120)
async def test_a_client_that_does_not_read_is_closed_with_4008_within_the_bound(http_server, base_url, app, store):
    api = api_of(app)
    bound = 16 * 1024
    api.event_socket_options = {"max_pending": bound}
    raw = RawSocket(int(base_url.rsplit(":", 1)[1]))
    assert (await raw.head()).startswith(b"HTTP/1.1 101")
    deadline = time.monotonic() + WAIT
    while api.feed.listeners == 0:
        assert time.monotonic() < deadline
        await asyncio.sleep(0.01)
    (listener,) = [one for group in api.feed._groups.values() for one in group]
    listener.stream.socket.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
    most = 0
    written = 0
    while not listener.closed:
        assert written < 20000, "never cut off"
        for _ in range(20):
            await store.insert_row(TICKET, {"title": "x" * 10}, time.time())
        written += 20
        await asyncio.sleep(0.012)  # the poller's turn
        if not listener.closed:  # (once closed, the close frame goes after what waits, past the bound)
            most = max(most, len(listener.stream._write_buffer))
    assert most <= bound  # what waited for the client stayed within the bound
    assert api.feed.listeners == 0
    code, reason = await raw.close_frame()  # reading at last: the close frame comes after what waited
    assert code == 4008 and "too slow" in reason and "since=" in reason
    # The client never answers the close: the server drops the connection a few seconds later.
    deadline = time.monotonic() + 8
    while not listener.stream.closed():
        assert time.monotonic() < deadline, "the connection was never dropped"
        await asyncio.sleep(0.05)
    raw.sock.close()


class TestOrigins:
    @pytest.fixture
    def config_values(self, config_values):
        return {**config_values, "API": {"cors_origins": "http://app.example"}}

    @pytest.mark.gen_test
    async def test_other_origins_open_it_exactly_when_cors_allows_them(self, http_server, base_url):
        host = base_url.split("://", 1)[1]
        for origin in ("http://app.example", f"http://{host}"):
            ws = await connect(base_url, {"Origin": origin}, api_key=API_KEY)
            ws.close()
        error = await refused(base_url, {"Origin": "http://evil.example"}, api_key=API_KEY)
        assert error.code == 403 and "cors_origins" in json.loads(error.response.body)["error"]
        # A browser would send its remembered Basic credentials along: not from another origin.
        basic = "Basic " + b64encode(b"medusa:correct horse battery staple").decode()
        assert (await refused(base_url, {"Origin": "http://app.example", "Authorization": basic})).code == 403
        ws = await connect(base_url, {"Origin": f"http://{host}", "Authorization": basic})
        ws.close()

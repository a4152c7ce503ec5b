"""/metrics: Prometheus text, with credentials under the API or on its own listener, summed across workers."""

from __future__ import annotations

import asyncio
import json
import os
import socket
import stat
import time
import urllib.request
from pathlib import Path

import pytest
import tornado.httpclient
import tornado.httpserver
import tornado.netutil
from conftest import API_KEY
from daemon_process import Daemon
from prometheus_client.parser import text_string_to_metric_families
from tornado.websocket import websocket_connect

from medusa_v2 import metrics
from medusa_v2.metrics_endpoint import listener_app
from medusa_v2.transfer import import_jsonl

pytestmark = pytest.mark.stores("sqlite", "postgresql")

ITEM = "/api/v2/ticket/{ticket_id}"


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample of an exposition, by name and sorted labels (parsing it checks the format)."""
    found = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            found[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return found


def value(found, name: str, **labels: str) -> float:
    return found.get((name, tuple(sorted(labels.items()))), 0.0)


def total(found, name: str, **labels: str) -> float:
    """The sum of a metric's samples whose labels include `labels`."""
    wanted = set(labels.items())
    return sum(v for (n, got), v in found.items() if n == name and wanted <= set(got))


async def scrape(client) -> dict:
    r = await client.get("/metrics")
    assert r.code == 200, r.body
    assert r.headers["Content-Type"].startswith("text/plain; version=")
    return samples(r.body.decode())


@pytest.mark.gen_test
async def test_metrics_need_credentials(client, jwt_client):
    r = await client.get("/metrics", auth=None)
    assert r.code == 401
    assert r.json == {"error": "No authorization token."}
    assert r.headers["Content-Type"] == "application/json; charset=UTF-8"
    bad = await client.get("/metrics", auth=None, headers={"X-Api-Key": "wrong"})
    assert bad.code == 401 and "error" in bad.json
    assert (await jwt_client.get("/metrics")).code == 200
    assert (await client.get(f"/metrics?api_key={API_KEY}", auth=None)).code == 200
    r = await client.get("/metrics")
    assert r.code == 200 and r.headers["X-Request-ID"]
    assert "medusa_v2_http_requests_total" in r.body.decode()


@pytest.mark.gen_test
async def test_requests_are_counted_by_route_template_and_status(client):
    created = await client.post("/ticket", json_body={"title": "counted"})
    ticket = created.json["id"]
    before = await scrape(client)
    for _ in range(3):
        assert (await client.get(f"/ticket/{ticket}")).code == 200
    assert (await client.get("/ticket/99999999")).code == 404
    assert (await client.get(f"/ticket/{ticket}", auth=None)).code == 401
    assert (await client.get("/no/such/path", auth=None)).code == 404
    after = await scrape(client)

    def moved(name, **labels):
        return value(after, name, **labels) - value(before, name, **labels)

    assert moved("medusa_v2_http_requests_total", method="GET", route=ITEM, status="200") == 3
    assert moved("medusa_v2_http_requests_total", method="GET", route=ITEM, status="404") == 1
    assert moved("medusa_v2_http_requests_total", method="GET", route=ITEM, status="401") == 1
    assert moved("medusa_v2_http_requests_total", method="GET", route="(unmatched)", status="404") == 1
    assert moved("medusa_v2_http_request_duration_seconds_count", method="GET", route=ITEM) == 5
    assert moved("medusa_v2_http_request_duration_seconds_bucket", method="GET", route=ITEM, le="+Inf") == 5
    assert moved("medusa_v2_http_requests_total", method="GET", route="/api/v2/metrics", status="200") == 1
    # Raw paths never become labels: the cardinality stays that of the URL table.
    routes = {dict(labels).get("route") for (name, labels) in after if name == "medusa_v2_http_requests_total"}
    assert not any(str(ticket) in route or "99999999" in route or "no/such" in route for route in routes), routes


@pytest.mark.gen_test
async def test_collection_and_nested_routes_have_their_templates(client):
    ticket = (await client.post("/ticket", json_body={"title": "nested"})).json["id"]
    before = await scrape(client)
    await client.get("/ticket")
    await client.post(f"/ticket/{ticket}/message", json_body={"body": "hi", "author": "me"})
    await client.request("PROPFIND", "/ticket")
    after = await scrape(client)
    assert (
        total(after, "medusa_v2_http_requests_total", route="/api/v2/ticket")
        - total(before, "medusa_v2_http_requests_total", route="/api/v2/ticket")
        == 2
    )
    assert value(after, "medusa_v2_http_requests_total", method="OTHER", route="/api/v2/ticket", status="405") >= 1
    nested = "/api/v2/ticket/{ticket_id}/message"
    assert (
        value(after, "medusa_v2_http_requests_total", method="POST", route=nested, status="201")
        - value(before, "medusa_v2_http_requests_total", method="POST", route=nested, status="201")
        == 1
    )


@pytest.mark.gen_test(timeout=30)
async def test_event_sockets_and_the_events_sent_are_counted(client, base_url):
    before = await scrape(client)
    url = base_url.replace("http://", "ws://", 1) + f"/api/v2/events?api_key={API_KEY}"
    sockets = [await websocket_connect(url) for _ in range(2)]
    for title in ("a", "b", "c"):
        assert (await client.post("/ticket", json_body={"title": title})).code == 201
    for ws in sockets:
        for _ in range(3):
            assert await asyncio.wait_for(ws.read_message(), 10) is not None
    during = await scrape(client)
    assert value(during, "medusa_v2_websockets_open") - value(before, "medusa_v2_websockets_open") == 2
    assert value(during, "medusa_v2_events_sent_total") - value(before, "medusa_v2_events_sent_total") == 6
    sockets[0].close()
    deadline = time.monotonic() + 10
    while value(await scrape(client), "medusa_v2_websockets_open") != value(before, "medusa_v2_websockets_open") + 1:
        assert time.monotonic() < deadline, "a closed socket is still counted"
        await asyncio.sleep(0.05)
    sockets[1].close()


@pytest.mark.gen_test
async def test_the_stores_pool_is_shown_on_postgresql(client, database_backend):
    found = await scrape(client)
    if database_backend == "postgresql":
        assert value(found, "medusa_v2_store_pool_connections") >= 1
        assert value(found, "medusa_v2_store_pool_available") <= value(found, "medusa_v2_store_pool_connections")
        assert ("medusa_v2_store_pool_waiting", ()) in found
    else:
        assert ("medusa_v2_store_pool_connections", ()) in found  # declared, never set without a pool


@pytest.mark.gen_test
async def test_an_import_counts_its_rows(client, store):
    before = await scrape(client)
    at = {"createdAt": "2024-01-01T00:00:00.000000Z", "updatedAt": "2024-01-01T00:00:00.000000Z"}
    message = {"id": 920001, "body": "x", "author": "me", **at}
    lines = [
        json.dumps({"id": 910001, "title": "a", "messages": [message], **at}).encode(),
        json.dumps({"id": 910002, "title": "b", **at}).encode(),
    ]
    assert await import_jsonl(store, lines) == {"ticket": 2, "message": 1}
    after = await scrape(client)
    assert value(after, "medusa_v2_import_rows_total") - value(before, "medusa_v2_import_rows_total") == 3
    assert value(after, "medusa_v2_imports_running") == value(before, "medusa_v2_imports_running")


@pytest.mark.gen_test
async def test_the_listener_serves_metrics_without_credentials(store, http_client):
    sockets = tornado.netutil.bind_sockets(0, "127.0.0.1")
    server = tornado.httpserver.HTTPServer(listener_app(lambda: metrics.observe_store(store)))
    server.add_sockets(sockets)
    base = f"http://127.0.0.1:{sockets[0].getsockname()[1]}"
    try:
        r = await http_client.fetch(base + "/metrics", headers={"X-Request-ID": "scrape-1"})
        assert r.code == 200 and r.headers["X-Request-ID"] == "scrape-1"
        assert "medusa_v2_http_requests_total" in {
            f.name + "_total" for f in text_string_to_metric_families(r.body.decode())
        }
        other = await http_client.fetch(base + "/api/v2/ticket", raise_error=False)
        assert other.code == 404 and "error" in json.loads(other.body)
        post = await http_client.fetch(base + "/metrics", method="POST", body=b"", raise_error=False)
        assert post.code == 405 and "error" in json.loads(post.body) and post.headers["X-Request-ID"]
    finally:
        server.stop()


# -- a real daemon with two worker processes --------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def get(url: str, headers: dict | None = None) -> tuple[int, dict, bytes]:
    request = urllib.request.Request(url, headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=10) as r:  # a new connection each time
            return r.status, {k.lower(): v for k, v in r.headers.items()}, r.read()
    except urllib.error.HTTPError as e:
        return e.code, {k.lower(): v for k, v in e.headers.items()}, e.read()


def test_two_workers_are_summed_whichever_answers(tmp_path, monkeypatch, database_url):
    key = "0123456789abcdef0123456789abcdef"
    metrics_port = free_port()
    config = tmp_path / "config.ini"
    config.write_text(
        f"[General]\napi_key = {key}\nlog_format = json\n[API]\nprocesses = 2\nmetrics_port = {metrics_port}\n"
        f"[Database]\nurl = {database_url}\n"
    )
    scratch = tmp_path / "tmp"
    scratch.mkdir()
    monkeypatch.setenv("TMPDIR", str(scratch))  # where the daemon makes its private metrics directory
    daemon = Daemon(config)
    try:
        made = list(scratch.glob("medusa_v2-metrics-*"))
        assert len(made) == 1 and stat.S_IMODE(made[0].stat().st_mode) == 0o700
        listener = f"http://127.0.0.1:{metrics_port}/metrics"
        n = 40
        for i in range(n):
            status, headers, _ = get(daemon.url("/health"), {"X-Request-ID": f"probe-{i}"})
            assert status == 200 and headers["x-request-id"] == f"probe-{i}"
        # A worker counts a request once its answer is written: the last one may be a moment late.
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            found = samples(get(listener)[2].decode())
            if total(found, "medusa_v2_http_requests_total", route="/api/v2/health") == n:
                break
            time.sleep(0.05)
        for url, headers in ((listener, {}), (daemon.url("/metrics"), {"X-Api-Key": key})):
            for _ in range(4):  # several scrapes: whichever worker answers, the sum is the same
                status, _, body = get(url, headers)
                assert status == 200, body
                found = samples(body.decode())
                assert total(found, "medusa_v2_http_requests_total", route="/api/v2/health") == n
                assert (
                    value(found, "medusa_v2_http_request_duration_seconds_count", method="GET", route="/api/v2/health")
                    == n
                )
        status, _, body = get(daemon.url("/metrics"))
        assert status == 401 and json.loads(body) == {"error": "No authorization token."}
        # In flight: the scrape itself, in whichever worker answers it; the other one, idle now,
        # says 0 within a second (each worker samples its gauges every second).
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            _, _, body = get(daemon.url("/metrics"), {"X-Api-Key": key})
            if value(samples(body.decode()), "medusa_v2_http_requests_in_flight") == 1:
                break
            time.sleep(0.1)
        assert value(samples(body.decode()), "medusa_v2_http_requests_in_flight") == 1
    finally:
        assert daemon.stop() == 0
    lines = [line for line in daemon.lines if line.strip()]
    docs = [json.loads(line) for line in lines]  # log_format = json: every line is one object
    access = [d for d in docs if d["logger"] == "medusa_v2.access" and d["path"] == "/api/v2/health"]
    assert sorted(d["request_id"] for d in access) == sorted(f"probe-{i}" for i in range(n))
    assert len({d["pid"] for d in docs if d["logger"] == "medusa_v2.access"}) >= 1
    assert not list(scratch.glob("medusa_v2-metrics-*"))  # removed at exit
    assert key not in "".join(lines)


def test_a_metrics_port_that_cannot_be_bound_stops_the_daemon(tmp_path):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        config = tmp_path / "config.ini"
        config.write_text(f"[API]\nmetrics_port = {port}\n")
        env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parent.parent)}
        import subprocess
        import sys

        from daemon_process import LAUNCHER

        result = subprocess.run(
            [sys.executable, str(LAUNCHER), "serve", "--config", str(config), "--port", "0"],
            capture_output=True,
            text=True,
            env=env,
            timeout=30,
        )
    assert result.returncode == 1
    assert f"cannot listen on 127.0.0.1:{port} ([API] metrics_host, metrics_port)" in result.stderr

"""The change feed across processes and daemons (real `medusa-v2 serve` subprocesses), and their shutdown."""

from __future__ import annotations

import asyncio
import json
import re
import signal
import subprocess
from pathlib import Path

import pytest
import tornado.httpclient
from conftest import API_KEY
from daemon_process import Daemon
from test_shared_state import write_config
from tornado.websocket import WebSocketClientConnection, websocket_connect

WAIT = 15.0


@pytest.fixture
def daemons():
    started: list[Daemon] = []

    def start(config: Path) -> Daemon:
        d = Daemon(config, new_session=True)  # its own process group: its workers go with it
        started.append(d)
        return d

    yield start
    for d in started:
        if d.proc.poll() is None:
            try:
                d.stop(timeout=10)
            except subprocess.TimeoutExpired:
                d.signal_group(signal.SIGKILL)
                d.proc.wait()


async def connect(d: Daemon, **query: str) -> WebSocketClientConnection:
    query = {"api_key": API_KEY, **query}
    url = f"ws://127.0.0.1:{d.port}/api/v2/events?" + "&".join(f"{k}={v}" for k, v in query.items())
    return await asyncio.wait_for(websocket_connect(url), WAIT)


async def post_ticket(d: Daemon, title: str) -> int:
    # `Connection: close`: each request is a new connection, which any worker may accept.
    r = await tornado.httpclient.AsyncHTTPClient().fetch(
        d.url("/ticket"),
        method="POST",
        body=json.dumps({"title": title}),
        headers={"X-Api-Key": API_KEY, "Content-Type": "application/json", "Connection": "close"},
    )
    assert r.code == 201
    return int(json.loads(r.body)["id"])


async def seqs(ws: WebSocketClientConnection, count: int, *ds: Daemon) -> list[int]:
    out = []
    for _ in range(count):
        try:
            text = await asyncio.wait_for(ws.read_message(), WAIT)
        except TimeoutError:
            raise AssertionError(f"only {out} came; {[d.stderr for d in ds]}") from None
        assert text is not None, f"closed: {ws.close_code} {ws.close_reason}"
        out.append(json.loads(text)["seq"])
    return out


def pids_of(d: Daemon, pattern: str) -> set[int]:
    """Return the worker pids whose access-log lines match `pattern`."""
    return {int(m.group(1)) for line in d.lines if (m := re.search(r"\[(\d+)\] medusa_v2\.access: " + pattern, line))}


@pytest.mark.gen_test(timeout=90)
async def test_every_process_of_a_daemon_on_sqlite_sees_every_change(tmp_path, daemons):
    d = daemons(write_config(tmp_path / "config.ini", f"sqlite:///{tmp_path / 'feed.db'}", processes="2"))
    sockets = []
    # Sockets until both workers hold some (each connection goes to whichever worker accepts it).
    while len(pids_of(d, "GET /api/v2/events.* 101 ")) < 2:
        assert len(sockets) < 60, d.stderr
        sockets.append(await connect(d))
        await asyncio.sleep(0.05)
    # Writes until both workers wrote, or 60 (which worker accepts a connection is the
    # kernel's choice): both hold sockets, so some socket gets another worker's changes.
    writes = 0
    while len(pids_of(d, "POST /api/v2/ticket 201 ")) < 2 and writes < 60:
        await post_ticket(d, f"t{writes}")
        writes += 1
        await asyncio.sleep(0.02)
    for ws in sockets:
        assert await seqs(ws, writes) == list(range(1, writes + 1))
        ws.close()


@pytest.mark.stores("postgresql")
@pytest.mark.gen_test(timeout=90)
async def test_a_change_through_daemon_a_reaches_a_socket_on_daemon_b(tmp_path, database_url, daemons):
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    a = daemons(write_config(tmp_path / "a" / "config.ini", database_url))
    b = daemons(write_config(tmp_path / "b" / "config.ini", database_url))
    on_a, on_b = await connect(a), await connect(b)
    for i in range(3):
        await post_ticket(a, f"a{i}")
        await post_ticket(b, f"b{i}")
    assert await seqs(on_b, 6, a, b) == [1, 2, 3, 4, 5, 6]
    assert await seqs(on_a, 6, a, b) == [1, 2, 3, 4, 5, 6]
    late = await connect(b, since="2")  # resumed on B, from a seq A's client saw
    assert await seqs(late, 4) == [3, 4, 5, 6]
    for ws in (on_a, on_b, late):
        ws.close()


@pytest.mark.gen_test(timeout=60)
async def test_stopping_the_daemon_closes_its_sockets_with_1001(tmp_path, daemons):
    d = daemons(write_config(tmp_path / "config.ini", f"sqlite:///{tmp_path / 'feed.db'}"))
    ws = await connect(d)
    await post_ticket(d, "t")
    assert await seqs(ws, 1) == [1]
    d.proc.send_signal(signal.SIGTERM)
    assert await asyncio.wait_for(ws.read_message(), WAIT) is None
    assert ws.close_code == 1001 and "since=" in (ws.close_reason or "")
    assert await asyncio.get_running_loop().run_in_executor(None, d.proc.wait, WAIT) == 0

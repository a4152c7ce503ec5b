"""State shared through the store: apps, daemons and workers on one database act as one.

Revocations, login throttling, idempotency keys and rows are seen by every one of them.

In-process apps run on both stores; the daemon tests start real subprocesses.
"""

from __future__ import annotations

import asyncio
import json
import multiprocessing
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import tornado.httpserver
import tornado.testing
from conftest import API_KEY, PASSWORD, USERNAME, Client
from test_daemon import PID_RESOURCE, Daemon

from medusa_v2.app import make_app
from medusa_v2.store import store_from_url

BOTH = pytest.mark.stores("sqlite", "postgresql")
THROTTLE = {"login_max_failures": 3, "login_window": 60}


@pytest.fixture
def overrides():
    return {}


@pytest.fixture
def settings(settings, overrides):
    return settings.replace(**overrides)


@pytest.fixture
def second_app(io_loop, http_client, settings, clock):
    """Start another app on the same database with a Store object (and pool) of its own."""
    started = []

    async def start() -> Client:
        store = store_from_url(settings.database_url)
        await store.open()
        app = make_app(settings, store, clock=clock)
        sock, port = tornado.testing.bind_unused_port()
        server = tornado.httpserver.HTTPServer(app)
        server.add_sockets([sock])
        started.append((server, store))
        return Client(http_client, f"http://127.0.0.1:{port}", settings.web_root + "/api/v2")

    yield start
    for server, store in started:
        server.stop()
        io_loop.run_sync(store.close)


async def login(client, **body):
    return await client.post("/authenticate", json_body={"username": USERNAME, "password": PASSWORD, **body}, auth=None)


@BOTH
@pytest.mark.gen_test
async def test_a_token_revoked_on_a_is_refused_by_b(client, second_app, database_backend):
    b = await second_app()
    token = (await login(client)).json["token"]
    other = (await login(b)).json["token"]
    bearer = {"x-auth": f"Bearer {token}"}
    assert (await b.get("/ticket", headers=bearer, auth=None)).code == 200
    assert (await client.delete("/authenticate", headers=bearer, auth=None)).code == 204
    # Refused at once where it was revoked. On PostgreSQL the other processes learn it
    # by NOTIFY, about a millisecond after the COMMIT; on SQLite they read the file.
    r = await client.get("/ticket", headers=bearer, auth=None)
    assert (r.code, r.json) == (401, {"error": "Invalid token."})
    deadline = time.monotonic() + (2 if database_backend == "postgresql" else 0)
    while (r := await b.get("/ticket", headers=bearer, auth=None)).code == 200 and time.monotonic() < deadline:
        await asyncio.sleep(0.005)
    assert (r.code, r.json) == (401, {"error": "Invalid token."})
    for c in (client, b):
        assert (await c.get("/ticket", headers={"x-auth": f"Bearer {other}"}, auth=None)).code == 200


@BOTH
@pytest.mark.parametrize("overrides", [THROTTLE])
@pytest.mark.gen_test
async def test_a_login_throttled_on_a_is_throttled_on_b(client, second_app, clock):
    b = await second_app()
    for c in (client, b, client):  # failures counted wherever they happen
        assert (await login(c, password="wrong")).code == 401
    for c in (b, client):
        r = await login(c)
        assert r.code == 429 and 1 <= int(r.headers["Retry-After"]) <= 60
    clock.advance(61)
    assert (await login(b)).code == 200


@BOTH
@pytest.mark.gen_test
async def test_an_idempotency_key_used_on_a_replays_on_b(client, second_app):
    b = await second_app()
    key = {"Idempotency-Key": "shared-key-1"}
    first = await client.post("/ticket", json_body={"title": "once"}, headers=key)
    assert first.code == 201
    again = await b.post("/ticket", json_body={"title": "once"}, headers=key)
    assert (again.code, again.json) == (201, first.json)
    # The same resource, at the origin the replaying request used (B's own).
    assert again.headers["Location"] == b.base + f"/api/v2/ticket/{first.json['id']}"
    other = await b.post("/ticket", json_body={"title": "another"}, headers=key)
    assert other.code == 422
    listed = await b.get("/ticket")
    assert [t["id"] for t in listed.json] == [first.json["id"]]


@BOTH
@pytest.mark.gen_test
async def test_rows_written_on_a_are_read_on_b_and_ids_never_collide(client, second_app):
    b = await second_app()
    made = []
    for i in range(6):
        r = await (client if i % 2 else b).post("/ticket", json_body={"title": f"t{i}"})
        assert r.code == 201
        made.append(r.json["id"])
    assert made == [1, 2, 3, 4, 5, 6]
    assert (await client.delete("/ticket/6")).code == 204
    assert (await b.post("/ticket", json_body={"title": "next"})).json["id"] == 7
    r = await b.get("/ticket/3")
    assert r.code == 200 and r.headers["ETag"] == (await client.get("/ticket/3")).headers["ETag"]


# -- daemons (subprocesses) --


def write_config(path: Path, database_url: str, **api: str) -> Path:
    lines = [
        "[General]",
        f"api_key = {API_KEY}",
        "encryption_secret = " + "e" * 64,
        f"web_username = {USERNAME}",
        f"web_password = {PASSWORD}",
        "[Database]",
        f"url = {database_url}",
        "[API]",
        *(f"{k} = {v}" for k, v in api.items()),
    ]
    path.write_text("\n".join(lines) + "\n")
    return path


@pytest.fixture
def daemons():
    started: list[Daemon] = []

    def start(config: Path) -> Daemon:
        d = Daemon(config)
        started.append(d)
        return d

    yield start
    for d in started:
        if d.proc.poll() is None:
            d.proc.kill()
            d.proc.wait()


KEY = {"X-Api-Key": API_KEY}


@pytest.mark.stores("postgresql")
def test_two_daemons_on_postgresql_share_revocations_and_rows(tmp_path, database_url, daemons):
    a_dir, b_dir = tmp_path / "a", tmp_path / "b"
    a_dir.mkdir()
    b_dir.mkdir()
    a = daemons(write_config(a_dir / "config.ini", database_url))
    b = daemons(write_config(b_dir / "config.ini", database_url))
    status, _, body = a.request("/authenticate", method="POST", body={"username": USERNAME, "password": PASSWORD})
    assert status == 200
    bearer = {"X-Auth": "Bearer " + json.loads(body)["token"]}
    assert b.request("/ticket", headers=bearer)[0] == 200
    assert a.request("/authenticate", method="DELETE", headers=bearer)[0] == 204
    status, _, body = b.request("/ticket", headers=bearer)
    assert (status, json.loads(body)) == (401, {"error": "Invalid token."})

    status, headers, body = a.request("/ticket", method="POST", body={"title": "from a"}, headers=KEY)
    assert status == 201
    status, _, got = b.request(f"/ticket/{json.loads(body)['id']}", headers=KEY)
    assert status == 200 and json.loads(got)["title"] == "from a"
    assert a.stop() == 0 and b.stop() == 0
    assert "Traceback" not in a.stderr + b.stderr


def _post_burst(d: Daemon, count: int, threads: int) -> list[tuple[int, dict, bytes]]:
    def post(i: int):
        return d.request("/ticket", method="POST", body={"title": f"burst {i}"}, headers={**KEY, "Connection": "close"})

    with ThreadPoolExecutor(threads) as pool:
        return list(pool.map(post, range(count)))


def _check_burst(d: Daemon, results) -> None:
    created = []
    for status, headers, body in results:
        assert status in (201, 503), (status, body)
        if status == 503:
            assert headers.get("Retry-After", "").isdigit(), headers
        else:
            created.append(json.loads(body)["id"])
    assert len(set(created)) == len(created)  # no id handed out twice
    for ticket_id in created:  # every 201 was committed
        assert d.request(f"/ticket/{ticket_id}", headers=KEY)[0] == 200
    assert created, "no request succeeded"


def _pids(d: Daemon, want: int = 2) -> set[int]:
    pids: set[int] = set()
    deadline = time.monotonic() + 15
    while len(pids) < want and time.monotonic() < deadline:
        status, _, body = d.request("/pid/1", headers={**KEY, "Connection": "close"})
        assert status == 200
        pids.add(json.loads(body)["pid"])
    return pids


@pytest.mark.stores("sqlite", "postgresql")
def test_processes_2_concurrent_writes_are_201_or_503_never_500(tmp_path, database_url, daemons):
    (tmp_path / "pidres.py").write_text(PID_RESOURCE)
    d = daemons(write_config(tmp_path / "config.ini", database_url, processes="2", extra_handlers="pidres:Pid"))
    assert "with 2 process(es)" in d.stderr
    assert len(_pids(d)) == 2  # both workers serve (each with its own store connections)
    results = _post_burst(d, 120, 12)
    _check_burst(d, results)
    status, headers, _ = d.request("/ticket?limit=1", headers=KEY)
    assert status == 200 and int(headers["X-Pagination-Count"]) == sum(1 for r in results if r[0] == 201)
    assert d.stop() == 0
    assert "Traceback" not in d.stderr


def _sqlite_writer(url: str, worker: int, count: int, queue) -> None:
    import asyncio

    from medusa_v2.resources.ticket import TICKET
    from medusa_v2.store import StoreUnavailable

    async def main():
        store = store_from_url(url)
        await store.open()
        outcomes = []
        for i in range(count):
            try:
                row = await store.insert_row(TICKET, {"title": f"w{worker}-{i}"}, time.time())
                outcomes.append(("ok", row["id"]))
                await store.update_row(TICKET, row["id"], {"priority": 1 + i % 5}, time.time())
                await store.claim_idempotency_key(
                    "s", f"{worker}-{i}", "f", time.time(), expire_before=0, stale_before=0
                )
            except StoreUnavailable:
                outcomes.append(("busy", None))
            except Exception as exc:  # anything else would be a 500
                outcomes.append(("error", repr(exc)))
        await store.close()
        return outcomes

    queue.put(asyncio.run(main()))


def test_sqlite_writers_in_several_processes_never_fail_other_than_unavailable(tmp_path, io_loop):
    url = f"sqlite:///{tmp_path / 'shared.db'}"
    store = store_from_url(url)
    io_loop.run_sync(store.open)  # migrated once, as the daemon's parent does
    context = multiprocessing.get_context("fork")
    queue = context.Queue()
    workers = [context.Process(target=_sqlite_writer, args=(url, w, 60, queue)) for w in range(4)]
    for p in workers:
        p.start()
    outcomes = [o for _ in workers for o in queue.get(timeout=120)]
    for p in workers:
        p.join(30)
    assert not [o for o in outcomes if o[0] == "error"], outcomes
    created = [i for kind, i in outcomes if kind == "ok"]
    assert len(created) == len(set(created))
    from medusa_v2.resources.ticket import TICKET

    for ticket_id in created:
        io_loop.run_sync(lambda ticket_id=ticket_id: store.get_row(TICKET, ticket_id))
    io_loop.run_sync(store.close)


def test_sqlite_busy_anywhere_in_a_transaction_is_unavailable(tmp_path, io_loop):
    """A lock held past the busy timeout, met mid-transaction, is StoreUnavailable (503), not a 500."""
    import sqlite3

    from medusa_v2.resources.ticket import TICKET
    from medusa_v2.store import StoreUnavailable
    from medusa_v2.store.sqlite.connection import _busy

    url = f"sqlite:///{tmp_path / 'busy.db'}"
    store = store_from_url(url)
    io_loop.run_sync(store.open)
    store.db.execute("PRAGMA busy_timeout = 50")
    blocker = sqlite3.connect(str(tmp_path / "busy.db"), isolation_level=None)
    blocker.execute("BEGIN IMMEDIATE")
    try:
        with pytest.raises(StoreUnavailable):
            io_loop.run_sync(lambda: store.insert_row(TICKET, {"title": "t"}, 0.0))

        # Busy inside the transaction body (here: simulated on the first statement).
        class Busy(sqlite3.OperationalError):
            sqlite_errorcode = sqlite3.SQLITE_BUSY

        blocker.execute("ROLLBACK")
        with pytest.raises(StoreUnavailable), store.transaction():
            raise Busy("database is locked")
        assert not store.db.in_transaction
        assert _busy(sqlite3.OperationalError("database is locked"))
    finally:
        if blocker.in_transaction:
            blocker.execute("ROLLBACK")
        blocker.close()
    assert io_loop.run_sync(lambda: store.insert_row(TICKET, {"title": "t"}, 0.0))["id"] == 1
    io_loop.run_sync(store.close)

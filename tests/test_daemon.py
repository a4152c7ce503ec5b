"""The daemon and command line, run as real subprocesses."""

from __future__ import annotations

import collections
import contextlib
import http.client
import json
import os
import re
import signal
import socket
import stat
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from daemon_process import LAUNCHER, ROOT, Daemon  # noqa: E402  (tests/ is on sys.path)

import medusa_v2


def run_cli(*args: str, cwd: Path, stdin: str | None = None, timeout: float = 30) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, str(LAUNCHER), *args],
        cwd=cwd,
        input=stdin,
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, "PYTHONPATH": os.pathsep.join([str(cwd), str(ROOT)])},
    )


@pytest.fixture
def daemon_factory():
    started: list[Daemon] = []

    def start(config: Path, *extra: str, command: tuple[str, ...] | None = None) -> Daemon:
        d = Daemon(config, *extra, command=command)
        started.append(d)
        return d

    yield start
    for d in started:
        if d.proc.poll() is None:
            d.proc.kill()
            d.proc.wait()


def test_version_flag(tmp_path):
    result = run_cli("--version", cwd=tmp_path)
    assert result.returncode == 0
    assert result.stdout.strip() == f"medusa-v2 {medusa_v2.__version__}"


@pytest.mark.parametrize(
    ("text", "key"),
    [
        ("[General]\nweb_port = notaport\n", "web_port"),
        ("[General]\nweb_port = 70000\n", "web_port"),
        ("[General]\nweb_use_gzip = maybe\n", "web_use_gzip"),
        ("[API]\nmax_body_size = -1\n", "max_body_size"),
        ("[API]\nresources = ticket, nosuchthing\n", "resources"),
        ("[Database]\nurl = sqlite:///tmp/x.db?synchronus=full\n", "[Database] url"),
    ],
)
def test_bad_value_exits_2_with_one_line_naming_the_key(tmp_path, text, key):
    config = tmp_path / "config.ini"
    config.write_text(text)
    result = run_cli("--config", str(config), "--port", "0", cwd=tmp_path)
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert key in lines[0]
    assert "Traceback" not in result.stderr


def test_https_without_certificate_exits_2(tmp_path):
    config = tmp_path / "config.ini"
    config.write_text("[General]\nenable_https = 1\nhttps_cert = missing.crt\nhttps_key = missing.key\n")
    result = run_cli("--config", str(config), "--port", "0", cwd=tmp_path)
    assert result.returncode == 2
    assert "https_cert" in result.stderr and "missing.crt" in result.stderr
    assert "Traceback" not in result.stderr


def test_the_bare_command_serves_on_the_host_and_port_of_config_ini(tmp_path, daemon_factory):
    """`medusa-v2 --config PATH` (no subcommand, no --host/--port): web_host and web_port decide."""
    import socket

    with socket.socket() as probe:  # a port free a moment ago
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    config = tmp_path / "config.ini"
    config.write_text(f"[General]\nweb_host = 127.0.0.1\nweb_port = {port}\n")
    d = daemon_factory(config, command=("--config", str(config)))
    assert d.port == port
    status, _, body = d.request("/health")
    assert (status, json.loads(body)) == (200, {"status": "ok"})
    assert d.stop() == 0


def test_first_start_generates_secrets_serves_and_stops_on_sigterm(tmp_path, daemon_factory):
    config = tmp_path / "config.ini"
    original = "# my comment stays\n[General]\n# about the key\napi_key = \nweb_port = 8081\n"
    config.write_text(original)
    d = daemon_factory(config)
    text = config.read_text()
    assert "# my comment stays" in text and "# about the key" in text
    api_key = re.search(r"^api_key = (\w+)$", text, re.M).group(1)
    assert re.fullmatch(r"[0-9a-f]{32}", api_key)
    assert re.search(r"^encryption_secret = \w{32,}$", text, re.M)
    assert stat.S_IMODE(config.stat().st_mode) == 0o600
    assert "NO USERNAME/PASSWORD CONFIGURED" in d.stderr

    status, headers, body = d.request("/health")
    assert (status, json.loads(body)) == (200, {"status": "ok"})
    assert headers["X-Medusa-Server"] == medusa_v2.__version__
    status, _, body = d.request("/no-such-thing", headers={"X-Api-Key": api_key})
    assert status == 404 and "error" in json.loads(body)
    # the embedded SQLite default lives beside config.ini
    assert (tmp_path / "medusa_v2.db").exists()

    assert d.stop() == 0
    assert "Traceback" not in d.stderr
    # the secrets are stable across restarts
    assert re.search(r"^api_key = (\w+)$", config.read_text(), re.M).group(1) == api_key


def test_access_log_line_redacts_api_key(tmp_path, daemon_factory):
    config = tmp_path / "config.ini"
    config.write_text("[General]\napi_key = abcdefabcdefabcdefabcdefabcdef12\n")
    d = daemon_factory(config)
    status, _, _ = d.request("/health?api_key=abcdefabcdefabcdefabcdefabcdef12&x=1")
    assert status == 200
    line = d.wait_for_log(r"GET /api/v2/health")
    # The daemon's own line format (written without LogRecords: tests/test_logging.py).
    assert re.match(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} INFO \[\d+\] medusa_v2\.access: GET ", line), line
    assert re.search(r"GET /api/v2/health\?api_key=\[redacted\]&x=1 200 \d+\.\dms", line), line
    status, _, _ = d.request("/authenticate", method="DELETE", headers={"X-Api-Key": "wrong-key"})
    assert status == 401
    d.wait_for_log(r"DELETE /api/v2/authenticate 401")
    assert d.stop() == 0
    assert "abcdefabcdefabcdefabcdefabcdef12" not in d.stderr
    assert "wrong-key" not in d.stderr


def test_set_password_writes_a_hash_that_logs_in(tmp_path, daemon_factory):
    config = tmp_path / "config.ini"
    config.write_text("# keep me\n[General]\nweb_port = 8081\n")
    result = run_cli(
        "set-password",
        "--config",
        str(config),
        "--username",
        "admin",
        "--password-stdin",
        cwd=tmp_path,
        stdin="s3cret pass\n",
    )
    assert result.returncode == 0, result.stderr
    text = config.read_text()
    assert "# keep me" in text
    assert "s3cret pass" not in text
    assert re.search(r"^web_password = scrypt\$", text, re.M)
    assert re.search(r"^web_username = admin$", text, re.M)

    d = daemon_factory(config)
    assert "NO USERNAME/PASSWORD CONFIGURED" not in d.stderr
    status, _, body = d.request("/authenticate", method="POST", body={"username": "admin", "password": "s3cret pass"})
    assert status == 200 and json.loads(body)["token"].count(".") == 2
    status, _, body = d.request("/authenticate", method="POST", body={"username": "admin", "password": "wrong"})
    assert status == 401
    assert d.stop() == 0
    assert "s3cret pass" not in d.stderr


SLOW_RESOURCE = """
import asyncio
from medusa_v2.resource import Resource

class Slow(Resource):
    name = "slow"

    async def retrieve(self, slow_id):
        await asyncio.sleep(slow_id / 10)
        return {"id": slow_id, "slept": True}
"""


def test_sigterm_finishes_in_flight_requests_then_exits_0(tmp_path, daemon_factory):
    (tmp_path / "slowres.py").write_text(SLOW_RESOURCE)
    config = tmp_path / "config.ini"
    config.write_text("[General]\napi_key = 0123456789abcdef0123456789abcdef\n[API]\nextra_handlers = slowres:Slow\n")
    d = daemon_factory(config)
    results: list = []
    t = threading.Thread(
        target=lambda: results.append(d.request("/slow/15", headers={"X-Api-Key": "0123456789abcdef0123456789abcdef"}))
    )
    t.start()
    kept = http.client.HTTPConnection("127.0.0.1", d.port, timeout=10)  # a kept-alive client
    kept.request("GET", "/api/v2/slow/1", headers={"X-Api-Key": "0123456789abcdef0123456789abcdef"})
    first = kept.getresponse()
    assert first.status == 200 and first.getheader("Connection") != "close"
    first.read()
    time.sleep(0.3)  # the slow request is in flight (it sleeps 1.5 s)
    started = time.monotonic()
    d.proc.send_signal(signal.SIGTERM)
    time.sleep(0.2)
    # While draining, a request on the kept-alive connection is answered, with Connection: close.
    kept.request("GET", "/api/v2/slow/1", headers={"X-Api-Key": "0123456789abcdef0123456789abcdef"})
    second = kept.getresponse()
    assert second.status == 200 and json.loads(second.read())["slept"] is True
    assert second.getheader("Connection") == "close"
    t.join(10)
    assert results and results[0][0] == 200
    assert json.loads(results[0][2]) == {"id": 15, "slept": True}
    assert d.proc.wait(10) == 0
    assert time.monotonic() - started < 5
    # no new connections once stopping
    with pytest.raises(OSError):
        urllib.request.urlopen(d.url("/health"), timeout=2)


def test_sigint_also_stops_cleanly(tmp_path, daemon_factory):
    config = tmp_path / "config.ini"
    config.write_text("")
    d = daemon_factory(config)
    assert d.stop(signal.SIGINT) == 0
    assert "Traceback" not in d.stderr


def test_python_dash_m_runs_the_cli(tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "medusa_v2", "--version"],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        timeout=30,
    )
    assert result.returncode == 0 and medusa_v2.__version__ in result.stdout


PID_RESOURCE = """
import os
from medusa_v2.resource import Resource

class Pid(Resource):
    name = "pid"

    async def retrieve(self, pid_id):
        return {"id": pid_id, "pid": os.getpid()}
"""


def _worker_pids(d: Daemon, key: str, tries: int = 200) -> set[int]:
    pids = set()
    for _ in range(tries):
        status, _, body = d.request("/pid/1", headers={"X-Api-Key": key, "Connection": "close"})
        assert status == 200
        pids.add(json.loads(body)["pid"])
    return pids


def _two_workers(tmp_path: Path, daemon_factory) -> tuple[Daemon, str, set[int]]:
    """Start a daemon of 2 workers serving the Pid resource; return it, its API key and the workers seen."""
    (tmp_path / "pidres.py").write_text(PID_RESOURCE)
    key = "0123456789abcdef0123456789abcdef"
    config = tmp_path / "config.ini"
    config.write_text(f"[General]\napi_key = {key}\n[API]\nprocesses = 2\nextra_handlers = pidres:Pid\n")
    d = daemon_factory(config)
    deadline = time.monotonic() + 10
    pids: set[int] = set()
    while len(pids) < 2 and time.monotonic() < deadline:
        pids |= _worker_pids(d, key, 20)
    return d, key, pids


def test_processes_2_forks_workers_replaces_a_dead_one_and_stops_all(tmp_path, daemon_factory):
    d, key, pids = _two_workers(tmp_path, daemon_factory)
    assert "with 2 process(es)" in d.stderr
    assert len(pids) == 2 and d.proc.pid not in pids

    victim = sorted(pids)[0]
    os.kill(victim, signal.SIGKILL)
    d.wait_for_log(rf"worker {victim} exited \(killed by signal 9\)")
    deadline = time.monotonic() + 10
    fresh: set[int] = set()
    while len(fresh - pids) < 1 and time.monotonic() < deadline:
        fresh |= _worker_pids(d, key, 20)
    assert victim not in fresh
    assert fresh - pids, "no replacement worker answered"

    assert d.stop() == 0
    for pid in pids | fresh:
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)


def _burst_pids(port: int, key: str, count: int = 32) -> list[int]:
    """Open `count` connections at once (as wrk does), then ask each which worker holds it."""
    import socket

    conns = []
    try:
        for _ in range(count):
            conn = socket.socket()
            conn.setblocking(False)
            conn.connect_ex(("127.0.0.1", port))
            conns.append(conn)
        pids = []
        for conn in conns:
            conn.setblocking(True)
            conn.settimeout(10)
            conn.sendall(f"GET /api/v2/pid/1 HTTP/1.1\r\nHost: t\r\nX-Api-Key: {key}\r\n\r\n".encode())
            data = b""
            while b"\r\n\r\n" not in data:
                data += conn.recv(65536)
            head, body = data.split(b"\r\n\r\n", 1)
            length = int(re.search(rb"(?i)content-length: (\d+)", head).group(1))
            while len(body) < length:
                body += conn.recv(65536)
            pids.append(json.loads(body)["pid"])
        return pids
    finally:
        for conn in conns:
            conn.close()


def test_workers_share_a_burst_of_connections(tmp_path, daemon_factory):
    # Tornado's own accept loop takes every waiting connection at once: the worker
    # woken first took all of wrk's 32 in half the runs measured. Each takes one now.
    d, key, pids = _two_workers(tmp_path, daemon_factory)
    assert len(pids) == 2  # both workers up
    # Measured here: Tornado's loop sent a whole burst to one worker in about a
    # third of the bursts (at most 3 in 32: ~0.3% of runs). One at a time, none of
    # ~300 bursts did on an idle machine; with a busy loop taking one of the two
    # cores, a worker that is not scheduled during a burst can miss it, as it should.
    shares = [sorted(collections.Counter(_burst_pids(d.port, key)).values()) for _ in range(32)]
    assert sum(len(share) == 1 for share in shares) <= 3, shares
    assert sum(share[0] for share in shares if len(share) == 2) >= 0.2 * 32 * len(shares), shares
    assert d.stop() == 0


def test_https_serves_tls_with_the_configured_certificate(tmp_path, daemon_factory):
    import shutil
    import ssl

    if shutil.which("openssl") is None and not os.environ.get("CI"):
        pytest.skip("openssl is needed to make a test certificate")
    subprocess.run(
        [
            "openssl",
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "1",
            "-subj",
            "/CN=127.0.0.1",
            "-keyout",
            str(tmp_path / "server.key"),
            "-out",
            str(tmp_path / "server.crt"),
        ],
        check=True,
        capture_output=True,
        timeout=60,
    )
    config = tmp_path / "config.ini"
    config.write_text("[General]\nenable_https = 1\n")  # server.crt/server.key beside config.ini, Medusa's defaults
    d = daemon_factory(config)
    assert re.search(r"serving https://", d.stderr)
    context = ssl.create_default_context(cafile=str(tmp_path / "server.crt"))
    context.check_hostname = False
    with urllib.request.urlopen(f"https://127.0.0.1:{d.port}/api/v2/health", context=context, timeout=10) as r:
        assert r.status == 200 and json.loads(r.read()) == {"status": "ok"}
    with pytest.raises(OSError):  # plain HTTP is not served on the TLS port
        urllib.request.urlopen(f"http://127.0.0.1:{d.port}/api/v2/health", timeout=5).read()
    assert d.stop() == 0


@pytest.mark.parametrize("gzip", [True, False])
def test_web_use_gzip_compresses_responses(tmp_path, daemon_factory, gzip):
    import gzip as gz

    key = "0123456789abcdef0123456789abcdef"
    config = tmp_path / "config.ini"
    config.write_text(f"[General]\napi_key = {key}\nweb_use_gzip = {int(gzip)}\n")
    d = daemon_factory(config)
    for i in range(10):
        d.request(
            "/ticket",
            method="POST",
            body={"title": f"ticket {i}", "description": "x" * 100},
            headers={"X-Api-Key": key},
        )
    req = urllib.request.Request(d.url("/ticket"), headers={"X-Api-Key": key, "Accept-Encoding": "gzip"})
    with urllib.request.urlopen(req, timeout=10) as r:
        raw = r.read()
        encoding = r.headers.get("Content-Encoding")
    if gzip:
        assert encoding == "gzip"
        assert len(json.loads(gz.decompress(raw))) == 10
    else:
        assert encoding is None and len(json.loads(raw)) == 10
    assert d.stop() == 0


def test_slow_and_idle_clients_are_cut_off(tmp_path, daemon_factory):
    import socket

    config = tmp_path / "config.ini"
    config.write_text("[API]\nidle_timeout = 1\nbody_timeout = 1\n")
    d = daemon_factory(config)
    # headers that never finish (slowloris)
    slow = socket.create_connection(("127.0.0.1", d.port), timeout=10)
    slow.sendall(b"GET /api/v2/health HTTP/1.1\r\nHost: x\r\n")
    # a body that never arrives
    stalled = socket.create_connection(("127.0.0.1", d.port), timeout=10)
    stalled.sendall(
        b"POST /api/v2/authenticate HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        b"Content-Length: 100\r\n\r\n{"
    )
    started = time.monotonic()
    assert slow.recv(100) == b""  # closed by the daemon
    stalled.recv(65536)
    assert stalled.recv(100) == b""
    assert time.monotonic() - started < 5
    # healthy clients are still served
    status, _, _ = d.request("/health")
    assert status == 200
    assert d.stop() == 0


def test_oversized_headers_close_the_connection_and_the_daemon_goes_on(tmp_path, daemon_factory):
    import socket

    config = tmp_path / "config.ini"
    config.write_text("")
    d = daemon_factory(config)
    s = socket.create_connection(("127.0.0.1", d.port), timeout=10)
    s.sendall(b"GET /api/v2/health HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 100_000 + b"\r\n\r\n")
    try:
        data = s.recv(100)
    except ConnectionResetError:
        data = b""
    assert data == b""
    assert d.request("/health")[0] == 200
    assert d.stop() == 0


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_a_password_change_reaches_the_running_daemon_and_refuses_older_tokens(tmp_path, daemon_factory):
    """set-password on a running daemon: the new password works within a second, the old one and
    every token issued before are refused (after a restart too), and the command says the daemon took it."""
    port = _free_port()
    config = tmp_path / "config.ini"
    config.write_text(f"[General]\nweb_host = 127.0.0.1\nweb_port = {port}\nweb_username = admin\n")
    assert (
        run_cli(
            "set-password", "--config", str(config), "--password-stdin", cwd=tmp_path, stdin="old pass\n"
        ).returncode
        == 0
    )
    d = daemon_factory(config, command=("serve", "--config", str(config)))
    login = {"username": "admin", "password": "old pass"}
    status, _, body = d.request("/authenticate", method="POST", body=login)
    assert status == 200
    token = {"x-auth": "Bearer " + json.loads(body)["token"]}
    assert d.request("/ticket", headers=token)[0] == 200

    result = run_cli("set-password", "--config", str(config), "--password-stdin", cwd=tmp_path, stdin="new pass\n")
    assert result.returncode == 0, result.stderr
    assert f"the daemon at http://127.0.0.1:{port} now uses the new password" in result.stderr
    status, headers, body = d.request("/ticket", headers=token)
    challenge = {k.lower(): v for k, v in headers.items()}["www-authenticate"]
    assert status == 401 and "credentials changed" in challenge
    assert d.request("/authenticate", method="POST", body=login)[0] == 401
    assert d.request("/authenticate", method="POST", body={**login, "password": "new pass"})[0] == 200
    assert d.stop() == 0
    d = daemon_factory(config, command=("serve", "--config", str(config)))
    assert d.request("/ticket", headers=token)[0] == 401  # after a restart too
    assert d.stop() == 0
    result = run_cli("set-password", "--config", str(config), "--password-stdin", cwd=tmp_path, stdin="third\n")
    assert f"no daemon answers at http://127.0.0.1:{port}" in result.stderr


def test_a_running_daemon_applies_an_edited_api_key_within_a_second(tmp_path, daemon_factory):
    config = tmp_path / "config.ini"
    config.write_text("[General]\napi_key = " + "a" * 32 + "\n")
    d = daemon_factory(config)
    assert d.request("/ticket", headers={"X-Api-Key": "a" * 32})[0] == 200
    text = config.read_text().replace("a" * 32, "b" * 32)
    config.write_text(text)
    deadline = time.monotonic() + 3
    while d.request("/ticket", headers={"X-Api-Key": "b" * 32})[0] != 200 and time.monotonic() < deadline:
        time.sleep(0.1)
    assert d.request("/ticket", headers={"X-Api-Key": "b" * 32})[0] == 200
    assert d.request("/ticket", headers={"X-Api-Key": "a" * 32})[0] == 401
    assert d.stop() == 0


def test_the_daemon_purges_expired_shared_state(tmp_path, daemon_factory):
    import sqlite3

    config = tmp_path / "config.ini"
    config.write_text("[General]\n")
    assert daemon_factory(config).stop() == 0  # creates the database
    db = sqlite3.connect(tmp_path / "medusa_v2.db")
    now = time.time()
    with db:
        db.execute("INSERT INTO revoked_token (jti, expires_at) VALUES ('dead', ?), ('live', ?)", (now - 1, now + 600))
        db.execute(
            "INSERT INTO idempotency_key (scope, key, fingerprint, created_at)"
            " VALUES ('s', 'old', 'f', ?), ('s', 'new', 'f', ?)",
            (now - 2 * 86400, now),
        )
        db.execute("INSERT INTO login_failure (client, at) VALUES ('c', ?), ('c', ?)", (now - 86400, now))
    d = daemon_factory(config)
    deadline = time.monotonic() + 5
    while db.execute("SELECT COUNT(*) FROM revoked_token").fetchone()[0] > 1 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert [r[0] for r in db.execute("SELECT jti FROM revoked_token")] == ["live"]
    assert [r[0] for r in db.execute("SELECT key FROM idempotency_key")] == ["new"]
    assert db.execute("SELECT COUNT(*) FROM login_failure").fetchone()[0] == 1
    db.close()
    assert d.stop() == 0


def test_every_file_created_is_readable_by_its_owner_only(tmp_path, daemon_factory):
    config = tmp_path / "config.ini"
    config.write_text("[General]\n")
    old = os.umask(0o022)  # a usual umask: without care, files would be 0644
    try:
        d = daemon_factory(config)
        assert d.request("/ticket", method="POST", body={"title": "x"}, headers={"X-Api-Key": _key(config)})[0] == 201
        for name in ("config.ini", "medusa_v2.db", "medusa_v2.db-wal", "medusa_v2.db-shm"):
            assert stat.S_IMODE(os.stat(tmp_path / name).st_mode) == 0o600, name
        assert d.stop() == 0
        (tmp_path / "backup.jsonl").write_text("")  # an existing file is made private too
        os.chmod(tmp_path / "backup.jsonl", 0o644)
        result = run_cli("export", "--config", str(config), str(tmp_path / "backup.jsonl"), cwd=tmp_path)
        assert result.returncode == 0, result.stderr
        assert stat.S_IMODE(os.stat(tmp_path / "backup.jsonl").st_mode) == 0o600
        assert '"title":"x"' in (tmp_path / "backup.jsonl").read_text()
    finally:
        os.umask(old)


def _key(config: Path) -> str:
    return re.search(r"^api_key = (\w+)$", config.read_text(), re.M).group(1)


def test_abandoned_requests_are_not_waited_for_at_shutdown(tmp_path, daemon_factory):
    """A body tornado refuses, or a client gone mid-body, ends its request: SIGTERM does not wait for it."""
    config = tmp_path / "config.ini"
    config.write_text("[General]\n[API]\nshutdown_timeout = 10\n")
    d = daemon_factory(config)
    key = _key(config)
    for i in range(20):
        with socket.create_connection(("127.0.0.1", d.port)) as s:
            if i % 2:  # a Transfer-Encoding tornado cannot read
                s.sendall(
                    f"POST /api/v2/ticket HTTP/1.1\r\nHost: x\r\nX-Api-Key: {key}\r\nContent-Type: application/json\r\n"
                    "Transfer-Encoding: gzip, chunked\r\n\r\n".encode()
                )
            else:  # half a body, then gone
                s.sendall(
                    f"POST /api/v2/ticket HTTP/1.1\r\nHost: x\r\nX-Api-Key: {key}\r\nContent-Type: application/json\r\n"
                    'Content-Length: 100\r\n\r\n{"title": '.encode()
                )
            time.sleep(0.02)
    assert d.request("/ticket", headers={"X-Api-Key": key})[0] == 200
    started = time.monotonic()
    assert d.stop() == 0
    assert time.monotonic() - started < 5
    assert "still in flight" not in d.stderr
    assert re.search(r"finishing 0 request\(s\) in flight", d.stderr), d.stderr


def test_connections_over_max_connections_get_a_503_at_once(tmp_path, daemon_factory):
    config = tmp_path / "config.ini"
    config.write_text("[General]\n[API]\nmax_connections = 5\n")
    d = daemon_factory(config)
    idle = [socket.create_connection(("127.0.0.1", d.port)) for _ in range(5)]
    try:
        time.sleep(0.2)
        with socket.create_connection(("127.0.0.1", d.port), timeout=5) as extra:
            answer = b""
            while chunk := extra.recv(4096):
                answer += chunk
        head, _, body = answer.partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 503 ") and b"Retry-After: 1" in head
        assert json.loads(body) == {"error": "Too many open connections; retry shortly"}
    finally:
        for s in idle:
            s.close()
    deadline = time.monotonic() + 5
    while d.request("/health")[0] != 200 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert d.request("/health")[0] == 200  # freed connections count again
    assert d.stop() == 0


def _rss_kib(pid: int) -> int:
    with open(f"/proc/{pid}/status") as status:
        return int(re.search(r"^VmRSS:\s+(\d+) kB", status.read(), re.M).group(1))


def test_stalled_unauthenticated_uploads_cost_no_memory(tmp_path, daemon_factory):
    """200 clients announce 1 MiB bodies without credentials, send all but a byte and stall: none is buffered."""
    config = tmp_path / "config.ini"
    config.write_text("[General]\n")
    d = daemon_factory(config)
    assert d.request("/health")[0] == 200
    before = _rss_kib(d.proc.pid)
    almost = b"x" * (1024 * 1024 - 1)
    sockets = []
    try:
        for i in range(200):
            s = socket.create_connection(("127.0.0.1", d.port))
            path = ("/api/v2/authenticate", "/api/v2/ticket", "/api/v2/authenticate", "/api/v2/nothing")[i % 4]
            s.sendall(
                f"POST {path} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                "Content-Length: 1048576\r\n\r\n".encode()
            )
            s.settimeout(0.5)
            with contextlib.suppress(OSError):  # refused early (401, 413, 404): the rest is not read
                s.sendall(almost)
            sockets.append(s)
        time.sleep(1.0)
        grown = (_rss_kib(d.proc.pid) - before) / 1024
        print(f"RSS growth with 200 stalled 1 MiB uploads: {grown:.1f} MiB")
        assert grown < 50, grown
        assert d.request("/health")[0] == 200
    finally:
        for s in sockets:
            s.close()
    assert d.stop() == 0

"""examples/embed_app.py, run as a real subprocess: its own pages and the API under its web root."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import threading
import urllib.error
import urllib.request
from pathlib import Path

import pytest

import medusa_v2

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = ROOT / "examples" / "embed_app.py"
USERNAME = "admin"
PASSWORD = "embed-secret"


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args, **kwargs):  # noqa: D102
        return None


_opener = urllib.request.build_opener(_NoRedirect)


class EmbedApp:
    """The example app on a free port; stderr collected in the background."""

    def __init__(self, config: Path, *, via_env: bool) -> None:
        env = {**os.environ, "PYTHONPATH": str(ROOT)}
        args = [sys.executable, str(EXAMPLE), "--host", "127.0.0.1", "--port", "0"]
        if via_env:
            env["MEDUSA_V2_CONFIG"] = str(config)
        else:
            args += ["--config", str(config)]
        self.proc = subprocess.Popen(
            args, cwd=config.parent, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True
        )
        self.lines: list[str] = []
        self.port = 0
        self._ready = threading.Event()
        threading.Thread(target=self._read, daemon=True).start()
        if not self._ready.wait(20):
            self.proc.kill()
            raise AssertionError("embed_app did not start:\n" + self.stderr)

    def _read(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            self.lines.append(line)
            m = re.search(r"embed_app serving http://[^:]+:(\d+)/", line)
            if m:
                self.port = int(m.group(1))
                self._ready.set()

    @property
    def stderr(self) -> str:
        return "".join(self.lines)

    def request(self, path: str, *, method: str = "GET", body: dict | None = None, headers: dict | None = None):
        data = json.dumps(body).encode() if body is not None else None
        req = urllib.request.Request(
            f"http://127.0.0.1:{self.port}{path}", data=data, method=method, headers=headers or {}
        )
        if data is not None:
            req.add_header("Content-Type", "application/json")
        try:
            with _opener.open(req, timeout=10) as r:
                return r.status, r.headers, r.read()
        except urllib.error.HTTPError as e:
            return e.code, e.headers, e.read()


@pytest.fixture
def start_app(tmp_path):
    started: list[EmbedApp] = []

    def start(web_root: str, *, via_env: bool = False) -> EmbedApp:
        config = tmp_path / "config.ini"
        config.write_text(
            f"[General]\nweb_root = {web_root}\nweb_username = {USERNAME}\nweb_password = {PASSWORD}\n"
            "web_use_gzip = 0\n"
        )
        app = EmbedApp(config, via_env=via_env)
        started.append(app)
        return app

    yield start
    for app in started:
        if app.proc.poll() is None:
            app.proc.kill()
            app.proc.wait()


@pytest.mark.parametrize(("web_root", "via_env"), [("/medusa", False), ("", True)])
def test_embedded_app_serves_its_pages_and_the_api_under_its_web_root(start_app, tmp_path, web_root, via_env):
    app = start_app(web_root, via_env=via_env)
    api = web_root + "/api/v2"

    # The application's own pages.
    status, headers, body = app.request("/")
    assert status == 302 and headers["Location"] == f"{web_root}/home/"
    status, headers, body = app.request(f"{web_root}/home/")
    assert status == 200
    assert headers["Content-Type"].startswith("text/html")
    assert headers["X-Embed-App"] == "1"
    assert f'href="{api}/health"' in body.decode()
    assert "X-Medusa-Server" not in headers  # the API's headers stay on the API

    # The API under the web root: health, a token, a ticket created and read back.
    status, headers, body = app.request(f"{api}/health")
    assert (status, json.loads(body)) == (200, {"status": "ok"})
    assert headers["X-Medusa-Server"] == medusa_v2.__version__
    status, _, body = app.request(
        f"{api}/authenticate", method="POST", body={"username": USERNAME, "password": PASSWORD, "exp": 600}
    )
    assert status == 200, body
    auth = {"X-Auth": "Bearer " + json.loads(body)["token"]}
    status, headers, body = app.request(f"{api}/ticket", method="POST", body={"title": "Embedded"}, headers=auth)
    assert status == 201, body
    created = json.loads(body)
    location = headers["Location"]
    assert location == f"http://127.0.0.1:{app.port}{api}/ticket/{created['id']}"
    status, headers, body = app.request(location.split(str(app.port), 1)[1], headers=auth)
    assert status == 200
    assert json.loads(body)["title"] == "Embedded" and headers["ETag"]
    # The API key written back into config.ini authenticates too.
    api_key = re.search(r"^api_key = (\w+)$", (tmp_path / "config.ini").read_text(), re.M).group(1)
    status, headers, body = app.request(f"{api}/ticket", headers={"X-Api-Key": api_key})
    assert status == 200 and headers["X-Pagination-Count"] == "1"

    # Without credentials: the API's 401, not a page.
    status, headers, body = app.request(f"{api}/ticket")
    assert status == 401
    assert json.loads(body) == {"error": "No authorization token."}
    assert "Bearer" in headers["WWW-Authenticate"]

    # Unknown paths: JSON 404 under the API root, the application's HTML 404 elsewhere.
    status, headers, body = app.request(f"{api}/no-such-thing")
    assert status == 404
    assert headers["Content-Type"] == "application/json; charset=UTF-8"
    assert "error" in json.loads(body)
    for outside in (f"{web_root}/no-such-page", f"{web_root}/api/v1/ticket", f"{web_root}/api/v2x"):
        status, headers, body = app.request(outside)
        assert status == 404, outside
        assert headers["Content-Type"].startswith("text/html"), outside
        assert headers["X-Embed-App"] == "1", outside
        assert b"<h1>404 Not Found</h1>" in body
    if web_root:
        # The API is mounted under the web root only.
        status, headers, _ = app.request("/api/v2/health")
        assert status == 404 and headers["X-Embed-App"] == "1"

    # SIGTERM stops it cleanly.
    app.proc.send_signal(signal.SIGTERM)
    assert app.proc.wait(15) == 0
    assert "stopped" in app.stderr
    assert "Traceback" not in app.stderr
    assert PASSWORD not in app.stderr


def test_bad_config_exits_2_naming_the_key(tmp_path):
    config = tmp_path / "config.ini"
    config.write_text("[General]\nweb_port = notaport\n")
    result = subprocess.run(
        [sys.executable, str(EXAMPLE), "--config", str(config)],
        capture_output=True,
        text=True,
        timeout=30,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    assert result.returncode == 2
    assert "web_port" in result.stderr and "Traceback" not in result.stderr

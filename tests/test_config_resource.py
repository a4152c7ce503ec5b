"""GET/PATCH /config: non-secret view, whitelisted runtime changes, atomic persistence."""

from __future__ import annotations

import json
import os
import random
import re
import signal
import stat
import subprocess
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from configobj import ConfigObj
from daemon_process import Daemon  # noqa: E402  (tests/ is on sys.path)

from medusa_v2.config import load_config
from medusa_v2.config_endpoint import ConfigWatcher
from medusa_v2.testing import API_KEY, PASSWORD, SECRET

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture
def config_values(config_values):
    values = {section: dict(keys) for section, keys in config_values.items()}
    values["API"] = {"login_max_failures": "5"}
    return values


def config_file(settings) -> Path:
    return Path(settings.config_path)


@pytest.mark.gen_test
async def test_get_config_shows_settings_and_no_secret(client, settings):
    r = await client.get("/config")
    assert r.code == 200 and r.headers["ETag"]
    doc = r.json
    assert doc["webPort"] == settings.web_port and doc["maxBodySize"] == settings.max_body_size
    assert doc["loginMaxFailures"] == 5 and doc["database"] == "sqlite" and doc["authRequired"] is True
    assert set(doc["writable"]) == {"corsOrigins", "maxBodySize", "loginMaxFailures", "loginWindow", "shutdownTimeout"}
    text = r.body.decode()
    for secret in (API_KEY, SECRET, PASSWORD, "webPassword", "apiKey", "encryptionSecret", settings.database_url):
        assert secret not in text
    assert (await client.get("/config", headers={"If-None-Match": r.headers["ETag"]})).code == 304


@pytest.mark.gen_test
async def test_config_needs_credentials(anonymous_client):
    assert (await anonymous_client.get("/config")).code == 401
    r = await anonymous_client.patch("/config", json_body={"loginWindow": 60})
    assert r.code == 401


@pytest.mark.gen_test
async def test_patch_applies_persists_and_answers_the_accepted_fields(client, settings):
    path = config_file(settings)
    path.write_text("# keep this comment\n" + path.read_text())
    os.chmod(path, 0o600)
    r = await client.patch(
        "/config",
        json_body={"loginWindow": 60, "corsOrigins": ["https://app.example"], "apiKey": "x", "webPort": 1, "nope": 1},
    )
    assert r.code == 200
    assert r.json == {"loginWindow": 60, "corsOrigins": ["https://app.example"]}
    # persisted, comments kept, owner-only
    text = path.read_text()
    assert text.startswith("# keep this comment\n")
    reread = load_config(path, write_back=False)
    assert reread.login_window == 60 and reread.cors_origins == ("https://app.example",)
    assert reread.api_key == API_KEY and reread.web_port == settings.web_port
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    # applied at once: CORS now answers only the configured origin
    ok = await client.get("/health", headers={"Origin": "https://app.example"})
    assert ok.headers["Access-Control-Allow-Origin"] == "https://app.example"
    other = await client.get("/health", headers={"Origin": "https://evil.example"})
    assert "Access-Control-Allow-Origin" not in other.headers
    assert (await client.get("/config")).json["loginWindow"] == 60


@pytest.mark.gen_test
async def test_body_limit_change_takes_effect(client):
    r = await client.patch("/config", json_body={"maxBodySize": 2048})
    assert r.code == 200 and r.json == {"maxBodySize": 2048}
    r = await client.post("/ticket", json_body={"title": "x", "description": "d" * 3000})
    assert r.code == 413


@pytest.mark.parametrize(
    "body,field",
    [
        ({"loginWindow": 0}, "loginWindow"),
        ({"loginWindow": "60"}, "loginWindow"),
        ({"maxBodySize": 10}, "maxBodySize"),
        ({"maxBodySize": True}, "maxBodySize"),
        ({"corsOrigins": "https://a.example"}, "corsOrigins"),
        ({"corsOrigins": ["ftp://a.example"]}, "corsOrigins"),
        ({"corsOrigins": ["https://a,b.example"]}, "corsOrigins"),
        ({"corsOrigins": ['https://a"b.example']}, "corsOrigins"),
        ({"corsOrigins": ["https://a'b.example"]}, "corsOrigins"),
        ({"corsOrigins": ["https://a'b\".example"]}, "corsOrigins"),
        ({"corsOrigins": ["https://a b.example"]}, "corsOrigins"),
        ({"corsOrigins": ["https://a.example/path"]}, "corsOrigins"),
        ({"shutdownTimeout": -1}, "shutdownTimeout"),
        ({"loginWindow": 60, "loginMaxFailures": 0}, "loginMaxFailures"),
    ],
)
@pytest.mark.gen_test
async def test_invalid_values_are_400_and_nothing_is_written(client, settings, body, field):
    before = config_file(settings).read_bytes()
    r = await client.patch("/config", json_body=body)
    assert r.code == 400 and field in r.json["errors"], r.json
    assert config_file(settings).read_bytes() == before
    assert (await client.get("/config")).json["loginWindow"] == settings.login_window


@pytest.mark.gen_test
async def test_stale_if_match_is_412(client, settings):
    etag = (await client.get("/config")).headers["ETag"]
    assert (await client.patch("/config", json_body={"loginWindow": 61}, headers={"If-Match": etag})).code == 200
    r = await client.patch("/config", json_body={"loginWindow": 62}, headers={"If-Match": etag})
    assert r.code == 412
    assert load_config(config_file(settings), write_back=False).login_window == 61


@pytest.mark.gen_test
async def test_bad_json_is_400(client):
    r = await client.patch("/config", body=b"[1]", headers={"Content-Type": "application/json"})
    assert r.code == 400


def test_watcher_applies_another_writers_change(settings, app):
    api = app.settings["medusa_v2_api"]
    watcher = ConfigWatcher(api, settings.config_path, settle=0)
    watcher.check()
    assert api.settings.login_window == settings.login_window
    cfg = ConfigObj(settings.config_path)
    cfg.setdefault("API", {})["login_window"] = "77"
    cfg.setdefault("API", {})["max_body_size"] = "4096"
    cfg["General"]["web_port"] = "9999"  # not a runtime key: the running app keeps its port
    time.sleep(0.01)
    cfg.write()
    watcher.check()
    assert api.settings.login_window == 77 and api.settings.max_body_size == 4096
    assert api.auth.settings.login_window == 77
    assert api.settings.web_port == settings.web_port
    # a broken file is ignored, the running settings stay
    Path(settings.config_path).write_text("[API]\nlogin_window = soon\n")
    watcher.check()
    assert api.settings.login_window == 77


def test_watcher_never_applies_a_half_written_file(settings, app):
    """An editor writing in place leaves a moment where the file lacks its later lines."""
    api = app.settings["medusa_v2_api"]
    watcher = ConfigWatcher(api, settings.config_path, settle=0.2)
    path = Path(settings.config_path)
    full = path.read_text()
    assert api.settings.api_key and f"api_key = {api.settings.api_key}" in full
    # The first half only: api_key's line (and what follows) not written yet.
    path.write_text(full[: full.index("api_key")])
    watcher.check()
    assert api.settings.api_key == settings.api_key  # too fresh to be read
    path.write_text(full.replace(settings.api_key, "k" * 32))
    watcher.check()
    assert api.settings.api_key == settings.api_key
    time.sleep(0.25)
    watcher.check()
    assert api.settings.api_key == "k" * 32  # the finished file, once still


def test_watcher_never_removes_every_credential(settings, app, caplog):
    """Emptying both web_username and web_password would open the API: that takes a restart."""
    api = app.settings["medusa_v2_api"]
    assert api.settings.auth_required
    watcher = ConfigWatcher(api, settings.config_path, settle=0)
    cfg = ConfigObj(settings.config_path)
    cfg["General"]["web_username"] = ""
    cfg["General"]["web_password"] = ""
    cfg["General"]["api_key"] = "n" * 32
    cfg.write()
    watcher.check()
    assert api.settings.auth_required
    assert (api.settings.web_username, api.settings.web_password) == (settings.web_username, settings.web_password)
    assert api.settings.api_key == "n" * 32  # the rest of the edit applies
    assert "restart" in caplog.text
    cfg["General"]["web_username"] = "someone-else"
    cfg.write()
    watcher.check()
    assert api.settings.web_username == "someone-else" and api.settings.auth_required


def _start(config: Path) -> tuple[subprocess.Popen, int]:
    d = Daemon(config, new_session=True)
    return d.proc, d.port


def _patch(port: int, body: dict) -> int:
    req = urllib.request.Request(
        f"http://127.0.0.1:{port}/api/v2/config",
        data=json.dumps(body).encode(),
        method="PATCH",
        headers={"X-Api-Key": API_KEY, "Content-Type": "application/json"},
    )
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            return r.status
    except urllib.error.HTTPError as e:
        return e.code
    except OSError:  # the daemon was killed under the request
        return 0


def test_sigkill_during_patch_leaves_the_old_or_the_new_file(tmp_path):
    config = tmp_path / "config.ini"
    config.write_text(f"# comment\n[General]\napi_key = {API_KEY}\n[API]\nlogin_window = 100\n")
    rng = random.Random(7)
    for round_ in range(8):
        proc, port = _start(config)
        old = config.read_bytes()
        new_window = 200 + round_
        t = threading.Thread(target=_patch, args=(port, {"loginWindow": new_window}), daemon=True)
        t.start()
        time.sleep(rng.uniform(0, 0.02))
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(10)
        t.join(10)
        text = config.read_text()
        window = load_config(config, write_back=False).login_window  # parses: never truncated
        assert window in (int(re.search(rb"login_window = (\d+)", old).group(1)), new_window)
        assert text.startswith("# comment\n")
        # (A writer killed mid-write may leave its temporary file beside config.ini.)


def test_a_patch_reaches_every_worker(tmp_path):
    config = tmp_path / "config.ini"
    config.write_text(f"[General]\napi_key = {API_KEY}\n[API]\nprocesses = 2\n")
    proc, port = _start(config)
    try:
        assert _patch(port, {"loginWindow": 123}) == 200
        deadline = time.monotonic() + 15  # the other worker looks at the file once a second
        while True:
            seen = set()
            for _ in range(40):
                req = urllib.request.Request(
                    f"http://127.0.0.1:{port}/api/v2/config", headers={"X-Api-Key": API_KEY, "Connection": "close"}
                )
                with urllib.request.urlopen(req, timeout=10) as r:
                    seen.add(json.loads(r.read())["loginWindow"])
            if seen == {123} or time.monotonic() > deadline:
                break
            time.sleep(0.5)
        assert seen == {123}
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        assert proc.wait(15) == 0


@pytest.mark.gen_test
async def test_head_config_is_get_without_the_body(client):
    got = await client.get("/config")
    head = await client.head("/config")
    assert head.code == 200 and head.body == b"" and head.headers["ETag"] == got.headers["ETag"]


def test_an_emptied_api_key_applies_at_once_and_an_emptied_secret_does_not(settings, store):
    from medusa_v2.config_endpoint import apply_runtime
    from medusa_v2.context import ApiContext

    api = ApiContext(settings, store)
    apply_runtime(api, settings.replace(api_key="", encryption_secret=""))
    assert api.settings.api_key == ""  # the leaked key is refused from now on
    assert api.settings.encryption_secret == settings.encryption_secret

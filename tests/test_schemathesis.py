"""Schemathesis against the real daemon, driven by the document the daemon serves.

The daemon runs as `python -m medusa_v2 serve --port 0` on a temporary config.ini and
SQLite store; `st run` loads `{web_root}/api/v2/openapi.json` from it and runs every
phase (examples, coverage, fuzzing, stateful through the documented links) and every
check (`--checks all`) on every operation, authenticated through the document's own
security schemes (API key header, Basic), so that ignored_auth also tries each one
without and with wrong credentials. Any finding fails this test, and so does any 5xx
in the daemon's access log. Bounded for CI: MEDUSA_V2_ST_EXAMPLES
examples per operation (default 30) with a fixed seed (MEDUSA_V2_ST_SEED), about
half a minute on two cores.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

pytest.importorskip("schemathesis", reason="schemathesis is not installed (pip install '.[test]')")

API_KEY = "0123456789abcdef0123456789abcdef"
USERNAME = "medusa"
PASSWORD = "correct horse battery staple"
WEB_ROOT = "/medusa"
EXAMPLES = int(os.environ.get("MEDUSA_V2_ST_EXAMPLES", "30"))
SEED = int(os.environ.get("MEDUSA_V2_ST_SEED", "20240607"))
TIMEOUT = 600
ROOT = Path(__file__).resolve().parent.parent

CONFIG = f"""\
[General]
web_host = 127.0.0.1
web_root = {WEB_ROOT}
web_username = {USERNAME}
web_password = {PASSWORD}
api_key = {API_KEY}
encryption_secret = {"e" * 64}
web_use_gzip = 0

[Database]
url = sqlite:///{{db}}

[API]
# ignored_auth sends wrong credentials to every operation and expects 401 each time;
# the throttle (429 after 5 failures, the default) has tests of its own in test_auth.
login_max_failures = 1000000
"""


@pytest.fixture(scope="module")
def daemon(tmp_path_factory) -> Iterator[tuple[str, Path]]:
    """Start the daemon on a free port; yield (API root URL, its log file)."""
    tmp = tmp_path_factory.mktemp("st-daemon")
    config = tmp / "config.ini"
    config.write_text(CONFIG.format(db=tmp / "medusa.db"))
    log = tmp / "daemon.log"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "medusa_v2", "serve", "--config", str(config), "--port", "0"],
            stdout=out,
            stderr=subprocess.STDOUT,
            cwd=tmp,
            env=env,
        )
    try:
        url = None
        deadline = time.monotonic() + 30
        while url is None and time.monotonic() < deadline:
            found = re.search(r"serving (http://\S+/api/v2)", log.read_text())
            if found:
                url = found.group(1)
            elif proc.poll() is not None:
                pytest.fail(f"the daemon exited with {proc.returncode}:\n{log.read_text()}")
            else:
                time.sleep(0.05)
        if url is None:
            pytest.fail(f"the daemon did not start:\n{log.read_text()}")
        yield url, log
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def st_command() -> list[str]:
    exe = shutil.which("st", path=os.path.dirname(sys.executable))
    return [exe] if exe else [sys.executable, "-m", "schemathesis.cli"]


ST_CONFIG = f"""\
# The credentials as schemathesis knows them (not a fixed --header), so that
# ignored_auth can also try every operation without them and expect 401.
[auth.openapi.apiKeyHeader]
api_key = "{API_KEY}"

[auth.openapi.basicAuth]
username = "{USERNAME}"
password = "{PASSWORD}"

# Refusals of schema-valid requests that are the contract, each in the document: a
# stale If-Match is 412 (RFC 9110 13.1.1: no schema can say "the current ETag"), and
# an Idempotency-Key reused with another body is 422 (the IETF Idempotency-Key draft).
[checks.positive_data_acceptance]
expected-statuses = ["2xx", "3xx", "401", "403", "404", "409", "412", "422", "429"]

# OPTIONS answers 204 whatever the identifiers are (a preflight looks nothing up), so
# "OPTIONS on a deleted item is not 404" is the contract, not a use-after-free.
[[operations]]
include-method = "OPTIONS"
checks.use_after_free.enabled = false
checks.ensure_resource_availability.enabled = false
"""


def test_schemathesis_finds_nothing(daemon, tmp_path):
    url, log = daemon
    report = Path(os.environ.get("MEDUSA_V2_ST_REPORT_DIR", tmp_path / "report"))
    config = tmp_path / "schemathesis.toml"
    config.write_text(ST_CONFIG)
    cmd = [
        *st_command(),
        "--config-file",
        str(config),
        "run",
        f"{url}/openapi.json",
        # PATCH /config changes limits (body size, CORS) for every later request of the
        # run; tests/test_config_resource.py covers it against its own daemon.
        "--exclude-operation-id",
        "patchConfig",
        "--checks",
        "all",
        "--phases",
        "examples,coverage,fuzzing,stateful",
        "--max-examples",
        str(EXAMPLES),
        "--seed",
        str(SEED),
        # One worker: with two, schemathesis' own test-case generation sometimes dies
        # with an internal KeyError ("Runtime Error"), which says nothing about the API.
        "--workers",
        "1",
        "--generation-database",
        "none",
        "--request-timeout",
        "10",
        "--no-color",
        "--report",
        "junit",
        "--report-dir",
        str(report),
    ]
    try:
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=TIMEOUT, cwd=tmp_path)
    except subprocess.TimeoutExpired as exc:
        pytest.fail(f"schemathesis ran past {TIMEOUT}s:\n{exc.stdout}")
    output = done.stdout + done.stderr
    if done.returncode != 0:
        pytest.fail(f"schemathesis exited with {done.returncode} (seed {SEED}):\n{output}", pytrace=False)
    assert re.search(r"\d+ generated, \d+ passed", output), output
    # Every operation was tested, and the server never answered 5xx (the access log says).
    assert re.search(r"Tested:\s+(\d+)", output) and "Selected: " in output
    selected, tested = re.search(r"Selected:\s+(\d+)/(\d+)", output).groups(), re.search(r"Tested:\s+(\d+)", output)
    assert tested.group(1) == selected[0], output
    assert int(selected[1]) - int(selected[0]) == 1, output  # only PATCH /config is left out
    server_errors = [line for line in log.read_text().splitlines() if re.search(r" 5\d\d [\d.]+ms$", line)]
    assert not server_errors, "\n".join(server_errors[:20])
    assert "Traceback" not in log.read_text()

"""A real browser on another origin: headless Chromium calls the API across origins.

A page is served from one origin (http://127.0.0.1:A) and calls the API on another
(http://localhost:B: another host and another port). Its script logs in, sends
`x-auth` (which forces a CORS preflight), reads Link, ETag, X-Pagination-Count and
Location from script (which only works when Access-Control-Expose-Headers names
them), gets 412 for a stale If-Match, and posts its results back to its own origin.
The API's access log proves the preflights really happened.

Chromium is Debian's `chromium` (override with $CHROMIUM). Without it the test is
skipped, except when CI=true, where it fails: CI must install it.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import shutil
import signal
from pathlib import Path
from typing import Any

import pytest
import tornado.httpserver
import tornado.netutil
import tornado.web
from conftest import PASSWORD, USERNAME

import medusa_v2
from medusa_v2.accesslog import log_request
from medusa_v2.app import make_app

PAGE = Path(__file__).resolve().parent / "browser" / "cors_page.html"
CHROMIUM_FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-quic",
    "--disable-dev-shm-usage",  # containers often have a tiny /dev/shm
    "--disable-extensions",
    "--mute-audio",
)
RESULTS_TIMEOUT = 20  # seconds for the whole page script
STOP_TIMEOUT = 5


def chromium_path() -> str:
    """Return the Chromium executable, or skip (fail under CI=true) when there is none."""
    found = os.environ.get("CHROMIUM") or shutil.which("chromium") or shutil.which("chromium-browser")
    if found:
        return found
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail("CI=true but chromium is not installed: apt-get install -y --no-install-recommends chromium")
    pytest.skip("chromium is not installed (apt-get install chromium, or set $CHROMIUM); CI=true makes this a failure")


# -- the two origins --------------------------------------------------------------------


@pytest.fixture
def page_sockets():
    """Bind the page origin first: its URL goes into the API's cors_origins."""
    sockets = tornado.netutil.bind_sockets(0, "127.0.0.1")
    yield sockets
    for sock in sockets:
        sock.close()


@pytest.fixture
def page_origin(page_sockets) -> str:
    return f"http://127.0.0.1:{page_sockets[0].getsockname()[1]}"


@pytest.fixture
def api_sockets():
    """localhost: IPv4 and, when available, IPv6 on one port (Chromium may try either)."""
    sockets = tornado.netutil.bind_sockets(0, "localhost")
    yield sockets
    for sock in sockets:
        sock.close()


CORS_CASES = {
    "page-origin-listed": lambda page: page,
    "default-any-origin": lambda page: "",
    # One origin only: the plugin quotes values holding a comma, so no list here.
    "page-origin-not-listed": lambda page: "https://ui.example",
}


@pytest.fixture(params=list(CORS_CASES))
def cors_case(request) -> str:
    return request.param


@pytest.fixture
def config_values(config_values, cors_case, page_origin):
    """Return the plugin's test config.ini with [API] cors_origins for this case."""
    values = {section: dict(keys) for section, keys in config_values.items()}
    values["API"] = {"cors_origins": CORS_CASES[cors_case](page_origin)}
    return values


# -- what the browser did, as the API saw it ------------------------------------------------


class AccessLog:
    """The API's access log, kept as records (and still written by log_request)."""

    def __init__(self) -> None:
        self.entries: list[dict[str, Any]] = []

    def __call__(self, handler: tornado.web.RequestHandler) -> None:
        request = handler.request
        self.entries.append(
            {
                "method": request.method,
                "uri": request.uri,
                "status": handler.get_status(),
                "origin": request.headers.get("Origin"),
                "request_headers": (request.headers.get("Access-Control-Request-Headers") or "").lower(),
                "request_method": request.headers.get("Access-Control-Request-Method"),
                "allow_origin": handler._headers.get("Access-Control-Allow-Origin"),
            }
        )
        log_request(handler)

    def index(self, method: str, uri: str, start: int = 0, *, preflight_for: str | None = None) -> int:
        """Return the position of the first `method uri` entry from `start` on."""
        for i in range(start, len(self.entries)):
            entry = self.entries[i]
            if entry["method"] == method and entry["uri"] == uri:
                if preflight_for is None or entry["request_method"] == preflight_for:
                    return i
        raise AssertionError(f"no {method} {uri} in the access log:\n{self.show()}")

    def show(self) -> str:
        return "\n".join(f"{e['method']} {e['uri']} {e['status']} origin={e['origin']}" for e in self.entries)


class ResultsHandler(tornado.web.RequestHandler):
    def initialize(self, results: asyncio.Future) -> None:
        self.results = results

    def post(self) -> None:
        if not self.results.done():
            self.results.set_result(json.loads(self.request.body))
        self.set_status(204)


class PageHandler(tornado.web.RequestHandler):
    def initialize(self, html: str) -> None:
        self.html = html

    def get(self) -> None:
        self.set_header("Content-Type", "text/html; charset=UTF-8")
        self.write(self.html)


async def run_page_in_chromium(chromium: str, url: str, profile: Path, results: asyncio.Future) -> dict:
    """Open `url` in a fresh headless Chromium; return what the page posted back."""
    log_path = profile.parent / "chromium.log"
    with open(log_path, "wb") as log:
        proc = await asyncio.create_subprocess_exec(
            chromium,
            *CHROMIUM_FLAGS,
            f"--user-data-dir={profile}",
            url,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=log,
            stderr=log,
            start_new_session=True,  # its own process group: stopped with its helpers below
        )
    try:
        exited = asyncio.ensure_future(proc.wait())
        done, _ = await asyncio.wait({results, exited}, timeout=RESULTS_TIMEOUT, return_when=asyncio.FIRST_COMPLETED)
        if results not in done:
            tail = log_path.read_text(errors="replace")[-3000:]
            reason = f"exited with status {proc.returncode}" if exited in done else f"timed out ({RESULTS_TIMEOUT}s)"
            raise AssertionError(f"chromium {reason} before the page reported its results; its log:\n{tail}")
        return results.result()
    finally:
        if proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGTERM)
            try:
                await asyncio.wait_for(proc.wait(), STOP_TIMEOUT)
            except TimeoutError:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
                await proc.wait()


@pytest.mark.gen_test(timeout=RESULTS_TIMEOUT + 3 * STOP_TIMEOUT)
async def test_browser_on_another_origin(tmp_path, settings, store, cors_case, page_origin, page_sockets, api_sockets):
    chromium = chromium_path()
    api_port = api_sockets[0].getsockname()[1]
    api_root = f"http://localhost:{api_port}/api/v2"

    access_log = AccessLog()
    api_server = tornado.httpserver.HTTPServer(make_app(settings, store, log_function=access_log))
    api_server.add_sockets(api_sockets)
    results: asyncio.Future = asyncio.get_running_loop().create_future()
    config = {"api": api_root, "username": USERNAME, "password": PASSWORD}
    html = PAGE.read_text().replace("__CONFIG__", json.dumps(config).replace("</", "<\\/"))
    page_server = tornado.httpserver.HTTPServer(
        tornado.web.Application(
            [(r"/", PageHandler, {"html": html}), (r"/results", ResultsHandler, {"results": results})]
        )
    )
    page_server.add_sockets(page_sockets)
    try:
        got = await run_page_in_chromium(chromium, page_origin + "/", tmp_path / "profile", results)
    finally:
        api_server.stop()
        page_server.stop()
        await api_server.close_all_connections()
        await page_server.close_all_connections()

    context = f"page results: {json.dumps(got, indent=1)}\nAPI access log:\n{access_log.show()}"
    # Every request the browser made to the API came from the page's origin.
    assert access_log.entries, context
    assert {e["origin"] for e in access_log.entries} == {page_origin}, context

    if cors_case == "page-origin-not-listed":
        # The preflight reached the API, which did not allow the origin: the browser
        # stopped there, so the POST itself was never sent.
        preflight = access_log.entries[access_log.index("OPTIONS", "/api/v2/authenticate")]
        assert preflight["allow_origin"] is None, context
        assert got["login"]["error"].startswith("TypeError"), context
        assert "POST" not in {e["method"] for e in access_log.entries}, context
        return

    expected_allow = page_origin if cors_case == "page-origin-listed" else "*"
    assert {e["allow_origin"] for e in access_log.entries} == {expected_allow}, context

    # Log in, then create three tickets, reading Location and ETag from script.
    assert got["login"] == {"status": 200, "hasToken": True}, context
    created = got["create"]
    assert [c["status"] for c in created] == [201, 201, 201], context
    for c in created:
        assert c["location"] == f"{api_root}/ticket/{c['id']}", context
        assert re.fullmatch(r'"[0-9a-f]{40}"', c["etag"]), context

    # The list: body and the exposed pagination headers.
    listing = got["list"]
    assert listing["status"] == 200 and listing["length"] == 2, context
    assert listing["count"] == "3" and listing["total"] == "2", context
    assert listing["server"] == medusa_v2.__version__, context
    assert re.fullmatch(r'"[0-9a-f]{40}"', listing["etag"] or ""), context
    assert f'<{api_root}/ticket?limit=2&sort=id&state=open&page=2>; rel="next"' in listing["link"], context
    assert 'rel="last"' in listing["link"] and 'rel="first"' in listing["link"], context

    # Conditional requests: a stale If-Match is 412 and changes nothing; the fresh one applies.
    assert got["retrieve"]["status"] == 200 and got["retrieve"]["title"] == "first", context
    assert got["stalePatch"]["status"] == 412, context
    assert "Precondition failed" in got["stalePatch"]["error"], context
    assert got["stalePatch"]["titleAfter"] == "first", context
    assert got["freshPatch"]["status"] == 200 and got["freshPatch"]["body"] == {"state": "pending"}, context
    assert got["freshPatch"]["etag"] not in (None, got["retrieve"]["etag"]), context

    # Without credentials the browser can still read the 401 and its challenge.
    assert got["unauthenticated"]["status"] == 401, context
    assert got["unauthenticated"]["body"] == {"error": "No authorization token."}, context
    assert "Bearer" in (got["unauthenticated"]["challenge"] or ""), context

    # The preflights really happened, each before its request, asking for x-auth.
    first_id = created[0]["id"]
    for method, uri, header in (
        ("POST", "/api/v2/authenticate", "content-type"),
        ("POST", "/api/v2/ticket", "x-auth"),
        ("GET", "/api/v2/ticket?limit=2&sort=id&state=open", "x-auth"),
        ("GET", f"/api/v2/ticket/{first_id}", "x-auth"),
        ("PATCH", f"/api/v2/ticket/{first_id}", "if-match"),
    ):
        preflight = access_log.index("OPTIONS", uri, preflight_for=method)
        entry = access_log.entries[preflight]
        assert entry["status"] == 204 and entry["request_method"] == method, context
        assert header in entry["request_headers"].split(","), context
        access_log.index(method, uri, preflight + 1)
    statuses = [(e["method"], e["status"]) for e in access_log.entries if e["uri"] == f"/api/v2/ticket/{first_id}"]
    assert ("PATCH", 412) in statuses and ("PATCH", 200) in statuses, context
    # The GET after the 412 was revalidated by the browser's cache with If-None-Match:
    # 304 works across origins too, and the page still read the (unchanged) title.
    assert ("GET", 304) in statuses or ("GET", 200) in statuses[1:], context

"""A real browser on another origin subscribes to the change feed (issue 19) in headless Chromium.

A page served from one origin (http://127.0.0.1:A) opens WebSockets on the API's
`/api/v2/events`, on another origin (http://localhost:B): one with `?api_key=` and
`?resource=ticket`, one with `?token=` after logging in through /authenticate. The
test, not the page, then changes tickets and messages over HTTP, as curl would; the
page posts every message it receives back to its own origin, and the test checks
each against the HTTP answers (event, id, ETag; seq in order, the same on both
sockets). With the page's origin left out of `[API] cors_origins`, the browser's
upgrade is refused and no socket opens. Neither the API key nor the token may
appear in a log line.

Chromium and the helpers are tests/test_browser.py's (skipped without chromium,
except when CI=true).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from pathlib import Path
from typing import Any

import pytest
import test_browser
import tornado.httpclient
import tornado.httpserver
import tornado.web
from conftest import API_KEY, PASSWORD, USERNAME
from test_browser import RESULTS_TIMEOUT, STOP_TIMEOUT, AccessLog, PageHandler, chromium_path, run_page_in_chromium

from medusa_v2.app import make_app

# tests/test_browser.py's fixtures: the page's origin and the API's, bound before the app starts.
page_sockets = test_browser.page_sockets
page_origin = test_browser.page_origin
api_sockets = test_browser.api_sockets

PAGE = Path(__file__).resolve().parent / "browser" / "events_page.html"
STEP_TIMEOUT = 10  # seconds for the page to report one thing (a socket open, a message)
QUIET = 0.5  # seconds to wait for messages that must not come

FEED_CASES = {
    "page-origin-listed": lambda page: page,
    "page-origin-not-listed": lambda page: "https://ui.example",
}


@pytest.fixture(params=list(FEED_CASES))
def feed_case(request) -> str:
    return request.param


@pytest.fixture
def config_values(config_values, feed_case, page_origin):
    """Return the plugin's test config.ini with [API] cors_origins for this case."""
    values = {section: dict(keys) for section, keys in config_values.items()}
    values["API"] = {"cors_origins": FEED_CASES[feed_case](page_origin)}
    return values


class ReportHandler(tornado.web.RequestHandler):
    """What the page saw, one POST per thing, into a queue."""

    def initialize(self, reports: asyncio.Queue) -> None:
        self.reports = reports

    def post(self) -> None:
        self.reports.put_nowait(json.loads(self.request.body))
        self.set_status(204)


class Page:
    """The page's reports, read as they come (or in the page's own order, `n`, once they are in)."""

    def __init__(self, reports: asyncio.Queue, browser: asyncio.Future) -> None:
        self.reports = reports
        self.browser = browser
        self.seen: list[dict[str, Any]] = []

    async def until(self, done, timeout: float = STEP_TIMEOUT) -> None:
        """Read reports until `done(self)` is true; fail with what was seen after `timeout` seconds."""
        deadline = asyncio.get_running_loop().time() + timeout
        while not done(self):
            left = deadline - asyncio.get_running_loop().time()
            if left <= 0:
                raise AssertionError(f"the page did not report what was expected in {timeout}s:\n{self.show()}")
            get = asyncio.ensure_future(self.reports.get())
            finished, _ = await asyncio.wait({get, self.browser}, timeout=left, return_when=asyncio.FIRST_COMPLETED)
            if get in finished:
                self.seen.append(get.result())
            else:
                get.cancel()
                if self.browser in finished:
                    self.browser.result()  # chromium's failure, with its log
                    raise AssertionError(f"chromium stopped early:\n{self.show()}")

    async def settle(self) -> None:
        """Take whatever else the page reports within QUIET seconds."""
        with contextlib.suppress(AssertionError):
            await self.until(lambda page: False, QUIET)

    def of(self, socket: str, kind: str) -> list[dict[str, Any]]:
        return sorted((r for r in self.seen if r.get("socket") == socket and r["kind"] == kind), key=lambda r: r["n"])

    def messages(self, socket: str) -> list[dict[str, Any]]:
        return [json.loads(r["data"]) for r in self.of(socket, "message")]

    def show(self) -> str:
        return "\n".join(json.dumps(r) for r in sorted(self.seen, key=lambda r: r["n"]))


async def change(method: str, url: str, body: Any = None) -> tornado.httpclient.HTTPResponse:
    """Make a change over HTTP with the API key, as curl would."""
    response = await tornado.httpclient.AsyncHTTPClient().fetch(
        url,
        method=method,
        headers={"X-Api-Key": API_KEY, "Content-Type": "application/json"},
        body=None if body is None else json.dumps(body),
        raise_error=False,
    )
    assert response.code in (200, 201, 204), (method, url, response.code, response.body)
    return response


@pytest.mark.gen_test(timeout=RESULTS_TIMEOUT + 3 * STOP_TIMEOUT)
async def test_browser_subscribes_from_another_origin(
    tmp_path, settings, store, feed_case, page_origin, page_sockets, api_sockets, caplog
):
    caplog.set_level(logging.INFO)
    chromium = chromium_path()
    api_port = api_sockets[0].getsockname()[1]
    api_root = f"http://localhost:{api_port}/api/v2"

    access_log = AccessLog()
    api_server = tornado.httpserver.HTTPServer(make_app(settings, store, log_function=access_log))
    api_server.add_sockets(api_sockets)
    reports: asyncio.Queue = asyncio.Queue()
    config = {
        "api": api_root,
        "events": f"ws://localhost:{api_port}/api/v2/events",
        "apiKey": API_KEY,
        "username": USERNAME,
        "password": PASSWORD,
        "login": True,
    }
    html = PAGE.read_text().replace("__CONFIG__", json.dumps(config).replace("</", "<\\/"))
    page_server = tornado.httpserver.HTTPServer(
        tornado.web.Application(
            [(r"/", PageHandler, {"html": html}), (r"/report", ReportHandler, {"reports": reports})]
        )
    )
    page_server.add_sockets(page_sockets)
    done: asyncio.Future = asyncio.get_running_loop().create_future()  # set: chromium is stopped
    browser = asyncio.ensure_future(run_page_in_chromium(chromium, page_origin + "/", tmp_path / "profile", done))
    page = Page(reports, browser)
    token = ""
    try:
        if feed_case == "page-origin-not-listed":
            await page.until(lambda p: p.of("key", "error") and p.of("key", "close") and p.of(None, "login"))
            await page.settle()
        else:
            await page.until(lambda p: p.of("key", "open") and p.of("token", "open"))
            created, commented, patched, uncommented = await make_changes(api_root)
            await page.until(lambda p: len(p.of("key", "message")) >= 2 and len(p.of("token", "message")) >= 4)
            await page.settle()
    finally:
        if not done.done():
            done.set_result({})
        with contextlib.suppress(Exception):
            await browser
        api_server.stop()
        page_server.stop()
        await api_server.close_all_connections()
        await page_server.close_all_connections()

    context = f"page reports:\n{page.show()}\nAPI access log:\n{access_log.show()}"
    upgrades = [e for e in access_log.entries if e["uri"].startswith("/api/v2/events")]
    assert upgrades and {e["origin"] for e in upgrades} == {page_origin}, context

    if feed_case == "page-origin-not-listed":
        # The browser sent the upgrade with its Origin; the API refused it: no socket opened.
        assert not page.of("key", "open") and not page.of("key", "message"), context
        assert page.of("key", "close")[0]["code"] == 1006 and page.of("key", "error"), context
        assert all(e["status"] != 101 for e in upgrades), context
        assert "error" in page.of(None, "login")[0], context  # CORS refused the login too: no token socket
    else:
        login = page.of(None, "login")[0]
        assert (login.get("status"), login.get("hasToken")) == (200, True), context
        assert [e["status"] for e in upgrades] == [101, 101], context
        token = next(e["uri"] for e in upgrades if "token=" in e["uri"]).split("token=", 1)[1]
        ticket_id = json.loads(created.body)["id"]
        message_id = json.loads(commented.body)["id"]
        ticket = {"resource": "ticket", "id": ticket_id}
        message = {"resource": "message", "id": message_id, "ticketId": ticket_id}
        expected = [
            {**ticket, "event": "created", "etag": created.headers["ETag"]},
            {**message, "event": "created", "etag": commented.headers["ETag"]},
            {**ticket, "event": "updated", "etag": patched.headers["ETag"]},
            {**message, "event": "deleted", "etag": None},
        ]
        for got in page.messages("key") + page.messages("token"):
            assert isinstance(got.get("seq"), int), context
        everything = page.messages("token")
        assert [{k: v for k, v in m.items() if k != "seq"} for m in everything] == expected, context
        seqs = [m["seq"] for m in everything]
        assert seqs == sorted(seqs) and len(set(seqs)) == len(seqs), context
        # ?resource=ticket: the ticket's two changes only, with the same seqs.
        assert page.messages("key") == [everything[0], everything[2]], context
        assert not page.of("key", "close") and not page.of("token", "close"), context

    # Every request the page made reached the API from its origin; no secret reached a log line.
    lines = [record.getMessage() for record in caplog.records]
    assert any("/api/v2/events" in line for line in lines), lines
    for secret in (API_KEY, token):
        if secret:
            assert not [line for line in lines if secret in line], f"a log line holds a credential:\n{lines}"


async def make_changes(api_root: str) -> tuple[Any, Any, Any, Any]:
    """Create a ticket and a message on it, retitle the ticket, delete the message: four changes."""
    created = await change("POST", f"{api_root}/ticket", {"title": "seen live", "priority": 2})
    ticket = json.loads(created.body)["id"]
    commented = await change("POST", f"{api_root}/ticket/{ticket}/message", {"author": "ann", "body": "hello"})
    message = json.loads(commented.body)["id"]
    patched = await change("PATCH", f"{api_root}/ticket/{ticket}", {"title": "seen live, twice"})
    uncommented = await change("DELETE", f"{api_root}/ticket/{ticket}/message/{message}")
    return created, commented, patched, uncommented

"""Shared fixtures: an API app on a temporary SQLite store, and a JSON HTTP client."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pytest
import tornado.httpclient

from medusa_v2.app import make_app
from medusa_v2.settings import Settings
from medusa_v2.store.sqlite import SQLiteStore

API_KEY = "0123456789abcdef0123456789abcdef"
SECRET = "s3cr3t-" + "x" * 57
USERNAME = "medusa"
PASSWORD = "correct horse battery staple"


class FakeClock:
    """A settable clock for expiry and throttling windows."""

    def __init__(self, now: float = 1_800_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def settings(tmp_path) -> Settings:
    """Settings for a test app; override with `settings.replace(...)` in a test's own fixture."""
    return Settings(
        api_key=API_KEY,
        encryption_secret=SECRET,
        web_username=USERNAME,
        web_password=PASSWORD,
        database_url=f"sqlite:///{tmp_path / 'test.db'}",
        web_use_gzip=False,
    )


@pytest.fixture
def store(io_loop, tmp_path, settings):
    """An opened SQLite store in the test's temporary directory."""
    s = SQLiteStore(str(tmp_path / "test.db"))
    io_loop.run_sync(s.open)
    yield s
    io_loop.run_sync(s.close)


@pytest.fixture
def resources():
    """The resources to mount (None: the configured built-ins). Override per module."""
    return None


@pytest.fixture
def app(settings, store, clock, resources):
    return make_app(settings, store, clock=clock, resources=resources)


@dataclass
class Response:
    code: int
    headers: Any
    body: bytes

    @property
    def json(self) -> Any:
        return json.loads(self.body)


class Client:
    """Speak to the app over real HTTP; never raises on an error status."""

    def __init__(self, http_client, base_url: str, root: str = "/api/v2") -> None:
        self.http = http_client
        self.base = base_url
        self.root = root

    def url(self, path: str) -> str:
        return self.base + self.root + path

    async def request(
        self,
        method: str,
        path: str,
        *,
        json_body: Any = None,
        body: bytes | str | None = None,
        headers: dict[str, str] | None = None,
        auth: str | None = "api_key",
    ) -> Response:
        hdrs = dict(headers or {})
        if auth == "api_key":
            hdrs.setdefault("X-Api-Key", API_KEY)
        if json_body is not None:
            body = json.dumps(json_body)
            hdrs.setdefault("Content-Type", "application/json")
        if body is None and method in ("POST", "PUT", "PATCH"):
            body = b""
        r = await self.http.fetch(
            self.url(path),
            method=method,
            body=body,
            headers=hdrs,
            raise_error=False,
            allow_nonstandard_methods=True,
            follow_redirects=False,
        )
        return Response(r.code, r.headers, r.body or b"")

    def __getattr__(self, verb: str) -> Callable[..., Any]:
        if verb.upper() in ("GET", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "HEAD"):
            return lambda path, **kw: self.request(verb.upper(), path, **kw)
        raise AttributeError(verb)


@pytest.fixture
def client(http_client, base_url, settings) -> Client:
    return Client(http_client, base_url, settings.web_root + "/api/v2")

"""pytest plugin: test API v2 handlers the way medusa_v2 tests its own.

Registered through the `pytest11` entry point, so installing medusa_v2 makes these
fixtures available (pytest-tornado provides `io_loop`, `http_client`, `base_url`):

- `settings`: a `Settings` loaded from a temporary config.ini (API key, secret,
  username and password below; the SQLite store in the test's tmp_path). Override
  `config_values` to change keys, or `settings` itself.
- `store`: that store, opened; `clock`: a settable clock (`clock.advance(60)`).
- `resources`: the resources to mount (None: the configured built-ins). Override it
  to mount your own `Resource` classes.
- `app`: the Tornado application; `client` / `jwt_client`: HTTP clients
  authenticated by API key / by a token; `anonymous_client`: none.
- `create_url(path, **query)`: the absolute URL of an API path, as Medusa's tests have.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlencode

import pytest

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
        """Move time forward."""
        self.now += seconds


@dataclass
class Response:
    """What a request got back."""

    code: int
    headers: Any
    body: bytes

    @property
    def json(self) -> Any:
        """Return the body parsed as JSON."""
        return json.loads(self.body)


class Client:
    """Speak JSON to the app over real HTTP; never raises on an error status."""

    def __init__(self, http_client: Any, base_url: str, root: str = "/api/v2", headers: Mapping[str, str] | None = None) -> None:
        self.http = http_client
        self.base = base_url
        self.root = root
        # No headers given: authenticate with the test API key, the common case.
        self.headers = {"X-Api-Key": API_KEY} if headers is None else dict(headers)

    def url(self, path: str, **query: Any) -> str:
        """Return the absolute URL of an API path."""
        url = self.base + self.root + path
        return url + "?" + urlencode(query, doseq=True) if query else url

    async def request(
        self,
        method: str,
        path: str,
        *,
        json_body: Any = None,
        body: bytes | str | None = None,
        headers: Mapping[str, str] | None = None,
        auth: str | None = "default",
    ) -> Response:
        """Send a request; `auth=None` sends no credentials, "api_key" the API key."""
        hdrs = {} if auth is None else dict(self.headers)
        if auth == "api_key":
            hdrs = {"X-Api-Key": API_KEY}
        hdrs.update(headers or {})
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
def clock() -> FakeClock:
    """Return a settable clock the app uses for tokens, throttling and timestamps."""
    return FakeClock()


@pytest.fixture
def config_values(tmp_path: Any) -> dict[str, dict[str, str]]:
    """Return config.ini's sections for the test app (override to change a key)."""
    return {
        "General": {
            "api_key": API_KEY,
            "encryption_secret": SECRET,
            "web_username": USERNAME,
            "web_password": PASSWORD,
            "web_use_gzip": "0",
        },
        "Database": {"url": f"sqlite:///{tmp_path / 'test.db'}"},
    }


@pytest.fixture
def settings(tmp_path: Any, config_values: Mapping[str, Mapping[str, str]]) -> Any:
    """Write a temporary config.ini and return its validated Settings."""
    from .config import load_config

    lines: list[str] = []
    for section, values in config_values.items():
        lines.append(f"[{section}]")
        lines.extend(f"{key} = {_quoted(value)}" for key, value in values.items())
    path = tmp_path / "config.ini"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return load_config(path)


def _quoted(value: str) -> str:
    return '"' + value + '"' if value and (value != value.strip() or any(c in value for c in ',#"')) else value


@pytest.fixture
def store(io_loop: Any, settings: Any) -> Any:
    """Open the configured store for the test; close it afterwards."""
    from .store import store_from_url

    opened = store_from_url(settings.database_url)
    io_loop.run_sync(opened.open)
    yield opened
    io_loop.run_sync(opened.close)


@pytest.fixture
def resources() -> Any:
    """Return the Resource classes to mount (None: the built-ins config.ini names)."""
    return None


@pytest.fixture
def app(settings: Any, store: Any, clock: FakeClock, resources: Any) -> Any:
    """Return the Tornado application under test (pytest-tornado serves it)."""
    from .app import make_app

    return make_app(settings, store, clock=clock, resources=resources)


@pytest.fixture
def client(http_client: Any, base_url: str, settings: Any) -> Client:
    """Return a client that sends the API key on every request."""
    return Client(http_client, base_url, settings.web_root + "/api/v2", {"X-Api-Key": API_KEY})


@pytest.fixture
def jwt_client(http_client: Any, base_url: str, settings: Any, app: Any) -> Client:
    """Return a client that sends a fresh token (`x-auth: Bearer ...`) on every request."""
    token = app.settings["medusa_v2_api"].auth.issue_token(USERNAME, 3600)
    return Client(http_client, base_url, settings.web_root + "/api/v2", {"X-Auth": f"Bearer {token}"})


@pytest.fixture
def anonymous_client(http_client: Any, base_url: str, settings: Any) -> Client:
    """Return a client that sends no credentials."""
    return Client(http_client, base_url, settings.web_root + "/api/v2", {})


@pytest.fixture
def create_url(base_url: str, settings: Any) -> Callable[..., str]:
    """Return `create_url(path, **query)`: the absolute URL of an API path."""

    def create(path: str, **query: Any) -> str:
        url = base_url + settings.web_root + "/api/v2" + path
        return url + "?" + urlencode(query, doseq=True) if query else url

    return create

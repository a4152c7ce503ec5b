"""pytest plugin: test API v2 handlers the way medusa_v2 tests its own.

Registered through the `pytest11` entry point, so installing medusa_v2 makes these
fixtures available (pytest-tornado provides `io_loop`, `http_client`, `base_url`):

- `settings`: a `Settings` loaded from a temporary config.ini (API key, secret,
  username and password below; the SQLite store in the test's tmp_path). Override
  `config_values` to change keys, or `settings` itself.
- `store`: that store, opened, with the tables of the stored resources in
  `resources` derived from their declarations; `clock`: a settable clock
  (`clock.advance(60)`).
- `resources`: the resources to mount (None: the configured built-ins). Override it
  to mount your own `Resource` classes.
- `app`: the Tornado application; `client` / `jwt_client`: HTTP clients
  authenticated by API key / by a token; `anonymous_client`: none.
- `create_url(path, **query)`: the absolute URL of an API path, as Medusa's tests have.
- `database_backend` / `database_url`: which store the test runs on ("sqlite" unless
  the test, its class or module is marked `@pytest.mark.stores("sqlite", "postgresql")`,
  which runs it once per store). PostgreSQL tests use a server named by the
  environment variable MEDUSA_V2_TEST_PG_URL (any database on it; the plugin creates
  `medusa_v2_test_<random>` there for the session, empties it before each test and
  drops it at the end). Without that variable they are skipped, unless CI=true: then
  they run against postgresql://postgres@127.0.0.1:5432/postgres and an unreachable
  server fails them.
"""

from __future__ import annotations

import json
import os
import secrets
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlencode, urlsplit

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

    def __init__(
        self, http_client: Any, base_url: str, root: str = "/api/v2", headers: Mapping[str, str] | None = None
    ) -> None:
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


STORES = ("sqlite", "postgresql")
PG_URL_ENV = "MEDUSA_V2_TEST_PG_URL"
CI_PG_URL = "postgresql://postgres@127.0.0.1:5432/postgres"


def pytest_configure(config: Any) -> None:
    """Register the `stores` marker."""
    config.addinivalue_line(
        "markers", "stores(*names): run the test once per named store (default: sqlite and postgresql)"
    )


def pytest_generate_tests(metafunc: Any) -> None:
    """Parametrise `database_backend` for tests marked `stores(...)`."""
    if "database_backend" not in metafunc.fixturenames:
        return
    marker = metafunc.definition.get_closest_marker("stores")
    if marker is None:
        return
    names = tuple(marker.args) or STORES
    unknown = set(names) - set(STORES)
    if unknown:
        raise pytest.UsageError(f"@pytest.mark.stores: unknown store(s) {sorted(unknown)} (known: {', '.join(STORES)})")
    metafunc.parametrize("database_backend", names, indirect=True)


def pytest_runtest_setup(item: Any) -> None:
    """Skip PostgreSQL runs when no server is configured (outside CI), folded into one summary line."""
    callspec = getattr(item, "callspec", None)
    if callspec is not None and callspec.params.get("database_backend") == "postgresql":
        if not os.environ.get(PG_URL_ENV, "").strip() and not _in_ci():
            pytest.skip(_NO_SERVER)


_NO_SERVER = f"PostgreSQL tests need {PG_URL_ENV} (e.g. postgresql://postgres@127.0.0.1:5432/test)"


def _in_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() in ("true", "1", "yes")


@pytest.fixture(scope="session")
def postgres_server_url() -> str:
    """Return the URL of the PostgreSQL server for tests; skip (outside CI) or fail without one."""
    url = os.environ.get(PG_URL_ENV, "").strip()
    if not url:
        if not _in_ci():
            pytest.skip(_NO_SERVER)
        url = CI_PG_URL
    try:
        import psycopg
    except ImportError:
        pytest.fail(f"{PG_URL_ENV}/CI=true asks for PostgreSQL tests but psycopg is not installed", pytrace=False)
    try:
        with psycopg.connect(url, connect_timeout=5, autocommit=True) as conn:
            conn.execute("SELECT 1")
    except psycopg.Error as exc:
        pytest.fail(f"PostgreSQL for tests unreachable at {_redacted(url)}: {exc}".strip(), pytrace=False)
    return url


@pytest.fixture(scope="session")
def postgres_database(postgres_server_url: str) -> Iterator[Any]:
    """Create a database of our own for the session; drop it at the end."""
    import psycopg

    name = f"medusa_v2_test_{secrets.token_hex(6)}"
    with psycopg.connect(postgres_server_url, autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
        # Tests need no durability across a crash of the server: commits without fsync.
        admin.execute(f'ALTER DATABASE "{name}" SET synchronous_commit = off')
    url = urlsplit(postgres_server_url)._replace(path="/" + name).geturl()
    database = _PostgresDatabase(url)
    try:
        yield database
    finally:
        database.close()
        with psycopg.connect(postgres_server_url, autocommit=True) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


class _PostgresDatabase:
    """A test database and one connection that empties it between tests."""

    # Every table but schema_version emptied and every sequence (ids) restarted, in one
    # round trip. DELETE, not TRUNCATE: a test leaves a few rows, and deleting a few
    # rows is much cheaper than the new files TRUNCATE makes for every table and index.
    # The totals (NAME__totals, NAME__count) are kept: their triggers bring them
    # back to zero as the rows go; and resource_schema: it describes the tables, which stay.
    # The change feed starts again from seq 0.
    RESET = """
    DO $$
    DECLARE r record;
    BEGIN
        FOR r IN SELECT tablename FROM pg_tables
                  WHERE schemaname = current_schema()
                    AND tablename NOT IN ('schema_version', 'resource_schema', 'change_event', 'change_feed')
                    AND right(tablename, 8) <> '__totals' AND right(tablename, 7) <> '__count' LOOP
            EXECUTE 'DELETE FROM ' || quote_ident(r.tablename);
        END LOOP;
        IF to_regclass('change_feed') IS NOT NULL THEN
            DELETE FROM change_event;  -- after the rows, whose deletions it recorded
            UPDATE change_feed SET last = 0, purged = 0;
        END IF;
        FOR r IN SELECT sequencename FROM pg_sequences WHERE schemaname = current_schema() LOOP
            EXECUTE 'ALTER SEQUENCE ' || quote_ident(r.sequencename) || ' RESTART';
        END LOOP;
    END $$
    """

    def __init__(self, url: str) -> None:
        self.url = url
        self._conn: Any = None

    def reset(self) -> None:
        import psycopg

        for attempt in range(2):
            if self._conn is None or self._conn.closed:
                self._conn = psycopg.connect(self.url, autocommit=True)
                self._conn.execute("SET lock_timeout = '20s'")
            try:
                self._conn.execute(self.RESET)
                return
            except psycopg.OperationalError:  # a test terminated this connection too
                self._conn.close()
                if attempt:
                    raise

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()


def _redacted(url: str) -> str:
    parts = urlsplit(url)
    if parts.password:
        return parts._replace(netloc=parts.netloc.replace(":" + parts.password + "@", ":***@")).geturl()
    return url


@pytest.fixture
def database_backend(request: Any) -> str:
    """Return the store this test runs on: "sqlite" unless parametrised by `@pytest.mark.stores`."""
    return str(getattr(request, "param", "sqlite"))


@pytest.fixture
def database_url(request: Any, database_backend: str, tmp_path: Any) -> str:
    """Return the `[Database] url` of an empty database for this test."""
    if database_backend == "postgresql":
        database = request.getfixturevalue("postgres_database")
        database.reset()
        # A small pool: tests open a store (or two) each.
        return database.url + ("&" if "?" in database.url else "?") + "pool_min_size=1&pool_max_size=4"
    return f"sqlite:///{tmp_path / 'test.db'}"


@pytest.fixture
def clock() -> FakeClock:
    """Return a settable clock the app uses for tokens, throttling and timestamps."""
    return FakeClock()


@pytest.fixture
def config_values(database_url: str) -> dict[str, dict[str, Any]]:
    """Return config.ini's sections for the test app (override to change a key; lists allowed)."""
    return {
        "General": {
            "api_key": API_KEY,
            "encryption_secret": SECRET,
            "web_username": USERNAME,
            "web_password": PASSWORD,
            "web_use_gzip": "0",
        },
        "Database": {"url": database_url},
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


def _quoted(value: str | list[str] | tuple[str, ...]) -> str:
    """Write a value so configobj reads it back as given; a list becomes a comma list."""
    if isinstance(value, (list, tuple)):
        return ", ".join(_quoted(item) for item in value) + ("," if len(value) == 1 else "")
    return '"' + value + '"' if value and (value != value.strip() or any(c in value for c in ',#"')) else value


@pytest.fixture
def store(io_loop: Any, settings: Any, resources: Any) -> Any:
    """Open the configured store (with the tables of the mounted resources) for the test; close it afterwards."""
    from .store import store_from_url
    from .url_table import declarations_for

    opened = store_from_url(settings.database_url)
    declarations = declarations_for(settings, resources)
    io_loop.run_sync(lambda: opened.open(declarations))
    yield opened
    io_loop.run_sync(opened.close)


@pytest.fixture
def resources() -> Any:
    """Return the Resource classes to mount (None: the built-ins config.ini names)."""
    return None


@pytest.fixture
def app(io_loop: Any, settings: Any, store: Any, clock: FakeClock, resources: Any) -> Any:
    """Return the Tornado application under test (pytest-tornado serves it)."""
    from .app import make_app

    made = make_app(settings, store, clock=clock, resources=resources)
    yield made
    # Change-feed sockets still open are closed (1001), and the feed's poller stopped.
    io_loop.run_sync(made.settings["medusa_v2_api"].close_feed)


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

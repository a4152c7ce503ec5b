"""The suite uses the project's own pytest plugin (medusa_v2.testing), as embedders do.

The plugin is registered through the `pytest11` entry point when medusa_v2 is
installed; the constants are re-exported for the test modules that import them.
"""

from __future__ import annotations

import sys
from pathlib import Path

import medusa_v2
from medusa_v2.testing import API_KEY, PASSWORD, SECRET, USERNAME, Client, FakeClock, Response

__all__ = ["API_KEY", "PASSWORD", "SECRET", "USERNAME", "Client", "FakeClock", "Response"]

# An embedder's own resources (examples/mypkg), importable as `mypkg.*` as they would be
# from an embedder's package.
sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "examples"))


import pytest  # noqa: E402

# The contract suites run once per store (see `@pytest.mark.stores` in medusa_v2.testing):
# SQLite always; PostgreSQL in CI, or when MEDUSA_V2_TEST_PG_URL names a server.
BOTH_STORES = {
    "test_ticket",
    "test_message",
    "test_listing",
    "test_idempotency",
    "test_auth",
    "test_health",
    "test_fastpath",
}
# Tests that open a second SQLite store on the same file themselves stay on SQLite
# (tests/test_shared_state.py covers those behaviours on both stores).
SQLITE_ONLY_FIXTURES = {"other_app"}


@pytest.hookimpl(tryfirst=True)
def pytest_generate_tests(metafunc):
    module = metafunc.module.__name__.rsplit(".", 1)[-1]
    if (
        module in BOTH_STORES
        and "database_backend" in metafunc.fixturenames
        and not SQLITE_ONLY_FIXTURES & set(metafunc.fixturenames)
        and metafunc.definition.get_closest_marker("stores") is None
    ):
        metafunc.definition.add_marker(pytest.mark.stores("sqlite", "postgresql"))


def assert_304_headers(r):
    """A 304 carries what every response does: the version and the CORS headers."""
    assert r.headers["X-Medusa-Server"] == medusa_v2.__version__
    assert r.headers["Access-Control-Allow-Origin"] == "*"
    exposed = {h.strip().lower() for h in r.headers["Access-Control-Expose-Headers"].split(",")}
    assert {"etag", "link", "x-medusa-server", "x-pagination-count"} <= exposed


def expected_order(rows, sort):
    """Return rows in the stores' list order: keys with NULLs first ascending, then id in the last key's direction."""
    out = sorted(rows, key=lambda r: r["id"], reverse=bool(sort) and sort[-1][1])
    for name, desc in reversed(sort):
        out.sort(key=lambda r: (r[name] is not None, r[name] if r[name] is not None else 0), reverse=desc)
    return out

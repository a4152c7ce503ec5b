"""Every SQLite import path leaves search indexes that FTS5's own 'integrity-check' passes, on each SQLite tested.

The import rewrites FTS5's undocumented structure record (store/sqlite/fts5_structure.py)
only on the SQLite versions listed there; these tests are what lists them. Each library
runs tests/fts5_import_scenarios.py in a process of its own: Python's sqlite3, and the
newer SQLite of pysqlite3-binary (a test dependency), so that an SQLite upgrade that
changes FTS5's format shows here first.
"""

from __future__ import annotations

import json
import platform
import subprocess
import sys
from pathlib import Path

import pytest

from medusa_v2.store.sqlite import fts5_structure

SCRIPT = Path(__file__).resolve().parent / "fts5_import_scenarios.py"
LIBRARIES = ["sqlite3", "pysqlite3"]
# pysqlite3-binary ships wheels for Linux x86_64 only (pyproject's test extra says so too).
WHEELS = sys.platform == "linux" and platform.machine() == "x86_64"


@pytest.fixture(scope="module", params=LIBRARIES)
def outcome(request):
    """Run every scenario on one SQLite library; return its version and each scenario's facts or error."""
    if request.param == "pysqlite3" and not WHEELS:
        pytest.skip("pysqlite3-binary has no wheel for this platform")
    done = subprocess.run(
        [sys.executable, str(SCRIPT), request.param], capture_output=True, text=True, timeout=600, check=False
    )
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def facts(outcome, scenario):
    result = outcome["results"][scenario]
    assert result["error"] is None, f"SQLite {outcome['sqlite']}:\n{result['error']}"
    return result["facts"]


def minor(version):
    return tuple(int(part) for part in version.split(".")[:2])


def test_the_rewrite_is_allowed_on_exactly_the_sqlite_versions_tested_here(outcome):
    assert minor(outcome["sqlite"]) in fts5_structure.TESTED_SQLITE


@pytest.mark.skipif(not WHEELS, reason="pysqlite3-binary has no wheel for this platform")
def test_each_version_the_rewrite_is_allowed_on_is_tested_here():
    probes = ["import sqlite3 as s; print(s.sqlite_version)", "import pysqlite3.dbapi2 as s; print(s.sqlite_version)"]
    versions = {minor(subprocess.check_output([sys.executable, "-c", probe], text=True)) for probe in probes}
    assert versions == set(fts5_structure.TESTED_SQLITE)


def test_a_staged_build_into_empty_tables_puts_its_segments_on_levels_of_their_own(outcome):
    # Several segments (a small hashsize), each on a level of its own above level 0,
    # the oldest highest; integrity-check and searches pass before and after later writes.
    built = facts(outcome, "empty_staged")["levels"]
    assert len(built) > 1 and built == list(range(built[0], built[0] + len(built))) and built[0] >= 1


@pytest.mark.parametrize("scenario", ["empty_staged_switch_off", "empty_staged_untested_sqlite"])
def test_with_the_switch_off_or_on_an_untested_sqlite_the_build_is_optimized(outcome, scenario):
    assert facts(outcome, scenario)["levels"] == [1]  # FTS5's 'optimize': one segment, on level 1


def test_a_moved_record_that_reads_differently_is_put_back_and_optimized(outcome):
    found = facts(outcome, "empty_staged_self_check_fails")
    assert found["failed"] == [["ticket_search", "message_search"]]
    assert found["levels"] == [1]


@pytest.mark.parametrize("scenario", ["non_empty", "replace"])
def test_imports_with_live_search_triggers_keep_the_index_exact(outcome, scenario):
    assert facts(outcome, scenario) == {}


def test_nested_resources_and_string_ids_keep_every_search_index_exact(outcome):
    searched = facts(outcome, "nested_and_string_ids")["searched"]
    assert searched == ["episode_search", "message_search", "note_search", "show_search", "ticket_search"]

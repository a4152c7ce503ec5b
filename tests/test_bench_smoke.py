"""The benchmark keeps working: bench/run.py --smoke (tiny sizes, ~1 s each, no thresholds).

Needs wrk (`apt-get install wrk`). Skipped only when wrk is missing outside CI; in CI
(the CI environment variable set, as .ci/run and CI services do) a missing wrk fails.
With MEDUSA_V2_TEST_PG_URL set (CI sets it), the smoke includes a tiny PostgreSQL run
on a database of its own, dropped at the end.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def test_bench_smoke(tmp_path):
    if shutil.which("wrk") is None:
        if os.environ.get("CI"):
            pytest.fail("wrk is not installed (apt-get install wrk): CI must run the benchmark smoke test")
        pytest.skip("wrk is not installed (apt-get install wrk)")
    report = tmp_path / "benchmarks.md"
    done = subprocess.run(
        [
            sys.executable,
            str(ROOT / "bench" / "run.py"),
            "--smoke",
            "--output",
            str(report),
            "--workdir",
            str(tmp_path / "w"),
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    text = report.read_text()
    for heading in (
        "## Machine",
        "## Throughput, SQLite",
        "## Several processes, SQLite (`[API] processes = 2`",
        "## Scaling, SQLite",
        "## Import and export",
        "**ceiling**",
    ):
        assert heading in text
    for scenario in ("GET one (JWT)", "GET one (API key)", "(304)", "list of 20", "POST", "PATCH"):
        assert scenario in text
    stores = ["SQLite"]
    if os.environ.get("MEDUSA_V2_TEST_PG_URL", "").strip():
        stores.append("PostgreSQL")
        for heading in ("## Throughput, PostgreSQL", "## Scaling, PostgreSQL", "| PostgreSQL |"):
            assert heading in text
    else:
        assert "PostgreSQL not run" in text
    for store in stores:
        seeded = [line for line in text.splitlines() if line.startswith(f"| {store} | 300 |")]
        assert seeded and "| yes |" in seeded[0]  # import then export gave back the same bytes
    # The change feed (bench/events.py): 10 sockets each got the 20 changes, once and in order.
    assert "## Change feed" in text
    runs = [f"{store}, one daemon" for store in stores] + (["PostgreSQL, two daemons"] if len(stores) > 1 else [])
    for label in runs:
        row = [line for line in text.splitlines() if line.startswith(f"| {label} |")]
        assert row, label
        cells = [cell.strip() for cell in row[0].split("|")]
        assert cells[2] == "10/10" and cells[4] == "20" and cells[5] == "10", row[0]  # open, changes, complete
    assert "The request path, SQLite" in text
    for scenario in ("GET one (JWT)", "list of 20", "POST", "PATCH"):
        assert f"| {scenario} | " in text


def test_login_storm_smoke():
    """bench/login_storm.py runs and reports (its figures are read by people, not asserted here)."""
    done = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "login_storm.py"), "--clients", "4", "--seconds", "0.5"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert "/health calm :" in done.stdout and "/health storm:" in done.stdout

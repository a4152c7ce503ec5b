"""The suite on Tornado 6.5 too: the version Medusa vendors (its ext/ holds 6.5.2).

The installed Tornado (6.6 and later) runs the suite itself; this test installs
Tornado 6.5.2 into a directory of its own, puts it first on the path, and runs the
rest of the suite again in a child process.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import tornado

MEDUSA_TORNADO = "6.5.2"
ROOT = Path(__file__).resolve().parent.parent


def test_suite_passes_on_medusas_tornado(tmp_path_factory):
    target = tmp_path_factory.mktemp("tornado-" + MEDUSA_TORNADO)
    install = subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "install",
            "-q",
            "--no-deps",
            "--target",
            str(target),
            f"tornado=={MEDUSA_TORNADO}",
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert install.returncode == 0, install.stdout + install.stderr
    env = dict(
        os.environ, PYTHONPATH=os.pathsep.join([str(target), os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    )
    probe = subprocess.run(
        [sys.executable, "-c", "import tornado; print(tornado.version)"], env=env, capture_output=True, text=True
    )
    assert probe.stdout.strip() == MEDUSA_TORNADO != tornado.version
    run = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "-q",
            "-x",
            "-p",
            "no:cacheprovider",
            "--ignore",
            "tests/test_tornado_versions.py",
            "--ignore",
            "tests/test_habits.py",  # lint and types: the same code, already checked
            "tests",
        ],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=3600,
    )
    tail = "\n".join(run.stdout.splitlines()[-30:])
    assert run.returncode == 0, f"on Tornado {MEDUSA_TORNADO}:\n{tail}\n{run.stderr[-3000:]}"
    assert " passed" in tail and " failed" not in tail

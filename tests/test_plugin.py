"""The pytest plugin, used as an embedder would: the docs example runs and passes."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

DOC = Path(__file__).resolve().parent.parent / "docs" / "testing.md"


def test_docs_example_passes_with_the_installed_plugin(tmp_path):
    example = re.search(r"```python\n(.*?)```", DOC.read_text(), re.S).group(1)
    assert len([line for line in example.splitlines() if line.strip()]) < 20  # "under twenty lines"
    (tmp_path / "test_embedder.py").write_text(example)
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(tmp_path / "test_embedder.py")],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "1 passed" in result.stdout


def test_plugin_is_registered_through_the_pytest11_entry_point():
    from importlib.metadata import entry_points

    names = {ep.value for ep in entry_points(group="pytest11")}
    assert "medusa_v2.testing" in names


def test_a_broken_embedder_resource_fails_the_embedders_test(tmp_path):
    example = re.search(r"```python\n(.*?)```", DOC.read_text(), re.S).group(1)
    broken = example.replace('"show_name": "Dark"', '"show_name": "Lost"')
    (tmp_path / "test_embedder.py").write_text(broken)
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(tmp_path / "test_embedder.py")],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 1 and "1 failed" in result.stdout


@pytest.fixture
def config_values(config_values):
    return {**config_values, "API": {"cors_origins": ["https://a.example", "https://b.example:8443"]}}


def test_config_values_take_lists(settings):
    assert settings.cors_origins == ("https://a.example", "https://b.example:8443")

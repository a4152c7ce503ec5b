"""A short soak (the long one is `python tools/soak.py --minutes 30`, outside CI)."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tools"))

import soak  # noqa: E402


def test_short_soak_has_no_unexpected_status_and_flat_memory():
    report = soak.soak(seconds=15, clients=4, processes=1, sample_every=0.5)
    assert report.requests > 200, report
    assert report.unexpected == [], report.unexpected[:10]
    assert report.memory_flat, report.rss_kib


def test_memory_flat_judges_growth():
    growing = soak.Report(rss_kib=[50_000 + 5_000 * i for i in range(12)])
    flat = soak.Report(rss_kib=[50_000, 60_000, 61_000, 61_500, 61_000, 61_200, 61_300, 61_100, 61_400])
    assert not growing.memory_flat
    assert flat.memory_flat

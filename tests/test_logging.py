"""The daemon's log handler: lines written once per loop iteration, the access log without LogRecords."""

from __future__ import annotations

import io
import logging

import pytest

from medusa_v2 import accesslog
from medusa_v2.accesslog import LOG_FORMAT, LoopBufferedHandler, _direct_sink

NOW = 1_800_000_123.4567


def handler_with(fmt: logging.Formatter) -> tuple[LoopBufferedHandler, io.StringIO]:
    stream = io.StringIO()
    handler = LoopBufferedHandler(stream)
    handler.setFormatter(fmt)
    return handler, stream


@pytest.mark.parametrize("level", [logging.INFO, logging.ERROR])
def test_a_direct_line_is_the_line_logging_would_write(level, monkeypatch):
    monkeypatch.setattr(accesslog.time, "time", lambda: NOW)
    direct, direct_out = handler_with(logging.Formatter(LOG_FORMAT))
    assert direct.line(level, "medusa_v2.access", "GET /api/v2/ticket/1 200 0.4ms")
    direct.flush()
    logged, logged_out = handler_with(logging.Formatter(LOG_FORMAT))
    record = logging.LogRecord("medusa_v2.access", level, __file__, 1, "GET /api/v2/ticket/1 200 0.4ms", (), None)
    record.created, record.msecs = NOW, int((NOW - int(NOW)) * 1000) + 0.0
    logged.handle(record)
    logged.flush()
    assert direct_out.getvalue() == logged_out.getvalue()
    assert direct_out.getvalue().endswith("medusa_v2.access: GET /api/v2/ticket/1 200 0.4ms\n")
    assert ",456 " in direct_out.getvalue()


def test_other_formats_filters_and_levels_get_records():
    other, _ = handler_with(logging.Formatter("%(message)s"))
    assert not other.line(logging.INFO, "medusa_v2.access", "x")
    filtered, _ = handler_with(logging.Formatter(LOG_FORMAT))
    filtered.addFilter(lambda record: True)
    assert not filtered.line(logging.INFO, "medusa_v2.access", "x")
    quiet, out = handler_with(logging.Formatter(LOG_FORMAT))
    quiet.setLevel(logging.WARNING)
    assert not quiet.line(logging.INFO, "medusa_v2.access", "x")
    assert out.getvalue() == ""


def test_the_direct_sink_is_only_the_daemons_own_set_up(monkeypatch):
    root = logging.getLogger()
    ours, _ = handler_with(logging.Formatter(LOG_FORMAT))
    monkeypatch.setattr(root, "handlers", [ours])
    assert _direct_sink() is ours
    monkeypatch.setattr(root, "handlers", [ours, logging.NullHandler()])
    assert _direct_sink() is None  # another handler (pytest's caplog, an embedder's) sees records
    monkeypatch.setattr(root, "handlers", [ours])
    package = logging.getLogger("medusa_v2")
    monkeypatch.setattr(package, "handlers", [logging.NullHandler()])
    assert _direct_sink() is None
    monkeypatch.setattr(package, "handlers", [])
    monkeypatch.setattr(accesslog.access_log, "propagate", False)
    assert _direct_sink() is None

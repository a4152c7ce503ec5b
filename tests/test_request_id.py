"""X-Request-ID: kept when sane, generated otherwise, echoed on every answer, written in the access log."""

from __future__ import annotations

import io
import json
import logging
import re

import pytest
from conftest import API_KEY

from medusa_v2 import accesslog
from medusa_v2.accesslog import JsonFormatter, LoopBufferedHandler
from medusa_v2.request_id import is_sane, new_request_id

GENERATED = re.compile(r"[0-9a-f]{16}")


def rid(r) -> str:
    value = r.headers.get("X-Request-ID")
    assert value, (r.code, dict(r.headers))
    return value


async def seed(client) -> int:
    r = await client.post("/ticket", json_body={"title": "request ids"})
    assert r.code == 201
    return r.json["id"]


@pytest.mark.gen_test
async def test_every_kind_of_answer_echoes_the_clients_id(client, app):
    ticket = await seed(client)
    r = await client.get(f"/ticket/{ticket}")
    etag = r.headers["ETag"]
    fast_before = app.fast_answers
    sent = "trace-1:abc/DEF+x=y_z.@-"
    answers = {
        "fast GET": await client.get(f"/ticket/{ticket}", headers={"X-Request-ID": sent}),
        "304": await client.get(f"/ticket/{ticket}", headers={"X-Request-ID": sent, "If-None-Match": etag}),
        "list": await client.get("/ticket", headers={"X-Request-ID": sent}),
        "404": await client.get("/ticket/999999", headers={"X-Request-ID": sent}),
        "400": await client.get("/ticket/abc", headers={"X-Request-ID": sent}),
        "401": await client.get(f"/ticket/{ticket}", headers={"X-Request-ID": sent}, auth=None),
        "POST": await client.post("/ticket", json_body={"title": "t"}, headers={"X-Request-ID": sent}),
        "POST 400": await client.post(
            "/ticket", body=b"{", headers={"X-Request-ID": sent, "Content-Type": "application/json"}
        ),
        "PATCH": await client.patch(f"/ticket/{ticket}", json_body={"title": "u"}, headers={"X-Request-ID": sent}),
        "405": await client.request("TRACE", "/ticket", headers={"X-Request-ID": sent}),
        "OPTIONS": await client.options("/ticket", headers={"X-Request-ID": sent}, auth=None),
        "HEAD": await client.head(f"/ticket/{ticket}", headers={"X-Request-ID": sent}),
        "DELETE": await client.delete(f"/ticket/{ticket}", headers={"X-Request-ID": sent}),
        "health": await client.get("/health", headers={"X-Request-ID": sent}, auth=None),
        "openapi": await client.get("/openapi.json", headers={"X-Request-ID": sent}, auth=None),
        "config": await client.get("/config", headers={"X-Request-ID": sent}),
        "authenticate 400": await client.post("/authenticate", json_body=[], headers={"X-Request-ID": sent}, auth=None),
        "catch-all 404": await client.get("/nowhere", headers={"X-Request-ID": sent}, auth=None),
    }
    statuses = {name: r.code for name, r in answers.items()}
    assert statuses["304"] == 304 and statuses["401"] == 401 and statuses["405"] == 405, statuses
    assert statuses["OPTIONS"] == 204 and statuses["POST"] == 201 and statuses["catch-all 404"] == 404, statuses
    assert {name: rid(r) for name, r in answers.items()} == dict.fromkeys(answers, sent)
    assert app.fast_answers > fast_before  # the fast path answered some of them


@pytest.mark.gen_test
async def test_an_absent_id_is_generated_once_per_request(client):
    ticket = await seed(client)
    ids = [rid(await client.get(f"/ticket/{ticket}")) for _ in range(3)]
    ids.append(rid(await client.get("/ticket/999999")))
    ids.append(rid(await client.get("/ticket", auth=None)))
    assert all(GENERATED.fullmatch(value) for value in ids), ids
    assert len(set(ids)) == len(ids)


@pytest.mark.parametrize(
    "bad",
    ["", " ", "a" * 129, "has space", "semi;colon", 'quote"d', "comma,list", "é", "tab\there", "<script>"],
    ids=lambda v: repr(v)[:20],
)
@pytest.mark.gen_test
async def test_an_insane_id_is_replaced_not_refused(client, bad):
    r = await client.get("/ticket", headers={"X-Request-ID": bad.encode("utf-8").decode("latin-1")})
    assert r.code == 200
    assert GENERATED.fullmatch(rid(r)), rid(r)


def test_what_is_sane():
    assert is_sane("a") and is_sane("a" * 128) and is_sane("0af7651916cd43dd8448eb211c80319c")
    assert is_sane("Root=1-67891233-abcdef012345678912345678")  # AWS X-Amzn-Trace-Id's form
    assert not is_sane("") and not is_sane("a" * 129) and not is_sane("a b") and not is_sane("a\n")
    assert GENERATED.fullmatch(new_request_id())


@pytest.mark.gen_test
async def test_the_access_log_line_carries_the_id(client, caplog):
    caplog.set_level(logging.INFO, "medusa_v2.access")
    await client.get("/ticket", headers={"X-Request-ID": "client-chosen-1"})
    r = await client.get("/ticket/999999")
    lines = [rec.getMessage() for rec in caplog.records if rec.name == "medusa_v2.access"]
    assert lines[0].endswith(" request_id=client-chosen-1"), lines
    assert lines[1].endswith(f" request_id={rid(r)}"), lines


# -- log_format = json ---------------------------------------------------------------


@pytest.fixture
def json_log(monkeypatch):
    """Route the access log to one LoopBufferedHandler formatting JSON, as the daemon sets it up."""
    stream = io.StringIO()
    handler = LoopBufferedHandler(stream)
    handler.setFormatter(JsonFormatter())
    root = logging.getLogger()
    monkeypatch.setattr(root, "handlers", [handler])
    monkeypatch.setattr(accesslog.access_log, "handlers", [])
    monkeypatch.setattr(accesslog.access_log, "propagate", True)
    monkeypatch.setattr(logging.getLogger("medusa_v2"), "handlers", [])
    monkeypatch.setattr(logging.getLogger("medusa_v2"), "propagate", True)
    monkeypatch.setattr(accesslog.access_log, "level", logging.INFO)
    assert accesslog._direct_sink() is handler  # the daemon's fast path, not LogRecords

    def lines() -> list[dict]:
        handler.flush()
        return [json.loads(line) for line in stream.getvalue().splitlines()]

    return lines


@pytest.mark.gen_test
async def test_json_lines_parse_and_hold_no_secret(client, json_log):
    token = "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJ4In0.c2lnbmF0dXJl"
    await client.get(
        f"/ticket?api_key={API_KEY}&x=1", auth=None, headers={"X-Request-ID": "r-1", "User-Agent": "probe/1"}
    )
    await client.get(f"/ticket?token={token}&API%5Fkey={API_KEY}", auth=None)
    await client.get(f"/ticket/1?to%6Ben={token}")
    await client.get("/ticket", auth=None, headers={"X-Api-Key": API_KEY})
    docs = json_log()
    assert len(docs) == 4, docs
    first = docs[0]
    assert first["path"] == "/api/v2/ticket?api_key=[redacted]&x=1"
    assert first["method"] == "GET" and first["status"] == 200 and first["request_id"] == "r-1"
    assert first["remote_ip"] == "127.0.0.1" and first["user_agent"] == "probe/1"
    assert first["level"] == "INFO" and first["logger"] == "medusa_v2.access" and isinstance(first["pid"], int)
    assert isinstance(first["duration_ms"], float) and first["duration_ms"] >= 0
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", first["time"])
    assert docs[1]["path"] == "/api/v2/ticket?token=[redacted]&API%5Fkey=[redacted]" and docs[1]["status"] == 401
    text = json.dumps(docs)
    assert API_KEY not in text and token not in text


def test_a_json_line_without_a_record_is_what_the_formatter_writes(monkeypatch):
    now = 1_800_000_123.4567
    monkeypatch.setattr(accesslog.time, "time", lambda: now)
    stream = io.StringIO()
    handler = LoopBufferedHandler(stream)
    handler.setFormatter(JsonFormatter())
    fields = {"method": "GET", "path": "/x", "status": 200}
    assert handler.json_line(logging.INFO, "medusa_v2.access", "GET /x 200", fields)
    record = logging.LogRecord("medusa_v2.access", logging.INFO, __file__, 1, "GET /x 200", (), None)
    record.created = now
    record.access = fields
    handler.handle(record)
    handler.flush()
    direct, logged = (json.loads(line) for line in stream.getvalue().splitlines())
    assert direct == logged
    assert direct["time"] == "2027-01-15T08:02:03.456Z"


def test_json_lines_are_one_line_whatever_the_message():
    record = logging.LogRecord("medusa_v2", logging.ERROR, __file__, 1, "two\nlines \u2028 é", (), None)
    try:
        raise ValueError("boom\nboom")
    except ValueError:
        import sys

        record.exc_info = sys.exc_info()
    text = JsonFormatter().format(record)
    assert "\n" not in text and text.isascii()
    doc = json.loads(text)
    assert doc["message"] == "two\nlines \u2028 é" and "ValueError: boom" in doc["exc_info"]


def test_log_format_is_text_or_json():
    from medusa_v2.settings import Settings, SettingsError

    assert Settings().log_format == "text"
    assert Settings(log_format=" JSON ").log_format == "json"
    with pytest.raises(SettingsError, match=r"log_format: 'xml' is not a log format \(text or json\)"):
        Settings(log_format="xml")

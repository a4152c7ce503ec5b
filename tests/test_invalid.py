"""Validation's plain error: no Tornado below the HTTP layer, and the same 400 over HTTP."""

from __future__ import annotations

import json
import logging
import subprocess
import sys

import pytest

from medusa_v2.declaration import invalid
from medusa_v2.invalid import InvalidRequest
from medusa_v2.listing import parse_list_query
from medusa_v2.resources.ticket import TicketResource

TICKET = TicketResource.declaration


def test_declarations_lists_and_stores_import_without_tornado():
    modules = ["medusa_v2.declaration", "medusa_v2.listing", "medusa_v2.store", "medusa_v2.store.sqlite"]
    code = (
        "import importlib.util, sys\n"
        f"for name in {modules!r}: importlib.import_module(name)\n"
        "if importlib.util.find_spec('psycopg') is not None: importlib.import_module('medusa_v2.store.postgres')\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] == 'tornado'))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60)
    assert out.stdout.strip() == "[]", out.stdout


def test_validation_raises_the_plain_error():
    with pytest.raises(InvalidRequest) as caught:
        TICKET.parse_create({"priority": 9})
    assert caught.value.status == 400
    assert caught.value.errors == {"priority": "must be between 1 and 5", "title": "required field"}
    with pytest.raises(InvalidRequest, match="^Invalid 'order'"):
        parse_list_query(TICKET, {"order": ["up"]})
    assert invalid({"a": "b"}).body() == {"error": "Invalid request body: a: b", "errors": {"a": "b"}}


@pytest.mark.gen_test
async def test_a_body_validation_error_is_the_same_400(client, caplog):
    with caplog.at_level(logging.DEBUG):
        r = await client.post("/ticket", json_body={"priority": 9})
    assert r.code == 400
    assert r.headers["Content-Type"] == "application/json; charset=UTF-8"
    assert r.headers["X-Medusa-Server"]
    assert r.headers["Access-Control-Allow-Origin"] == "*"
    assert json.loads(r.body) == {
        "error": "Invalid request body: priority: must be between 1 and 5; title: required field",
        "errors": {"priority": "must be between 1 and 5", "title": "required field"},
    }
    assert not [rec for rec in caplog.records if rec.levelno >= logging.WARNING], "a client mistake is not logged"


@pytest.mark.gen_test
@pytest.mark.parametrize("method", ["GET", "HEAD"])
async def test_a_query_validation_error_is_the_same_400(client, method):
    r = await client.request(method, "/ticket?order=up")
    assert r.code == 400
    if method == "GET":
        assert json.loads(r.body) == {"error": "Invalid 'order': must be 'asc' or 'desc'"}
    else:
        assert r.body == b""

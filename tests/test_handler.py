"""The base handler over real HTTP: headers on every response, CORS, OPTIONS, 405,
the JSON 404, request-body parsing (400/413/415), camelCase out and 500s.

The resources mounted here are written exactly as an embedder would write them.
"""

from __future__ import annotations

import json
import logging
import socket
from typing import Any

import pytest
import tornado.httpclient
import tornado.iostream
from conftest import API_KEY, PASSWORD, USERNAME

import medusa_v2
from medusa_v2.errors import ApiError
from medusa_v2.handler import ApiHandler
from medusa_v2.listing import Page
from medusa_v2.resource import Resource

JSON_TYPE = "application/json; charset=UTF-8"
ALLOW_HEADERS = [
    "Origin",
    "Accept",
    "Authorization",
    "Content-Type",
    "X-Requested-With",
    "X-Api-Key",
    "X-Auth",
    "If-Match",
    "If-None-Match",
    "Idempotency-Key",
]
EXPOSE_HEADERS = [
    "Link",
    "ETag",
    "Location",
    "X-Medusa-Server",
    "X-Pagination-Page",
    "X-Pagination-Limit",
    "X-Pagination-Count",
    "X-Pagination-Total",
    "Retry-After",
]


# -- resources of our own, as an embedder writes them --------------------------------


class Widget(Resource):
    """Every method; no declaration (JSON in, snake_case dicts out)."""

    name = "widget"
    instances: list[Widget] = []

    def __init__(self, api) -> None:
        super().__init__(api)
        self.items: dict[int, dict[str, Any]] = {1: {"id": 1, "display_name": "first", "unit_price": 3}}
        self.next_id = 2
        self.calls: list[str] = []
        Widget.instances.append(self)

    async def list(self, query, **ids):
        self.calls.append("list")
        items = sorted(self.items.values(), key=lambda i: i["id"])
        return Page(items[query.offset : query.offset + query.limit], len(items))

    async def retrieve(self, widget_id):
        self.calls.append("retrieve")
        try:
            return self.items[widget_id]
        except KeyError:
            raise ApiError(404, f"Widget {widget_id} not found") from None

    async def create(self, values):
        self.calls.append("create")
        item = {"id": self.next_id, "display_name": values.get("displayName"), "unit_price": values.get("unitPrice")}
        self.items[self.next_id] = item
        self.next_id += 1
        return item

    async def replace(self, values, precondition, widget_id):
        self.calls.append("replace")
        item = {"id": widget_id, "display_name": values.get("displayName"), "unit_price": values.get("unitPrice")}
        self.items[widget_id] = item
        return item

    async def update(self, values, precondition, widget_id):
        self.calls.append("update")
        item = self.items[widget_id]
        if "displayName" in values:
            item["display_name"] = values["displayName"]
        return item

    async def delete(self, precondition, widget_id):
        self.calls.append("delete")
        self.items.pop(widget_id, None)


class Gadget(Resource):
    """Only some methods: the collection has GET, the item GET and DELETE."""

    name = "gadget"

    async def list(self, query, **ids):
        return Page([], 0)

    async def retrieve(self, gadget_id):
        return {"id": gadget_id}

    async def delete(self, precondition, gadget_id):
        return None


class Boom(Resource):
    """A resource whose methods fail like buggy embedder code does."""

    name = "boom"

    async def retrieve(self, boom_id):
        raise RuntimeError("kaboom in retrieve")

    async def create(self, values):
        raise KeyError("kaboom in create")


@pytest.fixture
def resources():
    Widget.instances.clear()
    return [Widget, Gadget, Boom]


@pytest.fixture
def overrides() -> dict[str, Any]:
    """Settings changes for one test: parametrize `overrides` to change them."""
    return {}


@pytest.fixture
def settings(settings, overrides):
    return settings.replace(**overrides)


@pytest.fixture
def widget(app) -> Widget:
    """The Widget instance mounted in this test's app."""
    assert len(Widget.instances) == 1
    return Widget.instances[0]


def split(value: str | None) -> list[str]:
    return [part.strip() for part in (value or "").split(",") if part.strip()]


def assert_error(r, status: int, message: str | None = None) -> dict[str, Any]:
    assert r.code == status, (r.code, r.body)
    assert r.headers["X-Medusa-Server"] == medusa_v2.__version__
    assert r.headers["Content-Type"] == JSON_TYPE
    doc = json.loads(r.body)
    assert isinstance(doc.get("error"), str) and doc["error"]
    if message is not None:
        assert doc["error"] == message
    assert "traceback" not in doc
    return doc


# -- every response --------------------------------------------------------------------


@pytest.mark.gen_test
async def test_success_carries_version_json_type_and_cors(client):
    r = await client.get("/widget/1")
    assert r.code == 200
    assert r.headers["X-Medusa-Server"] == medusa_v2.__version__
    assert r.headers["Content-Type"] == JSON_TYPE
    assert r.headers["Access-Control-Allow-Origin"] == "*"
    assert split(r.headers["Vary"]) == ["Authorization", "X-Auth", "X-Api-Key", "Accept-Encoding"]
    assert r.headers["Cache-Control"] == "private, no-cache"
    allow_headers = {h.lower() for h in split(r.headers["Access-Control-Allow-Headers"])}
    assert {h.lower() for h in ALLOW_HEADERS} <= allow_headers
    expose = {h.lower() for h in split(r.headers["Access-Control-Expose-Headers"])}
    assert {h.lower() for h in EXPOSE_HEADERS} <= expose
    assert set(split(r.headers["Access-Control-Allow-Methods"])) == {"GET", "HEAD", "PUT", "PATCH", "DELETE", "OPTIONS"}


@pytest.mark.gen_test
async def test_error_responses_carry_version_cors_and_json(client, settings):
    big = b"{" + b" " * settings.max_body_size + b"}"
    cases = [
        (await client.get("/widget/1", auth=None), 401),
        (await client.get("/nope"), 404),
        (await client.get("/widget/77"), 404),
        (await client.post("/gadget", json_body={}), 405),
        (await client.post("/widget", body=b"{oops", headers={"Content-Type": "application/json"}), 400),
        (await client.post("/widget", body=big, headers={"Content-Type": "application/json"}), 413),
        (await client.post("/widget", body=b"a=1", headers={"Content-Type": "text/plain"}), 415),
        (await client.get("/boom/1"), 500),
    ]
    for r, status in cases:
        assert_error(r, status)
        assert r.headers["Access-Control-Allow-Origin"] == "*"
        assert "Link" in r.headers["Access-Control-Expose-Headers"]


@pytest.mark.parametrize("overrides", [{"cors_origins": ("https://app.example", "http://localhost:9000")}])
@pytest.mark.gen_test
async def test_configured_origins_are_echoed_with_vary(client):
    r = await client.get("/widget/1", headers={"Origin": "https://app.example"})
    assert r.code == 200
    assert r.headers["Access-Control-Allow-Origin"] == "https://app.example"
    assert "Origin" in split(r.headers["Vary"])
    r = await client.get("/widget/1", headers={"Origin": "http://localhost:9000"})
    assert r.headers["Access-Control-Allow-Origin"] == "http://localhost:9000"
    # Errors say the same, so the browser can read the error body.
    r = await client.get("/widget/1", headers={"Origin": "https://app.example"}, auth=None)
    assert r.code == 401
    assert r.headers["Access-Control-Allow-Origin"] == "https://app.example"
    assert "Origin" in split(r.headers["Vary"])


@pytest.mark.parametrize("overrides", [{"cors_origins": ("https://app.example",)}])
@pytest.mark.gen_test
async def test_foreign_origin_gets_no_allow_origin(client):
    for origin in ("https://evil.example", "https://app.example.evil.example", "null"):
        r = await client.get("/widget/1", headers={"Origin": origin})
        assert r.code == 200
        assert "Access-Control-Allow-Origin" not in r.headers
        assert "Origin" in split(r.headers["Vary"])
    r = await client.get("/widget/1")
    assert "Access-Control-Allow-Origin" not in r.headers


# -- OPTIONS -------------------------------------------------------------------------


@pytest.mark.parametrize(
    "path, methods",
    [
        ("/widget", {"GET", "HEAD", "POST", "OPTIONS"}),
        ("/widget/1", {"GET", "HEAD", "PUT", "PATCH", "DELETE", "OPTIONS"}),
        ("/gadget", {"GET", "HEAD", "OPTIONS"}),
        ("/gadget/7", {"GET", "HEAD", "DELETE", "OPTIONS"}),
        ("/gadget/7/", {"GET", "HEAD", "DELETE", "OPTIONS"}),
    ],
)
@pytest.mark.gen_test
async def test_options_lists_the_route_methods_without_credentials(client, path, methods):
    r = await client.options(path, auth=None)
    assert r.code == 204
    assert r.body == b""
    assert set(split(r.headers["Allow"])) == methods
    assert set(split(r.headers["Access-Control-Allow-Methods"])) == methods
    assert r.headers["X-Medusa-Server"] == medusa_v2.__version__
    assert r.headers["Access-Control-Allow-Origin"] == "*"


@pytest.mark.gen_test
async def test_browser_preflight(client):
    r = await client.options(
        "/gadget/3",
        auth=None,
        headers={
            "Origin": "https://ui.example",
            "Access-Control-Request-Method": "DELETE",
            "Access-Control-Request-Headers": "x-auth, content-type",
        },
    )
    assert r.code == 204
    assert r.headers["Access-Control-Allow-Origin"] == "*"
    assert "DELETE" in split(r.headers["Access-Control-Allow-Methods"])
    assert "PUT" not in split(r.headers["Access-Control-Allow-Methods"])
    allowed = {h.lower() for h in split(r.headers["Access-Control-Allow-Headers"])}
    assert {"x-auth", "content-type"} <= allowed


@pytest.mark.parametrize("overrides", [{"cors_origins": ("https://ui.example",)}])
@pytest.mark.gen_test
async def test_preflight_with_configured_origin(client):
    r = await client.options(
        "/widget",
        auth=None,
        headers={
            "Origin": "https://ui.example",
            "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "x-auth",
        },
    )
    assert r.code == 204
    assert r.headers["Access-Control-Allow-Origin"] == "https://ui.example"
    assert r.headers["Access-Control-Max-Age"] == "600"  # a preflight's answer may be reused 10 minutes
    assert "Origin" in split(r.headers["Vary"])
    assert set(split(r.headers["Access-Control-Allow-Methods"])) == {"GET", "HEAD", "POST", "OPTIONS"}


# -- 405 and 404 ---------------------------------------------------------------------


@pytest.mark.parametrize(
    "method, path, allow",
    [
        ("POST", "/gadget", {"GET", "HEAD", "OPTIONS"}),
        ("PUT", "/gadget/1", {"GET", "HEAD", "DELETE", "OPTIONS"}),
        ("PATCH", "/gadget/1", {"GET", "HEAD", "DELETE", "OPTIONS"}),
        ("DELETE", "/widget", {"GET", "HEAD", "POST", "OPTIONS"}),
        ("POST", "/widget/1", {"GET", "HEAD", "PUT", "PATCH", "DELETE", "OPTIONS"}),
    ],
)
@pytest.mark.gen_test
async def test_unimplemented_verb_is_405_with_allow(client, method, path, allow):
    body = b"{}" if method in ("POST", "PUT", "PATCH") else None
    r = await client.request(method, path, body=body, headers={"Content-Type": "application/json"})
    assert r.code == 405
    assert set(split(r.headers["Allow"])) == allow
    assert r.headers["X-Medusa-Server"] == medusa_v2.__version__
    if method != "HEAD":
        assert_error(r, 405)


@pytest.mark.parametrize("method", ["TRACE", "PROPFIND", "CONNECT"])
@pytest.mark.gen_test
async def test_unknown_verb_is_405_with_allow(client, method):
    r = await client.request(method, "/gadget/1")
    assert_error(r, 405)
    assert set(split(r.headers["Allow"])) == {"GET", "HEAD", "DELETE", "OPTIONS"}


@pytest.mark.gen_test
async def test_405_needs_no_credentials_and_changes_nothing(client, widget):
    r = await client.request("POST", "/widget/1", json_body={"displayName": "x"}, auth=None)
    assert r.code == 405
    assert widget.calls == []


@pytest.mark.parametrize("method", ["GET", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "TRACE", "PROPFIND"])
@pytest.mark.parametrize("path", ["/nope", "/nope/1/deeper", "/widget/1/extra", "/health/x", "/authenticatex"])
@pytest.mark.gen_test
async def test_unknown_path_is_json_404_for_any_verb_without_credentials(client, method, path):
    body = b"{}" if method in ("POST", "PUT", "PATCH") else None
    r = await client.request(method, path, body=body, headers={"Content-Type": "application/json"}, auth=None)
    doc = assert_error(r, 404)
    assert "WWW-Authenticate" not in r.headers
    assert path in doc["error"]


@pytest.mark.gen_test
async def test_head_on_unknown_path_is_404_without_body(client):
    r = await client.request("HEAD", "/nope", auth=None)
    assert r.code == 404
    assert r.body == b""
    assert r.headers["X-Medusa-Server"] == medusa_v2.__version__


@pytest.mark.gen_test
async def test_api_root_itself_is_json_404(client):
    for path in ("", "/"):
        assert_error(await client.get(path, auth=None), 404)


@pytest.mark.gen_test
async def test_trailing_slash_is_accepted(client):
    r = await client.get("/widget/")
    assert r.code == 200 and json.loads(r.body)[0]["id"] == 1
    r = await client.get("/widget/1/")
    assert r.code == 200 and json.loads(r.body)["id"] == 1
    r = await client.post("/widget/", json_body={"displayName": "slash"})
    assert r.code == 201
    assert r.headers["Location"].endswith("/api/v2/widget/2")


# -- JSON request bodies -------------------------------------------------------------


BAD_JSON_BODIES = [
    pytest.param(b"{oops", id="malformed"),
    pytest.param(b'{"a": 1', id="truncated"),
    pytest.param(b"null", id="null"),
    pytest.param(b"[]", id="array"),
    pytest.param(b'[{"displayName": "x"}]', id="array-of-object"),
    pytest.param(b"42", id="number"),
    pytest.param(b'"text"', id="string"),
    pytest.param(b"true", id="boolean"),
    pytest.param(b"", id="empty"),
    pytest.param(b"   \n", id="blank"),
    pytest.param(b'{"displayName": "\xff\xfe"}', id="invalid-utf8"),
    pytest.param(b'{"displayName": "\xed\xa0\x80"}', id="utf8-surrogate"),
    pytest.param(b'{"unitPrice": NaN}', id="nan"),
    pytest.param(b'{"unitPrice": Infinity}', id="infinity"),
    pytest.param(b'{"unitPrice": -Infinity}', id="minus-infinity"),
    pytest.param(b"[" * 100000, id="deep-array-open"),
    pytest.param(b"[" * 100000 + b"]" * 100000, id="deep-array"),
    pytest.param(b'{"a":' * 50000 + b"1" + b"}" * 50000, id="deep-object"),
    pytest.param(b'{"a": 1} {"b": 2}', id="two-documents"),
    pytest.param(b"\xef\xbb\xbf{}", id="bom"),
]


@pytest.mark.parametrize("body", BAD_JSON_BODIES)
@pytest.mark.parametrize("method, path", [("POST", "/widget"), ("PUT", "/widget/1"), ("PATCH", "/widget/1")])
@pytest.mark.gen_test
async def test_bad_json_body_is_400_and_changes_nothing(client, widget, body, method, path):
    before = json.dumps(widget.items, sort_keys=True)
    r = await client.request(method, path, body=body, headers={"Content-Type": "application/json"})
    assert_error(r, 400)
    assert widget.calls == []
    assert json.dumps(widget.items, sort_keys=True) == before


@pytest.mark.parametrize(
    "ctype",
    [
        "application/x-www-form-urlencoded",
        "text/plain",
        "multipart/form-data; boundary=x",
        "application/json; charset=latin-1",
        "application/jsonx",
        "text/json",
    ],
)
@pytest.mark.gen_test
async def test_non_json_content_type_is_415_and_changes_nothing(client, widget, ctype):
    r = await client.post("/widget", body=b'{"displayName": "x"}', headers={"Content-Type": ctype})
    assert_error(r, 415)
    r = await client.patch("/widget/1", body=b"displayName=x", headers={"Content-Type": ctype})
    assert_error(r, 415)
    assert widget.calls == []
    assert widget.items[1]["display_name"] == "first"


@pytest.mark.gen_test
async def test_body_without_content_type_is_415(client, widget):
    r = await client.post("/widget", body=b'{"displayName": "x"}', headers={"Content-Type": ""})
    assert_error(r, 415)
    assert widget.calls == []


@pytest.mark.parametrize(
    "ctype",
    [
        "application/json",
        "application/json; charset=UTF-8",
        "application/json;charset=utf-8",
        "Application/JSON",
        "application/merge-patch+json",
    ],
)
@pytest.mark.gen_test
async def test_json_content_types_are_accepted(client, widget, ctype):
    r = await client.patch("/widget/1", body=b'{"displayName": "ok"}', headers={"Content-Type": ctype})
    assert r.code == 200, r.body
    assert json.loads(r.body) == {"displayName": "ok"}


@pytest.mark.parametrize("overrides", [{"max_body_size": 1000}])
@pytest.mark.gen_test
async def test_body_over_limit_by_content_length_is_413(client, widget):
    body = json.dumps({"displayName": "x" * 1200}).encode()
    r = await client.post("/widget", body=body, headers={"Content-Type": "application/json"})
    doc = assert_error(r, 413)
    assert "1000" in doc["error"]
    assert widget.calls == []
    # At the limit exactly it is accepted.
    body = json.dumps({"displayName": "y" * (1000 - len('{"displayName": ""}'))}).encode()
    assert len(body) == 1000
    r = await client.post("/widget", body=body, headers={"Content-Type": "application/json"})
    assert r.code == 201, r.body


@pytest.mark.parametrize("overrides", [{"max_body_size": 1000}])
@pytest.mark.gen_test
async def test_chunked_body_over_limit_is_413(http_client, base_url, widget):
    async def producer(write):
        await write(b'{"displayName": "')
        for _ in range(10):
            await write(b"z" * 200)
        await write(b'"}')

    r = await http_client.fetch(
        base_url + "/api/v2/widget",
        method="POST",
        headers={"Content-Type": "application/json", "X-Api-Key": API_KEY},
        body_producer=producer,
        raise_error=False,
    )
    assert r.request.headers.get("Content-Length") is None  # really chunked
    assert_error(r, 413)
    assert widget.calls == []


@pytest.mark.parametrize("overrides", [{"max_body_size": 1000}])
@pytest.mark.gen_test
async def test_chunked_body_under_limit_is_accepted(http_client, base_url, widget):
    async def producer(write):
        await write(b'{"displayName": ')
        await write(b'"chunked"}')

    r = await http_client.fetch(
        base_url + "/api/v2/widget",
        method="POST",
        headers={"Content-Type": "application/json", "X-Api-Key": API_KEY},
        body_producer=producer,
        raise_error=False,
    )
    assert r.code == 201, r.body
    assert json.loads(r.body)["displayName"] == "chunked"


@pytest.mark.parametrize("overrides", [{"max_body_size": 1000}])
@pytest.mark.gen_test
async def test_chunked_body_over_limit_on_raw_socket(http_server, http_port, widget):
    stream = tornado.iostream.IOStream(socket.socket())
    await stream.connect(("127.0.0.1", http_port))
    head = (
        "POST /api/v2/widget HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\n"
        f"X-Api-Key: {API_KEY}\r\nTransfer-Encoding: chunked\r\n\r\n"
    ).encode()
    chunk = b"x" * 600
    body = b"".join(b"%x\r\n%s\r\n" % (len(c), c) for c in (b'{"a":"', chunk, chunk, b'"}')) + b"0\r\n\r\n"
    await stream.write(head + body)
    status = await stream.read_until(b"\r\n")
    assert b" 413 " in status
    headers = await stream.read_until(b"\r\n\r\n")
    assert medusa_v2.__version__.encode() in headers
    stream.close()
    assert widget.calls == []


@pytest.mark.gen_test
async def test_invalid_content_length_is_400(http_server, http_port, widget):
    stream = tornado.iostream.IOStream(socket.socket())
    await stream.connect(("127.0.0.1", http_port))
    await stream.write(
        b"POST /api/v2/widget HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\n"
        + f"X-Api-Key: {API_KEY}\r\nContent-Length: -5\r\n\r\n".encode()
    )
    status = await stream.read_until(b"\r\n")
    assert b" 400 " in status
    headers = await stream.read_until(b"\r\n\r\n")
    assert medusa_v2.__version__.encode() in headers
    stream.close()
    assert widget.calls == []


# -- JSON out ------------------------------------------------------------------------


@pytest.mark.gen_test
async def test_undeclared_resource_output_is_camel_case(client):
    r = await client.get("/widget/1")
    assert json.loads(r.body) == {"id": 1, "displayName": "first", "unitPrice": 3}
    r = await client.get("/widget")
    assert json.loads(r.body) == [{"id": 1, "displayName": "first", "unitPrice": 3}]
    r = await client.post("/widget", json_body={"displayName": "new", "unitPrice": 9})
    assert r.code == 201
    assert json.loads(r.body) == {"id": 2, "displayName": "new", "unitPrice": 9}
    assert r.headers["Content-Type"] == JSON_TYPE


@pytest.mark.gen_test
async def test_non_ascii_text_round_trips(client, widget):
    r = await client.post("/widget", json_body={"displayName": "Grüße 🐍"})
    assert r.code == 201
    assert json.loads(r.body.decode("utf-8"))["displayName"] == "Grüße 🐍"
    assert widget.items[2]["display_name"] == "Grüße 🐍"


# -- 500 -------------------------------------------------------------------------------


@pytest.mark.gen_test
async def test_uncaught_exception_is_500_without_traceback(client):
    r = await client.get("/boom/1")
    doc = assert_error(r, 500, "Internal server error")
    assert doc == {"error": "Internal server error"}
    assert b"kaboom" not in r.body
    assert b"Traceback" not in r.body


@pytest.mark.parametrize("overrides", [{"developer": True}])
@pytest.mark.gen_test
async def test_developer_mode_shows_the_traceback(client):
    r = await client.get("/boom/1")
    assert r.code == 500
    doc = json.loads(r.body)
    assert doc["error"] == "Internal server error"
    text = "".join(doc["traceback"])
    assert "kaboom in retrieve" in text
    assert "RuntimeError" in text


@pytest.mark.gen_test
async def test_uncaught_exception_is_logged_without_credentials_or_body(client, caplog):
    token_marker = "Bearer eyJtoken-marker.payload.sig"
    body = json.dumps({"secretField": "BODY-MARKER-123"})
    with caplog.at_level(logging.DEBUG):
        r = await client.request(
            "POST",
            f"/boom?api_key={API_KEY}&x=1",
            body=body,
            headers={
                "Content-Type": "application/json",
                "x-auth": token_marker,
                "Authorization": "Basic " + "dXNlcjpwYXNzd29yZA==",
            },
            auth=None,
        )
    assert r.code == 500
    errors = [rec for rec in caplog.records if rec.levelno >= logging.ERROR and rec.exc_info]
    assert errors, "the uncaught exception was not logged"
    text = "\n".join(caplog.text.splitlines()) + "\n".join(rec.getMessage() for rec in caplog.records)
    assert "POST" in errors[0].getMessage()
    assert "/api/v2/boom" in errors[0].getMessage()
    assert "KeyError" in caplog.text
    for secret in (API_KEY, "eyJtoken-marker", "dXNlcjpwYXNzd29yZA==", "BODY-MARKER-123", PASSWORD):
        assert secret not in text
    assert USERNAME not in errors[0].getMessage()


@pytest.mark.parametrize("overrides", [{"cors_origins": ("https://app.example",), "web_use_gzip": True}])
@pytest.mark.gen_test
async def test_gzip_keeps_vary_origin(client, widget):
    widget.items[1]["display_name"] = "x" * 5000  # worth compressing
    r = await client.get("/widget/1", headers={"Origin": "https://app.example", "Accept-Encoding": "gzip"})
    assert r.code == 200
    vary = split(r.headers["Vary"])
    assert sorted(vary) == sorted(["Authorization", "X-Auth", "X-Api-Key", "Origin", "Accept-Encoding"])  # once each
    assert r.headers["Access-Control-Allow-Origin"] == "https://app.example"


@pytest.mark.parametrize("overrides", [{"web_use_gzip": True}])
@pytest.mark.gen_test
async def test_a_gzipped_answer_has_its_own_etag_and_revalidates(http_client, base_url, widget):
    """RFC 9110 8.8.3: one strong tag per encoding; either tag revalidates the item."""
    widget.items[1]["display_name"] = "x" * 5000  # worth compressing
    widget.items[2] = {"id": 2, "display_name": "small", "unit_price": 1}  # not worth it

    async def get(path, gzip, **headers):
        # decompress_response=False: the client sends no Accept-Encoding of its own.
        headers = {"X-Api-Key": API_KEY, **({"Accept-Encoding": "gzip"} if gzip else {}), **headers}
        return await http_client.fetch(
            f"{base_url}/api/v2{path}", headers=headers, decompress_response=False, raise_error=False
        )

    plain = await get("/widget/1", False)
    zipped = await get("/widget/1", True)
    assert "Content-Encoding" not in plain.headers
    assert zipped.headers["Content-Encoding"] == "gzip"
    assert zipped.headers["ETag"] == plain.headers["ETag"][:-1] + '-gzip"'
    for tag in (plain.headers["ETag"], zipped.headers["ETag"]):
        r = await get("/widget/1", True, **{"If-None-Match": tag})
        assert r.code == 304 and r.headers["ETag"] == zipped.headers["ETag"]
        r = await get("/widget/1", False, **{"If-None-Match": tag})
        assert r.code == 304 and r.headers["ETag"] == plain.headers["ETag"]
    assert (await get("/widget/1", False, **{"If-None-Match": '"other-gzip"'})).code == 200
    small = await get("/widget/2", True)
    assert "Content-Encoding" not in small.headers
    assert small.headers["ETag"] == (await get("/widget/2", False)).headers["ETag"]


@pytest.mark.parametrize("raw", ["abc", "0", "-1", "1.5", "9223372036854775808", "%2F"])
@pytest.mark.gen_test
async def test_bad_identifier_is_400_for_every_verb(client, widget, raw):
    for method in ("GET", "PUT", "PATCH", "DELETE"):
        body = b'{"displayName": "x"}' if method in ("PUT", "PATCH") else None
        r = await client.request(method, f"/widget/{raw}", body=body, headers={"Content-Type": "application/json"})
        assert_error(r, 400)
    assert widget.calls == []


@pytest.mark.parametrize("overrides", [{"cors_origins": ("*",)}])
@pytest.mark.gen_test
async def test_star_origin_list_means_any_origin(client):
    r = await client.get("/widget/1", headers={"Origin": "https://anything.example"})
    assert r.headers["Access-Control-Allow-Origin"] == "*"
    assert "Origin" not in split(r.headers["Vary"])


@pytest.mark.gen_test
@pytest.mark.parametrize(
    "path,headers,status",
    [
        ("/widget", {"X-Api-Key": "wrong"}, 401),
        ("/widget", {}, 401),
        ("/no-such-route", {}, 404),
    ],
)
async def test_errors_answered_before_the_body_keep_the_connection_alive(http_server, base_url, path, headers, status):
    """A refused GET must not cost the client its kept-alive connection."""
    import asyncio
    from urllib.parse import urlsplit

    parts = urlsplit(base_url)
    reader, writer = await asyncio.open_connection(parts.hostname, parts.port)
    extra = "".join(f"{k}: {v}\r\n" for k, v in headers.items())
    request = f"GET /api/v2{path} HTTP/1.1\r\nHost: x\r\n{extra}\r\n".encode()
    for _ in range(2):  # the same connection answers twice
        writer.write(request)
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
        assert head.startswith(f"HTTP/1.1 {status}".encode()), head
        assert b"Connection: close" not in head
        length = int(next(h for h in head.split(b"\r\n") if h.lower().startswith(b"content-length")).split(b":")[1])
        await reader.readexactly(length)
    writer.close()


@pytest.mark.gen_test
async def test_overlong_uri_is_414_and_large_headers_431(client):
    from medusa_v2.handler import MAX_HEADER_BYTES, MAX_URI_LENGTH

    r = await client.get("/widget?x=" + "a" * MAX_URI_LENGTH)
    assert r.code == 414 and "URI" in r.json["error"]
    assert r.headers["X-Medusa-Server"] == medusa_v2.__version__
    r = await client.get("/widget", headers={"X-Big": "a" * MAX_HEADER_BYTES})
    assert r.code == 431 and str(MAX_HEADER_BYTES) in r.json["error"]
    # just under the limits: served
    assert (await client.get("/widget?x=" + "a" * 100, headers={"X-Big": "a" * 1000})).code == 200


@pytest.mark.gen_test
async def test_the_token_answer_is_never_stored(client):
    r = await client.post("/authenticate", json_body={"username": USERNAME, "password": PASSWORD}, auth=None)
    assert r.code == 200
    assert r.headers["Cache-Control"] == "no-store" and r.headers["Pragma"] == "no-cache"
    assert (await client.get("/widget/1")).headers["Cache-Control"] == "private, no-cache"


def test_verb_tables_belong_to_the_handler_and_resource_classes():
    class Pair(ApiHandler):
        routes = {"single": ("GET", "POST")}

    class Readable(Resource):
        name = "readable"

        async def retrieve(self, **ids):
            return {}

    assert Pair.verb_tables == {"single": (frozenset({"GET", "POST"}), "GET, POST, OPTIONS")}
    assert ApiHandler.verb_tables == {}
    assert Readable.verb_tables == {
        "collection": (frozenset(), "OPTIONS"),
        "item": (frozenset({"GET", "HEAD"}), "GET, HEAD, OPTIONS"),
    }

"""Fuzzing every route: hostile methods, paths, query strings, headers and bodies.

Invariants: never a 5xx; every 4xx is a JSON `{"error": ...}`; and a 4xx changes nothing.
"""

from __future__ import annotations

import json
from urllib.parse import quote

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from medusa_v2.testing import API_KEY

FUZZ = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])

SEGMENT = st.one_of(
    st.sampled_from(["1", "2", "0", "-1", "abc", "1.5", "9223372036854775807", "9223372036854775808", "%00", "%2F"]),
    st.text(min_size=1, max_size=12).map(lambda t: quote(t, safe="")),
)
PATHS = st.one_of(
    st.sampled_from(["/ticket", "/ticket/", "/authenticate", "/health", "/openapi.json", ""]),
    st.builds(lambda a: f"/ticket/{a}", SEGMENT),
    st.builds(lambda a: f"/ticket/{a}/message", SEGMENT),
    st.builds(lambda a, b: f"/ticket/{a}/message/{b}", SEGMENT, SEGMENT),
    st.builds(lambda a: f"/{a}", SEGMENT),
)
QUERY_KEYS = st.sampled_from(
    ["page", "limit", "sort", "order", "q", "state", "priority", "assignee", "author", "api_key", "x"]
)
QUERY_VALUES = st.one_of(
    st.sampled_from(
        ["1", "0", "-1", "1001", "abc", "-priority,title", "id;drop table ticket", "open,closed", "", "%", "_"]
    ),
    st.text(max_size=30),
)
QUERIES = st.lists(st.tuples(QUERY_KEYS, QUERY_VALUES), max_size=4).map(
    lambda pairs: "&".join(f"{quote(k)}={quote(v, safe='')}" for k, v in pairs)
)
HEADER_VALUES = st.one_of(
    st.sampled_from(["*", '"abc"', 'W/"x"', "Bearer ", "Bearer a.b.c", "Basic !!!", "Basic " + "Og==", API_KEY]),
    st.text(alphabet=st.characters(min_codepoint=0x20, max_codepoint=0x7E), max_size=40),
)
HEADERS = st.dictionaries(
    st.sampled_from(
        [
            "If-Match",
            "If-None-Match",
            "Idempotency-Key",
            "Authorization",
            "X-Auth",
            "Content-Type",
            "Origin",
            "X-Forwarded-Host",
        ]
    ),
    HEADER_VALUES,
    max_size=3,
)
JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=10), inner, max_size=3),
    max_leaves=8,
)
BODIES = st.one_of(
    st.none(),
    st.dictionaries(
        st.sampled_from(["title", "description", "state", "priority", "assignee", "author", "body", "id", "exp"]),
        JSON_VALUES,
        max_size=5,
    ).map(lambda d: json.dumps(d).encode()),
    st.binary(max_size=40),
)
METHODS = st.sampled_from(["GET", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "HEAD", "TRACE"])


async def snapshot(client) -> tuple:
    tickets = await client.get("/ticket?limit=1000")
    messages = await client.get("/ticket/1/message?limit=1000")
    return tickets.body, messages.body


@FUZZ
@given(method=METHODS, path=PATHS, query=QUERIES, headers=HEADERS, body=BODIES, with_key=st.booleans())
def test_no_input_gets_a_5xx_and_a_4xx_changes_nothing(io_loop, client, method, path, query, headers, body, with_key):
    async def go():
        if (await client.get("/ticket/1")).code == 404:  # seed once: a ticket with a message
            await client.post("/ticket", json_body={"id": 1, "title": "seed"})
            await client.post("/ticket/1/message", json_body={"author": "a", "body": "hello"})
        before = await snapshot(client)
        hdrs = dict(headers)
        if body is not None and "Content-Type" not in hdrs:
            hdrs["Content-Type"] = "application/json"
        if with_key:
            hdrs.setdefault("X-Api-Key", API_KEY)
        full = path + ("?" + query if query else "")
        r = await client.request(method, full, headers=hdrs, body=body, auth=None)
        assert r.code < 500, (method, full, hdrs, body, r.code, r.body)
        assert "X-Medusa-Server" in r.headers
        if 400 <= r.code < 500 and method != "HEAD":
            doc = json.loads(r.body)
            assert isinstance(doc["error"], str) and doc["error"]
            after = await snapshot(client)
            assert after == before, (method, full, hdrs, body, r.code)

    io_loop.run_sync(go)

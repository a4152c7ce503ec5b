"""Authentication over real HTTP: the five credential forms, every 401 message,
POST/DELETE /authenticate, revocation shared through the store, and login throttling.
"""

from __future__ import annotations

import base64
import json
from typing import Any

import jwt
import pytest
import tornado.httpserver
import tornado.testing
from conftest import API_KEY, PASSWORD, SECRET, USERNAME, Client

import medusa_v2
from medusa_v2.app import make_app
from medusa_v2.errors import ApiError
from medusa_v2.listing import Page
from medusa_v2.passwords import hash_password
from medusa_v2.resource import Resource
from medusa_v2.store.sqlite import SQLiteStore

CHALLENGE = "WWW-Authenticate"
NO_TOKEN = "No authorization token."
EXPIRED = "Token has expired."
INVALID_TOKEN = "Invalid token."
INVALID_USER_PASS = "Invalid user/pass."


class Thing(Resource):
    """A protected resource of our own."""

    name = "thing"

    async def list(self, query, **ids):
        return Page([{"id": 1}], 1)

    async def retrieve(self, thing_id):
        if thing_id != 1:
            raise ApiError(404, "no such thing")
        return {"id": 1, "thing_name": "one"}


@pytest.fixture
def resources():
    return [Thing]


@pytest.fixture
def overrides() -> dict[str, Any]:
    return {}


@pytest.fixture
def settings(settings, overrides):
    return settings.replace(**overrides)


@pytest.fixture
def other_app(io_loop, http_client, settings, clock, tmp_path, resources):
    """Start more apps, each with its own Store object opened on the same SQLite file."""
    started: list[tuple[tornado.httpserver.HTTPServer, SQLiteStore]] = []

    async def start(app_settings=None) -> Client:
        store = SQLiteStore(str(tmp_path / "test.db"))
        await store.open()
        app = make_app(app_settings or settings, store, clock=clock, resources=resources)
        sock, port = tornado.testing.bind_unused_port()
        server = tornado.httpserver.HTTPServer(app)
        server.add_sockets([sock])
        started.append((server, store))
        return Client(http_client, f"http://127.0.0.1:{port}", (app_settings or settings).web_root + "/api/v2")

    yield start
    for server, store in started:
        server.stop()
        io_loop.run_sync(server.close_all_connections)
        io_loop.run_sync(store.close)


def basic(user_pass: str | bytes) -> dict[str, str]:
    raw = user_pass.encode() if isinstance(user_pass, str) else user_pass
    return {"Authorization": "Basic " + base64.b64encode(raw).decode()}


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def claims_at(now: float, **changes: Any) -> dict[str, Any]:
    claims = {
        "iss": f"Medusa {medusa_v2.__version__}",
        "iat": int(now),
        "exp": int(now) + 3600,
        "jti": "hand-made-jti",
        "username": USERNAME,
    }
    claims.update(changes)
    return {k: v for k, v in claims.items() if v is not None}


async def login(client: Client, **body: Any):
    body = {"username": USERNAME, "password": PASSWORD, **body}
    return await client.post("/authenticate", json_body=body, auth=None)


async def token_for(client: Client, **body: Any) -> str:
    r = await login(client, **body)
    assert r.code == 200, r.body
    return r.json["token"]


def assert_401(r, message: str) -> None:
    assert r.code == 401, (r.code, r.body)
    assert r.json == {"error": message}
    assert "Bearer" in r.headers[CHALLENGE] and "Basic" in r.headers[CHALLENGE]
    assert r.headers["X-Medusa-Server"] == medusa_v2.__version__
    assert r.headers["Content-Type"] == "application/json; charset=UTF-8"


def decode(token: str) -> dict[str, Any]:
    return jwt.decode(token, SECRET, algorithms=["HS256"], options={"verify_exp": False, "verify_iat": False})


# -- the five credential forms ---------------------------------------------------------


@pytest.mark.gen_test
async def test_each_credential_form_is_accepted(client):
    token = await token_for(client)
    forms = [
        {"headers": {"x-auth": f"Bearer {token}"}},
        {"headers": {"Authorization": f"Bearer {token}"}},
        {"headers": {"X-Api-Key": API_KEY}},
        {"path": f"/thing/1?api_key={API_KEY}"},
        {"headers": basic(f"{USERNAME}:{PASSWORD}")},
        {"headers": {"x-auth": f"bearer  {token} "}},
    ]
    for form in forms:
        r = await client.get(form.get("path", "/thing/1"), headers=form.get("headers"), auth=None)
        assert r.code == 200, (form, r.body)
        assert r.json == {"id": 1, "thingName": "one"}


@pytest.mark.gen_test
async def test_no_credentials(client):
    assert_401(await client.get("/thing/1", auth=None), NO_TOKEN)
    assert_401(await client.get("/thing", auth=None), NO_TOKEN)
    assert_401(await client.get("/thing/1", headers={"X-Api-Key": ""}, auth=None), NO_TOKEN)


def assert_wrong_key(r) -> None:
    """Medusa's body for a wrong key (its tests/apiv2/test_auth.py); the reason in the challenge (RFC 6750)."""
    assert_401(r, NO_TOKEN)
    assert 'error="invalid_token", error_description="Invalid API key."' in r.headers[CHALLENGE]


@pytest.mark.gen_test
async def test_wrong_api_key(client):
    assert_wrong_key(await client.get("/thing/1", headers={"X-Api-Key": "wrong"}, auth=None))
    assert_wrong_key(await client.get("/thing/1?api_key=wrong", auth=None))
    assert_wrong_key(await client.get("/thing/1", headers={"X-Api-Key": API_KEY[:-1]}, auth=None))
    assert_wrong_key(await client.get("/thing/1", headers={"X-Api-Key": API_KEY + "0"}, auth=None))
    assert_wrong_key(await client.get("/thing/1", headers={"X-Api-Key": "\u00e9t\u00e9"}, auth=None))


@pytest.mark.gen_test
async def test_medusas_own_auth_test_expectations(client):
    """Medusa's tests/apiv2/test_auth.py: `?api_key=123` and `?api_key=None` are 401 'No authorization token.'."""
    for value in ("123", "None"):
        r = await client.get(f"/thing?api_key={value}", auth=None)
        assert r.code == 401 and r.json == {"error": "No authorization token."}
    r = await client.get("/thing", auth=None)
    assert r.code == 401 and r.json == {"error": "No authorization token."}
    assert "error=" not in r.headers[CHALLENGE]  # no credential at all: no error code (RFC 6750 3.1)


@pytest.mark.parametrize("overrides", [{"api_key": ""}])
@pytest.mark.gen_test
async def test_no_configured_api_key_accepts_no_key(client):
    assert_wrong_key(await client.get("/thing/1", headers={"X-Api-Key": "anything"}, auth=None))
    assert_wrong_key(await client.get("/thing/1?api_key=x", auth=None))


@pytest.mark.gen_test
async def test_expired_token(client, clock):
    cached = await token_for(client, exp=60)
    fresh = await token_for(client, exp=60)
    r = await client.get("/thing/1", headers={"x-auth": f"Bearer {cached}"}, auth=None)
    assert r.code == 200  # verified once: the server may remember it
    clock.advance(59)
    r = await client.get("/thing/1", headers={"x-auth": f"Bearer {cached}"}, auth=None)
    assert r.code == 200
    clock.advance(1)  # exp reached
    assert_401(await client.get("/thing/1", headers={"x-auth": f"Bearer {cached}"}, auth=None), EXPIRED)
    assert_401(await client.get("/thing/1", headers={"Authorization": f"Bearer {fresh}"}, auth=None), EXPIRED)


@pytest.mark.gen_test
async def test_token_expired_against_the_wall_clock(client, clock):
    token = jwt.encode(claims_at(1_000_000_000), SECRET, algorithm="HS256")
    assert_401(await client.get("/thing/1", headers={"x-auth": f"Bearer {token}"}, auth=None), EXPIRED)


def _invalid_tokens(now: float) -> dict[str, str]:
    good = jwt.encode(claims_at(now), SECRET, algorithm="HS256")
    head, payload, sig = good.split(".")
    forged_payload = b64url(json.dumps(claims_at(now, username="admin", exp=int(now) + 10**6)).encode())
    none_header = b64url(json.dumps({"alg": "none", "typ": "JWT"}).encode())
    flipped = sig[:10] + ("A" if sig[10] != "A" else "B") + sig[11:]
    return {
        "tampered-signature": f"{head}.{payload}.{flipped}",
        "tampered-payload": f"{head}.{forged_payload}.{sig}",
        "no-signature": f"{head}.{payload}.",
        "alg-none": f"{none_header}.{payload}.",
        "alg-none-with-sig": f"{none_header}.{payload}.{sig}",
        "wrong-key": jwt.encode(claims_at(now), "another-secret-" + "y" * 40, algorithm="HS256"),
        "no-exp": jwt.encode(claims_at(now, exp=None), SECRET, algorithm="HS256"),
        "float-exp": jwt.encode(claims_at(now, exp=now + 3600.5), SECRET, algorithm="HS256"),
        "no-jti": jwt.encode(claims_at(now, jti=None), SECRET, algorithm="HS256"),
        "hs512": jwt.encode(claims_at(now), SECRET, algorithm="HS512"),
        "hs384": jwt.encode(claims_at(now), SECRET, algorithm="HS384"),
        "garbage": "garbage",
        "two-parts": f"{head}.{payload}",
        "non-ascii": "é.é.é",
        "huge": "a" * 10000,
    }


@pytest.mark.parametrize("kind", sorted(_invalid_tokens(0)))
@pytest.mark.parametrize("header", ["x-auth", "Authorization"])
@pytest.mark.gen_test
async def test_invalid_tokens(client, clock, kind, header):
    token = _invalid_tokens(clock())[kind]
    r = await client.get("/thing/1", headers={header: f"Bearer {token}"}, auth=None)
    assert_401(r, INVALID_TOKEN)


@pytest.mark.gen_test
async def test_malformed_bearer_headers(client):
    token = await token_for(client)
    cases = [
        {"x-auth": token},  # no Bearer prefix (Medusa's UI sends it with one)
        {"Authorization": token},
        {"x-auth": "Bearer"},
        {"x-auth": "Bearer "},
        {"Authorization": "Bearer"},
        {"Authorization": f"Token {token}"},
        {"Authorization": f"Bearer{token}"},
    ]
    for headers in cases:
        assert_401(await client.get("/thing/1", headers=headers, auth=None), INVALID_TOKEN)


@pytest.mark.parametrize(
    "header",
    [
        basic(f"{USERNAME}:wrong"),
        basic(f"nobody:{PASSWORD}"),
        basic(f"{USERNAME}:{PASSWORD}x"),
        basic(f"{USERNAME}:"),
        basic(f":{PASSWORD}"),
        basic(USERNAME),  # no colon
        basic(f"{USERNAME}:wrong:pass"),
        basic(f"{USERNAME}:{PASSWORD}:"),
        basic(b"\xff\xfe:\xff"),  # not UTF-8
        {"Authorization": "Basic !!!not-base64!!!"},
        {"Authorization": "Basic bWVkdXNh"[:-1]},  # bad padding
        {"Authorization": "Basic"},
        {"Authorization": "Basic "},
        {"Authorization": "basic " + base64.b64encode(f"{USERNAME}:nope".encode()).decode()},
    ],
)
@pytest.mark.gen_test
async def test_bad_basic_credentials(client, header):
    assert_401(await client.get("/thing/1", headers=header, auth=None), INVALID_USER_PASS)


@pytest.mark.parametrize("overrides", [{"web_password": hash_password(PASSWORD)}])
@pytest.mark.gen_test
async def test_hashed_password_works_for_basic_and_login(client, settings):
    r = await client.get("/thing/1", headers=basic(f"{USERNAME}:{PASSWORD}"), auth=None)
    assert r.code == 200
    assert (await login(client)).code == 200
    # The stored hash is not itself a password.
    assert_401(
        await client.get("/thing/1", headers=basic(f"{USERNAME}:{settings.web_password}"), auth=None), INVALID_USER_PASS
    )
    r = await login(client, password=settings.web_password)
    assert_401(r, "Invalid credentials")


# -- POST /authenticate --------------------------------------------------------------


@pytest.mark.gen_test
async def test_login_issues_a_token_with_the_documented_claims(client, clock):
    r = await login(client)
    assert r.code == 200
    assert r.headers["Content-Type"] == "application/json; charset=UTF-8"
    assert r.headers["X-Medusa-Server"] == medusa_v2.__version__
    assert set(r.json) == {"token"}
    token = r.json["token"]
    assert jwt.get_unverified_header(token)["alg"] == "HS256"
    claims = decode(token)
    assert claims["iss"] == f"Medusa {medusa_v2.__version__}"
    assert claims["iat"] == int(clock())
    assert claims["exp"] == claims["iat"] + 86400
    assert claims["username"] == USERNAME
    assert isinstance(claims["jti"], str) and len(claims["jti"]) >= 16
    assert "apiKey" not in claims
    assert API_KEY not in json.dumps(claims)
    other = decode(await token_for(client))
    assert other["jti"] != claims["jti"]


@pytest.mark.parametrize("exp", [1, 60, 2592000])
@pytest.mark.gen_test
async def test_login_with_exp(client, exp):
    claims = decode(await token_for(client, exp=exp))
    assert claims["exp"] == claims["iat"] + exp


@pytest.mark.parametrize("overrides", [{"token_api_key": True}])
@pytest.mark.gen_test
async def test_login_api_key_claim_is_opt_in(client):
    claims = decode(await token_for(client))
    assert claims["apiKey"] == API_KEY


@pytest.mark.parametrize("exp", [0, -1, 2592001, "60", 1.5, 60.5, 0.0, True, None, [60], {"s": 60}, 10**30])
@pytest.mark.gen_test
async def test_login_bad_exp_is_400(client, exp):
    r = await client.post(
        "/authenticate",
        body=json.dumps({"username": USERNAME, "password": PASSWORD, "exp": exp}),
        headers={"Content-Type": "application/json"},
        auth=None,
    )
    assert r.code == 400, (exp, r.body)
    assert "exp" in r.json["error"]
    assert r.headers["X-Medusa-Server"] == medusa_v2.__version__


@pytest.mark.parametrize(
    "body",
    [
        b"[]",
        b"null",
        b'"x"',
        b"1",
        b"",
        b"{bad",
        b'{"username": "medusa", "password": 1}',
        b'{"username": ["medusa"], "password": "x"}',
    ],
)
@pytest.mark.gen_test
async def test_login_body_not_an_object_is_400(client, body):
    r = await client.post("/authenticate", body=body, headers={"Content-Type": "application/json"}, auth=None)
    assert r.code == 400, r.body
    assert set(r.json) >= {"error"}


@pytest.mark.gen_test
async def test_login_form_body_is_415(client):
    r = await client.post(
        "/authenticate",
        body=f"username={USERNAME}&password={PASSWORD}",
        headers={"Content-Type": "application/x-www-form-urlencoded"},
        auth=None,
    )
    assert r.code == 415
    assert "token" not in r.json


@pytest.mark.parametrize(
    "body",
    [
        {"username": USERNAME, "password": "wrong"},
        {"username": "root", "password": PASSWORD},
        {"username": USERNAME},
        {"password": PASSWORD},
        {},
        {"username": USERNAME, "password": ""},
    ],
)
@pytest.mark.gen_test
async def test_login_wrong_credentials_is_401(client, body):
    r = await client.post("/authenticate", json_body=body, auth=None)
    assert_401(r, "Invalid credentials")


@pytest.mark.gen_test
async def test_authenticate_other_verbs_are_405(client):
    r = await client.get("/authenticate")
    assert r.code == 405
    assert {v.strip() for v in r.headers["Allow"].split(",")} == {"POST", "DELETE", "OPTIONS"}
    r = await client.options("/authenticate", auth=None)
    assert r.code == 204
    assert {v.strip() for v in r.headers["Allow"].split(",")} == {"POST", "DELETE", "OPTIONS"}


@pytest.mark.parametrize("overrides", [{"web_username": "", "web_password": ""}])
@pytest.mark.gen_test
async def test_no_configured_credentials_issue_a_token_to_anyone(client):
    r = await client.post("/authenticate", json_body={}, auth=None)
    assert r.code == 200
    token = r.json["token"]
    r = await client.get("/thing/1", headers={"x-auth": f"Bearer {token}"}, auth=None)
    assert r.code == 200
    r = await client.post("/authenticate", json_body={"username": "x", "password": "y", "exp": 0}, auth=None)
    assert r.code == 400  # exp is still checked


# -- DELETE /authenticate ------------------------------------------------------------


@pytest.mark.gen_test
async def test_revoked_token_is_refused_and_others_still_work(client, other_app):
    token = await token_for(client)
    other = await token_for(client)
    elsewhere = await other_app()
    # The second app verifies (and may cache) the token before it is revoked.
    assert (await elsewhere.get("/thing/1", headers={"x-auth": f"Bearer {token}"}, auth=None)).code == 200

    r = await client.delete("/authenticate", headers={"x-auth": f"Bearer {token}"}, auth=None)
    assert r.code == 204
    assert r.body == b""
    assert r.headers["X-Medusa-Server"] == medusa_v2.__version__

    for c in (client, elsewhere):
        assert_401(await c.get("/thing/1", headers={"x-auth": f"Bearer {token}"}, auth=None), INVALID_TOKEN)
        assert_401(await c.get("/thing/1", headers={"Authorization": f"Bearer {token}"}, auth=None), INVALID_TOKEN)
        assert (await c.get("/thing/1", headers={"x-auth": f"Bearer {other}"}, auth=None)).code == 200
    # Revoking again: the token no longer authenticates anything.
    assert_401(await client.delete("/authenticate", headers={"x-auth": f"Bearer {token}"}, auth=None), INVALID_TOKEN)
    # A fresh app (fresh process) on the same store refuses it too.
    later = await other_app()
    assert_401(await later.get("/thing/1", headers={"x-auth": f"Bearer {token}"}, auth=None), INVALID_TOKEN)


@pytest.mark.gen_test
async def test_revoke_with_authorization_bearer(client, other_app):
    token = await token_for(client)
    r = await client.delete("/authenticate", headers={"Authorization": f"Bearer {token}"}, auth=None)
    assert r.code == 204
    elsewhere = await other_app()
    assert_401(await elsewhere.get("/thing/1", headers={"x-auth": f"Bearer {token}"}, auth=None), INVALID_TOKEN)


@pytest.mark.gen_test
async def test_revoke_with_a_token_and_an_api_key_revokes_the_token(client):
    token = await token_for(client)
    r = await client.delete("/authenticate", headers={"x-auth": f"Bearer {token}"})  # the API key is sent too
    assert r.code == 204
    assert_401(await client.get("/thing/1", headers={"x-auth": f"Bearer {token}"}, auth=None), INVALID_TOKEN)
    # RFC 7009 2.2: beside good credentials, a token that is not valid (already revoked,
    # forged, not even a bearer token) is no error: it works nowhere, as asked.
    for junk in (f"Bearer {token}", "Bearer junk", "junk", f"Bearer {token[:-2]}xx"):
        r = await client.delete("/authenticate", headers={"x-auth": junk})
        assert r.code == 204 and r.body == b"", (junk, r.code, r.body)
    other = await token_for(client)
    r = await client.delete("/authenticate", headers={"x-auth": "Bearer junk", "Authorization": f"Bearer {other}"})
    assert r.code == 204
    assert (await client.get("/thing/1", headers={"x-auth": f"Bearer {other}"}, auth=None)).code == 200


@pytest.mark.gen_test
async def test_revoke_needs_a_token(client):
    r = await client.delete("/authenticate")  # API key only
    assert r.code == 400
    assert "token" in r.json["error"]
    r = await client.delete("/authenticate", headers=basic(f"{USERNAME}:{PASSWORD}"), auth=None)
    assert r.code == 400
    assert_401(await client.delete("/authenticate", auth=None), NO_TOKEN)
    assert_401(await client.delete("/authenticate", headers={"x-auth": "Bearer junk"}, auth=None), INVALID_TOKEN)


@pytest.mark.gen_test
async def test_keys_and_passwords_are_compared_in_constant_time(client, monkeypatch):
    """The API key, the user name and the password reach hmac.compare_digest, not ==."""
    import hmac

    compared: list[set[bytes]] = []
    real = hmac.compare_digest

    def recording(a, b):
        compared.append({x.encode() if isinstance(x, str) else bytes(x) for x in (a, b)})
        return real(a, b)

    monkeypatch.setattr(hmac, "compare_digest", recording)
    wrong_key = "k" * len(API_KEY)
    assert_wrong_key(await client.get("/thing/1", headers={"X-Api-Key": wrong_key}, auth=None))
    assert {API_KEY.encode(), wrong_key.encode()} in compared
    compared.clear()
    r = await client.get("/thing/1", headers=basic(f"{USERNAME}:not-{PASSWORD}"), auth=None)
    assert_401(r, INVALID_USER_PASS)
    assert {USERNAME.encode()} in compared  # the right name, compared with itself
    assert {PASSWORD.encode(), f"not-{PASSWORD}".encode()} in compared


# -- throttling ------------------------------------------------------------------------

THROTTLE = {"login_max_failures": 3, "login_window": 60}


def assert_429(r) -> int:
    assert r.code == 429, (r.code, r.body)
    assert r.headers["X-Medusa-Server"] == medusa_v2.__version__
    assert isinstance(r.json["error"], str)
    assert "token" not in r.json
    retry = r.headers["Retry-After"]
    assert retry.isdigit(), retry
    assert 1 <= int(retry) <= THROTTLE["login_window"]
    return int(retry)


@pytest.mark.parametrize("overrides", [THROTTLE])
@pytest.mark.gen_test
async def test_failed_logins_are_throttled_then_released(client, clock):
    for _ in range(3):
        assert (await login(client, password="wrong")).code == 401
        clock.advance(10)
    retry = assert_429(await login(client))  # even the right password
    assert_429(await login(client, password="wrong"))
    # The first failure (30 s ago) leaves the 60 s window in 30 s.
    assert retry == 30
    clock.advance(retry - 1)
    assert_429(await login(client))
    clock.advance(1)  # honouring Retry-After is enough
    assert (await login(client)).code == 200


@pytest.mark.parametrize("overrides", [THROTTLE])
@pytest.mark.gen_test
async def test_retry_after_is_honest_when_failures_are_simultaneous(client, clock):
    for _ in range(3):
        assert (await login(client, password="wrong")).code == 401
    retry = assert_429(await login(client))
    assert retry == 60
    clock.advance(retry)
    assert (await login(client)).code == 200


@pytest.mark.parametrize("overrides", [THROTTLE])
@pytest.mark.gen_test
async def test_throttle_is_shared_through_the_store(client, other_app, clock):
    for _ in range(3):
        assert (await login(client, password="wrong")).code == 401
    elsewhere = await other_app()
    assert_429(await login(elsewhere))
    clock.advance(61)
    assert (await login(elsewhere)).code == 200


@pytest.mark.parametrize("overrides", [THROTTLE])
@pytest.mark.gen_test
async def test_throttle_counts_each_client_apart(client, http_client):
    """Failures from one address do not lock out another (here 127.0.0.2, on the loopback too)."""

    async def login_from(address: str, password: str):
        r = await http_client.fetch(
            client.url("/authenticate"),
            method="POST",
            body=json.dumps({"username": USERNAME, "password": password}),
            headers={"Content-Type": "application/json"},
            network_interface=address,
            raise_error=False,
        )
        return r.code

    for _ in range(3):
        assert await login_from("127.0.0.1", "wrong") == 401
    assert await login_from("127.0.0.1", PASSWORD) == 429
    assert await login_from("127.0.0.2", PASSWORD) == 200
    for _ in range(3):
        assert await login_from("127.0.0.2", "wrong") == 401
    assert await login_from("127.0.0.2", PASSWORD) == 429


@pytest.mark.parametrize("overrides", [THROTTLE])
@pytest.mark.gen_test
async def test_success_resets_the_failure_count(client):
    for _ in range(2):
        assert (await login(client, password="wrong")).code == 401
    assert (await login(client)).code == 200
    for _ in range(2):
        assert (await login(client, password="wrong")).code == 401
    assert (await login(client)).code == 200


@pytest.mark.parametrize("overrides", [THROTTLE])
@pytest.mark.gen_test
async def test_basic_failures_count_and_basic_is_throttled(client, clock):
    for _ in range(3):
        assert_401(await client.get("/thing/1", headers=basic(f"{USERNAME}:wrong"), auth=None), INVALID_USER_PASS)
    assert_429(await login(client))
    assert_429(await client.get("/thing/1", headers=basic(f"{USERNAME}:{PASSWORD}"), auth=None))
    # API keys and tokens are not logins: they keep working.
    assert (await client.get("/thing/1")).code == 200
    clock.advance(61)
    assert (await client.get("/thing/1", headers=basic(f"{USERNAME}:{PASSWORD}"), auth=None)).code == 200


@pytest.mark.parametrize("overrides", [THROTTLE])
@pytest.mark.gen_test
async def test_failures_outside_the_window_do_not_count(client, clock):
    for _ in range(2):
        assert (await login(client, password="wrong")).code == 401
    clock.advance(61)
    for _ in range(2):
        assert (await login(client, password="wrong")).code == 401
    assert (await login(client)).code == 200


@pytest.mark.gen_test
async def test_login_exp_may_be_an_integral_number(client):
    body = {"username": USERNAME, "password": PASSWORD}
    r = await client.post("/authenticate", json_body={**body, "exp": 16898.0}, auth=None)
    assert r.code == 200
    claims = decode(r.json["token"])
    assert claims["exp"] - claims["iat"] == 16898
    r = await client.post("/authenticate", json_body={**body, "exp": 16898.5}, auth=None)
    assert r.code == 400 and "exp" in r.json["errors"]


@pytest.mark.gen_test
async def test_authenticate_reads_at_most_16_kib(client):
    body = {"username": USERNAME, "password": PASSWORD, "pad": "x" * (16 * 1024)}
    r = await client.post("/authenticate", json_body=body, auth=None)
    assert r.code == 413 and r.json == {"error": "Request body too large: the limit is 16384 bytes"}
    raw = json.dumps({"username": USERNAME, "password": PASSWORD}).encode()
    padded = raw[:-1] + b"," + b'"pad":"' + b"y" * (16 * 1024 - len(raw) - 10) + b'"}'
    assert len(padded) <= 16 * 1024
    assert (
        await client.post("/authenticate", body=padded, headers={"Content-Type": "application/json"}, auth=None)
    ).code == 200


@pytest.mark.parametrize("overrides", [{"web_password": hash_password(PASSWORD), "login_max_failures": 3}])
@pytest.mark.gen_test
async def test_concurrent_wrong_logins_cannot_pass_the_throttle_together(client):
    """Attempts waiting for the hashing threads count: 12 at once from one client, only 3 are checked."""
    import asyncio

    answers = await asyncio.gather(
        *(
            client.post("/authenticate", json_body={"username": USERNAME, "password": f"wrong {i}"}, auth=None)
            for i in range(12)
        )
    )
    codes = sorted(r.code for r in answers)
    assert codes == [401] * 3 + [429] * 9, codes
    r = await client.post("/authenticate", json_body={"username": USERNAME, "password": PASSWORD}, auth=None)
    assert r.code == 429  # the window is full: even the right password waits


@pytest.mark.gen_test
async def test_a_token_without_the_credentials_stamp_is_refused(client, clock):
    """Tokens issued before stamps existed predate any later password change: the daemon refuses them."""
    now = int(clock())
    old = jwt.encode(
        {"iss": "Medusa 0.1.0", "iat": now, "exp": now + 600, "jti": "j-old", "username": USERNAME}, SECRET
    )
    assert_401(await client.get("/thing/1", headers={"x-auth": f"Bearer {old}"}, auth=None), INVALID_TOKEN)
    fresh = await token_for(client)
    assert (await client.get("/thing/1", headers={"x-auth": f"Bearer {fresh}"}, auth=None)).code == 200

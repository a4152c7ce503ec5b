"""Authentication: the five credential forms, JWT tokens, revocation and login throttling."""

from __future__ import annotations

import asyncio
import base64
import binascii
import concurrent.futures
import contextlib
import hashlib
import hmac
import math
import secrets
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import jwt

from .declaration import json_integer
from .errors import ApiError
from .passwords import is_hashed, verify_password
from .settings import Settings
from .store import Store

ALGORITHM = "HS256"  # pinned: a token naming any other algorithm is refused
DEFAULT_TOKEN_SECONDS = 86400
MAX_TOKEN_SECONDS = 30 * 86400
_TOKEN_CACHE_SIZE = 10_000
# Password hashes checked at once (each holds a core and, for scrypt, its memory); more
# wait their turn. hashlib's scrypt and pbkdf2 release the GIL while they work.
HASHING_THREADS = 2
MAX_PENDING_CHECKS = 64  # password checks waiting or running at once per app; more get a 503

NO_TOKEN = "No authorization token."
EXPIRED = "Token has expired."
INVALID_TOKEN = "Invalid token."
INVALID_USER_PASS = "Invalid user/pass."
INVALID_API_KEY = "Invalid API key."
INVALID_CREDENTIALS = "Invalid credentials"


@dataclass(frozen=True, slots=True)
class Identity:
    """Who made a request and how they proved it."""

    method: str  # "api_key", "token" or "basic"
    username: str = ""
    claims: Mapping[str, Any] = field(default_factory=dict)


CHALLENGE = 'Bearer realm="medusa", Basic realm="medusa"'


def unauthorized(message: str, reason: str | None = None) -> ApiError:
    """Return a 401 with the challenge naming the schemes we accept.

    `reason`: the credential was presented and is wrong; said in the Bearer challenge
    as RFC 6750's `invalid_token`, whatever the body says (Medusa's clients and tests
    read the body).
    """
    if reason is None:
        return ApiError(401, message, headers={"WWW-Authenticate": CHALLENGE})
    challenge = f'Bearer realm="medusa", error="invalid_token", error_description="{reason}", Basic realm="medusa"'
    return ApiError(401, message, headers={"WWW-Authenticate": challenge})


def _same(a: str, b: str) -> bool:
    return hmac.compare_digest(a.encode("utf-8", "surrogatepass"), b.encode("utf-8", "surrogatepass"))


def credential(headers: Mapping[str, str], api_key: str | None, token: str | None = None) -> tuple[str, str]:
    """Return the credential that decides a request: ("api_key" | "bearer" | "basic" | "", value).

    The first one present, in this order: API key (header, then query), `x-auth`,
    `Authorization` (Basic, else a bearer token), then `token` (the `?token=` of a
    route that takes one: a browser's WebSocket cannot send headers).
    """
    key = headers.get("X-Api-Key") or api_key
    if key:
        return "api_key", key
    x_auth = headers.get("X-Auth")
    if x_auth:
        return "bearer", x_auth
    authorization = headers.get("Authorization")
    if authorization:
        scheme, _, rest = authorization.strip().partition(" ")
        if scheme.lower() == "basic":
            return "basic", rest.strip()
        return "bearer", authorization
    if token:
        return "bearer", "Bearer " + token
    return "", ""


def bearer_token(headers: Mapping[str, str]) -> str | None:
    """Return the bearer token of `x-auth` or `Authorization`, if either carries one."""
    for name in ("X-Auth", "Authorization"):
        scheme, _, token = (headers.get(name) or "").strip().partition(" ")
        if scheme.lower() == "bearer" and token.strip():
            return token.strip()
    return None


class Authenticator:
    """Check credentials against one app's settings; shared state lives in the store."""

    def __init__(
        self,
        settings: Settings,
        store: Store,
        clock: Callable[[], float],
        version: str,
        *,
        issuer: str | None = None,
        require_stamp: bool = True,
    ) -> None:
        self.settings = settings
        self.require_stamp = require_stamp  # False: a host's own tokens (no `pwd` claim) are accepted
        self.store = store
        self.clock = clock
        self.issuer = issuer or f"Medusa {version}"
        # Verified tokens until their expiry: signature checks are the costly part of a
        # request, and a token's validity (bar revocation, checked every time) does not
        # change while the credentials stay the same (`use` forgets them otherwise).
        self._verified: dict[str, Mapping[str, Any]] = {}
        # Salted digests of Basic credentials that verified: a password hash is slow by design.
        self._basic_salt = secrets.token_bytes(16)
        self._basic_ok: set[bytes] = set()
        self._hash_pool: concurrent.futures.ThreadPoolExecutor | None = None
        # Password checks in progress, per client and in all (`_attempt`).
        self._pending: dict[str, int] = {}
        self._pending_total = 0

    def credentials_stamp(self) -> str:
        """Return a digest of the username and stored password: the `pwd` claim of our tokens.

        Keyed with the encryption secret, so it reveals nothing of the password. A
        token whose stamp is not the current one was issued before the password (or
        username) changed, and is refused, in every process and after restarts.
        """
        settings = self.settings
        text = f"{settings.web_username}\0{settings.web_password}".encode("utf-8", "surrogatepass")
        digest = hmac.new(settings.encryption_secret.encode("utf-8", "surrogatepass"), text, hashlib.sha256)
        return base64.urlsafe_b64encode(digest.digest()[:12]).decode("ascii")

    def use(self, settings: Settings) -> None:
        """Check with `settings` from now on; forget cached credentials when they changed."""
        old, self.settings = self.settings, settings
        if (old.web_username, old.web_password, old.encryption_secret) != (
            settings.web_username,
            settings.web_password,
            settings.encryption_secret,
        ):
            self._verified = {}
            self._basic_ok = set()
            self._basic_salt = secrets.token_bytes(16)

    # -- every request --

    async def authenticate(
        self, headers: Mapping[str, str], api_key: str | None, client: str, token: str | None = None
    ) -> Identity:
        """Return the request's identity, or raise a 401 naming what is wrong.

        The credential that decides is `credential`'s (the fast path asks it too).
        """
        kind, value = credential(headers, api_key, token)
        if kind == "api_key":
            if self.settings.api_key and _same(value, self.settings.api_key):
                return Identity("api_key")
            raise unauthorized(NO_TOKEN, INVALID_API_KEY)  # Medusa's answer (its tests/apiv2/test_auth.py)
        if kind == "bearer":
            return await self._bearer(value)
        if kind == "basic":
            return await self._basic(value, client)
        raise unauthorized(NO_TOKEN)

    async def _bearer(self, value: str) -> Identity:
        scheme, _, token = value.strip().partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise unauthorized(INVALID_TOKEN, INVALID_TOKEN)
        claims = await self.verify_token(token.strip())
        return Identity("token", str(claims.get("username", "")), claims)

    async def _basic(self, encoded: str, client: str) -> Identity:
        try:
            decoded = base64.b64decode(encoded, validate=True).decode("utf-8")
        except (binascii.Error, ValueError):
            raise unauthorized(INVALID_USER_PASS) from None
        username, sep, password = decoded.partition(":")  # RFC 7617: the user-id has no ':'
        if not sep or not self.settings.auth_required:
            raise unauthorized(INVALID_USER_PASS)
        with self._attempt(client) as others:
            await self.check_throttle(client, others)
            digest = hmac.new(self._basic_salt, decoded.encode("utf-8"), hashlib.sha256).digest()
            if digest in self._basic_ok:
                return Identity("basic", username)
            if not await self.check_password(username, password):
                await self.record_failure(client)
                raise unauthorized(INVALID_USER_PASS)
        if len(self._basic_ok) >= 64:
            self._basic_ok.clear()
        self._basic_ok.add(digest)
        return Identity("basic", username)

    @contextlib.contextmanager
    def _attempt(self, client: str) -> Iterator[int]:
        """Hold a place among the password checks in progress; yield how many others `client` has.

        Checks wait for the hashing threads: counted from before the throttle is read
        until the outcome is recorded, concurrent attempts cannot all pass the
        throttle at once. Past MAX_PENDING_CHECKS in all, more are refused (503).
        """
        if self._pending_total >= MAX_PENDING_CHECKS:
            raise ApiError(503, "Too many logins being checked; retry shortly", headers={"Retry-After": "1"})
        others = self._pending.get(client, 0)
        self._pending[client] = others + 1
        self._pending_total += 1
        try:
            yield others
        finally:
            self._pending_total -= 1
            if self._pending[client] == 1:
                del self._pending[client]
            else:
                self._pending[client] -= 1

    async def check_password(self, username: str, password: str) -> bool:
        """Compare both in constant time; both are always checked.

        A stored hash is slow to check by design: that runs on the hashing threads,
        never on the event loop, which keeps answering everyone else meanwhile.
        """
        user_ok = _same(username, self.settings.web_username)
        stored = self.settings.web_password
        if is_hashed(stored):
            password_ok = await asyncio.get_running_loop().run_in_executor(
                self._hashing(), verify_password, stored, password
            )
        else:
            password_ok = verify_password(stored, password)  # plain text (Medusa's): a constant-time compare
        return user_ok and password_ok

    def _hashing(self) -> concurrent.futures.ThreadPoolExecutor:
        """Return this app's hashing threads, started at the first hashed-password check."""
        if self._hash_pool is None:
            self._hash_pool = concurrent.futures.ThreadPoolExecutor(HASHING_THREADS, "medusa_v2-hash")
        return self._hash_pool

    # -- tokens --

    def issue_token(self, username: str, seconds: int) -> str:
        """Return a signed token for `username` valid `seconds` from now."""
        now = int(self.clock())
        claims: dict[str, Any] = {
            "iss": self.issuer,
            "iat": now,
            "exp": now + seconds,
            "jti": secrets.token_urlsafe(16),
            "username": username,
            "pwd": self.credentials_stamp(),
        }
        if self.settings.token_api_key:
            claims["apiKey"] = self.settings.api_key
        return jwt.encode(claims, self.settings.encryption_secret, algorithm=ALGORITHM)

    async def verify_token(self, token: str) -> Mapping[str, Any]:
        """Return the token's claims, or raise the 401 that says why it is refused."""
        now = self.clock()
        claims = self._verified.get(token)
        if claims is None:
            claims = self._decode(token, now)
            if len(self._verified) >= _TOKEN_CACHE_SIZE:
                self._verified.clear()
            self._verified[token] = claims
        elif claims["exp"] <= now:
            del self._verified[token]
            raise unauthorized(EXPIRED, EXPIRED)
        if await self.store.is_token_revoked(claims["jti"]):
            raise unauthorized(INVALID_TOKEN, "Token has been revoked.")
        return claims

    async def valid_claims(self, token: str) -> Mapping[str, Any] | None:
        """Return the token's claims, or None when it is not a valid token of ours."""
        try:
            return await self.verify_token(token)
        except ApiError as exc:
            if exc.status != 401:
                raise
            return None

    def _decode(self, token: str, now: float) -> Mapping[str, Any]:
        try:
            claims = jwt.decode(
                token,
                self.settings.encryption_secret,
                algorithms=[ALGORITHM],
                options={"require": ["exp", "iat", "jti"], "verify_iat": False},
                leeway=0,
            )
        except jwt.ExpiredSignatureError:
            raise unauthorized(EXPIRED, EXPIRED) from None
        except jwt.PyJWTError:
            raise unauthorized(INVALID_TOKEN, INVALID_TOKEN) from None
        # pyjwt checks exp against the wall clock; ours may be injected (tests, replays).
        if not isinstance(claims.get("exp"), int) or not isinstance(claims.get("jti"), str):
            raise unauthorized(INVALID_TOKEN, INVALID_TOKEN)
        # Our tokens carry the credentials' stamp. A host that owns the settings (Medusa)
        # mints tokens without one, which are its concern; anywhere else a token without
        # it was issued before stamps existed, so before any later password change.
        stamp = claims.get("pwd")
        if (stamp is None and self.require_stamp) or (
            stamp is not None and not _same(str(stamp), self.credentials_stamp())
        ):
            raise unauthorized(INVALID_TOKEN, "The token was issued before the credentials changed.")
        if claims["exp"] <= now:
            raise unauthorized(EXPIRED, EXPIRED)
        return claims

    async def revoke(self, claims: Mapping[str, Any]) -> None:
        """Refuse this token from now on, in every process sharing the store."""
        self._verified = {t: c for t, c in self._verified.items() if c["jti"] != claims["jti"]}
        await self.store.revoke_token(claims["jti"], float(claims["exp"]))

    # -- logins --

    async def login(self, body: Mapping[str, Any], client: str) -> str:
        """Check a POST /authenticate body and return a new token (400/401/429 otherwise)."""
        seconds = json_integer(body.get("exp", DEFAULT_TOKEN_SECONDS))
        if seconds is None or not 1 <= seconds <= MAX_TOKEN_SECONDS:
            raise ApiError(
                400,
                f"Invalid 'exp': must be an integer number of seconds from 1 to {MAX_TOKEN_SECONDS}",
                errors={"exp": f"must be an integer from 1 to {MAX_TOKEN_SECONDS}"},
            )
        username = body.get("username", "")
        password = body.get("password", "")
        if not isinstance(username, str) or not isinstance(password, str):
            raise ApiError(400, "Invalid request body: 'username' and 'password' must be strings")
        if not self.settings.auth_required:
            return self.issue_token(username, seconds)
        with self._attempt(client) as others:
            await self.check_throttle(client, others)
            if not await self.check_password(username, password):
                await self.record_failure(client)
                raise unauthorized(INVALID_CREDENTIALS)
        await self.store.clear_login_failures(client)
        return self.issue_token(username, seconds)

    async def check_throttle(self, client: str, pending: int = 0) -> None:
        """Raise 429 with Retry-After while `client` has too many recent failures.

        `pending`: the client's other attempts still being checked, counted as failures.
        """
        now = self.clock()
        window = self.settings.login_window
        # The window is half-open, (now - window, now]: a failure exactly `window`
        # seconds old no longer counts, so Retry-After seconds later a login is allowed.
        failures = await self.store.login_failures(client, math.nextafter(now - window, math.inf))
        if len(failures) + pending >= self.settings.login_max_failures:
            # The window slides: the oldest counted failure leaving it frees one attempt.
            over = len(failures) - self.settings.login_max_failures + pending
            oldest = failures[over] if 0 <= over < len(failures) else now
            retry = max(1, math.ceil(oldest + window - now))
            raise ApiError(
                429,
                f"Too many failed logins; try again in {retry} seconds",
                headers={"Retry-After": str(retry)},
            )

    async def record_failure(self, client: str) -> None:
        """Count one failed login for `client`."""
        now = self.clock()
        await self.store.record_login_failure(client, now, now - self.settings.login_window)

"""The endpoints that are not resources: /authenticate, /health and the 404 catch-all."""

from __future__ import annotations

from typing import TYPE_CHECKING, ClassVar

from .auth import bearer_token, unauthorized
from .codec import etag_of
from .errors import ApiError
from .handler import ApiHandler
from .store import StoreUnavailable

if TYPE_CHECKING:
    from .context import ApiContext


AUTHENTICATE_BODY_LIMIT = 16 * 1024


class AuthenticateHandler(ApiHandler):
    """POST issues a token for username/password; DELETE revokes the presented token."""

    routes: ClassVar = {"single": ("POST", "DELETE")}
    public: ClassVar = frozenset({"POST"})

    def body_limit(self) -> int:
        """Read at most 16 KiB from anyone: this route needs no credentials (413 beyond)."""
        return min(AUTHENTICATE_BODY_LIMIT, self.api.settings.max_body_size)

    async def post(self) -> None:
        """Check the credentials in the body and answer `{"token": ...}`."""
        body = self.json_body()
        token = await self.api.auth.login(body, self.request.remote_ip or "")
        # A credential: never stored by any cache (RFC 6749 5.1).
        await self.send_json(200, {"token": token}, {"Cache-Control": "no-store", "Pragma": "no-cache"})

    async def delete(self) -> None:
        """Revoke the token this request carries, whatever other credential came with it."""
        identity = self.identity
        if identity is None:
            raise unauthorized("No authorization token.")
        claims = identity.claims if identity.method == "token" else None
        if claims is None:
            token = bearer_token(self.request.headers)
            if token is None and not self.request.headers.get("X-Auth", "").strip():
                raise ApiError(400, "DELETE /authenticate revokes a token: send it as 'x-auth: Bearer <token>'")
            # RFC 7009 2.2: a token that is not valid (malformed, forged, expired, already
            # revoked) is no error; it works nowhere, which is what was asked.
            claims = None if token is None else await self.api.auth.valid_claims(token)
        if claims is not None:
            await self.api.auth.revoke(claims)
        await self._send(204, None)


class HealthHandler(ApiHandler):
    """Liveness for load balancers: 200 when the store answers, 503 when it does not."""

    routes: ClassVar = {"single": ("GET", "HEAD")}
    public: ClassVar = frozenset({"GET", "HEAD"})

    async def get(self) -> None:
        """Ping the store."""
        try:
            await self.api.store.ping()
        except StoreUnavailable:
            await self.send_json(503, {"status": "unavailable"}, {"Retry-After": "5"})
            return
        await self.send_json(200, {"status": "ok"})

    async def head(self) -> None:
        """Answer as GET does, without the body (load balancers often probe with HEAD)."""
        await self.get()


class OpenAPIHandler(ApiHandler):
    """Serve the API description, built once with the URL table; no credentials needed."""

    routes: ClassVar = {"single": ("GET", "HEAD")}
    public: ClassVar = frozenset({"GET", "HEAD"})

    def initialize(  # type: ignore[override]
        self, api: ApiContext, kind: str, document: bytes, etag: str | None = None
    ) -> None:
        """Receive the encoded document (and its ETag) from the URL table."""
        self.document = document
        self.etag = etag or etag_of(document)
        super().initialize(api, kind)

    async def get(self) -> None:
        """Answer the document with its ETag, or 304 when If-None-Match names it."""
        await self.send_cacheable(self.document, {"ETag": self.etag})

    async def head(self) -> None:
        """Answer as GET does, without the body."""
        await self.get()


class NotFoundHandler(ApiHandler):
    """Answer any path no rule matched with a JSON 404 (every verb, no credentials)."""

    routes: ClassVar = {"single": ("GET", "POST", "PUT", "PATCH", "DELETE", "HEAD")}
    public: ClassVar = frozenset({"GET", "POST", "PUT", "PATCH", "DELETE", "HEAD"})

    async def prepare(self) -> None:
        """Refuse before reading any body."""
        raise ApiError(404, f"Not found: {self.request.path[:200]}")

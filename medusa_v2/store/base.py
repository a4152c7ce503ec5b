"""The store interface the handlers use; implementations live beside it.

Every method is a coroutine so a store over a network driver (PostgreSQL) fits
without touching handlers. The store never imports tornado and knows nothing of HTTP.
"""

from __future__ import annotations

import abc
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any


class StoreError(Exception):
    """Base of the errors a store raises."""


class StoreUnavailable(StoreError):
    """The store cannot be reached now; the request may be retried."""


class NotFound(StoreError):
    """The addressed row does not exist (or not under that parent)."""


class AlreadyExists(StoreError):
    """A create chose an id that is taken."""


@dataclass(frozen=True, slots=True)
class IdempotentResponse:
    """A stored response to replay for a repeated Idempotency-Key."""

    status: int
    headers: Mapping[str, str]
    body: bytes


Check = Callable[[Mapping[str, Any]], None]
"""Called with the current row inside a write's transaction; raising aborts the write."""


class Store(abc.ABC):
    """Persistent state: auth bookkeeping, idempotency keys and resource rows."""

    @abc.abstractmethod
    async def open(self) -> None:
        """Connect and bring the schema up to date (forward migrations)."""

    @abc.abstractmethod
    async def close(self) -> None:
        """Release connections; later calls raise StoreUnavailable."""

    @abc.abstractmethod
    async def ping(self) -> None:
        """Return when the store answers; raise StoreUnavailable otherwise."""

    # -- authentication state, shared by every process on this store --

    @abc.abstractmethod
    async def revoke_token(self, jti: str, expires_at: float) -> None:
        """Remember that token `jti` is revoked until it would have expired anyway."""

    @abc.abstractmethod
    async def is_token_revoked(self, jti: str) -> bool:
        """Return whether token `jti` was revoked."""

    @abc.abstractmethod
    async def login_failures(self, client: str, since: float) -> Sequence[float]:
        """Return the times of `client`'s failed logins at or after `since`, oldest first."""

    @abc.abstractmethod
    async def record_login_failure(self, client: str, at: float, forget_before: float) -> None:
        """Record a failed login; forget this client's failures older than `forget_before`."""

    @abc.abstractmethod
    async def clear_login_failures(self, client: str) -> None:
        """Forget a client's failed logins (after a successful one)."""

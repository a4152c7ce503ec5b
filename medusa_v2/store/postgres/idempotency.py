"""Idempotency keys: claimed, completed (also in an insert's own transaction) and released."""

from __future__ import annotations

import json
from typing import Any

import psycopg

from ..base import IdempotentResponse, KeyInFlight, KeyMismatch
from .pool import PooledStore

_COMPLETE = "UPDATE idempotency_key SET status = %s, headers = %s, body = %s WHERE scope = %s AND key = %s"


def _completed(scope: str, key: str, response: IdempotentResponse) -> tuple[Any, ...]:
    """Return _COMPLETE's parameters."""
    return (response.status, json.dumps(dict(response.headers)), response.body, scope, key)


class IdempotencyKeys(PooledStore):
    """Idempotency keys (a part of PostgresStore)."""

    async def claim_idempotency_key(
        self, scope: str, key: str, fingerprint: str, now: float, *, expire_before: float, stale_before: float
    ) -> IdempotentResponse | None:
        """Purge expired keys, then claim this one or report how it is taken."""

        async def work(conn: psycopg.AsyncConnection[Any]) -> IdempotentResponse | None:
            async with conn.transaction(), conn.cursor() as cur:
                await cur.execute("DELETE FROM idempotency_key WHERE created_at < %s", (expire_before,))
                # A concurrent claim of the same key waits here for the first to commit.
                await cur.execute(
                    "INSERT INTO idempotency_key (scope, key, fingerprint, created_at) VALUES (%s, %s, %s, %s)"
                    " ON CONFLICT (scope, key) DO NOTHING RETURNING 1",
                    (scope, key, fingerprint, now),
                )
                if await cur.fetchone() is not None:
                    return None
                await cur.execute(
                    "SELECT fingerprint, created_at, status, headers, body FROM idempotency_key"
                    " WHERE scope = %s AND key = %s FOR UPDATE",
                    (scope, key),
                )
                found = await cur.fetchone()
                if found is None:  # released between the insert and this read: claim it now
                    await cur.execute(
                        "INSERT INTO idempotency_key (scope, key, fingerprint, created_at) VALUES (%s, %s, %s, %s)",
                        (scope, key, fingerprint, now),
                    )
                    return None
                stored_fingerprint, created_at, status, headers, body = found
                if stored_fingerprint != fingerprint:
                    raise KeyMismatch(key)
                if status is not None:
                    return IdempotentResponse(status, json.loads(headers), bytes(body) if body is not None else b"")
                if created_at >= stale_before:
                    raise KeyInFlight(key)
                # Held by a request that never finished (its process died): take it over.
                await cur.execute(
                    "UPDATE idempotency_key SET created_at = %s WHERE scope = %s AND key = %s", (now, scope, key)
                )
                return None

        return await self._run(work)

    async def complete_idempotency_key(self, scope: str, key: str, response: IdempotentResponse) -> None:
        """Store the response to replay."""

        async def work(conn: psycopg.AsyncConnection[Any]) -> None:
            await conn.execute(_COMPLETE, _completed(scope, key, response))

        await self._run(work)

    async def release_idempotency_key(self, scope: str, key: str) -> None:
        """Delete the in-flight key (a finished one is kept)."""

        async def work(conn: psycopg.AsyncConnection[Any]) -> None:
            await conn.execute(
                "DELETE FROM idempotency_key WHERE scope = %s AND key = %s AND status IS NULL", (scope, key)
            )

        await self._run(work)

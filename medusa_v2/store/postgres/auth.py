"""Authentication state: revoked tokens, kept in memory by LISTEN/NOTIFY, and login failures."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Sequence
from typing import Any

import psycopg

from .changes import CHANGES_CHANNEL, purge_changes
from .connection import CONNECT_TIMEOUT, POOL_MAX_SIZE, POOL_MIN_SIZE
from .pool import PooledStore

REVOKED_CHANNEL = "medusa_v2_revoked"  # NOTIFY channel: "<expires_at> <jti>" per revocation
LISTENER_NAME = "medusa_v2 revocations"  # application_name of the listening connection
REVOKED_PROBE = 10.0  # seconds of quiet after which the listening connection is probed
REVOKED_PRUNE_MIN = 1024  # revocations kept in memory before expired ones are dropped


class AuthState(PooledStore):
    """Revoked tokens and login failures (a part of PostgresStore)."""

    def __init__(self, url: str, *, min_size: int = POOL_MIN_SIZE, max_size: int = POOL_MAX_SIZE) -> None:
        super().__init__(url, min_size=min_size, max_size=max_size)
        # Revoked jtis (-> expiry), kept current by LISTEN/NOTIFY while `_revoked_live`;
        # without a listening connection every check asks the database.
        self._revoked: dict[str, float] = {}
        self._revoked_live = False
        self._prune_at = REVOKED_PRUNE_MIN
        # Set when another process published changes (the same listener, CHANGES_CHANNEL).
        self._changes_heard = asyncio.Event()

    async def revoke_token(self, jti: str, expires_at: float) -> None:
        """Insert the revocation (a repeat is a no-op) and notify every listening process."""

        async def work(conn: psycopg.AsyncConnection[Any]) -> None:
            async with conn.transaction():  # the notification goes out at COMMIT
                await conn.execute(
                    "INSERT INTO revoked_token (jti, expires_at) VALUES (%s, %s) ON CONFLICT (jti) DO NOTHING",
                    (jti, expires_at),
                )
                await conn.execute("SELECT pg_notify(%s, %s)", (REVOKED_CHANNEL, f"{expires_at!r} {jti}"))

        await self._run(work)
        self._remember_revoked(jti, expires_at)  # this process refuses it at once

    async def purge_expired(
        self, now: float, *, keys_before: float, failures_before: float, changes_before: float | None = None
    ) -> None:
        """Forget what no longer matters (see Store.purge_expired)."""

        async def work(conn: psycopg.AsyncConnection[Any]) -> None:
            async with conn.transaction():
                await conn.execute("DELETE FROM revoked_token WHERE expires_at < %s", (now,))
                await conn.execute("DELETE FROM idempotency_key WHERE created_at < %s", (keys_before,))
                await conn.execute("DELETE FROM login_failure WHERE at < %s", (failures_before,))
                if changes_before is not None:
                    await purge_changes(conn, changes_before)

        await self._run(work)

    async def is_token_revoked(self, jti: str) -> bool:
        """Answer from the revocations this process listens to, else from the table."""
        if self._revoked_live:
            return jti in self._revoked

        async def work(conn: psycopg.AsyncConnection[Any]) -> bool:
            cur = await conn.execute("SELECT 1 FROM revoked_token WHERE jti = %s", (jti,))
            return await cur.fetchone() is not None

        return await self._run(work, read=True)

    @property
    def revocations_live(self) -> bool:
        """Return whether revocation checks are answered from memory (a listener is up)."""
        return self._revoked_live

    def _remember_revoked(self, jti: str, expires_at: float) -> None:
        self._revoked[jti] = expires_at
        if len(self._revoked) > self._prune_at:
            # Expired tokens are refused by their `exp` anyway: forget their revocations.
            now = time.time()
            self._revoked = {j: e for j, e in self._revoked.items() if e > now}
            self._prune_at = max(REVOKED_PRUNE_MIN, 2 * len(self._revoked))

    async def _listen_for_revocations(self) -> None:
        """Keep `_revoked` equal to the table: LISTEN, load it, then apply notifications.

        LISTEN comes before the load, so a revocation committed in between is both
        loaded and notified (harmless), never missed. While this connection is down,
        `_revoked_live` is false and checks go to the database; it reconnects with
        backoff. A quiet connection is probed every REVOKED_PROBE seconds, so one that
        died silently is noticed within that time.
        """
        delay = 0.1
        while True:
            try:
                conn = await psycopg.AsyncConnection.connect(
                    self.url, autocommit=True, connect_timeout=int(CONNECT_TIMEOUT), application_name=LISTENER_NAME
                )
                try:
                    await conn.execute(f"LISTEN {REVOKED_CHANNEL}")
                    await conn.execute(f"LISTEN {CHANGES_CHANNEL}")
                    cur = await conn.execute("SELECT jti, expires_at FROM revoked_token")
                    self._revoked = {jti: exp for jti, exp in await cur.fetchall()}
                    self._prune_at = max(REVOKED_PRUNE_MIN, 2 * len(self._revoked))
                    self._revoked_live = True
                    delay = 0.1
                    while True:
                        async for note in conn.notifies(timeout=REVOKED_PROBE):
                            if note.channel == CHANGES_CHANNEL:
                                self._changes_heard.set()
                                continue
                            expires, _, jti = note.payload.partition(" ")
                            self._remember_revoked(jti, float(expires))
                        await asyncio.wait_for(conn.execute("SELECT 1"), CONNECT_TIMEOUT)
                finally:
                    self._revoked_live = False
                    with contextlib.suppress(Exception):
                        await conn.close()
            except asyncio.CancelledError:
                raise
            except Exception:  # noqa: S110 (any trouble: checks go to the database meanwhile)
                pass
            await asyncio.sleep(delay)
            delay = min(delay * 2, 5.0)

    async def login_failures(self, client: str, since: float) -> Sequence[float]:
        """Return the client's failure times in the window, oldest first."""

        async def work(conn: psycopg.AsyncConnection[Any]) -> list[float]:
            cur = await conn.execute(
                "SELECT at FROM login_failure WHERE client = %s AND at >= %s ORDER BY at", (client, since)
            )
            return [r[0] for r in await cur.fetchall()]

        return await self._run(work, read=True)

    async def record_login_failure(self, client: str, at: float, forget_before: float) -> None:
        """Insert one failure and drop this client's stale ones in the same transaction."""

        async def work(conn: psycopg.AsyncConnection[Any]) -> None:
            async with conn.transaction():
                await conn.execute("DELETE FROM login_failure WHERE client = %s AND at < %s", (client, forget_before))
                await conn.execute("INSERT INTO login_failure (client, at) VALUES (%s, %s)", (client, at))

        await self._run(work)

    async def clear_login_failures(self, client: str) -> None:
        """Delete the client's failures."""

        async def work(conn: psycopg.AsyncConnection[Any]) -> None:
            await conn.execute("DELETE FROM login_failure WHERE client = %s", (client,))

        await self._run(work)

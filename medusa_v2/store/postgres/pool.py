"""The store's base: a per-process connection pool, opened after the migrations, and `_run` on it."""

from __future__ import annotations

import abc
import asyncio
import contextlib
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any, Self, TypeVar
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import psycopg
import psycopg.errors
from psycopg_pool import AsyncConnectionPool

from ...declaration import Declaration
from .. import schema
from ..base import Store, StoreUnavailable
from .connection import _UNAVAILABLE, CONNECT_TIMEOUT, POOL_MAX_SIZE, POOL_MIN_SIZE, POOL_TIMEOUT, _first_line
from .migrations import migrate

T = TypeVar("T")


class PooledStore(Store):
    """The connections of a PostgresStore: its pool, open and close, and `_run` (the mixins' common base)."""

    def __init__(self, url: str, *, min_size: int = POOL_MIN_SIZE, max_size: int = POOL_MAX_SIZE) -> None:
        self.url = url
        self.min_size = min_size
        self.max_size = max(min_size, max_size)
        self._pool: AsyncConnectionPool | None = None
        self._checking: asyncio.Task[None] | None = None
        self._listening: asyncio.Task[None] | None = None  # AuthState's listener: open starts it, close cancels it

    @classmethod
    def from_url(cls, url: str) -> Self:
        """Return a store for a `postgresql://` (or `postgres://`) url.

        Two query parameters of our own size each process's pool and are removed
        before the url reaches libpq: `pool_min_size` (default 2) and `pool_max_size`
        (default 10), e.g. `postgresql://medusa@db/medusa?pool_max_size=20`. Every
        other parameter is libpq's (sslmode, connect_timeout, target_session_attrs...).
        """
        parts = urlsplit(url)
        kept: list[tuple[str, str]] = []
        sizes = {"pool_min_size": POOL_MIN_SIZE, "pool_max_size": POOL_MAX_SIZE}
        for key, value in parse_qsl(parts.query, keep_blank_values=True):
            if key in sizes:
                if not value.isdigit() or not 1 <= int(value) <= 1000:
                    raise ValueError(f"[Database] url: {key} must be an integer from 1 to 1000")
                sizes[key] = int(value)
            else:
                kept.append((key, value))
        clean = urlunsplit(parts._replace(query=urlencode(kept)))
        return cls(clean, min_size=sizes["pool_min_size"], max_size=sizes["pool_max_size"])

    # -- connections --

    async def open(self, declarations: Sequence[Declaration] = ()) -> None:
        """Migrate on one direct connection (clear errors at start), then open the pool."""
        specs = [schema.derive(decl) for decl in schema.ordered(declarations)]  # a bad one fails before connecting
        try:
            conn = await psycopg.AsyncConnection.connect(
                self.url, autocommit=True, connect_timeout=int(CONNECT_TIMEOUT)
            )
        except psycopg.Error as exc:
            raise StoreUnavailable(f"cannot connect to PostgreSQL: {_first_line(exc)}") from exc
        try:
            await migrate(conn, specs)
        except _UNAVAILABLE as exc:
            raise StoreUnavailable(f"PostgreSQL migration failed: {_first_line(exc)}") from exc
        finally:
            await conn.close()
        pool = AsyncConnectionPool(
            self.url,
            min_size=self.min_size,
            max_size=self.max_size,
            kwargs={"autocommit": True, "connect_timeout": CONNECT_TIMEOUT},
            timeout=POOL_TIMEOUT,
            open=False,
            name="medusa_v2",
        )
        try:
            await pool.open(wait=True, timeout=CONNECT_TIMEOUT * 2)
        except psycopg.Error as exc:
            await pool.close()
            raise StoreUnavailable(f"cannot open the PostgreSQL connection pool: {_first_line(exc)}") from exc
        self._pool = pool
        self._listening = asyncio.get_running_loop().create_task(self._listen_for_revocations())

    async def close(self) -> None:
        """Close the pool (idempotent)."""
        pool, self._pool = self._pool, None
        if self._listening is not None:
            self._listening.cancel()
            with contextlib.suppress(BaseException):
                await self._listening
            self._listening = None
        if self._checking is not None:
            self._checking.cancel()
            with contextlib.suppress(BaseException):
                await self._checking
            self._checking = None
        if pool is not None:
            await pool.close()

    @property
    def pool(self) -> AsyncConnectionPool:
        """Return the open pool, or raise StoreUnavailable."""
        if self._pool is None:
            raise StoreUnavailable("the store is closed")
        return self._pool

    async def _run(self, work: Callable[[psycopg.AsyncConnection[Any]], Awaitable[T]], *, read: bool = False) -> T:
        """Run `work` on a pooled connection; map connection trouble to StoreUnavailable.

        A read whose connection turns out to be dead (the server restarted or killed
        it while it sat in the pool) is tried once more on another connection: reads
        are safe to repeat. A write is not repeated (its commit may have happened):
        the request gets 503 and the client retries.
        """
        attempts = 3 if read else 1
        for attempt in range(attempts):
            try:
                async with self.pool.connection() as conn:
                    return await work(conn)
            except _UNAVAILABLE as exc:
                self._recover()
                broken = isinstance(exc, psycopg.OperationalError) and not isinstance(
                    exc, psycopg.errors.TransactionRollback | psycopg.errors.QueryCanceled
                )
                if attempt + 1 < attempts and broken:
                    continue
                raise StoreUnavailable(f"PostgreSQL: {_first_line(exc)}") from exc
        raise AssertionError("unreachable")

    def _recover(self) -> None:
        """Have the pool test its idle connections (in the background), dropping dead ones.

        After a server restart every idle connection is dead: one failed request
        triggers the check, so the following ones get fresh connections.
        """
        if self._pool is None or (self._checking is not None and not self._checking.done()):
            return
        self._checking = asyncio.get_running_loop().create_task(self._check_pool(self._pool))

    @staticmethod
    async def _check_pool(pool: AsyncConnectionPool) -> None:
        with contextlib.suppress(Exception):
            await pool.check()

    def pool_stats(self) -> Mapping[str, int]:
        """Return psycopg_pool's figures of the pool (`pool_size`, `pool_available`, `requests_waiting`...)."""
        pool = self._pool
        return pool.get_stats() if pool is not None else {}

    async def ping(self) -> None:
        """Run a trivial query on the schema table."""

        async def work(conn: psycopg.AsyncConnection[Any]) -> None:
            await conn.execute("SELECT version FROM schema_version")

        await self._run(work, read=True)

    @abc.abstractmethod
    async def _listen_for_revocations(self) -> None:
        """Keep the revoked tokens current (AuthState's): started by open, cancelled by close."""

"""The SQLite store's authentication state: revoked tokens and login failures (a mixin of SQLiteStore)."""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Sequence
from contextlib import AbstractContextManager
from typing import TYPE_CHECKING

from ..base import StoreUnavailable
from .changes import purge_changes


class AuthState:
    """Revocations (checked once per jti and event-loop iteration) and login failures."""

    _revocation_checks: dict[str, bool]

    if TYPE_CHECKING:  # provided by SQLiteStore

        @property
        def db(self) -> sqlite3.Connection: ...

        def transaction(self) -> AbstractContextManager[sqlite3.Connection]: ...

    async def revoke_token(self, jti: str, expires_at: float) -> None:
        """Insert the revocation; purge revocations whose tokens have expired anyway."""
        with self.transaction() as db:
            db.execute(
                "INSERT INTO revoked_token (jti, expires_at) VALUES (?, ?) ON CONFLICT (jti) DO NOTHING",
                (jti, expires_at),
            )
        self._revocation_checks.clear()  # a check later in this loop iteration must see it

    async def purge_expired(
        self, now: float, *, keys_before: float, failures_before: float, changes_before: float | None = None
    ) -> None:
        """Forget what no longer matters (see Store.purge_expired)."""
        with self.transaction() as db:
            db.execute("DELETE FROM revoked_token WHERE expires_at < ?", (now,))
            db.execute("DELETE FROM idempotency_key WHERE created_at < ?", (keys_before,))
            db.execute("DELETE FROM login_failure WHERE at < ?", (failures_before,))
            if changes_before is not None:
                purge_changes(db, changes_before)

    async def is_token_revoked(self, jti: str) -> bool:
        """Look the jti up in the revocation table, once per jti and event-loop iteration.

        The requests one loop iteration serves share one look-up (a browser's parallel
        requests share one token), so an answer is at most one iteration old: another
        process's revocation is seen from this process's next iteration on (a few
        milliseconds under load), as PostgreSQL's NOTIFY reaches the others about a
        millisecond after the commit. The answers are forgotten at the next iteration,
        and at once when this store revokes a token.
        """
        checks = self._revocation_checks
        found = checks.get(jti)
        if found is not None:
            return found
        try:
            found = self.db.execute("SELECT 1 FROM revoked_token WHERE jti = ?", (jti,)).fetchone() is not None
        except sqlite3.Error as exc:
            raise StoreUnavailable(str(exc)) from exc
        if not checks:
            asyncio.get_running_loop().call_soon(checks.clear)
        checks[jti] = found
        return found

    async def login_failures(self, client: str, since: float) -> Sequence[float]:
        """Return the client's failure times in the window."""
        try:
            rows = self.db.execute(
                "SELECT at FROM login_failure WHERE client = ? AND at >= ? ORDER BY at",
                (client, since),
            ).fetchall()
        except sqlite3.Error as exc:
            raise StoreUnavailable(str(exc)) from exc
        return [r[0] for r in rows]

    async def record_login_failure(self, client: str, at: float, forget_before: float) -> None:
        """Insert one failure and drop this client's stale ones in the same transaction."""
        with self.transaction() as db:
            db.execute("DELETE FROM login_failure WHERE client = ? AND at < ?", (client, forget_before))
            db.execute("INSERT INTO login_failure (client, at) VALUES (?, ?)", (client, at))

    async def clear_login_failures(self, client: str) -> None:
        """Delete the client's failures."""
        with self.transaction() as db:
            db.execute("DELETE FROM login_failure WHERE client = ?", (client,))

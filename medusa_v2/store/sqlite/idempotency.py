"""The SQLite store's Idempotency-Key records: claims, kept answers, releases (a mixin of SQLiteStore)."""

from __future__ import annotations

import json
import sqlite3
from contextlib import AbstractContextManager
from typing import TYPE_CHECKING

from ..base import IdempotentResponse, KeyInFlight, KeyMismatch


class IdempotencyKeys:
    """One row per (scope, key): its request's fingerprint, then the answer to replay."""

    if TYPE_CHECKING:  # provided by SQLiteStore

        def transaction(self) -> AbstractContextManager[sqlite3.Connection]: ...

    async def claim_idempotency_key(
        self, scope: str, key: str, fingerprint: str, now: float, *, expire_before: float, stale_before: float
    ) -> IdempotentResponse | None:
        """Purge expired keys, then claim this one or report how it is taken."""
        with self.transaction() as db:
            db.execute("DELETE FROM idempotency_key WHERE created_at < ?", (expire_before,))
            row = db.execute(
                "SELECT fingerprint, created_at, status, headers, body FROM idempotency_key"
                " WHERE scope = ? AND key = ?",
                (scope, key),
            ).fetchone()
            if row is not None:
                stored_fingerprint, created_at, status, headers, body = row
                if stored_fingerprint != fingerprint:
                    raise KeyMismatch(key)
                if status is not None:
                    return IdempotentResponse(status, json.loads(headers), bytes(body) if body is not None else b"")
                if created_at >= stale_before:
                    raise KeyInFlight(key)
                # Held by a request that never finished (its process died): take it over.
                db.execute("DELETE FROM idempotency_key WHERE scope = ? AND key = ?", (scope, key))
            db.execute(
                "INSERT INTO idempotency_key (scope, key, fingerprint, created_at) VALUES (?, ?, ?, ?)",
                (scope, key, fingerprint, now),
            )
            return None

    async def complete_idempotency_key(self, scope: str, key: str, response: IdempotentResponse) -> None:
        """Store the response to replay."""
        with self.transaction() as db:
            self._complete(db, scope, key, response)

    @staticmethod
    def _complete(db: sqlite3.Connection, scope: str, key: str, response: IdempotentResponse) -> None:
        db.execute(
            "UPDATE idempotency_key SET status = ?, headers = ?, body = ? WHERE scope = ? AND key = ?",
            (response.status, json.dumps(dict(response.headers)), response.body, scope, key),
        )

    async def release_idempotency_key(self, scope: str, key: str) -> None:
        """Delete the in-flight key (a finished one is kept)."""
        with self.transaction() as db:
            db.execute("DELETE FROM idempotency_key WHERE scope = ? AND key = ? AND status IS NULL", (scope, key))

"""Idempotency-Key on POST: a retried create replays its first response.

The key lives in the store (shared by every process), scoped to the client and the
collection path, with a fingerprint of the request body:

- first use: the key is claimed (in flight), the create runs, its response is kept;
- same key, same body: the kept response is replayed and nothing is created;
- same key, another body: 422; same key while the first is in flight: 409.

A create that fails releases the key, so the client may retry. Keys are kept for
`TTL` seconds. A key left in flight for `LEASE` seconds (its process died between
claim and answer) may be taken over.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from .errors import ApiError
from .store.base import COMPLETION, Completion, IdempotentResponse, KeyInFlight, KeyMismatch, Store, StoreError

HEADER = "Idempotency-Key"
MAX_KEY_LENGTH = 255
TTL = 24 * 3600
LEASE = 60


def parse_key(headers: Mapping[str, str]) -> str | None:
    """Return the request's Idempotency-Key, None without one; 400 when malformed."""
    value = headers.get(HEADER)
    if value is None:
        return None
    if not 1 <= len(value) <= MAX_KEY_LENGTH or not all(" " <= c <= "~" for c in value):
        raise ApiError(400, f"Invalid {HEADER} header: 1 to {MAX_KEY_LENGTH} printable ASCII characters")
    return value


def fingerprint(body: Mapping[str, Any]) -> str:
    """Return a digest of a JSON body that ignores key order and whitespace."""
    canonical = json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=True)
    return hashlib.sha256(canonical.encode("ascii")).hexdigest()


def scope(principal: str, path: str) -> str:
    """Return the namespace of a key: who asked, on which collection."""
    return f"{principal}\n{path.rstrip('/')}"


async def once(
    store: Store,
    now: float,
    key_scope: str,
    key: str,
    body: Mapping[str, Any],
    create: Callable[[], Awaitable[IdempotentResponse]],
    respond: Callable[[Mapping[str, Any]], IdempotentResponse] | None = None,
) -> IdempotentResponse:
    """Run `create` at most once per (scope, key); return its response, or the kept one.

    `respond` (a stored resource's create): the response of the store row it inserts.
    The store then records the response in the insert's own transaction; without
    it, the response is recorded once `create` returns.
    """
    try:
        kept = await store.claim_idempotency_key(
            key_scope, key, fingerprint(body), now, expire_before=now - TTL, stale_before=now - LEASE
        )
    except KeyMismatch:
        raise ApiError(422, f"{HEADER} was already used with another request body") from None
    except KeyInFlight:
        raise ApiError(409, f"A request with this {HEADER} is still in progress; retry later") from None
    if kept is not None:
        return kept
    completion = Completion(key_scope, key, respond) if respond is not None else None
    token = COMPLETION.set(completion)
    try:
        response = await create()
    except BaseException:
        # Nothing was created (each create is one transaction): let the client retry.
        with contextlib.suppress(StoreError):  # else the lease frees the key later
            await store.release_idempotency_key(key_scope, key)
        raise
    finally:
        COMPLETION.reset(token)
    if completion is None or completion.response is None:
        await store.complete_idempotency_key(key_scope, key, response)
    return response

"""Storage behind a small interface: SQLite embedded, PostgreSQL to scale out."""

from __future__ import annotations

from collections.abc import Sequence

from ..declaration import Declaration
from .base import AlreadyExists, IdempotentResponse, NotFound, Store, StoreError, StoreUnavailable
from .schema import SchemaError

POSTGRES_SCHEMES = ("postgresql://", "postgres://")


def store_from_url(url: str) -> Store:
    """Return an unopened store for a `[Database] url` (`sqlite:...` or `postgresql://...`)."""
    if url.startswith("sqlite:"):
        from .sqlite import SQLiteStore

        return SQLiteStore.from_url(url)
    if url.startswith(POSTGRES_SCHEMES):
        try:
            from .postgres import PostgresStore
        except ImportError as exc:  # the optional driver is not installed
            raise StoreUnavailable(
                f"[Database] url is PostgreSQL but its driver is missing ({exc.name}): "
                "pip install 'medusa-v2[postgresql]'"
            ) from None
        return PostgresStore.from_url(url)
    scheme = url.split(":", 1)[0]
    raise ValueError(f"unsupported database url scheme {scheme!r} (supported: sqlite, postgresql)")


async def open_store(url: str, declarations: Sequence[Declaration] = ()) -> Store:
    """Return an opened store (schema created or migrated) for a `[Database] url`.

    `declarations`: the stored resources whose tables the store derives and migrates
    (see `Store.open`); the built-in ticket and message need none.
    """
    store = store_from_url(url)
    await store.open(declarations)
    return store


__all__ = [
    "AlreadyExists",
    "IdempotentResponse",
    "NotFound",
    "SchemaError",
    "Store",
    "StoreError",
    "StoreUnavailable",
    "open_store",
    "store_from_url",
]

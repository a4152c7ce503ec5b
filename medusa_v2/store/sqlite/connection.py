"""Open SQLite databases: the url's path, a private file, the busy timeout, busy errors."""

from __future__ import annotations

import contextlib
import os
import sqlite3

BUSY_TIMEOUT_MS = 5000


def path_from_url(url: str) -> str:
    """Return the database path of an `sqlite:///abs/path` or `sqlite:///:memory:` url."""
    if not url.startswith("sqlite:"):
        raise ValueError(f"not an sqlite url: {url!r}")
    rest = url[len("sqlite:") :]
    if rest.startswith("///"):
        rest = rest[2:]
        return ":memory:" if rest == "/:memory:" else rest
    return rest


def _create_private(path: str) -> None:
    """Create a new database file readable by its owner only (0600), whatever the umask.

    SQLite gives its -wal and -shm files the database file's mode, so they are private
    too. An existing file is left as it is.
    """
    if path == ":memory:" or path.startswith("file:") or os.path.exists(path):
        return
    with contextlib.suppress(FileExistsError):  # another process created it meanwhile
        os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))


def _busy(exc: BaseException) -> bool:
    """Return whether an error is SQLite's "database is locked"/busy (retryable)."""
    if not isinstance(exc, sqlite3.OperationalError):
        return False
    code = getattr(exc, "sqlite_errorcode", None)
    if code is not None:
        return code & 0xFF in (sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED)
    return "locked" in str(exc) or "busy" in str(exc)

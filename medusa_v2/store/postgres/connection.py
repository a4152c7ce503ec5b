"""Connecting to PostgreSQL: timeouts, pool sizes, and the errors that mean "retry later"."""

from __future__ import annotations

import psycopg
import psycopg.errors

CONNECT_TIMEOUT = 5.0  # seconds to establish one connection
POOL_TIMEOUT = 5.0  # seconds a request waits for a free connection before 503
POOL_MIN_SIZE = 2
POOL_MAX_SIZE = 10

# Errors that mean "the database cannot serve this now; retry": a lost or refused
# connection, a pool with no free connection in time (PoolTimeout is an
# OperationalError), a deadlock or serialization failure (TransactionRollback), a
# cancelled statement, and a standby that refuses writes during a failover.
_UNAVAILABLE: tuple[type[BaseException], ...] = (psycopg.OperationalError, psycopg.errors.ReadOnlySqlTransaction)


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__

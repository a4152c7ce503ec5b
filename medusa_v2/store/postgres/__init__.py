"""The PostgreSQL store: psycopg 3 (async) over a connection pool, forward migrations.

Selected by `[Database] url = postgresql://user@host:port/db`. It keeps exactly the
semantics of the SQLite store (same ordering, filters, search, timestamps, errors), so
the same contract tests pass on both:

- text columns use the "C" collation: ORDER BY, equality and the (key, id) indexes
  compare bytes, like SQLite's BINARY collation; NULLs sort first ascending and last
  descending, as in SQLite;
- `q` is ILIKE over the search fields in the database's default collation (whose
  LC_CTYPE folds case: create the database with a UTF-8 locale such as C.UTF-8),
  backed by pg_trgm GIN indexes; `%`, `_` and `\\` in q are escaped (literal);
- ids come from a sequence that never goes back; a chosen id does not move it, an
  import moves it past the highest imported id below 2^62 (so the first POST after
  restoring a million rows does not walk them looking for a free id);
- a top-level list's count under any filters is a sum of the totals per filter
  values, kept exact by triggers in the writing transaction (ddl_postgres), not a
  COUNT(*) over the matching rows;
- every write is one transaction, committed before the method returns; checks run on
  the row locked by SELECT ... FOR UPDATE inside that transaction;
- a lost connection (server restart, failover, terminated backend) or a pool that
  cannot hand out a connection in time is StoreUnavailable (503 + Retry-After): the
  broken connection is dropped and the pool opens fresh ones, so later requests work;
- revoked tokens are checked in memory: each process LISTENs on one connection of its
  own and loads the table, and a revocation NOTIFYs every process at its COMMIT. The
  process that revoked refuses the token at once, the others once the notification
  arrives (a millisecond or so); while the listening connection is down, checks ask
  the table.

Each process opens its own pool (the daemon's workers open theirs after the fork).

The package, one module per concern: store.py (PostgresStore: resource rows and the
batched one-row reads), with pool.py (the pool, open and close, `_run`), auth.py
(revocations and login failures), idempotency.py and bulk.py (export and import)
mixed in; connection.py: timeouts and the errors that mean "retry"; migrations.py:
the schema; queries.py: the SQL of reads; sequences.py: id sequences.
"""

from ..sql import COUNTER_LIMIT as COUNTER_LIMIT  # re-exported: the import's sequence bound
from .auth import LISTENER_NAME as LISTENER_NAME
from .auth import REVOKED_CHANNEL as REVOKED_CHANNEL
from .auth import REVOKED_PROBE as REVOKED_PROBE
from .auth import REVOKED_PRUNE_MIN as REVOKED_PRUNE_MIN
from .connection import CONNECT_TIMEOUT as CONNECT_TIMEOUT
from .connection import POOL_MAX_SIZE as POOL_MAX_SIZE
from .connection import POOL_MIN_SIZE as POOL_MIN_SIZE
from .connection import POOL_TIMEOUT as POOL_TIMEOUT
from .migrations import MIGRATION_LOCK as MIGRATION_LOCK
from .migrations import MIGRATIONS as MIGRATIONS
from .migrations import RESOURCE_SCHEMA_MIGRATION as RESOURCE_SCHEMA_MIGRATION
from .migrations import TOTALS_MIGRATION as TOTALS_MIGRATION
from .migrations import split_statements as split_statements
from .queries import DEEP_OFFSET as DEEP_OFFSET
from .queries import _order_by as _order_by
from .queries import _where as _where
from .queries import page_sql as page_sql
from .queries import search_sql as search_sql
from .store import PostgresStore as PostgresStore

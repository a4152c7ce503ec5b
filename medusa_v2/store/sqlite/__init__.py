"""The embedded SQLite store (SQLiteStore, in store.py), one module per concern.

store.py: connection, transactions, auth state, rows, idempotency keys;
connection.py: the url's path, the file, busy errors; migrations.py (with ddl.py):
the schema; queries.py: the SQL of reads; group_commit.py, id_counter.py and
inserts.py: writes; bulk.py and search_build.py: export and import.
"""

from ..sql import COUNTER_LIMIT as COUNTER_LIMIT  # re-exported: the import's counter bound
from .connection import BUSY_TIMEOUT_MS as BUSY_TIMEOUT_MS
from .connection import path_from_url as path_from_url
from .migrations import MIGRATIONS as MIGRATIONS
from .migrations import RESOURCE_SCHEMA_MIGRATION as RESOURCE_SCHEMA_MIGRATION
from .migrations import SEARCH_AUTOMERGE as SEARCH_AUTOMERGE
from .migrations import split_statements as split_statements
from .store import SQLiteStore as SQLiteStore

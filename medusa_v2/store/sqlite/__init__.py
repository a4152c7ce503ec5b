"""The embedded SQLite store (store.py holds SQLiteStore)."""

from ..sql import COUNTER_LIMIT as COUNTER_LIMIT  # re-exported: the import's counter bound
from .store import BUSY_TIMEOUT_MS as BUSY_TIMEOUT_MS
from .store import MIGRATIONS as MIGRATIONS
from .store import RESOURCE_SCHEMA_MIGRATION as RESOURCE_SCHEMA_MIGRATION
from .store import SEARCH_AUTOMERGE as SEARCH_AUTOMERGE
from .store import SQLiteStore as SQLiteStore
from .store import path_from_url as path_from_url
from .store import split_statements as split_statements

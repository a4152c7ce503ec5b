"""The embedded SQLite store (store.py holds SQLiteStore)."""

from ..sql import COUNTER_LIMIT as COUNTER_LIMIT  # re-exported: the import's counter bound
from .connection import BUSY_TIMEOUT_MS as BUSY_TIMEOUT_MS
from .connection import path_from_url as path_from_url
from .migrations import MIGRATIONS as MIGRATIONS
from .migrations import RESOURCE_SCHEMA_MIGRATION as RESOURCE_SCHEMA_MIGRATION
from .migrations import SEARCH_AUTOMERGE as SEARCH_AUTOMERGE
from .migrations import split_statements as split_statements
from .store import SQLiteStore as SQLiteStore

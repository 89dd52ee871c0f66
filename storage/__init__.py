"""Rollout store: Parquet tables partitioned by run and iteration, committed atomically, read with DuckDB."""

from storage.lock import LockLost, RunLock, StoreLocked
from storage.retry import StoreUnavailable
from storage.schemas import SCHEMA_VERSIONS, TABLES
from storage.store import IterationAlreadyCommitted, Store, connect, open_store, run_sql

__all__ = [
    "Store", "open_store", "connect", "run_sql", "IterationAlreadyCommitted", "RunLock", "StoreLocked",
    "LockLost", "StoreUnavailable", "TABLES", "SCHEMA_VERSIONS",
]

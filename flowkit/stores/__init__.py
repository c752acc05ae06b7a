"""Stores: where runs, timers and leases live (memory, SQLite, PostgreSQL, Redis)."""

from typing import TYPE_CHECKING

from ._history import HistoryEvent as HistoryEvent
from ._memory import MemoryStore as MemoryStore
from ._protocol import DueTimer as DueTimer
from ._protocol import ExpiredLease as ExpiredLease
from ._protocol import IndexOps as IndexOps
from ._protocol import RunInfo as RunInfo
from ._protocol import RunPage as RunPage
from ._protocol import RunSummary as RunSummary
from ._protocol import RunTransaction as RunTransaction
from ._protocol import ScheduleRecord as ScheduleRecord
from ._protocol import Store as Store
from ._protocol import StoreStats as StoreStats
from ._sqlite import SQLiteStore as SQLiteStore
from ._urls import from_url as from_url

if TYPE_CHECKING:
    from ._postgres import PostgresStore as PostgresStore
    from ._redis import RedisStore as RedisStore

__all__ = [
    "DueTimer",
    "ExpiredLease",
    "HistoryEvent",
    "IndexOps",
    "MemoryStore",
    "PostgresStore",
    "RedisStore",
    "RunInfo",
    "RunPage",
    "RunSummary",
    "RunTransaction",
    "SQLiteStore",
    "ScheduleRecord",
    "Store",
    "StoreStats",
    "from_url",
]


def __getattr__(name: str) -> object:
    # Stores with optional dependencies load on first use, so `import flowkit` stays light.
    if name == "PostgresStore":
        from ._postgres import PostgresStore

        return PostgresStore
    if name == "RedisStore":
        from ._redis import RedisStore

        return RedisStore
    raise AttributeError(f"module 'flowkit.stores' has no attribute {name!r}")

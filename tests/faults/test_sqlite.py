"""SQLite queue and store (one file) under faults: workers killed, the file locked for a while.

Three ``python -m flowkit.worker`` processes serve ``flows_faults`` with the
messages and the run state in one SQLite file of the test's own. Node executions
are recorded in the shared PostgreSQL (``pg_schema``).

* Worker processes are SIGKILLed one after another, a replacement after each:
  their claimed messages come back once their visibility timeout runs out.
* Another connection holds an exclusive lock on the file for ``OUTAGE``
  seconds mid-load: every write (a claim, a commit, a settlement) waits for it
  (SQLite's busy timeout) and the load carries on once it is released.
"""

from __future__ import annotations

import sqlite3
import threading
import uuid
from typing import TYPE_CHECKING, Any

import pytest

from .load import Load, show

if TYPE_CHECKING:
    from pathlib import Path

pytestmark = pytest.mark.anyio

LEASE = 3.0  # seconds: the visibility timeout and the dispatch lease
OUTAGE = 4.0  # seconds the file stays locked


def load(worker_pool: Any, tmp_path: Path, pg_schema: str) -> Load:
    url = f"sqlite:///{tmp_path / 'faults.db'}"
    return Load(
        worker_pool,
        transport_url=f"{url}?visibility_timeout={LEASE}",
        store_url=url,
        schema=pg_schema,
        lease=LEASE,
        tag=f"fk{uuid.uuid4().hex[:10]}",
    )


class FileLock:
    """An exclusive lock on a SQLite file, held by a connection of its own until released."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.conn: sqlite3.Connection | None = None
        self._mutex = threading.Lock()

    def take(self) -> None:
        with self._mutex:
            self.conn = sqlite3.connect(self.path, timeout=30.0, isolation_level=None)
            self.conn.execute("BEGIN EXCLUSIVE")

    def release(self) -> None:
        with self._mutex:
            if self.conn is not None:
                self.conn.execute("ROLLBACK")
                self.conn.close()
                self.conn = None


@pytest.mark.timeout(180)
async def test_runs_complete_while_workers_are_killed_repeatedly(
    tmp_path: Path, pg_schema: str, worker_pool: Any
) -> None:
    async with load(worker_pool, tmp_path, pg_schema) as faulted:
        await faulted.kill_workers()
        report = await faulted.check()
    show("sqlite, worker kills", report)


@pytest.mark.timeout(180)
async def test_runs_complete_when_the_file_is_locked_for_a_while(
    tmp_path: Path, pg_schema: str, worker_pool: Any
) -> None:
    lock = FileLock(tmp_path / "faults.db")
    try:
        async with load(worker_pool, tmp_path, pg_schema) as faulted:
            await faulted.outage(lock.take, lock.release, OUTAGE)
            report = await faulted.check()
    finally:
        lock.release()
    show(f"sqlite file locked {OUTAGE:g}s", report)

"""Several processes opening one new SQLite file at once (a store and a queue) all succeed.

Switching a new file to WAL needs an exclusive lock; when two connections try
it together SQLite answers "database is locked" at once, without waiting. The
processes here race for it dozens of times (before the fix, about one open in
a hundred failed), using the real SQLiteStore and SQLite queue.
"""

from __future__ import annotations

import multiprocessing
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from pathlib import Path

PROCESSES = 8
FILES = 40


def _open(job: tuple[str, int]) -> str:
    from flowkit.stores import SQLiteStore
    from flowkit.transports._sqlqueue import _open as open_queue

    path, index = job
    try:
        if index % 2:
            SQLiteStore(path)._connect().close()
        else:
            open_queue(path).close()
    except Exception as exc:  # reported, not raised: the test counts them
        return f"{type(exc).__name__}: {exc}"
    return ""


class TestConcurrentOpen:
    """Stores and queues opened together on a new file never see 'database is locked'."""

    def test_processes_racing_to_open_a_new_file_all_succeed(self, tmp_path: Path) -> None:
        failures: list[str] = []
        with multiprocessing.get_context("spawn").Pool(PROCESSES) as pool:
            for n in range(FILES):  # all processes open the same new file together
                jobs = [(str(tmp_path / f"{n}.db"), i) for i in range(PROCESSES)]
                failures += [f for f in pool.map(_open, jobs, chunksize=1) if f]
        assert [] == failures

"""``SQLiteQueueTransport`` in the transport conformance suite.

Each test gets its own database file in ``tmp_path``, opened through
``transports.from_url("sqlite:///...")``; every ``make()`` opens a new
connection to it, as a separate worker process would. Runs on asyncio and trio
(``sqlite3`` runs in worker threads).

Ordering: the earliest available message first (by the time it became
available, then by insertion), so a queue is FIFO until messages are delayed,
nacked or redelivered after their lease ran out (a redelivered message is
ordered by its lease's expiry). Several consumers interleave; ``key`` implies
no ordering.
"""

from __future__ import annotations

from contextlib import asynccontextmanager
from typing import TYPE_CHECKING

from flowkit.transports import from_url

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Callable
    from pathlib import Path

    from flowkit.transports._sqlqueue import SQLiteQueueTransport


class SQLiteFactory:
    """A fresh SQLite file per test; a new transport (connection) per ``make()``."""

    name = "sqlite"
    priorities = True  # send(priority=) orders the queue
    backends = ("asyncio", "trio")
    visibility_timeout = 1.0

    @asynccontextmanager
    async def open(self, tmp_path: Path) -> AsyncIterator[Callable[[], SQLiteQueueTransport]]:
        url = f"sqlite:///{tmp_path / 'queue.db'}"  # an absolute path: sqlite:////tmp/...
        made: list[SQLiteQueueTransport] = []

        def make() -> SQLiteQueueTransport:
            transport: SQLiteQueueTransport = from_url(
                url, visibility_timeout=self.visibility_timeout
            )
            made.append(transport)
            return transport

        try:
            yield make
        finally:
            for transport in made:
                await transport.close()

    async def dead_letters(
        self, transport: SQLiteQueueTransport, queue: str
    ) -> list[tuple[bytes, str]]:
        return [(d.body, d.reason) for d in await transport.dead_letters(queue)]


FACTORY = SQLiteFactory()

"""``MemoryTransport`` in the transport conformance suite.

MemoryTransport keeps its queues in one process's memory, so "several
transports on one broker" cannot be separate objects: every ``make()`` of a
test returns the same instance, and a consumer "dies" by stopping its receive
loop (the suite never closes a transport that another party of the test uses).

Ordering: FIFO per queue for messages that are ready; a delayed, nacked or
timed-out message joins the back of the queue when it becomes visible again.
Several consumers interleave; ``key`` implies no ordering.
"""

from __future__ import annotations

from contextlib import asynccontextmanager
from typing import TYPE_CHECKING

from flowkit.transports import MemoryTransport

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Callable
    from pathlib import Path


class MemoryFactory:
    """One MemoryTransport per test, shared by every ``make()``."""

    name = "memory"
    priorities = True  # send(priority=) orders the queue
    backends = ("asyncio", "trio")
    visibility_timeout = 1.0

    @asynccontextmanager
    async def open(self, tmp_path: Path) -> AsyncIterator[Callable[[], MemoryTransport]]:
        transport = MemoryTransport(visibility_timeout=self.visibility_timeout)
        try:
            yield lambda: transport
        finally:
            await transport.close()

    async def dead_letters(self, transport: MemoryTransport, queue: str) -> list[tuple[bytes, str]]:
        return [(d.body, d.reason) for d in transport.dead_letters if d.queue == queue]


FACTORY = MemoryFactory()

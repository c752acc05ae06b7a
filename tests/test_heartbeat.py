"""Heartbeats: a node that finishes while its lease is being extended is not "lost".

The worker's heartbeat extends a node's lease in the store, then its delivery at
the broker. A node that finished meanwhile has had its delivery settled: the
broker (here the real SQLite queue) refuses to extend it, which is no loss.
"""

from __future__ import annotations

from contextlib import aclosing
from typing import Any

import anyio
import pytest
from structlog.testing import capture_logs

from flowkit.stores import MemoryStore
from flowkit.transports import SQLiteQueueTransport
from flowkit.worker import NodeMessage
from flowkit.worker._heartbeat import Heartbeats

pytestmark = pytest.mark.anyio

QUEUE = "work"


class HeldStore(MemoryStore):
    """Holds the first extension of the ``held`` dispatch until ``release``; sets
    ``extended_again`` on the next round's extension of the other one."""

    def __init__(self) -> None:
        super().__init__()
        self.holding = anyio.Event()
        self.release = anyio.Event()
        self.extended_again = anyio.Event()
        self._calls: dict[str, int] = {}

    async def extend_lease(self, run_id: str, dispatch_id: str, expires_at: float) -> None:
        calls = self._calls[dispatch_id] = self._calls.get(dispatch_id, 0) + 1
        if dispatch_id == "held" and calls == 1:
            self.holding.set()
            await self.release.wait()
        elif dispatch_id == "other" and self.release.is_set() and calls > 1:
            self.extended_again.set()
        await super().extend_lease(run_id, dispatch_id, expires_at)


async def _deliveries(transport: SQLiteQueueTransport, count: int) -> list[Any]:
    found = []
    async with aclosing(transport.receive(QUEUE)) as deliveries:
        async for delivery in deliveries:
            found.append(delivery)
            if len(found) == count:
                return found
    raise AssertionError("the queue ended")


async def test_a_node_settled_while_its_lease_is_extended_is_not_lost(tmp_path: Any) -> None:
    store = HeldStore()
    transport = SQLiteQueueTransport(tmp_path / "queue.db", visibility_timeout=30.0)
    try:
        messages = [NodeMessage("run", node, 1, node, "digest") for node in ("held", "other")]
        for message in messages:
            await transport.send(QUEUE, message.encode(), key=message.node_id)
        deliveries = await _deliveries(transport, 2)
        by_node = {NodeMessage.decode(d.body).node_id: d for d in deliveries}
        heartbeats = Heartbeats(store, lease=0.3, visibility=30.0, check_interval=3600.0)
        with capture_logs() as logs:
            async with anyio.create_task_group() as tg:
                await tg.start(heartbeats.run)
                with heartbeats.beating(by_node["other"], messages[1]):
                    with heartbeats.beating(by_node["held"], messages[0]):
                        await store.holding.wait()  # a beat is extending it right now
                    await by_node["held"].ack()  # its node finished: the worker settles it
                    store.release.set()
                    await store.extended_again.wait()  # the next beat: the last one is done
                tg.cancel_scope.cancel()
        assert [log["event"] for log in logs if log["log_level"] == "warning"] == []
    finally:
        await transport.close()

"""The reconciler under faults: a dispatch whose lease ran out is republished once, not
once per worker.

After a broker stalls (a rebalance waiting for a killed member, a restart) every
dispatch in the backlog outlives its lease at once. Each worker's reconciler polls
for expired leases; if one worker republishes a batch before pushing the leases
out, the others see the same leases and publish every dispatch again, and the
duplicates lengthen the backlog they came from. In-process workers on a
MemoryStore and MemoryTransport: no broker needed to show it.
"""

from __future__ import annotations

import time
from typing import Any

import anyio
import pytest

from flowkit import Client, Worker
from flowkit._clock import use_clock
from flowkit.stores import MemoryStore
from flowkit.transports import MemoryTransport

from .flows_faults import chain

pytestmark = pytest.mark.anyio

QUEUE = "faults"
LEASE = 30.0
TIMEOUT = 10.0


class FirstSendHeld(MemoryTransport):
    """Holds the first send after :meth:`hold` until :meth:`release`; counts sends."""

    def __init__(self) -> None:
        super().__init__()
        self.sent = 0
        self.holding = False
        self.held = anyio.Event()
        self.released = anyio.Event()

    def hold(self) -> None:
        self.holding = True

    def release(self) -> None:
        self.released.set()

    async def send(self, queue: str, body: bytes, **options: Any) -> None:
        self.sent += 1
        if self.holding:
            self.holding = False
            self.held.set()
            await self.released.wait()
        await super().send(queue, body, **options)


async def test_a_dispatch_whose_lease_ran_out_is_republished_by_one_worker() -> None:
    store, transport = MemoryStore(), FirstSendHeld()
    client = Client(transport, store, queue=QUEUE, flows=[chain], lease=LEASE)
    await client.start(chain, run_id="stalled", n=1)  # its first dispatch: published, leased
    first, second = (
        Worker(app=[chain], transport=transport, store=store, queue=QUEUE, lease=LEASE)
        for _ in range(2)
    )
    published = transport.sent
    with use_clock(lambda: time.time() + 2 * LEASE), anyio.fail_after(TIMEOUT):  # ran out
        transport.hold()
        async with anyio.create_task_group() as tg:
            tg.start_soon(first._reconcile)
            await transport.held.wait()  # the first worker is republishing the dispatch
            await second._reconcile()  # the second polls meanwhile
            transport.release()
    assert 1 == transport.sent - published

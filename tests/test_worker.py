"""``Worker`` in one process: heartbeats keep a long node's leases; drains finish work.

Workers run in this test's event loop on a MemoryTransport and a MemoryStore,
on asyncio and trio.
"""

from __future__ import annotations

import anyio
import pytest

import flowkit
from flowkit import RunStatus
from flowkit.stores import MemoryStore
from flowkit.transports import MemoryTransport

pytestmark = pytest.mark.anyio

# seconds: the store lease and the broker's visibility timeout. Heartbeats extend it every
# third of a lease: a stall of the event loop longer than two thirds of one lets it run out,
# as it should (the node then runs again elsewhere). 0.2 s was within what three test
# suites at once on two cores stall a loop for; a second is not.
LEASE = 1.0
NODE_SECONDS = 3.0  # three leases
BOUND = 30.0

executions: list[str] = []


@flowkit.node
async def slow(tag: str) -> str:
    executions.append(tag)
    await anyio.sleep(NODE_SECONDS)  # the long node itself, not a wait for something
    return tag


@flowkit.flow
async def one_slow_node(tag: str) -> str:
    return await slow(tag)


@pytest.fixture(params=["asyncio", "trio"])
def anyio_backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


async def test_a_node_longer_than_many_leases_runs_once() -> None:
    """Without heartbeats the broker would redeliver it to the idle worker, and the
    reconciler would republish its dispatch, every lease."""
    executions.clear()
    transport, store = MemoryTransport(visibility_timeout=LEASE), MemoryStore()
    workers = [
        flowkit.Worker([one_slow_node], transport, store, lease=LEASE, poll_interval=0.05)
        for _ in range(2)
    ]
    client = flowkit.Client(transport, store, flows=[one_slow_node], lease=LEASE)
    with anyio.fail_after(BOUND):
        async with anyio.create_task_group() as tg:
            for worker in workers:
                await tg.start(worker.run)
            result = await client.run(one_slow_node, tag="long")
            tg.cancel_scope.cancel()
    assert (RunStatus.COMPLETED, "long") == (result.status, result.output)
    assert ["long"] == executions
    assert 1 == sum(worker.processed for worker in workers)


async def test_drain_waits_for_the_node_in_flight() -> None:
    executions.clear()
    transport, store = MemoryTransport(visibility_timeout=LEASE), MemoryStore()
    worker = flowkit.Worker([one_slow_node], transport, store, lease=LEASE, poll_interval=0.05)
    client = flowkit.Client(transport, store, flows=[one_slow_node], lease=LEASE)
    started = anyio.Event()
    worker.events.subscribe(lambda _: started.set(), types={"node:start"})
    with anyio.fail_after(BOUND):
        async with anyio.create_task_group() as tg:
            await tg.start(worker.run)
            handle = await client.start(one_slow_node, tag="drained")
            await started.wait()
            worker.stop()  # run() returns once the node finished, was committed and acked
        result = await client.result(handle.run_id)
    assert (RunStatus.COMPLETED, "drained", 1) == (result.status, result.output, worker.processed)
    assert ["drained"] == executions


# -- publishing a transition's nodes ------------------------------------------------------------

WIDTH = 6


@flowkit.node
async def part(i: int) -> int:
    return i


@flowkit.flow
async def fan_first(n: int) -> list[int]:
    return list(await flowkit.flow.gather(part(0), part(1), part(2), part(3), part(4), part(5)))


class GatedTransport(MemoryTransport):
    """Holds every send until ``width`` are in flight at once (a barrier), or fails the
    sends of ``failing`` bodies; records what was sent."""

    def __init__(self, width: int, failing: str = "") -> None:
        super().__init__()
        self.width, self.failing = width, failing
        self.in_flight, self.sent = 0, []
        self.all_in = anyio.Event()

    async def send(self, queue: str, body: bytes, **options: object) -> None:
        self.in_flight += 1
        if self.in_flight >= self.width:
            self.all_in.set()
        await self.all_in.wait()
        self.sent.append(body)
        if self.failing and self.failing.encode() in body:
            raise flowkit.TransportError(f"refused {self.failing}")
        await super().send(queue, body, **options)  # type: ignore[arg-type]


async def test_a_fans_nodes_are_published_at_once() -> None:
    """Sent one after another, the first send would wait at the barrier for ever."""
    transport = GatedTransport(WIDTH)
    client = flowkit.Client(transport, MemoryStore(), flows=[fan_first])
    with anyio.fail_after(BOUND):
        await client.start(fan_first, run_id="fan", n=1)
    assert WIDTH == len(transport.sent)


async def test_a_failed_publish_is_raised_after_the_others_were_sent() -> None:
    transport = GatedTransport(WIDTH, failing='"node_id":"part#3"')
    # (the client retries a broker that refuses for outage_timeout, then raises)
    client = flowkit.Client(transport, MemoryStore(), flows=[fan_first], outage_timeout=0.5)
    with anyio.fail_after(BOUND), pytest.raises(flowkit.TransportError, match="refused"):
        await client.start(fan_first, run_id="fan", n=1)
    assert WIDTH == len(set(transport.sent[:WIDTH]))  # the whole fan, before any retry

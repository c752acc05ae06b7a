"""Workers and clients keep nothing per finished run: their per-run caches empty out.

A worker kept a copy (replica) of every run it had stepped, and a client of
every run it had started or read, until 10 000 of them were cached: a process
under a steady load grew for hours. Workers and clients run in this test's
event loop on a MemoryTransport and a MemoryStore.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import anyio
import pytest

import flowkit
from flowkit import RunStatus, flow, node
from flowkit.stores import MemoryStore
from flowkit.transports import MemoryTransport

if TYPE_CHECKING:
    from flowkit.worker._shell import Shell

pytestmark = pytest.mark.anyio

RUNS = 60
AT_ONCE = 20
BOUND = 60.0


@node
async def double(x: int) -> int:
    return 2 * x


@node
async def add(a: int, b: int) -> int:
    return a + b


@flow
async def small(x: int) -> int:
    await flow.sleep("10ms")  # a timer, fired by a worker
    a, b = await flow.gather(double(x), double(x + 1))  # a fan-out and a join
    return await add(a, b)


def held(shell: Shell) -> dict[str, int]:
    """What a shell keeps per run."""
    return {"replicas": len(shell._replicas), "stepping": len(shell._stepping)}


async def run_many(client: flowkit.Client, runs: int) -> list[Any]:
    """``runs`` runs of ``small``, ``AT_ONCE`` at a time, each awaited to its result."""
    results: list[Any] = []
    limiter = anyio.Semaphore(AT_ONCE)

    async def one(x: int) -> None:
        async with limiter:
            results.append(await client.run(small, x=x, timeout=BOUND))

    async with anyio.create_task_group() as tg:
        for x in range(runs):
            tg.start_soon(one, x)
    return results


async def test_a_worker_and_a_client_keep_nothing_of_finished_runs() -> None:
    transport, store = MemoryTransport(), MemoryStore()
    worker = flowkit.Worker([small], transport, store, poll_interval=0.01)
    client = flowkit.Client(transport, store, flows=[small])
    with anyio.fail_after(BOUND):
        async with anyio.create_task_group() as tg:
            await tg.start(worker.run)
            results = await run_many(client, RUNS)
            tg.cancel_scope.cancel()
    assert {(RunStatus.COMPLETED, 4 * x + 2) for x in range(RUNS)} == {
        (r.status, r.output) for r in results
    }
    assert {"replicas": 0, "stepping": 0} == held(worker.shell) == held(client.shell)
    assert not worker.heartbeats._beating

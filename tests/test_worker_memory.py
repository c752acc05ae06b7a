"""Workers and clients keep nothing per finished run: their per-run caches empty out.

A worker kept a copy (replica) of every run it had stepped, and a client of
every run it had started or read, until 10 000 of them were cached: a process
under a steady load grew for hours. Now the process that finishes a run drops
its copy, the others drop theirs once unused for ``IDLE_REPLICA_SECONDS``, and
a client keeps at most ``CACHED_RUNS``. Workers and clients run in this test's
event loop on a MemoryTransport and a MemoryStore.
"""

from __future__ import annotations

import inspect
import time
from typing import TYPE_CHECKING, Any

import anyio
import pytest

import flowkit
from flowkit import RunStatus, flow, node
from flowkit._clock import use_clock
from flowkit.stores import MemoryStore
from flowkit.transports import MemoryTransport
from flowkit.worker._client import CACHED_RUNS
from flowkit.worker._shell import IDLE_REPLICA_SECONDS

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable

    from flowkit.worker._shell import Shell

pytestmark = pytest.mark.anyio

RUNS = 60
AT_ONCE = 20
BOUND = 60.0
SWEEP_BOUND = 5.0  # seconds for a worker's housekeeping (every poll_interval) to come round


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


@flow
async def waits(x: int) -> int:
    doubled = await double(x)
    go = await flow.wait("go")
    return await add(doubled, go)


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


async def test_a_client_that_only_starts_runs_keeps_a_bounded_number_of_copies() -> None:
    client = flowkit.Client(MemoryTransport(), MemoryStore(), flows=[small])
    for x in range(CACHED_RUNS + 40):  # no worker: they all stay unfinished
        await client.start(small, x=x)
    assert len(client.shell._replicas) == CACHED_RUNS


async def test_a_worker_drops_its_copies_of_runs_another_worker_finished() -> None:
    """The first worker runs ``double`` of every run; the signal goes out on the second
    worker's queue, which finishes the runs: only an idle sweep drops the first one's
    copies."""
    offset = [0.0]
    transport, store = MemoryTransport(), MemoryStore()
    with use_clock(lambda: time.time() + offset[0]), anyio.fail_after(BOUND):
        first, second = (
            flowkit.Worker([waits], transport, store, queue=queue, poll_interval=0.01)
            for queue in ("first", "second")
        )
        starter = flowkit.Client(transport, store, queue="first", flows=[waits])
        signaller = flowkit.Client(transport, store, queue="second", flows=[waits])
        async with anyio.create_task_group() as tg:
            await tg.start(first.run)
            await tg.start(second.run)
            run_ids = [(await starter.start(waits, x=x)).run_id for x in range(RUNS)]
            await until(lambda: all_awaiting(store, run_ids))
            for run_id in run_ids:
                await signaller.signal(run_id, "go", 1)
            results = [await signaller.wait(run_id) for run_id in run_ids]
            stale = held(first.shell)
            offset[0] += IDLE_REPLICA_SECONDS + 1
            with anyio.fail_after(SWEEP_BOUND):
                await until(lambda: not first.shell._replicas)
            tg.cancel_scope.cancel()
    assert [(RunStatus.COMPLETED, 2 * x + 1) for x in range(RUNS)] == [
        (r.status, r.output) for r in results
    ]
    assert {"replicas": RUNS, "stepping": 0} == stale
    assert {"replicas": 0, "stepping": 0} == held(second.shell)


async def all_awaiting(store: MemoryStore, run_ids: list[str]) -> bool:
    infos = [await store.info(run_id) for run_id in run_ids]
    return all(info is not None and info.status == "awaiting" for info in infos)


async def until(condition: Callable[[], bool | Awaitable[bool]]) -> None:
    """Wait until ``condition()`` (awaited if need be) is true."""
    while True:
        met = condition()
        if await met if inspect.isawaitable(met) else met:
            return
        await anyio.sleep(0.01)

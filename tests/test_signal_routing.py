"""A signal sent while a subflow runs reaches the parent's later wait (buffered), when the
subflow has no wait of that name: in the in-memory runtime and on workers (in-process,
memory transport and store), which route signals through one function with the simulator."""

from __future__ import annotations

import anyio
import pytest

import flowkit
from flowkit import RunStatus, flow
from flowkit.stores import MemoryStore
from flowkit.testing import simulate
from flowkit.transports import MemoryTransport

pytestmark = pytest.mark.anyio


@flow
async def dozing() -> int:
    return int(await flow.wait("wake"))


@flow
async def parent() -> int:
    nap = await dozing()
    go = await flow.wait("go")
    return nap + int(go)


async def test_the_runtime_buffers_it_for_the_parent() -> None:
    async with flowkit.Runtime() as rt:
        paused = await rt.run(parent)
        assert paused.status is RunStatus.AWAITING  # its child waits for "wake"
        await rt.signal(paused.run_id, "go", 5)  # before the parent waits for it
        result = await rt.signal(paused.run_id, "wake", 1)
    assert (RunStatus.COMPLETED, 6) == (result.status, result.output)


async def test_workers_buffer_it_for_the_parent() -> None:
    transport, store = MemoryTransport(), MemoryStore()
    worker = flowkit.Worker([parent], transport, store, poll_interval=0.05)
    client = flowkit.Client(transport, store, flows=[parent])
    async with anyio.create_task_group() as tg:
        await tg.start(worker.run)
        handle = await client.start(parent)
        with anyio.fail_after(30):
            while not await _children(store, handle.run_id):
                await anyio.wait_all_tasks_blocked()  # the worker starts the child
            await client.signal(handle.run_id, "go", 5)
            await client.signal(handle.run_id, "wake", 1)
            result = await client.wait(handle.run_id)
        tg.cancel_scope.cancel()
    await transport.close()
    assert (RunStatus.COMPLETED, 6) == (result.status, result.output)


async def _children(store: MemoryStore, run_id: str) -> list[str]:
    loaded = await store.load(run_id)
    return list(loaded[0].sections["children"]) if loaded is not None else []


def test_the_simulator_routes_the_same_way() -> None:
    outcome = simulate(parent, signals={"wake": 1, "go": 5})
    assert (RunStatus.COMPLETED, 6) == (outcome.status, outcome.output)

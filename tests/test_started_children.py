"""``await child_flow.start(run_id=..., detach=...)`` in a flow body: a child run with a
chosen id that the parent does not wait for, cancelled with its parent unless detached."""

from __future__ import annotations

import anyio
import pytest

import flowkit
from flowkit import CompileError, RunStatus, flow
from flowkit.stores import SQLiteStore
from flowkit.testing import simulate
from flowkit.transports import MemoryTransport

pytestmark = pytest.mark.anyio

BOUND = 30.0
LEASE = 30.0


@flow
async def kid(n: int) -> int:
    got = await flow.wait("go")
    return n * got


@flow
async def attached(name: str, n: int) -> str:
    child = await kid.start(run_id=name, n=n)
    await flow.wait("done")
    return child


@flow
async def detached(name: str, n: int) -> str:
    return await kid.start(run_id=name, detach=True, n=n)


async def test_a_detached_child_outlives_its_parent() -> None:
    async with flowkit.Runtime() as rt:
        parent = await rt.run(detached, run_id="p", name="k1", n=3)
        waiting = await rt.result("k1")
        await rt.signal("k1", "go", 2)
        done = await rt.result("k1")
    assert (RunStatus.COMPLETED, "k1") == (parent.status, parent.output)
    assert RunStatus.AWAITING is waiting.status
    assert (RunStatus.COMPLETED, 6) == (done.status, done.output)


async def test_an_attached_child_is_cancelled_when_its_parent_finishes() -> None:
    async with flowkit.Runtime() as rt:
        parent = await rt.run(attached, run_id="p", name="k2", n=3)
        running = await rt.result("k2")
        await rt.signal("p", "done", 1)
        finished = await rt.result("p")
        child = await rt.result("k2")
    assert RunStatus.AWAITING is parent.status  # waits for "done", not for the child
    assert RunStatus.AWAITING is running.status
    assert (RunStatus.COMPLETED, "k2") == (finished.status, finished.output)
    assert RunStatus.CANCELLED is child.status


def test_under_simulate_the_parent_goes_on_at_once() -> None:
    sim = simulate(detached, name="k", n=2, signals={"go": 5})
    assert (RunStatus.COMPLETED, "k") == (sim.status, sim.output)


async def test_worker_starts_the_child_under_its_id() -> None:
    store, transport = SQLiteStore(":memory:"), MemoryTransport()
    client = flowkit.Client(transport, store, flows=[detached, attached], lease=LEASE)
    worker = flowkit.Worker([detached, attached], transport, store, lease=LEASE)
    with anyio.fail_after(BOUND):
        async with anyio.create_task_group() as tg:
            await tg.start(worker.run)
            parent = await client.run(detached, run_id="p", name="k3", n=4)
            await client.signal("k3", "go", 3)
            child = await client.wait("k3")
            await client.start(attached, run_id="p2", name="k4", n=1)
            await client.signal("p2", "done", 1)
            cancelled = await client.wait("k4")
            tg.cancel_scope.cancel()
    info = await store.info("k3")
    await store.close()
    assert (RunStatus.COMPLETED, "k3") == (parent.status, parent.output)
    assert (RunStatus.COMPLETED, 12) == (child.status, child.output)
    assert info is not None
    assert "p" == info.parent
    assert RunStatus.CANCELLED is cancelled.status


def test_start_needs_a_run_id() -> None:
    with pytest.raises(CompileError, match="needs run_id="):

        @flow
        async def nameless(n: int) -> str:
            return await kid.start(n=n)  # type: ignore[call-arg]


async def test_start_outside_a_flow_body_says_what_to_use() -> None:
    with pytest.raises(RuntimeError, match="inside a flow body only"):
        await kid.start(run_id="x", n=1)

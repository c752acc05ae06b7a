"""A child run's parent is told of its finish even when a concurrent step of the child,
in the same process, dropped the process's copy of the finished child first.

A worker steps one run's node completions one at a time under the run's lock, but
carries each transition's commands out after releasing it. The order reproduced
here, step by step with gates (a worker of the agent example hit it about once in
forty runs on RabbitMQ):

1. step A completes node ``a`` (``b`` is done): carrying it out publishes ``c``, held
   at a gate;
2. step B completes ``c``, which finishes the child; its commit is held at the gate;
3. A's publish goes through; A ends, sees its run finished and drops its copy;
4. B's commit goes through; B reports the finish, and must still tell the parent.

Before the fix, B read the parent from the dropped copy, found none, and the parent
waited until the child's lease ran out (30 s by default) for a reconciler to notice.
"""

from __future__ import annotations

from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Any

import anyio
import pytest

from flowkit import flow, node
from flowkit.core import _protocol as p
from flowkit.stores import MemoryStore
from flowkit.transports import MemoryTransport
from flowkit.worker._shell import Shell

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

pytestmark = pytest.mark.anyio


@node
async def a() -> int:
    return 1


@node
async def b() -> int:
    return 2


@node
async def c(x: int) -> int:
    return x + 10


@flow
async def inner() -> list[int]:
    left, right = await flow.gather(a(), b())
    after = await c(left)
    return [left, right, after]


@flow
async def outer() -> list[int]:
    return await inner()


class Gate:
    """Holds the first caller of :meth:`pass_` until :meth:`open`; says when it arrived."""

    def __init__(self) -> None:
        self.arrived = anyio.Event()
        self.opened = anyio.Event()
        self.used = False

    async def pass_(self) -> None:
        if self.used:
            return
        self.used = True
        self.arrived.set()
        await self.opened.wait()

    def open(self) -> None:
        self.opened.set()


class GatedTransport(MemoryTransport):
    """Holds the publish of node ``c`` at a gate."""

    def __init__(self, gate: Gate) -> None:
        super().__init__()
        self.gate = gate

    async def send(self, queue: str, body: bytes, **kwargs: Any) -> None:
        if str(kwargs.get("key", "")).endswith("/c"):
            await self.gate.pass_()
        await super().send(queue, body, **kwargs)


class GatedStore(MemoryStore):
    """Holds the commit that finishes run ``run_id`` at a gate."""

    def __init__(self, gate: Gate) -> None:
        super().__init__()
        self.gate = gate
        self.run_id = ""

    @asynccontextmanager
    async def transaction(self, run_id: str) -> AsyncIterator[Any]:
        async with super().transaction(run_id) as txn:
            yield _GatedCommit(txn, self.gate) if run_id == self.run_id else txn


class _GatedCommit:
    def __init__(self, txn: Any, gate: Gate) -> None:
        self._txn = txn
        self._gate = gate

    def __getattr__(self, name: str) -> Any:
        return getattr(self._txn, name)

    async def commit(self, delta: Any, **kwargs: Any) -> None:
        if kwargs["state"].finished:
            await self._gate.pass_()
        await self._txn.commit(delta, **kwargs)


def _dispatch_of(state: Any, node_id: str) -> str:
    (dispatch_id,) = [
        key for key, record in state.sections["dispatches"].items() if record["node"] == node_id
    ]
    return str(dispatch_id)


async def test_the_parent_is_told_when_a_concurrent_step_dropped_the_finished_child() -> None:
    publish_gate, commit_gate = Gate(), Gate()
    store = GatedStore(commit_gate)
    shell = Shell(GatedTransport(publish_gate), store, queue="q", lease=30.0, flows=[outer, inner])
    parent = await shell.start(shell.target_for(outer), "parent", {})
    (child,) = (await store.load(parent))[0].sections["children"]  # type: ignore[index]
    store.run_id = child

    async def load_child() -> Any:
        loaded = await store.load(child)
        assert loaded is not None
        return loaded[0]

    await shell.step(child, p.NodeCompleted(_dispatch_of(await load_child(), "b"), 2))
    async with anyio.create_task_group() as tg:
        a_done = anyio.Event()

        async def step_a() -> None:  # completes a: publishes c, held at the publish gate
            await shell.step(child, p.NodeCompleted(_dispatch_of(await load_child(), "a"), 1))
            a_done.set()

        tg.start_soon(step_a)
        await publish_gate.arrived.wait()
        c_done = _dispatch_of(await load_child(), "c")
        tg.start_soon(shell.step, child, p.NodeCompleted(c_done, 11))  # held at its commit
        await commit_gate.arrived.wait()
        publish_gate.open()
        await a_done.wait()  # A has ended, and dropped its copy of the (finished) child
        commit_gate.open()

    told = await store.load(parent)
    assert told is not None
    assert ("completed", "completed") == ((await load_child()).status.value, told[0].status.value)
    assert [1, 2, 11] == told[0].header["output"]

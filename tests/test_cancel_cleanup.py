"""Cancelling a compiled run runs its ``finally`` blocks, in-memory and on workers.

Cancellation reaches the flow as :class:`flowkit.Cancelled` raised where the
run stands: ``finally`` and ``except flowkit.Cancelled`` see it,
``except Exception`` does not (like ``asyncio.CancelledError``).
"""

from __future__ import annotations

from typing import Any

import anyio
import pytest

import flowkit
from flowkit import RunStatus, Runtime, flow, node
from flowkit.stores import MemoryStore
from flowkit.transports import MemoryTransport

pytestmark = pytest.mark.anyio

CLEANED: list[str] = []
STARTED: dict[str, anyio.Event] = {}


@node
async def cleanup(tag: str) -> str:
    CLEANED.append(tag)
    return tag


@node
async def blocked(tag: str) -> str:
    STARTED[tag].set()
    await anyio.sleep_forever()
    return tag  # pragma: no cover


@flow
async def sleeper() -> str:
    try:
        await flow.sleep("1d")
        return "woke"
    finally:
        await cleanup("sleep")


@flow
async def worker_bee() -> str:
    try:
        return await blocked("node")
    finally:
        await cleanup("node")


@flow
async def catches_exceptions() -> str:
    try:
        await flow.wait("go")
    except Exception:
        await cleanup("wrongly caught")
    finally:
        await cleanup("finally")
    return "done"


@flow
async def catches_cancelled() -> str:
    try:
        await flow.wait("go")
    except flowkit.Cancelled:
        await cleanup("caught cancel")
        raise
    return "done"


@flow
async def nested() -> str:
    try:
        try:
            await flow.wait("go")
        finally:
            await cleanup("inner")
    finally:
        await cleanup("outer")
    return "done"


@flow
async def no_cleanup() -> str:
    await flow.wait("go")
    return "done"


@pytest.fixture(autouse=True)
def _reset() -> None:
    CLEANED.clear()
    STARTED.clear()


def _paused(events: Any) -> anyio.Event:
    """An event set when a run first pauses (sleep, wait)."""
    paused = anyio.Event()
    events.subscribe(lambda _: paused.set(), types=["workflow:pause"])
    return paused


async def _cancel_paused(target: Any) -> tuple[flowkit.RunResult, flowkit.RunResult]:
    async with Runtime() as rt:
        paused = _paused(rt.events)
        handle = await rt.start(target)
        await paused.wait()
        cancelled = await handle.cancel()
        final = await handle.result(timeout=10)
    return cancelled, final


class TestInMemory:
    """``rt.cancel`` / ``handle.cancel`` unwind through the flow's cleanup code."""

    async def test_finally_runs_when_a_sleeping_run_is_cancelled(self) -> None:
        _, final = await _cancel_paused(sleeper)
        assert RunStatus.CANCELLED == final.status
        assert isinstance(final.error, flowkit.Cancelled)
        assert ["sleep"] == CLEANED

    async def test_finally_runs_when_a_running_node_is_cancelled(self) -> None:
        STARTED["node"] = anyio.Event()
        async with Runtime() as rt:
            handle = await rt.start(worker_bee)
            await STARTED["node"].wait()
            await handle.cancel()
            final = await handle.result(timeout=10)
        assert RunStatus.CANCELLED == final.status
        assert ["node"] == CLEANED

    async def test_except_exception_does_not_catch_a_cancel(self) -> None:
        _, final = await _cancel_paused(catches_exceptions)
        assert RunStatus.CANCELLED == final.status
        assert ["finally"] == CLEANED

    async def test_except_cancelled_sees_it_and_can_re_raise(self) -> None:
        _, final = await _cancel_paused(catches_cancelled)
        assert RunStatus.CANCELLED == final.status
        assert ["caught cancel"] == CLEANED

    async def test_nested_finally_blocks_run_innermost_first(self) -> None:
        _, final = await _cancel_paused(nested)
        assert RunStatus.CANCELLED == final.status
        assert ["inner", "outer"] == CLEANED

    async def test_a_run_without_cleanup_is_cancelled_at_once(self) -> None:
        cancelled, final = await _cancel_paused(no_cleanup)
        assert RunStatus.CANCELLED == cancelled.status == final.status
        assert [] == CLEANED

    async def test_the_path_shows_where_the_run_was_cancelled(self) -> None:
        _, final = await _cancel_paused(sleeper)
        path = final.path()
        assert "cancelled" == path["sleep"]
        assert ["visited"] == [v for k, v in path.items() if k.startswith("cleanup")]


class TestOnWorkers:
    """``client.cancel`` unwinds the same way when the run lives on workers."""

    async def test_finally_runs_when_a_sleeping_run_is_cancelled(self) -> None:
        transport, store = MemoryTransport(), MemoryStore()
        worker = flowkit.Worker([sleeper], transport, store)
        client = flowkit.Client(transport, store, flows=[sleeper])
        async with anyio.create_task_group() as tg:
            tg.start_soon(worker.run)
            handle = await client.start(sleeper)  # the sleep is its first step
            assert RunStatus.AWAITING == (await client.result(handle.run_id)).status
            await client.cancel(handle.run_id)
            final = await handle.result(timeout=10)
            tg.cancel_scope.cancel()
        assert RunStatus.CANCELLED == final.status
        assert ["sleep"] == CLEANED

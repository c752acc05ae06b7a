"""``history(run_id)`` and ``describe(run_id)`` on ``Runtime`` and on ``Client`` (with a
worker), on asyncio and trio, over a MemoryStore and a SQLiteStore.

Times come from a fake flowkit clock (``use_clock``) that the nodes move on, so every
event's time and every duration is exact; nothing sleeps: a test awaits the run's
result, or its arrival at a wait.
"""

from __future__ import annotations

from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Any

import anyio
import pytest

import flowkit
from flowkit import (
    ConfigurationError,
    HistoryEvent,
    NodeRow,
    ResumeError,
    RunDescription,
    RunStatus,
    WaitRow,
)
from flowkit._clock import use_clock
from flowkit.stores import MemoryStore, SQLiteStore
from flowkit.transports import MemoryTransport

if TYPE_CHECKING:
    from collections.abc import AsyncIterator
    from pathlib import Path

pytestmark = pytest.mark.anyio

BOUND = 30.0  # seconds these in-process runs certainly finish within (they take milliseconds)


class FakeClock:
    def __init__(self) -> None:
        self.now = 1_000.0

    def __call__(self) -> float:
        return self.now


CLOCK = FakeClock()
TRIES: dict[str, int] = {}


@flowkit.node(retries=1, backoff=flowkit.Backoff(initial=0))
async def flaky(key: str) -> int:
    """Fails its first attempt for each key; each attempt takes 2 s of the fake clock."""
    CLOCK.now += 2.0
    TRIES[key] = TRIES.get(key, 0) + 1
    if TRIES[key] == 1:
        raise ValueError(f"first try of {key}")
    return len(key)


@flowkit.node
async def triple(x: int) -> int:
    CLOCK.now += 3.0
    return 3 * x


@flowkit.flow
async def tripled(x: int) -> int:
    return await triple(x)


@flowkit.flow
async def journey(key: str) -> int:
    n = await flaky(key)
    answer = await flowkit.flow.wait("go", timeout="1h")
    return await tripled(n + answer["k"])


@flowkit.flow
async def waiting(x: int) -> int:
    answer = await flowkit.flow.wait("go")
    return int(answer)


FLOWS = [journey, tripled, waiting]


@pytest.fixture(
    params=[
        pytest.param(("memory", "asyncio"), id="memory-asyncio"),
        pytest.param(("memory", "trio"), id="memory-trio"),
        pytest.param(("sqlite", "asyncio"), id="sqlite-asyncio"),
        pytest.param(("sqlite", "trio"), id="sqlite-trio"),
    ]
)
def case(request: pytest.FixtureRequest) -> tuple[str, str]:
    return request.param  # type: ignore[no-any-return]


@pytest.fixture
def anyio_backend(case: tuple[str, str]) -> str:
    return case[1]


@pytest.fixture
async def store(case: tuple[str, str], tmp_path: Path) -> AsyncIterator[Any]:
    store = MemoryStore() if case[0] == "memory" else SQLiteStore(tmp_path / "runs.db")
    yield store
    await store.close()


def kinds(events: list[HistoryEvent]) -> list[str]:
    return [e.kind for e in events]


# -- Runtime -----------------------------------------------------------------------------
async def test_runtime_history_and_describe(store: Any) -> None:
    CLOCK.now = 1_000.0
    TRIES.clear()
    with use_clock(CLOCK), anyio.fail_after(BOUND):
        async with flowkit.Runtime(store=store, flows=FLOWS) as rt:
            paused = await rt.run(journey, run_id="j1", key="abc")
            assert RunStatus.AWAITING == paused.status
            described = await rt.describe("j1")
            assert isinstance(described, RunDescription)
            assert ("j1", "journey", "awaiting") == (
                described.run.run_id,
                described.run.flow,
                described.run.status,
            )
            assert (
                NodeRow(
                    "flaky",
                    "completed",
                    2,
                    1_000.0,
                    1_004.0,
                    4.0,
                    "builtins.ValueError: first try of abc",
                )
                == described.nodes[0]
            )
            assert [WaitRow("go", "go", 1_004.0 + 3600)] == described.waits
            assert ([("timeout:go@1", "timeout")], []) == (
                [(t.timer_id, t.purpose) for t in described.timers],
                described.children,
            )
            CLOCK.now = 2_000.0
            done = await rt.signal("j1", "go", {"k": 1})
            assert (RunStatus.COMPLETED, 12) == (done.status, done.output)
            events = await rt.history("j1")
    assert [
        "run.started",
        "node.scheduled",
        "node.started",
        "node.failed",
        "node.retried",
        "node.scheduled",
        "node.started",
        "node.completed",
        "timer.set",
        "wait.entered",
        "timer.cancelled",
        "signal.received",
        "child.started",
        "child.finished",
        "run.completed",
    ] == kinds(events)
    assert list(range(1, 16)) == [e.seq for e in events]
    started = [e for e in events if e.kind == "node.started"]
    assert [(1_000.0, 1), (1_002.0, 2)] == [(e.at, e.attempt) for e in started]
    assert all(e.worker is not None and e.worker.startswith("runtime@") for e in started)
    assert (True, "first try of abc") == (
        events[3].data["retry"],
        events[3].data["error"]["message"],
    )
    assert ("api", {"k": 1}) == (events[11].data["source"], events[11].data["data"])
    assert ({"output": 12}, 2_003.0) == (events[-1].data, events[-1].at)


async def test_runtime_child_history_and_unknown_runs(store: Any) -> None:
    CLOCK.now = 1_000.0
    with use_clock(CLOCK), anyio.fail_after(BOUND):
        async with flowkit.Runtime(store=store, flows=FLOWS) as rt:
            await rt.run(tripled, run_id="t1", x=2)
            described = await rt.describe("t1")
            with pytest.raises(ResumeError, match="unknown run 'nope'"):
                await rt.history("nope")
            with pytest.raises(ResumeError, match="unknown run 'nope'"):
                await rt.describe("nope")
    assert [NodeRow("triple", "completed", 1, 1_000.0, 1_003.0, 3.0, None)] == [
        row for row in described.nodes if row.node_id == "triple"
    ]
    assert ("completed", 1_003.0) == (described.run.status, described.run.finished_at)


async def test_runtime_without_a_store_says_so() -> None:
    rt = flowkit.Runtime()
    with pytest.raises(ConfigurationError, match=r"history needs Runtime\(store=\.\.\.\)"):
        await rt.history("any")
    with pytest.raises(ConfigurationError, match=r"describe needs Runtime\(store=\.\.\.\)"):
        await rt.describe("any")


# -- Client with a worker --------------------------------------------------------------
@asynccontextmanager
async def fleet(store: Any) -> AsyncIterator[tuple[flowkit.Client, flowkit.Worker]]:
    CLOCK.now = 1_000.0
    transport = MemoryTransport()
    worker = flowkit.Worker(FLOWS, transport, store, poll_interval=0.05)
    client = flowkit.Client(transport, store, flows=FLOWS, poll_interval=0.01)
    try:
        with use_clock(CLOCK), anyio.fail_after(BOUND):
            async with anyio.create_task_group() as tg:
                await tg.start(worker.run)
                yield client, worker
                tg.cancel_scope.cancel()
    finally:
        await transport.close()


async def test_client_history_names_the_worker(store: Any) -> None:
    async with fleet(store) as (client, worker):
        result = await client.run(tripled, run_id="c1", x=4)
        assert 12 == result.output
        events = await client.history("c1")
        described = await client.describe("c1")
    assert [
        "run.started",
        "node.scheduled",
        "node.started",
        "node.completed",
        "run.completed",
    ] == kinds(events)
    assert [worker.worker_id] * 2 == [events[2].worker, events[3].worker]
    assert worker.worker_id.startswith("worker@")
    completed = {"dispatch_id": "triple@1.1", "duration": 3.0, "output": 12}
    assert (completed, 1_003.0) == (events[3].data, events[3].at)
    assert {"args": [4], "kwargs": {}} == events[1].data["input"]
    assert [NodeRow("triple", "completed", 1, 1_000.0, 1_003.0, 3.0, None)] == [
        row for row in described.nodes if row.node_id == "triple"
    ]


async def test_client_cancel_is_in_the_history(store: Any) -> None:
    async with fleet(store) as (client, _):
        handle = await client.start(waiting, run_id="w1", x=1)
        described = await client.describe("w1")
        assert (["go"], "awaiting") == (
            [w.name for w in described.waits],
            described.run.status,
        )
        await handle.cancel()
        events = await client.history("w1")
        described = await client.describe("w1")
        with pytest.raises(ResumeError, match="unknown run 'nope'"):
            await client.describe("nope")
    assert ["run.cancel_requested", "run.cancelled"] == kinds(events)[-2:]
    assert ("cancelled", []) == (described.run.status, described.waits)

"""``Client.list_runs`` and ``tags=`` on ``Client.start`` / ``Client.run``, with a worker.

A Worker and a Client in this process share a MemoryTransport and a store
(MemoryStore or SQLiteStore), on asyncio and trio. Times come from a fake clock
(``flowkit._clock.use_clock``) that the nodes move on, so the workers' commits are
stamped exactly; nothing sleeps.
"""

from __future__ import annotations

from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Any

import anyio
import pytest

import flowkit
from flowkit import ConfigurationError, RunStatus
from flowkit._clock import use_clock
from flowkit.stores import MemoryStore, RunPage, SQLiteStore
from flowkit.transports import MemoryTransport

if TYPE_CHECKING:
    from collections.abc import AsyncIterator
    from pathlib import Path

pytestmark = pytest.mark.anyio

BOUND = 30.0  # seconds these in-process runs certainly finish within (they take milliseconds)


class FakeClock:
    """A wall clock that moves only when told to."""

    def __init__(self, now: float = 1_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


CLOCK = FakeClock()


@flowkit.node
async def slow_triple(x: int) -> int:
    CLOCK.now += 3.0
    return 3 * x


@flowkit.node
async def refuse(x: int) -> int:
    CLOCK.now += 1.0
    raise KeyError(f"no {x}")


@flowkit.flow
async def tripling(x: int) -> int:
    return await slow_triple(x)


@flowkit.flow
async def refusing(x: int) -> int:
    return await refuse(x)


@flowkit.flow
async def nesting(x: int) -> int:
    return await tripling(x)


@flowkit.flow
async def counting(tags: list[str]) -> int:
    return await slow_triple(len(tags))


FLOWS = [tripling, refusing, nesting, counting]


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


@asynccontextmanager
async def fleet(store: Any) -> AsyncIterator[flowkit.Client]:
    """A client, with a worker serving it, on the fake clock (set to 1 000 s)."""
    CLOCK.now = 1_000.0
    transport = MemoryTransport()
    worker = flowkit.Worker(FLOWS, transport, store, poll_interval=0.05)
    client = flowkit.Client(transport, store, flows=FLOWS, poll_interval=0.01)
    try:
        with use_clock(CLOCK), anyio.fail_after(BOUND):
            async with anyio.create_task_group() as tg:
                await tg.start(worker.run)
                yield client
                tg.cancel_scope.cancel()
    finally:
        await transport.close()


async def test_runs_are_listed_with_their_tags_and_times(store: Any) -> None:
    async with fleet(store) as client:
        done = await client.run(tripling, x=2, tags={"team": "a"})
        CLOCK.now = 2_000.0
        handle = await client.start(refusing, x=5, tags={"team": "b", "env": "dev"})
        failed = await handle.result()
        page = await client.list_runs()
    assert (RunStatus.COMPLETED, 6, RunStatus.FAILED) == (done.status, done.output, failed.status)
    assert [failed.run_id, done.run_id] == [run.run_id for run in page.runs]
    second, first = page.runs
    assert ("tripling", "completed", {"team": "a"}) == (first.flow, first.status, first.tags)
    assert (1_000.0, 1_003.0, 1_003.0, None) == (
        first.created_at,
        first.updated_at,
        first.finished_at,
        first.error_type,
    )
    assert ("refusing", "failed", {"team": "b", "env": "dev"}) == (
        second.flow,
        second.status,
        second.tags,
    )
    assert (2_000.0, 2_001.0, 2_001.0) == (
        second.created_at,
        second.updated_at,
        second.finished_at,
    )
    assert ("builtins.KeyError", "'no 5'") == (second.error_type, second.error_message)
    by_tag = await client.list_runs(tags={"team": "b"}, status=["failed", "cancelled"])
    assert [failed.run_id] == [run.run_id for run in by_tag.runs]


async def test_children_and_pages(store: Any) -> None:
    async with fleet(store) as client:
        parents = []
        for n in range(3):
            CLOCK.now = 1_000.0 + 100 * n
            parents.append(await client.run(nesting, x=n, tags={"kind": "parent"}))
        first = await client.list_runs(tags={"kind": "parent"}, limit=2)
        rest = await client.list_runs(tags={"kind": "parent"}, limit=2, cursor=first.cursor)
        children = await client.list_runs(parent=parents[0].run_id)
    assert [p.run_id for p in reversed(parents)] == [run.run_id for run in first.runs + rest.runs]
    assert None is rest.cursor
    [child] = children.runs
    assert ("tripling", "completed", {}, 1_000.0) == (
        child.flow,
        child.status,
        child.tags,
        child.created_at,
    )


async def test_bad_tags_start_nothing(store: Any) -> None:
    async with fleet(store) as client:
        with pytest.raises(ConfigurationError, match="tag key ''"):
            await client.start(tripling, x=1, tags={"": "v"})
        with pytest.raises(ConfigurationError, match="tag 'k' must have a str value"):
            await client.run(tripling, x=1, tags={"k": 2})
        assert RunPage([], None) == await client.list_runs()
        with pytest.raises(ConfigurationError, match="list_runs: limit"):
            await client.list_runs(limit=1001)


async def test_a_flow_parameter_named_tags_still_gets_its_input(store: Any) -> None:
    async with fleet(store) as client:
        result = await client.run(counting, tags=["a", "b"])
        [run] = (await client.list_runs(flow="counting")).runs
    assert (RunStatus.COMPLETED, 6, {}) == (result.status, result.output, run.tags)

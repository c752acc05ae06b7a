"""Purging finished runs through the API: ``Runtime.purge``, ``Client.purge`` and a
worker's ``retention``.

The stores' own ``purge`` is in the conformance suite (``test_store_purge``). Here
the flowkit clock is a fake one (``use_clock``): runs finish "31 days ago" without
any test waiting for it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import anyio
import pytest

import flowkit
from flowkit import ConfigurationError, Flow, RunStatus, Runtime, flow, node
from flowkit._clock import use_clock
from flowkit.stores import MemoryStore, SQLiteStore
from flowkit.transports import MemoryTransport

if TYPE_CHECKING:
    from pathlib import Path

pytestmark = pytest.mark.anyio

DAY = 86400.0


class FakeClock:
    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


@node
async def double(x: int) -> int:
    if x < 0:
        raise ValueError("negative")
    return 2 * x


@flow
async def doubling(x: int) -> int:
    return await double(x)


@pytest.fixture(params=["memory", "sqlite"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Any:
    return MemoryStore() if request.param == "memory" else SQLiteStore(tmp_path / "runs.db")


async def statuses(store: Any) -> dict[str, str]:
    return {run.run_id: run.status for run in (await store.list_runs(limit=1000)).runs}


async def test_runtime_purge_deletes_old_finished_runs_only(store: Any) -> None:
    clock = FakeClock()
    with use_clock(clock):
        async with Runtime(store=store, flows=[doubling]) as rt:
            for n in range(3):
                await rt.run(doubling, x=n, run_id=f"old-{n}")
            assert RunStatus.FAILED == (await rt.run(doubling, x=-1, run_id="old-failed")).status
            await rt.start(Flow("waits").wait("go"), run_id="old-waiting")
            clock.now += 31 * DAY
            await rt.run(doubling, x=5, run_id="new")
            assert 1 == await rt.purge("30d", status="failed")
            assert 3 == await rt.purge("30d", batch=2)  # two store calls, then one
            assert 0 == await rt.purge("30d")
    assert {"old-waiting": "awaiting", "new": "completed"} == await statuses(store)


async def test_client_purge_and_bad_arguments() -> None:
    clock = FakeClock()
    store = MemoryStore()
    with use_clock(clock):
        async with Runtime(store=store, flows=[doubling]) as rt:
            await rt.run(doubling, x=1, run_id="old")
        clock.now += 2 * DAY
        client = flowkit.Client(MemoryTransport(), store, flows=[doubling])
        with pytest.raises(ConfigurationError, match="invalid duration"):
            await client.purge("a while")
        with pytest.raises(ConfigurationError, match="expected zero or more seconds"):
            await client.purge(-5)
        with pytest.raises(ConfigurationError, match="status 'running' is not final"):
            await client.purge("1d", status="running")
        assert 0 == await client.purge("3d")
        assert 1 == await client.purge("1d")
    assert {} == await statuses(store)


async def test_a_runtime_without_a_store_cannot_purge() -> None:
    async with Runtime() as rt:
        with pytest.raises(ConfigurationError, match=r"purge needs a store"):
            await rt.purge("1d")


async def test_a_worker_with_retention_purges_in_the_background(store: Any) -> None:
    clock = FakeClock()
    with use_clock(clock):
        async with Runtime(store=store, flows=[doubling]) as rt:
            for n in range(5):
                await rt.run(doubling, x=n, run_id=f"old-{n}")
        clock.now += 10 * DAY
        passed = anyio.Event()  # set when a pass of the retention loop ended
        purge = store.purge

        async def watched(**arguments: Any) -> list[str]:
            purged: list[str] = await purge(**arguments)
            if len(purged) < arguments["limit"]:
                passed.set()
            return purged

        store.purge = watched
        worker = flowkit.Worker(
            [doubling], MemoryTransport(), store, retention="7d", retention_interval=0.01
        )
        async with anyio.create_task_group() as tg:
            await tg.start(worker.run)
            with anyio.fail_after(10):
                await passed.wait()
            tg.cancel_scope.cancel()
    assert {} == await statuses(store)


async def test_a_worker_keeps_runs_younger_than_its_retention(store: Any) -> None:
    clock = FakeClock()
    with use_clock(clock):
        async with Runtime(store=store, flows=[doubling]) as rt:
            await rt.run(doubling, x=1, run_id="young")
        clock.now += 6 * DAY
        worker = flowkit.Worker([doubling], MemoryTransport(), store, retention="7d")
        await worker._purge_old_runs()  # one pass of the background loop
    assert {"young": "completed"} == await statuses(store)


def test_retention_is_checked_when_the_worker_is_made() -> None:
    with pytest.raises(ConfigurationError, match="invalid duration"):
        flowkit.Worker([doubling], MemoryTransport(), MemoryStore(), retention="often")

    class NoPurge(MemoryStore):
        purge = None  # type: ignore[assignment]

    with pytest.raises(ConfigurationError, match="cannot purge runs"):
        flowkit.Worker([doubling], MemoryTransport(), NoPurge(), retention="7d")

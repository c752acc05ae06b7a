"""``Client.wait`` (and so ``handle.result()`` and ``client.run``): pushed, not polled.

A store that announces finished runs (MemoryStore; PostgresStore by
LISTEN/NOTIFY and RedisStore by pub/sub, against the real servers on loopback)
wakes a waiting client at once: these tests give the client a one-hour poll
interval, so a wait that relied on polling could not finish within the test's
bound. SQLiteStore announces nothing and is polled. Workers run in this process
on a MemoryTransport. psycopg's and redis-py's async clients are asyncio-only,
so those stores run on asyncio alone; MemoryStore and SQLiteStore on both.
"""

from __future__ import annotations

import os
import uuid
from typing import TYPE_CHECKING, Any

import anyio
import pytest

import flowkit
from flowkit import RunStatus
from flowkit.stores import MemoryStore, SQLiteStore
from flowkit.transports import MemoryTransport
from flowkit.worker import _client

if TYPE_CHECKING:
    from collections.abc import AsyncIterator
    from pathlib import Path

pytestmark = pytest.mark.anyio

PG_DSN = os.environ.get("FLOWKIT_TEST_POSTGRES", "postgresql://postgres@127.0.0.1:5432/test")
REDIS_URL = os.environ.get("FLOWKIT_TEST_REDIS", "redis://127.0.0.1:6379/0")
HOUR = 3600.0
BOUND = 30.0  # seconds a pushed wait certainly finishes within (it takes milliseconds)


@flowkit.node
async def double(x: int) -> int:
    return 2 * x


@flowkit.flow
async def doubling(x: int) -> int:
    return await double(x)


CASES = [
    pytest.param(("memory", "asyncio"), id="memory-asyncio"),
    pytest.param(("memory", "trio"), id="memory-trio"),
    pytest.param(("postgres", "asyncio"), id="postgres", marks=pytest.mark.asyncio_only),
    pytest.param(("redis", "asyncio"), id="redis", marks=pytest.mark.asyncio_only),
]


@pytest.fixture(params=CASES)
def case(request: pytest.FixtureRequest) -> tuple[str, str]:
    return request.param  # type: ignore[no-any-return]


@pytest.fixture
def anyio_backend(case: tuple[str, str]) -> str:
    return case[1]


@pytest.fixture
async def store(case: tuple[str, str]) -> AsyncIterator[Any]:
    name = f"fk_client_{uuid.uuid4().hex[:12]}"
    if case[0] == "memory":
        yield MemoryStore()
        return
    if case[0] == "postgres":
        import psycopg
        from psycopg import sql

        from flowkit.stores import PostgresStore

        store = PostgresStore(PG_DSN, schema=name)
        yield store
        await store.close()
        async with await psycopg.AsyncConnection.connect(PG_DSN, autocommit=True) as conn:
            drop = sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE")
            await conn.execute(drop.format(sql.Identifier(name)))
        return
    from flowkit.stores import RedisStore

    store = RedisStore(REDIS_URL, prefix=name)
    yield store
    await store.close()
    import redis.asyncio

    client = redis.asyncio.Redis.from_url(REDIS_URL)
    keys = [key async for key in client.scan_iter(f"{name}:*")]
    if keys:
        await client.delete(*keys)
    await client.aclose()


async def run_with_worker(store: Any, *, runs: int, poll: float) -> list[flowkit.RunResult]:
    """``runs`` concurrent ``client.run``s served by one in-process worker."""
    transport = MemoryTransport()
    worker = flowkit.Worker([doubling], transport, store, poll_interval=0.05)
    client = flowkit.Client(
        transport, store, flows=[doubling], poll_interval=poll, max_poll_interval=poll
    )
    results: list[flowkit.RunResult] = []

    async def one(x: int) -> None:
        results.append(await client.run(doubling, x=x))

    with anyio.fail_after(BOUND):
        async with anyio.create_task_group() as tg:
            await tg.start(worker.run)
            async with anyio.create_task_group() as waits:
                for x in range(runs):
                    waits.start_soon(one, x)
            tg.cancel_scope.cancel()
    await transport.close()
    return results


async def test_a_wait_wakes_on_the_stores_announcement(store: Any) -> None:
    [result] = await run_with_worker(store, runs=1, poll=HOUR)
    assert (RunStatus.COMPLETED, 0) == (result.status, result.output)


async def test_many_waits_share_the_announcements(
    store: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Waits beyond the subscription cap poll; the ones within it are pushed."""
    monkeypatch.setattr(_client, "MAX_WATCHES", 3)
    results = await run_with_worker(store, runs=8, poll=0.05)
    assert sorted(2 * x for x in range(8)) == sorted(r.output for r in results)


@pytest.mark.parametrize("anyio_backend", ["asyncio", "trio"])
async def test_a_store_without_announcements_is_polled(tmp_path: Path) -> None:
    store = SQLiteStore(tmp_path / "runs.db")
    try:
        [result] = await run_with_worker(store, runs=1, poll=0.02)
    finally:
        await store.close()
    assert (RunStatus.COMPLETED, 0) == (result.status, result.output)


@flowkit.flow
async def gated() -> Any:
    return await flowkit.flow.wait("go")


class FinishesRightAfterARead(MemoryStore):
    """The run finishes, and its announcement arrives, right after the client's first
    read of it (on a loaded machine, the NOTIFY can beat the client to its wait)."""

    def __init__(self) -> None:
        super().__init__()
        self.finisher: flowkit.Client | None = None
        self._done = False

    async def info(self, run_id: str) -> Any:
        info = await super().info(run_id)
        if self.finisher is not None and not self._done:
            self._done = True
            await self.finisher.signal(run_id, "go", 1)  # announced as it commits
            await anyio.wait_all_tasks_blocked()  # the client has the announcement
        return info


@pytest.mark.parametrize("anyio_backend", ["asyncio", "trio"])
async def test_an_announcement_just_after_the_read_wakes_the_wait() -> None:
    store = FinishesRightAfterARead()
    transport = MemoryTransport()
    client = flowkit.Client(
        transport, store, flows=[gated], poll_interval=HOUR, max_poll_interval=HOUR
    )
    handle = await client.start(gated)
    store.finisher = flowkit.Client(transport, store, flows=[gated])
    with anyio.fail_after(BOUND):
        result = await client.wait(handle.run_id)
    await transport.close()
    assert (RunStatus.COMPLETED, 1) == (result.status, result.output)

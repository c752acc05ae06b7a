"""``Runtime.migrate`` and ``Client.migrate``: a run parked on one version moves to another
when every position it stands at survives, and goes on there; a refused migration changes
nothing. Runs are parked by an in-process Runtime serving the old version only, on each store
(SQLite, memory, and the real PostgreSQL and Redis servers on loopback); the new version
runs them on a Runtime or a Worker that has only it."""

from __future__ import annotations

import os
import uuid
from typing import TYPE_CHECKING, Any

import anyio
import pytest
from diff_flows import orders_added, orders_renamed, orders_reviewed, orders_v1

import flowkit
from flowkit import MigrationRefused
from flowkit.core._protocol import SignalReceived
from flowkit.shell._durable import Replica, RunMigrated
from flowkit.shell._target import resolve
from flowkit.stores import MemoryStore, PostgresStore, RedisStore, SQLiteStore
from flowkit.transports import MemoryTransport

if TYPE_CHECKING:
    from collections.abc import AsyncIterator
    from pathlib import Path

pytestmark = pytest.mark.anyio

PG_DSN = os.environ.get("FLOWKIT_TEST_POSTGRES", "postgresql://postgres@127.0.0.1:5432/test")
REDIS_URL = os.environ.get("FLOWKIT_TEST_REDIS", "redis://127.0.0.1:6379/0")
BOUND = 20  # seconds: a hang fails the test instead of the suite's timeout


CASES = [
    pytest.param(("sqlite", "asyncio"), id="sqlite-asyncio"),
    pytest.param(("sqlite", "trio"), id="sqlite-trio"),
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
async def store(case: tuple[str, str], tmp_path: Path) -> AsyncIterator[Any]:
    """A fresh store of each kind (a schema or key prefix of its own on the servers)."""
    name = f"fk_migrate_{uuid.uuid4().hex[:12]}"
    if case[0] in ("sqlite", "memory"):
        store = SQLiteStore(str(tmp_path / "runs.db")) if case[0] == "sqlite" else MemoryStore()
        yield store
        await store.close()
    elif case[0] == "postgres":
        import psycopg
        from psycopg import sql

        store = PostgresStore(PG_DSN, schema=name)
        yield store
        await store.close()
        async with await psycopg.AsyncConnection.connect(PG_DSN, autocommit=True) as conn:
            await conn.execute(
                sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(name))
            )
    else:
        import redis.asyncio

        store = RedisStore(REDIS_URL, prefix=name)
        yield store
        await store.close()
        client = redis.asyncio.Redis.from_url(REDIS_URL)
        keys = [key async for key in client.scan_iter(f"{name}:*")]
        if keys:
            await client.delete(*keys)
        await client.aclose()


async def park(store: Any, run_id: str = "order-1", n: int = 1) -> None:
    """Start a run of ``orders_v1``, which parks at its wait for ``approval``."""
    async with flowkit.Runtime(store=store, flows=[orders_v1]) as rt:
        result = await rt.run(orders_v1, run_id=run_id, n=n)
    assert "awaiting" == result.status


async def kinds(store: Any, run_id: str) -> list[str]:
    return [event.kind for event in await store.history(run_id)]


class TestRuntimeMigrate:
    """A runtime migrates a stored run, which then goes on with the new version only."""

    async def test_parked_run_continues_on_the_new_version(self, store: Any) -> None:
        await park(store)
        async with flowkit.Runtime(store=store, flows=[orders_added]) as rt:
            moved = await rt.migrate("order-1", to=orders_added)
            done = await rt.signal("order-1", "approval", "ana")
        summary = await store.run_summary("order-1")
        migrated = [e for e in await store.history("order-1") if e.kind == "run.migrated"]
        assert "awaiting" == moved.status
        assert ("completed", "charged 1002 by ana") == (done.status, done.output)
        assert summary is not None
        assert orders_added.blueprint.digest == summary.digest
        assert 1 == len(migrated)
        assert orders_v1.blueprint.digest == migrated[0].data["from"]
        assert orders_added.blueprint.digest == migrated[0].data["to"]

    async def test_side_by_side_each_run_keeps_its_version(self, store: Any) -> None:
        """With both versions registered, a run goes on with the one that started it,
        unless it was migrated."""
        await park(store, "stays")
        await park(store, "moves")
        async with flowkit.Runtime(store=store, flows=[orders_v1, orders_added]) as rt:
            await rt.migrate("moves", to=orders_added)
            stays = await rt.signal("stays", "approval", "fa")
            moves = await rt.signal("moves", "approval", "fa")
        assert ("charged 2 by fa", "charged 1002 by fa") == (stays.output, moves.output)

    async def test_map_moves_a_wait_whose_node_was_renamed(self, store: Any) -> None:
        await park(store)
        async with flowkit.Runtime(store=store, flows=[orders_reviewed]) as rt:
            await rt.migrate("order-1", to=orders_reviewed, map={"approval": "approval#2"})
            done = await rt.signal("order-1", "approval", "ana")
        state = await store.load("order-1")
        assert "charged 2 by ana" == done.output
        assert state is not None
        assert "approval#2" in state[0].sections["nodes"]  # it went on from the mapped wait

    async def test_refused_migration_changes_nothing(self, store: Any) -> None:
        await park(store)
        before = await store.load("order-1")
        async with flowkit.Runtime(store=store, flows=[orders_renamed]) as rt:
            with pytest.raises(MigrationRefused, match="not in the new version") as refused:
                await rt.migrate("order-1", to=orders_renamed)
            with pytest.raises(MigrationRefused, match="must keep its signal name"):
                await rt.migrate("order-1", to=orders_renamed, map={"approval": "manager-approval"})
        after = await store.load("order-1")
        assert before is not None
        assert after is not None
        assert (before[1], before[0].to_dict()) == (after[1], after[0].to_dict())
        assert "run.migrated" not in await kinds(store, "order-1")
        assert ["the wait for 'approval' at node 'approval'"] == [
            p.split(" is ")[0] for p in refused.value.problems
        ]
        async with flowkit.Runtime(store=store, flows=[orders_v1]) as rt:  # still on v1
            done = await rt.signal("order-1", "approval", "ana")
        assert "charged 2 by ana" == done.output

    async def test_a_finished_run_is_refused(self, store: Any) -> None:
        await park(store)
        async with flowkit.Runtime(store=store, flows=[orders_v1, orders_added]) as rt:
            await rt.signal("order-1", "approval", "ana")
            with pytest.raises(MigrationRefused, match="has finished"):
                await rt.migrate("order-1", to=orders_added)

    async def test_a_map_naming_no_node_is_refused(self, store: Any) -> None:
        await park(store)
        async with flowkit.Runtime(store=store, flows=[orders_added]) as rt:
            with pytest.raises(MigrationRefused, match="'nowhere', which the new version lacks"):
                await rt.migrate("order-1", to=orders_added, map={"approval": "nowhere"})

    async def test_without_a_store(self) -> None:
        async with flowkit.Runtime(flows=[orders_v1]) as rt:
            await rt.run(orders_v1, run_id="mem", n=1)
            await rt.migrate("mem", to=orders_added)
            done = await rt.signal("mem", "approval", "bo")
        assert "charged 1002 by bo" == done.output


class TestClientMigrate:
    """A client migrates a stored run; a worker with only the new version finishes it."""

    async def test_worker_with_only_the_new_version_continues(self, store: Any) -> None:
        await park(store)
        transport = MemoryTransport()
        worker = flowkit.Worker([orders_reviewed], transport, store, poll_interval=0.05)
        client = flowkit.Client(transport, store, flows=[orders_reviewed], poll_interval=0.01)
        try:
            with anyio.fail_after(BOUND):
                async with anyio.create_task_group() as tg:
                    await tg.start(worker.run)
                    moved = await client.migrate(
                        "order-1", to=orders_reviewed, map={"approval": "approval#2"}
                    )
                    await client.signal("order-1", "approval", "cy")
                    done = await client.wait("order-1")
                    tg.cancel_scope.cancel()
        finally:
            await transport.close()
        assert "awaiting" == moved.status
        assert "charged 2 by cy" == done.output
        assert "run.migrated" in await kinds(store, "order-1")

    async def test_node_in_flight_runs_on_the_new_version(self, store: Any) -> None:
        """A node message the old version queued is run by a worker with only the new one."""
        transport = MemoryTransport()
        old = flowkit.Client(transport, store, flows=[orders_v1])
        await old.start(orders_v1, run_id="order-2", n=2)  # no worker yet: fetch queued
        worker = flowkit.Worker([orders_added], transport, store, poll_interval=0.05)
        client = flowkit.Client(transport, store, flows=[orders_added], poll_interval=0.01)
        try:
            moved = await client.migrate("order-2", to=orders_added)
            with anyio.fail_after(BOUND):
                async with anyio.create_task_group() as tg:
                    await tg.start(worker.run)
                    await client.signal("order-2", "approval", "ed")
                    done = await client.wait("order-2")
                    tg.cancel_scope.cancel()
        finally:
            await transport.close()
        assert "running" == moved.status
        assert "charged 1003 by ed" == done.output

    async def test_a_stale_copy_is_told_to_reload(self, store: Any) -> None:
        """A copy of the run loaded before another process migrated it does not step the
        old version's program: its step raises, and the shells load the run again."""
        await park(store)
        loaded = await store.load("order-1")
        assert loaded is not None
        stale = Replica(resolve(orders_v1).program, loaded[0], loaded[1])
        other = flowkit.Client(MemoryTransport(), store, flows=[orders_added])
        await other.migrate("order-1", to=orders_added)
        with pytest.raises(RunMigrated):
            await stale.step(store, SignalReceived("approval", "di", None, "d-1"))
        after = await store.load("order-1")
        assert after is not None
        assert "approval" in after[0].sections["waits"]  # the stale step committed nothing

    async def test_refused_by_a_client(self, store: Any) -> None:
        await park(store)
        client = flowkit.Client(MemoryTransport(), store, flows=[orders_renamed])
        before = await store.load("order-1")
        with pytest.raises(MigrationRefused):
            await client.migrate("order-1", to=orders_renamed)
        after = await store.load("order-1")
        assert before is not None
        assert after is not None
        assert before[1] == after[1]

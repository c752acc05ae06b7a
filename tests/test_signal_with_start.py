"""Signal-with-start: start a run if it does not exist and deliver a signal, atomically.

A new run is created with the signal already received, so however many callers
race one run id, one run is started and every signal is delivered exactly once.
On the runtime (no store, MemoryStore, SQLiteStore) and through a client with an
in-process worker (memory and SQLite queues with their stores), asyncio and
trio; and against PostgresStore and RedisStore on the real servers on loopback
(``FLOWKIT_TEST_POSTGRES`` / ``FLOWKIT_TEST_REDIS`` override the addresses),
asyncio only: psycopg's and redis-py's async clients are asyncio-only.
"""

from __future__ import annotations

import os
import uuid
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Any

import anyio
import pytest

import flowkit
from flowkit import DuplicateDelivery, ResumeError, RunStatus, StoreError, flow, node
from flowkit.stores import MemoryStore, SQLiteStore
from flowkit.stores import from_url as store_from_url
from flowkit.transports import MemoryTransport
from flowkit.transports import from_url as transport_from_url

if TYPE_CHECKING:
    from collections.abc import AsyncIterator
    from pathlib import Path

pytestmark = pytest.mark.anyio

PG_DSN = os.environ.get("FLOWKIT_TEST_POSTGRES", "postgresql://postgres@127.0.0.1:5432/test")
REDIS_URL = os.environ.get("FLOWKIT_TEST_REDIS", "redis://127.0.0.1:6379/0")

RACERS = 20  # concurrent signal_with_start calls for one run id
BOUND = 30  # seconds a test waits for its runs (pytest's own timeout is 60)


@node
async def prepare(n: int) -> int:
    return n


@flow
async def tally(n: int) -> list[Any]:
    """Takes ``n`` signals ``add`` (after a node, so the first wait is not its first step)."""
    count = await prepare(n)
    got = []
    for _ in range(count):
        got = [*got, await flow.wait("add")]
    return got


@flow
async def one_add() -> Any:
    return await flow.wait("add")


@flow
async def nested() -> list[Any]:
    """Waits for ``add`` in a child, then itself."""
    first = await one_add()
    second = await flow.wait("add")
    return [first, second]


async def race(send: Any, run_id: str) -> None:
    """``RACERS`` concurrent ``send(run_id, value)`` calls, values 0 to RACERS - 1."""
    async with anyio.create_task_group() as tg:
        for value in range(RACERS):
            tg.start_soon(send, run_id, value)


# -- the runtime ---------------------------------------------------------------------------


@pytest.fixture(params=["none", "memory", "sqlite"])
async def runtime(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Any]:
    store: Any = {"none": None, "memory": MemoryStore(), "sqlite": None}[request.param]
    if request.param == "sqlite":
        store = SQLiteStore(tmp_path / "runs.db")
    try:
        async with flowkit.Runtime(store=store, flows=[tally, nested]) as rt:
            yield rt
    finally:
        if store is not None:
            await store.close()


class TestOnTheRuntime:
    """Runtime.signal_with_start starts a missing run with the signal, or signals the run."""

    async def test_a_new_run_starts_with_the_signal_received(self, runtime: Any) -> None:
        handle = await runtime.signal_with_start(tally, run_id="r1", signal="add", data="a", n=1)
        assert "r1" == handle.run_id
        done = await handle.result(timeout=BOUND)
        assert (RunStatus.COMPLETED, ["a"]) == (done.status, done.output)

    async def test_an_existing_run_is_signalled_and_keeps_its_inputs(self, runtime: Any) -> None:
        await runtime.start(tally, run_id="r2", n=2)
        await runtime.signal_with_start(tally, run_id="r2", signal="add", data="a", n=99)
        await runtime.signal_with_start(tally, run_id="r2", signal="add", data="b", n=99)
        done = await runtime.handle("r2").result(timeout=BOUND)
        assert ["a", "b"] == done.output
        assert 2 == done.state["n"]

    async def test_a_finished_run_is_refused_like_signal_refuses_it(self, runtime: Any) -> None:
        handle = await runtime.signal_with_start(tally, run_id="r3", signal="add", data=1, n=1)
        await handle.result(timeout=BOUND)
        with pytest.raises(ResumeError, match="already finished"):
            await runtime.signal_with_start(tally, run_id="r3", signal="add", data=2, n=1)
        with pytest.raises(ResumeError, match="already finished"):
            await runtime.signal("r3", "add", 2)

    async def test_a_name_the_flow_does_not_wait_for_starts_nothing(self, runtime: Any) -> None:
        with pytest.raises(ResumeError, match=r"no wait named 'nope'.*'add'"):
            await runtime.signal_with_start(tally, run_id="r4", signal="nope", n=1)
        with pytest.raises(ResumeError, match="unknown run"):
            await runtime.result("r4")

    async def test_a_delivery_id_is_delivered_once(self, runtime: Any) -> None:
        once = {"run_id": "r5", "signal": "add", "delivery_id": "d1", "n": 2}
        await runtime.signal_with_start(tally, data="a", **once)  # creates the run
        with pytest.raises(DuplicateDelivery):
            await runtime.signal_with_start(tally, data="a", **once)
        twice = {**once, "delivery_id": "d2"}
        await runtime.signal_with_start(tally, data="b", **twice)  # signals it
        with pytest.raises(DuplicateDelivery):
            await runtime.signal_with_start(tally, data="b", **twice)
        assert ["a", "b"] == (await runtime.handle("r5").result(timeout=BOUND)).output

    async def test_a_child_waiting_for_the_signal_gets_it(self, runtime: Any) -> None:
        first = await runtime.run(nested, run_id="r6")
        assert RunStatus.AWAITING == first.status
        await runtime.signal_with_start(nested, run_id="r6", signal="add", data="child")
        await runtime.signal_with_start(nested, run_id="r6", signal="add", data="parent")
        done = await runtime.handle("r6").result(timeout=BOUND)
        assert ["child", "parent"] == done.output

    async def test_the_flow_can_be_named(self, runtime: Any) -> None:
        handle = await runtime.signal_with_start("tally", run_id="r7", signal="add", data="a", n=1)
        assert ["a"] == (await handle.result(timeout=BOUND)).output

    async def test_racing_callers_start_one_run_and_deliver_every_signal_once(
        self, runtime: Any
    ) -> None:
        async def send(run_id: str, value: int) -> None:
            await runtime.signal_with_start(
                tally, run_id=run_id, signal="add", data=value, n=RACERS
            )

        with anyio.fail_after(BOUND):
            await race(send, "r8")
            done = await runtime.handle("r8").result()
        assert (RunStatus.COMPLETED, list(range(RACERS))) == (done.status, sorted(done.output))
        if runtime.store is not None:
            assert ["r8"] == [run.run_id for run in (await runtime.list_runs(flow="tally")).runs]


async def test_the_runtime_must_be_open() -> None:
    with pytest.raises(RuntimeError, match=r"async with flowkit\.Runtime"):
        await flowkit.Runtime().signal_with_start(tally, run_id="x", signal="add", n=1)


# -- a client and a worker --------------------------------------------------------------------


@asynccontextmanager
async def fleet(transport: Any, store: Any) -> AsyncIterator[flowkit.Client]:
    """A client, with a worker running in this process on ``transport`` and ``store``."""
    worker = flowkit.Worker([tally, nested], transport, store, poll_interval=0.05)
    client = flowkit.Client(
        transport, store, flows=[tally, nested], poll_interval=0.05, max_poll_interval=0.2
    )
    try:
        with anyio.fail_after(BOUND):
            async with anyio.create_task_group() as tg:
                await tg.start(worker.run)
                yield client
                tg.cancel_scope.cancel()
    finally:
        await transport.close()
        await store.close()


@pytest.fixture(params=["memory", "sqlite"])
async def client(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Any]:
    if request.param == "memory":
        transport: Any = MemoryTransport()
        store: Any = MemoryStore()
    else:
        transport = transport_from_url(f"sqlite:///{tmp_path / 'queue.db'}")
        store = store_from_url(f"sqlite:///{tmp_path / 'runs.db'}")
    async with fleet(transport, store) as client:
        yield client


class TestThroughAClient:
    """Client.signal_with_start does the same against workers."""

    async def test_a_new_run_starts_with_the_signal_received(self, client: Any) -> None:
        handle = await client.signal_with_start(tally, run_id="c1", signal="add", data="a", n=1)
        assert "c1" == handle.run_id
        done = await handle.result(timeout=BOUND)
        assert (RunStatus.COMPLETED, ["a"]) == (done.status, done.output)

    async def test_an_existing_run_is_signalled_by_name(self, client: Any) -> None:
        await client.start(tally, run_id="c2", n=2)
        for data in ("a", "b"):
            await client.signal_with_start("tally", run_id="c2", signal="add", data=data, n=9)
        done = await client.wait("c2", timeout=BOUND)
        assert (["a", "b"], 2) == (done.output, done.state["n"])

    async def test_refusals_match_signal(self, client: Any) -> None:
        once = {"run_id": "c3", "signal": "add", "delivery_id": "d1", "n": 1}
        await client.signal_with_start(tally, data="a", **once)
        with pytest.raises(DuplicateDelivery):
            await client.signal_with_start(tally, data="a", **once)
        await client.wait("c3", timeout=BOUND)
        with pytest.raises(ResumeError, match="already finished"):
            await client.signal_with_start(tally, run_id="c3", signal="add", n=1)
        with pytest.raises(ResumeError, match="no wait named 'nope'"):
            await client.signal_with_start(tally, run_id="c4", signal="nope", n=1)
        with pytest.raises(ResumeError, match="unknown run"):
            await client.result("c4")

    async def test_a_child_waiting_for_the_signal_gets_it(self, client: Any) -> None:
        await client.start(nested, run_id="c5")
        with anyio.fail_after(BOUND):
            while True:  # polled: the child's wait is in the store, announced nowhere
                if await child_waits(client, "c5"):
                    break
                await anyio.sleep(0.05)
        for data in ("child", "parent"):
            await client.signal_with_start(nested, run_id="c5", signal="add", data=data)
        assert ["child", "parent"] == (await client.wait("c5", timeout=BOUND)).output

    async def test_racing_callers_start_one_run_and_deliver_every_signal_once(
        self, client: Any
    ) -> None:
        await client_race(client, "c6")


class CreateFails(MemoryStore):
    """A MemoryStore whose next ``create_run`` raises StoreError, after creating the run
    if ``hidden`` (its answer lost, as in a connection that broke after the commit)."""

    def __init__(self) -> None:
        super().__init__()
        self.failing = False
        self.hidden = False

    async def create_run(self, *args: Any, **kwargs: Any) -> bool:
        if not self.failing:
            return await super().create_run(*args, **kwargs)
        self.failing = False
        if self.hidden:
            await super().create_run(*args, **kwargs)
        raise StoreError("connection lost (a test's)")


class TestATryTheStoreFailed:
    """A call whose first try to create the run failed tries again; it then tells its own
    run (made by the try whose answer was lost) from one an earlier call made."""

    async def test_an_earlier_calls_delivery_is_still_a_duplicate(self) -> None:
        store = CreateFails()
        client = flowkit.Client(MemoryTransport(), store, flows=[tally])
        once = {"run_id": "f1", "signal": "add", "delivery_id": "d1", "n": 2}
        await client.signal_with_start(tally, data="a", **once)
        store.failing = True  # the second call's first try fails; its second finds f1
        with pytest.raises(DuplicateDelivery):
            await client.signal_with_start(tally, data="a", **once)
        assert ["d1"] == list((await store.load("f1"))[0].sections["deliveries"])  # type: ignore[index]

    async def test_a_lost_answer_is_not_delivered_twice(self) -> None:
        store = CreateFails()
        client = flowkit.Client(MemoryTransport(), store, flows=[tally])
        store.failing = store.hidden = True  # the first try creates f2, its answer is lost
        await client.signal_with_start(tally, run_id="f2", signal="add", data="a", n=2)
        loaded = await store.load("f2")
        assert loaded is not None
        assert 1 == len(loaded[0].sections["deliveries"])  # the signal, received once


class TestAStaleCopy:
    """A client whose copy of the run is behind (another client finished it) refuses a
    signal as the run stands in the store, not as its copy says."""

    @pytest.mark.parametrize("backend", ["memory", "sqlite"])
    async def test_a_run_finished_elsewhere_refuses_the_signal(
        self, backend: str, tmp_path: Path
    ) -> None:
        store = MemoryStore() if backend == "memory" else SQLiteStore(tmp_path / "runs.db")
        gate = flowkit.Flow("gate").wait("add")  # a signal ends it
        behind = flowkit.Client(MemoryTransport(), store, flows=[gate])
        other = flowkit.Client(MemoryTransport(), store, flows=[gate])
        await behind.start(gate, run_id="s1")  # behind keeps its copy: version 1
        await other.signal("s1", "add", "a", delivery_id="d1")  # the run finishes
        assert RunStatus.COMPLETED == (await store.load("s1"))[0].status  # type: ignore[index]
        with pytest.raises(DuplicateDelivery):
            await behind.signal("s1", "add", "a", delivery_id="d1")
        with pytest.raises(ResumeError, match="already finished"):
            await behind.signal_with_start(gate, run_id="s1", signal="add", data="b")
        await store.close()


async def child_waits(client: flowkit.Client, run_id: str) -> bool:
    """Whether the run's child has reached its wait."""
    children = (await client.list_runs(parent=run_id)).runs
    return bool(children) and "add" in (await client.result(children[0].run_id)).waiting_for


async def client_race(client: flowkit.Client, run_id: str) -> None:
    """Racing signal_with_start calls through ``client``: one run, each signal once."""

    async def send(run_id: str, value: int) -> None:
        await client.signal_with_start(tally, run_id=run_id, signal="add", data=value, n=RACERS)

    await race(send, run_id)
    done = await client.wait(run_id, timeout=BOUND)
    assert (RunStatus.COMPLETED, list(range(RACERS))) == (done.status, sorted(done.output))
    assert [run_id] == [run.run_id for run in (await client.list_runs(flow="tally")).runs]


# -- PostgreSQL and Redis -------------------------------------------------------------------


@pytest.fixture(
    params=[
        pytest.param("postgres", marks=pytest.mark.asyncio_only),
        pytest.param("redis", marks=pytest.mark.asyncio_only),
    ]
)
async def server_store(request: pytest.FixtureRequest) -> AsyncIterator[Any]:
    """A store on a fresh PostgreSQL schema or Redis key prefix (removed after)."""
    name = f"fk_sws_{uuid.uuid4().hex[:12]}"
    if request.param == "postgres":
        from flowkit.stores import PostgresStore

        yield PostgresStore(PG_DSN, schema=name)
        import psycopg
        from psycopg import sql

        async with await psycopg.AsyncConnection.connect(PG_DSN, autocommit=True) as conn:
            drop = sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE")
            await conn.execute(drop.format(sql.Identifier(name)))
        return
    import redis.asyncio

    from flowkit.stores import RedisStore

    yield RedisStore(REDIS_URL, prefix=name)
    client = redis.asyncio.Redis.from_url(REDIS_URL)
    keys = [key async for key in client.scan_iter(f"{name}:*")]
    if keys:
        await client.delete(*keys)
    await client.aclose()


class TestOnServerStores:
    """The race on PostgresStore and RedisStore: through a client and on a runtime."""

    @pytest.fixture
    def anyio_backend(self) -> str:
        return "asyncio"

    async def test_racing_clients_start_one_run(self, server_store: Any) -> None:
        async with fleet(MemoryTransport(), server_store) as client:
            await client_race(client, "s1")

    async def test_racing_runtime_callers_start_one_run(self, server_store: Any) -> None:
        async def send(run_id: str, value: int) -> None:
            await rt.signal_with_start(tally, run_id=run_id, signal="add", data=value, n=RACERS)

        try:
            with anyio.fail_after(BOUND):
                async with flowkit.Runtime(store=server_store) as rt:
                    await race(send, "s2")
                    done = await rt.handle("s2").result()
                    runs = (await rt.list_runs(flow="tally")).runs
        finally:
            await server_store.close()
        assert list(range(RACERS)) == sorted(done.output)
        assert ["s2"] == [run.run_id for run in runs]

    async def test_racing_runtime_signals_are_each_delivered_once(self, server_store: Any) -> None:
        """Steps of one run in one runtime take turns: a signal stepped while a node's
        completion was being committed lost one signal and delivered another twice."""

        async def send(run_id: str, value: int) -> None:
            await rt.signal(run_id, "add", value)

        try:
            with anyio.fail_after(BOUND):
                async with flowkit.Runtime(store=server_store) as rt:
                    await rt.start(tally, run_id="s3", n=RACERS)
                    await race(send, "s3")
                    done = await rt.handle("s3").result()
        finally:
            await server_store.close()
        assert list(range(RACERS)) == sorted(done.output)

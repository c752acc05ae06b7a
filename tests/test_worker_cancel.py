"""A cancelled run's nodes stop on whatever worker runs them.

``client.cancel(run_id)`` (or a decided ``join="any"`` race) withdraws dispatches
from the run's state; the worker running one cancels the node's task (its
``finally`` runs), acks the delivery without applying a failure, and goes on
serving. Stores that push (MemoryStore in process, PostgresStore by
LISTEN/NOTIFY, RedisStore by pub/sub) tell the worker at once: these tests give
their workers a one-hour check interval, so a cancel that relied on polling could
not reach the node within the test's bound. SQLiteStore pushes nothing and is
polled. Stores and transports are real (PostgreSQL and Redis on loopback);
every worker and client opens stores and transports of its own, as separate
processes would, except MemoryStore and MemoryTransport, which live in one
process. psycopg's and redis-py's async clients are asyncio-only, so those two
stores run on asyncio alone; MemoryStore and SQLiteStore on asyncio and trio.
"""

from __future__ import annotations

import json
import os
import uuid
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Any

import anyio
import pytest

import flowkit
from flowkit import ConfigurationError, Flow, RunStatus
from flowkit.core._state import RunState
from flowkit.stores import MemoryStore, SQLiteStore
from flowkit.stores._protocol import ChecksLeases, IndexOps
from flowkit.transports import MemoryTransport
from flowkit.transports._sqlqueue import SQLiteQueueTransport

if TYPE_CHECKING:
    from collections.abc import AsyncIterator
    from pathlib import Path

    from flowkit.transports._protocol import Delivery

pytestmark = pytest.mark.anyio

PG_DSN = os.environ.get("FLOWKIT_TEST_POSTGRES", "postgresql://postgres@127.0.0.1:5432/test")
REDIS_URL = os.environ.get("FLOWKIT_TEST_REDIS", "redis://127.0.0.1:6379/0")
HOUR = 3600.0
POLL = 0.2  # seconds: the check interval where the store cannot push (SQLite)
BOUND = 20.0  # seconds a test certainly finishes within (it takes well under one)

CASES = [
    pytest.param(("memory", "asyncio"), id="memory-asyncio"),
    pytest.param(("memory", "trio"), id="memory-trio"),
    pytest.param(("sqlite", "asyncio"), id="sqlite-asyncio"),
    pytest.param(("sqlite", "trio"), id="sqlite-trio"),
    pytest.param(("postgres", "asyncio"), id="postgres", marks=pytest.mark.asyncio_only),
    pytest.param(("redis", "asyncio"), id="redis", marks=pytest.mark.asyncio_only),
]


# -- what the nodes report ---------------------------------------------------------------------
class Probe:
    """Per test: which nodes started, and which ran their ``finally``."""

    def __init__(self) -> None:
        self.started: dict[str, anyio.Event] = {}
        self.cleaned: dict[str, anyio.Event] = {}
        self.calls: list[str] = []
        self.racing = anyio.Event()  # a racer runs
        self.never = anyio.Event()

    def start(self, tag: str) -> None:
        self.calls.append(tag)
        self.started_event(tag).set()

    def started_event(self, tag: str) -> anyio.Event:
        return self.started.setdefault(tag, anyio.Event())

    def cleaned_event(self, tag: str) -> anyio.Event:
        return self.cleaned.setdefault(tag, anyio.Event())


probe: Probe  # a new one for every test (``fresh_probe``)


@pytest.fixture(autouse=True)
async def fresh_probe() -> None:
    global probe
    probe = Probe()


@flowkit.node(retries=3)
async def hang(tag: str) -> str:
    """Waits for an event that never fires; records its cleanup."""
    probe.start(tag)
    try:
        await probe.never.wait()
    finally:
        probe.cleaned_event(tag).set()
    return tag


@flowkit.flow
async def hanging(tag: str) -> str:
    return await hang(tag)


@flowkit.node
async def tidy(tag: str) -> str:
    probe.calls.append(f"tidy {tag}")
    return tag


@flowkit.flow
async def hanging_with_cleanup(tag: str) -> str:
    try:
        return await hang(tag)
    finally:
        await tidy(tag)


@flowkit.node
async def double(x: int) -> int:
    return 2 * x


@flowkit.flow
async def doubling(x: int) -> int:
    return await double(x)


async def begin() -> str:
    return "go"


async def slow_racer(_: Any) -> str:
    probe.start("slow")
    probe.racing.set()
    try:
        await probe.never.wait()
    finally:
        probe.cleaned_event("slow").set()
    return "slow"


async def fast_racer(_: Any) -> str:
    probe.start("fast")
    probe.racing.set()
    await probe.started_event("slow").wait()  # so the slow racer is surely running
    return "fast"


async def winner(value: str) -> str:
    return f"won by {value}"


race = (
    Flow("cancel-race")
    .node("root", begin)
    .node("slow", slow_racer, retries=3)
    .node("fast", fast_racer)
    .node("first", winner, join="any")
    .edge("root", "slow")
    .edge("root", "fast")
    .edge("slow", "first")
    .edge("fast", "first")
)
FLOWS = [hanging, hanging_with_cleanup, doubling, race]


# -- real stores and transports ----------------------------------------------------------------
class System:
    """One database and one queue per test; each ``store()``/``transport()`` is a new
    connection to them, as another process would open (MemoryStore and MemoryTransport
    live in this process: the same one is handed back)."""

    def __init__(self, kind: str, tmp_path: Path) -> None:
        self.kind = kind
        self.path = tmp_path / "flowkit.db"
        self.name = f"fk_cancel_{uuid.uuid4().hex[:12]}"
        self.stores: list[Any] = []
        self.transports: list[Any] = []
        self._memory = (MemoryStore(), MemoryTransport())

    @property
    def pushes(self) -> bool:
        return self.kind != "sqlite"

    def store(self) -> Any:
        if self.kind == "memory":
            return self._memory[0]
        if self.kind == "sqlite":
            store: Any = SQLiteStore(self.path)
        elif self.kind == "postgres":
            from flowkit.stores import PostgresStore

            store = PostgresStore(PG_DSN, schema=self.name)
        else:
            from flowkit.stores import RedisStore

            store = RedisStore(REDIS_URL, prefix=self.name)
        self.stores.append(store)
        return store

    def transport(self) -> Any:
        if self.kind in ("memory", "postgres"):
            return self._memory[1]
        if self.kind == "sqlite":
            transport: Any = SQLiteQueueTransport(self.path, poll_interval=0.02)
        else:
            from flowkit.transports.redis._transport import RedisTransport

            transport = RedisTransport(REDIS_URL, prefix=f"{self.name}q", block_ms=100)
        self.transports.append(transport)
        return transport

    def worker(self, *, concurrency: int = 4, interval: float | None = None) -> RecordingWorker:
        if interval is None:
            interval = HOUR if self.pushes else POLL
        return RecordingWorker(
            FLOWS,
            self.transport(),
            self.store(),
            concurrency=concurrency,
            poll_interval=0.05,
            cancel_check_interval=interval,
        )

    def client(self) -> flowkit.Client:
        return flowkit.Client(self.transport(), self.store(), flows=FLOWS, poll_interval=0.02)

    async def drop(self) -> None:
        for thing in [*self.transports, *self.stores, self._memory[1]]:
            await thing.close()
        if self.kind == "postgres":
            import psycopg
            from psycopg import sql

            async with await psycopg.AsyncConnection.connect(PG_DSN, autocommit=True) as conn:
                drop = sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE")
                await conn.execute(drop.format(sql.Identifier(self.name)))
        elif self.kind == "redis":
            import redis.asyncio

            client = redis.asyncio.Redis.from_url(REDIS_URL)
            keys = [key async for key in client.scan_iter(f"{self.name}*")]
            if keys:
                await client.delete(*keys)
            await client.aclose()


class Settled:
    """A delivery that records how the worker settled it (by node id)."""

    def __init__(self, inner: Delivery, log: list[tuple[str, str]]) -> None:
        self._inner = inner
        self._log = log
        self.body = inner.body
        self.headers = inner.headers

    def _record(self, how: str) -> None:
        self._log.append((json.loads(self.body)["node_id"], how))

    async def ack(self) -> None:
        await self._inner.ack()
        self._record("ack")

    async def nack(self, requeue_after: float | None = None) -> None:
        await self._inner.nack(requeue_after)
        self._record("nack")

    async def extend(self, seconds: float) -> None:
        await self._inner.extend(seconds)

    async def dead_letter(self, reason: str) -> None:
        await self._inner.dead_letter(reason)
        self._record("dead letter")


class RecordingWorker(flowkit.Worker):
    """A worker whose deliveries record how they were settled."""

    def __init__(self, *args: Any, **options: Any) -> None:
        super().__init__(*args, **options)
        self.settled: list[tuple[str, str]] = []
        self.errors: list[str] = []
        self.events.subscribe(lambda event: self.errors.append(event.type), types={"node:error"})

    async def handle(self, delivery: Delivery) -> None:
        await super().handle(Settled(delivery, self.settled))  # type: ignore[arg-type]


@pytest.fixture(params=CASES)
def case(request: pytest.FixtureRequest) -> tuple[str, str]:
    return request.param  # type: ignore[no-any-return]


@pytest.fixture
def anyio_backend(case: tuple[str, str]) -> str:
    return case[1]


@pytest.fixture
async def system(case: tuple[str, str], tmp_path: Path) -> AsyncIterator[System]:
    made = System(case[0], tmp_path)
    yield made
    await made.drop()


# -- cancelling a run --------------------------------------------------------------------------
async def test_cancel_reaches_the_node_running_on_a_worker(system: System) -> None:
    """The node's ``finally`` runs, its delivery is acked (no failure, no retry), the
    worker serves the next run and drains at once when stopped."""
    worker, client = system.worker(), system.client()
    with anyio.fail_after(BOUND):
        async with anyio.create_task_group() as tg:
            await tg.start(worker.run)
            handle = await client.start(hanging, tag="doomed")
            await probe.started_event("doomed").wait()
            cancelled = await client.cancel(handle.run_id)
            await probe.cleaned_event("doomed").wait()
            after = await client.run(doubling, x=21)
            worker.stop()  # run() returns: nothing is left in flight
    assert RunStatus.CANCELLED == cancelled.status
    assert (RunStatus.COMPLETED, 42) == (after.status, after.output)
    assert RunStatus.CANCELLED == (await client.result(handle.run_id)).status
    assert ["doomed"] == probe.calls  # ran once: the cancellation was not retried
    assert [] == worker.errors  # nor reported as a failure
    assert ("hang", "ack") in worker.settled
    assert (1, 1) == (worker.cancelled, worker.processed)


async def test_cancel_runs_the_flows_finally_on_a_worker(system: System) -> None:
    """The node stops, then the flow's ``finally`` node runs on a worker; the run ends
    ``cancelled`` with :class:`flowkit.Cancelled`."""
    worker, client = system.worker(), system.client()
    with anyio.fail_after(BOUND):
        async with anyio.create_task_group() as tg:
            await tg.start(worker.run)
            handle = await client.start(hanging_with_cleanup, tag="tidied")
            await probe.started_event("tidied").wait()
            await client.cancel(handle.run_id)
            final = await handle.result(timeout=BOUND)
            await probe.cleaned_event("tidied").wait()
            worker.stop()
    assert RunStatus.CANCELLED == final.status
    assert isinstance(final.error, flowkit.Cancelled)
    assert ["tidied", "tidy tidied"] == probe.calls


async def test_a_decided_race_cancels_the_racer_running_on_another_worker(system: System) -> None:
    """The racers run on different workers, so the cancel must travel between them.

    The first worker takes one node at a time; once it runs a racer it drains, which
    hands the other racer (held while waiting for a slot) back to the queue, and a
    second worker takes it. The fast racer waits until the slow one runs. Whichever
    worker decides the race, the slow racer is cancelled on the other one; when that
    is the draining worker, its drain then completes.
    """
    first, second = system.worker(concurrency=1), system.worker(concurrency=1)
    workers = [first, second]
    client = system.client()
    with anyio.fail_after(BOUND):
        async with anyio.create_task_group() as tg:
            await tg.start(first.run)
            handle = await client.start(race)
            await probe.racing.wait()
            first.stop()
            await tg.start(second.run)
            result = await handle.result()
            await probe.cleaned_event("slow").wait()
            second.stop()
    assert (RunStatus.COMPLETED, "won by fast") == (result.status, result.output)
    assert ["slow", "fast"] == sorted(probe.calls, reverse=True)
    assert [] == first.errors + second.errors
    [runner] = [worker for worker in workers if worker.cancelled]
    [decider] = [worker for worker in workers if ("fast", "ack") in worker.settled]
    assert runner is not decider
    assert [("slow", "ack")] == [entry for entry in runner.settled if entry[0] == "slow"]
    assert 1 == first.cancelled + second.cancelled


@pytest.mark.parametrize("anyio_backend", ["asyncio", "trio"])
async def test_a_race_decided_on_the_same_worker_cancels_its_racer_at_once(
    tmp_path: Path,
) -> None:
    """SQLite cannot push, but the worker that decides the race runs the loser itself:
    it cancels it directly, without waiting for a poll (an hour here)."""
    system = System("sqlite", tmp_path)
    try:
        worker = system.worker(concurrency=2, interval=HOUR)
        client = system.client()
        with anyio.fail_after(BOUND):
            async with anyio.create_task_group() as tg:
                await tg.start(worker.run)
                result = await client.run(race)
                await probe.cleaned_event("slow").wait()
                worker.stop()
    finally:
        await system.drop()
    assert (RunStatus.COMPLETED, "won by fast") == (result.status, result.output)
    assert (1, 3) == (worker.cancelled, worker.processed)


class NoticesDownAtFirst(MemoryStore):
    """Its notices of cancelled nodes fail at first; the next subscription waits for ``reopen``."""

    def __init__(self) -> None:
        super().__init__()
        self.subscriptions = 0
        self.reopen = anyio.Event()

    @asynccontextmanager
    async def watch_cancelled_nodes(self) -> AsyncIterator[AsyncIterator[str]]:
        self.subscriptions += 1
        if self.subscriptions == 1:
            raise flowkit.StoreError("notices are down")
        await self.reopen.wait()
        async with super().watch_cancelled_nodes() as notices:
            yield notices


@pytest.mark.parametrize("anyio_backend", ["asyncio", "trio"])
async def test_a_worker_that_missed_notices_checks_its_nodes_once_it_watches_again() -> None:
    """The cancel is announced while the worker cannot watch (and it polls once an hour):
    when its subscription comes back, it checks the nodes it runs."""
    transport, store = MemoryTransport(), NoticesDownAtFirst()
    worker = RecordingWorker(FLOWS, transport, store, cancel_check_interval=HOUR)
    client = flowkit.Client(transport, store, flows=FLOWS)
    with anyio.fail_after(BOUND):
        async with anyio.create_task_group() as tg:
            await tg.start(worker.run)
            handle = await client.start(hanging, tag="unheard")
            await probe.started_event("unheard").wait()
            await client.cancel(handle.run_id)
            store.reopen.set()
            await probe.cleaned_event("unheard").wait()
            worker.stop()
    assert (2, 1, 0) == (store.subscriptions, worker.cancelled, worker.processed)


# -- the store read behind the poll ------------------------------------------------------------
async def test_a_store_tells_which_leases_are_held(system: System) -> None:
    """One read for many dispatches: a lease goes with its dispatch."""
    store = system.store()
    assert isinstance(store, ChecksLeases)
    state = RunState("run-1")
    state.put("header", "status", "running")
    index = IndexOps(leases=[("d1", 1e12), ("d2", 1e12)])
    assert await store.create_run("run-1", state, blueprint_id="bp", digest="x", index=index)
    asked = [("run-1", "d1"), ("run-1", "d2"), ("run-1", "gone"), ("run-2", "d1")]
    assert {("run-1", "d1"), ("run-1", "d2")} == await store.held_leases(asked)
    async with store.transaction("run-1") as txn:
        state.take_delta()
        state.put("header", "status", "running")
        await txn.commit(state.take_delta(), index=IndexOps(leases_done=["d1"]))
    assert {("run-1", "d2")} == await store.held_leases(asked)
    assert set() == await store.held_leases([])


@pytest.mark.parametrize("anyio_backend", ["asyncio"])
async def test_the_check_interval_must_be_positive() -> None:
    with pytest.raises(ConfigurationError, match="cancel_check_interval must be above 0"):
        flowkit.Worker([], MemoryTransport(), MemoryStore(), cancel_check_interval=0)

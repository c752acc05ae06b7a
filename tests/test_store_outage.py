"""A worker whose store is unreachable pauses its intake, probes with backoff, resumes.

The store here is an in-memory one that refuses every call while ``down`` (as a
stopped server would); the client talks to the same runs through the store
behind it, so runs can be started during the outage. Every wait is for a
condition, bounded.
"""

from __future__ import annotations

from contextlib import aclosing, asynccontextmanager
from typing import TYPE_CHECKING, Any

import anyio
import pytest
from structlog.testing import capture_logs

from flowkit import Backoff, Client, RunStatus, StoreError, Worker, flow, node
from flowkit.stores import MemoryStore
from flowkit.transports import MemoryTransport
from flowkit.worker._outage import PROBE_RUN_ID

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Collection

    from flowkit.transports._memory import MemoryDelivery

pytestmark = pytest.mark.anyio

FAST_PROBES = Backoff(initial=0.01, factor=2.0, max=0.05, jitter=True)
BOUND = 10.0  # seconds any awaited condition may take
PAUSED = "store unreachable, pausing intake: "
RESUMED = "store back after "

executions: list[tuple[str, int]] = []
gate: dict[str, anyio.Event] = {}


@node
async def double(x: int) -> int:
    executions.append(("double", x))
    held = gate.get("double")
    if held is not None:
        await held.wait()
    return 2 * x


@node
async def plus_one(x: int) -> int:
    executions.append(("plus_one", x))
    return x + 1


@flow
async def twice(x: int) -> int:
    return await plus_one(await double(x))


class UnreachableStore:
    """Delegates to ``inner``; while ``down`` every call fails as a stopped server's would."""

    def __init__(self, inner: MemoryStore) -> None:
        self.inner = inner
        self.down = False
        self.refused = 0
        self.probes_refused = 0

    def _check(self, operation: str, run_id: str = "") -> None:
        if self.down:
            self.refused += 1
            self.probes_refused += run_id == PROBE_RUN_ID
            raise StoreError(f"{operation} failed (connection refused)")

    async def create_run(self, run_id: str, *args: Any, **kwargs: Any) -> bool:
        self._check("create_run")
        return await self.inner.create_run(run_id, *args, **kwargs)

    @asynccontextmanager
    async def transaction(self, run_id: str) -> AsyncIterator[Any]:
        self._check("transaction")
        async with self.inner.transaction(run_id) as txn:
            yield txn

    async def load(self, run_id: str) -> Any:
        self._check("load")
        return await self.inner.load(run_id)

    async def info(self, run_id: str) -> Any:
        self._check("info", run_id)
        return await self.inner.info(run_id)

    async def due_timers(self, now: float, limit: int = 100) -> Any:
        self._check("due_timers")
        return await self.inner.due_timers(now, limit)

    async def claim_timer(self, run_id: str, timer_id: str) -> bool:
        self._check("claim_timer")
        return await self.inner.claim_timer(run_id, timer_id)

    async def slot_pools(self, prefix: str) -> Any:
        self._check("slot_pools")
        return await self.inner.slot_pools(prefix)

    async def slot_holders(self, limit_id: str, key: str) -> Any:
        self._check("slot_holders")
        return await self.inner.slot_holders(limit_id, key)

    async def list_runs(self, **filters: Any) -> Any:
        self._check("list_runs")
        return await self.inner.list_runs(**filters)

    async def expired_leases(self, now: float, limit: int = 100) -> Any:
        self._check("expired_leases")
        return await self.inner.expired_leases(now, limit)

    async def extend_lease(self, run_id: str, dispatch_id: str, expires_at: float) -> None:
        self._check("extend_lease")
        await self.inner.extend_lease(run_id, dispatch_id, expires_at)

    async def held_leases(self, leases: Collection[tuple[str, str]]) -> set[tuple[str, str]]:
        self._check("held_leases")
        return await self.inner.held_leases(leases)

    async def close(self) -> None:
        await self.inner.close()


class CountingTransport(MemoryTransport):
    """Counts the deliveries its receivers hand out, and the nacks."""

    def __init__(self) -> None:
        super().__init__()
        self.taken = 0
        self.nacked = 0

    async def receive(self, queue: str) -> AsyncIterator[MemoryDelivery]:  # type: ignore[override]
        async with aclosing(super().receive(queue)) as deliveries:
            async for delivery in deliveries:
                self.taken += 1
                yield self._counting_nacks(delivery)

    def _counting_nacks(self, delivery: MemoryDelivery) -> MemoryDelivery:
        nack = delivery.nack

        async def counted(requeue_after: float | None = None) -> None:
            self.nacked += 1
            await nack(requeue_after)

        delivery.nack = counted  # type: ignore[method-assign]
        return delivery


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture(autouse=True)
def fresh_counts() -> None:
    executions.clear()
    gate.clear()


async def until(condition: Any, what: str) -> None:
    """Return once ``condition()`` holds; fail naming ``what`` after BOUND seconds."""
    try:
        with anyio.fail_after(BOUND):
            while True:
                if condition():
                    return
                await anyio.sleep(0.005)  # nothing to await: the worker runs in this loop
    except TimeoutError:
        raise AssertionError(f"not within {BOUND}s: {what}") from None


def log_lines(logs: list[dict[str, Any]], start: str) -> list[str]:
    return [entry["event"] for entry in logs if str(entry["event"]).startswith(start)]


@asynccontextmanager
async def running(store: UnreachableStore, transport: CountingTransport) -> AsyncIterator[Worker]:
    worker = Worker([twice], transport, store, poll_interval=0.02, lease=5.0)
    worker.store_health.backoff = FAST_PROBES
    async with anyio.create_task_group() as tg:
        await tg.start(worker.run)
        yield worker
        tg.cancel_scope.cancel()


async def test_intake_pauses_while_the_store_is_unreachable_and_resumes_after() -> None:
    store, transport = UnreachableStore(MemoryStore()), CountingTransport()
    client = Client(transport, store.inner, flows=[twice])  # the client's store stays up
    with capture_logs() as logs:
        async with running(store, transport):
            assert (await client.run(twice, x=1, timeout=BOUND)).output == 3
            store.down = True
            await until(lambda: log_lines(logs, PAUSED), "the worker notices the outage")
            taken, refused = transport.taken, store.refused
            handles = [await client.start(twice, x=x) for x in (10, 20, 30)]
            await until(lambda: store.probes_refused >= 5, "probes go on while it is down")
            assert transport.taken - taken <= 1  # only a delivery it was already waiting for
            assert [("double", 1), ("plus_one", 2)] == executions  # no node ran meanwhile
            assert store.refused > refused
            store.down = False
            results = [await handle.result(timeout=BOUND) for handle in handles]
    assert [21, 41, 61] == [result.output for result in results]
    assert len(executions) == len(set(executions)) == 8  # each node once
    assert 0 == transport.nacked
    assert 1 == len(log_lines(logs, PAUSED))
    assert 1 == len(log_lines(logs, RESUMED))
    assert log_lines(logs, RESUMED)[0].endswith(" s, resuming intake")


async def test_a_node_that_finishes_during_an_outage_commits_once_the_store_is_back() -> None:
    store, transport = UnreachableStore(MemoryStore()), CountingTransport()
    client = Client(transport, store.inner, flows=[twice])
    gate["double"] = anyio.Event()
    with capture_logs() as logs:
        async with running(store, transport):
            handle = await client.start(twice, x=4)
            await until(lambda: ("double", 4) in executions, "the node runs")
            store.down = True
            gate["double"].set()  # it finishes now: its result cannot be committed yet
            await until(lambda: log_lines(logs, PAUSED), "the worker notices the outage")
            await until(lambda: store.probes_refused >= 3, "probes go on while it is down")
            store.down = False
            result = await handle.result(timeout=BOUND)
    assert 9 == result.output
    assert [("double", 4), ("plus_one", 8)] == executions  # not run again
    assert 0 == transport.nacked


async def test_a_store_error_the_probe_does_not_confirm_is_not_an_outage() -> None:
    store, transport = UnreachableStore(MemoryStore()), CountingTransport()
    worker = Worker([twice], transport, store)
    assert not await worker.store_health.outage(StoreError("corrupt snapshot in store"))
    assert not worker.store_health.down
    store.down = True
    assert await worker.store_health.outage(StoreError("connection refused"))
    assert worker.store_health.down


async def test_a_client_start_and_wait_ride_out_a_store_outage() -> None:
    store, transport = UnreachableStore(MemoryStore()), CountingTransport()
    client = Client(transport, store, flows=[twice])
    client.store_health.backoff = FAST_PROBES
    with capture_logs() as logs:
        async with running(UnreachableStore(store.inner), transport):
            store.down = True
            async with anyio.create_task_group() as tg:
                results: list[int] = []

                async def run() -> None:
                    results.append((await client.run(twice, x=5, timeout=BOUND)).output)

                tg.start_soon(run)
                await until(lambda: store.probes_refused >= 3, "the client retries meanwhile")
                store.down = False
    assert [11] == results
    assert ["store unreachable, retrying: create_run failed (connection refused)"] == log_lines(
        logs, "store unreachable"
    )


async def test_a_client_start_gives_up_after_its_outage_timeout_with_the_last_error() -> None:
    store, transport = UnreachableStore(MemoryStore()), CountingTransport()
    client = Client(transport, store, flows=[twice], outage_timeout=0.2)
    client.store_health.backoff = FAST_PROBES
    store.down = True
    with pytest.raises(StoreError, match="connection refused"):
        await client.start(twice, x=1)


@flow
async def approval() -> int:
    return int(await flow.wait("go"))


class AnswerLost(UnreachableStore):
    """With ``lose_next_answer``, the next transaction commits and then the connection
    breaks (the store goes down): the commit went through, its caller never hears so."""

    lose_next_answer = False

    @asynccontextmanager
    async def transaction(self, run_id: str) -> AsyncIterator[Any]:
        self._check("transaction")
        async with self.inner.transaction(run_id) as txn:
            yield txn
        if self.lose_next_answer:
            self.lose_next_answer, self.down = False, True
            raise StoreError("commit: connection reset by peer")


@flow
async def tally() -> int:
    total = 0
    total = total + int(await flow.wait("add"))
    total = total + int(await flow.wait("add"))
    return total


@tally.update
def add(vars: dict[str, Any], value: int) -> int:
    return int(vars["total"])


async def ride_out(
    store: UnreachableStore, act: Any, *, probes: int, target: Any = approval
) -> list[Any]:
    """Start a run of ``target``, then ``act(client, run_id)`` while the store goes down
    (if it is not down yet, ``act`` brings it down); the store is back after ``probes``
    refused probes. What ``act`` returned."""
    client = Client(MemoryTransport(), store, flows=[target])
    client.store_health.backoff = FAST_PROBES
    handle = await client.start(target)
    results: list[Any] = []

    async def acting() -> None:
        results.append(await act(client, handle.run_id))

    async with anyio.create_task_group() as tg:
        tg.start_soon(acting)
        await until(lambda: store.probes_refused >= probes, "the client retries meanwhile")
        store.down = False
    return results


async def test_a_client_signal_rides_out_a_store_outage() -> None:
    store = UnreachableStore(MemoryStore())

    async def signal(client: Client, run_id: str) -> Any:
        store.down = True
        return await client.signal(run_id, "go", 7)

    results = await ride_out(store, signal, probes=3)
    assert [(RunStatus.COMPLETED, 7)] == [(r.status, r.output) for r in results]


async def test_a_signal_committed_before_its_answer_was_lost_is_delivered_once() -> None:
    store = AnswerLost(MemoryStore())

    async def signal(client: Client, run_id: str) -> Any:
        store.lose_next_answer = True
        return await client.signal(run_id, "go", 7)

    results = await ride_out(store, signal, probes=2)
    assert [(RunStatus.COMPLETED, 7)] == [(r.status, r.output) for r in results]


async def test_a_client_update_rides_out_a_store_outage() -> None:
    store = UnreachableStore(MemoryStore())

    async def update(client: Client, run_id: str) -> Any:
        store.down = True
        return await client.update(run_id, "add", 7), await client.result(run_id)

    [(reply, result)] = await ride_out(store, update, probes=3, target=tally)
    assert (7, RunStatus.AWAITING, 7) == (reply, result.status, result.state["total"])


async def test_an_update_committed_before_its_answer_was_lost_is_delivered_once() -> None:
    store = AnswerLost(MemoryStore())

    async def update(client: Client, run_id: str) -> Any:
        store.lose_next_answer = True
        return await client.update(run_id, "add", 7), await client.result(run_id)

    [(reply, result)] = await ride_out(store, update, probes=2, target=tally)
    assert (7, RunStatus.AWAITING, 7) == (reply, result.status, result.state["total"])


async def test_a_client_cancel_rides_out_a_store_outage() -> None:
    store = UnreachableStore(MemoryStore())

    async def cancel(client: Client, run_id: str) -> Any:
        store.down = True
        return await client.cancel(run_id)

    results = await ride_out(store, cancel, probes=3)
    assert [RunStatus.CANCELLED] == [r.status for r in results]


async def test_a_client_signal_gives_up_after_its_outage_timeout() -> None:
    store = UnreachableStore(MemoryStore())
    client = Client(MemoryTransport(), store, flows=[approval], outage_timeout=0.2)
    client.store_health.backoff = FAST_PROBES
    handle = await client.start(approval)
    store.down = True
    with pytest.raises(StoreError, match=r"could not signal run .* the store stayed unreachable"):
        await client.signal(handle.run_id, "go", 7)

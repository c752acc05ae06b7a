"""Concurrency limits, ``@node(concurrency=flowkit.Limit(max=N, key="arg"))``, and rate
limits, ``@node(rate="10/s", key="arg")``.

The in-memory Runtime (asyncio and trio) and Workers in this process on a
MemoryTransport with a SQLiteStore, a MemoryStore or a PostgresStore (the real
server on loopback, a fresh schema per test). Every node records when it starts
and ends; the nodes of a test hold at a gate until each key has ``max`` running,
so a limit that lets one more through is seen, and a key that waited for another
would never fill.
"""

from __future__ import annotations

import contextvars
import os
import uuid
from collections import Counter
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Any

import anyio
import anyio.lowlevel
import pytest
from rates import granted_at, most_beyond_rate

import flowkit
from flowkit import ConfigurationError, Limit, RunStatus, flow, node
from flowkit.stores import MemoryStore, SQLiteStore
from flowkit.transports import MemoryTransport

if TYPE_CHECKING:
    from collections.abc import AsyncIterator
    from pathlib import Path

pytestmark = pytest.mark.anyio

PG_DSN = os.environ.get("FLOWKIT_TEST_POSTGRES", "postgresql://postgres@127.0.0.1:5432/test")
BOUND = 30.0
ITEMS = ["a"] * 5 + ["b"] * 3  # key a: 5 executions, key b: 3


class Recorder:
    """Executions running per key, the most seen at once, and a gate that holds them
    until every key in ``full_at`` has that many running."""

    def __init__(self) -> None:
        self.reset({})

    def reset(self, full_at: dict[str, int], *, open_when_full: bool = True) -> None:
        self.full_at = full_at
        self.open_when_full = open_when_full
        self.live: Counter[str] = Counter()
        self.peak: Counter[str] = Counter()
        self.finished = 0
        self.full = anyio.Event()
        self.gate = anyio.Event()

    async def run(self, key: str) -> str:
        self.live[key] += 1
        self.peak[key] = max(self.peak[key], self.live[key])
        if all(self.live[k] >= n for k, n in self.full_at.items()):
            self.full.set()
            if self.open_when_full:
                self.gate.set()
        try:
            await self.gate.wait()
            await anyio.lowlevel.checkpoint()  # let a node past the limit start, if one could
        finally:
            self.live[key] -= 1
            self.finished += 1
        return key


recorder = Recorder()


@node(concurrency=Limit(max=2, key="account"))
async def charge(account: str) -> str:
    return await recorder.run(account)


@node(concurrency=Limit(max=1))
async def report(account: str) -> str:
    return await recorder.run(account)


@flow
async def charge_all(accounts: list[str]) -> list[str]:
    return await flow.map(charge, accounts, concurrency=50)


@flow
async def report_all(accounts: list[str]) -> list[str]:
    return await flow.map(report, accounts, concurrency=50)


@pytest.fixture(params=["asyncio", "trio"])
def anyio_backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


class TestRuntime:
    """The in-memory Runtime runs at most ``max`` executions per key value at once."""

    async def test_at_most_max_per_key_and_keys_apart(self) -> None:
        recorder.reset({"a": 2, "b": 2})
        with anyio.fail_after(BOUND):
            async with flowkit.Runtime() as rt:
                result = await rt.run(charge_all, accounts=ITEMS)
        assert (RunStatus.COMPLETED, ITEMS) == (result.status, result.output)
        assert {"a": 2, "b": 2} == dict(recorder.peak)

    async def test_no_key_is_one_pool(self) -> None:
        recorder.reset({})
        with anyio.fail_after(BOUND):
            async with flowkit.Runtime() as rt:
                result = await rt.run(report_all, accounts=["a", "b", "c"])
        assert RunStatus.COMPLETED == result.status
        assert all(recorder.peak[k] <= 1 for k in "abc")
        assert 3 == recorder.finished

    async def test_the_key_may_be_passed_by_keyword(self) -> None:
        @flow
        async def by_keyword() -> list[str]:
            first = await charge(account="a")
            second = await charge(account="b")
            return [first, second]

        recorder.reset({})
        async with flowkit.Runtime() as rt:
            result = await rt.run(by_keyword)
        assert ["a", "b"] == result.output


class TestBadLimits:
    """A limit that cannot work is refused where it is declared."""

    @pytest.mark.parametrize("size", [0, -1, True, 1.5, "2"])
    def test_max_is_a_whole_number_of_one_or_more(self, size: Any) -> None:
        with pytest.raises(ConfigurationError, match=r"Limit\(max=...\)"):
            Limit(max=size)

    def test_key_names_an_argument(self) -> None:
        with pytest.raises(ConfigurationError, match="has no argument 'acount'") as caught:

            @node(concurrency=Limit(max=2, key="acount"))
            async def pay(account: str) -> None: ...

        assert "test_limits.py" in str(caught.value), "where the decorator was written"

    def test_concurrency_takes_a_limit(self) -> None:
        with pytest.raises(ConfigurationError, match=r"flowkit\.Limit"):

            @node(concurrency=2)  # type: ignore[call-overload]
            async def pay(account: str) -> None: ...


@asynccontextmanager
async def _store(kind: str, tmp_path: Path) -> AsyncIterator[Any]:
    if kind == "memory":
        yield MemoryStore()
        return
    if kind == "sqlite":
        store: Any = SQLiteStore(tmp_path / "runs.db")
        try:
            yield store
        finally:
            await store.close()
        return
    import psycopg
    from psycopg import sql

    from flowkit.stores import PostgresStore

    name = f"fk_limits_{uuid.uuid4().hex[:12]}"
    store = PostgresStore(PG_DSN, schema=name)
    try:
        yield store
    finally:
        await store.close()
        async with await psycopg.AsyncConnection.connect(PG_DSN, autocommit=True) as conn:
            await conn.execute(
                sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(name))
            )


async def _on_workers(store: Any, target: Any, workers: int, **inputs: Any) -> Any:
    transport = MemoryTransport()
    pool = [
        flowkit.Worker([target], transport, store, lease=5.0, poll_interval=0.05)
        for _ in range(workers)
    ]
    client = flowkit.Client(transport, store, flows=[target])
    with anyio.fail_after(BOUND):
        async with anyio.create_task_group() as tg:
            for worker in pool:
                await tg.start(worker.run)
            result = await client.run(target, **inputs)
            tg.cancel_scope.cancel()
    return result, pool


def record_granted_slots(store: Any) -> set[str]:
    """The holders ``store`` grants a slot to (by ``acquire_slots`` or ``acquire_slot``)."""
    granted: set[str] = set()
    acquire_slots, acquire_slot = store.acquire_slots, store.acquire_slot

    async def recorded_slots(limit_id: str, key: str, holders: Any, **options: Any) -> int:
        taken = int(await acquire_slots(limit_id, key, holders, **options))
        granted.update(holders[:taken])
        return taken

    async def recorded_slot(limit_id: str, key: str, holder: str, **options: Any) -> bool:
        taken = bool(await acquire_slot(limit_id, key, holder, **options))
        if taken:
            granted.add(holder)
        return taken

    store.acquire_slots, store.acquire_slot = recorded_slots, recorded_slot
    return granted


class TestWorkers:
    """Workers sharing a store run at most ``max`` executions per key value at once,
    across workers; the slots are all given back."""

    @pytest.mark.parametrize(
        ("kind", "anyio_backend"),
        [
            ("memory", "asyncio"),
            ("sqlite", "asyncio"),
            ("sqlite", "trio"),
            pytest.param("postgres", "asyncio", marks=pytest.mark.asyncio_only),
        ],
    )
    async def test_at_most_max_per_key_across_workers(self, kind: str, tmp_path: Path) -> None:
        recorder.reset({"a": 2, "b": 2})
        async with _store(kind, tmp_path) as store:
            result, pool = await _on_workers(store, charge_all, 2, accounts=ITEMS)
            assert (RunStatus.COMPLETED, ITEMS) == (result.status, result.output)
            assert {"a": 2, "b": 2} == dict(recorder.peak)
            for key in ("a", "b"):  # every slot was given back
                assert await store.acquire_slot(
                    charge.registry_name, key, "x", max=1, now=0.0, expires_at=1.0
                )
            assert sum(w.slots.round_trips for w in pool) > 0  # counted, for the benchmark

    @pytest.mark.parametrize(
        ("kind", "anyio_backend"),
        [
            ("memory", "asyncio"),
            ("sqlite", "trio"),
            pytest.param("postgres", "asyncio", marks=pytest.mark.asyncio_only),
        ],
    )
    async def test_a_worker_reuses_its_slots(self, kind: str, tmp_path: Path) -> None:
        """A slot given back goes to the worker's next execution of its pool, not back to
        the store: twelve executions, two at a time, are granted far fewer new slots (the
        store's grants are counted, not its calls: how often a waiter asked the store in
        vain depends on the machine's speed)."""
        recorder.reset({"a": 2})
        accounts = ["a"] * 12
        async with _store(kind, tmp_path) as store:
            granted = record_granted_slots(store)
            result, _ = await _on_workers(store, charge_all, 1, accounts=accounts)
            assert (RunStatus.COMPLETED, accounts) == (result.status, result.output)
            assert 2 == recorder.peak["a"]
            assert len(granted) <= len(accounts) / 2, granted
            assert (
                await store.acquire_slots(  # every slot was given back
                    charge.registry_name, "a", ["x", "y"], max=2, now=0.0, expires_at=1.0
                )
                == 2
            )

    async def test_a_drained_worker_hands_waiting_nodes_back(self) -> None:
        recorder.reset({"a": 2}, open_when_full=False)  # the two running hold their slots
        transport, store = MemoryTransport(), MemoryStore()
        worker = flowkit.Worker([charge_all], transport, store, poll_interval=0.05)
        client = flowkit.Client(transport, store, flows=[charge_all])
        with anyio.fail_after(BOUND):
            async with anyio.create_task_group() as tg:
                await tg.start(worker.run)
                handle = await client.start(charge_all, accounts=["a"] * 4)
                await recorder.full.wait()
                worker.stop()  # the other two wait for a slot, or were never taken
                recorder.gate.set()  # the two running finish; run() returns
            assert 2 == worker.processed
            assert 2 == recorder.peak["a"]
            info = await store.info(handle.run_id)
            assert info is not None
            assert "running" == info.status, "its other two nodes went back to the broker"


# -- rate limits ---------------------------------------------------------------------------
RATE = 10.0  # starts a second, per tenant
# the buckets' decisions, as (key value, when the token was granted): what the limiter
# guarantees is about these, not about when a node then ran (a node may start late
# after its token, and so seem closer to the next one)
grants: list[tuple[str, float]] = []
_taking: contextvars.ContextVar[str] = contextvars.ContextVar("taking", default="")


@node(rate="10/s", key="tenant")
async def sync(tenant: str) -> str:
    return tenant


@flow
async def sync_all(tenants: list[str]) -> list[str]:
    return await flow.map(sync, tenants, concurrency=50)


def record_store_grants(store: Any) -> None:
    """Record the tokens granted by every answer of ``store.reserve_tokens`` in
    :data:`grants`."""
    reserve_tokens = store.reserve_tokens

    async def recording(
        limit_id: str, key: str, *, count: int, rate: float, capacity: float, now: float
    ) -> float:
        level = await reserve_tokens(
            limit_id, key, count=count, rate=rate, capacity=capacity, now=now
        )
        grants.extend((key, at) for at in granted_at(now, level, count, rate))
        return level

    store.reserve_tokens = recording


def record_local_takes(monkeypatch: pytest.MonkeyPatch) -> None:
    """Record every decision of the in-process buckets (``LocalBuckets``) in :data:`takes`."""
    from flowkit.shell import _limits

    take, refill = _limits.LocalBuckets.take, _limits.refill

    async def taking(self: Any, bucket: Any) -> None:
        _taking.set(bucket.key)  # this task's bucket, read by refill below
        await take(self, bucket)

    def recording(tokens: Any, updated: float, *, rate: float, capacity: float, now: float) -> Any:
        left, wait = refill(tokens, updated, rate=rate, capacity=capacity, now=now)
        if wait == 0.0:
            grants.append((_taking.get(), now))
        return left, wait

    monkeypatch.setattr(_limits.LocalBuckets, "take", taking)
    monkeypatch.setattr(_limits, "refill", recording)


def check_rate(tenant: str, expected: int) -> None:
    """The tenant's bucket gave out ``expected`` tokens, in no window more than the rate
    allows there (it starts full, with one token, and gains RATE a second)."""
    times = [at for key, at in grants if key == tenant]
    assert expected == len(times), grants
    assert most_beyond_rate(times, RATE, 1.0) <= 1e-3, sorted(times)  # (float rounding)


class TestRates:
    """Starts past the rate are delayed, not failed: per key value, in every shell."""

    async def test_runtime_spaces_starts_per_key(self, monkeypatch: pytest.MonkeyPatch) -> None:
        grants.clear()
        record_local_takes(monkeypatch)
        tenants = ["a"] * 12 + ["b"] * 6
        with anyio.fail_after(BOUND):
            async with flowkit.Runtime() as rt:
                result = await rt.run(sync_all, tenants=tenants)
        assert (RunStatus.COMPLETED, tenants) == (result.status, result.output)
        check_rate("a", 12)
        check_rate("b", 6)

    @pytest.mark.parametrize(
        ("kind", "anyio_backend"),
        [
            ("sqlite", "asyncio"),
            ("sqlite", "trio"),
            pytest.param("postgres", "asyncio", marks=pytest.mark.asyncio_only),
        ],
    )
    async def test_workers_share_one_bucket(self, kind: str, tmp_path: Path) -> None:
        grants.clear()
        tenants = ["a"] * 15 + ["b"] * 5
        async with _store(kind, tmp_path) as store:
            record_store_grants(store)
            result, _ = await _on_workers(store, sync_all, 3, tenants=tenants)
        assert (RunStatus.COMPLETED, tenants) == (result.status, result.output)
        check_rate("a", 15)
        check_rate("b", 5)

    @pytest.mark.parametrize("rate", ["10", "0/s", "-1/m", "10/w", 10, "ten/s"])
    def test_a_rate_is_a_count_per_unit(self, rate: Any) -> None:
        with pytest.raises(ConfigurationError, match="rate must be"):

            @node(rate=rate)
            async def pay(account: str) -> None: ...

    def test_key_goes_with_a_rate_and_names_an_argument(self) -> None:
        with pytest.raises(ConfigurationError, match="given with rate="):

            @node(key="account")
            async def pay(account: str) -> None: ...

        with pytest.raises(ConfigurationError, match="has no argument 'tenant'"):

            @node(rate="1/s", key="tenant")
            async def refund(account: str) -> None: ...


class TestSimulate:
    """``simulate()`` runs limited nodes without applying their limits (documented)."""

    def test_limited_nodes_run_in_a_simulation(self) -> None:
        from flowkit.testing import simulate

        recorder.reset({})
        assert ["a", "a", "b"] == simulate(charge_all, accounts=["a", "a", "b"]).output
        assert ["a", "a"] == simulate(sync_all, tenants=["a", "a"]).output

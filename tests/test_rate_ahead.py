"""Tokens a worker reserves ahead of its nodes of a rate-limited bucket: a burst makes
few store calls, a throttling bucket is never reserved ahead from, and a token unused
for its keep time is dropped, not handed out.

A worker's ``Slots`` on a MemoryStore, a SQLiteStore, and the real PostgreSQL and
Redis servers on loopback (a schema or key prefix of their own), on virtual time (the
clock ``flowkit`` reads, stepped by the tests); and a burst through a Worker on real
time.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

import anyio
import pytest

import flowkit
from flowkit import RunStatus, flow, node
from flowkit._clock import use_clock
from flowkit.shell._limits import Bucket
from flowkit.stores import MemoryStore
from flowkit.transports import MemoryTransport
from flowkit.worker._slots import AHEAD, KEEP, Slots
from tests.test_flow_limits import _store

if TYPE_CHECKING:
    from pathlib import Path

pytestmark = pytest.mark.anyio

BOUND = 30.0
STORES = [
    ("memory", "asyncio"),
    ("memory", "trio"),
    ("sqlite", "asyncio"),
    ("sqlite", "trio"),
    pytest.param("postgres", "asyncio", marks=pytest.mark.asyncio_only),
    pytest.param("redis", "asyncio", marks=pytest.mark.asyncio_only),
]


class Clock:
    """The time flowkit reads, moved by hand."""

    def __init__(self) -> None:
        self.now = time.time()

    def __call__(self) -> float:
        return self.now


def record_reservations(store: Any) -> list[tuple[int, float]]:
    """Every ``store.reserve_tokens`` call from now on, as (tokens asked, level)."""
    calls: list[tuple[int, float]] = []
    reserve_tokens = store.reserve_tokens

    async def recording(limit_id: str, key: str, *, count: int, **options: Any) -> float:
        level = float(await reserve_tokens(limit_id, key, count=count, **options))
        calls.append((count, level))
        return level

    store.reserve_tokens = recording
    return calls


class TestAhead:
    @pytest.mark.parametrize(("kind", "anyio_backend"), STORES)
    async def test_a_burst_makes_few_store_calls(self, kind: str, tmp_path: Path) -> None:
        """Forty takes a millisecond apart at a high rate: the tokens reserved ahead grow
        with the demand, so a handful of calls serve them all."""
        bucket, clock = Bucket("burst", "", 1_000_000.0), Clock()
        async with _store(kind, tmp_path) as store:
            slots = Slots(store, lease=5.0)
            calls = record_reservations(store)
            with use_clock(clock), anyio.fail_after(BOUND):
                for _ in range(40):
                    await slots.take_token(bucket)
                    clock.now += 0.001
        assert slots.round_trips == len(calls) <= 6, calls
        assert 40 <= sum(count for count, _ in calls) <= 40 + AHEAD  # all from the store

    @pytest.mark.parametrize(("kind", "anyio_backend"), STORES)
    async def test_a_throttling_bucket_is_never_reserved_ahead(
        self, kind: str, tmp_path: Path
    ) -> None:
        """Another worker owes the bucket a hundred tokens, and this one asks twice as
        fast as the rate: the bucket is never full, so every call asks for one token."""
        bucket, clock = Bucket("throttled", "", 100_000.0), Clock()
        async with _store(kind, tmp_path) as store:
            await store.reserve_tokens(
                "throttled", "", count=100, rate=bucket.rate, capacity=1.0, now=clock.now
            )
            slots = Slots(store, lease=5.0)
            calls = record_reservations(store)
            with use_clock(clock), anyio.fail_after(BOUND):
                for _ in range(30):
                    await slots.take_token(bucket)
                    clock.now += 0.5 / bucket.rate
        assert [1] * 30 == [count for count, _ in calls]
        assert all(level < 1.0 for _, level in calls), calls

    @pytest.mark.parametrize(("kind", "anyio_backend"), STORES)
    async def test_tokens_unused_for_their_keep_time_are_dropped(
        self, kind: str, tmp_path: Path
    ) -> None:
        bucket, clock = Bucket("dropped", "", 1_000_000.0), Clock()
        async with _store(kind, tmp_path) as store:
            slots = Slots(store, lease=5.0)
            calls = record_reservations(store)
            with use_clock(clock), anyio.fail_after(BOUND):
                while not calls or calls[-1][0] == 1:  # until tokens are held ahead
                    await slots.take_token(bucket)
                    clock.now += 0.001
                held, made = calls[-1][0] - 1, len(calls)
                await slots.take_token(bucket)  # one of them: no store call
                assert made == len(calls)
                clock.now += KEEP + 0.001
                await slots.take_token(bucket)
        assert held >= 2
        assert (1, 1.0) == calls[-1], "the others were dropped: a new token, none ahead"

    @pytest.mark.parametrize("anyio_backend", ["asyncio", "trio"])
    async def test_a_token_its_cancelled_node_did_not_use_goes_to_the_next(self) -> None:
        """A node cancelled while it waits for its token leaves it to the next node here
        (the bucket owes it all the same)."""
        bucket, clock, store = Bucket("hourly", "", 1 / 3600), Clock(), MemoryStore()
        slots = Slots(store, lease=5.0)
        with use_clock(clock), anyio.fail_after(BOUND):
            await slots.take_token(bucket)  # the bucket's one token: the next is an hour off
            for _ in range(2):
                async with anyio.create_task_group() as tg:
                    tg.start_soon(slots.take_token, bucket)
                    await anyio.wait_all_tasks_blocked()
                    tg.cancel_scope.cancel()
        assert 2 == slots.round_trips, "the second waiter had the first one's token"


@node(rate="1000000/s")
async def rated(n: int) -> int:
    return n


@flow
async def fan_rated(items: list[int]) -> list[int]:
    return await flow.map(rated, items, concurrency=20)


class TestWorker:
    @pytest.mark.parametrize(("kind", "anyio_backend"), STORES)
    async def test_a_burst_on_a_worker_makes_few_store_calls(
        self, kind: str, tmp_path: Path
    ) -> None:
        items = list(range(60))
        async with _store(kind, tmp_path) as store:
            calls = record_reservations(store)
            transport = MemoryTransport()
            worker = flowkit.Worker([fan_rated], transport, store, lease=5.0, poll_interval=0.05)
            client = flowkit.Client(transport, store, flows=[fan_rated])
            with anyio.fail_after(BOUND):
                async with anyio.create_task_group() as tg:
                    await tg.start(worker.run)
                    result = await client.run(fan_rated, items=items)
                    tg.cancel_scope.cancel()
        assert (RunStatus.COMPLETED, items) == (result.status, result.output)
        assert worker.slots.round_trips == len(calls) <= len(items) / 2, calls
        assert sum(count for count, _ in calls) >= len(items)

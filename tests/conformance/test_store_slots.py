"""Concurrency slots and rate-limit buckets in the ``Store`` conformance suite: slots
acquired up to the pool's size, renewed, extended, released (one or several) and
expired; buckets taken from, reserved from ahead of time, and refilled; on every store.

The same stores, servers and fixtures as ``test_store_index`` (MemoryStore and
SQLiteStore on asyncio and trio, PostgresStore and RedisStore against the real
servers on loopback); two stores opened on one database stand for two processes.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import anyio
import pytest

from . import test_store_index as index

if TYPE_CHECKING:
    from flowkit.stores import Store

    from .test_store import Database

anyio_backend, case, db, store = index.anyio_backend, index.case, index.db, index.store

pytestmark = pytest.mark.anyio

NOW = 1_000.0


async def take(store: Store, holder: str, *, key: str = "acct-1", now: float = NOW) -> bool:
    return await store.acquire_slot("shop.charge", key, holder, max=2, now=now, expires_at=now + 30)


class TestSlots:
    """A pool hands out at most ``max`` unexpired slots; a slot is renewable, extendable,
    releasable, and frees itself when it expires."""

    async def test_at_most_max_holders(self, store: Store) -> None:
        assert await take(store, "a")
        assert await take(store, "b")
        assert not await take(store, "c")

    async def test_a_holder_renews_its_own_slot(self, store: Store) -> None:
        assert await take(store, "a")
        assert await take(store, "b")
        assert await take(store, "a"), "already held: renewed, not refused"

    async def test_keys_are_separate_pools(self, store: Store) -> None:
        assert await take(store, "a")
        assert await take(store, "b")
        assert await take(store, "c", key="acct-2")
        assert not await take(store, "d", key="acct-1")
        assert not await store.acquire_slot(
            "shop.charge", "acct-1", "d", max=2, now=NOW, expires_at=NOW + 30
        )
        assert await store.acquire_slot(
            "shop.refund", "acct-1", "d", max=2, now=NOW, expires_at=NOW + 30
        ), "another limit id: another pool"

    async def test_release_frees_a_slot(self, store: Store) -> None:
        assert await take(store, "a")
        assert await take(store, "b")
        await store.release_slot("shop.charge", "acct-1", "a")
        await store.release_slot("shop.charge", "acct-1", "nobody")  # nothing to release
        assert await take(store, "c")
        assert not await take(store, "d")

    async def test_release_slots_frees_several_in_one_call(self, store: Store) -> None:
        assert await take(store, "a")
        assert await take(store, "b")
        await store.release_slots("shop.charge", "acct-1", ["a", "b", "nobody"])
        await store.release_slots("shop.charge", "acct-1", [])
        assert await take(store, "c")
        assert await take(store, "d")
        assert not await take(store, "e")

    async def test_acquire_slots_takes_the_first_that_fit(self, store: Store) -> None:
        assert await take(store, "a")
        args = {"max": 3, "now": NOW, "expires_at": NOW + 30}
        assert 2 == await store.acquire_slots("shop.charge", "acct-1", ["b", "c", "d"], **args)
        assert 0 == await store.acquire_slots("shop.charge", "acct-1", ["d"], **args)
        assert 1 == await store.acquire_slots("shop.charge", "acct-1", ["c", "d"], **args), (
            "c renewed, d refused"
        )
        assert 3 == await store.acquire_slots("shop.charge", "acct-2", ["b", "c", "d"], **args)

    async def test_an_expired_slot_is_taken_over(self, store: Store) -> None:
        assert await take(store, "a")
        assert await take(store, "b", now=NOW + 10)
        assert not await take(store, "c", now=NOW + 29)
        assert await take(store, "c", now=NOW + 30), "a's slot expired at NOW + 30"
        assert not await store.extend_slot("shop.charge", "acct-1", "a", NOW + 100)

    async def test_extend_keeps_a_slot_from_expiring(self, store: Store) -> None:
        assert await take(store, "a")
        assert await take(store, "b")
        assert await store.extend_slot("shop.charge", "acct-1", "a", NOW + 100)
        assert not await store.extend_slot("shop.charge", "acct-1", "c", NOW + 100)
        assert await take(store, "c", now=NOW + 50), "b expired at NOW + 30"
        assert not await take(store, "d", now=NOW + 50), "a was extended to NOW + 100"

    async def test_concurrent_acquirers_never_exceed_max(self, db: Database, store: Store) -> None:
        stores = [store, db.open(), db.open(), db.open(), db.open()]
        won: list[int] = []

        async def acquire(n: int) -> None:
            if await take(stores[n], f"holder-{n}"):
                won.append(n)

        async with anyio.create_task_group() as tg:
            for n in range(len(stores)):
                tg.start_soon(acquire, n)
        assert 2 == len(won)


class TestSlotListings:
    """A pool lists its holders by expiry, then holder; pools list by limit id prefix
    (the queues and slots of ``@flow(concurrency=...)`` are read this way)."""

    async def test_holders_by_expiry_then_holder(self, store: Store) -> None:
        for holder, expires in (("c", 5.0), ("b", 9.0), ("a", 9.0), ("d", 1.0)):
            assert await store.acquire_slot(
                "queue:flow:f", "k", holder, max=10, now=0.0, expires_at=expires
            )
        assert ["d", "c", "a", "b"] == await store.slot_holders("queue:flow:f", "k")
        await store.release_slot("queue:flow:f", "k", "c")
        assert ["d", "a", "b"] == await store.slot_holders("queue:flow:f", "k")
        assert [] == await store.slot_holders("queue:flow:f", "other")

    async def test_pools_by_prefix(self, store: Store) -> None:
        for limit_id, key in (("queue:flow:f", "k2"), ("queue:flow:f", "k1"), ("flow:f", "k1")):
            assert await store.acquire_slot(limit_id, key, "h", max=1, now=0.0, expires_at=NOW)
        assert await take(store, "a")
        expected = [("queue:flow:f", "k1"), ("queue:flow:f", "k2")]
        assert expected == await store.slot_pools("queue:flow:")
        assert [("flow:f", "k1")] == await store.slot_pools("flow:")
        await store.release_slot("queue:flow:f", "k1", "h")
        assert [("queue:flow:f", "k2")] == await store.slot_pools("queue:")
        assert [] == await store.slot_pools("queue:[")  # glob characters match themselves


async def token(store: Store, *, now: float, key: str = "tenant-1") -> float:
    return await store.take_token("shop.sync", key, rate=2.0, capacity=3.0, now=now)


class TestBuckets:
    """A token bucket starts full, gives a token while it has one, and refills at its
    rate up to its capacity; a refused take says how long until the next token."""

    async def test_a_full_bucket_then_the_wait(self, store: Store) -> None:
        assert [0.0, 0.0, 0.0] == [await token(store, now=NOW) for _ in range(3)]
        assert 0.5 == pytest.approx(await token(store, now=NOW)), "2 a second: 0.5 s"
        assert 0.25 == pytest.approx(await token(store, now=NOW + 0.25)), "half refilled"
        assert 0.0 == await token(store, now=NOW + 0.5)
        assert 0.5 == pytest.approx(await token(store, now=NOW + 0.5))

    async def test_refills_up_to_capacity_and_keys_apart(self, store: Store) -> None:
        assert 0.0 == await token(store, now=NOW)
        assert [0.0, 0.0, 0.0] == [await token(store, now=NOW + 100) for _ in range(3)]
        assert 0.0 < await token(store, now=NOW + 100), "capacity 3: no fourth"
        assert 0.0 == await token(store, now=NOW + 100, key="tenant-2")

    async def test_concurrent_takers_share_one_bucket(self, db: Database, store: Store) -> None:
        stores = [store, db.open(), db.open(), db.open(), db.open()]
        waits: list[float] = []

        async def take(n: int) -> None:
            waits.append(await token(stores[n], now=NOW))

        async with anyio.create_task_group() as tg:
            for n in range(len(stores)):
                tg.start_soon(take, n)
        assert 3 == waits.count(0.0)


async def reserve(store: Store, count: int, *, now: float, key: str = "tenant-1") -> float:
    return await store.reserve_tokens(
        "shop.sync", key, count=count, rate=2.0, capacity=3.0, now=now
    )


class TestReservations:
    """Reserved tokens are taken even from an empty bucket, which then owes them: its
    level says when each is due, and it grants no new token before it has refilled."""

    async def test_a_full_bucket_then_owed_tokens(self, store: Store) -> None:
        assert 3.0 == pytest.approx(await reserve(store, 2, now=NOW)), "starts full"
        assert 1.0 == pytest.approx(await reserve(store, 3, now=NOW)), "one now, two owed"
        # owes two: the next token is due (1 - -2) / 2 = 1.5 s later
        assert -2.0 == pytest.approx(await reserve(store, 1, now=NOW))
        assert -1.0 == pytest.approx(await reserve(store, 1, now=NOW + 1.0)), "refilled 2"
        assert 0.0 == await token(store, now=NOW + 10), "take_token sees it refilled"

    async def test_refills_up_to_capacity_and_keys_apart(self, store: Store) -> None:
        assert 3.0 == pytest.approx(await reserve(store, 1, now=NOW))
        assert 3.0 == pytest.approx(await reserve(store, 1, now=NOW + 100)), "capacity 3"
        assert 3.0 == pytest.approx(await reserve(store, 5, now=NOW, key="tenant-2"))

    async def test_an_earlier_clock_counts_back(self, store: Store) -> None:
        """A caller whose clock is behind the last one's is due its tokens as late as if
        it had asked then: the bucket never grants faster than its rate."""
        assert 3.0 == pytest.approx(await reserve(store, 3, now=NOW + 1.0))
        assert -2.0 == pytest.approx(await reserve(store, 1, now=NOW)), "due at NOW + 1.5"

    async def test_concurrent_reservations_never_overlap(self, db: Database, store: Store) -> None:
        stores = [store, db.open(), db.open(), db.open(), db.open()]
        levels: list[float] = []

        async def ask(n: int) -> None:
            levels.append(await reserve(stores[n], 2, now=NOW))

        async with anyio.create_task_group() as tg:
            for n in range(len(stores)):
                tg.start_soon(ask, n)
        assert [3.0, 1.0, -1.0, -3.0, -5.0] == pytest.approx(sorted(levels, reverse=True))

"""``simulate(..., faults=...)`` checks its invariant on stores that commit optimistically.

PostgresStore and RedisStore offer ``attempt(run_id, version)``
(:class:`~flowkit.stores._protocol.CommitsOptimistically`): a worker whose copy
of a run is current commits its transition through an attempt, not a locked
transaction. The simulation's ledger (no dispatch created or settled twice)
must see those commits as well: a store whose attempts apply a transition
twice is caught with its seed, an attempt that conflicts records nothing, and
the real stores pass under faults.

Talks to the real PostgreSQL and Redis on loopback (``FLOWKIT_TEST_POSTGRES`` /
``FLOWKIT_TEST_REDIS`` override the addresses). Every store gets a fresh
PostgreSQL schema or Redis key prefix, removed after (the simulation reads the
store's timer and lease indexes whole, so no two runs share one). psycopg's and
redis-py's async clients are asyncio-only, so these tests run on asyncio alone
(marked ``asyncio_only``), as the store conformance suite does.
"""

from __future__ import annotations

import os
import uuid
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Any

import pytest

from flowkit import Flow, RunStatus
from flowkit.core._state import DELETED, RunState
from flowkit.stores._protocol import CommitsOptimistically, Conflict
from flowkit.testing import Faults, simulate_async
from flowkit.testing._faults import RecordingStore, _Ledger

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

PG_DSN = os.environ.get("FLOWKIT_TEST_POSTGRES", "postgresql://postgres@127.0.0.1:5432/test")
REDIS_URL = os.environ.get("FLOWKIT_TEST_REDIS", "redis://127.0.0.1:6379/0")

pytestmark = [pytest.mark.anyio, pytest.mark.asyncio_only]

FAULTS = Faults(crash=0.3, redeliver=0.3, duplicate=0.3, reorder=True, delay=0.2)
SEEDS = range(8)


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture(params=["postgres", "redis"])
def kind(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@asynccontextmanager
async def fresh_store(kind: str) -> AsyncIterator[Any]:
    """A store of ``kind`` in a schema or key prefix of its own, removed after."""
    name = f"fk_test_{uuid.uuid4().hex[:12]}"
    if kind == "postgres":
        from flowkit.stores import PostgresStore

        store: Any = PostgresStore(PG_DSN, schema=name)
    else:
        from flowkit.stores import RedisStore

        store = RedisStore(REDIS_URL, prefix=name)
    try:
        yield store
    finally:
        await store.close()
        await _drop(kind, name)


async def _drop(kind: str, name: str) -> None:
    if kind == "postgres":
        import psycopg
        from psycopg import sql

        async with await psycopg.AsyncConnection.connect(PG_DSN, autocommit=True) as conn:
            await conn.execute(
                sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(name))
            )
    else:
        import redis.asyncio

        client = redis.asyncio.Redis.from_url(REDIS_URL)
        try:
            keys = [key async for key in client.scan_iter(f"{name}:*")]
            if keys:
                await client.delete(*keys)
        finally:
            await client.aclose()


# -- the flow ------------------------------------------------------------------------
async def start(n: int) -> int:
    return n


async def inc(x: int) -> int:
    return x + 1


async def double(x: int) -> int:
    return x * 2


async def add(values: dict[str, int]) -> int:
    return sum(values.values())


async def total(values: list[int]) -> int:
    return sum(values)


def pipeline() -> Flow:
    """start -> (a, b) -> join -> sleep a day -> batch -> total: 12 for n=3, items=[1, 2, 3]."""
    return (
        Flow("optimistic")
        .node("start", start)
        .node("a", inc)
        .node("b", double)
        .node("join", add, join="all")
        .sleep("nap", duration="1d")
        .batch("each", double, items="$input.items", concurrency=2)
        .node("total", total)
        .edge("start", "a")
        .edge("start", "b")
        .edge("a", "join")
        .edge("b", "join")
        .edge("join", "nap")
        .edge("nap", "each")
        .edge("each", "total")
    )


async def run(store: Any, seed: int) -> Any:
    return await simulate_async(
        pipeline(), n=3, items=[1, 2, 3], workers=3, faults=FAULTS, seed=seed, store=store
    )


# -- stores around the real one --------------------------------------------------------
class Counted:
    """The real store, counting the transitions its attempts commit."""

    def __init__(self, inner: Any) -> None:
        self._inner = inner
        self.attempted = 0

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)

    def attempt(self, run_id: str, version: int) -> Any:
        txn = self._inner.attempt(run_id, version)
        commit = txn.commit

        async def counted(delta: Any, **options: Any) -> int:
            version = int(await commit(delta, **options))
            self.attempted += 1
            return version

        txn.commit = counted
        return txn


class RetriesBlindly(Counted):
    """A broken store: an attempt that conflicts is committed again at the run's
    current version, so a transition worked out on a stale copy (a completion
    another worker already applied, say) is applied a second time."""

    def attempt(self, run_id: str, version: int) -> Any:
        inner = self._inner
        txn = super().attempt(run_id, version)
        commit = txn.commit

        async def blind(delta: Any, **options: Any) -> int:
            try:
                return int(await commit(delta, **options))
            except Conflict:
                found = await inner.load(run_id)
                assert found is not None
                again = inner.attempt(run_id, found[1])
                txn.version = int(await again.commit(delta, **{**options, "state": None}))
                return int(txn.version)

        txn.commit = blind
        return txn


# -- tests -----------------------------------------------------------------------------
async def test_a_transition_applied_twice_by_attempts_is_caught(kind: str) -> None:
    """The ledger names the dispatch a stale copy's transition created or settled again
    (the broken store may also corrupt a run in other ways, caught otherwise)."""
    failures: list[str] = []
    for seed in SEEDS:
        async with fresh_store(kind) as real:
            store = RetriesBlindly(real)
            try:
                await run(store, seed)
            except AssertionError as exc:
                failures.append(str(exc))
            assert store.attempted, "the simulation committed nothing optimistically"
    doubles = [f for f in failures if "twice (a completion applied twice)" in f]
    assert doubles, f"no seed caught a transition applied twice: {failures}"
    assert all(f.startswith("seed ") for f in failures), failures


@pytest.mark.parametrize("seed", SEEDS)
async def test_real_store_keeps_the_invariants_under_faults(kind: str, seed: int) -> None:
    async with fresh_store(kind) as real:
        store = Counted(real)
        sim = await run(store, seed)
    assert (RunStatus.COMPLETED, 12) == (sim.status, sim.output)
    assert store.attempted > 0  # the optimistic path was taken, and checked


async def test_the_ledger_sees_each_applied_attempt_once(kind: str) -> None:
    async with fresh_store(kind) as real:
        assert isinstance(real, CommitsOptimistically)
        ledger = _Ledger(seed=0)
        store = RecordingStore(real, ledger)
        state = RunState("run-1")
        state.put("header", "status", "running")
        assert await store.create_run("run-1", state, blueprint_id="bp", digest="d1")
        dispatch = ("dispatches", "d1", {"node": "a", "act": 1, "attempt": 1})
        settle = ("dispatches", "d1", DELETED)

        assert 2 == await store.attempt("run-1", 1).commit([dispatch])
        assert ({("run-1", "d1")}, set()) == (ledger.created, ledger.settled)

        with pytest.raises(Conflict):  # behind the run: nothing written, nothing recorded
            await store.attempt("run-1", 1).commit([settle])
        assert set() == ledger.settled

        assert 3 == await store.attempt("run-1", 2).commit([settle])
        assert {("run-1", "d1")} == ledger.settled

        with pytest.raises(AssertionError, match="'d1' of run 'run-1' was created twice"):
            await store.attempt("run-1", 3).commit([dispatch])

"""The ``Store`` conformance suite: every store passes the same tests.

Parametrised over MemoryStore, SQLiteStore (a file in tmp_path), PostgresStore
and RedisStore, the last two against the real servers on loopback
(``FLOWKIT_TEST_POSTGRES`` / ``FLOWKIT_TEST_REDIS`` override the addresses).
Each test gets a fresh PostgreSQL schema or Redis key prefix, removed after.
psycopg's and redis-py's async clients are asyncio-only, so those two stores run
on asyncio alone (marked ``asyncio_only``); the others run on asyncio and trio.
"""

from __future__ import annotations

import os
import uuid
from typing import TYPE_CHECKING, Any

import anyio
import attrs
import pytest

from flowkit import StoreError
from flowkit.blueprint import Blueprint, EdgeSpec, NodeSpec
from flowkit.core import _protocol as p
from flowkit.core._machine import handle_event, start_run
from flowkit.core._program import Program
from flowkit.core._state import DELETED, RunState
from flowkit.shell._durable import QUIET_STEPS, Replica
from flowkit.stores import IndexOps, MemoryStore, RunInfo, SQLiteStore
from flowkit.stores._notices import WatchesFinished
from flowkit.stores._protocol import CatchesUp, CommitsOptimistically, Conflict

if TYPE_CHECKING:
    from collections.abc import AsyncIterator
    from pathlib import Path

    from flowkit.core._state import Delta
    from flowkit.stores import Store

PG_DSN = os.environ.get("FLOWKIT_TEST_POSTGRES", "postgresql://postgres@127.0.0.1:5432/test")
REDIS_URL = os.environ.get("FLOWKIT_TEST_REDIS", "redis://127.0.0.1:6379/0")

pytestmark = pytest.mark.anyio

CASES = [
    pytest.param(("memory", "asyncio"), id="memory-asyncio"),
    pytest.param(("memory", "trio"), id="memory-trio"),
    pytest.param(("sqlite", "asyncio"), id="sqlite-asyncio"),
    pytest.param(("sqlite", "trio"), id="sqlite-trio"),
    pytest.param(("postgres", "asyncio"), id="postgres-asyncio", marks=pytest.mark.asyncio_only),
    pytest.param(("redis", "asyncio"), id="redis-asyncio", marks=pytest.mark.asyncio_only),
]


class Database:
    """One database per test; every store opened on it shares it (two stores = two processes).

    A MemoryStore lives in one process only, so ``open`` hands back the first one.
    """

    def __init__(self, kind: str, tmp_path: Path) -> None:
        self.kind = kind
        self.tmp_path = tmp_path
        self.name = f"fk_test_{uuid.uuid4().hex[:12]}"
        self.stores: list[Store] = []

    def open(self, **options: Any) -> Store:
        if self.kind == "memory" and self.stores:
            return self.stores[0]
        store: Store = self._build(**options)
        self.stores.append(store)
        return store

    def _build(self, **options: Any) -> Any:
        if self.kind == "memory":
            return MemoryStore(**options)
        if self.kind == "sqlite":
            return SQLiteStore(self.tmp_path / "runs.db", **options)
        if self.kind == "postgres":
            from flowkit.stores import PostgresStore

            return PostgresStore(PG_DSN, schema=self.name, **options)
        from flowkit.stores import RedisStore

        return RedisStore(REDIS_URL, prefix=self.name, **options)

    async def drop(self) -> None:
        for store in self.stores:
            await store.close()
        if self.kind == "postgres":
            import psycopg
            from psycopg import sql

            async with await psycopg.AsyncConnection.connect(PG_DSN, autocommit=True) as conn:
                drop = sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE")
                await conn.execute(drop.format(sql.Identifier(self.name)))
        elif self.kind == "redis":
            import redis.asyncio

            client = redis.asyncio.Redis.from_url(REDIS_URL)
            keys = [key async for key in client.scan_iter(f"{self.name}:*")]
            if keys:
                await client.delete(*keys)
            await client.aclose()


@pytest.fixture(params=CASES)
def case(request: pytest.FixtureRequest) -> tuple[str, str]:
    return request.param  # type: ignore[no-any-return]


@pytest.fixture
def anyio_backend(case: tuple[str, str]) -> str:
    return case[1]


@pytest.fixture
async def db(case: tuple[str, str], tmp_path: Path) -> AsyncIterator[Database]:
    database = Database(case[0], tmp_path)
    yield database
    await database.drop()


@pytest.fixture
def store(db: Database) -> Store:
    return db.open()


# -- helpers -----------------------------------------------------------------------
def new_state(run_id: str, **context: Any) -> RunState:
    state = RunState(run_id)
    state.put("header", "status", "running")
    for key, value in context.items():
        state.put("context", key, value)
    return state


async def create(store: Store, run_id: str = "run-1", index: IndexOps | None = None) -> None:
    state = new_state(run_id, n=0)
    assert await store.create_run(
        run_id, state, blueprint_id="bp", digest="d1", index=index or IndexOps()
    )


async def put(store: Store, run_id: str, key: str, value: Any, **kwargs: Any) -> int:
    """One transition: ``context[key] = value`` (DELETED drops it), always offering the state."""
    async with store.transaction(run_id) as txn:
        state = await txn.load()
        assert state is not None
        if value is DELETED:
            state.drop("context", key)
        else:
            state.put("context", key, value)
        return await txn.commit(state.take_delta(), state=state, **kwargs)


async def increment(
    store: Store, run_id: str, versions: list[int] | None = None, *, timer: bool = False
) -> None:
    """Increment ``n`` from a replica loaded before the transaction (caught up inside it).

    With ``timer``, the same commit also indexes a timer ``t<n>`` due at ``n``.
    """
    loaded = await store.load(run_id)
    assert loaded is not None
    state, seen = loaded
    async with store.transaction(run_id) as txn:
        changes = await txn.changes_since(seen)
        if changes is None:
            fresh = await txn.load()
            assert fresh is not None
            state = fresh
        for delta in changes or []:
            state.apply_delta(delta)
        n = state.context["n"] + 1
        state.put("context", "n", n)
        index = IndexOps(timers=[(f"t{n}", float(n))] if timer else [])
        version = await txn.commit(state.take_delta(), index=index, state=state)
    if versions is not None:
        versions.append(version)


async def stored(store: Store, run_id: str = "run-1") -> tuple[dict[str, Any], int]:
    loaded = await store.load(run_id)
    assert loaded is not None
    return loaded[0].context, loaded[1]


# -- tests -------------------------------------------------------------------------
class TestRuns:
    """Runs are created once and read back as plain JSON data."""

    async def test_round_trip_gives_plain_data(self, store: Store) -> None:
        state = new_state("r", pair=(1, 2), nested={"k": [None, 1.5, "ünï"]}, flag=True)
        assert await store.create_run("r", state, blueprint_id="bp", digest="d1", parent="p")
        context, version = await stored(store, "r")
        assert {"pair": [1, 2], "nested": {"k": [None, 1.5, "ünï"]}, "flag": True} == context
        assert 1 == version
        assert RunInfo("r", "bp", "d1", "running", 1, "p") == await store.info("r")

    async def test_create_twice_keeps_the_first(self, store: Store) -> None:
        await create(store)
        again = new_state("run-1", n=42)
        assert not await store.create_run("run-1", again, blueprint_id="other", digest="d2")
        assert ({"n": 0}, 1) == await stored(store)
        assert RunInfo("run-1", "bp", "d1", "running", 1, None) == await store.info("run-1")

    async def test_missing_run(self, store: Store) -> None:
        assert None is await store.load("nope")
        assert None is await store.info("nope")
        async with store.transaction("nope") as txn:
            assert 0 == txn.version
            assert None is await txn.load()
            assert None is await txn.changes_since(0)
            with pytest.raises(StoreError):
                await txn.commit([("context", "n", 1)])


class TestCommit:
    """A commit writes the delta, the header and the side indexes together."""

    async def test_delta_and_index_in_one_commit(self, store: Store) -> None:
        await create(store)
        index = IndexOps(timers=[("t1", 5.0)], leases=[("d1", 7.0)])
        async with store.transaction("run-1") as txn:
            delta: Delta = [("context", "n", 1), ("timers", "t1", {"node": "a"})]
            assert 2 == await txn.commit(delta, index=index, info={"status": "awaiting"})
        assert ({"n": 1}, 2) == await stored(store)
        assert RunInfo("run-1", "bp", "d1", "awaiting", 2) == await store.info("run-1")
        assert [("run-1", "t1", 5.0)] == [attrs.astuple(t) for t in await store.due_timers(9)]
        assert [("run-1", "d1", 7.0)] == [attrs.astuple(x) for x in await store.expired_leases(9)]
        done = IndexOps(timers_done=["t1"], leases_done=["d1"])
        async with store.transaction("run-1") as txn:
            await txn.commit([("timers", "t1", DELETED)], index=done)
        assert ([], []) == (await store.due_timers(9), await store.expired_leases(9))

    async def test_duplicate_completion_is_a_no_op(self, store: Store) -> None:
        blueprint = Blueprint(
            id="two",
            nodes=(NodeSpec("a", "call", uses="work"), NodeSpec("b", "call", uses="work")),
            edges=(EdgeSpec("a", "b"),),
        )
        program = Program(blueprint, {"work": lambda value=None: value})
        state = RunState("run-1")
        first = start_run(program, state, {})
        await store.create_run("run-1", state, blueprint_id="two", digest=blueprint.digest)
        (dispatch,) = [c for c in first if isinstance(c, p.ExecuteNode)]
        done = p.NodeCompleted(dispatch.dispatch_id, output=1)

        async def step() -> tuple[list[p.Command], Delta]:
            async with store.transaction("run-1") as txn:
                current = await txn.load()
                assert current is not None
                commands = handle_event(program, current, done)
                delta = current.take_delta()
                if delta:
                    await txn.commit(delta, state=current)
                return commands, delta

        commands, delta = await step()
        assert ["b"] == [c.node_id for c in commands if isinstance(c, p.ExecuteNode)]
        assert delta
        assert ([], []) == await step()
        assert RunInfo("run-1", "two", blueprint.digest, "running", 2) == await store.info("run-1")


class TestFinishedNotices:
    """Stores that push announce each run that reaches a final status, once it is durable.

    MemoryStore, PostgresStore (LISTEN/NOTIFY) and RedisStore (pub/sub) push;
    SQLiteStore does not (its readers poll), which is checked too.
    """

    async def test_announced_after_the_final_commit(self, db: Database) -> None:
        writer, reader = db.open(), db.open()  # two processes, for the persistent stores
        if db.kind == "sqlite":
            assert not isinstance(reader, WatchesFinished)
            return
        assert isinstance(reader, WatchesFinished)
        for run_id in ("run-1", "run-2"):
            await create(writer, run_id)
        async with reader.watch_finished() as notices:
            await put(writer, "run-1", "n", 1, info={"status": "awaiting"})  # not final
            async with writer.transaction("run-2") as txn:
                await txn.commit([("context", "n", 2)], info={"status": "completed"})
            with anyio.fail_after(10):
                announced = await anext(notices)
            info = await reader.info(announced)  # the final status is readable by then
            async with writer.transaction("run-1") as txn:
                await txn.commit([("context", "n", 3)], info={"status": "failed"})
            with anyio.fail_after(10):
                second = await anext(notices)
        assert ("run-2", "completed") == (announced, info and info.status)
        assert "run-1" == second


class TestConcurrency:
    """A run's transitions are serialised: concurrent tasks and stores lose no update."""

    async def test_many_tasks_on_one_run(self, db: Database) -> None:
        store = db.open(snapshot_every=8)
        await create(store)
        versions: list[int] = []
        async with anyio.create_task_group() as tg:
            for _ in range(50):
                tg.start_soon(increment, store, "run-1", versions)
        assert ({"n": 50}, 51) == await stored(store)
        assert list(range(2, 52)) == sorted(versions)

    async def test_two_stores_on_one_database(self, db: Database) -> None:
        first, second = db.open(snapshot_every=8), db.open(snapshot_every=8)
        await create(first)
        versions: list[int] = []
        async with anyio.create_task_group() as tg:
            for i in range(40):
                tg.start_soon(increment, (first, second)[i % 2], "run-1", versions)
        assert ({"n": 40}, 41) == await stored(second)
        assert list(range(2, 42)) == sorted(versions)

    async def test_one_winner_per_timer(self, db: Database) -> None:
        stores = (db.open(), db.open())
        await create(stores[0], index=IndexOps(timers=[("t", 1.0)]))
        wins: list[bool] = []

        async def claim(store: Store) -> None:
            wins.append(await store.claim_timer("run-1", "t"))

        async with anyio.create_task_group() as tg:
            for i in range(20):
                tg.start_soon(claim, stores[i % 2])
        assert (1, 20) == (wins.count(True), len(wins))
        assert [] == await stores[1].due_timers(2.0)


class TestOptimisticCommits:
    """A store that offers ``attempt`` commits at a version without the lock, and refuses
    (``Conflict``, nothing written) once the run moved on or is held; Replicas use it
    when their copy is current, fall back to the lock when not, and lose no update."""

    async def test_attempt_at_the_current_version(self, store: Store) -> None:
        if not isinstance(store, CommitsOptimistically):
            pytest.skip(f"{type(store).__name__} always takes the lock")
        await create(store)
        txn = store.attempt("run-1", 1)
        assert 2 == await txn.commit([("context", "n", 1)], index=IndexOps(timers=[("t", 3.0)]))
        assert ({"n": 1}, 2) == await stored(store)
        assert ["t"] == [t.timer_id for t in await store.due_timers(9)]

    async def test_attempt_behind_or_while_held_conflicts(self, store: Store) -> None:
        if not isinstance(store, CommitsOptimistically):
            pytest.skip(f"{type(store).__name__} always takes the lock")
        await create(store)
        await put(store, "run-1", "n", 1)
        with pytest.raises(Conflict, match="another transaction changed it"):
            await store.attempt("run-1", 1).commit([("context", "n", 99)])
        async with store.transaction("run-1") as held:
            with pytest.raises(Conflict, match="another transaction holds it"):
                await store.attempt("run-1", 2).commit([("context", "n", 99)])
            assert 3 == await held.commit([("context", "n", 2)])
        assert ({"n": 2}, 3) == await stored(store)

    async def test_attempts_snapshot_index_and_announce(self, db: Database) -> None:
        store, reader = db.open(snapshot_every=3), db.open()
        if not isinstance(store, CommitsOptimistically):
            pytest.skip(f"{type(store).__name__} always takes the lock")
        assert isinstance(reader, WatchesFinished)
        await create(store, index=IndexOps(timers=[("t0", 0.0)]))
        state = new_state("run-1", n=0)
        async with reader.watch_finished() as notices:
            for n in range(1, 6):
                state.put("context", "n", n)
                index = IndexOps(timers=[(f"t{n}", float(n)), ("gone", 1.0)])
                index = attrs.evolve(index, timers_done=[f"t{n - 1}", "gone"])
                info = {"status": "completed" if n == 5 else "running"}
                txn = store.attempt("run-1", n)
                assert n + 1 == await txn.commit(
                    state.take_delta(), index=index, info=info, state=state
                )
            with anyio.fail_after(10):
                assert "run-1" == await anext(notices)
        assert ({"n": 5}, 6) == await stored(reader)
        assert ["t5"] == [t.timer_id for t in await reader.due_timers(99)]
        assert "completed" == getattr(await reader.info("run-1"), "status", None)
        assert 0 < store.stats.snapshot_bytes  # versions 3 and 6 were snapshots
        async with reader.transaction("run-1") as txn:
            assert None is await txn.changes_since(2)

    async def test_a_current_replica_takes_no_lock(self, db: Database) -> None:
        store = db.open()
        _, replica = await _fan(store, width=1)
        locks = _count_transactions(store)
        commands = await replica.step(store, _done(replica, "a"))
        commands += await replica.step(store, _done(replica, "b0"))
        assert ["b0", "z"] == [c.node_id for c in commands if isinstance(c, p.ExecuteNode)]
        expected = 0 if isinstance(store, CommitsOptimistically) else 2
        assert (expected, 3) == (locks.count, replica.version)

    async def test_after_a_conflict_a_reload_and_catch_ups(self, db: Database) -> None:
        """A conflict costs a reload and a second attempt, not the lock; then, for
        QUIET_STEPS steps, the replica catches up with what it missed before it attempts
        (a store that cannot catch up steps under the lock instead), and attempts again
        as before."""
        first, second = db.open(), db.open()
        if not isinstance(first, CommitsOptimistically):
            pytest.skip(f"{type(first).__name__} always takes the lock")
        program, replica = await _fan(first, width=QUIET_STEPS + 4)
        await replica.step(first, _done(replica, "a"))
        loaded = await second.load("run-1")
        assert loaded is not None
        other = Replica(program, *loaded)
        await other.step(second, _done(other, "b0"))  # replica is stale now
        locks = _count_transactions(first)
        catches_up = isinstance(first, CatchesUp)
        await replica.step(first, _done(replica, "b1"))  # the conflict
        assert (1, 0 if catches_up else 1) == (first.stats.conflicts, locks.count)
        await other.step(second, _done(other, "b2"))  # conflicts too: other was stale
        for i in range(3, QUIET_STEPS + 3):  # QUIET_STEPS steps that catch up first
            await replica.step(first, _done(replica, f"b{i}"))
        assert (0 if catches_up else QUIET_STEPS + 1) == locks.count
        assert (QUIET_STEPS if catches_up else 0) == first.stats.catch_ups
        last = await replica.step(first, _done(replica, f"b{QUIET_STEPS + 3}"))
        assert 0 == replica.contended
        assert 3 + QUIET_STEPS + 3 == replica.version
        assert ["z"] == [c.node_id for c in last if isinstance(c, p.ExecuteNode)]

    async def test_changes_since(self, store: Store) -> None:
        """The deltas after a version and the version they lead to; None for a run that
        is not there, or deltas a snapshot pruned."""
        if not isinstance(store, CatchesUp):
            pytest.skip(f"{type(store).__name__} cannot catch a copy up")
        assert None is await store.changes_since("run-1", 1)
        await create(store)
        assert ([], 1) == await store.changes_since("run-1", 1)
        await put(store, "run-1", "n", 1)
        await put(store, "run-1", "m", 2)
        assert ([[("context", "m", 2)]], 3) == await store.changes_since("run-1", 2)
        assert 2 == len((await store.changes_since("run-1", 1) or ([], 0))[0])

    async def test_changes_pruned_by_a_snapshot(self, db: Database) -> None:
        store = db.open(snapshot_every=3)
        if not isinstance(store, CatchesUp):
            pytest.skip(f"{type(store).__name__} cannot catch a copy up")
        await create(store)
        state = new_state("run-1", n=0)
        for n in range(1, 5):
            state.put("context", "n", n)
            async with store.transaction("run-1") as txn:
                await txn.commit(state.take_delta(), state=state)
        assert None is await store.changes_since("run-1", 2)  # version 4 was a snapshot
        assert ([[("context", "n", 4)]], 5) == await store.changes_since("run-1", 4)

    async def test_stale_replicas_of_a_fan_lose_nothing(self, db: Database) -> None:
        """Two processes complete a 12-wide fan at once, each through its own (soon stale)
        copy of the run: every completion counts, the join is dispatched exactly once."""
        first, second = db.open(), db.open()
        program, replica = await _fan(first, width=12)
        fanned = await replica.step(first, _done(replica, "a"))
        loaded = await second.load("run-1")
        assert loaded is not None
        other = Replica(program, *loaded)
        dispatched: list[str] = []

        async def complete(store: Store, copy: Replica, command: p.ExecuteNode) -> None:
            done = p.NodeCompleted(command.dispatch_id, output=command.node_id)
            commands = await copy.step(store, done)
            dispatched.extend(c.node_id for c in commands if isinstance(c, p.ExecuteNode))

        async with anyio.create_task_group() as tg:
            for i, command in enumerate(c for c in fanned if isinstance(c, p.ExecuteNode)):
                pair = (first, replica) if i % 2 else (second, other)
                tg.start_soon(complete, *pair, command)
        state, version = await second.load("run-1") or (None, 0)
        assert state is not None
        assert (["z"], 14) == (dispatched, version)
        assert ["z"] == [d["node"] for d in state.sections["dispatches"].values()]


def _done(replica: Replica, node_id: str) -> p.NodeCompleted:
    (dispatch_id,) = [
        key for key, d in replica.state.sections["dispatches"].items() if d["node"] == node_id
    ]
    return p.NodeCompleted(dispatch_id, output=node_id)


async def _fan(store: Store, width: int) -> tuple[Program, Replica]:
    """``a`` fans out to ``b0..b{width-1}``, joined by ``z``; the run stored, ``a`` dispatched."""
    fan = [f"b{i}" for i in range(width)]
    blueprint = Blueprint(
        id="fan",
        nodes=tuple(NodeSpec(n, "call", uses="work") for n in ("a", *fan, "z")),
        edges=(*(EdgeSpec("a", b) for b in fan), *(EdgeSpec(b, "z") for b in fan)),
    )
    program = Program(blueprint, {"work": lambda value=None: value})
    state = RunState("run-1")
    start_run(program, state, {})
    state.take_delta()
    assert await store.create_run("run-1", state, blueprint_id="fan", digest=blueprint.digest)
    return program, Replica(program, state, 1)


class _Counter:
    count = 0


def _count_transactions(store: Store) -> _Counter:
    """Count the store's locked transactions from now on."""
    counter, transaction = _Counter(), store.transaction

    def counted(run_id: str) -> Any:
        counter.count += 1
        return transaction(run_id)

    store.transaction = counted  # type: ignore[method-assign]
    return counter


class TestIndexes:
    """Due timers and expired leases come back earliest first, within the limit."""

    async def test_due_timers_order_and_limit(self, store: Store) -> None:
        await create(store, "r1", IndexOps(timers=[("a", 30.0), ("b", 10.0)]))
        await create(store, "r2")
        async with store.transaction("r2") as txn:
            await txn.commit([], index=IndexOps(timers=[("c", 20.0), ("d", 50.0)]))
        due = [attrs.astuple(t) for t in await store.due_timers(40.0)]
        assert [("r1", "b", 10.0), ("r2", "c", 20.0), ("r1", "a", 30.0)] == due
        assert ["b", "c"] == [t.timer_id for t in await store.due_timers(40.0, limit=2)]
        assert [] == await store.due_timers(5.0)

    async def test_expired_and_extended_leases(self, store: Store) -> None:
        await create(store)
        async with store.transaction("run-1") as txn:
            await txn.commit([], index=IndexOps(leases=[("d1", 10.0), ("d2", 20.0)]))
        assert ["d1"] == [x.dispatch_id for x in await store.expired_leases(15.0)]
        await store.extend_lease("run-1", "d1", 30.0)
        await store.extend_lease("run-1", "gone", 1.0)  # no lease: stays absent
        assert ["d2"] == [x.dispatch_id for x in await store.expired_leases(25.0)]
        expired = [attrs.astuple(x) for x in await store.expired_leases(100.0)]
        assert [("run-1", "d2", 20.0), ("run-1", "d1", 30.0)] == expired


class TestJournal:
    """``changes_since`` replays the journal until a snapshot prunes it."""

    async def test_changes_since(self, store: Store) -> None:
        await create(store)
        await put(store, "run-1", "x", 1)
        await put(store, "run-1", "x", DELETED)
        async with store.transaction("run-1") as txn:
            assert 3 == txn.version
            changes = await txn.changes_since(1)
            assert [[("context", "x", 1)], [("context", "x", DELETED)]] == changes
            assert [[("context", "x", DELETED)]] == await txn.changes_since(2)
            assert [] == await txn.changes_since(3)

    async def test_snapshot_prunes_the_journal(self, db: Database) -> None:
        store = db.open(snapshot_every=3)
        await create(store)
        for value in range(1, 4):
            await put(store, "run-1", "n", value)
        async with store.transaction("run-1") as txn:
            assert 4 == txn.version
            assert None is await txn.changes_since(1)
            assert [] == await txn.changes_since(4)
        await put(store, "run-1", "n", 4)
        assert ({"n": 4}, 5) == await stored(store)
        assert 0 < store.stats.snapshot_bytes


class TestCrashes:
    """A block that never commits (cancelled, raising) leaves the run as it was, and usable."""

    async def test_cancelled_block(self, store: Store) -> None:
        await create(store)
        with anyio.CancelScope() as scope:
            async with store.transaction("run-1") as txn:
                state = await txn.load()
                assert state is not None
                state.put("context", "n", 99)
                scope.cancel()
                await anyio.sleep(1)
                await txn.commit(state.take_delta())
        assert scope.cancelled_caught
        assert ({"n": 0}, 1) == await stored(store)
        await increment(store, "run-1")
        assert ({"n": 1}, 2) == await stored(store)

    async def test_raising_block(self, store: Store) -> None:
        await create(store)
        with pytest.raises(ZeroDivisionError):
            async with store.transaction("run-1"):
                _ = 1 / 0
        assert ({"n": 0}, 1) == await stored(store)
        await increment(store, "run-1")
        assert ({"n": 1}, 2) == await stored(store)

    async def test_cancelled_anywhere_stays_consistent(self, db: Database) -> None:
        store = db.open(snapshot_every=4)
        await create(store)
        for delay in (0.0, 1e-5, 1e-4, 3e-4, 1e-3, 2e-3, 4e-3, 8e-3, 0.016, 1.0):
            with anyio.move_on_after(delay):
                await increment(store, "run-1", timer=True)
            context, version = await stored(store)
            timers = await store.due_timers(1e9, limit=1000)
            assert [version - 1] * 2 == [context["n"], len(timers)]
        assert context["n"] > 0


class TestUnreachable:
    """A database that cannot be reached raises StoreError, never a driver error."""

    @pytest.fixture(
        params=[
            pytest.param(("sqlite", "asyncio"), id="sqlite-asyncio"),
            pytest.param(("sqlite", "trio"), id="sqlite-trio"),
            pytest.param(
                ("postgres", "asyncio"), id="postgres-asyncio", marks=pytest.mark.asyncio_only
            ),
            pytest.param(("redis", "asyncio"), id="redis-asyncio", marks=pytest.mark.asyncio_only),
        ]
    )
    def case(self, request: pytest.FixtureRequest) -> tuple[str, str]:
        return request.param  # type: ignore[no-any-return]

    @pytest.fixture
    def broken(self, case: tuple[str, str], tmp_path: Path) -> Store:
        if case[0] == "sqlite":
            return SQLiteStore(tmp_path / "no-such-dir" / "runs.db")
        if case[0] == "postgres":
            from flowkit.stores import PostgresStore

            return PostgresStore("postgresql://postgres:s3cret@127.0.0.1:1/test")
        from flowkit.stores import RedisStore

        return RedisStore("redis://:s3cret@127.0.0.1:1/0")

    async def test_every_operation_raises_store_error(self, broken: Store) -> None:
        with pytest.raises(StoreError) as caught:
            await broken.info("run-1")
        assert "s3cret" not in str(caught.value)
        with pytest.raises(StoreError):
            await broken.create_run("run-1", new_state("run-1"), blueprint_id="b", digest="d")
        with pytest.raises(StoreError):
            async with broken.transaction("run-1"):
                pass
        with pytest.raises(StoreError):
            await broken.due_timers(1.0)
        with pytest.raises(StoreError):
            await broken.claim_timer("run-1", "t")
        await broken.close()

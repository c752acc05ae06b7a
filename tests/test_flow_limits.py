"""Run-level concurrency limits, ``@flow(concurrency=flowkit.Limit(max=N, key="arg"))``.

The in-memory Runtime (asyncio and trio), ``simulate()`` (with seeded faults too) and
Workers in this process on a MemoryTransport with a MemoryStore, a SQLiteStore, a
PostgresStore or a RedisStore (the real servers on loopback, a fresh schema or key
prefix per test). Each run records when it starts and ends (its first and last node);
the runs of a test hold at a gate until every key in ``full_at`` has that many runs
going, so a limit that lets one more run through is seen, and a key whose runs waited
for another key's would never fill.
"""

from __future__ import annotations

from collections import Counter
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Any

import anyio
import anyio.lowlevel
import attrs
import pytest

import flowkit
from flowkit import ConfigurationError, Flow, Limit, RunStatus, flow, node
from flowkit.core import _protocol as proto
from flowkit.core._admission import PARENT_SLOT, lent_slot
from flowkit.core._machine import handle_event, start_run
from flowkit.core._program import Program
from flowkit.core._state import RunState
from flowkit.stores import MemoryStore, SQLiteStore
from flowkit.testing import Faults, simulate_async
from flowkit.transports import MemoryTransport
from tests.test_faults_optimistic_store import fresh_store

if TYPE_CHECKING:
    from collections.abc import AsyncIterator
    from pathlib import Path

pytestmark = pytest.mark.anyio

BOUND = 30.0


class Recorder:
    """Runs going per key, the most seen at once, the order runs started in, and a
    gate that holds them until every key in ``full_at`` has that many going."""

    def __init__(self) -> None:
        self.reset({})

    def reset(self, full_at: dict[str, int], *, open_when_full: bool = True) -> None:
        self.full_at = full_at
        self.open_when_full = open_when_full
        self.live: Counter[str] = Counter()
        self.peak: Counter[str] = Counter()
        self.started: list[str] = []
        self.total_peak = 0  # the most runs going at once, whatever their key
        self.full = anyio.Event()
        self.gate = anyio.Event()

    async def enter(self, key: str, tag: str) -> None:
        self.live[key] += 1
        self.peak[key] = max(self.peak[key], self.live[key])
        self.total_peak = max(self.total_peak, sum(self.live.values()))
        self.started.append(tag)
        if all(self.live[k] >= n for k, n in self.full_at.items()):
            self.full.set()
            if self.open_when_full:
                self.gate.set()
        await self.gate.wait()
        await anyio.lowlevel.checkpoint()  # let a run past the limit start, if one could

    def leave(self, key: str) -> None:
        self.live[key] -= 1


recorder = Recorder()


@node
async def enter(key: str, tag: str) -> str:
    await recorder.enter(key, tag)
    return tag


@node
async def leave(key: str, tag: str) -> str:
    recorder.leave(key)
    return tag


@flow(concurrency=Limit(max=1, key="key"))
async def one_per_key(key: str, tag: str) -> str:
    await enter(key, tag)
    return await leave(key, tag)


@flow(concurrency=Limit(max=2))
async def two_at_once(key: str, tag: str) -> str:
    await enter(key, tag)
    return await leave(key, tag)


@flow(concurrency=Limit(max=1, key="key"))
async def recursive(key: str, depth: int) -> int:
    if depth == 0:
        return 0
    below = await recursive(key, depth - 1)  # a child of the same flow and key
    return below + 1


@node(concurrency=Limit(max=1))
async def scarce(key: str, tag: str) -> str:
    await recorder.enter(key, tag)
    recorder.leave(key)
    return tag


@flow(concurrency=Limit(max=1, key="key"))
async def holds_then_waits(key: str, tag: str) -> str:
    return await scarce(key, tag)  # holds a flow slot, waits for the node's slot


@flow(concurrency=Limit(max=1, key="key"))
async def chain(key: str, tag: str, left: int) -> str:
    await enter(key, f"{tag}{left}")
    await leave(key, tag)
    if left > 0:
        flow.continue_as_new(key=key, tag=tag, left=left - 1)
    return tag


RUNS = [("a", "a1"), ("a", "a2"), ("a", "a3"), ("b", "b1"), ("b", "b2")]


class TestDecorator:
    """``@flow(concurrency=...)`` takes a Limit keyed by an input; builders take one too."""

    def test_a_limit_goes_into_the_blueprint(self) -> None:
        assert {"max": 1, "key": "key"} == one_per_key.blueprint.metadata["concurrency"]
        assert Limit(max=1, key="key") == one_per_key.concurrency

    def test_anything_but_a_limit_is_refused(self) -> None:
        with pytest.raises(ConfigurationError, match=r"concurrency must be a flowkit\.Limit"):

            @flow(concurrency=2)  # type: ignore[arg-type]
            async def bad(key: str) -> None: ...

    def test_a_key_that_is_no_input_is_refused(self) -> None:
        with pytest.raises(ConfigurationError, match="the flow has no argument 'customer'"):

            @flow(concurrency=Limit(max=1, key="customer"))
            async def bad(key: str) -> None: ...

    def test_a_builder_flow_takes_a_limit(self) -> None:
        built = Flow("limited", concurrency=Limit(max=3, key="tenant"))
        built.node("one", enter, inputs={"key": "$input.tenant", "tag": "$input.tenant"})
        assert {"max": 3, "key": "tenant"} == built.build().metadata["concurrency"]
        with pytest.raises(ConfigurationError, match=r"concurrency must be a flowkit\.Limit"):
            Flow("limited", concurrency="3")  # type: ignore[arg-type]


async def _start_all(starter: Any, target: Any, runs: list[tuple[str, str]]) -> list[Any]:
    return [await starter.start(target, run_id=tag, key=key, tag=tag) for key, tag in runs]


class TestRuntime:
    """The in-memory Runtime runs at most ``max`` runs per key value at once, queues the
    others in order of arrival, and never deadlocks on a slot its parent holds."""

    async def test_at_most_max_runs_per_key_and_keys_apart(self) -> None:
        recorder.reset({"a": 1, "b": 1})
        with anyio.fail_after(BOUND):
            async with flowkit.Runtime() as rt:
                handles = await _start_all(rt, one_per_key, RUNS)
                results = [await h.result() for h in handles]
        assert [RunStatus.COMPLETED] * 5 == [r.status for r in results]
        assert {"a": 1, "b": 1} == dict(recorder.peak)
        assert ["a1", "a2", "a3"] == [t for t in recorder.started if t[0] == "a"]  # arrival

    async def test_no_key_is_one_pool(self) -> None:
        recorder.reset({"a": 2})
        with anyio.fail_after(BOUND):
            async with flowkit.Runtime() as rt:
                handles = await _start_all(rt, two_at_once, RUNS)
                for handle in handles:
                    await handle.result()
        assert 2 == recorder.total_peak
        started = recorder.started  # two admitted at once may start in either order
        assert [{"a1", "a2"}, {"a3", "b1"}, {"b2"}] == [
            set(started[:2]),
            set(started[2:4]),
            set(started[4:]),
        ]

    async def test_run_waits_for_a_queued_run(self) -> None:
        recorder.reset({})
        rt = flowkit.Runtime()
        results: list[str] = []
        with anyio.fail_after(BOUND):
            async with anyio.create_task_group() as tg:
                for n in range(3):

                    async def one(n: int = n) -> None:
                        result = await rt.run(one_per_key, key="k", tag=f"t{n}")
                        results.append(result.output)

                    tg.start_soon(one)
        assert ["t0", "t1", "t2"] == sorted(results)
        assert 1 == recorder.peak["k"]

    async def test_a_queued_run_shows_queued_and_a_cancelled_one_leaves_the_queue(
        self,
    ) -> None:
        recorder.reset({"a": 1}, open_when_full=False)
        with anyio.fail_after(BOUND):
            async with flowkit.Runtime(store=MemoryStore()) as rt:
                first, second, third = await _start_all(rt, one_per_key, RUNS[:3])
                await recorder.full.wait()
                assert "queued" == (await rt.describe("a2")).run.status
                page = await rt.list_runs(status="queued")
                assert ["a2", "a3"] == sorted(r.run_id for r in page.runs)
                assert RunStatus.CANCELLED == (await second.cancel()).status
                recorder.gate.set()
                assert "a1" == (await first.result()).output
                assert "a3" == (await third.result()).output
        assert ["a1", "a3"] == recorder.started

    async def test_a_recursive_subflow_runs_under_its_parents_slot(self) -> None:
        with anyio.fail_after(BOUND):
            result = await flowkit.Runtime().run(recursive, key="k", depth=3)
        assert (RunStatus.COMPLETED, 3) == (result.status, result.output)

    async def test_a_run_holding_a_flow_slot_waits_for_a_node_slot(self) -> None:
        recorder.reset({})
        runs = [("a", "a1"), ("a", "a2"), ("b", "b1"), ("c", "c1")]
        with anyio.fail_after(BOUND):
            async with flowkit.Runtime() as rt:
                handles = await _start_all(rt, holds_then_waits, runs)
                outputs = [(await h.result()).output for h in handles]
        assert ["a1", "a2", "b1", "c1"] == outputs
        assert 1 == max(recorder.peak.values())

    async def test_continue_as_new_keeps_the_slot(self) -> None:
        recorder.reset({})
        with anyio.fail_after(BOUND):
            async with flowkit.Runtime() as rt:
                chained = await rt.start(chain, run_id="c", key="k", tag="c", left=2)
                other = await rt.start(chain, run_id="o", key="k", tag="o", left=0)
                assert "o" == (await other.result()).output
                await chained.result()
        assert ["c2", "c1", "c0", "o0"] == recorder.started  # the chain first, then o
        assert 1 == recorder.peak["k"]


class TestSimulate:
    """``simulate()`` takes and gives back flow slots too, with and without faults."""

    async def test_a_recursive_subflow_completes(self) -> None:
        sim = await simulate_async(recursive, key="k", depth=3)
        assert (RunStatus.COMPLETED, 3) == (sim.status, sim.output)

    async def test_under_seeded_faults(self) -> None:
        faults = Faults(crash=0.2, redeliver=0.2, duplicate=0.2, reorder=True)
        for seed in range(5):
            sim = await simulate_async(recursive, key="k", depth=2, faults=faults, seed=seed)
            assert (RunStatus.COMPLETED, 2) == (sim.status, sim.output)

    async def test_a_limited_child_of_another_pool_takes_a_slot(self) -> None:
        mocks = {enter: lambda key, tag: tag, leave: lambda key, tag: tag}
        sim = await simulate_async(parent_of_others, keys=["x", "y", "x"], mocks=mocks)
        assert (RunStatus.COMPLETED, ["x", "y", "x"]) == (sim.status, sim.output)


@flow
async def parent_of_others(keys: list[str]) -> list[str]:
    outputs = []
    for key in keys:
        outputs.append(await one_per_key(key, key))
    return outputs


@asynccontextmanager
async def _store(kind: str, tmp_path: Path) -> AsyncIterator[Any]:
    if kind == "memory":
        yield MemoryStore()
    elif kind == "sqlite":
        store = SQLiteStore(tmp_path / "runs.db")
        try:
            yield store
        finally:
            await store.close()
    else:
        async with fresh_store(kind) as store:
            yield store


def _worker(transport: Any, store: Any, **options: Any) -> flowkit.Worker:
    flows = [one_per_key, recursive, holds_then_waits]
    return flowkit.Worker(flows, transport, store, lease=5.0, poll_interval=0.05, **options)


STORES = [
    ("memory", "asyncio"),
    ("sqlite", "asyncio"),
    ("sqlite", "trio"),
    pytest.param("postgres", "asyncio", marks=pytest.mark.asyncio_only),
    pytest.param("redis", "asyncio", marks=pytest.mark.asyncio_only),
]


class TestWorkers:
    """Workers sharing a store run at most ``max`` runs per key value at once; a slot
    freed by a worker that died before admitting the next run is found by another."""

    @pytest.mark.parametrize(("kind", "anyio_backend"), STORES)
    async def test_at_most_max_runs_per_key_across_workers(self, kind: str, tmp_path: Path) -> None:
        recorder.reset({"a": 1, "b": 1})
        transport = MemoryTransport()
        async with _store(kind, tmp_path) as store:
            client = flowkit.Client(transport, store, flows=[one_per_key])
            with anyio.fail_after(BOUND):
                async with anyio.create_task_group() as tg:
                    workers = [_worker(transport, store) for _ in range(2)]
                    for worker in workers:
                        await tg.start(worker.run)
                    handles = await _start_all(client, one_per_key, RUNS)
                    results = [await h.result() for h in handles]
                    for worker in workers:  # drained: their slots are given back
                        worker.stop()
            assert [RunStatus.COMPLETED] * 5 == [r.status for r in results]
            assert {"a": 1, "b": 1} == dict(recorder.peak)
            assert ["a1", "a2", "a3"] == [t for t in recorder.started if t[0] == "a"]
            for key in ("a", "b"):  # every slot was given back, every queue left
                assert [] == await store.slot_holders("flow:one_per_key", key)
                assert [] == await store.slot_holders("queue:flow:one_per_key", key)

    @pytest.mark.parametrize(("kind", "anyio_backend"), STORES)
    async def test_a_cancelled_queued_run_leaves_the_queue(self, kind: str, tmp_path: Path) -> None:
        recorder.reset({"a": 1}, open_when_full=False)
        transport = MemoryTransport()
        async with _store(kind, tmp_path) as store:
            client = flowkit.Client(transport, store, flows=[one_per_key])
            with anyio.fail_after(BOUND):
                async with anyio.create_task_group() as tg:
                    await tg.start(_worker(transport, store).run)
                    first, second, third = await _start_all(client, one_per_key, RUNS[:3])
                    await recorder.full.wait()
                    assert "queued" == (await client.describe("a2")).run.status
                    assert RunStatus.CANCELLED == (await second.cancel()).status
                    recorder.gate.set()
                    assert "a1" == (await first.result()).output
                    assert "a3" == (await third.result()).output
                    tg.cancel_scope.cancel()
            assert ["a1", "a3"] == recorder.started

    @pytest.mark.parametrize(("kind", "anyio_backend"), STORES)
    async def test_starting_a_run_again_takes_nothing_more(self, kind: str, tmp_path: Path) -> None:
        recorder.reset({"a": 1}, open_when_full=False)
        transport = MemoryTransport()
        async with _store(kind, tmp_path) as store:
            client = flowkit.Client(transport, store, flows=[one_per_key])
            with anyio.fail_after(BOUND):
                async with anyio.create_task_group() as tg:
                    worker = _worker(transport, store)
                    await tg.start(worker.run)
                    first, second = await _start_all(client, one_per_key, RUNS[:2])
                    await recorder.full.wait()
                    await _start_all(client, one_per_key, RUNS[:2])  # the same run ids
                    assert ["a1"] == await store.slot_holders("flow:one_per_key", "a")
                    assert ["a2"] == await store.slot_holders("queue:flow:one_per_key", "a")
                    recorder.gate.set()
                    assert ["a1", "a2"] == [(await h.result()).output for h in (first, second)]
                    worker.stop()  # drained: the slot is given back
            assert [] == await store.slot_holders("flow:one_per_key", "a")
            assert [] == await store.slot_holders("queue:flow:one_per_key", "a")

    @pytest.mark.parametrize(("kind", "anyio_backend"), STORES)
    async def test_a_recursive_subflow_completes(self, kind: str, tmp_path: Path) -> None:
        transport = MemoryTransport()
        async with _store(kind, tmp_path) as store:
            client = flowkit.Client(transport, store, flows=[recursive])
            with anyio.fail_after(BOUND):
                async with anyio.create_task_group() as tg:
                    await tg.start(_worker(transport, store).run)
                    result = await client.run(recursive, key="k", depth=3)
                    tg.cancel_scope.cancel()
            assert (RunStatus.COMPLETED, 3) == (result.status, result.output)

    @pytest.mark.parametrize(("kind", "anyio_backend"), STORES)
    async def test_a_run_holding_a_flow_slot_waits_for_a_node_slot(
        self, kind: str, tmp_path: Path
    ) -> None:
        recorder.reset({})
        runs = [("a", "a1"), ("a", "a2"), ("b", "b1"), ("c", "c1")]
        transport = MemoryTransport()
        async with _store(kind, tmp_path) as store:
            client = flowkit.Client(transport, store, flows=[holds_then_waits])
            with anyio.fail_after(BOUND):
                async with anyio.create_task_group() as tg:
                    for _ in range(2):
                        await tg.start(_worker(transport, store).run)
                    handles = await _start_all(client, holds_then_waits, runs)
                    outputs = [(await h.result()).output for h in handles]
                    tg.cancel_scope.cancel()
            assert ["a1", "a2", "b1", "c1"] == outputs
            assert 1 == max(recorder.peak.values())

    @pytest.mark.parametrize(("kind", "anyio_backend"), STORES)
    async def test_a_worker_that_dies_before_admitting_leaves_it_to_another(
        self, kind: str, tmp_path: Path
    ) -> None:
        recorder.reset({"a": 1}, open_when_full=False)
        transport = MemoryTransport()
        async with _store(kind, tmp_path) as store:
            client = flowkit.Client(transport, store, flows=[one_per_key])
            dying = _worker(transport, store)
            died = anyio.Event()
            with anyio.fail_after(BOUND):
                async with anyio.create_task_group() as tg:
                    async with anyio.create_task_group() as doomed:
                        await doomed.start(dying.run)

                        leave = dying.shell.run_slots.leave

                        async def leave_and_die(*args: Any) -> None:  # admit nobody
                            await leave(*args)
                            died.set()
                            doomed.cancel_scope.cancel()
                            await anyio.lowlevel.checkpoint()

                        dying.shell.run_slots.leave = leave_and_die  # type: ignore[method-assign]
                        _, second = await _start_all(client, one_per_key, RUNS[:2])
                        await recorder.full.wait()
                        assert "queued" == (await store.info("a2")).status  # type: ignore[union-attr]
                        recorder.gate.set()
                        await died.wait()
                    assert "completed" == (await store.info("a1")).status  # type: ignore[union-attr]
                    assert "queued" == (await store.info("a2")).status  # type: ignore[union-attr]
                    await tg.start(_worker(transport, store).run)  # its sweep admits a2
                    assert "a2" == (await second.result()).output
                    tg.cancel_scope.cancel()
            assert ["a1", "a2"] == recorder.started

    @pytest.mark.parametrize(("kind", "anyio_backend"), STORES)
    async def test_a_worker_that_dies_before_queueing_a_debounced_run_leaves_it_to_another(
        self, kind: str, tmp_path: Path
    ) -> None:
        recorder.reset({"a": 1})
        transport = MemoryTransport()
        async with _store(kind, tmp_path) as store:
            client = flowkit.Client(transport, store, flows=[one_per_key])
            dying = _worker(transport, store)
            died = anyio.Event()
            with anyio.fail_after(BOUND):
                async with anyio.create_task_group() as tg:
                    async with anyio.create_task_group() as doomed:
                        await doomed.start(dying.run)

                        async def die_instead(*args: Any) -> bool:  # stored queued, in no queue
                            died.set()
                            doomed.cancel_scope.cancel()
                            await anyio.lowlevel.checkpoint()
                            return False

                        dying.shell.run_slots.join = die_instead  # type: ignore[method-assign]
                        handle = await client.start(
                            one_per_key, run_id="a1", debounce=0.01, key="a", tag="a1"
                        )
                        await died.wait()
                    assert "queued" == (await store.info("a1")).status  # type: ignore[union-attr]
                    assert [] == await store.slot_holders("queue:flow:one_per_key", "a")
                    await tg.start(_worker(transport, store).run)  # its sweep lines a1 up
                    assert "a1" == (await handle.result()).output
                    tg.cancel_scope.cancel()
            assert ["a1"] == recorder.started


class TestDescribe:
    """``describe`` says which slot a run holds or is queued for."""

    async def test_queued_and_held_slots(self) -> None:
        recorder.reset({"a": 1}, open_when_full=False)
        with anyio.fail_after(BOUND):
            async with flowkit.Runtime(store=MemoryStore()) as rt:
                _, second = await _start_all(rt, one_per_key, RUNS[:2])
                await recorder.full.wait()
                held, queued = (await rt.describe("a1")).slot, (await rt.describe("a2")).slot
                recorder.gate.set()
                await second.result()
                released = (await rt.describe("a1")).slot
        assert ("one_per_key", "a", 1, "held") == attrs.astuple(held)
        assert "queued" == queued.status  # type: ignore[union-attr]
        assert "released" == released.status  # type: ignore[union-attr]


class TestCore:
    """The core decides: a limited run starts queued and asks for a slot, begins when
    told it has one, and gives it back (or leaves the queue) when it ends."""

    def _start(self, key: str = "k") -> tuple[Any, Any, list[Any]]:
        program = Program(one_per_key.blueprint, one_per_key.registry)
        state = RunState("r1")
        commands = start_run(program, state, {"key": key, "tag": "t"})
        return program, state, commands

    def test_a_limited_run_starts_queued(self) -> None:
        _, state, commands = self._start()
        asked = [c for c in commands if isinstance(c, proto.TakeSlot)]
        assert [proto.TakeSlot("flow:one_per_key", "k", 1, "r1")] == asked
        assert not any(isinstance(c, proto.ExecuteNode) for c in commands)
        assert "queued" == state.header["status"]

    def test_it_begins_once_it_has_its_slot(self) -> None:
        program, state, _ = self._start()
        commands = handle_event(program, state, proto.SlotTaken())
        assert ["enter"] == [c.node_id for c in commands if isinstance(c, proto.ExecuteNode)]
        assert "running" == state.header["status"]
        assert [] == handle_event(program, state, proto.SlotTaken()), "told twice: no-op"

    def test_a_cancelled_queued_run_leaves_the_queue(self) -> None:
        program, state, _ = self._start()
        commands = handle_event(program, state, proto.CancelRequested())
        released = [c for c in commands if isinstance(c, proto.ReleaseSlot)]
        assert [proto.ReleaseSlot("flow:one_per_key", "k", 1, "r1")] == released
        assert "cancelled" == state.header["status"]

    def test_a_child_of_the_same_pool_runs_under_its_parents_slot(self) -> None:
        program = Program(recursive.blueprint, recursive.registry)
        parent = RunState("p")
        start_run(program, parent, {"key": "k", "depth": 1})
        begun = handle_event(program, parent, proto.SlotTaken())
        (started,) = [c for c in begun if isinstance(c, proto.StartChild)]
        assert started.slot is not None
        assert lent_slot(parent.header) == started.slot
        child = RunState("c")
        extra = {PARENT_SLOT: started.slot}
        commands = start_run(program, child, {"key": "k", "depth": 0}, parent="p", extra=extra)
        assert "completed" == child.header["status"]
        asked = [c for c in commands if isinstance(c, proto.TakeSlot | proto.ReleaseSlot)]
        assert [] == asked, "the parent's slot: nothing taken, nothing given back"


fragile = {"fail": True}


@node
async def flaky(key: str) -> str:
    if fragile["fail"]:
        raise RuntimeError("not yet")
    return key


@flow(concurrency=Limit(max=1, key="key"))
async def retried(key: str) -> str:
    return await flaky(key)


class TestRetry:
    """A failed run gave its slot back; retried, it queues for one again."""

    async def test_a_retried_run_takes_a_slot_again(self) -> None:
        fragile["fail"] = True
        with anyio.fail_after(BOUND):
            async with flowkit.Runtime(store=MemoryStore()) as rt:
                failed = await rt.run(retried, run_id="r", key="k")
                assert RunStatus.FAILED == failed.status
                assert "released" == (await rt.describe("r")).slot.status  # type: ignore[union-attr]
                fragile["fail"] = False
                await rt.retry("r")
                result = await rt.handle("r").result()
                assert (RunStatus.COMPLETED, "k") == (result.status, result.output)
                assert "released" == (await rt.describe("r")).slot.status  # type: ignore[union-attr]

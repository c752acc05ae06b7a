"""``flow.continue_as_new(...)``: a run ends by starting a fresh run of its flow.

A counter flow continues as new every 100 iterations and reaches 1 000: ten runs
chained (``c``, ``c:1`` ... ``c:9``), each with a bounded history, and ``result()`` on
the first id gives the last run's output, in every shell. A process that dies
between the old run's commit and the new run's creation still leaves exactly one
new run: the worker's reconciler redoes the continuation when its lease runs out.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

import anyio
import pytest

import flowkit
from flowkit import CompileError, RunStatus, flow, node
from flowkit._clock import use_clock
from flowkit.core._step_nodes import LoopLimitExceeded
from flowkit.stores import MemoryStore, SQLiteStore
from flowkit.testing import simulate
from flowkit.transports import MemoryTransport

if TYPE_CHECKING:
    from pathlib import Path

pytestmark = pytest.mark.anyio

EVERY = 100
LIMIT = 1000
RUNS = [f"c:{n}" if n else "c" for n in range(LIMIT // EVERY)]
LEASE = 30.0
BOUND = 60.0


@node
async def bump(n: int) -> int:
    return n + 1


@flow
async def counter(count: int = 0, limit: int = LIMIT) -> int:
    i = 0
    while count < limit:
        count = await bump(count)
        i += 1
        if i == EVERY and count < limit:
            flow.continue_as_new(count=count, limit=limit)
    return count


@node
async def note_cleanup(n: int) -> int:
    return n


@flow
async def in_try(count: int = 0) -> int:
    try:
        count = await bump(count)
        if count < 3:
            return flow.continue_as_new(count=count)
    finally:
        await note_cleanup(count)
    return count


@flow
async def tally(total: int = 0, seen: int = 0) -> int:
    """An entity: adds what each ``add`` signal brings, continuing as new every two."""
    while True:
        n = await flow.wait("add")
        if n is None:
            return total
        total = total + n
        seen += 1
        if seen == 2:
            flow.continue_as_new(total=total, seen=0)


@flow
async def parent_of_continuing(count: int = 0) -> int:
    return await in_try(count=count)


# -- the in-memory runtime ----------------------------------------------------------------------


async def test_flow_run_follows_the_chain_to_the_last_run() -> None:
    result = await counter.run(count=0, limit=LIMIT)
    assert (RunStatus.COMPLETED, LIMIT) == (result.status, result.output)
    assert result.run_id.endswith(":9")
    assert result.continued_as is None


@pytest.mark.parametrize("stored", [False, True], ids=["no-store", "sqlite"])
async def test_runtime_chains_ten_runs_and_result_follows_them(stored: bool) -> None:
    store = SQLiteStore(":memory:") if stored else None
    async with flowkit.Runtime(store=store) as rt:
        handle = await rt.start(counter, run_id="c", count=0, limit=LIMIT, tags={"team": "a"})
        with anyio.fail_after(BOUND):
            last = await handle.result()
        firsts = [await rt.result(run_id) for run_id in RUNS]
        if store is not None:
            histories = [await rt.history(run_id) for run_id in RUNS]
            tagged = await rt.list_runs(tags={"team": "a"}, limit=100)
    assert (RunStatus.COMPLETED, LIMIT, "c:9") == (last.status, last.output, last.run_id)
    assert [r.continued_as for r in firsts] == [*RUNS[1:], None]
    assert [r.output for r in firsts[:-1]] == [None] * 9
    assert all(r.status is RunStatus.COMPLETED for r in firsts)
    assert [r.state["count"] for r in firsts] == [EVERY * (n + 1) for n in range(10)]
    if store is not None:
        lengths = {len(history) for history in histories[:-1]}
        assert max(lengths) < 8 * EVERY  # bounded: a run's history holds its own 100 steps
        kinds = [e.kind for e in histories[0]]
        assert kinds[-2:] == ["run.continued", "run.completed"]
        continued = next(e for e in histories[0] if e.kind == "run.continued")
        assert "c:1" == continued.data["run_id"]
        assert sorted(RUNS) == sorted(r.run_id for r in tagged.runs)
        await store.close()


async def test_runs_show_prints_the_links() -> None:
    from flowkit.cli._show import _header

    store = MemoryStore()
    async with flowkit.Runtime(store=store) as rt:
        await rt.run(counter, run_id="c", count=0, limit=2 * EVERY)
        first, second = await rt.describe("c"), await rt.describe("c:1")
    assert ("c:1", None) == (first.continued_as, first.continued_from)
    assert (None, "c") == (second.continued_as, second.continued_from)
    assert "continued as c:1" in _header(first).plain
    assert "continues c" in _header(second).plain


async def test_a_continuation_leaves_through_finally_first() -> None:
    async with flowkit.Runtime() as rt:
        handle = await rt.start(in_try, run_id="t", count=0)
        with anyio.fail_after(BOUND):
            last = await handle.result()
        first = await rt.result("t")
    assert (3, "t:2") == (last.output, last.run_id)
    assert "t:1" == first.continued_as
    assert 1 == first.state["count"]  # the finally ran before the run ended


async def test_a_child_run_cannot_continue_as_new() -> None:
    result = await parent_of_continuing.run(count=0)
    assert result.status is RunStatus.FAILED
    assert "a subflow cannot continue as new" in str(result.error)


async def test_signals_to_the_first_id_reach_the_newest_run() -> None:
    async with flowkit.Runtime() as rt:
        handle = await rt.start(tally, run_id="e")
        for n in (1, 2, 3, 4, 5):
            await rt.signal("e", "add", n)
        await rt.signal("e", "add", None)
        with anyio.fail_after(BOUND):
            last = await handle.result()
    assert (RunStatus.COMPLETED, 15, "e:2") == (last.status, last.output, last.run_id)


# -- simulate() -----------------------------------------------------------------------------------


def test_simulate_follows_the_chain() -> None:
    sim = simulate(counter, count=0, limit=LIMIT)
    assert (RunStatus.COMPLETED, LIMIT, "sim:9") == (sim.status, sim.output, sim.run_id)
    assert LIMIT == len(sim.calls(bump))


def test_simulate_workers_under_faults_follow_the_chain() -> None:
    sim = simulate(counter, count=0, limit=3 * EVERY, workers=2, seed=5)
    assert (RunStatus.COMPLETED, 3 * EVERY, "sim:2") == (sim.status, sim.output, sim.run_id)


# -- Worker / Client ----------------------------------------------------------------------------


async def test_worker_chains_ten_runs(tmp_path: Path) -> None:
    store, transport = SQLiteStore(tmp_path / "runs.db"), MemoryTransport()
    client = flowkit.Client(transport, store, flows=[counter], lease=LEASE)
    worker = flowkit.Worker([counter], transport, store, lease=LEASE, poll_interval=0.05)
    with anyio.fail_after(4 * BOUND):
        async with anyio.create_task_group() as tg:
            await tg.start(worker.run)
            handle = await client.start(counter, run_id="c", count=0, limit=LIMIT)
            last = await handle.result()
            tg.cancel_scope.cancel()
    page = await store.list_runs(flow="counter", limit=100)
    first = await client.result("c")
    await store.close()
    assert (RunStatus.COMPLETED, LIMIT, "c:9") == (last.status, last.output, last.run_id)
    assert sorted(RUNS) == sorted(r.run_id for r in page.runs)
    assert "c:1" == first.continued_as


async def test_worker_signals_to_the_first_id_reach_the_newest_run() -> None:
    store, transport = MemoryStore(), MemoryTransport()
    client = flowkit.Client(transport, store, flows=[tally], lease=LEASE)
    worker = flowkit.Worker([tally], transport, store, lease=LEASE, poll_interval=0.05)
    with anyio.fail_after(BOUND):
        async with anyio.create_task_group() as tg:
            await tg.start(worker.run)
            await client.start(tally, run_id="e")
            answers = [await client.signal("e", "add", n) for n in (1, 2, 3)]
            await client.signal("e", "add", None)
            last = await client.wait("e")
            tg.cancel_scope.cancel()
    assert (RunStatus.COMPLETED, 6, "e:1") == (last.status, last.output, last.run_id)
    assert ["e", "e", "e:1"] == [a.run_id for a in answers]  # the run each one reached
    assert "e:1" == answers[1].continued_as


class Died(BaseException):
    """A process death (nothing catches it)."""


class DyingStore(MemoryStore):
    """Dies once, on creating run ``victim``: before creating it, or just after."""

    def __init__(self, victim: str, *, after: bool) -> None:
        super().__init__()
        self.victim = victim
        self.after = after
        self.died = False
        self.creations: list[str] = []

    async def create_run(self, run_id: str, *args: Any, **kwargs: Any) -> bool:
        dies = run_id == self.victim and not self.died
        if dies and not self.after:
            self.died = True
            raise Died
        created = await super().create_run(run_id, *args, **kwargs)
        self.creations.append(run_id)
        if dies:
            self.died = True
            raise Died
        return created


@pytest.mark.parametrize("after", [False, True], ids=["before-create", "after-create"])
async def test_a_death_between_commit_and_creation_still_makes_one_new_run(after: bool) -> None:
    store, transport = DyingStore("c:1", after=after), MemoryTransport()
    client = flowkit.Client(transport, store, flows=[counter], lease=LEASE)
    dying = flowkit.Worker([counter], transport, store, lease=LEASE, poll_interval=0.05)
    with anyio.fail_after(BOUND):
        try:
            async with anyio.create_task_group() as tg:
                await tg.start(dying.run)
                await client.start(counter, run_id="c", count=0, limit=3 * EVERY)
                await anyio.sleep_forever()
        except* Died:
            pass
    stuck = await client.result("c")
    assert stuck.status is not RunStatus.COMPLETED  # committed, continuation not reported
    assert (await store.info("c:1") is not None) is after
    restarted = flowkit.Worker([counter], transport, store, lease=LEASE, poll_interval=0.05)
    with use_clock(lambda: time.time() + 2 * LEASE):  # the continuation's lease ran out
        await restarted.tick()
    with anyio.fail_after(BOUND):
        async with anyio.create_task_group() as tg:
            await tg.start(restarted.run)
            last = await client.wait("c")
            tg.cancel_scope.cancel()
    assert (RunStatus.COMPLETED, 3 * EVERY, "c:2") == (last.status, last.output, last.run_id)
    assert ["c", "c:1", "c:2"] == store.creations
    assert "c:1" == (await client.result("c")).continued_as


@pytest.mark.parametrize("after", [False, True], ids=["before-create", "after-create"])
async def test_a_runtime_that_died_mid_continuation_redoes_it_on_restart(after: bool) -> None:
    store = DyingStore("c:1", after=after)
    with anyio.fail_after(BOUND):
        try:
            async with flowkit.Runtime(store=store) as rt:
                await rt.run(counter, run_id="c", count=0, limit=3 * EVERY)
        except* Died:
            pass
    assert (await store.info("c") or pytest.fail("no run c")).status != "completed"
    async with flowkit.Runtime(store=store) as again:
        handle = await again.start(counter, run_id="c")  # it exists: recovered, not made
        with anyio.fail_after(BOUND):
            last = await handle.result()
    assert (RunStatus.COMPLETED, 3 * EVERY, "c:2") == (last.status, last.output, last.run_id)
    assert ["c", "c:1", "c:2"] == store.creations


# -- the DSL ------------------------------------------------------------------------------------


def test_awaiting_continue_as_new_is_a_compile_error() -> None:
    with pytest.raises(CompileError, match="not awaited") as caught:

        @flow
        async def awaited(n: int = 0) -> None:
            await flow.continue_as_new(n=n)

    assert "without await" in str(caught.value)


def test_continue_as_new_in_an_expression_is_a_compile_error() -> None:
    with pytest.raises(CompileError, match="is a statement"):

        @flow
        async def valued(n: int = 0) -> None:
            x = flow.continue_as_new(n=n)
            print(x)


def test_an_input_the_flow_does_not_take_is_a_compile_error() -> None:
    with pytest.raises(CompileError, match="'m', which the flow does not take"):

        @flow
        async def misnamed(n: int = 0) -> None:
            flow.continue_as_new(m=n)


def test_the_loop_cap_points_at_continue_as_new() -> None:
    assert "flow.continue_as_new" in str(LoopLimitExceeded("loop", 10_000))


def test_called_as_plain_python_it_needs_a_run() -> None:
    with pytest.raises(RuntimeError, match="only works inside a flowkit run"):
        flow.continue_as_new(n=1)

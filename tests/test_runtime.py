"""Tests for the in-memory Runtime, on asyncio and trio."""

from __future__ import annotations

import threading
from typing import Any

import anyio
import anyio.lowlevel
import pytest

import flowkit
from flowkit import Backoff, Flow, Node, ResumeError, RunStatus, Runtime

pytestmark = pytest.mark.anyio


async def one() -> int:
    return 1


async def plus_one(value: int) -> int:
    return value + 1


async def after(_: Any = None) -> str:
    return "after"


class Gate:
    """A node body that reports when it started and blocks until released (or cancelled)."""

    def __init__(self) -> None:
        self.started = anyio.Event()
        self.release = anyio.Event()
        self.cancelled = False

    async def __call__(self) -> str:
        self.started.set()
        try:
            await self.release.wait()
        except anyio.get_cancelled_exc_class():
            self.cancelled = True
            raise
        return "released"


class Flaky:
    """Fails ``failures`` times, then returns ``"ok"``; records every context it saw."""

    def __init__(self, failures: int) -> None:
        self.failures = failures
        self.contexts: list[flowkit.NodeContext] = []

    async def __call__(self) -> str:
        ctx = flowkit.context()
        self.contexts.append(ctx)
        ctx.state[f"attempt{ctx.attempt}"] = True
        if len(self.contexts) <= self.failures:
            raise ValueError(f"flaky failure {len(self.contexts)}")
        return "ok"


class TestRun:
    """``rt.run`` runs a flow to its end and describes it in a RunResult."""

    async def test_run_result_fields_of_a_completed_run(self) -> None:
        flow = Flow("chain").node("a", one).node("b", plus_one).edge("a", "b")
        result = await Runtime().run(flow, run_id="r-1")
        assert "r-1" == result.run_id
        assert RunStatus.COMPLETED == result.status
        assert "completed" == result.status
        assert 2 == result.output
        assert result.error is None
        assert {} == result.state
        assert "chain" == result.blueprint_id
        assert 2 == result.unwrap()

    async def test_run_result_of_a_failed_run(self) -> None:
        async def broken() -> None:
            raise ValueError("no luck")

        result = await Runtime().run(Flow("bad").node("a", broken))
        assert RunStatus.FAILED == result.status
        assert result.output is None
        assert isinstance(result.error, flowkit.NodeError)
        assert "a" == result.error.node_id
        assert "no luck" in str(result.error)
        with pytest.raises(flowkit.NodeError):
            result.unwrap()

    async def test_each_node_runs_once_when_it_blocks(self) -> None:
        calls: list[str] = []

        async def blocking(value: Any = None) -> str:
            calls.append(flowkit.context().node_id)
            for _ in range(5):  # yield to the event loop a few times, like real I/O
                await anyio.lowlevel.checkpoint()
            return "done"

        flow = Flow("blocks").node("a", blocking).node("b", blocking).edge("a", "b")
        result = await Runtime().run(flow)
        assert "completed" == result.status
        assert ["a", "b"] == calls

    async def test_run_inputs_reach_the_start_node(self) -> None:
        result = await Runtime().run(Flow("inc").node("a", plus_one), value=41)
        assert 42 == result.output

    async def test_rt_result_returns_the_current_result(self) -> None:
        rt = Runtime()
        done = await rt.run(Flow("one").node("a", one))
        again = await rt.result(done.run_id)
        assert (done.run_id, done.status, done.output) == (again.run_id, again.status, again.output)


class TestStart:
    """``rt.start`` runs a flow in the background of an open runtime."""

    async def test_start_needs_an_open_runtime(self) -> None:
        with pytest.raises(RuntimeError, match="async with"):
            await Runtime().start(Flow("one").node("a", one))

    async def test_start_then_result(self) -> None:
        async with Runtime() as rt:
            handle = await rt.start(Flow("inc").node("a", plus_one), run_id="bg", value=1)
            assert "bg" == handle.run_id
            result = await handle.result()
        assert ("bg", RunStatus.COMPLETED, 2) == (result.run_id, result.status, result.output)

    async def test_start_is_idempotent_per_run_id(self) -> None:
        calls: list[int] = []

        async def counted(value: int) -> int:
            calls.append(value)
            return value

        flow = Flow("once").node("a", counted)
        async with Runtime() as rt:
            first = await rt.start(flow, run_id="same", value=1)
            second = await rt.start(flow, run_id="same", value=2)
            assert first.run_id == second.run_id
            assert 1 == (await second.result()).output
            assert 1 == (await first.result()).output
        assert [1] == calls

    async def test_run_with_the_id_of_a_started_run_waits_for_it(self) -> None:
        flow = Flow("inc").node("a", plus_one)
        async with Runtime() as rt:
            await rt.start(flow, run_id="same", value=1)
            result = await rt.run(flow, run_id="same", value=1)
        assert ("completed", 2) == (result.status, result.output)

    async def test_result_timeout_raises_timeout_error(self) -> None:
        async with Runtime() as rt:
            handle = await rt.start(Flow("hold").wait("never"))
            with pytest.raises(TimeoutError):
                await handle.result(timeout=0.01)
            assert RunStatus.AWAITING == await handle.status()

    async def test_cancel_a_running_flow(self) -> None:
        gate = Gate()
        after: list[str] = []

        async def later(value: str) -> None:
            after.append(value)

        flow = Flow("blocked").node("a", gate).node("b", later).edge("a", "b")
        async with Runtime() as rt:
            handle = await rt.start(flow)
            await gate.started.wait()
            cancelled = await handle.cancel()
            final = await handle.result(timeout=5)
        assert RunStatus.CANCELLED == cancelled.status
        assert RunStatus.CANCELLED == final.status
        assert isinstance(final.error, flowkit.Cancelled)
        assert gate.cancelled
        assert [] == after

    async def test_leaving_the_runtime_cancels_in_flight_nodes(self) -> None:
        gate = Gate()
        async with Runtime() as rt:
            await rt.start(Flow("blocked").node("a", gate))
            await gate.started.wait()
        assert gate.cancelled


class TestTimeouts:
    """A node past its timeout fails with a timeout message, and is retried like a failure."""

    async def test_timeout_fails_the_run(self) -> None:
        gate = Gate()
        result = await Runtime().run(Flow("slow").node("a", gate, timeout="50ms"))
        assert RunStatus.FAILED == result.status
        assert isinstance(result.error, flowkit.NodeError)
        assert "timed out after 0.05s" in str(result.error)
        assert gate.cancelled

    async def test_timed_out_node_is_retried(self) -> None:
        attempts: list[int] = []

        async def slow_then_fast(_: Any) -> str:
            attempts.append(flowkit.context().attempt)
            if len(attempts) == 1:
                await anyio.Event().wait()
            return "fast"

        rt = Runtime()
        retries: list[int | None] = []
        rt.events.subscribe(lambda e: retries.append(e.attempt), types={"node:retry"})
        flow = (
            Flow("slow")
            .node("root", one)
            .node("a", slow_then_fast, timeout="50ms", retries=1)
            .edge("root", "a")
        )
        result = await rt.run(flow)
        assert ("completed", "fast") == (result.status, result.output)
        assert [1, 2] == attempts
        assert [2] == retries


class TestRetries:
    """Failed attempts are retried; exhausted retries fail the run; fallbacks rescue it."""

    async def test_retries_then_success_with_retry_events(self) -> None:
        flaky = Flaky(failures=2)
        rt = Runtime()
        seen: list[tuple[str, int | None]] = []
        rt.events.subscribe(lambda e: seen.append((e.type, e.attempt)), types={"node:retry"})
        result = await rt.run(Flow("flaky").node("a", flaky, retries=2))
        assert ("completed", "ok") == (result.status, result.output)
        assert [1, 2, 3] == [c.attempt for c in flaky.contexts]
        assert [("node:retry", 2), ("node:retry", 3)] == seen

    async def test_retry_with_backoff(self) -> None:
        flaky = Flaky(failures=1)
        flow = Flow("flaky").node("a", flaky, retries=1, backoff=Backoff(initial="1ms"))
        result = await Runtime().run(flow)
        assert ("completed", "ok") == (result.status, result.output)
        assert 2 == len(flaky.contexts)

    async def test_retries_exhausted_fail_the_run(self) -> None:
        flaky = Flaky(failures=5)
        result = await Runtime().run(Flow("flaky").node("a", flaky, retries=2))
        assert RunStatus.FAILED == result.status
        assert isinstance(result.error, flowkit.NodeError)
        assert 3 == result.error.attempt
        assert "flaky failure 3" in str(result.error)
        assert 3 == len(flaky.contexts)

    async def test_fallback_result_becomes_the_node_output(self) -> None:
        async def broken(value: int) -> int:
            raise ValueError("broken")

        def rescue(value: int) -> int:
            return value * 100

        rt = Runtime()
        fallbacks: list[str | None] = []
        rt.events.subscribe(lambda e: fallbacks.append(e.node_id), types={"node:fallback"})
        flow = (
            Flow("rescued")
            .node("a", broken, retries=1, fallback=rescue)
            .node("b", plus_one)
            .edge("a", "b")
        )
        result = await rt.run(flow, value=3)
        assert ("completed", 301) == (result.status, result.output)
        assert ["a"] == fallbacks

    async def test_idempotency_key_is_stable_across_retries(self) -> None:
        flaky = Flaky(failures=2)
        result = await Runtime().run(Flow("keys").node("a", flaky, retries=2), run_id="k-1")
        assert "completed" == result.status
        keys = {c.idempotency_key for c in flaky.contexts}
        assert 1 == len(keys)
        assert ["k-1"] * 3 == [c.run_id for c in flaky.contexts]
        assert ["a"] * 3 == [c.node_id for c in flaky.contexts]

    async def test_idempotency_key_differs_between_nodes(self) -> None:
        keys: list[str] = []

        async def record(value: Any = None) -> None:
            keys.append(flowkit.context().idempotency_key)

        await Runtime().run(Flow("two").node("a", record).node("b", record).edge("a", "b"))
        assert 2 == len(set(keys))


class TestClassNodes:
    """``flowkit.Node`` classes run prep -> exec -> post, and may override fallback."""

    async def test_prep_exec_post(self) -> None:
        calls: list[str] = []

        class Double(Node):
            def prep(self, ctx: flowkit.NodeContext, value: int) -> int:
                calls.append(f"prep:{ctx.node_id}")
                return value

            async def exec(self, prepared: int) -> int:
                calls.append("exec")
                return prepared * 2

            def post(self, ctx: flowkit.NodeContext, result: int) -> dict[str, int]:
                calls.append("post")
                return {"doubled": result}

        flow = Flow("cls").node("a", plus_one).node("d", Double).edge("a", "d")
        result = await Runtime().run(flow, value=20)
        assert ("completed", {"doubled": 42}) == (result.status, result.output)
        assert ["prep:d", "exec", "post"] == calls

    async def test_default_prep_passes_the_single_argument(self) -> None:
        class Triple(Node):
            def exec(self, prepared: int) -> int:
                return prepared * 3

        flow = Flow("cls").node("a", plus_one).node("t", Triple).edge("a", "t")
        result = await Runtime().run(flow, value=1)
        assert ("completed", 6) == (result.status, result.output)

    async def test_class_start_node_receives_matching_run_inputs(self) -> None:
        class Double(Node):
            def prep(self, ctx: flowkit.NodeContext, value: int) -> int:
                return value

            async def exec(self, prepared: int) -> int:
                return prepared * 2

        result = await Runtime().run(Flow("cls").node("d", Double), value=21)
        assert ("completed", 42) == (result.status, result.output)

    async def test_class_fallback_override(self) -> None:
        attempts: list[int] = []

        class Fragile(Node):
            async def exec(self, prepared: Any) -> Any:
                attempts.append(flowkit.context().attempt)
                raise ValueError(f"fragile {prepared}")

            def fallback(self, ctx: flowkit.NodeContext, error: BaseException) -> str:
                return f"fallback after: {error}"

        flow = Flow("cls").node("a", one).node("f", Fragile, retries=1).edge("a", "f")
        result = await Runtime().run(flow)
        assert "completed" == result.status
        assert result.output.startswith("fallback after:")
        assert "fragile 1" in result.output
        assert [1, 2] == attempts


class TestSyncNodes:
    """Sync functions run in a worker thread and can read ``flowkit.context()``."""

    async def test_sync_node_runs_in_a_worker_thread_with_context(self) -> None:
        seen: dict[str, Any] = {}

        def blocking(value: int) -> int:
            ctx = flowkit.context()
            seen.update(thread=threading.get_ident(), node=ctx.node_id, run=ctx.run_id)
            ctx.state["from_thread"] = value
            return value + 1

        result = await Runtime().run(Flow("sync").node("s", blocking), run_id="t-1", value=1)
        assert ("completed", 2) == (result.status, result.output)
        assert threading.get_ident() != seen["thread"]
        assert ("s", "t-1") == (seen["node"], seen["run"])
        assert {"from_thread": 1} == result.state


class TestContext:
    """``flowkit.context()`` describes the running node and its view of the run's state."""

    async def test_context_fields(self) -> None:
        seen: list[flowkit.NodeContext] = []

        async def look() -> None:
            seen.append(flowkit.context())

        await Runtime().run(Flow("ctx").node("n", look), run_id="ctx-1")
        (ctx,) = seen
        assert ("ctx-1", "n", 1) == (ctx.run_id, ctx.node_id, ctx.attempt)
        assert isinstance(ctx.idempotency_key, str)
        assert ctx.idempotency_key
        assert isinstance(ctx.state, flowkit.Context)

    async def test_deadline_is_set_only_with_a_timeout(self) -> None:
        deadlines: dict[str, float | None] = {}

        async def look(_: Any = None) -> None:
            ctx = flowkit.context()
            deadlines[ctx.node_id] = ctx.deadline

        flow = (
            Flow("dl").node("free", look).node("timed", look, timeout="30s").edge("free", "timed")
        )
        await Runtime().run(flow)
        assert deadlines["free"] is None
        assert isinstance(deadlines["timed"], float)

    async def test_context_outside_a_node_raises(self) -> None:
        with pytest.raises(RuntimeError, match="outside a running node"):
            flowkit.context()

    async def test_state_writes_reach_the_result_and_later_nodes(self) -> None:
        async def writer() -> None:
            flowkit.context().state["k"] = "v"

        async def reader(_: Any) -> Any:
            return flowkit.context().state["k"]

        flow = Flow("state").node("w", writer).node("r", reader).edge("w", "r")
        result = await Runtime().run(flow)
        assert ("completed", "v") == (result.status, result.output)
        assert {"k": "v"} == result.state

    async def test_failed_attempt_writes_are_discarded(self) -> None:
        flaky = Flaky(failures=1)
        result = await Runtime().run(Flow("flaky").node("a", flaky, retries=1))
        assert "completed" == result.status
        assert {"attempt2": True} == result.state

    async def test_failed_run_keeps_no_writes_of_the_failing_node(self) -> None:
        flaky = Flaky(failures=1)
        result = await Runtime().run(Flow("flaky").node("a", flaky))
        assert RunStatus.FAILED == result.status
        assert {} == result.state

    async def test_state_deletes_are_applied(self) -> None:
        async def writer() -> None:
            flowkit.context().state.update(keep=1, drop=2)

        async def deleter(_: Any) -> None:
            del flowkit.context().state["drop"]

        flow = Flow("del").node("w", writer).node("d", deleter).edge("w", "d")
        result = await Runtime().run(flow)
        assert {"keep": 1} == result.state


class Meter:
    """Counts nodes running at once; the first ``hold`` of them wait at a gate."""

    def __init__(self, hold: int) -> None:
        self.hold = hold
        self.running = 0
        self.peak = 0
        self.full = anyio.Event()
        self.gate = anyio.Event()

    async def __call__(self, _: Any) -> None:
        self.running += 1
        self.peak = max(self.peak, self.running)
        if self.running >= self.hold:
            self.full.set()
        await self.gate.wait()
        self.running -= 1


def fan_out(meter: Meter, width: int) -> Flow:
    flow = Flow("fan").node("root", one)
    for index in range(width):
        flow.node(f"n{index}", meter).edge("root", f"n{index}")
    return flow


class TestConcurrency:
    """Ready nodes run concurrently, at most ``max_concurrency`` at a time."""

    async def test_max_concurrency_bounds_parallel_nodes(self) -> None:
        meter = Meter(hold=2)
        async with Runtime(max_concurrency=2) as rt:
            handle = await rt.start(fan_out(meter, 6))
            await meter.full.wait()
            meter.gate.set()
            result = await handle.result(timeout=5)
        assert "completed" == result.status
        assert 2 == meter.peak

    async def test_without_a_bound_all_ready_nodes_run_at_once(self) -> None:
        meter = Meter(hold=6)
        async with Runtime() as rt:
            handle = await rt.start(fan_out(meter, 6))
            await meter.full.wait()
            meter.gate.set()
            result = await handle.result(timeout=5)
        assert "completed" == result.status
        assert 6 == meter.peak


class TestAnyJoin:
    """An ``any`` join runs on the first branch to finish and cancels the others."""

    async def test_slower_branch_is_cancelled(self) -> None:
        gate = Gate()

        async def slow(_: Any) -> str:
            return await gate()

        async def fast(_: Any) -> str:
            await gate.started.wait()
            return "fast"

        async def winner(value: str) -> str:
            return f"won by {value}"

        flow = (
            Flow("race")
            .node("root", one)
            .node("slow", slow)
            .node("fast", fast)
            .node("first", winner, join="any")
            .edge("root", "slow")
            .edge("root", "fast")
            .edge("slow", "first")
            .edge("fast", "first")
        )
        result = await Runtime().run(flow)
        assert ("completed", "won by fast") == (result.status, result.output)
        assert gate.cancelled

    async def test_a_racer_another_path_needs_runs_to_the_end(self) -> None:
        fast_won = anyio.Event()

        async def slow(_: Any) -> int:
            await fast_won.wait()  # finishes only after the race was decided
            return 10

        async def fast(_: Any) -> int:
            return 2

        async def first(value: int) -> int:
            fast_won.set()
            return value

        async def both(inputs: dict[str, int]) -> dict[str, int]:
            return inputs

        flow = (
            Flow("race")
            .node("src", one)
            .node("slow", slow)
            .node("fast", fast)
            .node("first", first, join="any")
            .node("both", both, join="all")
            .edge("src", "slow")
            .edge("src", "fast")
            .edge("slow", "first")
            .edge("fast", "first")
            .edge("src", "both")
            .edge("slow", "both")
        )
        result = await Runtime().run(flow)
        assert RunStatus.COMPLETED == result.status
        assert {"first": 2, "both": {"src": 1, "slow": 10}} == result.output
        assert "fast" == result.snapshot()["sections"]["nodes"]["first"][3]


class TestTimers:
    """A sleep pauses the run ``awaiting``; a scheduler (or an open runtime) fires it."""

    async def test_sleep_pauses_then_scheduler_fires_it(self) -> None:
        flow = Flow("nap").sleep("nap", duration="1ms").node("b", after).edge("nap", "b")
        rt = Runtime()
        paused = await rt.run(flow, run_id="nap-1")
        assert RunStatus.AWAITING == paused.status
        async with rt.scheduler():
            final = await rt.handle("nap-1").result(timeout=5)
        assert ("completed", "after") == (final.status, final.output)

    async def test_open_runtime_fires_timers(self) -> None:
        flow = Flow("nap").sleep("nap", duration="1ms").node("b", after).edge("nap", "b")
        async with Runtime() as rt:
            handle = await rt.start(flow)
            final = await handle.result(timeout=5)
        assert ("completed", "after") == (final.status, final.output)

    async def test_cancel_a_sleeping_run(self) -> None:
        rt = Runtime()
        paused = await rt.run(Flow("nap").sleep("nap", duration="1h"))
        cancelled = await rt.cancel(paused.run_id)
        assert RunStatus.CANCELLED == cancelled.status


class TestSignals:
    """Waits resume on signals; unknown runs and names are refused with ResumeError."""

    async def test_wait_then_signal(self) -> None:
        async def echo(data: Any) -> Any:
            return {"got": data}

        flow = Flow("ask").wait("review").node("after", echo).edge("review", "after")
        rt = Runtime()
        paused = await rt.run(flow)
        assert RunStatus.AWAITING == paused.status
        done = await rt.signal(paused.run_id, "review", {"ok": True})
        assert ("completed", {"got": {"ok": True}}) == (done.status, done.output)

    async def test_signal_before_the_wait_is_buffered(self) -> None:
        flow = Flow("late-wait").sleep("nap", duration="1ms").wait("review").edge("nap", "review")
        rt = Runtime()
        paused = await rt.run(flow)
        buffered = await rt.signal(paused.run_id, "review", "early")
        assert RunStatus.AWAITING == buffered.status
        async with rt.scheduler():
            final = await rt.handle(paused.run_id).result(timeout=5)
        assert ("completed", "early") == (final.status, final.output)

    async def test_signal_with_an_unknown_name_raises(self) -> None:
        rt = Runtime()
        paused = await rt.run(Flow("ask").wait("review"))
        with pytest.raises(ResumeError, match="no wait named 'nope'"):
            await rt.signal(paused.run_id, "nope", 1)
        assert RunStatus.AWAITING == (await rt.result(paused.run_id)).status

    async def test_unknown_run_raises(self) -> None:
        rt = Runtime()
        with pytest.raises(ResumeError, match="unknown run"):
            await rt.signal("missing", "review", 1)
        with pytest.raises(ResumeError):
            await rt.result("missing")


class TestBackends:
    """One Runtime object can serve event loops of either backend."""

    def test_bounded_runtime_on_both_backends(self) -> None:
        flow = Flow("fan").node("a", one).node("b", plus_one).node("c", plus_one)
        flow.edge("a", "b").edge("a", "c")
        rt = Runtime(max_concurrency=1)
        outputs = [rt.run_sync(flow, backend=b).output for b in ("trio", "asyncio")]
        assert [{"b": 2, "c": 2}] * 2 == outputs


class TestWorkAddedAsARunGoesQuiet:
    """Work handed to a run in the instant its last task ends is waited for, not orphaned.

    ``first`` wakes the signaller as it returns, so the signal starts ``second`` after
    the run's last task ended but before the task driving the run saw it go quiet;
    ``second`` then blocks, and must still be carried out when it returns.
    """

    async def test_a_signal_sent_as_the_last_task_ends(self) -> None:
        first_done, second_started, hold = anyio.Event(), anyio.Event(), anyio.Event()

        async def first(*_: Any) -> str:
            first_done.set()
            return "first"

        async def second(*_: Any) -> str:
            second_started.set()
            await hold.wait()
            return "second"

        flow = (
            Flow("quiet-race")
            .node("first", first)
            .wait("go")
            .node("second", second)
            .edge("first", "go")
            .edge("go", "second")
        )
        async with Runtime() as rt, anyio.create_task_group() as tg:

            async def signal() -> None:
                await first_done.wait()
                await rt.signal("quiet-1", "go", None)

            async def release() -> None:
                await second_started.wait()
                hold.set()

            tg.start_soon(signal)
            tg.start_soon(release)
            handle = await rt.start(flow, run_id="quiet-1")
            final = await handle.result(timeout=30)
            tg.cancel_scope.cancel()  # the helpers, if the run ended without them
        assert ("completed", "second") == (final.status, final.output)

"""simulate(): signals scripted to arrive at a virtual time, races between waits, cancel_at."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest

import flowkit
from flowkit import RunStatus, flow, node
from flowkit.testing import Simulation, SimulationError, at, never, simulate, simulate_async

pytestmark = pytest.mark.anyio


@pytest.fixture(params=[None, 2], ids=["single", "workers=2"])
def workers(request: pytest.FixtureRequest) -> int | None:
    """Every scripted-signal behaviour holds in both simulate modes."""
    return request.param  # type: ignore[no-any-return]


async def simulated(target: Any, workers: int | None, **options: Any) -> Simulation:
    if workers is not None:
        options["workers"] = workers
    return await simulate_async(target, **options)


@node
async def greet(name: str) -> str:
    return f"Hello, {name}"


@node
async def cleanup() -> str:
    return "cleaned"


@flow
async def sleep_or_signal() -> Any:
    winner = await flow.first(flow.sleep("7d"), flow.wait("x"))
    return winner


@flow
async def wait_a_day() -> str:
    try:
        await flow.wait("x", timeout="1d")
    except flowkit.WaitTimeout:
        return "timed out"
    return "answered"


@flow
async def sleep_then_wait() -> Any:
    await flow.sleep("2d")
    answer = await flow.wait("x")
    return answer


@flow
async def three_answers() -> list[Any]:
    answers = []
    for _ in range(3):
        answer = await flow.wait("x")
        answers.append(answer)
    return answers


@flow
async def three_answers_or_timeouts() -> list[Any]:
    answers = []
    for _ in range(3):
        try:
            answer = await flow.wait("x", timeout="1h")
        except flowkit.WaitTimeout:
            answer = "timed out"
        answers.append(answer)
    return answers


@flow
async def greetings_until_exit() -> list[str]:
    """Temporal's hello_signal sample: greet every `greet` signal until an `exit` signal."""
    greetings = []
    while True:
        signal = await flow.first(flow.wait("greet"), flow.wait("exit"))
        if signal == "exit":
            break
        greeting = await greet(signal)
        greetings.append(greeting)
    return greetings


@flow
async def greetings_after_begin() -> list[str]:
    """hello_signal whose signals all arrive (and are buffered) before the loop starts."""
    await flow.wait("begin")
    greetings = []
    while True:
        signal = await flow.first(flow.wait("greet"), flow.wait("exit"))
        if signal == "exit":
            break
        greeting = await greet(signal)
        greetings.append(greeting)
    return greetings


@flow
async def nap_with_cleanup() -> str:
    try:
        await flow.sleep("1d")
    finally:
        await cleanup()
    return "rested"


@flow
async def nap() -> str:
    await flow.sleep("1d")
    return "rested"


class TestArrivalTimes:
    """at(when, value) arrives at start + when; never() never arrives."""

    async def test_signal_arriving_before_the_sleep_wins_the_race(self, workers: Any) -> None:
        sim = await simulated(sleep_or_signal, workers, signals={"x": at("3d", {"ok": 1})})
        assert (RunStatus.COMPLETED, {"ok": 1}) == (sim.status, sim.output)
        assert timedelta(days=3) == sim.elapsed

    async def test_signal_arriving_after_the_sleep_loses_the_race(self, workers: Any) -> None:
        sim = await simulated(sleep_or_signal, workers, signals={"x": at("8d", {"ok": 1})})
        assert (RunStatus.COMPLETED, None) == (sim.status, sim.output)
        assert timedelta(days=7) == sim.elapsed

    async def test_signal_that_never_arrives_lets_the_sleep_win(self, workers: Any) -> None:
        sim = await simulated(sleep_or_signal, workers, signals={"x": never()})
        assert (RunStatus.COMPLETED, None) == (sim.status, sim.output)
        assert timedelta(days=7) == sim.elapsed

    async def test_unscripted_wait_lets_the_sleep_win(self, workers: Any) -> None:
        sim = await simulated(sleep_or_signal, workers)
        assert (RunStatus.COMPLETED, None) == (sim.status, sim.output)
        assert timedelta(days=7) == sim.elapsed

    async def test_signal_that_never_arrives_times_the_wait_out(self, workers: Any) -> None:
        sim = await simulated(wait_a_day, workers, signals={"x": never()})
        assert (RunStatus.COMPLETED, "timed out") == (sim.status, sim.output)
        assert timedelta(days=1) == sim.elapsed

    async def test_signal_arriving_after_the_timeout_is_too_late(self, workers: Any) -> None:
        sim = await simulated(wait_a_day, workers, signals={"x": at("2d", "late")})
        assert (RunStatus.COMPLETED, "timed out") == (sim.status, sim.output)
        assert timedelta(days=1) == sim.elapsed

    async def test_signal_arriving_before_its_wait_is_buffered(self, workers: Any) -> None:
        sim = await simulated(sleep_then_wait, workers, signals={"x": at("1d", "early")})
        assert (RunStatus.COMPLETED, "early") == (sim.status, sim.output)
        assert timedelta(days=2) == sim.elapsed

    async def test_list_mixes_arrival_times_and_answers(self, workers: Any) -> None:
        sim = await simulated(three_answers, workers, signals={"x": ["a", at("3d", "b"), "c"]})
        assert (RunStatus.COMPLETED, ["a", "b", "c"]) == (sim.status, sim.output)
        assert timedelta(days=3) == sim.elapsed

    async def test_never_in_a_list_leaves_one_wait_unanswered(self, workers: Any) -> None:
        script = {"x": ["a", never(), lambda state: "c"]}
        sim = await simulated(three_answers_or_timeouts, workers, signals=script)
        assert (RunStatus.COMPLETED, ["a", "timed out", "c"]) == (sim.status, sim.output)
        assert timedelta(hours=1) == sim.elapsed

    async def test_arrivals_keep_their_order(self, workers: Any) -> None:
        script = {"x": [at("2d", "first"), at("1d", "second"), at("5d", "third")]}
        sim = await simulated(three_answers, workers, signals=script)
        assert ["first", "second", "third"] == sim.output
        assert timedelta(days=5) == sim.elapsed

    async def test_wait_never_answered_leaves_the_run_awaiting(self, workers: Any) -> None:
        sim = await simulated(sleep_then_wait, workers, signals={"x": never()})
        assert (RunStatus.AWAITING, None) == (sim.status, sim.error)
        assert timedelta(days=2) == sim.elapsed

    async def test_unscripted_wait_fails_once_nothing_else_can_move(self, workers: Any) -> None:
        sim = await simulated(sleep_then_wait, workers)
        assert RunStatus.FAILED == sim.status
        assert isinstance(sim.error, SimulationError)
        assert "no signal scripted for wait 'x'" in str(sim.error)
        assert timedelta(days=2) == sim.elapsed

    async def test_signal_for_a_name_no_wait_uses_fails_clearly(self, workers: Any) -> None:
        sim = await simulated(sleep_then_wait, workers, signals={"x": "a", "y": at("1d", 1)})
        assert RunStatus.FAILED == sim.status
        assert isinstance(sim.error, SimulationError)
        assert "signal 'y' scripted to arrive at 1 day" in str(sim.error)

    def test_bad_arrival_time_raises_saying_what_to_pass(self) -> None:
        with pytest.raises(SimulationError, match=r"at\('soon'\): invalid duration 'soon'"):
            at("soon", 1)


class TestRacesBetweenWaits:
    """flow.first of two waits: the same greetings in-memory, simulated and distributed."""

    GREETED = ["Hello, user1", "Hello, user2", "Hello, user3"]

    async def test_runtime_simulate_and_workers_agree(self) -> None:
        async with flowkit.Runtime() as rt:
            await rt.start(greetings_until_exit, run_id="hello")
            for name in ("user1", "user2", "user3"):
                await rt.signal("hello", "greet", name)
            real = await rt.signal("hello", "exit", "exit")
        script = {"greet": ["user1", "user2", "user3"], "exit": "exit"}
        single = await simulate_async(greetings_until_exit, signals=script)
        distributed = await simulate_async(greetings_until_exit, signals=script, workers=2)
        outcomes = [(r.status, r.output) for r in (real, single, distributed)]
        assert [(RunStatus.COMPLETED, self.GREETED)] * 3 == outcomes

    async def test_open_waits_are_answered_in_the_order_reached(self, workers: Any) -> None:
        script = {"exit": "exit", "greet": ["user1"]}  # exit could answer every time
        sim = await simulated(greetings_until_exit, workers, signals=script)
        assert (RunStatus.COMPLETED, ["Hello, user1"]) == (sim.status, sim.output)

    async def test_runtime_keeps_a_buffered_signal_the_race_did_not_use(self) -> None:
        async with flowkit.Runtime() as rt:
            await rt.start(greetings_after_begin, run_id="hello")
            for name in ("user1", "user2", "user3"):
                await rt.signal("hello", "greet", name)
            await rt.signal("hello", "exit", "exit")
            result = await rt.signal("hello", "begin")
        assert (RunStatus.COMPLETED, self.GREETED) == (result.status, result.output)

    async def test_simulate_keeps_a_buffered_signal_the_race_did_not_use(
        self, workers: Any
    ) -> None:
        script = {
            "begin": at("1d"),
            "greet": [at("1h", "user1"), at("1h", "user2"), at("1h", "user3")],
            "exit": at("2h", "exit"),
        }
        sim = await simulated(greetings_after_begin, workers, signals=script)
        assert (RunStatus.COMPLETED, self.GREETED) == (sim.status, sim.output)


class TestCancelAt:
    """cancel_at=: the top-level run is cancelled when the virtual clock reaches it."""

    async def test_run_is_cancelled_at_that_time(self, workers: Any) -> None:
        sim = await simulated(nap, workers, cancel_at="2h")
        assert RunStatus.CANCELLED == sim.status
        assert timedelta(hours=2) == sim.elapsed

    async def test_finished_run_is_not_cancelled(self, workers: Any) -> None:
        sim = await simulated(nap, workers, cancel_at="3d")
        assert (RunStatus.COMPLETED, "rested") == (sim.status, sim.output)
        assert timedelta(days=1) == sim.elapsed

    async def test_cancelled_run_runs_its_finally_block(self, workers: Any) -> None:
        sim = await simulated(nap_with_cleanup, workers, cancel_at="2h")
        assert RunStatus.CANCELLED == sim.status
        assert 1 == len(sim.calls(cleanup))
        assert timedelta(hours=2) == sim.elapsed

    def test_bad_cancel_time_raises_saying_what_to_pass(self) -> None:
        with pytest.raises(SimulationError, match=r"cancel_at='later': invalid duration"):
            simulate(nap, cancel_at="later")

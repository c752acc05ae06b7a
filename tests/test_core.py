"""Tests for the deterministic core, driven by hand: events in, commands out, no runtime."""

from __future__ import annotations

import random
import zlib
from typing import Any

import attrs
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from flowkit import Action, Backoff
from flowkit.blueprint import Blueprint, EdgeSpec, NodeConfig, NodeSpec
from flowkit.core import _protocol as p
from flowkit.core._machine import handle_event, start_run
from flowkit.core._program import Program
from flowkit.core._state import DELETED, RunState, RunStatus
from flowkit.testing.strategies import blueprints


def work(value: Any = None) -> Any:
    """The implementation registered for every call node (the tests play its part)."""
    return value


REGISTRY: dict[str, Any] = {"work": work, "inc": work, "rescue": work}


def call(node_id: str, **kwargs: Any) -> NodeSpec:
    return NodeSpec(node_id, "call", uses="work", **kwargs)


def config(**kwargs: Any) -> NodeConfig:
    return NodeConfig(**kwargs)


def graph(
    *pairs: str, nodes: tuple[NodeSpec, ...] = (), edges: tuple[EdgeSpec, ...] = ()
) -> Blueprint:
    """Call nodes wired by ``"a>b"`` pairs, plus extra ``nodes`` and ``edges``."""
    plain = [EdgeSpec(*pair.split(">")) for pair in pairs]
    everything = [*plain, *edges]
    extra = {n.id for n in nodes}
    named = dict.fromkeys(n for e in everything for n in (e.source, e.target))
    specs = [call(n) for n in named if n not in extra]
    ordered = {s.id: s for s in [*specs, *nodes]}
    return Blueprint(id="g", nodes=tuple(ordered.values()), edges=tuple(everything))


class Driver:
    """Feeds events to the core and keeps track of what the shell would be doing."""

    def __init__(self, blueprint: Blueprint, run_id: str = "run-1") -> None:
        self.program = Program(blueprint, REGISTRY)
        self.state = RunState(run_id)
        self.inflight: dict[str, p.ExecuteNode] = {}
        self.timers: dict[str, p.StartTimer] = {}
        self.executed: list[p.ExecuteNode] = []
        self.finish: p.FinishRun | None = None
        self.late: list[p.Command] = []

    def start(self, **inputs: Any) -> list[p.Command]:
        return self._track(start_run(self.program, self.state, inputs))

    def send(self, event: p.Event) -> list[p.Command]:
        if isinstance(event, p.NodeCompleted | p.NodeFailed):
            self.inflight.pop(event.dispatch_id, None)
        if isinstance(event, p.TimerFired):
            self.timers.pop(event.timer_id, None)
        return self._track(handle_event(self.program, self.state, event))

    def dispatch_of(self, node_id: str) -> p.ExecuteNode:
        found = [c for c in self.inflight.values() if c.node_id == node_id]
        assert 1 == len(found), f"expected one dispatch of {node_id!r}, got {found}"
        return found[0]

    def complete(self, node_id: str, output: Any = None, **kwargs: Any) -> list[p.Command]:
        return self.send(p.NodeCompleted(self.dispatch_of(node_id).dispatch_id, output, **kwargs))

    def fail(self, node_id: str, message: str = "boom", **kwargs: Any) -> list[p.Command]:
        info = {"type": "builtins.ValueError", "mro": ["builtins.ValueError"], "message": message}
        return self.send(p.NodeFailed(self.dispatch_of(node_id).dispatch_id, info, **kwargs))

    def fire(self, timer_id: str) -> list[p.Command]:
        return self.send(p.TimerFired(timer_id))

    def _track(self, commands: list[p.Command]) -> list[p.Command]:
        if self.finish is not None:
            self.late.extend(c for c in commands if not isinstance(c, p.Note))
        for command in commands:
            if isinstance(command, p.ExecuteNode):
                self.inflight[command.dispatch_id] = command
                self.executed.append(command)
            elif isinstance(command, p.CancelNode):
                self.inflight.pop(command.dispatch_id, None)
            elif isinstance(command, p.StartTimer):
                self.timers[command.timer_id] = command
            elif isinstance(command, p.CancelTimer):
                self.timers.pop(command.timer_id, None)
            elif isinstance(command, p.FinishRun):
                self.finish = command
        return commands

    def ran(self) -> list[str]:
        return [c.node_id for c in self.executed]


def of(kind: type, commands: list[p.Command]) -> list[Any]:
    return [c for c in commands if isinstance(c, kind)]


def execute_ids(commands: list[p.Command]) -> list[str]:
    return [c.node_id for c in of(p.ExecuteNode, commands)]


def notes(commands: list[p.Command], type_: str) -> list[p.Note]:
    return [c for c in of(p.Note, commands) if c.type == type_]


class TestSequence:
    """Nodes in a chain run one after another, each fed its predecessor's output."""

    def test_chain_runs_in_order_and_outputs_the_terminal_value(self) -> None:
        d = Driver(graph("a>b", "b>c"))
        first = d.start(x=1)
        assert ["a"] == execute_ids(first)
        assert ["b"] == execute_ids(d.complete("a", 10))
        assert (10,) == d.dispatch_of("b").args
        assert ["c"] == execute_ids(d.complete("b", 20))
        assert (20,) == d.dispatch_of("c").args
        last = d.complete("c", 30)
        assert [p.FinishRun("completed", 30, None)] == of(p.FinishRun, last)
        assert RunStatus.COMPLETED == d.state.status

    def test_start_node_gets_the_run_inputs_matching_its_parameters(self) -> None:
        d = Driver(graph(nodes=(call("a"),)))
        (command,) = of(p.ExecuteNode, d.start(value=5, other=6))
        assert {"value": 5} == command.kwargs
        assert () == command.args

    def test_dispatch_carries_attempt_and_a_run_scoped_idempotency_key(self) -> None:
        d = Driver(graph(nodes=(call("a"),)), run_id="r-9")
        (command,) = of(p.ExecuteNode, d.start())
        assert 1 == command.attempt
        assert command.idempotency_key.startswith("r-9:")
        assert not command.fallback

    def test_several_terminals_give_a_dict_output(self) -> None:
        d = Driver(graph("a>b", "a>c"))
        d.start()
        d.complete("a", 1)
        d.complete("b", 2)
        d.complete("c", 3)
        assert d.finish is not None
        assert {"b": 2, "c": 3} == d.finish.output


class TestJoins:
    """``all`` joins wait for every predecessor; ``any`` joins fire once on the first."""

    def test_diamond_join_fires_once_after_both_branches(self) -> None:
        d = Driver(graph("a>b", "a>c", "b>d", "c>d"))
        d.start()
        assert ["b", "c"] == sorted(execute_ids(d.complete("a", 1)))
        assert [] == execute_ids(d.complete("c", 3))
        assert ["d"] == execute_ids(d.complete("b", 2))
        assert ({"b": 2, "c": 3},) == d.dispatch_of("d").args
        d.complete("d", 4)
        assert ["a", "b", "c", "d"] == sorted(d.ran())
        assert p.FinishRun("completed", 4, None) == d.finish

    def test_any_join_fires_once_even_when_later_branches_complete(self) -> None:
        join = call("d", config=config(join="any"))
        d = Driver(graph("a>b", "a>c", "c>c2", "b>d", "c2>d", nodes=(join,)))
        d.start()
        d.complete("a", 1)
        assert ["d"] == execute_ids(d.complete("b", 2))
        assert (2,) == d.dispatch_of("d").args
        d.complete("d", 9)
        assert ["c2"] == execute_ids(d.complete("c", 3))
        assert [] == execute_ids(d.complete("c2", 4))
        assert 1 == d.ran().count("d")
        assert d.finish is not None
        assert "completed" == d.finish.status

    def test_any_join_cancels_in_flight_predecessors(self) -> None:
        join = call("d", config=config(join="any"))
        d = Driver(graph("a>b", "a>c", "b>d", "c>d", nodes=(join,)))
        d.start()
        d.complete("a", 1)
        c_dispatch = d.dispatch_of("c").dispatch_id
        commands = d.complete("b", 2)
        assert [p.CancelNode(c_dispatch)] == of(p.CancelNode, commands)
        assert [] == d.send(p.NodeCompleted(c_dispatch, 3))
        d.complete("d", 5)
        assert ["a", "b", "c", "d"] == sorted(d.ran())
        assert p.FinishRun("completed", 5, None) == d.finish

    def test_any_join_cancels_only_racers_no_other_path_needs(self) -> None:
        first = call("first", config=config(join="any"))
        d = Driver(
            graph(
                "src>slow",
                "src>fast",
                "slow>first",
                "fast>first",
                "src>both",
                "slow>both",
                "src>lone",
                "lone>first",
                nodes=(first,),
            )
        )
        d.start()
        d.complete("src", 1)
        lone = d.dispatch_of("lone").dispatch_id
        commands = d.complete("fast", 2)
        assert [p.CancelNode(lone)] == of(p.CancelNode, commands)
        assert ["first"] == execute_ids(commands)
        assert "fast" == d.state.sections["nodes"]["first"][3]
        assert ["both"] == execute_ids(d.complete("slow", 10))
        assert ({"src": 1, "slow": 10},) == d.dispatch_of("both").args

    def test_a_failed_racer_another_path_needs_fails_the_run(self) -> None:
        first = call("first", config=config(join="any"))
        d = Driver(
            graph(
                "src>slow",
                "src>fast",
                "slow>first",
                "fast>first",
                "src>both",
                "slow>both",
                nodes=(first,),
            )
        )
        d.start()
        d.complete("src", 1)
        d.fail("slow", "needed by both")
        assert d.finish is not None
        assert ("failed", "slow") == (d.finish.status, d.finish.error["node"])

    def test_a_failed_racer_only_the_race_needs_is_a_skip(self) -> None:
        first = call("first", config=config(join="any"))
        d = Driver(graph("src>slow", "src>fast", "slow>first", "fast>first", nodes=(first,)))
        d.start()
        d.complete("src", 1)
        assert [] == execute_ids(d.fail("slow"))
        assert ["first"] == execute_ids(d.complete("fast", 2))

    def test_any_join_skipped_when_no_predecessor_edge_is_taken(self) -> None:
        join = call("d", config=config(join="any"))
        routed = (EdgeSpec("a", "b", action="x"), EdgeSpec("a", "c", action="x"))
        d = Driver(graph("b>d", "c>d", nodes=(join,), edges=routed))
        d.start()
        d.complete("a", 1)
        assert ["a"] == d.ran()
        assert d.finish is not None
        assert "completed" == d.finish.status

    def test_any_join_cancels_a_sleeping_predecessor(self) -> None:
        sleeper = NodeSpec("b", "sleep", params={"duration": 60})
        join = call("d", config=config(join="any"))
        d = Driver(graph("a>b", "a>c", "b>d", "c>d", nodes=(sleeper, join)))
        d.start()
        d.complete("a", 1)
        assert ["sleep:b@1"] == list(d.timers)
        d.complete("c", 3)
        d.complete("d", 4)
        assert {} == d.timers
        assert p.FinishRun("completed", 4, None) == d.finish

    def test_any_join_cancelling_a_batch_skips_it_once(self) -> None:
        batch = call("B", params={"map": True, "items": "$input.items"})
        join = call("d", config=config(join="any"))
        d = Driver(graph("a>B", "a>c", "B>d", "c>d", "d>j", nodes=(batch, join)))
        d.start(items=[1, 2])
        d.complete("a", 0)
        commands = d.complete("c", 3)  # d runs; both in-flight items of B are cancelled
        assert 2 == len(of(p.CancelNode, commands))
        assert ["d"] == execute_ids(commands)
        assert ["j"] == execute_ids(d.complete("d", 4))
        assert (4,) == d.dispatch_of("j").args

    def test_any_join_leaves_a_batch_another_join_needs_running(self) -> None:
        batch = call("B", params={"map": True, "items": "$input.items"})
        join = call("d", config=config(join="any"))
        d = Driver(graph("a>B", "a>c", "a>k", "B>d", "c>d", "B>j", "k>j", nodes=(batch, join)))
        d.start(items=[1, 2])
        d.complete("a", 0)
        assert [] == of(p.CancelNode, d.complete("c", 3))
        d.complete("k", 4)
        for command in [c for c in d.inflight.values() if c.node_id == "B"]:
            d.send(p.NodeCompleted(command.dispatch_id, command.args[0] * 10))
        assert ({"B": [10, 20], "k": 4},) == d.dispatch_of("j").args


class TestSkips:
    """Untaken action and ``when`` edges skip their branch, so joins never stall."""

    def test_untaken_action_branch_is_skipped_and_the_join_still_fires(self) -> None:
        routed = (EdgeSpec("a", "b", action="left"), EdgeSpec("a", "c", action="right"))
        d = Driver(graph("c>c2", "b>d", "c2>d", edges=routed))
        d.start()
        assert ["b"] == execute_ids(d.complete("a", Action("left", 7)))
        assert (7,) == d.dispatch_of("b").args
        assert ["d"] == execute_ids(d.complete("b", 8))
        assert ({"b": 8},) == d.dispatch_of("d").args
        d.complete("d", 9)
        assert ["a", "b", "d"] == d.ran()
        assert p.FinishRun("completed", 9, None) == d.finish

    def test_action_can_come_as_a_field_of_the_completion(self) -> None:
        routed = (EdgeSpec("a", "b", action="left"), EdgeSpec("a", "c", action="right"))
        d = Driver(graph(edges=routed))
        d.start()
        assert ["c"] == execute_ids(d.complete("a", 5, action="right"))
        assert (5,) == d.dispatch_of("c").args

    def test_untaken_when_branch_is_skipped(self) -> None:
        routed = (
            EdgeSpec("a", "big", when="result > 10"),
            EdgeSpec("a", "small", when="result <= 10"),
        )
        d = Driver(graph("big>end", "small>end", edges=routed))
        d.start()
        assert ["small"] == execute_ids(d.complete("a", 3))
        assert ["end"] == execute_ids(d.complete("small", 4))
        d.complete("end", 5)
        assert ["a", "small", "end"] == d.ran()

    def test_when_sees_state_and_input(self) -> None:
        routed = (EdgeSpec("a", "b", when="state['go'] and input['n'] == 2"),)
        d = Driver(graph(edges=routed))
        d.start(n=2)
        assert ["b"] == execute_ids(d.complete("a", 1, writes={"go": True}))

    def test_condition_that_fails_to_evaluate_fails_the_run(self) -> None:
        d = Driver(graph(edges=(EdgeSpec("a", "b", when="result['x'] > 1"),)))
        d.start()
        d.complete("a", None)
        assert d.finish is not None
        assert d.finish.error is not None
        assert ("failed", "a") == (d.finish.status, d.finish.error["node"])
        assert "result['x'] > 1" in d.finish.error["message"]
        assert [] == d.late

    def test_edge_without_action_is_taken_whatever_the_action(self) -> None:
        routed = (EdgeSpec("a", "b", action="left"), EdgeSpec("a", "c"))
        d = Driver(graph(edges=routed))
        d.start()
        assert ["c"] == execute_ids(d.complete("a", Action("right", 1)))

    def test_skips_propagate_through_chains_and_nested_joins(self) -> None:
        routed = (EdgeSpec("a", "b", action="go"), EdgeSpec("a", "x", action="never"))
        d = Driver(graph("b>j1", "x>x2", "x2>j1", "x2>j2", "j1>j2", edges=routed))
        d.start()
        d.complete("a", Action("go", 1))
        assert ["j1"] == execute_ids(d.complete("b", 2))
        assert ["j2"] == execute_ids(d.complete("j1", 3))
        assert ({"j1": 3},) == d.dispatch_of("j2").args
        d.complete("j2", 4)
        assert p.FinishRun("completed", 4, None) == d.finish

    def test_nothing_taken_completes_the_run_instead_of_stalling(self) -> None:
        routed = (EdgeSpec("a", "b", action="left"), EdgeSpec("a", "c", action="right"))
        d = Driver(graph("b>d", "c>d", "d>e", edges=routed))
        d.start()
        commands = d.complete("a", 1)
        assert [] == execute_ids(commands)
        assert [] == notes(commands, "workflow:stall")
        assert d.finish is not None
        assert "completed" == d.finish.status


class TestRetries:
    """Failed attempts are retried (now, or after a backoff timer) until retries run out."""

    def test_failure_with_retries_left_dispatches_the_next_attempt(self) -> None:
        d = Driver(graph(nodes=(call("a", config=config(retries=2)),)))
        first = of(p.ExecuteNode, d.start(value=1))[0]
        commands = d.fail("a")
        (retry,) = of(p.ExecuteNode, commands)
        assert 2 == retry.attempt
        assert first.kwargs == retry.kwargs
        assert first.idempotency_key == retry.idempotency_key
        assert first.dispatch_id != retry.dispatch_id
        assert [p.Note("node:retry", "a", 2, {"delay": 0.0})] == notes(commands, "node:retry")
        assert ["node:error"] == [n.type for n in of(p.Note, commands) if n.type == "node:error"]

    def test_retry_then_success_completes_the_run(self) -> None:
        d = Driver(graph(nodes=(call("a", config=config(retries=2)),)))
        d.start()
        d.fail("a")
        d.fail("a")
        assert 3 == d.dispatch_of("a").attempt
        d.complete("a", "ok")
        assert p.FinishRun("completed", "ok", None) == d.finish

    def test_backoff_starts_a_retry_timer_instead_of_dispatching(self) -> None:
        backoff = Backoff(initial=2, factor=3.0, max=100)
        d = Driver(graph(nodes=(call("a", config=config(retries=2, backoff=backoff)),)))
        d.start()
        commands = d.fail("a")
        assert [] == of(p.ExecuteNode, commands)
        (timer,) = of(p.StartTimer, commands)
        assert ("retry", 2.0, "a") == (timer.purpose, timer.delay, timer.node_id)
        assert [p.Note("node:retry", "a", 2, {"delay": 2.0})] == notes(commands, "node:retry")
        assert RunStatus.AWAITING == d.state.status
        (retry,) = of(p.ExecuteNode, d.fire(timer.timer_id))
        assert 2 == retry.attempt
        (second,) = of(p.StartTimer, d.fail("a"))
        assert 6.0 == second.delay

    def test_retry_timer_fired_twice_dispatches_once(self) -> None:
        backoff = Backoff(initial=1)
        d = Driver(graph(nodes=(call("a", config=config(retries=1, backoff=backoff)),)))
        d.start()
        (timer,) = of(p.StartTimer, d.fail("a"))
        assert 1 == len(of(p.ExecuteNode, d.fire(timer.timer_id)))
        assert [] == d.fire(timer.timer_id)
        assert 1 == len(d.inflight)

    def test_exhausted_retries_fail_the_run(self) -> None:
        d = Driver(graph("a>b", nodes=(call("a", config=config(retries=1)),)))
        d.start()
        d.fail("a", "first")
        commands = d.fail("a", "second")
        assert [] == of(p.ExecuteNode, commands)
        assert d.finish is not None
        assert "failed" == d.finish.status
        assert d.finish.error is not None
        assert ("a", "second") == (d.finish.error["node"], d.finish.error["message"])
        assert ["a", "a"] == d.ran()
        assert RunStatus.FAILED == d.state.status

    def test_non_retryable_failure_is_not_retried(self) -> None:
        d = Driver(graph(nodes=(call("a", config=config(retries=3)),)))
        d.start()
        commands = d.fail("a", retryable=False)
        assert [] == of(p.ExecuteNode, commands)
        assert d.finish is not None
        assert "failed" == d.finish.status


class TestFallback:
    """Once the attempts are used up, the fallback is dispatched and its result flows on."""

    def test_fallback_is_dispatched_after_the_last_attempt(self) -> None:
        spec = call("a", config=config(retries=1, fallback="rescue"))
        d = Driver(graph("a>b", nodes=(spec,)))
        original = of(p.ExecuteNode, d.start(value=4))[0]
        d.fail("a")
        commands = d.fail("a")
        (fallback,) = of(p.ExecuteNode, commands)
        assert fallback.fallback
        assert 3 == fallback.attempt
        assert original.kwargs == fallback.kwargs
        assert [p.Note("node:fallback", "a", 2)] == notes(commands, "node:fallback")
        assert d.finish is None

    def test_fallback_output_routes_on_as_the_node_result(self) -> None:
        d = Driver(graph("a>b", nodes=(call("a", config=config(fallback="rescue")),)))
        d.start()
        d.fail("a")
        assert ["b"] == execute_ids(d.complete("a", "rescued", fallback=True))
        assert ("rescued",) == d.dispatch_of("b").args

    def test_failing_fallback_fails_the_run(self) -> None:
        d = Driver(graph(nodes=(call("a", config=config(retries=2, fallback="rescue")),)))
        d.start()
        d.fail("a")
        d.fail("a")
        d.fail("a")
        assert d.dispatch_of("a").fallback
        d.fail("a", "fallback broke")
        assert d.finish is not None
        assert "failed" == d.finish.status
        assert 4 == len(d.executed)


class TestIdempotency:
    """Duplicate and stale events change nothing."""

    def test_duplicate_completion_is_a_no_op(self) -> None:
        d = Driver(graph("a>b", "a>c", "b>d", "c>d"))
        d.start()
        d.complete("a", 1)
        b = d.dispatch_of("b").dispatch_id
        d.send(p.NodeCompleted(b, 2))
        d.state.take_delta()
        assert [] == d.send(p.NodeCompleted(b, 2))
        assert [] == d.send(p.NodeCompleted(b, 99))
        assert [] == d.state.take_delta()
        d.complete("c", 3)
        assert ({"b": 2, "c": 3},) == d.dispatch_of("d").args

    def test_duplicate_failure_is_a_no_op(self) -> None:
        d = Driver(graph(nodes=(call("a", config=config(retries=1)),)))
        d.start()
        first = d.dispatch_of("a")
        d.fail("a")
        info = {"type": "builtins.ValueError", "mro": [], "message": "again"}
        assert [] == d.send(p.NodeFailed(first.dispatch_id, info))
        assert 2 == d.dispatch_of("a").attempt

    def test_sleep_timer_fired_twice_is_a_no_op(self) -> None:
        sleeper = NodeSpec("s", "sleep", params={"duration": 5})
        d = Driver(graph("s>b", nodes=(sleeper,)))
        (timer,) = of(p.StartTimer, d.start())
        assert ("sleep", 5.0) == (timer.purpose, timer.delay)
        assert ["b"] == execute_ids(d.fire(timer.timer_id))
        assert [] == d.fire(timer.timer_id)
        assert ["b"] == d.ran()

    def test_events_after_the_run_finished_are_ignored(self) -> None:
        d = Driver(graph(nodes=(call("a"),)))
        d.start()
        dispatch = d.dispatch_of("a").dispatch_id
        d.complete("a", 1)
        assert [] == d.send(p.NodeCompleted(dispatch, 2))
        assert [] == d.send(p.SignalReceived("x", 1))
        assert [] == d.send(p.CancelRequested())
        assert RunStatus.COMPLETED == d.state.status


class TestBatch:
    """A batch dispatches at most ``concurrency`` items at once and gathers in input order."""

    @pytest.mark.parametrize("seed", range(5))
    def test_concurrency_bound_and_input_order(self, seed: int) -> None:
        batch = call("B", params={"map": True, "items": "$input.items", "concurrency": 3})
        d = Driver(graph(nodes=(batch,)))
        items = list(range(10))
        commands = d.start(items=items)
        assert 3 == len(of(p.ExecuteNode, commands))
        assert [p.Note("batch:start", "B", None, {"size": 10, "concurrency": 3})] == notes(
            commands, "batch:start"
        )
        rng = random.Random(seed)
        peak = 0
        while d.inflight:
            peak = max(peak, len(d.inflight))
            command = rng.choice(sorted(d.inflight.values(), key=lambda c: c.dispatch_id))
            d.send(p.NodeCompleted(command.dispatch_id, command.args[0] * 10))
        assert 3 == peak
        assert sorted(items) == sorted(c.args[0] for c in d.executed)
        assert p.FinishRun("completed", [i * 10 for i in items], None) == d.finish

    def test_empty_batch_completes_with_an_empty_list(self) -> None:
        batch = call("B", params={"map": True, "items": "$input.items"})
        d = Driver(graph("B>after", nodes=(batch,)))
        assert ["after"] == execute_ids(d.start(items=[]))
        assert ([],) == d.dispatch_of("after").args

    def test_batch_items_from_the_predecessor(self) -> None:
        batch = call("B", params={"map": True, "concurrency": 1})
        d = Driver(graph("a>B", nodes=(batch,)))
        d.start()
        assert [("x",)] == [c.args for c in of(p.ExecuteNode, d.complete("a", ["x", "y"]))]
        d.complete("B", "X")
        d.complete("B", "Y")
        assert p.FinishRun("completed", ["X", "Y"], None) == d.finish

    def test_failed_item_is_retried_on_its_own(self) -> None:
        batch = call("B", params={"map": True, "items": "$input.items"}, config=config(retries=1))
        d = Driver(graph(nodes=(batch,)))
        d.start(items=["p", "q"])
        failing = next(c for c in d.inflight.values() if c.args == ("q",))
        info = {"type": "builtins.ValueError", "mro": [], "message": "boom"}
        (retry,) = of(p.ExecuteNode, d.send(p.NodeFailed(failing.dispatch_id, info)))
        assert (("q",), 2) == (retry.args, retry.attempt)
        for command in list(d.inflight.values()):
            d.send(p.NodeCompleted(command.dispatch_id, command.args[0].upper()))
        assert p.FinishRun("completed", ["P", "Q"], None) == d.finish

    def test_item_failure_cancels_the_other_items_and_fails_the_run(self) -> None:
        batch = call("B", params={"map": True, "items": "$input.items"})
        d = Driver(graph(nodes=(batch,)))
        d.start(items=[1, 2, 3])
        failing, *others = sorted(d.inflight.values(), key=lambda c: c.args)
        info = {"type": "builtins.ValueError", "mro": [], "message": "bad item"}
        commands = d.send(p.NodeFailed(failing.dispatch_id, info))
        assert sorted(c.dispatch_id for c in others) == sorted(
            c.dispatch_id for c in of(p.CancelNode, commands)
        )
        assert d.finish is not None
        assert ("failed", 0) == (d.finish.status, d.finish.error and d.finish.error["item"])


def poll_loop(max_iterations: int) -> Blueprint:
    """fetch -> check -> until (loop back to fetch while ``not result['ready']``) -> done."""
    loop = NodeSpec(
        "until",
        "loop",
        params={
            "start": "fetch",
            "condition": "not result['ready']",
            "max_iterations": max_iterations,
        },
    )
    return graph("fetch>check", "check>until", "until>fetch", "until>done", nodes=(loop,))


def drive_loop(d: Driver, ready_on: int) -> int:
    """Complete fetch/check until the run ends; check reports ready on pass ``ready_on``."""
    passes = 0
    d.start()
    while d.finish is None:
        if "fetch" in {c.node_id for c in d.inflight.values()}:
            passes += 1
            d.complete("fetch", passes)
        elif "check" in {c.node_id for c in d.inflight.values()}:
            d.complete("check", {"ready": passes >= ready_on, "n": passes})
        else:
            d.complete("done", "finished")
    return passes


class TestLoop:
    """A builder loop repeats its body until the condition is false, up to its cap."""

    def test_loop_repeats_until_the_condition_is_false(self) -> None:
        d = Driver(poll_loop(max_iterations=10))
        assert 3 == drive_loop(d, ready_on=3)
        assert ({"ready": True, "n": 3},) == next(c.args for c in d.executed if c.node_id == "done")
        assert p.FinishRun("completed", "finished", None) == d.finish

    def test_exceeding_max_iterations_fails_with_a_clear_message(self) -> None:
        d = Driver(poll_loop(max_iterations=3))
        drive_loop(d, ready_on=1000)
        assert d.finish is not None
        assert "failed" == d.finish.status
        error = d.finish.error
        assert error is not None
        assert "until" == error["node"]
        assert "loop 'until' exceeded max_iterations=3" in error["message"]
        assert "done" not in d.ran()

    def test_body_runs_at_most_max_iterations_times(self) -> None:
        d = Driver(poll_loop(max_iterations=3))
        assert 3 == drive_loop(d, ready_on=1000)

    def test_loop_may_finish_on_its_last_allowed_iteration(self) -> None:
        d = Driver(poll_loop(max_iterations=3))
        drive_loop(d, ready_on=3)
        assert d.finish is not None
        assert "completed" == d.finish.status

    def test_joins_in_the_body_reset_on_every_iteration(self) -> None:
        loop = NodeSpec(
            "again", "loop", params={"start": "s", "condition": "result < 3", "max_iterations": 9}
        )
        d = Driver(
            graph("s>x", "s>y", "x>j", "y>j", "j>again", "again>s", "again>out", nodes=(loop,))
        )
        d.start()
        passes = 0
        while d.finish is None:
            command = min(d.inflight.values(), key=lambda c: c.dispatch_id)
            if command.node_id == "j":
                passes += 1
            d.send(p.NodeCompleted(command.dispatch_id, passes))
        assert ["s", "x", "y", "j"] * 3 + ["out"] == d.ran()
        assert "completed" == d.finish.status


class TestSignals:
    """Waits complete on their signal; a signal that arrives early is buffered, not lost."""

    def test_signal_before_the_wait_is_buffered(self) -> None:
        d = Driver(graph("a>review", "review>b", nodes=(NodeSpec("review", "wait"),)))
        d.start()
        early = d.send(p.SignalReceived("review", {"ok": True}))
        assert [] == execute_ids(early)
        assert [p.Note("signal:receive", None, None, {"name": "review", "buffered": True})] == (
            notes(early, "signal:receive")
        )
        commands = d.complete("a", 1)
        assert [] == of(p.AwaitSignal, commands)
        assert ["b"] == execute_ids(commands)
        assert ({"ok": True},) == d.dispatch_of("b").args

    def test_wait_then_signal_resumes_with_the_payload(self) -> None:
        d = Driver(graph("a>review", "review>b", nodes=(NodeSpec("review", "wait"),)))
        d.start()
        assert [p.AwaitSignal("review", "review")] == of(p.AwaitSignal, d.complete("a", 1))
        assert RunStatus.AWAITING == d.state.status
        assert ["b"] == execute_ids(d.send(p.SignalReceived("review", 42)))
        assert RunStatus.RUNNING == d.state.status

    def test_buffered_signal_keeps_its_action(self) -> None:
        wait = NodeSpec("review", "wait")
        routed = (
            EdgeSpec("review", "yes", action="approve"),
            EdgeSpec("review", "no", action="reject"),
        )
        d = Driver(graph("a>review", nodes=(wait,), edges=routed))
        d.start()
        d.send(p.SignalReceived("review", "why not", action="reject"))
        assert ["no"] == execute_ids(d.complete("a", 1))
        assert ("why not",) == d.dispatch_of("no").args

    def test_signal_action_routes(self) -> None:
        wait = NodeSpec("review", "wait")
        routed = (
            EdgeSpec("review", "yes", action="approve"),
            EdgeSpec("review", "no", action="reject"),
        )
        d = Driver(graph(nodes=(wait,), edges=routed))
        d.start()
        assert ["no"] == execute_ids(d.send(p.SignalReceived("review", 1, action="reject")))

    def test_wait_timeout_fails_the_run(self) -> None:
        wait = NodeSpec("review", "wait", params={"timeout": 30})
        d = Driver(graph(nodes=(wait,)))
        (timer,) = of(p.StartTimer, d.start())
        assert ("timeout", 30.0) == (timer.purpose, timer.delay)
        d.fire(timer.timer_id)
        assert d.finish is not None
        assert "failed" == d.finish.status
        assert d.finish.error is not None
        assert "flowkit._errors.WaitTimeout" == d.finish.error["type"]

    def test_signal_cancels_the_wait_timeout(self) -> None:
        wait = NodeSpec("review", "wait", params={"timeout": 30})
        d = Driver(graph(nodes=(wait,)))
        (timer,) = of(p.StartTimer, d.start())
        commands = d.send(p.SignalReceived("review", "ok"))
        assert [p.CancelTimer(timer.timer_id)] == of(p.CancelTimer, commands)
        assert [] == d.fire(timer.timer_id)
        assert p.FinishRun("completed", "ok", None) == d.finish


class TestCancel:
    """A cancel request stops in-flight work and ends the run ``cancelled``."""

    def test_cancel_cancels_nodes_and_timers(self) -> None:
        sleeper = NodeSpec("s", "sleep", params={"duration": 5})
        d = Driver(graph("a>x", "s>x", nodes=(sleeper,)))
        d.start()
        a = d.dispatch_of("a").dispatch_id
        (timer_id,) = d.timers
        commands = d.send(p.CancelRequested("stop"))
        assert [p.CancelNode(a)] == of(p.CancelNode, commands)
        assert [p.CancelTimer(timer_id)] == of(p.CancelTimer, commands)
        assert d.finish is not None
        assert "cancelled" == d.finish.status
        assert RunStatus.CANCELLED == d.state.status
        assert [] == d.send(p.NodeCompleted(a, 1))


def keys(delta: list[tuple[str, str, Any]]) -> set[tuple[str, str]]:
    return {(section, key) for section, key, _ in delta}


class TestDelta:
    """``take_delta`` returns exactly the keys a step changed."""

    def test_step_delta_holds_only_changed_keys(self) -> None:
        d = Driver(graph("a>b", "a>c", "b>d", "c>d", "x>y"))
        d.start()
        d.complete("a", 1)
        d.complete("x", 1)
        d.state.take_delta()
        d.complete("b", 2, writes={"k": "v"})
        delta = d.state.take_delta()
        expected = {
            ("dispatches", "b@1.1"),
            ("nodes", "b"),
            ("outputs", "b"),
            ("nodes", "d"),
            ("context", "k"),
        }
        assert expected == keys(delta)
        assert ("dispatches", "b@1.1", DELETED) in delta
        assert ("context", "k", "v") in delta

    def test_delta_is_empty_after_being_taken(self) -> None:
        d = Driver(graph("a>b"))
        d.start()
        assert d.state.take_delta()
        assert [] == d.state.take_delta()

    def test_unchanged_context_keys_are_not_in_the_delta(self) -> None:
        d = Driver(graph("a>b", "b>c"))
        d.start()
        d.complete("a", 1, writes={"kept": 1, "gone": 2})
        d.state.take_delta()
        d.complete("b", 2, writes={"new": 3}, deletes=("gone",))
        delta = d.state.take_delta()
        context = {(k, v) for section, k, v in delta if section == "context"}
        assert {("new", 3), ("gone", DELETED)} == context

    def test_deltas_rebuild_the_state(self) -> None:
        d = Driver(graph("a>b", "a>c", "b>d", "c>d"))
        replica = RunState("run-1")
        d.start()
        replica.apply_delta(d.state.take_delta())
        for node_id, output in (("a", 1), ("c", 3), ("b", 2), ("d", 4)):
            d.complete(node_id, output, writes={node_id: output})
            replica.apply_delta(d.state.take_delta())
        assert d.state.to_dict() == replica.to_dict()


# -- properties over generated DAGs -------------------------------------------------------

_ACTIONS = (None, "left", "right", "retry")


def action_of(node_id: str) -> str | None:
    return _ACTIONS[zlib.crc32(node_id.encode()) % len(_ACTIONS)]


def output_of(command: p.ExecuteNode) -> int:
    return zlib.crc32(f"{command.node_id}|{command.args!r}|{command.kwargs!r}".encode()) % 3


def drive_randomly(bp: Blueprint, seed: int, inputs: dict[str, Any]) -> Driver:
    """Complete in-flight dispatches in a seeded random order until the run ends."""
    d = Driver(bp)
    d.start(**inputs)
    rng = random.Random(seed)
    steps = 0
    while d.inflight and d.finish is None:
        steps += 1
        assert steps < 1000, "run does not end"
        command = rng.choice(sorted(d.inflight.values(), key=lambda c: c.dispatch_id))
        d.send(p.NodeCompleted(command.dispatch_id, output_of(command), action_of(command.node_id)))
    return d


def reference(bp: Blueprint, program: Program, inputs: dict[str, Any]) -> tuple[set[str], Any]:
    """What must run and the run's output, computed directly from the graph.

    Valid for blueprints without ``any`` joins, whose outcome must not depend on
    the order completions arrive in. Blueprint order is topological here.
    """
    ran: dict[str, bool] = {}
    out: dict[str, Any] = {}
    for spec in bp.nodes:
        preds = program.preds[spec.id]
        taken = False
        for pred in preds:
            for edge in program.out[pred]:
                if edge.target != spec.id or edge.back or not ran[pred]:
                    continue
                if edge.action is not None and edge.action != action_of(pred):
                    continue
                scope = {"result": out[pred], "state": {}, "input": inputs}
                taken = taken or edge.when is None or bool(edge.when(scope))
        ran[spec.id] = not preds or taken
        if not ran[spec.id]:
            continue
        if spec.kind == "loop":
            out[spec.id] = out[preds[0]]
            continue
        if not preds:
            args: tuple[Any, ...] = ()
        elif len(preds) == 1:
            args = (out[preds[0]],)
        else:
            args = ({q: out[q] for q in preds if ran[q]},)
        kwargs = {"value": inputs["value"]} if not preds else {}
        out[spec.id] = output_of(p.ExecuteNode("", spec.id, 1, "", args, kwargs))
    executed = {n.id for n in bp.nodes if ran[n.id] and n.kind == "call"}
    finished = [n.id for n in bp.nodes if n.id in program.terminals and ran[n.id]]
    if not finished:
        return executed, None
    if len(finished) == 1:
        return executed, out[finished[0]]
    return executed, {n: out[n] for n in finished}


def all_joins(bp: Blueprint) -> Blueprint:
    """The same blueprint with every ``any`` join turned into an ``all`` join."""
    nodes = [
        attrs.evolve(n, config=attrs.evolve(n.config, join="all")) if n.config.join else n
        for n in bp.nodes
    ]
    return attrs.evolve(bp, nodes=nodes)


_PROPERTY = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])


class TestGeneratedGraphs:
    """Over generated DAGs, every reachable node runs once and the outcome ignores order."""

    @_PROPERTY
    @given(
        bp=blueprints(max_nodes=10, with_routes=True, with_loops=True).map(all_joins),
        seeds=st.tuples(st.integers(0, 2**32), st.integers(0, 2**32)),
    )
    def test_reachable_nodes_run_once_and_order_does_not_matter(
        self, bp: Blueprint, seeds: tuple[int, int]
    ) -> None:
        inputs = {"value": 1}
        first = drive_randomly(bp, seeds[0], inputs)
        second = drive_randomly(bp, seeds[1], inputs)
        expected_nodes, expected_output = reference(bp, first.program, inputs)
        for d in (first, second):
            assert d.finish is not None
            assert "completed" == d.finish.status, d.finish.error
            assert sorted(expected_nodes) == sorted(d.ran())
            assert expected_output == d.finish.output
            assert [] == d.late

    @_PROPERTY
    @given(
        bp=blueprints(max_nodes=10, with_routes=True, with_loops=True),
        seed=st.integers(0, 2**32),
    )
    def test_any_joins_fire_at_most_once_and_runs_complete(self, bp: Blueprint, seed: int) -> None:
        d = drive_randomly(bp, seed, {"value": 1})
        assert d.finish is not None
        assert "completed" == d.finish.status, d.finish.error
        ran = d.ran()
        assert sorted(set(ran)) == sorted(ran)
        assert [] == d.late

    @_PROPERTY
    @given(bp=blueprints(max_nodes=10, with_routes=False).map(all_joins), seed=st.integers(0, 99))
    def test_without_routes_every_node_runs_exactly_once(self, bp: Blueprint, seed: int) -> None:
        d = drive_randomly(bp, seed, {"value": 1})
        assert sorted(n.id for n in bp.nodes) == sorted(d.ran())
        assert d.finish is not None
        assert "completed" == d.finish.status

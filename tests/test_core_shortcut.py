"""The core's completion shortcut: the same state and commands as the full step, taken
only where nothing else can happen (see ``_machine.completion_shortcut``)."""

from __future__ import annotations

import copy
import random
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from flowkit import Action
from flowkit.blueprint import Blueprint, EdgeSpec, NodeConfig, NodeSpec
from flowkit.core import _protocol as p
from flowkit.core._machine import completion_shortcut, full_step, handle_event, start_run
from flowkit.core._program import Program
from flowkit.core._state import RunState
from flowkit.testing.strategies import blueprints


def work(value: Any = None) -> Any:
    return value


REGISTRY: dict[str, Any] = {"work": work, "inc": work}


def call(node_id: str, **kwargs: Any) -> NodeSpec:
    return NodeSpec(node_id, "call", uses="work", **kwargs)


def blueprint(*pairs: str, nodes: tuple[NodeSpec, ...] = (), **edge: Any) -> Blueprint:
    """Call nodes wired by ``"a>b"`` pairs (``edge`` options on every edge)."""
    edges = [EdgeSpec(*pair.split(">"), **edge) for pair in pairs]
    extra = {n.id: n for n in nodes}
    named = dict.fromkeys(n for e in edges for n in (e.source, e.target))
    specs = [extra.get(n) or call(n) for n in named]
    return Blueprint(id="g", nodes=tuple(specs), edges=tuple(edges))


def copied(state: RunState) -> RunState:
    twin = RunState.from_dict(copy.deepcopy(state.to_dict()))
    twin.journal = set(state.journal)
    return twin


def both_ways(
    program: Program, state: RunState, event: p.NodeCompleted
) -> tuple[list[p.Command] | None, RunState, list[p.Command], RunState]:
    """The shortcut's commands (None: not taken) and state, and the full step's."""
    short, full = copied(state), copied(state)
    return (
        completion_shortcut(program, short, event),
        short,
        full_step(program, full, event),
        full,
    )


def assert_same(program: Program, state: RunState, event: p.NodeCompleted) -> bool:
    """Assert the shortcut, when taken, does what the full step does; whether it was taken."""
    commands, short, expected, full = both_ways(program, state, event)
    if commands is None:
        assert state.to_dict() == short.to_dict()  # untouched when not taken
        return False
    assert expected == commands
    assert full.to_dict() == short.to_dict()
    assert list(full.sections) == list(short.sections)
    for name in full.sections:  # the same insertion order: snapshots list keys alike
        assert list(full.sections[name]) == list(short.sections[name])
    assert full.journal == short.journal
    return True


def first_dispatch(commands: list[p.Command], node_id: str) -> p.ExecuteNode:
    return next(c for c in commands if isinstance(c, p.ExecuteNode) and c.node_id == node_id)


def started(bp: Blueprint) -> tuple[Program, RunState, list[p.Command]]:
    program = Program(bp, REGISTRY)
    state = RunState("run-1")
    return program, state, start_run(program, state, {"value": 1})


class TestWhereTaken:
    """The shortcut is taken for a plain chain, a plain fan-out and a join still waiting."""

    def test_chain_fan_out_and_waiting_join(self) -> None:
        bp = blueprint("a>b", "b>c", "b>d", "c>e", "d>e")
        program, state, commands = started(bp)
        assert {"a": ("b",), "b": ("c", "d")} == program.chained
        assert {"c": "e", "d": "e"} == program.joining
        event = p.NodeCompleted(first_dispatch(commands, "a").dispatch_id, 10)
        assert assert_same(program, state, event)
        commands = handle_event(program, state, event)
        event = p.NodeCompleted(first_dispatch(commands, "b").dispatch_id, 20)
        assert assert_same(program, state, event)
        commands = handle_event(program, state, event)
        c, d = (first_dispatch(commands, n) for n in "cd")
        assert assert_same(program, state, p.NodeCompleted(c.dispatch_id, 30))
        handle_event(program, state, p.NodeCompleted(c.dispatch_id, 30))
        # the last arrival fires the join: the full step
        assert not assert_same(program, state, p.NodeCompleted(d.dispatch_id, 40))


class TestWhereNotTaken:
    """Anything the full step might do more than fire or count goes the full way."""

    @pytest.mark.parametrize(
        ("bp", "source"),
        [
            (blueprint("a>b", action="go"), "a"),
            (blueprint("a>b", when="result > 0"), "a"),
            (blueprint("a>b", nodes=(call("a", params={"assign": "x"}),)), "a"),
            (blueprint("a>b", nodes=(call("b", params={"args": ["1"]}),)), "a"),
            (blueprint("a>b", nodes=(call("b", inputs={"v": "$input.value"}),)), "a"),
            (blueprint("a>b", nodes=(call("b", params={"options": {"retries": "1"}}),)), "a"),
            (blueprint("a>b", nodes=(call("b", config=NodeConfig(queue="q")),)), "a"),
            (blueprint("a>b", nodes=(call("b", params={"map": "$input.value"}),)), "a"),
            (blueprint("a>c", "b>c", nodes=(call("c", config=NodeConfig(join="any")),)), "a"),
        ],
    )
    def test_not_in_the_program(self, bp: Blueprint, source: str) -> None:
        program = Program(bp, REGISTRY)
        assert source not in program.chained
        assert source not in program.joining

    def test_completion_with_an_action_writes_or_unknown_dispatch(self) -> None:
        program, state, commands = started(blueprint("a>b"))
        dispatch_id = first_dispatch(commands, "a").dispatch_id
        for event in (
            p.NodeCompleted(dispatch_id, Action("go", 1)),
            p.NodeCompleted(dispatch_id, 1, "go"),
            p.NodeCompleted(dispatch_id, 1, None, {"k": 1}),
            p.NodeCompleted(dispatch_id, 1, None, None, ("k",)),
            p.NodeCompleted("nope@1.1", 1),
        ):
            assert completion_shortcut(program, copied(state), event) is None
            assert not assert_same(program, state, event)


def output_of(command: p.ExecuteNode, rng: random.Random) -> Any:
    roll = rng.random()
    if roll < 0.1:
        return Action(rng.choice(["a", "b"]), command.node_id)
    return command.node_id if roll < 0.8 else {"from": command.node_id}


_PROPERTY = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])


class TestSameAsFullStep:
    """Over generated graphs driven in random orders, every completion the shortcut takes
    leaves the same state and commands as the full step."""

    @_PROPERTY
    @given(
        bp=st.one_of(
            blueprints(max_nodes=10, with_routes=True, with_loops=True),
            blueprints(max_nodes=10, with_routes=False),
        ),
        seed=st.integers(0, 2**32),
    )
    def test_generated_graphs(self, bp: Blueprint, seed: int) -> None:
        program, state, commands = started(bp)
        rng = random.Random(seed)
        inflight = {c.dispatch_id: c for c in commands if isinstance(c, p.ExecuteNode)}
        for _ in range(1000):
            if not inflight or state.finished:
                return
            command = inflight.pop(rng.choice(sorted(inflight)))
            action = rng.choice([None, None, None, "a", "b"])
            event = p.NodeCompleted(command.dispatch_id, output_of(command, rng), action)
            assert_same(program, state, event)
            for done in handle_event(program, state, event):
                if isinstance(done, p.ExecuteNode):
                    inflight[done.dispatch_id] = done
                elif isinstance(done, p.CancelNode):
                    inflight.pop(done.dispatch_id, None)
        pytest.fail("the run did not end")

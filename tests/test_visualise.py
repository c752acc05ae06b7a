"""Run visualisation: the path a run took, styled on its blueprint's Mermaid diagram.

``run_mermaid(bp, statuses)`` renders; ``RunResult.path()`` / ``Simulation.path()``
derive the statuses from the run's state; ``.mermaid()`` and
``_repr_mimebundle_`` (Jupyter) put the two together.
"""

from __future__ import annotations

import re
from itertools import pairwise
from typing import Any

import anyio
import pytest

import flowkit
from flowkit import Action, Flow, RunStatus, flow, node
from flowkit.blueprint import Blueprint, EdgeSpec, NodeSpec
from flowkit.blueprint._mermaid import RUN_STYLES, run_mermaid, to_mermaid
from flowkit.core._state import RunState
from flowkit.stores import MemoryStore
from flowkit.testing import simulate
from flowkit.transports import MemoryTransport

pytestmark = pytest.mark.anyio

NODE_LINE = re.compile(r'^\s+(n\d+)[^\s"]*"([^"]*)"', re.M)  # not edge lines
CLASS_LINE = re.compile(r"^\s+class (\S+) (\w+)$", re.M)


def styled(text: str) -> dict[str, str]:
    """Node label -> the class a Mermaid diagram gives it."""
    labels = dict(NODE_LINE.findall(text))
    return {
        labels[name]: status
        for names, status in CLASS_LINE.findall(text)
        for name in names.split(",")
    }


def chain(*ids: str) -> Blueprint:
    nodes = [NodeSpec(i, uses=i) for i in ids]
    return Blueprint(id="chain", nodes=nodes, edges=[EdgeSpec(*pair) for pair in pairwise(ids)])


# -- flows under test -------------------------------------------------------------------------


async def route(total: int) -> Action:
    return Action("big" if total > 100 else "small", total)


async def review(total: int) -> str:
    return f"reviewed {total}"


async def accept(total: int) -> str:
    return f"accepted {total}"


async def explode(value: Any) -> str:
    raise ValueError("boom")


routing = (
    Flow("routing")
    .node("route", route)
    .node("review", review)
    .node("accept", accept)
    .edge("route", "review", action="big")
    .edge("route", "accept", action="small")
)

failing = (
    Flow("failing")
    .node("route", route)
    .node("explode", explode)
    .node("accept", accept)
    .edge("route", "explode")
    .edge("explode", "accept")
)


@node
async def fetch(order_id: str) -> int:
    return 1500 if order_id.startswith("B") else 20


@node
async def charge(total: int) -> str:
    return f"charged {total}"


@flow
async def checkout(order_id: str) -> str:
    total = await fetch(order_id)
    if total > 1000:
        decision = await flow.wait("approval")
        if not decision:
            return "rejected"
    await flow.sleep("1h")
    return await charge(total)


@flow
async def approve_child(order_id: str) -> str:
    verdict = await flow.wait("verdict")
    return f"{order_id}: {verdict}"


@flow
async def parent(order_id: str) -> str:
    result = await approve_child(order_id)
    return result


@node
async def small(x: int) -> int:
    return x


@node
async def big(x: int) -> int:
    return x * 10


@node
async def huge(x: int) -> int:
    return x * 100


@node
async def done(x: int) -> int:
    return x + 1


@flow
async def grow(x: int) -> int:
    if x > 10:
        x = await big(x)
        x = await huge(x)
    return await done(x)


@flow
async def either(x: int) -> int:
    if x > 10:
        x = await big(x)
        x = await huge(x)
    else:
        x = await small(x)
    return await done(x)


@flow
async def nested(x: int) -> int:
    if x > 0:
        if x > 10:
            x = await big(x)
        else:
            x = await small(x)
    return await done(x)


@flow
async def tally(xs: list[int]) -> int:
    total = 0
    for x in xs:
        if x > 10:
            x = await big(x)
        total += x
    return total


@flow
async def countdown(x: int) -> int:
    while await small(x) > 0:  # compiled to a loop left by a break
        x = x - 1
    return x


@flow
async def first_big(xs: list[int]) -> int:
    for x in xs:
        if x > 10:
            return await big(x)  # leaves the loop by a return
    return 0


@flow
async def maybe_each(xs: list[int], go: bool) -> int:
    total = 0
    if go:
        for x in xs:
            total += await big(x)
    return total


@flow
async def guarded(x: int) -> int:
    if x > 10:
        try:
            x = await big(x)
        except ValueError:
            x = await small(x)
    return await done(x)


def ids(flow_: Any, kind: str) -> list[str]:
    """The ids of ``flow_``'s nodes of one kind, in blueprint order."""
    return [n.id for n in flow_.blueprint.nodes if n.kind == kind]


# the id of checkout's `return "rejected"` node (ids of returns carry their line number)
REJECTED = next(
    n.id for n in checkout.blueprint.nodes if n.kind == "return" and "rejected" in str(n.params)
)


# -- rendering --------------------------------------------------------------------------------


class TestRunMermaid:
    """run_mermaid draws the blueprint's diagram with one class per node status."""

    def test_each_status_gets_its_class(self) -> None:
        bp = chain("a", "b", "c", "d")
        text = run_mermaid(bp, {"a": "visited", "b": "failed", "c": "skipped"})
        expected = {"a": "visited", "b": "failed", "c": "skipped", "d": "unreached"}
        assert expected == styled(text)

    def test_the_graph_is_the_plain_diagram(self) -> None:
        bp = chain("a", "b")
        assert run_mermaid(bp, {"a": "awaiting"}).startswith(to_mermaid(bp) + "\n")

    def test_only_used_statuses_are_defined(self) -> None:
        text = run_mermaid(chain("a", "b"), {"a": "running", "b": "cancelled"})
        defined = re.findall(r"classDef (\w+) ", text)
        assert ["running", "cancelled"] == defined
        assert f"classDef running {RUN_STYLES['running']}" in text

    def test_every_status_has_a_distinct_style(self) -> None:
        assert len(RUN_STYLES) == len(set(RUN_STYLES.values()))

    def test_ids_the_blueprint_lacks_are_ignored(self) -> None:
        text = run_mermaid(chain("a"), {"a": "visited", "child-node": "failed"})
        assert {"a": "visited"} == styled(text)

    def test_an_unknown_status_is_refused(self) -> None:
        with pytest.raises(ValueError, match=r"unknown node status\(es\) \['done'\]"):
            run_mermaid(chain("a"), {"a": "done"})


# -- statuses from run state -------------------------------------------------------------------


class TestRunPath:
    """RunResult.path() says what happened at each node the run reached."""

    async def test_taken_and_skipped_branches(self) -> None:
        result = await flowkit.Runtime().run(routing, total=500)
        assert {"route": "visited", "review": "visited", "accept": "skipped"} == result.path()

    async def test_a_failed_node_and_what_it_cut_off(self) -> None:
        result = await flowkit.Runtime().run(failing, total=5)
        assert RunStatus.FAILED == result.status
        assert {"route": "visited", "explode": "failed"} == result.path()

    async def test_a_wait_is_awaiting(self) -> None:
        result = await flowkit.Runtime().run(checkout, order_id="B1")
        assert ("approval",) == result.waiting_for
        assert "awaiting" == result.path()["approval"]
        assert "sleep" not in result.path()

    async def test_a_sleep_is_awaiting_then_visited(self) -> None:
        nap = (
            Flow("nap")
            .sleep("nap", duration="10ms")
            .node("accept", accept, inputs={"total": "$input.total"})
            .edge("nap", "accept")
        )
        async with flowkit.Runtime() as rt:  # an open runtime fires the timer
            paused = await rt.run(nap, total=1)
            assert {"nap": "awaiting"} == paused.path()
            final = await rt.handle(paused.run_id).result(timeout=10)
        assert {"nap": "visited", "accept": "visited"} == final.path()

    async def test_the_return_that_ended_the_run_is_visited(self) -> None:
        rt = flowkit.Runtime()
        paused = await rt.run(checkout, order_id="B1")
        final = await rt.signal(paused.run_id, "approval", False)
        path = final.path()
        assert ("rejected", "visited") == (final.output, path[REJECTED])
        assert "skipped" == path["charge"]  # no route into it was taken

    async def test_a_subflow_awaiting_its_child(self) -> None:
        result = await flowkit.Runtime(flows=[approve_child]).run(parent, order_id="X")
        assert "awaiting" == result.path()["approve_child"]
        assert () == result.waiting_for  # the wait is the child's own

    async def test_running_then_cancelled(self) -> None:
        started, release = anyio.Event(), anyio.Event()

        async def slow() -> str:
            started.set()
            await release.wait()
            return "done"

        async with flowkit.Runtime() as rt:
            handle = await rt.start(Flow("slow").node("slow", slow))
            await started.wait()
            assert {"slow": "running"} == (await rt.result(handle.run_id)).path()
            cancelled = await handle.cancel()
        assert (RunStatus.CANCELLED, {"slow": "cancelled"}) == (
            cancelled.status,
            cancelled.path(),
        )


class TestCompiledBranches:
    """The nodes of an if/else arm a compiled run did not take are skipped, as in builder graphs."""

    async def test_if_without_else_not_taken(self) -> None:
        result = await flowkit.Runtime().run(grow, x=1)
        [branch], [end] = ids(grow, "branch"), ids(grow, "return")
        expected = {branch: "visited", "big": "skipped", "huge": "skipped"}
        assert expected | {"done": "visited", end: "visited"} == result.path()

    async def test_if_without_else_taken(self) -> None:
        result = await flowkit.Runtime().run(grow, x=20)
        assert "skipped" not in result.path().values()
        assert {"big": "visited", "huge": "visited", "done": "visited"}.items() <= (
            result.path().items()
        )

    @pytest.mark.parametrize(
        ("x", "taken", "not_taken"),
        [(20, ["big", "huge"], ["small"]), (1, ["small"], ["big", "huge"])],
    )
    async def test_if_else(self, x: int, taken: list[str], not_taken: list[str]) -> None:
        result = await flowkit.Runtime().run(either, x=x)
        [branch], [end] = ids(either, "branch"), ids(either, "return")
        expected = dict.fromkeys([branch, *taken, "done", end], "visited")
        assert expected | dict.fromkeys(not_taken, "skipped") == result.path()

    async def test_nested_if_under_the_outer_arm_not_taken(self) -> None:
        result = await flowkit.Runtime().run(nested, x=-1)
        outer, inner = ids(nested, "branch")
        expected = {outer: "visited", inner: "skipped", "big": "skipped", "small": "skipped"}
        assert expected.items() <= result.path().items()

    async def test_nested_if_under_the_outer_arm_taken(self) -> None:
        result = await flowkit.Runtime().run(nested, x=5)
        outer, inner = ids(nested, "branch")
        expected = {outer: "visited", inner: "visited", "small": "visited", "big": "skipped"}
        assert expected.items() <= result.path().items()

    @pytest.mark.parametrize(("xs", "status"), [([1, 2], "skipped"), ([20, 1], "visited")])
    async def test_if_inside_a_loop(self, xs: list[int], status: str) -> None:
        path = (await flowkit.Runtime().run(tally, xs=xs)).path()
        assert status == path["big"]  # visited if any iteration took the arm
        expected = ["big"] if status == "skipped" else []
        assert expected == [n for n, s in path.items() if s == "skipped"]

    async def test_a_loop_inside_the_arm_not_taken(self) -> None:
        path = (await flowkit.Runtime().run(maybe_each, xs=[1], go=False)).path()
        [loop] = ids(maybe_each, "loop")
        assert ("skipped", "skipped") == (path[loop], path["big"])
        assert {n.id for n in maybe_each.blueprint.nodes} == set(path)  # none unreached

    async def test_a_try_inside_the_arm_not_taken(self) -> None:
        path = (await flowkit.Runtime().run(guarded, x=1)).path()
        assert {"big": "skipped", "small": "skipped"}.items() <= path.items()
        handlers = [b for b in ids(guarded, "branch") if b.startswith("except")]
        assert ["skipped"] == [path[h] for h in handlers]

    async def test_an_except_not_entered_is_unreached_not_skipped(self) -> None:
        path = (await flowkit.Runtime().run(guarded, x=20)).path()
        handlers = [b for b in ids(guarded, "branch") if b.startswith("except")]
        assert "visited" == path["big"]
        assert [] == [n for n in [*handlers, "small"] if n in path]

    async def test_what_follows_an_awaiting_arm_is_unreached(self) -> None:
        result = await flowkit.Runtime().run(checkout, order_id="B1")
        assert {"fetch", ids(checkout, "branch")[0], "approval"} == set(result.path())

    @pytest.mark.parametrize(
        ("flow_", "inputs"), [(countdown, {"x": 3}), (first_big, {"xs": [1, 20, 30]})]
    )
    async def test_a_loop_left_by_break_or_return_is_visited(
        self, flow_: Any, inputs: dict[str, Any]
    ) -> None:
        result = await flowkit.Runtime().run(flow_, **inputs)
        [loop] = ids(flow_, "loop")
        assert (RunStatus.COMPLETED, "visited") == (result.status, result.path()[loop])
        assert "cancelled" not in result.path().values()

    async def test_the_picture_shows_the_arm_not_taken(self) -> None:
        result = await flowkit.Runtime().run(either, x=1)
        shown = styled(result.mermaid())
        assert ("skipped", "skipped", "visited") == (shown["big"], shown["huge"], shown["small"])
        assert "unreached" not in shown.values()


class TestRunResultDiagram:
    """RunResult.mermaid() and _repr_mimebundle_ show the path on the run's blueprint."""

    async def test_a_runtime_result_carries_its_blueprint(self) -> None:
        result = await flowkit.Runtime().run(routing, total=5)
        assert routing.blueprint == result.blueprint
        expected = {"route": "visited", "accept": "visited", "review": "skipped"}
        assert expected == styled(result.mermaid())

    async def test_jupyter_renders_the_path_as_mermaid(self) -> None:
        result = await flowkit.Runtime().run(failing, total=5)
        bundle = result._repr_mimebundle_()
        assert bundle["text/markdown"].startswith("```mermaid\nflowchart TD\n")
        assert {"route": "visited", "explode": "failed", "accept": "unreached"} == styled(
            bundle["text/markdown"]
        )
        assert repr(result) == bundle["text/plain"]

    async def test_results_read_back_from_a_store_carry_the_blueprint(self) -> None:
        store = MemoryStore()
        paused = await flowkit.Runtime(store=store).run(checkout, order_id="B1")
        again = await flowkit.Runtime(store=store, flows=[checkout]).result(paused.run_id)
        assert "awaiting" == styled(again.mermaid())["approval"]

    async def test_a_client_result_carries_the_blueprint(self) -> None:
        transport, store = MemoryTransport(), MemoryStore()
        worker = flowkit.Worker([routing], transport, store)
        client = flowkit.Client(transport, store, flows=[routing])
        async with anyio.create_task_group() as tg:
            await tg.start(worker.run)
            result = await client.run(routing, total=500, timeout=10)
            worker.stop()
        assert "skipped" == styled(result.mermaid())["accept"]

    async def test_the_flow_can_be_passed_explicitly(self) -> None:
        state = RunState.from_dict((await flowkit.Runtime().run(routing, total=5)).snapshot())
        bare = flowkit.RunResult.of(state)
        assert None is bare.blueprint
        assert "visited" == styled(bare.mermaid(routing))["accept"]
        assert {"text/plain": repr(bare)} == bare._repr_mimebundle_()

    async def test_without_a_blueprint_mermaid_says_what_to_pass(self) -> None:
        state = RunState.from_dict((await flowkit.Runtime().run(routing, total=5)).snapshot())
        with pytest.raises(ValueError, match=r"pass the flow, e\.g\. \.mermaid\(checkout\)"):
            flowkit.RunResult.of(state).mermaid()

    async def test_another_flow_is_refused(self) -> None:
        result = await flowkit.Runtime().run(routing, total=5)
        with pytest.raises(ValueError, match="follows another blueprint than 'failing'"):
            result.mermaid(failing)
        with pytest.raises(TypeError, match="expected a @flow, a Flow builder or a Blueprint"):
            result.mermaid("routing")


class TestSimulationDiagram:
    """Simulation.mermaid() and _repr_mimebundle_ show the simulated path."""

    def test_a_completed_simulation(self) -> None:
        sim = simulate(checkout, order_id="B1", signals={"approval": True})
        shown = styled(sim.mermaid())
        assert ("visited", "visited", "visited") == (
            shown["approval"],
            shown["sleep"],
            shown["charge"],
        )
        assert "skipped" == shown[REJECTED]
        assert sim.path() == {k: v for k, v in shown.items() if v != "unreached"}

    def test_a_simulation_stuck_at_a_wait(self) -> None:
        sim = simulate(checkout, order_id="B1")  # no scripted approval
        assert RunStatus.FAILED == sim.status
        assert "awaiting" == styled(sim._repr_mimebundle_()["text/markdown"])["approval"]

    def test_a_distributed_simulation(self) -> None:
        sim = simulate(routing, total=500, workers=2, seed=3)
        assert {"route": "visited", "review": "visited", "accept": "skipped"} == sim.path()
        assert "skipped" == styled(sim.mermaid())["accept"]

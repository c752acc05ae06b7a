"""Tests for the ``Flow`` builder: graphs, argument passing, routing, batches and loops."""

from __future__ import annotations

from typing import Any

import anyio.lowlevel
import pytest

import flowkit
from flowkit import Action, Blueprint, BlueprintError, Flow, RunStatus, Runtime

pytestmark = pytest.mark.anyio


# -- the example of DESIGN §3.3, with node functions filled in -----------------------------


async def extract(total: int) -> int:
    return total


async def transform_a(value: int) -> int:
    return value


async def transform_b(value: int) -> int:
    return value * 0


async def load(a: int, b: int) -> int:
    return a + b


async def decide(total: int) -> Action:
    return Action("big" if total > 100 else "small", total)


async def publish(value: Any) -> dict[str, Any]:
    return {"published": value}


def etl(cool_off: str = "5s") -> Flow:
    return (
        Flow("etl")
        .node("extract", extract)
        .node("a", transform_a).node("b", transform_b)
        .node("load", load, join="all", inputs={"a": "a", "b": "b"})
        .node("decide", decide)
        .wait("review")                               # resumed by signal(run_id, "review", data)
        .sleep("cool-off", duration=cool_off)
        .node("publish", publish, join="any")
        .edge("extract", "a").edge("extract", "b")
        .edge("a", "load").edge("b", "load")
        .edge("load", "decide")
        .edge("decide", "review", action="big")
        .edge("decide", "cool-off", action="small", when="result < 10")
        .edge("review", "publish").edge("cool-off", "publish")
    )  # fmt: skip


def visited(rt: Runtime) -> list[str]:
    seen: list[str] = []
    rt.events.subscribe(lambda e: seen.append(str(e.node_id)), types={"node:finish"})
    return seen


class TestDesignExample:
    """The builder example of DESIGN §3.3 builds and runs both of its routes."""

    async def test_builds_a_valid_blueprint(self) -> None:
        bp = etl().build()
        assert isinstance(bp, Blueprint)
        expected = ["extract", "a", "b", "load", "decide", "review", "cool-off", "publish"]
        assert expected == [n.id for n in bp.nodes]
        assert ("all", "any") == (bp.node("load").config.join, bp.node("publish").config.join)
        assert ("wait", "sleep") == (bp.node("review").kind, bp.node("cool-off").kind)
        assert 5.0 == bp.node("cool-off").params["duration"]
        assert bp == Blueprint.from_json(bp.to_json())

    async def test_big_route_waits_for_review(self) -> None:
        rt = Runtime()
        seen = visited(rt)
        paused = await rt.run(etl(), total=500)
        assert RunStatus.AWAITING == paused.status
        assert ["extract", "a", "b", "load", "decide"] == sorted(seen, key=_order)
        done = await rt.signal(paused.run_id, "review", {"approved": True})
        assert ("completed", {"published": {"approved": True}}) == (done.status, done.output)

    async def test_small_route_sleeps_for_the_cool_off(self) -> None:
        rt = Runtime()
        events: list[flowkit.Event] = []
        rt.events.subscribe(events.append, types={"timer:set"})
        paused = await rt.run(etl(), total=5)
        assert RunStatus.AWAITING == paused.status
        assert [("cool-off", 5.0)] == [(e.node_id, e.data["delay"]) for e in events]

    async def test_small_route_runs_to_the_end(self) -> None:
        async with Runtime() as rt:
            seen = visited(rt)
            handle = await rt.start(etl(cool_off="1ms"), total=5)
            done = await handle.result(timeout=5)
        assert ("completed", {"published": None}) == (done.status, done.output)
        assert "publish" in seen

    async def test_small_total_failing_the_condition_skips_both_routes(self) -> None:
        rt = Runtime()
        seen = visited(rt)
        done = await rt.run(etl(), total=50)
        assert RunStatus.COMPLETED == done.status
        assert done.output is None
        assert "publish" not in seen


def _order(node_id: str) -> int:
    return ["extract", "a", "b", "load", "decide", "publish"].index(node_id)


async def one() -> int:
    return 1


async def echo(*args: Any, **kwargs: Any) -> dict[str, Any]:
    return {"args": list(args), "kwargs": kwargs}


class TestInputs:
    """``inputs`` maps parameters to run inputs, state keys and node outputs."""

    async def test_input_state_and_node_sources(self) -> None:
        async def setup() -> str:
            flowkit.context().state["k"] = "from-state"
            return "from-node"

        async def use(x: Any, k: Any, n: Any) -> tuple[Any, Any, Any]:
            return (x, k, n)

        flow = (
            Flow("inputs")
            .node("setup", setup)
            .node("use", use, inputs={"x": "$input.x", "k": "$state.k", "n": "setup"})
            .edge("setup", "use")
        )
        result = await Runtime().run(flow, x="from-input")
        assert ("from-input", "from-state", "from-node") == result.output

    async def test_inputs_may_reach_past_the_predecessor(self) -> None:
        async def first() -> str:
            return "first"

        async def second(_: Any) -> str:
            return "second"

        async def third(early: str, late: str) -> str:
            return f"{early}+{late}"

        flow = (
            Flow("reach")
            .node("first", first)
            .node("second", second)
            .node("third", third, inputs={"early": "first", "late": "second"})
            .edge("first", "second")
            .edge("second", "third")
        )
        assert "first+second" == (await Runtime().run(flow)).output

    async def test_start_node_gets_the_run_inputs_matching_its_parameters(self) -> None:
        async def start(a: int, b: int = 0) -> int:
            return a + b

        result = await Runtime().run(Flow("s").node("s", start), a=1, b=2, unrelated=3)
        assert 3 == result.output

    async def test_start_node_with_var_keywords_gets_every_input(self) -> None:
        result = await Runtime().run(Flow("s").node("s", echo), a=1, b=2)
        assert {"args": [], "kwargs": {"a": 1, "b": 2}} == result.output

    async def test_single_predecessor_output_is_the_positional_argument(self) -> None:
        flow = Flow("p").node("one", one).node("echo", echo).edge("one", "echo")
        assert {"args": [1], "kwargs": {}} == (await Runtime().run(flow)).output

    async def test_join_gets_a_dict_of_predecessor_outputs(self) -> None:
        async def left(_: int) -> int:
            return 1

        async def right(_: int) -> int:
            return 2

        flow = (
            Flow("j")
            .node("root", one)
            .node("left", left)
            .node("right", right)
            .node("join", echo)
            .edge("root", "left")
            .edge("root", "right")
            .edge("left", "join")
            .edge("right", "join")
        )
        result = await Runtime().run(flow)
        assert {"args": [{"left": 1, "right": 2}], "kwargs": {}} == result.output


class TestRouting:
    """``Action`` results take matching ``action=`` edges; ``when=`` conditions filter edges."""

    @pytest.mark.parametrize(("total", "route"), [(500, "big"), (5, "small")])
    async def test_action_routing(self, total: int, route: str) -> None:
        async def big(value: int) -> str:
            return f"big:{value}"

        async def small(value: int) -> str:
            return f"small:{value}"

        flow = (
            Flow("route")
            .node("decide", decide)
            .node("big", big)
            .node("small", small)
            .edge("decide", "big", action="big")
            .edge("decide", "small", action="small")
        )
        result = await Runtime().run(flow, total=total)
        assert f"{route}:{total}" == result.output

    @pytest.mark.parametrize(("total", "expected"), [(3, {"low": 3}), (30, {"high": 30})])
    async def test_when_routing(self, total: int, expected: dict[str, int]) -> None:
        async def low(value: int) -> dict[str, int]:
            return {"low": value}

        async def high(value: int) -> dict[str, int]:
            return {"high": value}

        flow = (
            Flow("when")
            .node("extract", extract)
            .node("low", low)
            .node("high", high)
            .edge("extract", "low", when="result < 10")
            .edge("extract", "high", when="result >= 10 and len(state) == 0")
        )
        result = await Runtime().run(flow, total=total)
        assert expected == result.output

    async def test_action_and_when_together(self) -> None:
        async def yes(value: int) -> str:
            return "yes"

        async def no(value: int) -> str:
            return "no"

        flow = (
            Flow("both")
            .node("decide", decide)
            .node("yes", yes)
            .node("no", no)
            .edge("decide", "yes", action="big", when="result > 1000")
            .edge("decide", "no", action="big", when="result <= 1000")
        )
        result = await Runtime().run(flow, total=500)
        assert "no" == result.output

    async def test_skipped_branch_does_not_stall_the_join(self) -> None:
        async def branch(value: int) -> int:
            return value

        flow = (
            Flow("skip")
            .node("decide", decide)
            .node("big", branch)
            .node("small", branch)
            .node("join", echo)
            .edge("decide", "big", action="big")
            .edge("decide", "small", action="small")
            .edge("big", "join")
            .edge("small", "join")
        )
        result = await Runtime().run(flow, total=7)
        assert ("completed", {"args": [{"small": 7}], "kwargs": {}}) == (
            result.status,
            result.output,
        )


HOSTILE = [
    "__import__('os').system('true')",
    "result.__class__",
    "result.__class__.__bases__[0].__subclasses__()",
    "().__class__.__mro__",
    "state.__dict__",
    "open('/etc/passwd').read()",
    "eval('1')",
    "exec('x = 1')",
    "getattr(result, '__globals__')",
    "globals()",
    "lambda: 1",
    "[c for c in ().__class__.__base__.__subclasses__()]",
    "(x := 1)",
    "result.gi_frame",
    "os.system('true')",
    "f'{result}'",
    "type(result)",
    "import os",
    "result; state",
]


class TestHostileConditions:
    """``when=`` expressions outside the safe subset are refused by ``build()``."""

    @pytest.mark.parametrize("expression", HOSTILE)
    def test_refused_at_build(self, expression: str) -> None:
        flow = Flow("hostile").node("a", one).node("b", one).edge("a", "b", when=expression)
        with pytest.raises(BlueprintError) as raised:
            flow.build()
        assert ["bad-condition"] == [i.code for i in raised.value.issues]

    @pytest.mark.parametrize("expression", HOSTILE[:3])
    def test_refused_as_loop_condition(self, expression: str) -> None:
        flow = (
            Flow("hostile")
            .node("a", one)
            .node("b", one)
            .edge("a", "b")
            .loop("again", start="a", end="b", condition=expression)
        )
        with pytest.raises(BlueprintError, match="bad-condition"):
            flow.build()

    @pytest.mark.parametrize(
        "expression",
        ["result < 10", "len(state) > 0 and result['ok']", "max(result, 3) == abs(-3)"],
    )
    def test_safe_conditions_are_accepted(self, expression: str) -> None:
        flow = Flow("ok").node("a", one).node("b", one).edge("a", "b", when=expression)
        assert expression == flow.build().edges[0].when


class TestBatch:
    """A batch node runs its function per item, bounded, and returns results in input order."""

    async def test_batch_over_run_input(self) -> None:
        running = 0
        peak = 0

        async def resize(image: str) -> str:
            nonlocal running, peak
            running += 1
            peak = max(peak, running)
            for _ in range(3):
                await anyio.lowlevel.checkpoint()
            running -= 1
            return image.upper()

        flow = Flow("thumbs").batch("resize", resize, items="$input.images", concurrency=2)
        images = ["a", "b", "c", "d", "e"]
        result = await Runtime().run(flow, images=images)
        assert ["A", "B", "C", "D", "E"] == result.output
        assert 2 == peak

    async def test_batch_over_predecessor_output(self) -> None:
        async def items() -> list[int]:
            return [3, 1, 2]

        async def square(n: int) -> int:
            return n * n

        flow = Flow("sq").node("items", items).batch("square", square).edge("items", "square")
        assert [9, 1, 4] == (await Runtime().run(flow)).output

    async def test_batch_item_retries(self) -> None:
        failed: set[int] = set()

        async def once_flaky(n: int) -> int:
            if n not in failed:
                failed.add(n)
                raise ValueError(f"item {n} failed once")
            return n

        flow = Flow("flaky").batch("f", once_flaky, items="$input.items", retries=1)
        result = await Runtime().run(flow, items=[1, 2, 3])
        assert ("completed", [1, 2, 3]) == (result.status, result.output)


class TestLoop:
    """A builder loop repeats its body while the condition holds, up to ``max_iterations``."""

    @staticmethod
    def poll(ready_after: int, max_iterations: int = 50) -> tuple[Flow, list[int]]:
        calls: list[int] = []

        async def fetch(_: Any = None) -> int:
            calls.append(len(calls) + 1)
            return len(calls)

        async def check(n: int) -> dict[str, Any]:
            return {"ready": n >= ready_after, "n": n}

        async def done(status: dict[str, Any]) -> str:
            return f"ready after {status['n']}"

        flow = (
            Flow("poll")
            .node("fetch", fetch)
            .node("check", check)
            .node("done", done)
            .edge("fetch", "check")
            .loop(
                "until-ready",
                start="fetch",
                end="check",
                condition="not result['ready']",
                max_iterations=max_iterations,
            )
            .edge("until-ready", "done")
        )
        return flow, calls

    async def test_loop_until_ready(self) -> None:
        flow, calls = self.poll(ready_after=3)
        result = await Runtime().run(flow)
        assert ("completed", "ready after 3") == (result.status, result.output)
        assert [1, 2, 3] == calls

    async def test_loop_cap_fails_the_run(self) -> None:
        flow, calls = self.poll(ready_after=1000, max_iterations=4)
        result = await Runtime().run(flow)
        assert RunStatus.FAILED == result.status
        assert "exceeded max_iterations=4" in str(result.error)
        assert len(calls) < 10


class TestValidation:
    """``build()`` refuses broken graphs with a BlueprintError listing every problem."""

    def test_duplicate_node_ids(self) -> None:
        flow = Flow("dup").node("a", one).node("a", one)
        with pytest.raises(BlueprintError) as raised:
            flow.build()
        assert ["duplicate-node"] == [i.code for i in raised.value.issues]
        assert "'a'" in str(raised.value)

    def test_every_problem_is_listed(self) -> None:
        flow = (
            Flow("broken")
            .node("a", one)
            .node("a", one)
            .edge("a", "ghost")
            .edge("a", "b", when="__import__('os')")
        )
        with pytest.raises(BlueprintError) as raised:
            flow.build()
        codes = {i.code for i in raised.value.issues}
        assert {"duplicate-node", "unknown-edge-target", "bad-condition"} <= codes

    def test_missing_implementation_at_build(self) -> None:
        flow = Flow("missing").node("a", uses="not.registered")
        with pytest.raises(BlueprintError) as raised:
            flow.build()
        assert [("missing-implementation", "a")] == [
            (i.code, i.node_id) for i in raised.value.issues
        ]

    def test_node_without_an_implementation(self) -> None:
        with pytest.raises(TypeError, match="needs an implementation"):
            Flow("none").node("a")

    async def test_missing_implementation_at_run(self) -> None:
        bp = Flow("reg").node("a", one).build()
        with pytest.raises(BlueprintError, match="missing-implementation"):
            await Runtime().run(bp, registry={})

    async def test_blueprint_with_registry_runs(self) -> None:
        flow = Flow("reg").node("a", one)
        bp = Blueprint.from_json(flow.build().to_json())
        result = await Runtime().run(bp, registry=flow.registry)
        assert 1 == result.output

    def test_unknown_input_source(self) -> None:
        flow = Flow("in").node("a", echo, inputs={"x": "nowhere"})
        with pytest.raises(BlueprintError, match="unknown-input-source"):
            flow.build()

    def test_build_is_cached_until_the_graph_changes(self) -> None:
        flow = Flow("cache").node("a", one)
        first = flow.build()
        assert first is flow.build()
        flow.node("b", one).edge("a", "b")
        assert ["a", "b"] == [n.id for n in flow.build().nodes]


class TestBuiltinKinds:
    """``uses=`` names built-in node kinds; other names are registry entries."""

    def test_webhook_and_subflow(self) -> None:
        bp = (
            Flow("kinds")
            .node("hook", uses="webhook", params={"path": "/hooks/payment", "secret": "s"})
            .node("sub", uses="subflow", params={"blueprint_id": "child"}, inputs={"d": "hook"})
            .edge("hook", "sub")
            .build()
        )
        assert ("webhook", None) == (bp.node("hook").kind, bp.node("hook").uses)
        assert ("subflow", {"d": "hook"}) == (bp.node("sub").kind, bp.node("sub").inputs)

    def test_wait_with_name_and_timeout(self) -> None:
        bp = Flow("w").wait("review", name="approval", timeout="2m").build()
        assert {"name": "approval", "timeout": 120.0} == bp.node("review").params

    def test_invalid_duration_is_refused(self) -> None:
        with pytest.raises(ValueError, match="invalid duration"):
            Flow("s").sleep("s", duration="soon")

    def test_options_reach_the_node_config(self) -> None:
        bp = Flow("o").node("a", one, retries=3, timeout="250ms", join="any").build()
        config = bp.node("a").config
        assert (3, 0.25, "any") == (config.retries, config.timeout, config.join)


class TestRegistry:
    """Each node's implementation and fallback are registered under distinct names."""

    async def test_two_lambdas_keep_their_own_implementations(self) -> None:
        flow = Flow("lambdas").node("a", lambda: 1).node("b", lambda x: x + 10).edge("a", "b")
        assert 11 == (await Runtime().run(flow)).output

    async def test_nodes_sharing_an_implementation_keep_their_own_fallbacks(self) -> None:
        async def broken(_: Any) -> None:
            raise ValueError("broken")

        flow = (
            Flow("fallbacks")
            .node("root", one)
            .node("a", broken, fallback=lambda _: "fallback-a")
            .node("b", broken, fallback=lambda _: "fallback-b")
            .edge("root", "a")
            .edge("root", "b")
        )
        result = await Runtime().run(flow)
        assert {"a": "fallback-a", "b": "fallback-b"} == result.output

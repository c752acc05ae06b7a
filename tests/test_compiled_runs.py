"""Compiled flows run on the core and give the output (and visit the nodes) Python would."""

from __future__ import annotations

from typing import Any

import anyio
import attrs
import pytest

import flowkit
from flowkit import RunStatus, Runtime
from flowkit.dsl._flow import flow
from flowkit.dsl._node import node

pytestmark = pytest.mark.anyio


async def run(flow_: Any, /, **inputs: Any) -> tuple[flowkit.RunResult, list[str]]:
    """Run ``flow_``; the result and the nodes that finished, in order (entry node left out)."""
    rt = Runtime()
    seen: list[str] = []
    rt.events.subscribe(lambda e: seen.append(str(e.node_id)), types={"node:finish"})
    with anyio.fail_after(20):
        result = await rt.run(flow_, **inputs)
    return result, seen


# -- nodes ----------------------------------------------------------------------------------------


@node
async def double(x: int) -> int:
    return x * 2


@node
async def add(a: int, b: int) -> int:
    return a + b


@node
def triple(x: int) -> int:  # a sync node: runs in a worker thread
    return x * 3


@node
async def pause(seconds: float, value: Any = None) -> Any:
    await anyio.sleep(seconds)
    return value


class ShippingError(Exception):
    pass


@node
async def ship(order: str) -> str:
    if order.startswith("bad"):
        raise ShippingError(f"cannot ship {order}")
    if order.startswith("lost"):
        raise KeyError(order)
    return f"shipped {order}"


@node
async def flag(order: str, why: str) -> str:
    return f"flagged {order}: {why}"


@node
async def cleanup(order: str) -> str:
    return f"cleaned {order}"


# -- sequences, lets, branches --------------------------------------------------------------------


@flow
async def arithmetic(x: int, bonus: int = 1) -> int:
    y = await double(x)
    z = y + bonus
    w = await triple(z)
    return await add(w, x)


@flow
async def classify(n: int) -> str:
    if n < 0:
        label = "negative"
    elif n == 0:
        label = "zero"
    elif n < 10:
        label = await flag("small", str(n))
    else:
        label = "large"
    return label


@flow
async def nested_ifs_in_loop(items: list[int]) -> list[str]:
    out = []
    for item in items:
        if item % 2 == 0:
            if item > 4:
                out.append(f"big-even {await double(item)}")
            else:
                out.append("small-even")
        elif item > 4:
            out.append("big-odd")
        else:
            out.append(f"small-odd {await add(item, 100)}")
    return out


class TestSequences:
    """Calls, lets and returns run in order, with the flow's variables and defaults."""

    async def test_calls_and_lets(self) -> None:
        result, seen = await run(arithmetic, x=5)
        assert RunStatus.COMPLETED == result.status
        assert 38 == result.output  # (5*2 + 1) * 3 + 5
        assert ["double", "triple", "add"] == seen

    async def test_default_and_explicit_inputs(self) -> None:
        result, _ = await run(arithmetic, x=5, bonus=3)
        assert 44 == result.output

    async def test_missing_input_is_refused_at_start(self) -> None:
        with pytest.raises(flowkit.InvalidInputs, match="x: required but missing"):
            await run(arithmetic)

    async def test_flowdef_run_checks_inputs(self) -> None:
        with pytest.raises(flowkit.InvalidInputs, match="y: not a parameter of the flow"):
            await arithmetic.run(x=1, y=2)
        assert 38 == (await arithmetic.run(x=5)).output


class TestBranches:
    """if/elif/else takes exactly one path."""

    @pytest.mark.parametrize(
        ("n", "expected", "visited"),
        [(-3, "negative", []), (0, "zero", []), (4, "flagged small: 4", ["flag"]),
         (50, "large", [])],
    )  # fmt: skip
    async def test_elif_chain(self, n: int, expected: str, visited: list[str]) -> None:
        result, seen = await run(classify, n=n)
        assert expected == result.output
        assert visited == seen

    async def test_nested_ifs_inside_a_loop(self) -> None:
        result, seen = await run(nested_ifs_in_loop, items=[1, 2, 6, 7])
        assert ["small-odd 101", "small-even", "big-even 12", "big-odd"] == result.output
        assert ["add", "double"] == seen
        assert result.output == await nested_ifs_in_loop.fn([1, 2, 6, 7])


# -- loops ----------------------------------------------------------------------------------------


@flow
async def break_and_continue(limit: int) -> list[int]:
    kept = []
    for i in range(10):
        if i % 3 == 0:
            continue
        if i > limit:
            break
        kept.append(await double(i))
    return kept


@flow
async def countdown(n: int) -> list[int]:
    seen = []
    while n > 0:
        seen.append(n)
        n -= 1
    else:
        seen.append(0)
    return seen


@flow
async def search(items: list[int], wanted: int) -> str:
    for item in items:
        if item == wanted:
            found = f"found {item}"
            break
    else:
        found = "missing"
    return found


@flow
async def poll(goal: int) -> int:
    value = 0
    while await add(value, 0) < goal:
        value = await add(value, 2)
    return value


@flow
async def forever() -> None:
    while True:
        pass


@flow
async def gather_in_loop(n: int) -> list[tuple[int, int]]:
    pairs = []
    for i in range(n):
        a, b = await flow.gather(double(i), add(i, 10))
        pairs.append((a, b))
    return pairs


@flow
async def nested_loops(n: int) -> list[tuple[int, int]]:
    cells = []
    for i in range(n):
        for j in range(n):
            if j > i:
                break
            cells.append((i, j))
    return cells


class TestLoops:
    """for/while with break, continue, else and the iteration cap."""

    async def test_break_and_continue(self) -> None:
        result, seen = await run(break_and_continue, limit=5)
        assert [2, 4, 8, 10] == result.output
        assert ["double"] * 4 == seen

    async def test_while_else(self) -> None:
        result, _ = await run(countdown, n=3)
        assert [3, 2, 1, 0] == result.output

    @pytest.mark.parametrize(("wanted", "expected"), [(2, "found 2"), (9, "missing")])
    async def test_for_else_skipped_by_break(self, wanted: int, expected: str) -> None:
        result, _ = await run(search, items=[1, 2, 3], wanted=wanted)
        assert expected == result.output

    async def test_awaited_while_condition(self) -> None:
        result, seen = await run(poll, goal=5)
        assert 6 == result.output
        assert ["add", "add#2"] * 3 + ["add"] == seen

    async def test_while_cap(self) -> None:
        result, _ = await run(forever)
        assert RunStatus.FAILED == result.status
        assert "max_iterations=10000" in str(result.error)

    async def test_gather_inside_a_loop(self) -> None:
        result, seen = await run(gather_in_loop, n=3)
        assert [(0, 10), (2, 11), (4, 12)] == [tuple(p) for p in result.output]
        assert {"double": 3, "add": 3} == {n: seen.count(n) for n in set(seen)}

    async def test_nested_loops(self) -> None:
        result, _ = await run(nested_loops, n=3)
        assert [(0, 0), (1, 0), (1, 1), (2, 0), (2, 1), (2, 2)] == [tuple(c) for c in result.output]


# -- gather, first, map ---------------------------------------------------------------------------

EVENTS: list[str] = []


@node
async def quick(value: str) -> str:
    await anyio.sleep(0.01)
    return f"quick {value}"


@node
async def sluggish(value: str) -> str:
    EVENTS.append("sluggish started")
    try:
        await anyio.sleep(10)
    finally:
        EVENTS.append("sluggish stopped")
    return f"sluggish {value}"


@flow
async def race(value: str) -> str:
    return await flow.first(sluggish(value), quick(value))


ACTIVE = {"now": 0, "max": 0}


@node
async def tracked(item: int) -> int:
    ACTIVE["now"] += 1
    ACTIVE["max"] = max(ACTIVE["max"], ACTIVE["now"])
    await anyio.sleep(0.005 * (5 - item % 5))  # later items finish first
    ACTIVE["now"] -= 1
    return item * item


@flow
async def squares(items: list[int]) -> list[int]:
    return await flow.map(tracked, items, concurrency=3)


@flow
async def fan(x: int) -> tuple[int, int, int]:
    a, b, c = await flow.gather(double(x), triple(x), add(x, 1))
    return a, b, c


class TestConcurrency:
    """gather joins every call; first keeps the winner and cancels the rest; map keeps order."""

    async def test_gather(self) -> None:
        result, seen = await run(fan, x=4)
        assert [8, 12, 5] == list(result.output)
        assert {"double", "triple", "add"} == set(seen)

    async def test_first_cancels_the_loser(self) -> None:
        EVENTS.clear()
        result, seen = await run(race, value="v")
        assert "quick v" == result.output
        assert ["quick"] == seen
        assert EVENTS in ([], ["sluggish started", "sluggish stopped"])

    async def test_map_keeps_order_with_bounded_concurrency(self) -> None:
        ACTIVE.update(now=0, max=0)
        result, _ = await run(squares, items=list(range(10)))
        assert [i * i for i in range(10)] == result.output
        assert 3 == ACTIVE["max"]

    async def test_map_of_nothing(self) -> None:
        result, _ = await run(squares, items=[])
        assert [] == result.output


# -- try / except / else / finally ----------------------------------------------------------------


@flow
async def shipping(order: str) -> str:
    try:
        result = await ship(order)
    except ShippingError as exc:
        result = await flag(order, str(exc))
    else:
        result = result + "!"
    finally:
        await cleanup(order)
    return result


@flow
async def reraising(order: str) -> str:
    try:
        return await ship(order)
    except ShippingError:
        await flag(order, "retrying")
        raise


@flow
async def nested_handlers(order: str) -> str:
    try:
        try:
            await ship(order)
        except KeyError:
            return "inner caught"
        finally:
            await cleanup(order)
    except ShippingError as exc:
        return f"outer caught {exc}"
    return "no error"


@flow
async def raising(n: int) -> str:
    try:
        if n > 3:
            raise ValueError(f"too big: {n}")
        assert n != 2, "two is not allowed"
    except ValueError as exc:
        return f"value error: {exc}"
    return "fine"


@flow
async def finally_on_return(order: str) -> str:
    for attempt in range(3):
        try:
            if attempt == 1:
                continue
            if attempt == 2:
                break
        finally:
            await cleanup(f"{order}-{attempt}")
    try:
        return await ship(order)
    finally:
        await cleanup(order)


class TestTry:
    """except matches by type, else runs without error, finally runs on every way out."""

    async def test_success_runs_else_and_finally(self) -> None:
        result, seen = await run(shipping, order="A1")
        assert "shipped A1!" == result.output
        assert ["ship", "cleanup"] == seen

    async def test_catches_by_type(self) -> None:
        result, seen = await run(shipping, order="bad-1")
        assert "flagged bad-1: cannot ship bad-1" == result.output
        assert ["flag", "cleanup"] == seen

    async def test_does_not_catch_other_types_but_runs_finally(self) -> None:
        result, seen = await run(shipping, order="lost-1")
        assert RunStatus.FAILED == result.status
        assert isinstance(result.error, flowkit.NodeError)
        assert "builtins.KeyError" == result.error.error_type
        assert ["cleanup#2"] == seen

    async def test_bare_raise_re_raises(self) -> None:
        result, seen = await run(reraising, order="bad-2")
        assert RunStatus.FAILED == result.status
        assert isinstance(result.error, flowkit.NodeError)
        assert f"{__name__}.ShippingError" == result.error.error_type
        assert ["flag"] == seen

    @pytest.mark.parametrize(
        ("order", "expected", "visited"),
        [("A2", "no error", ["ship", "cleanup#2"]), ("lost-3", "inner caught", ["cleanup"]),
         ("bad-3", "outer caught cannot ship bad-3", ["cleanup#3"])],
    )  # fmt: skip
    async def test_nested_try(self, order: str, expected: str, visited: list[str]) -> None:
        result, seen = await run(nested_handlers, order=order)
        assert expected == result.output
        assert visited == seen

    @pytest.mark.parametrize(("n", "expected"), [(1, "fine"), (5, "value error: too big: 5")])
    async def test_raise_statement(self, n: int, expected: str) -> None:
        result, _ = await run(raising, n=n)
        assert expected == result.output

    async def test_failed_assert(self) -> None:
        result, _ = await run(raising, n=2)
        assert RunStatus.FAILED == result.status
        assert "two is not allowed" in str(result.error)

    async def test_finally_on_continue_break_and_return(self) -> None:
        result, seen = await run(finally_on_return, order="A3")
        assert "shipped A3" == result.output
        # each way out of a `try` has its own copy of the finally body
        assert ["cleanup#3", "cleanup", "cleanup#2", "ship", "cleanup#5"] == seen


# -- subflows, match, retries ---------------------------------------------------------------------


@attrs.define
class Point:
    x: int
    y: int


@node
async def make_point(x: int, y: int) -> Point:
    return Point(x, y)


@flow
async def where(x: int, y: int) -> str:
    point = await make_point(x, y)
    match point:
        case Point(x=0, y=0):
            return "origin"
        case Point(x=0, y=height) if height > 5:
            return f"high at {height}"
        case Point(x=along, y=0):
            return f"on the x axis at {along}"
        case Point():
            return "elsewhere"
    return "not a point"


@flow
async def describe(value: Any) -> str:
    match value:
        case 1 | 2:
            return "one or two"
        case "go":
            return "go!"
        case None:
            return "nothing"
        case [first_item, *others]:
            return f"list starting {first_item} (+{len(others)})"
        case {"kind": kind}:
            return f"a {kind}"
        case other:
            return f"other {other}"


@flow
async def child(a: int, b: int = 2) -> int:
    if a < 0:
        raise ValueError("negative")
    return await add(a, b)


@flow
async def parent(a: int) -> list[int]:
    first_result = await child(a)
    second_result = await child(a, b=10)
    return [first_result, second_result]


@flow
async def careful_parent(a: int) -> str:
    try:
        return str(await child(a))
    except flowkit.ChildFailed as exc:
        return f"child failed: {exc}"


ATTEMPTS: dict[str, int] = {}


@node(retries=2)
async def flaky(key: str) -> str:
    ATTEMPTS[key] = ATTEMPTS.get(key, 0) + 1
    if ATTEMPTS[key] < 3:
        raise ConnectionError(f"attempt {ATTEMPTS[key]}")
    return f"{key} after {ATTEMPTS[key]}"


@node(retries=1, fallback=lambda key: f"{key} from fallback")
async def doomed(key: str) -> str:
    raise ConnectionError("down")


@flow
async def resilient(key: str) -> list[str]:
    return [await flaky(key), await doomed(key)]


class TestSubflowsMatchRetries:
    """Subflows return their child's output; match tests patterns; @node options apply."""

    async def test_subflow_outputs(self) -> None:
        result, seen = await run(parent, a=1)
        assert [3, 11] == result.output
        assert ["add", "add"] == seen  # each child run's node

    async def test_child_failure_is_catchable(self) -> None:
        result, _ = await run(careful_parent, a=-1)
        assert RunStatus.COMPLETED == result.status
        assert result.output.startswith("child failed:")
        assert "negative" in result.output

    @pytest.mark.parametrize(
        ("x", "y", "expected"),
        [(0, 0, "origin"), (0, 9, "high at 9"), (0, 1, "elsewhere"), (4, 0, "on the x axis at 4"),
         (3, 3, "elsewhere")],
    )  # fmt: skip
    async def test_match_class_patterns(self, x: int, y: int, expected: str) -> None:
        result, _ = await run(where, x=x, y=y)
        assert expected == result.output

    @pytest.mark.parametrize(
        ("value", "expected"),
        [(2, "one or two"), ("go", "go!"), (None, "nothing"), ([7, 8, 9], "list starting 7 (+2)"),
         ({"kind": "cat"}, "a cat"), (3.5, "other 3.5")],
    )  # fmt: skip
    async def test_match_other_patterns(self, value: Any, expected: str) -> None:
        result, _ = await run(describe, value=value)
        assert expected == result.output

    async def test_retries_and_fallback(self, anyio_backend: str) -> None:
        key = f"k-{anyio_backend}"
        ATTEMPTS.pop(key, None)
        result, _ = await run(resilient, key=key)
        assert [f"{key} after 3", f"{key} from fallback"] == result.output


# -- durable primitives ---------------------------------------------------------------------------


@attrs.frozen
class Decision:
    approved: bool
    by: str


@flow
async def approval(order: str) -> str:
    decision = await flow.wait("approval", timeout="2d", type=Decision)
    if decision.approved:
        return f"{order} approved by {decision.by}"
    return f"{order} rejected"


@flow
async def impatient() -> str:
    try:
        await flow.wait("reply", timeout=0.01)
    except flowkit.WaitTimeout as exc:
        return f"gave up: {type(exc).__name__}"
    return "replied"


@flow
async def napping() -> str:
    await flow.sleep(0.01)
    return "rested"


class TestDurable:
    """Waits resume with the signal's payload (structured into type=); sleeps pause the run."""

    async def test_wait_resumes_with_structured_payload(self) -> None:
        rt = Runtime()
        result = await rt.run(approval, order="A9")
        assert RunStatus.AWAITING == result.status
        result = await rt.signal(result.run_id, "approval", {"approved": True, "by": "ann"})
        assert "A9 approved by ann" == result.output

    async def test_wait_timeout_is_catchable(self) -> None:
        async with Runtime() as rt:
            handle = await rt.start(impatient)
            result = await handle.result(timeout=10)
        assert "gave up: WaitTimeout" == result.output

    async def test_sleep(self) -> None:
        async with Runtime() as rt:
            handle = await rt.start(napping)
            result = await handle.result(timeout=10)
        assert "rested" == result.output


# -- plain Python ---------------------------------------------------------------------------------


class TestPlainPython:
    """Called directly, a flow is plain Python: gather/first/map really run concurrently."""

    async def test_fn_and_call(self) -> None:
        assert "flagged small: 4" == await classify.fn(4)
        assert "large" == await classify(40)

    async def test_gather_first_map(self) -> None:
        assert (8, 12, 5) == await fan(4)
        assert "quick v" == await race("v")
        assert [0, 1, 4] == await squares([0, 1, 2])

    async def test_gather_raises_the_first_error(self) -> None:
        with pytest.raises(ShippingError):
            await flow.gather(ship("bad"), pause(5))

    async def test_first_skips_failures(self) -> None:
        assert "late" == await flow.first(ship("bad"), pause(0.01, "late"))
        with pytest.raises(ShippingError):
            await flow.first(ship("bad"))

    async def test_durable_primitives_need_a_run(self) -> None:
        with pytest.raises(RuntimeError, match=r"flow\.sleep\(\) only works inside a flowkit run"):
            await napping()
        with pytest.raises(RuntimeError, match="only works inside"):
            await approval("A1")


class TestFlowDef:
    """FlowDef runs synchronously, renders, and simulates."""

    def test_run_sync(self) -> None:
        assert 38 == arithmetic.run_sync(x=5).output
        assert 38 == arithmetic.run_sync(x=5, backend="trio").output

    def test_display(self) -> None:
        assert arithmetic.mermaid().startswith("flowchart TD")
        bundle = arithmetic._repr_mimebundle_()
        assert "text/markdown" in bundle
        assert "<flow arithmetic v1>" == repr(arithmetic)

    def test_simulate(self) -> None:
        sim = approval.simulate(order="A4", signals={"approval": {"approved": False, "by": "bo"}})
        assert "A4 rejected" == sim.output
        assert ["approval"] == sim.visited


# -- known core bugs ------------------------------------------------------------------------------


@node
async def boom(x: int) -> int:
    raise ValueError("boom")


@node
async def three() -> tuple[int, int, int]:
    return (1, 2, 3)


@flow
async def first_success_wins() -> Any:
    return await flow.first(boom(1), pause(0.05, "slow but fine"))


@flow
async def bad_unpack() -> int:
    a, _b = await three()
    return a


@flow
async def gather_failure_handled() -> str:
    try:
        await flow.gather(boom(1), pause(0.05, "sibling"))
    except ValueError:
        await pause(0.2)
    return "handled"


@flow
async def aim(target: int) -> int:
    return target


COMPILED = {"join_default": "pass", "compiled": True}


class TestCoreBugs:
    """Minimal reproductions of core bugs found while compiling flows (fixes in the report)."""

    def test_loop_body_is_not_a_start_node(self) -> None:
        bp = flowkit.Blueprint(
            id="loop",
            nodes=[
                flowkit.NodeSpec("init", "let", params={"expr": "0", "assign": "n"}),
                flowkit.NodeSpec(
                    "for",
                    "loop",
                    params={"mode": "for", "iter": "[1]", "target": "i", "start": "body"},
                ),
                flowkit.NodeSpec("body", "let", params={"expr": "n + i", "assign": "n"}),
                flowkit.NodeSpec("done", "return", params={"expr": "n"}),
            ],
            edges=[
                flowkit.EdgeSpec("init", "for"),
                flowkit.EdgeSpec("for", "body"),
                flowkit.EdgeSpec("body", "for"),
                flowkit.EdgeSpec("for", "done", action="exit"),
            ],
            metadata=COMPILED,
        )
        assert ("init",) == flowkit.analyze(bp).start_nodes

    def test_error_handler_is_not_a_start_node(self) -> None:
        bp = flowkit.Blueprint(
            id="handler",
            nodes=[
                flowkit.NodeSpec("risky", "let", params={"expr": "1 / 0", "on_error": "handler"}),
                flowkit.NodeSpec("done", "return", params={"expr": "'ok'"}),
                flowkit.NodeSpec("handler", "return", params={"expr": "'handled'"}),
            ],
            edges=[flowkit.EdgeSpec("risky", "done")],
            metadata=COMPILED,
        )
        assert ("risky",) == flowkit.analyze(bp).start_nodes

    async def test_input_named_target(self) -> None:
        assert 3 == (await aim.run(target=3)).output

    async def test_first_success_wins(self) -> None:
        result, _ = await run(first_success_wins)
        assert "slow but fine" == result.output

    async def test_unpack_error_fails_the_node(self) -> None:
        result, _ = await run(bad_unpack)
        assert RunStatus.FAILED == result.status

    async def test_handled_gather_failure_cancels_siblings(self) -> None:
        result, seen = await run(gather_failure_handled)
        assert "handled" == result.output
        assert "pause" not in seen

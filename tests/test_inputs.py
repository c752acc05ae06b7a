"""A run's inputs are checked before it starts: one ``InvalidInputs`` names every bad one.

Missing and unknown arguments, values not of the declared type (``"1"`` is not
an ``int``), and values JSON cannot hold (NaN, infinity, sets where no set is
declared, ints of too many digits, arbitrary objects) are refused by every way
of starting a run: ``Runtime.run``/``start``, ``FlowDef.run``, ``Client.start``
and ``simulate``. Builder flows and blueprints have no signature: only JSON
counts for them.
"""

from __future__ import annotations

import enum
import math
from typing import TYPE_CHECKING, Any, Literal

import anyio
import attrs
import pytest

import flowkit
from flowkit import Flow, InvalidInputs, ResumeError, RunStatus
from flowkit.stores import SQLiteStore
from flowkit.stores import from_url as store_from_url
from flowkit.testing import simulate
from flowkit.transports import from_url as transport_from_url

if TYPE_CHECKING:
    from pathlib import Path

pytestmark = pytest.mark.anyio


@attrs.define
class Order:
    id: str
    total: int


class Size(enum.IntEnum):
    SMALL = 1
    LARGE = 2


@flowkit.node
async def describe(text: str) -> str:
    return text


@flowkit.flow
async def typed(
    count: int,
    name: str = "x",
    ratio: float = 1.0,
    tags: list[str] | None = None,
    order: Order | None = None,
    labels: set[str] | None = None,
    scores: dict[str, int] | None = None,
    mode: Literal["fast", "slow"] = "fast",
    size: Size = Size.SMALL,
    extra: Any = None,
) -> str:
    return await describe(f"{count} {name} {ratio} {tags} {order} {labels} {scores} {mode} {size}")


@flowkit.flow
async def untyped(value, other=None):  # type: ignore[no-untyped-def]
    return await describe(str(value))


def builder() -> Flow:
    return Flow("built").node("describe", describe, inputs={"text": "$input.text"})


def problems_of(raised: pytest.ExceptionInfo[InvalidInputs]) -> dict[str, str]:
    error = raised.value
    assert isinstance(error, TypeError)  # for handlers written for the bare TypeError
    assert [] == [where for where in error.problems if where not in str(error)]
    return error.problems


# -- what is refused, and why --------------------------------------------------------------------

REFUSED: list[tuple[dict[str, Any], str, str]] = [
    ({}, "count", "required but missing"),
    ({"count": 1, "colour": "red"}, "colour", "not a parameter of the flow (it takes: count, name"),
    ({"count": "a"}, "count", "expected int, got str 'a'"),
    ({"count": "1"}, "count", "expected int, got str '1'"),
    ({"count": 1.5}, "count", "expected int, got float 1.5"),
    ({"count": True}, "count", "expected int, got bool True"),
    ({"count": 10**5000}, "count", "cannot be written as JSON"),
    ({"count": 1, "name": 5}, "name", "expected str, got int 5"),
    ({"count": 1, "ratio": math.nan}, "ratio", "nan is not a JSON number"),
    ({"count": 1, "ratio": -math.inf}, "ratio", "-inf is not a JSON number"),
    ({"count": 1, "tags": ["a", 2]}, "tags[1]", "expected str, got int 2"),
    ({"count": 1, "tags": "ab"}, "tags", "expected a list, got str 'ab'"),
    ({"count": 1, "order": {"id": "A1"}}, "order", "expected Order, got dict"),
    ({"count": 1, "labels": {"a", 3}}, "labels[", "expected str, got int 3"),
    ({"count": 1, "scores": {"a": "1"}}, "scores['a']", "expected int, got str '1'"),
    ({"count": 1, "scores": {1: 1}}, "scores key 1", "expected str, got int 1"),
    ({"count": 1, "mode": "medium"}, "mode", "expected one of 'fast', 'slow', got str 'medium'"),
    ({"count": 1, "size": 3}, "size", "expected Size, got int 3"),
    ({"count": 1, "extra": {1, 2}}, "extra", "a set is not JSON"),
    ({"count": 1, "extra": object()}, "extra", "cannot serialise a object"),
    ({"count": 1, "extra": [{"deep": math.inf}]}, "extra[0]['deep']", "inf is not a JSON number"),
    ({"count": 1, "extra": {2: "two"}}, "extra", "key 2 is not a string"),
]


@pytest.mark.parametrize(("inputs", "where", "why"), REFUSED)
async def test_each_bad_input_is_named_with_why(
    inputs: dict[str, Any], where: str, why: str
) -> None:
    with pytest.raises(InvalidInputs) as raised:
        await flowkit.Runtime().run(typed, **inputs)
    problems = problems_of(raised)
    (found,) = [w for w in problems if w.startswith(where)]  # labels[?]: a set has no order
    assert why in problems[found], problems
    assert "flow 'typed' cannot start with these inputs" in str(raised.value)


async def test_every_bad_input_is_named_at_once() -> None:
    with pytest.raises(InvalidInputs) as raised:
        await flowkit.Runtime().run(typed, name=1, ratio=math.nan, colour="red")
    assert {"count", "name", "ratio", "colour"} == set(problems_of(raised))
    assert "(4 problem(s))" in str(raised.value)


ACCEPTED: list[dict[str, Any]] = [
    {"count": 1},
    {"count": 2, "name": "n", "ratio": 3, "tags": ("a", "b"), "mode": "slow"},
    {"count": 1, "order": Order("A1", 5), "size": Size.LARGE, "labels": {"b", "a"}},
    {"count": 1, "order": {"id": "A1", "total": 5}, "size": 2, "labels": ["a"]},
    {"count": 1, "scores": {"a": 1}, "extra": {"nested": [1, 2.5, None, True, "s"]}},
    {"count": 1, "extra": Order("A2", 1)},
]


@pytest.mark.parametrize("inputs", ACCEPTED)
async def test_inputs_that_fit_start_the_run(inputs: dict[str, Any], tmp_path: Path) -> None:
    store = SQLiteStore(str(tmp_path / "runs.db"))
    try:
        result = await flowkit.Runtime(store=store).run(typed, **inputs)
    finally:
        await store.close()
    assert RunStatus.COMPLETED == result.status, result.error


@flowkit.node
async def total_of(order: Order | None) -> int:
    return order.total if order is not None else 0


@flowkit.flow
async def optional_order(order: Order | None = None) -> int:
    return await total_of(order)


async def test_an_instance_of_an_optional_rich_type_is_taken_as_it_is() -> None:
    """Flow variables and node arguments declared ``Order | None`` were structured from
    the instance as if it were plain data, and failed."""
    result = await flowkit.Runtime().run(optional_order, order=Order("A1", 7))
    assert (RunStatus.COMPLETED, 7) == (result.status, result.output), result.error


async def test_an_untyped_parameter_takes_any_json() -> None:
    result = await flowkit.Runtime().run(untyped, value={"a": [1, "b"]})
    assert "{'a': [1, 'b']}" == result.output
    with pytest.raises(InvalidInputs, match="a set is not JSON"):
        await flowkit.Runtime().run(untyped, value={1})


# -- every way of starting a run ------------------------------------------------------------------


async def test_runtime_run_and_start_refuse_and_start_nothing(tmp_path: Path) -> None:
    store = SQLiteStore(str(tmp_path / "runs.db"))
    rt = flowkit.Runtime(store=store)
    try:
        with pytest.raises(InvalidInputs, match="count: expected int"):
            await rt.run(typed, run_id="r1", count="a")
        async with rt:
            with pytest.raises(InvalidInputs, match="count: required but missing"):
                await rt.start(typed, run_id="r2")
        for run_id in ("r1", "r2"):
            with pytest.raises(ResumeError, match="unknown run"):
                await rt.result(run_id)
    finally:
        await store.close()


async def test_flowdef_run_refuses() -> None:
    with pytest.raises(InvalidInputs, match="count: expected int, got str"):
        await typed.run(count="a")


async def test_client_start_refuses_and_publishes_nothing(tmp_path: Path) -> None:
    transport = transport_from_url(f"sqlite:///{tmp_path / 'queue.db'}")
    store = store_from_url(f"sqlite:///{tmp_path / 'runs.db'}")
    client = flowkit.Client(transport, store, flows=[typed])
    try:
        with pytest.raises(InvalidInputs, match="ratio: nan is not a JSON number"):
            await client.start(typed, run_id="r1", count=1, ratio=math.nan)
        with pytest.raises(ResumeError, match="unknown run"):
            await client.result("r1")
        assert [] == await _queued(transport)
    finally:
        await transport.close()
        await store.close()


async def _queued(transport: Any) -> list[bytes]:
    """The bodies waiting on the queue (none is expected: receiving stops at the first)."""
    bodies: list[bytes] = []
    with anyio.move_on_after(0.5):  # a bound on an expected absence, not a settling delay
        async for delivery in transport.receive("flowkit"):
            bodies.append(delivery.body)
            break
    return bodies


def test_simulate_refuses() -> None:
    with pytest.raises(InvalidInputs, match="tags\\[0\\]: expected str, got int 1"):
        simulate(typed, count=1, tags=[1])


# -- flows without a signature: JSON alone -------------------------------------------------------


async def test_a_builder_flow_takes_any_json_and_nothing_else() -> None:
    result = await flowkit.Runtime().run(builder(), text="hi")
    assert "hi" == result.output
    with pytest.raises(InvalidInputs) as raised:
        await flowkit.Runtime().run(builder(), text={"a"}, count=math.inf)
    assert {"text", "count"} == set(problems_of(raised))
    assert "flow 'built'" in str(raised.value)


async def test_a_blueprint_takes_any_json_and_nothing_else() -> None:
    flow = builder()
    blueprint, registry = flow.build(), flow.registry
    with pytest.raises(InvalidInputs, match="text: an int of about 5001 digits"):
        await flowkit.Runtime().run(blueprint, registry=registry, text=10**5000)


def test_simulating_a_blueprint_refuses_what_json_cannot_hold() -> None:
    flow = builder()
    with pytest.raises(InvalidInputs, match="text: a set is not JSON"):
        simulate(flow.build(), registry=flow.registry, text=frozenset())

"""A bad argument to ``@node``, ``@flow``, a ``Flow`` builder method, ``Backoff`` or a
duration is refused where it is written: a ``ConfigurationError`` (a ``FlowkitError``
and a ``ValueError``) naming the definition, the argument and what to pass instead;
decorators also give the user's file and line."""

from __future__ import annotations

import math
import sys
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

import flowkit
from flowkit import Backoff, ConfigurationError, Flow, flow, node

if TYPE_CHECKING:
    from collections.abc import Callable


async def work(x: int) -> int:
    return x


def next_line() -> int:
    """The line after the caller's: where the statement under test is."""
    return sys._getframe(1).f_lineno + 1


def refused(make: Callable[[], object]) -> str:
    """The message of the ConfigurationError ``make()`` raises."""
    with pytest.raises(ConfigurationError) as raised:
        make()
    assert isinstance(raised.value, flowkit.FlowkitError | ValueError)
    return str(raised.value)


# -- @node ----------------------------------------------------------------------------------------

BAD_NODE_OPTIONS = [
    pytest.param({"retries": "always"}, "retries", "None for no limit", id="retries-word"),
    pytest.param({"retry_on": (int,)}, "retry_on", "exception class", id="retry_on-int"),
    pytest.param({"retry_on": ValueError()}, "retry_on", "exception class", id="retry_on-obj"),
    pytest.param({"never_retry": "ValueError"}, "never_retry", "(TimeoutError,)", id="never-str"),
    pytest.param({"retry_timeout": 0}, "retry_timeout", "above zero", id="retry_timeout-zero"),
    pytest.param({"retry_timeout": "1y"}, "retry_timeout", "'30s'", id="retry_timeout-unit"),
    pytest.param({"queue": ""}, "queue", "non-empty string", id="queue-empty"),
    pytest.param({"queue": " gpu"}, "queue", "without spaces", id="queue-spaced"),
    pytest.param({"retries": -1}, "retries", "0 or more", id="retries-negative"),
    pytest.param({"retries": True}, "retries", "a bool", id="retries-bool"),
    pytest.param({"retries": 1.5}, "retries", "whole number", id="retries-float"),
    pytest.param({"retries": "3"}, "retries", "whole number", id="retries-str"),
    pytest.param({"timeout": "10x"}, "timeout", "'30s'", id="timeout-unit"),
    pytest.param({"timeout": 0}, "timeout", "above zero", id="timeout-zero"),
    pytest.param({"timeout": -1}, "timeout", "zero or more", id="timeout-negative"),
    pytest.param({"timeout": math.nan}, "timeout", "finite", id="timeout-nan"),
    pytest.param({"timeout": math.inf}, "timeout", "finite", id="timeout-inf"),
    pytest.param({"timeout": True}, "timeout", "timedelta", id="timeout-bool"),
    pytest.param({"backoff": {"initial": 1}}, "backoff", "flowkit.Backoff", id="backoff-dict"),
    pytest.param({"backoff": 2}, "backoff", "flowkit.Backoff", id="backoff-int"),
    pytest.param({"fallback": "refund"}, "fallback", "a function", id="fallback-str"),
    pytest.param({"name": ""}, "name", "non-empty string", id="name-empty"),
    pytest.param({"name": "  "}, "name", "non-empty string", id="name-blank"),
    pytest.param({"name": 3}, "name", "non-empty string", id="name-int"),
]


@pytest.mark.parametrize(("options", "argument", "expected"), BAD_NODE_OPTIONS)
def test_node_refuses_a_bad_option(options: dict[str, Any], argument: str, expected: str) -> None:
    line = next_line()
    message = refused(lambda: node(**options)(work))
    assert message.startswith(f"@node on work ({__file__}, line {line}): {argument}"), message
    assert expected in message


def test_node_names_the_decorator_line() -> None:
    with pytest.raises(ConfigurationError) as raised:

        @node(retries=-1)  # <- this line
        async def charge(order: str) -> str:
            return order

    line = 1 + Path(__file__).read_text().splitlines().index(
        "        @node(retries=-1)  # <- this line"
    )
    where = f"@node on test_node_names_the_decorator_line.<locals>.charge ({__file__}, line {line})"
    assert str(raised.value).startswith(f"{where}: retries must be"), raised.value


def test_node_refuses_what_cannot_be_called() -> None:
    message = refused(lambda: node(42))
    assert message.startswith(f"@node ({__file__}, line "), message
    assert "must be a function, a @node or a flowkit.Node class; got 42" in message


def test_node_takes_good_options() -> None:
    good = node(
        retries=0, timeout=timedelta(seconds=2), backoff=Backoff(), fallback=work, name="w"
    )(work)
    assert (0, 2.0) == (good.settings["retries"], good.settings["timeout"])


# -- @flow ----------------------------------------------------------------------------------------

BAD_FLOW_OPTIONS = [
    pytest.param({"id": ""}, "id", "non-empty string", id="id-empty"),
    pytest.param({"id": 3}, "id", "non-empty string", id="id-int"),
    pytest.param({"version": 0}, "version", "1 or more", id="version-zero"),
    pytest.param({"version": True}, "version", "a bool", id="version-bool"),
    pytest.param({"version": "2"}, "version", "whole number", id="version-str"),
    pytest.param({"version": 1.5}, "version", "whole number", id="version-float"),
]


@pytest.mark.parametrize(("options", "argument", "expected"), BAD_FLOW_OPTIONS)
def test_flow_refuses_a_bad_option(options: dict[str, Any], argument: str, expected: str) -> None:
    line = next_line()
    message = refused(lambda: flow(**options)(work))
    assert message.startswith(f"@flow on work ({__file__}, line {line}): {argument}"), message
    assert expected in message


def test_flow_refuses_what_is_not_a_function() -> None:
    message = refused(lambda: flow(42))
    assert message.startswith(f"@flow ({__file__}, line "), message
    assert "must be an async def function; got 42" in message


# -- the Flow builder -----------------------------------------------------------------------------

BAD_BUILDER_CALLS = [
    pytest.param(lambda: Flow(""), "Flow(): id", id="Flow-id-empty"),
    pytest.param(lambda: Flow(None), "Flow(): id", id="Flow-id-None"),
    pytest.param(lambda: Flow("f", version=0), "Flow('f'): version", id="Flow-version-zero"),
    pytest.param(lambda: Flow("f", version=True), "Flow('f'): version", id="Flow-version-bool"),
    pytest.param(lambda: Flow("f", metadata=[1]), "Flow('f'): metadata", id="Flow-metadata"),
    pytest.param(lambda: Flow("f").node("", work), "Flow('f').node(): id", id="node-id-empty"),
    pytest.param(lambda: Flow("f").node(3, work), "Flow('f').node(): id", id="node-id-int"),
    pytest.param(lambda: Flow("f").node("a", 3), "Flow('f').node('a'): fn", id="node-fn"),
    pytest.param(lambda: Flow("f").node("a", work, uses=""), "node('a'): uses", id="node-uses"),
    pytest.param(
        lambda: Flow("f").node("a", work, params=[1]), "node('a'): params", id="node-params"
    ),
    pytest.param(
        lambda: Flow("f").node("a", work, inputs=["x"]), "node('a'): inputs", id="node-inputs"
    ),
    pytest.param(
        lambda: Flow("f").node("a", work, inputs={"x": ""}),
        "node('a'): inputs['x']",
        id="node-input-source",
    ),
    pytest.param(
        lambda: Flow("f").node("a", work, inputs={3: "b"}),
        "node('a'): each key of inputs",
        id="node-input-name",
    ),
    pytest.param(
        lambda: Flow("f").node("a", work, retries=-1), "node('a'): retries", id="node-retries"
    ),
    pytest.param(
        lambda: Flow("f").node("a", work, retries=False), "node('a'): retries", id="node-bool"
    ),
    pytest.param(
        lambda: Flow("f").node("a", work, backoff=1.0), "node('a'): backoff", id="node-backoff"
    ),
    pytest.param(
        lambda: Flow("f").node("a", work, timeout="soon"), "node('a'): timeout", id="node-timeout"
    ),
    pytest.param(
        lambda: Flow("f").node("a", work, timeout=0), "node('a'): timeout", id="node-timeout-0"
    ),
    pytest.param(
        lambda: Flow("f").node("a", work, fallback=1), "node('a'): fallback", id="node-fallback"
    ),
    pytest.param(lambda: Flow("f").node("a", work, join="some"), "node('a'): join", id="node-join"),
    pytest.param(lambda: Flow("f").batch("", work), "Flow('f').batch(): id", id="batch-id"),
    pytest.param(
        lambda: Flow("f").batch("b", work, concurrency=0),
        "batch('b'): concurrency",
        id="batch-concurrency-zero",
    ),
    pytest.param(
        lambda: Flow("f").batch("b", work, concurrency=2.5),
        "batch('b'): concurrency",
        id="batch-concurrency-float",
    ),
    pytest.param(
        lambda: Flow("f").batch("b", work, items=""), "batch('b'): items", id="batch-items"
    ),
    pytest.param(lambda: Flow("f").batch("b", "work"), "batch('b'): fn", id="batch-fn"),
    pytest.param(lambda: Flow("f").sleep("", duration=1), "sleep(): id", id="sleep-id"),
    pytest.param(
        lambda: Flow("f").sleep("s", duration="10x"), "sleep('s'): duration", id="sleep-unit"
    ),
    pytest.param(
        lambda: Flow("f").sleep("s", duration=-1), "sleep('s'): duration", id="sleep-negative"
    ),
    pytest.param(
        lambda: Flow("f").sleep("s", duration=math.nan), "sleep('s'): duration", id="sleep-nan"
    ),
    pytest.param(lambda: Flow("f").wait(None), "Flow('f').wait(): id", id="wait-id"),
    pytest.param(lambda: Flow("f").wait("w", name=""), "wait('w'): name", id="wait-name"),
    pytest.param(
        lambda: Flow("f").wait("w", timeout=math.inf), "wait('w'): timeout", id="wait-timeout"
    ),
    pytest.param(lambda: Flow("f").wait("w", timeout=0), "wait('w'): timeout", id="wait-0"),
    pytest.param(
        lambda: Flow("f").loop("", start="a", end="b", condition="True"),
        "loop(): id",
        id="loop-id",
    ),
    pytest.param(
        lambda: Flow("f").loop("l", start="", end="b", condition="True"),
        "loop('l'): start",
        id="loop-start",
    ),
    pytest.param(
        lambda: Flow("f").loop("l", start="a", end=None, condition="True"),
        "loop('l'): end",
        id="loop-end",
    ),
    pytest.param(
        lambda: Flow("f").loop("l", start="a", end="b", condition=""),
        "loop('l'): condition",
        id="loop-condition",
    ),
    pytest.param(
        lambda: Flow("f").loop("l", start="a", end="b", condition="True", max_iterations=0),
        "loop('l'): max_iterations",
        id="loop-max-iterations",
    ),
    pytest.param(lambda: Flow("f").edge("", "b"), "edge(): source", id="edge-source"),
    pytest.param(lambda: Flow("f").edge("a", 3), "edge(): target", id="edge-target"),
    pytest.param(lambda: Flow("f").edge("a", "b", action=""), "edge(): action", id="edge-action"),
    pytest.param(lambda: Flow("f").edge("a", "b", when=1), "edge(): when", id="edge-when"),
]


@pytest.mark.parametrize(("call", "where"), BAD_BUILDER_CALLS)
def test_builder_refuses_a_bad_argument(call: Callable[[], object], where: str) -> None:
    message = refused(call)
    assert where in message
    assert " must be " in message or "invalid duration" in message, message


def test_builder_takes_good_arguments() -> None:
    bp = (
        Flow("good", version=2, metadata={"team": "ops"})
        .node("a", work, retries=0, timeout="1s", join="all", inputs={"x": "$input.x"})
        .batch("b", work, items="$input.xs", concurrency=1)
        .sleep("s", duration=0)
        .wait("w", name="go", timeout=timedelta(minutes=1))
        .edge("a", "b")
        .edge("b", "s")
        .edge("s", "w")
        .loop("l", start="a", end="w", condition="False", max_iterations=1)
        .build()
    )
    assert ["a", "b", "s", "w", "l"] == [n.id for n in bp.nodes]


# -- Backoff and durations ------------------------------------------------------------------------

BAD_BACKOFFS = [
    pytest.param({"initial": -1}, "initial", id="initial-negative"),
    pytest.param({"initial": "10x"}, "initial", id="initial-unit"),
    pytest.param({"initial": math.nan}, "initial", id="initial-nan"),
    pytest.param({"factor": 0.5}, "factor", id="factor-below-1"),
    pytest.param({"factor": math.nan}, "factor", id="factor-nan"),
    pytest.param({"factor": math.inf}, "factor", id="factor-inf"),
    pytest.param({"factor": True}, "factor", id="factor-bool"),
    pytest.param({"factor": "2"}, "factor", id="factor-str"),
    pytest.param({"max": math.inf}, "max", id="max-inf"),
    pytest.param({"initial": 10, "max": 5}, "max", id="max-below-initial"),
    pytest.param({"initial": "10m"}, "max", id="initial-above-default-max"),
    pytest.param({"jitter": 1}, "jitter", id="jitter-int"),
]


@pytest.mark.parametrize(("options", "argument"), BAD_BACKOFFS)
def test_backoff_refuses_a_bad_argument(options: dict[str, Any], argument: str) -> None:
    message = refused(lambda: Backoff(**options))
    assert message.startswith(f"Backoff: {argument}"), message


def test_backoff_takes_the_edges_of_its_ranges() -> None:
    assert 0.0 == Backoff(initial=0, factor=1, max=0).delay(3)
    assert 5.0 == Backoff(initial="5s", max="5s").delay(1)


@pytest.mark.parametrize(
    "duration",
    ["10x", "", "-1s", -1, -0.5, math.nan, math.inf, True, None, [1], 10**400, "9" * 400 + "d"],
    ids=lambda d: repr(d)[:20],
)
def test_a_bad_duration_names_the_accepted_forms(duration: object) -> None:
    message = refused(lambda: Flow("f").sleep("s", duration=duration))
    assert message.startswith("Flow('f').sleep('s'): duration: invalid duration"), message
    assert "'30s'" in message or "zero or more seconds, and finite" in message

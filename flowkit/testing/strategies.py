"""Hypothesis strategies for property tests of flowkit and of code built on it.

>>> from hypothesis import given
>>> from flowkit.blueprint import Blueprint, validate
>>> from flowkit.testing.strategies import blueprints
>>> @given(blueprints(max_nodes=6))
... def test_round_trip(bp):
...     assert Blueprint.from_json(bp.to_json()) == bp
"""

from __future__ import annotations

import string
from typing import TYPE_CHECKING, Any

from hypothesis import strategies as st

from .._durations import Backoff
from ..blueprint import Blueprint, EdgeSpec, NodeConfig, NodeSpec

if TYPE_CHECKING:
    from ..blueprint._model import JoinMode

__all__ = ["blueprints", "fault_plans", "inputs_for"]

_ID_CHARS = string.ascii_letters + string.digits + "_-.# "
_ACTIONS = ("left", "right", "retry")
_CONDITIONS = ("result is not None", "result == 1", "len(state) >= 0", "input is not None")

_NODE_IDS = st.text(_ID_CHARS, min_size=1, max_size=8)
"""Node ids, including characters a diagram must escape (``#``, ``-``, ``.``, space)."""


def blueprints(
    max_nodes: int = 12, *, with_routes: bool = True, with_loops: bool = False
) -> st.SearchStrategy[Blueprint]:
    """Valid blueprints: DAGs of ``call`` nodes using ``"inc"``, optionally with a loop.

    Every node after the first has one to three earlier predecessors, so the
    graph is connected with a single start node; nodes with several
    predecessors get ``config.join`` ``"all"`` or ``"any"``. Every blueprint
    passes ``validate(bp, {"inc": ...})``.

    Args:
        max_nodes: the most call nodes to generate (at least 1).
        with_routes: label some edges with an ``action`` and/or a ``when``.
        with_loops: sometimes add a builder loop: a ``loop`` node with
            ``params={"start": s, "condition": "False", "max_iterations": 3}``
            and edges ``end -> loop`` and ``loop -> start``.

    Example::

        @given(blueprints(max_nodes=8, with_loops=True))
        def test_runs(bp): ...
    """
    if max_nodes < 1:
        raise ValueError(f"max_nodes must be at least 1, got {max_nodes}")
    return _blueprints(max_nodes, with_routes, with_loops)


@st.composite
def _blueprints(draw: st.DrawFn, max_nodes: int, with_routes: bool, with_loops: bool) -> Blueprint:
    count = draw(st.integers(1, max_nodes))
    ids = draw(st.lists(_NODE_IDS, min_size=count, max_size=count, unique=True))
    parents = [draw(_parents(index)) for index in range(count)]
    nodes = [draw(_call_node(node_id, len(parents[i]))) for i, node_id in enumerate(ids)]
    edges = [draw(_edge(ids[p], ids[i], with_routes)) for i in range(count) for p in parents[i]]
    if with_loops and draw(st.booleans()):
        loop_nodes, loop_edges = draw(_loop(ids, parents))
        nodes += loop_nodes
        edges += loop_edges
    fields: dict[str, Any] = {"nodes": tuple(nodes), "edges": tuple(edges)}
    return Blueprint(
        id=draw(_NODE_IDS),
        version=draw(st.integers(1, 5)),
        metadata=draw(st.dictionaries(st.sampled_from(["owner", "team"]), st.text(max_size=5))),
        **fields,
    )


def _parents(index: int) -> st.SearchStrategy[list[int]]:
    if index == 0:
        return st.just([])
    return st.lists(st.integers(0, index - 1), min_size=1, max_size=min(3, index), unique=True)


_ERROR_TYPES = ("builtins.TimeoutError", "builtins.ConnectionError", "builtins.ValueError")


@st.composite
def _call_node(draw: st.DrawFn, node_id: str, predecessors: int) -> NodeSpec:
    modes: tuple[JoinMode, ...] = ("all", "any")
    join = draw(st.sampled_from(modes)) if predecessors > 1 else None
    errors = st.lists(st.sampled_from(_ERROR_TYPES), max_size=2, unique=True).map(tuple)
    config = NodeConfig(
        retries=draw(st.integers(0, 3)),  # unlimited retries could run a simulation long
        backoff=draw(st.none() | st.builds(Backoff, st.floats(0.0, 5.0), st.floats(1.0, 3.0))),
        timeout=draw(st.none() | st.floats(0.5, 60.0)),
        join=join,
        retry_on=draw(errors),
        never_retry=draw(errors),
        retry_timeout=draw(st.none() | st.floats(1.0, 3600.0)),
    )
    params = draw(st.dictionaries(st.sampled_from(["step", "label"]), st.integers(0, 9)))
    return NodeSpec(node_id, "call", uses="inc", params=params, config=config)


@st.composite
def _edge(draw: st.DrawFn, source: str, target: str, with_routes: bool) -> EdgeSpec:
    if not with_routes:
        return EdgeSpec(source, target)
    action = draw(st.none() | st.sampled_from(_ACTIONS))
    when = draw(st.none() | st.sampled_from(_CONDITIONS))
    return EdgeSpec(source, target, action=action, when=when)


@st.composite
def _loop(
    draw: st.DrawFn, ids: list[str], parents: list[list[int]]
) -> tuple[list[NodeSpec], list[EdgeSpec]]:
    """A loop over a body that is entered only through its start node."""
    start, end = draw(st.sampled_from(_loop_bodies(parents)))
    loop_id = draw(_NODE_IDS.filter(lambda n: n not in ids))
    params = {"start": ids[start], "condition": "False", "max_iterations": 3}
    node = NodeSpec(loop_id, "loop", params=params)
    return [node], [EdgeSpec(ids[end], loop_id), EdgeSpec(loop_id, ids[start])]


def _loop_bodies(parents: list[list[int]]) -> list[tuple[int, int]]:
    """Pairs (start, end) whose body (between them) has no entry but ``start``.

    Then the depth-first search in ``shape_of`` always enters the cycle at
    ``start``, and the back edge that closes it is ``loop -> start``.
    """
    count = len(parents)
    below = [{i} for i in range(count)]  # below[i]: i and every node after it on a path
    for index in reversed(range(count)):
        for parent in parents[index]:
            below[parent] |= below[index]
    pairs = []
    for start in range(count):
        for end in sorted(below[start]):
            body = {n for n in below[start] if end in below[n]}
            if all(set(parents[n]) <= body for n in body - {start}):
                pairs.append((start, end))
    return pairs


def fault_plans(*, max_rate: float = 0.4) -> st.SearchStrategy[Any]:
    """``flowkit.testing.Faults`` with each probability in ``[0, max_rate]``.

    >>> from hypothesis import given
    >>> @given(fault_plans())
    ... def test_faults(plan): ...
    """
    from ._faults import Faults

    rate = st.floats(min_value=0.0, max_value=max_rate, allow_nan=False)
    return st.builds(
        Faults, crash=rate, redeliver=rate, duplicate=rate, reorder=st.booleans(), delay=rate
    )


_JSON_LEAVES = st.none() | st.booleans() | st.integers(-(10**6), 10**6) | st.text(max_size=20)
_BY_TYPE: dict[Any, st.SearchStrategy[Any]] = {
    int: st.integers(-(10**6), 10**6),
    float: st.floats(allow_nan=False, allow_infinity=False),
    str: st.text(max_size=30),
    bool: st.booleans(),
}


def inputs_for(flow: Any) -> st.SearchStrategy[dict[str, Any]]:
    """Keyword inputs for a ``@flow`` (or any function) drawn from its type hints.

    Parameters hinted ``int``, ``float``, ``str`` or ``bool`` get values of that
    type; anything else gets ``st.from_type`` when hypothesis can build it, or
    small JSON values.
    """
    import inspect
    import typing

    fn = getattr(flow, "fn", flow)
    hints = typing.get_type_hints(fn)
    fields: dict[str, st.SearchStrategy[Any]] = {}
    for name in inspect.signature(fn).parameters:
        hint = hints.get(name)
        if hint in _BY_TYPE:
            fields[name] = _BY_TYPE[hint]
        elif hint is None:
            fields[name] = _JSON_LEAVES
        else:
            fields[name] = st.from_type(hint)
    return st.fixed_dictionaries(fields)

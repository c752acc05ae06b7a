"""Analysis: start and terminal nodes, cycles, depth and width of a blueprint."""

from __future__ import annotations

from collections import Counter
from typing import TYPE_CHECKING

import attrs

from ._graph import shape_of

if TYPE_CHECKING:
    from collections.abc import Iterable

    from ._graph import GraphShape
    from ._model import Blueprint


@attrs.frozen
class Analysis:
    """The shape of a blueprint, in blueprint order.

    ``start_nodes`` run first; ``terminal_nodes`` have no outgoing forward edge;
    ``cycles`` lists each cycle's nodes; ``depth`` is the number of nodes on the
    longest path over forward (non-back) edges and ``width`` the largest number
    of nodes on one depth level.
    """

    start_nodes: tuple[str, ...]
    terminal_nodes: tuple[str, ...]
    cycles: tuple[tuple[str, ...], ...]
    depth: int
    width: int


def analyze(bp: Blueprint) -> Analysis:
    """Describe the graph of ``bp`` in O(nodes + edges).

    Edges to unknown nodes are ignored, so invalid blueprints can be analysed too.

    >>> from flowkit.blueprint import Blueprint, NodeSpec, EdgeSpec
    >>> bp = Blueprint(id="d", nodes=[NodeSpec(i, uses=i) for i in "abcd"],
    ...                edges=[EdgeSpec("a", "b"), EdgeSpec("a", "c"),
    ...                       EdgeSpec("b", "d"), EdgeSpec("c", "d")])
    >>> a = analyze(bp)
    >>> a.start_nodes, a.terminal_nodes, a.depth, a.width
    (('a',), ('d',), 3, 2)
    """
    shape = shape_of(bp)
    order = _unique(shape.order)
    levels = _levels(shape, order)
    per_level = Counter(levels.values())
    return Analysis(
        start_nodes=_unique(shape.roots),
        terminal_nodes=tuple(n for n in order if not _forward(shape, shape.successors[n])),
        cycles=shape.cycles,
        depth=max(per_level, default=0),
        width=max(per_level.values(), default=0),
    )


def _unique(ids: Iterable[str]) -> tuple[str, ...]:
    return tuple(dict.fromkeys(ids))


def _forward(shape: GraphShape, edge_indices: Iterable[int]) -> list[int]:
    return [i for i in edge_indices if i not in shape.back_edges]


def _levels(shape: GraphShape, order: tuple[str, ...]) -> dict[str, int]:
    """Level of each node: 1 + the deepest forward predecessor (Kahn's algorithm)."""
    waiting = {n: len(_forward(shape, shape.predecessors[n])) for n in order}
    level = dict.fromkeys(order, 1)
    ready = [n for n in order if waiting[n] == 0]
    while ready:
        node = ready.pop()
        for index in _forward(shape, shape.successors[node]):
            target = shape.edges[index].target
            level[target] = max(level[target], level[node] + 1)
            waiting[target] -= 1
            if waiting[target] == 0:
                ready.append(target)
    return level

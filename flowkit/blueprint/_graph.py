"""Graph structure shared by analysis, lint and the engine: roots, back edges, order.

A blueprint may contain cycles only through loop nodes. Back edges are found by
a depth-first search from the roots (nodes whose only incoming edges are loops'
continue edges), so ``a -> check -> loop -> a`` has exactly one back edge
(``loop -> a``) and joins never wait for it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import attrs

from ._model import Blueprint, EdgeSpec

if TYPE_CHECKING:
    from collections.abc import Sequence


@attrs.frozen
class GraphShape:
    """Adjacency of a blueprint, computed once in O(nodes + edges)."""

    order: tuple[str, ...]
    successors: dict[str, tuple[int, ...]]  # node id -> indices into edges
    predecessors: dict[str, tuple[int, ...]]
    edges: tuple[EdgeSpec, ...]
    roots: tuple[str, ...]
    back_edges: frozenset[int]
    reached: frozenset[str]
    cycles: tuple[tuple[str, ...], ...]


def shape_of(bp: Blueprint) -> GraphShape:
    """Compute roots, back edges and cycles; tolerant of edges to unknown nodes."""
    ids = [n.id for n in bp.nodes]
    known = set(ids)
    continues = {
        (n.id, n.params.get("start"))
        for n in bp.nodes
        if n.kind == "loop" and "mode" not in n.params  # builder loops re-enter their start
    }
    handlers = [str(n.params["on_error"]) for n in bp.nodes if n.params.get("on_error")]
    succ: dict[str, list[int]] = {i: [] for i in ids}
    pred: dict[str, list[int]] = {i: [] for i in ids}
    for index, edge in enumerate(bp.edges):
        if edge.source in known and edge.target in known:
            succ[edge.source].append(index)
            pred[edge.target].append(index)
    entered = set(handlers)  # ``except`` handlers are entered from failing nodes, not edges
    roots = [
        i
        for i in ids
        if i not in entered and all((bp.edges[e].source, i) in continues for e in pred[i])
    ]
    if not roots and ids:
        roots = [ids[0]]
    searched = [*roots, *(h for h in dict.fromkeys(handlers) if h in known)]
    back, reached, cycles = _depth_first(ids, searched, succ, bp.edges)
    return GraphShape(
        order=tuple(ids),
        successors={k: tuple(v) for k, v in succ.items()},
        predecessors={k: tuple(v) for k, v in pred.items()},
        edges=bp.edges,
        roots=tuple(roots),
        back_edges=frozenset(back),
        reached=frozenset(reached),
        cycles=tuple(cycles),
    )


def _depth_first(
    ids: Sequence[str],
    roots: Sequence[str],
    succ: dict[str, list[int]],
    edges: Sequence[EdgeSpec],
) -> tuple[set[int], set[str], list[tuple[str, ...]]]:
    """Iterative DFS: returns back-edge indices, nodes reached from roots, and cycles."""
    back: set[int] = set()
    reached: set[str] = set()
    cycles: list[tuple[str, ...]] = []
    visited: set[str] = set()
    for origin in [*roots, *ids]:
        if origin in visited:
            continue
        from_root = origin in roots
        on_stack: dict[str, int] = {origin: 0}
        path = [origin]
        visited.add(origin)
        stack = [(origin, iter(succ[origin]))]
        while stack:
            node, it = stack[-1]
            if from_root:
                reached.add(node)
            index = next(it, None)
            if index is None:
                stack.pop()
                path.pop()
                del on_stack[node]
                continue
            target = edges[index].target
            if target in on_stack:
                back.add(index)
                cycles.append(tuple(path[on_stack[target] :]))
            elif target not in visited:
                visited.add(target)
                on_stack[target] = len(path)
                path.append(target)
                stack.append((target, iter(succ[target])))
    return back, reached, cycles

"""Lint: every problem in a blueprint, each with a code, a node and what to do.

Errors make :func:`flowkit.blueprint.validate` raise; warnings are reported
but never block a run. Each check is a small function over the blueprint and
its :class:`~flowkit.blueprint._graph.GraphShape`, so a lint is
O(nodes + edges) plus the cost of compiling edge conditions.
"""

from __future__ import annotations

from collections import Counter
from typing import TYPE_CHECKING

from .._errors import LintIssue as LintIssue
from .._errors import Severity as Severity
from ._graph import shape_of
from ._model import JOIN_MODES

if TYPE_CHECKING:
    from collections.abc import Iterator, Mapping

    from ._graph import GraphShape
    from ._model import Blueprint, NodeSpec

CONDITION_NAMES = frozenset({"result", "state", "input"})
"""Names an edge ``when`` expression may use."""

_INPUT_PREFIXES = ("$input.", "$state.")


def lint(bp: Blueprint, registry: Mapping[str, object] | None = None) -> list[LintIssue]:
    """Return every problem in ``bp``, errors and warnings, in a stable order.

    Args:
        bp: the blueprint to check.
        registry: name -> implementation; when given, each call node's ``uses``
            and every ``config.fallback`` must be a key of it.

    Returns:
        The issues found; an empty list for a clean blueprint.

    >>> from flowkit.blueprint import Blueprint, NodeSpec
    >>> [i.code for i in lint(Blueprint(id="x", nodes=(NodeSpec("a", uses="a"),)), {})]
    ['missing-implementation']
    """
    shape = shape_of(bp)
    return [
        *_empty(bp),
        *_duplicates(bp),
        *_edge_endpoints(bp),
        *_input_sources(bp),
        *_implementations(bp, registry),
        *_cycles(bp, shape),
        *_loops(bp),
        *_conditions(bp),
        *_configs(bp),
        *_orphans(bp),
        *_unreachable(bp, shape),
        *_joins(bp, shape),
    ]


def _empty(bp: Blueprint) -> Iterator[LintIssue]:
    if not bp.nodes:
        yield LintIssue(
            "empty-blueprint", None, f"blueprint {bp.id!r} has no nodes; add at least one node"
        )


def _duplicates(bp: Blueprint) -> Iterator[LintIssue]:
    counts = Counter(n.id for n in bp.nodes)
    for node_id, count in counts.items():
        if count > 1:
            yield LintIssue(
                "duplicate-node",
                node_id,
                f"node id {node_id!r} is used by {count} nodes; give each node a unique id",
            )


def _edge_endpoints(bp: Blueprint) -> Iterator[LintIssue]:
    known = {n.id for n in bp.nodes}
    for edge in bp.edges:
        where = f"edge {edge.source!r} -> {edge.target!r}"
        if edge.source not in known:
            yield LintIssue(
                "unknown-edge-source",
                edge.source,
                f"{where} starts at unknown node {edge.source!r}; add that node or fix the edge",
            )
        if edge.target not in known:
            yield LintIssue(
                "unknown-edge-target",
                edge.source if edge.source in known else None,
                f"{where} ends at unknown node {edge.target!r}; add that node or fix the edge",
            )


def _input_sources(bp: Blueprint) -> Iterator[LintIssue]:
    known = {n.id for n in bp.nodes}
    for spec in bp.nodes:
        for param, source in spec.inputs.items():
            if source in known or _is_run_reference(source):
                continue
            yield LintIssue(
                "unknown-input-source",
                spec.id,
                f"input {param!r} of node {spec.id!r} comes from {source!r}, which is not a "
                "node id; use a node id, '$input.<name>' or '$state.<key>'",
            )


def _is_run_reference(source: str) -> bool:
    return any(source.startswith(p) and len(source) > len(p) for p in _INPUT_PREFIXES)


def _implementations(bp: Blueprint, registry: Mapping[str, object] | None) -> Iterator[LintIssue]:
    for spec in bp.nodes:
        if spec.kind == "call" and not spec.uses:
            yield LintIssue(
                "missing-implementation",
                spec.id,
                f"call node {spec.id!r} has no 'uses'; name the registry entry it calls",
            )
        if registry is None:
            continue
        if spec.kind == "call" and spec.uses and spec.uses not in registry:
            yield _unregistered(spec, "uses", spec.uses)
        if spec.config.fallback is not None and spec.config.fallback not in registry:
            yield _unregistered(spec, "fallback", spec.config.fallback)


def _unregistered(spec: NodeSpec, role: str, name: str) -> LintIssue:
    return LintIssue(
        "missing-implementation",
        spec.id,
        f"node {spec.id!r} {role} {name!r}, which is not in the registry; "
        "register it or fix the name",
    )


def _cycles(bp: Blueprint, shape: GraphShape) -> Iterator[LintIssue]:
    loops = {n.id for n in bp.nodes if n.kind == "loop"}
    seen: set[tuple[str, ...]] = set()
    for cycle in shape.cycles:
        # The back edge that closed this cycle runs from cycle[-1] to cycle[0].
        if cycle[0] in loops or cycle[-1] in loops or cycle in seen:
            continue
        seen.add(cycle)
        path = " -> ".join(repr(n) for n in (*cycle, cycle[0]))
        yield LintIssue(
            "cycle-without-loop",
            cycle[0],
            f"cycle {path} does not go through a loop node; "
            "remove an edge or use a loop node (Flow.loop) to repeat work",
        )


def _loops(bp: Blueprint) -> Iterator[LintIssue]:
    known = {n.id for n in bp.nodes}
    for spec in bp.nodes:
        if spec.kind != "loop":
            continue
        start = spec.params.get("start")
        if not isinstance(start, str) or start not in known or start == spec.id:
            yield LintIssue(
                "bad-loop",
                spec.id,
                f"loop {spec.id!r} has params['start'] = {start!r}; "
                "set it to the id of the first node of the loop body",
            )
        elif not any(e.source == spec.id and e.target == start for e in bp.edges):
            yield LintIssue(
                "bad-loop",
                spec.id,
                f"loop {spec.id!r} has no edge to its start node {start!r}; "
                f"add the edge {spec.id!r} -> {start!r}",
            )


def _conditions(bp: Blueprint) -> Iterator[LintIssue]:
    for edge in bp.edges:
        if edge.when is not None:
            where = f"edge {edge.source!r} -> {edge.target!r} has an invalid 'when'"
            yield from _condition_issue(edge.when, edge.source, where)
    for spec in bp.nodes:
        # Builder loops (no "mode"; compiled @flow loops have one) test params["condition"].
        if spec.kind == "loop" and "mode" not in spec.params and "condition" in spec.params:
            where = f"loop {spec.id!r} has an invalid params['condition']"
            yield from _condition_issue(spec.params["condition"], spec.id, where)


def _condition_issue(source: object, node_id: str, where: str) -> Iterator[LintIssue]:
    from .._safe_eval import ExpressionError, compile_safe

    if not isinstance(source, str):
        yield LintIssue("bad-condition", node_id, f"{where}: {source!r} is not a string")
        return
    try:
        compile_safe(source, allowed_names=CONDITION_NAMES)
    except ExpressionError as exc:
        yield LintIssue("bad-condition", node_id, f"{where}: {exc}")


def _configs(bp: Blueprint) -> Iterator[LintIssue]:
    for spec in bp.nodes:
        yield from _config_issues(spec)


def _config_issues(spec: NodeSpec) -> Iterator[LintIssue]:
    config = spec.config
    if config.retries is not None and config.retries < 0:
        yield _bad_config(spec, f"retries is {config.retries}; use 0 or more, or null (no limit)")
    if config.timeout is not None and not config.timeout > 0:
        yield _bad_config(spec, f"timeout is {config.timeout}; use a positive number of seconds")
    if config.retry_timeout is not None and not config.retry_timeout > 0:
        yield _bad_config(
            spec, f"retry_timeout is {config.retry_timeout}; use a positive number of seconds"
        )
    if config.queue is not None and (
        not config.queue.strip() or config.queue != config.queue.strip()
    ):
        yield _bad_config(
            spec, f"queue is {config.queue!r}; use a queue name without spaces around it"
        )
    for field in ("retry_on", "never_retry"):
        for name in getattr(config, field):
            if "." not in name.strip(".") or name != name.strip():
                yield _bad_config(
                    spec,
                    f"{field} has {name!r}; use qualified exception type names such as "
                    "'builtins.TimeoutError'",
                )
    if config.join is not None and config.join not in JOIN_MODES:
        modes = ", ".join(repr(m) for m in sorted(JOIN_MODES))
        yield _bad_config(spec, f"join is {config.join!r}; use one of {modes} or None")


def _bad_config(spec: NodeSpec, problem: str) -> LintIssue:
    return LintIssue("bad-config", spec.id, f"node {spec.id!r}: {problem}")


def _orphans(bp: Blueprint) -> Iterator[LintIssue]:
    if len(bp.nodes) < 2:
        return
    linked = {e.source for e in bp.edges} | {e.target for e in bp.edges}
    for spec in bp.nodes:
        if spec.id not in linked:
            yield LintIssue(
                "orphan",
                spec.id,
                f"node {spec.id!r} has no edges; connect it or remove it",
                severity="warning",
            )


def _unreachable(bp: Blueprint, shape: GraphShape) -> Iterator[LintIssue]:
    for spec in bp.nodes:
        if spec.id not in shape.reached:
            yield LintIssue(
                "unreachable",
                spec.id,
                f"node {spec.id!r} cannot be reached from any start node "
                f"({', '.join(map(repr, shape.roots))}); add an edge into it or remove it",
                severity="warning",
            )


def _joins(bp: Blueprint, shape: GraphShape) -> Iterator[LintIssue]:
    for spec in bp.nodes:
        if spec.kind != "join" and spec.config.join not in ("all", "any"):
            continue
        sources = {
            shape.edges[i].source
            for i in shape.predecessors.get(spec.id, ())
            if i not in shape.back_edges
        }
        if len(sources) < 2:
            yield LintIssue(
                "single-predecessor-join",
                spec.id,
                f"node {spec.id!r} joins {len(sources)} predecessor(s); a join needs two or "
                "more, so add edges into it or drop the join setting",
                severity="warning",
            )

"""A blueprint prepared for execution: adjacency, join modes and compiled expressions.

Built once per blueprint (and registry), so each step of the core costs
O(out-degree of the node), never a rescan of the graph.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

import attrs

from .._safe_eval import compile_safe
from ..blueprint._graph import shape_of

if TYPE_CHECKING:
    from ..blueprint._model import Blueprint, NodeSpec

Compiled = Callable[[Mapping[str, Any]], Any]
Evaluator = Callable[[str], Compiled]
"""Turns expression source into a function of a scope (flow variables)."""

_EDGE_NAMES = frozenset({"result", "state", "input"})


@attrs.frozen
class Edge:
    target: str
    action: str | None
    when: Compiled | None
    back: bool


def _safe(source: str, names: frozenset[str] | None = None) -> Compiled:
    return compile_safe(source, allowed_names=names).evaluate


class Program:
    """Execution plan of one blueprint; shared by every run of it."""

    def __init__(
        self,
        blueprint: Blueprint,
        registry: Mapping[str, Any] | None = None,
        *,
        evaluator: Evaluator | None = None,
    ) -> None:
        self.blueprint = blueprint
        self.registry: Mapping[str, Any] = registry or {}
        self._evaluator = evaluator
        self._compiled: dict[str, Compiled] = {}
        shape = shape_of(blueprint)
        self.specs: dict[str, NodeSpec] = {n.id: n for n in blueprint.nodes}
        self.patches: tuple[str, ...] = tuple(blueprint.metadata.get("patches", ()))
        """The patch ids the blueprint knows (``flow.patched``/``deprecate_patch``)."""
        default_join = str(blueprint.metadata.get("join_default", "all"))
        self.join: dict[str, str] = {n.id: n.config.join or default_join for n in blueprint.nodes}
        self.out: dict[str, tuple[Edge, ...]] = {}
        self.n_preds: dict[str, int] = {}
        self.preds: dict[str, tuple[str, ...]] = {}
        for node_id in shape.order:
            self.out[node_id] = tuple(
                self._edge(index, index in shape.back_edges) for index in shape.successors[node_id]
            )
            forward = [
                shape.edges[i].source
                for i in shape.predecessors[node_id]
                if i not in shape.back_edges
            ]
            self.preds[node_id] = tuple(dict.fromkeys(forward))
            self.n_preds[node_id] = len(forward)
        self.roots: tuple[str, ...] = shape.roots
        self.terminals: frozenset[str] = frozenset(
            n for n in shape.order if not any(not e.back for e in self.out[n])
        )
        self.wait_names: dict[str, str] = {
            wait_name(n): n.id for n in blueprint.nodes if n.kind in ("wait", "webhook")
        }
        self.blueprint_order: tuple[str, ...] = shape.order
        self.loop_resets: dict[str, tuple[str, ...]] = {
            n.id: self._join_nodes_in_body(n) for n in blueprint.nodes if n.kind == "loop"
        }
        by_uses = {  # once per implementation: inspecting signatures is slow
            uses: _parameters(self.registry.get(uses))
            for uses in {n.uses or "" for n in blueprint.nodes}
        }
        self.parameters: dict[str, tuple[str, ...] | None] = {
            n.id: by_uses[n.uses or ""] for n in blueprint.nodes
        }
        self.chained: dict[str, tuple[str, ...]] = {}
        """Call node -> the call nodes its completion always fires next, in order, each
        with its output as the only argument (see ``_machine.completion_shortcut``)."""
        self.joining: dict[str, str] = {}
        """Call node -> the ``join="all"`` node its completion always arrives at."""
        for node_id, edges in self.out.items():
            if not edges or not all(self._plain_edge(self.specs[node_id], e) for e in edges):
                continue
            targets = tuple(e.target for e in edges)
            if all(self._plain_successor(self.specs[t]) for t in targets):
                self.chained[node_id] = targets
            elif len(targets) == 1 and self._waiting_join(targets[0]):
                self.joining[node_id] = targets[0]

    def _plain_edge(self, source: NodeSpec, edge: Edge) -> bool:
        """Whether ``source`` is a call node that keeps its output and whose ``edge`` is
        taken whatever the output (unconditional, forward)."""
        return (
            edge.when is None
            and edge.action is None
            and not edge.back
            and _plain_call(source)
            and "assign" not in source.params
        )

    def _plain_successor(self, target: NodeSpec) -> bool:
        """Whether ``target`` is a call node entered one way only, that takes its one
        predecessor's output as its argument."""
        return (
            _plain_call(target)
            and self.n_preds[target.id] == 1
            and not target.inputs
            and not {"args", "kwargs", "options"} & target.params.keys()
            and target.config.queue is None
        )

    def _waiting_join(self, node_id: str) -> bool:
        """Whether ``node_id`` is a ``join="all"`` node with several predecessors."""
        return self.n_preds[node_id] > 1 and self.join[node_id] == "all"

    def _join_nodes_in_body(self, loop: NodeSpec) -> tuple[str, ...]:
        """Joins inside a loop's body, whose counters restart on every iteration."""
        start = str(loop.params.get("start", ""))
        seen = {loop.id}
        todo = [start] if start in self.out else []
        while todo:
            node = todo.pop()
            if node in seen:
                continue
            seen.add(node)
            todo.extend(e.target for e in self.out[node] if not e.back)
        seen.discard(loop.id)
        return tuple(n for n in seen if self.n_preds[n] > 1 and self.join[n] != "pass")

    def _edge(self, index: int, back: bool) -> Edge:
        spec = self.blueprint.edges[index]
        when = _safe(spec.when, _EDGE_NAMES) if spec.when else None
        return Edge(spec.target, spec.action, when, back)

    def expr(self, source: str) -> Compiled:
        """The compiled form of a flow expression (cached)."""
        fn = self._compiled.get(source)
        if fn is None:
            fn = self._evaluator(source) if self._evaluator else _safe(source)
            self._compiled[source] = fn
        return fn

    def condition(self, source: str) -> Compiled:
        """A builder condition over ``result``, ``state`` and ``input`` (safe evaluator)."""
        key = "\0cond:" + source
        fn = self._compiled.get(key)
        if fn is None:
            fn = self._compiled[key] = _safe(source, _EDGE_NAMES)
        return fn


def _plain_call(spec: NodeSpec) -> bool:
    return spec.kind == "call" and not spec.params.get("map")


def wait_name(spec: NodeSpec) -> str:
    """The signal name a wait or webhook node listens for."""
    return str(spec.params.get("name") or spec.id)


def _parameters(fn: Any) -> tuple[str, ...] | None:
    """Names a callable accepts by keyword, or None when it takes ``**kwargs``."""
    if fn is None:
        return ()
    target = getattr(fn, "__flowkit_impl__", fn)
    skip = 0
    node_class: Any = target if isinstance(target, type) else type(target)
    if getattr(node_class, "__flowkit_node__", False):  # a flowkit.Node subclass
        target, skip = node_class.prep, 2  # prep(self, ctx, *args, **kwargs)
    try:
        signature = inspect.signature(target)
    except (TypeError, ValueError):
        return None
    names = []
    for param in list(signature.parameters.values())[skip:]:
        if param.kind is inspect.Parameter.VAR_KEYWORD:
            return None
        if param.kind in (param.POSITIONAL_OR_KEYWORD, param.KEYWORD_ONLY):
            names.append(param.name)
    return tuple(names)

"""The graph a flow compiles to, under construction: nodes, edges, ports, links.

A *port* is a dangling exit ``(node id, action)``: where control leaves a
statement. Compiling a statement consumes the ports of the one before it and
returns its own. ``START`` is the port of the flow's entry.

*Links* are structural edges that routing never takes (``when="False"``):
they tie an ``except`` handler to the try block it serves, and a loop body to
the code before the loop, so that every node except the entry has a
predecessor (the graph's roots and back edges are found by a search along
edges; the core enters handlers and loop bodies directly). They are emitted
after every real edge so that the search meets real edges first.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import attrs

from ..blueprint._model import Blueprint, EdgeSpec, NodeConfig, NodeKind, NodeSpec

if TYPE_CHECKING:
    from collections.abc import Iterable

START = ""
Port = tuple[str, str | None]
NEVER = "False"


@attrs.define
class Draft:
    """A node whose params may still change (a loop learns its body's first node later)."""

    kind: NodeKind
    params: dict[str, Any] = attrs.field(factory=dict)
    uses: str | None = None
    config: NodeConfig = attrs.field(factory=NodeConfig)


class Graph:
    """Nodes in creation order, edges in creation order, links last."""

    def __init__(self) -> None:
        self.drafts: dict[str, Draft] = {}
        self.edges: list[EdgeSpec] = []
        self.links: list[EdgeSpec] = []
        self.entries: list[str] = []
        self._counts: dict[str, int] = {}
        self._taken: set[str] = set()

    def new_id(self, base: str) -> str:
        """``base``, or ``base#2``, ``base#3``... once it is taken."""
        count = self._counts.get(base, 0)
        while True:
            count += 1
            node_id = base if count == 1 else f"{base}#{count}"
            if node_id not in self._taken:
                break
        self._counts[base] = count
        self._taken.add(node_id)
        return node_id

    def add(self, node_id: str, draft: Draft, ports: Iterable[Port]) -> str:
        self.drafts[node_id] = draft
        self.connect(ports, node_id)
        return node_id

    def connect(self, ports: Iterable[Port], target: str) -> None:
        for source, action in ports:
            if source == START:
                self.entries.append(target)
            else:
                self.edges.append(EdgeSpec(source, target, action))

    def link(self, source: str, target: str, label: str) -> None:
        """A structural edge that is never taken (see the module docstring)."""
        self.links.append(EdgeSpec(source, target, label, NEVER))

    def out_edges(self, node_id: str) -> list[int]:
        return [i for i, e in enumerate(self.edges) if e.source == node_id]

    def in_edges(self, node_id: str) -> list[int]:
        return [i for i, e in enumerate(self.edges) if e.target == node_id]

    def elide(self, node_id: str) -> str | None:
        """Remove a no-op node with one way in and one plain way out; returns its successor."""
        outs, ins = self.out_edges(node_id), self.in_edges(node_id)
        if len(outs) != 1 or len(ins) != 1 or self.edges[outs[0]].action is not None:
            return None
        if any(node_id in (link.source, link.target) for link in self.links):
            return None
        successor = self.edges[outs[0]].target
        entering = self.edges[ins[0]]
        self.edges[ins[0]] = EdgeSpec(entering.source, successor, entering.action)
        del self.edges[outs[0]]
        del self.drafts[node_id]
        return successor

    def blueprint(self, flow_id: str, version: int, metadata: dict[str, Any]) -> Blueprint:
        """The finished blueprint, without nodes that cannot be reached (dead code)."""
        live = self._reachable()
        nodes = [
            NodeSpec(node_id, d.kind, d.uses, d.params, {}, d.config)
            for node_id, d in self.drafts.items()
            if node_id in live
        ]
        edges = [e for e in (*self.edges, *self.links) if e.source in live and e.target in live]
        fields: dict[str, Any] = {"nodes": tuple(nodes), "edges": tuple(edges)}
        return Blueprint(id=flow_id, version=version, metadata=metadata, **fields)

    def _reachable(self) -> set[str]:
        successors: dict[str, list[str]] = {}
        for edge in (*self.edges, *self.links):
            successors.setdefault(edge.source, []).append(edge.target)
        for node_id, draft in self.drafts.items():
            handler = draft.params.get("on_error")
            if isinstance(handler, str):
                successors.setdefault(node_id, []).append(handler)
        seen: set[str] = set()
        todo = list(self.entries)
        while todo:
            node_id = todo.pop()
            if node_id in seen or node_id not in self.drafts:
                continue
            seen.add(node_id)
            todo.extend(successors.get(node_id, ()))
        return seen

"""Diagrams of a blueprint: Mermaid text, and SVG through Graphviz when available.

Node ids can hold any character, so diagram ids are positional (``n0``,
``n1``, ...) and the real id appears only inside a quoted, escaped label. The
output depends only on the blueprint, so it is stable across runs.
:func:`run_mermaid` draws the same diagram with the path one run took styled
on it (visited, failed, skipped, awaiting, ... nodes).
"""

from __future__ import annotations

import importlib
import shutil
from typing import TYPE_CHECKING, Any

from ._graph import shape_of

if TYPE_CHECKING:
    from collections.abc import Mapping

    from ._model import Blueprint, EdgeSpec

_MERMAID_SHAPES = {
    "call": ("[", "]"),
    "let": ("[/", "/]"),
    "branch": ("{", "}"),
    "loop": ("{{", "}}"),
    "join": ("((", "))"),
    "sleep": ("([", "])"),
    "wait": ("([", "])"),
    "webhook": ("([", "])"),
    "subflow": ("[[", "]]"),
    "return": (">", "]"),
}
_UNKNOWN_SHAPE = ("[", "]")
_DOT_SHAPES = {
    "call": 'shape="box"',
    "let": 'shape="parallelogram"',
    "branch": 'shape="diamond"',
    "loop": 'shape="hexagon"',
    "join": 'shape="circle"',
    "sleep": 'shape="box", style="rounded"',
    "wait": 'shape="box", style="rounded"',
    "webhook": 'shape="box", style="rounded"',
    "subflow": 'shape="box3d"',
    "return": 'shape="doublecircle"',
}
_UNKNOWN_DOT_SHAPE = 'shape="box", style="dashed"'
# Mermaid decodes "#<decimal>;" inside labels; these characters would otherwise
# end the label, start an entity or be read as markup.
_MERMAID_ESCAPES = {ord(c): f"#{ord(c)};" for c in '"#<>&|`[]{}()'} | {
    ord("\n"): " ",
    ord("\r"): " ",
}


def to_mermaid(bp: Blueprint) -> str:
    """Render ``bp`` as a Mermaid ``flowchart TD``.

    Node shapes follow the kind (call ``[ ]``, branch ``{ }``, loop ``{{ }}``,
    join ``(( ))``, sleep/wait/webhook ``([ ])``); edge labels show the action
    and the condition; back edges (loop continuations) are dashed. Edges to
    unknown nodes are drawn to a node labelled ``? id``.

    >>> from flowkit.blueprint import Blueprint, NodeSpec, EdgeSpec
    >>> bp = Blueprint(id="x", nodes=[NodeSpec("a", uses="a"), NodeSpec("b", uses="b")],
    ...                edges=[EdgeSpec("a", "b", action="ok")])
    >>> print(to_mermaid(bp))
    flowchart TD
        n0["a"]
        n1["b"]
        n0 -->|"ok"| n1
    """
    names, kinds = _diagram_ids(bp)
    lines = ["flowchart TD"]
    for node_id, name in names.items():
        opening, closing = _MERMAID_SHAPES.get(kinds.get(node_id, ""), _UNKNOWN_SHAPE)
        lines.append(f'    {name}{opening}"{_mermaid_text(_label(node_id, kinds))}"{closing}')
    back = shape_of(bp).back_edges
    for index, edge in enumerate(bp.edges):
        arrow = "-.->" if index in back else "-->"
        text = _edge_label(edge)
        label = f'|"{_mermaid_text(text)}"|' if text else ""
        lines.append(f"    {names[edge.source]} {arrow}{label} {names[edge.target]}")
    return "\n".join(lines)


# How each node status of a run is drawn (Mermaid `classDef` styles), in legend order.
RUN_STYLES: dict[str, str] = {
    "visited": "fill:#d3f9d8,stroke:#2b8a3e,color:#1b4332",
    "failed": "fill:#ffe3e3,stroke:#c92a2a,color:#7d1a1a,stroke-width:3px",
    "skipped": "fill:#f1f3f5,stroke:#adb5bd,color:#868e96,stroke-dasharray:4 3",
    "awaiting": "fill:#fff3bf,stroke:#e67700,color:#5c3c00,stroke-width:3px",
    "running": "fill:#d0ebff,stroke:#1971c2,color:#0b3a6b,stroke-width:2px",
    "cancelled": "fill:#f8f0fc,stroke:#862e9c,color:#5f1f70,stroke-dasharray:2 2",
    "unreached": "fill:#ffffff,stroke:#ced4da,color:#adb5bd",
}


def run_mermaid(bp: Blueprint, statuses: Mapping[str, str]) -> str:
    """Render ``bp`` as :func:`to_mermaid` does, with each node styled by its run status.

    ``statuses`` maps node ids to one of ``visited``, ``failed``, ``skipped``,
    ``awaiting``, ``running``, ``cancelled`` or ``unreached``; nodes it does
    not name are drawn as ``unreached``, ids the blueprint lacks are ignored,
    and any other status raises ``ValueError``. Each status becomes a Mermaid
    ``classDef`` (emitted only when used), so the picture shows the path the
    run took.

    >>> from flowkit.blueprint import Blueprint, NodeSpec, EdgeSpec
    >>> bp = Blueprint(id="x", nodes=[NodeSpec("a", uses="a"), NodeSpec("b", uses="b")],
    ...                edges=[EdgeSpec("a", "b")])
    >>> print(run_mermaid(bp, {"a": "visited"}).splitlines()[-2:])
    ['    class n0 visited', '    class n1 unreached']
    """
    unknown = sorted({s for s in statuses.values() if s not in RUN_STYLES})
    if unknown:
        raise ValueError(f"unknown node status(es) {unknown}; use one of {list(RUN_STYLES)}")
    names, _ = _diagram_ids(bp)
    groups: dict[str, list[str]] = {status: [] for status in RUN_STYLES}
    for node_id, name in names.items():
        groups[statuses.get(node_id, "unreached")].append(name)
    used = [status for status, members in groups.items() if members]
    lines = [to_mermaid(bp)]
    lines += [f"    classDef {status} {RUN_STYLES[status]}" for status in used]
    lines += [f"    class {','.join(groups[status])} {status}" for status in used]
    return "\n".join(lines)


def run_mimebundle(bp: Blueprint, statuses: Mapping[str, str], text: str) -> dict[str, str]:
    """The Jupyter representation of a run: its path as Mermaid markdown, and ``text``."""
    return {
        "text/markdown": f"```mermaid\n{run_mermaid(bp, statuses)}\n```",
        "text/plain": text,
    }


def mimebundle(bp: Blueprint) -> dict[str, str]:
    """The Jupyter representation of ``bp``: Mermaid markdown, plus SVG when possible.

    ``"image/svg+xml"`` is added only when the ``graphviz`` package is installed
    and its ``dot`` program runs; any Graphviz failure falls back silently to
    the Mermaid markdown.
    """
    bundle = {
        "text/markdown": f"```mermaid\n{to_mermaid(bp)}\n```",
        "text/plain": repr(bp),
    }
    svg = _render_svg(to_dot(bp))
    if svg is not None:
        bundle["image/svg+xml"] = svg
    return bundle


def to_dot(bp: Blueprint) -> str:
    """Render ``bp`` as Graphviz DOT source, with the same ids and labels as Mermaid."""
    names, kinds = _diagram_ids(bp)
    lines = [f"digraph {_dot_text(bp.id)} {{", "    rankdir=TB;"]
    for node_id, name in names.items():
        shape = _DOT_SHAPES.get(kinds.get(node_id, ""), _UNKNOWN_DOT_SHAPE)
        lines.append(f"    {name} [label={_dot_text(_label(node_id, kinds))}, {shape}];")
    back = shape_of(bp).back_edges
    for index, edge in enumerate(bp.edges):
        attributes = [f"label={_dot_text(_edge_label(edge))}"] if _edge_label(edge) else []
        if index in back:
            attributes.append('style="dashed"')
        suffix = f" [{', '.join(attributes)}]" if attributes else ""
        lines.append(f"    {names[edge.source]} -> {names[edge.target]}{suffix};")
    lines.append("}")
    return "\n".join(lines)


def _diagram_ids(bp: Blueprint) -> tuple[dict[str, str], dict[str, str]]:
    """Positional diagram id of every node id (edge endpoints included), and known kinds."""
    kinds: dict[str, str] = {}
    for spec in bp.nodes:
        kinds.setdefault(spec.id, spec.kind)
    endpoints = [n for e in bp.edges for n in (e.source, e.target)]
    ordered = dict.fromkeys([*kinds, *endpoints])
    return {node_id: f"n{i}" for i, node_id in enumerate(ordered)}, kinds


def _label(node_id: str, kinds: dict[str, str]) -> str:
    return node_id if node_id in kinds else f"? {node_id}"


def _edge_label(edge: EdgeSpec) -> str:
    if edge.action is not None and edge.when is not None:
        return f"{edge.action} if {edge.when}"
    return edge.action or edge.when or ""


def _mermaid_text(text: str) -> str:
    return text.translate(_MERMAID_ESCAPES)


def _dot_text(text: str) -> str:
    escaped = text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
    return f'"{escaped}"'


def _render_svg(dot_source: str) -> str | None:
    """SVG from Graphviz, or ``None`` when the package or ``dot`` is missing or fails."""
    if shutil.which("dot") is None:
        return None
    try:
        graphviz: Any = importlib.import_module("graphviz")
        svg = graphviz.Source(dot_source).pipe(format="svg", encoding="utf-8")
    except Exception:  # any Graphviz failure means "no SVG", never an error
        return None
    return svg if isinstance(svg, str) else None

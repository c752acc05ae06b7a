"""The path a run took, drawn in the terminal: its flow's graph as a tree, each node
marked with what happened there (``flowkit runs show``)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..blueprint._graph import shape_of

if TYPE_CHECKING:
    from collections.abc import Mapping

    from rich.text import Text
    from rich.tree import Tree

    from ..blueprint import Blueprint

MARKS = {
    "visited": ("✓", "green"),
    "failed": ("✗", "bold red"),
    "running": ("▶", "yellow"),
    "awaiting": ("⏸", "cyan"),
    "cancelled": ("⊘", "magenta"),
    "skipped": ("-", "dim"),
}
UNREACHED = ("·", "dim")
LEGEND = "✓ done  ✗ failed  ▶ running  ⏸ waiting  ⊘ cancelled  - skipped  · not reached"


def path_tree(bp: Blueprint, statuses: Mapping[str, str]) -> Tree:
    """``bp`` as a tree from its start nodes: each node once in full, then as ``↪ id``
    where another edge reaches it again (a join); a loop's edge back as ``↺ id``.

    ``statuses`` is node id -> what happened there (``RunResult.path()``); nodes it
    leaves out were not reached. :data:`LEGEND` says what the marks mean.
    """
    from rich.tree import Tree

    shape = shape_of(bp)
    kinds = {spec.id: spec.kind for spec in bp.nodes}
    tree = Tree(bp.id, guide_style="dim")
    drawn: set[str] = set()
    stack = [(tree, root) for root in reversed(shape.roots)]
    while stack:
        parent, node_id = stack.pop()
        if node_id in drawn:
            parent.add(_label(node_id, kinds, statuses, "↪ "))
            continue
        drawn.add(node_id)
        branch = parent.add(_label(node_id, kinds, statuses))
        later = []
        for index in shape.successors.get(node_id, ()):
            edge = shape.edges[index]
            if index in shape.back_edges:
                branch.add(_label(edge.target, kinds, statuses, "↺ "))
            else:
                later.append((branch, edge.target))
        stack.extend(reversed(later))
    for spec in bp.nodes:  # handlers and nodes no edge reaches
        if spec.id not in drawn and spec.id in statuses:
            tree.add(_label(spec.id, kinds, statuses))
    return tree


def _label(
    node_id: str, kinds: Mapping[str, str], statuses: Mapping[str, str], via: str = ""
) -> Text:
    from rich.text import Text

    status = statuses.get(node_id)
    mark, style = MARKS.get(status or "", UNREACHED)
    label = Text()
    label.append(f"{via}{mark} ", style=style)
    label.append(node_id, style="bold" if status in ("failed", "running", "awaiting") else "")
    label.append(f"  {kinds.get(node_id, '?')}", style="dim")
    if status and not via:
        label.append(f"  {status}", style=style)
    return label

"""``diff(old, new)``: what changed between two blueprints, and where runs stand in them.

The node-level comparison is by id. A node whose id changed is reported as
*renamed* when a removed node and an added node have the same kind, the same
``uses`` and the same neighbours (predecessors and successors): a heuristic,
which may pair two nodes that only look alike, or miss a rename that also moved
the node. The position check (:func:`check_positions`) does not rely on it: a
run's positions are looked up by id, through the ``mapping`` the caller gives.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import attrs

from ._model import converter

if TYPE_CHECKING:
    from collections.abc import Iterable, Mapping

    from ._model import Blueprint, NodeSpec

_CONFIG_FIELDS = (
    "retries",
    "backoff",
    "timeout",
    "fallback",
    "join",
    "retry_on",
    "never_retry",
    "retry_timeout",
    "queue",
)
_SIGNATURE_PARAMS = ("args", "kwargs")
_CONDITION_PARAMS = ("cond", "patch")
_SIGNATURE_WHATS = ("uses", "kind", "signal", *_SIGNATURE_PARAMS)
# where a run can stand: state section -> position kind
_RECORD_SECTIONS = {"waits": "wait", "dispatches": "node", "timers": "timer", "children": "child"}
_KEY_SECTIONS = {"loops": "loop", "batches": "batch"}
# the node kinds a position needs when the old blueprint is not at hand
_KINDS_OF = {"wait": ("wait", "webhook"), "child": ("subflow",), "loop": ("loop",)}


@attrs.frozen
class Change:
    """One changed property: of node ``node`` (or of edge ``"source -> target"``)."""

    node: str
    what: str  # "retries", "timeout", "condition", "uses", "args", "inputs", ...
    old: Any
    new: Any

    def to_dict(self) -> dict[str, Any]:
        plain = converter.unstructure  # a Backoff as its fields
        return {
            "node": self.node,
            "what": self.what,
            "old": plain(self.old),
            "new": plain(self.new),
        }


@attrs.frozen
class Position:
    """Where a run stands: ``kind`` is ``wait``, ``node`` (in flight), ``timer``,
    ``child``, ``loop`` or ``batch``; ``node`` its node id; ``key`` its record (a wait's
    signal name, a dispatch id, ...)."""

    kind: str
    node: str
    key: str
    detail: str | None = None  # a wait's signal name, a timer's purpose


@attrs.frozen
class PositionCheck:
    """Whether the new blueprint has ``position`` (as ``new_node``), of the same kind."""

    position: Position
    new_node: str
    problem: str | None = None

    @property
    def ok(self) -> bool:
        return self.problem is None

    def to_dict(self) -> dict[str, Any]:
        return {
            "kind": self.position.kind,
            "node": self.position.node,
            "new_node": self.new_node,
            "ok": self.ok,
            "problem": self.problem,
        }


@attrs.frozen
class BlueprintDiff:
    """What :func:`diff` found between ``old`` and ``new`` (ids and digests included)."""

    old_id: str
    new_id: str
    old_digest: str
    new_digest: str
    added: tuple[str, ...] = ()
    removed: tuple[str, ...] = ()
    renamed: tuple[tuple[str, str], ...] = ()  # (old id, new id): a heuristic
    edges_added: tuple[str, ...] = ()  # "source -> target [action]"
    edges_removed: tuple[str, ...] = ()
    conditions: tuple[Change, ...] = ()
    configs: tuple[Change, ...] = ()
    signatures: tuple[Change, ...] = ()
    params: tuple[Change, ...] = ()
    patches_added: tuple[str, ...] = ()
    patches_removed: tuple[str, ...] = ()

    @property
    def changed(self) -> bool:
        """Whether the graphs differ at all."""
        return self.old_digest != self.new_digest

    def to_dict(self) -> dict[str, Any]:
        data = attrs.asdict(self, recurse=False)
        for key in ("conditions", "configs", "signatures", "params"):
            data[key] = [change.to_dict() for change in data[key]]
        data["renamed"] = [{"old": old, "new": new} for old, new in self.renamed]
        return {key: list(v) if isinstance(v, tuple) else v for key, v in data.items()}


def diff(old: Blueprint, new: Blueprint) -> BlueprintDiff:
    """What changed from ``old`` to ``new``: nodes added, removed and renamed, edges
    and conditions, node configs (retries, timeouts...), call signatures and patches.

    >>> from flowkit.blueprint import Blueprint, NodeSpec
    >>> a = Blueprint(id="f", nodes=(NodeSpec("x", uses="m.x"),))
    >>> diff(a, Blueprint(id="f", nodes=(NodeSpec("y", uses="m.y"),))).added
    ('y',)
    """
    old_ids = {n.id for n in old.nodes}
    new_ids = {n.id for n in new.nodes}
    added = sorted(new_ids - old_ids)
    removed = sorted(old_ids - new_ids)
    renamed = _renames(old, new, removed, added)
    pairs = [(n.id, n.id) for n in old.nodes if n.id in new_ids] + renamed
    changes = [c for o, n in pairs for c in _node_changes(old.node(o), new.node(n))]
    old_edges, new_edges = _edges(old, dict(renamed)), _edges(new, {})
    old_patches = set(old.metadata.get("patches", ()))
    new_patches = set(new.metadata.get("patches", ()))
    return BlueprintDiff(
        old.id,
        new.id,
        old.digest,
        new.digest,
        added=tuple(a for a in added if a not in {n for _, n in renamed}),
        removed=tuple(r for r in removed if r not in {o for o, _ in renamed}),
        renamed=tuple(renamed),
        edges_added=tuple(sorted(set(new_edges) - set(old_edges))),
        edges_removed=tuple(sorted(set(old_edges) - set(new_edges))),
        conditions=tuple(_when_changes(old_edges, new_edges))
        + tuple(c for c in changes if c.what == "condition"),
        configs=tuple(c for c in changes if c.what in _CONFIG_FIELDS),
        signatures=tuple(c for c in changes if c.what in _SIGNATURE_WHATS)
        + tuple(_input_changes(old, new)),
        params=tuple(c for c in changes if c.what.startswith("params.")),
        patches_added=tuple(sorted(new_patches - old_patches)),
        patches_removed=tuple(sorted(old_patches - new_patches)),
    )


def _renames(
    old: Blueprint, new: Blueprint, removed: list[str], added: list[str]
) -> list[tuple[str, str]]:
    """Removed and added nodes of the same kind, ``uses`` and neighbours: a neighbour that
    is itself removed (or added) matches any, so a chain of renamed nodes pairs up."""
    gone, unmatched, fresh = set(removed), set(added), set(added)
    pairs: list[tuple[str, str]] = []
    for old_id in removed:
        shape = _shape(old, old_id, gone)
        match = next((a for a in added if a in fresh and _shape(new, a, unmatched) == shape), None)
        if match is not None:
            pairs.append((old_id, match))
            fresh.discard(match)
    return pairs


def _shape(bp: Blueprint, node_id: str, unknown: set[str]) -> Any:
    """A node's kind, ``uses`` and neighbours (those in ``unknown`` only counted)."""
    spec = bp.node(node_id)
    preds = [e.source for e in bp.edges if e.target == node_id]
    succs = [e.target for e in bp.edges if e.source == node_id]
    return (
        spec.kind,
        spec.uses,
        frozenset(p for p in preds if p not in unknown),
        frozenset(s for s in succs if s not in unknown),
        len(set(preds)),
        len(set(succs)),
    )


def _node_changes(old: NodeSpec, new: NodeSpec) -> list[Change]:
    changes = [
        Change(new.id, name, getattr(old.config, name), getattr(new.config, name))
        for name in _CONFIG_FIELDS
        if getattr(old.config, name) != getattr(new.config, name)
    ]
    if old.kind != new.kind:
        changes.append(Change(new.id, "kind", old.kind, new.kind))
    if old.uses != new.uses:
        changes.append(Change(new.id, "uses", old.uses, new.uses))
    for key in sorted(set(old.params) | set(new.params)):
        before, after = old.params.get(key), new.params.get(key)
        if before == after:
            continue
        if key in _CONDITION_PARAMS:
            changes.append(Change(new.id, "condition", before, after))
        elif key == "name" and new.kind in ("wait", "webhook"):
            changes.append(Change(new.id, "signal", before, after))
        elif key in _SIGNATURE_PARAMS:
            changes.append(Change(new.id, key, before, after))
        else:
            changes.append(
                Change(new.id, f"params.{key}", _masked(key, before), _masked(key, after))
            )
    if old.inputs != new.inputs:
        changes.append(Change(new.id, "args", dict(old.inputs), dict(new.inputs)))
    return changes


def _masked(key: str, value: Any) -> Any:
    return "***" if key == "secret" and value else value


def _edges(bp: Blueprint, renames: Mapping[str, str]) -> dict[str, str | None]:
    """Edge label -> its ``when`` condition (node ids renamed by ``renames``)."""
    labels: dict[str, str | None] = {}
    for edge in bp.edges:
        action = f" [{edge.action}]" if edge.action else ""
        source, target = (
            renames.get(edge.source, edge.source),
            renames.get(edge.target, edge.target),
        )
        labels[f"{source} -> {target}{action}"] = edge.when
    return labels


def _when_changes(old: Mapping[str, str | None], new: Mapping[str, str | None]) -> Iterable[Change]:
    for label in sorted(set(old) & set(new)):
        if old[label] != new[label]:
            yield Change(label, "condition", old[label], new[label])


def _input_changes(old: Blueprint, new: Blueprint) -> Iterable[Change]:
    before, after = old.metadata.get("inputs"), new.metadata.get("inputs")
    if before != after:
        yield Change(new.id, "inputs", before, after)


# -- where runs stand ----------------------------------------------------------------------
def run_positions(sections: Mapping[str, Mapping[str, Any]]) -> list[Position]:
    """The positions of a run, from its state's sections (waits, nodes in flight,
    timers, children, loops, batches)."""
    positions = []
    for section, kind in _RECORD_SECTIONS.items():
        for key, record in sections.get(section, {}).items():
            if isinstance(record, dict) and isinstance(record.get("node"), str):
                detail = key if kind == "wait" else record.get("purpose")
                positions.append(Position(kind, record["node"], str(key), detail))
    for section, kind in _KEY_SECTIONS.items():
        positions.extend(Position(kind, node, node) for node in sections.get(section, {}))
    return positions


def check_positions(
    positions: Iterable[Position],
    new: Blueprint,
    *,
    old: Blueprint | None = None,
    mapping: Mapping[str, str] | None = None,
) -> list[PositionCheck]:
    """Whether ``new`` has each position (its node id, or ``mapping[id]``) as a node of
    the same kind: a wait waiting for the same signal, a call of the same ``uses``, a
    subflow of the same flow. Without ``old`` (the blueprint the run started with), the
    kind is checked as far as the position tells it."""
    mapping = mapping or {}
    nodes = {n.id: n for n in new.nodes}
    before = {n.id: n for n in old.nodes} if old is not None else {}
    checks = []
    for position in positions:
        target = mapping.get(position.node, position.node)
        spec = nodes.get(target)
        problem = (
            f"{_where(position)} is not in the new version (node {target!r})"
            if spec is None
            else _kind_problem(position, before.get(position.node), spec)
        )
        checks.append(PositionCheck(position, target, problem))
    return checks


def _signal(spec: NodeSpec) -> str:
    """The signal a wait or webhook node listens for (``flowkit.core`` reads it so too)."""
    return str(spec.params.get("name") or spec.id)


def _where(position: Position) -> str:
    if position.kind == "wait":
        return f"the wait for {position.key!r} at node {position.node!r}"
    if position.kind == "node":
        return f"node {position.node!r} (in flight)"
    return f"the {position.kind} at node {position.node!r}"


def _kind_problem(position: Position, old: NodeSpec | None, new: NodeSpec) -> str | None:
    if position.kind == "wait" and _signal(new) != position.key:
        return (
            f"{_where(position)} is a wait for {_signal(new)!r} in the new version: a wait "
            "must keep its signal name"
        )
    if old is None:
        kinds = _KINDS_OF.get(position.kind)
        if position.kind == "timer" and position.detail == "sleep":
            kinds = ("sleep",)
        if kinds is not None and new.kind not in kinds:
            return f"{_where(position)} is a {new.kind} node in the new version"
        return None
    if old.kind != new.kind:
        return f"{_where(position)} was a {old.kind} node, is a {new.kind} node in the new version"
    if old.uses != new.uses:
        return f"{_where(position)} calls {old.uses!r}, the new version's node calls {new.uses!r}"
    flow = old.params.get("blueprint_id"), new.params.get("blueprint_id")
    if old.kind == "subflow" and flow[0] != flow[1]:
        return f"{_where(position)} starts flow {flow[0]!r}, the new version's starts {flow[1]!r}"
    return None

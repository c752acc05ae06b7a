"""The blueprint: an immutable, JSON-serialisable graph of nodes and edges."""

from __future__ import annotations

import hashlib
import json
from typing import TYPE_CHECKING, Any, Literal

import attrs
import cattrs

from .._durations import Backoff

if TYPE_CHECKING:
    from collections.abc import Iterable

NodeKind = Literal[
    "call", "let", "branch", "loop", "join", "sleep", "wait", "webhook", "subflow", "return"
]
JoinMode = Literal["all", "any", "pass"]
NODE_KINDS: frozenset[str] = frozenset(NodeKind.__args__)  # type: ignore[attr-defined]
JOIN_MODES: frozenset[str] = frozenset(JoinMode.__args__)  # type: ignore[attr-defined]


def _params_repr(params: dict[str, Any]) -> str:
    """``params`` for ``repr``, with a webhook's ``secret`` masked."""
    return repr({k: "***" if k == "secret" and v else v for k, v in params.items()})


def _frozen_dict(value: Any) -> dict[str, Any]:
    return dict(value) if value else {}


def _node_tuple(value: Iterable[NodeSpec]) -> tuple[NodeSpec, ...]:
    return tuple(value)


def _edge_tuple(value: Iterable[EdgeSpec]) -> tuple[EdgeSpec, ...]:
    return tuple(value)


def _optional_float(value: float | None) -> float | None:
    return None if value is None else float(value)


def _names(value: Iterable[str]) -> tuple[str, ...]:
    return tuple(value)


@attrs.frozen
class NodeConfig:
    """How a node executes: retries, backoff, timeout, fallback and join mode.

    ``retries`` counts attempts after the first (``None``: no limit); ``timeout`` is
    in seconds; ``fallback`` names a registry entry called with the node's arguments
    once the attempts are used up; ``join`` says when a node with several
    predecessors runs (``None`` means the default: ``"all"``).

    ``retry_on`` and ``never_retry`` hold qualified exception type names
    (``"builtins.TimeoutError"``): with ``retry_on`` only errors of those types (or
    subclasses) are retried; errors of a ``never_retry`` type never are.
    ``retry_timeout`` (seconds) is the time from the first attempt's start after
    which no further attempt is scheduled. ``queue`` names the transport queue the
    node's executions are sent to on workers (``None``: the run's own queue).
    """

    retries: int | None = 0
    backoff: Backoff | None = None
    timeout: float | None = attrs.field(default=None, converter=_optional_float)
    fallback: str | None = None
    join: JoinMode | None = None
    retry_on: tuple[str, ...] = attrs.field(default=(), converter=_names)
    never_retry: tuple[str, ...] = attrs.field(default=(), converter=_names)
    retry_timeout: float | None = attrs.field(default=None, converter=_optional_float)
    queue: str | None = None


@attrs.frozen
class NodeSpec:
    """One node of a blueprint.

    ``uses`` names the implementation in the registry (``call`` nodes) or the
    built-in kind; ``params`` holds kind-specific settings; ``inputs`` maps
    parameter names to sources (a node id, ``$input.<name>`` or ``$state.<key>``).
    """

    id: str
    kind: NodeKind = "call"
    uses: str | None = None
    params: dict[str, Any] = attrs.field(factory=dict, converter=_frozen_dict, repr=_params_repr)
    inputs: dict[str, str] = attrs.field(factory=dict, converter=_frozen_dict)
    config: NodeConfig = attrs.field(factory=NodeConfig)


@attrs.frozen
class EdgeSpec:
    """A directed edge; taken when ``action`` matches the source's action and ``when`` holds."""

    source: str
    target: str
    action: str | None = None
    when: str | None = None


_converter = cattrs.Converter(omit_if_default=True)


@attrs.frozen(hash=False)
class Blueprint:
    """An immutable workflow graph; ``digest`` is the sha256 of its canonical JSON.

    >>> bp = Blueprint(id="demo", nodes=(NodeSpec("a", uses="a"),))
    >>> Blueprint.from_json(bp.to_json()) == bp
    True
    """

    id: str
    version: int = 1
    nodes: tuple[NodeSpec, ...] = attrs.field(default=(), converter=_node_tuple)
    edges: tuple[EdgeSpec, ...] = attrs.field(default=(), converter=_edge_tuple)
    metadata: dict[str, Any] = attrs.field(factory=dict, converter=_frozen_dict)
    digest: str = attrs.field(init=False, eq=False, repr=False)

    def __attrs_post_init__(self) -> None:
        canonical = _canonical(_unstructure(self))
        object.__setattr__(self, "digest", hashlib.sha256(canonical.encode()).hexdigest())

    __hash__ = None  # type: ignore[assignment]  # dict fields: compare, don't hash

    def node(self, node_id: str) -> NodeSpec:
        """The node with this id (``KeyError`` if there is none)."""
        for spec in self.nodes:
            if spec.id == node_id:
                return spec
        raise KeyError(node_id)

    def to_dict(self) -> dict[str, Any]:
        """Plain-data form, including ``digest``."""
        data = _unstructure(self)
        data["digest"] = self.digest
        return data

    def to_json(self, *, indent: int | None = None) -> str:
        """Canonical JSON (sorted keys); ``Blueprint.from_json`` reads it back exactly."""
        if indent is None:
            return _canonical(self.to_dict())
        return json.dumps(self.to_dict(), sort_keys=True, indent=indent, ensure_ascii=False)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Blueprint:
        """Build from plain data; raises ``BlueprintError`` on malformed input."""
        from ._validate import structure_blueprint

        return structure_blueprint(data)

    @classmethod
    def from_json(cls, text: str | bytes) -> Blueprint:
        """Parse JSON written by ``to_json`` or by hand; raises ``BlueprintError``."""
        from ._validate import parse_blueprint_json

        return parse_blueprint_json(text)

    def mermaid(self) -> str:
        """Mermaid flowchart text of this graph."""
        from ._mermaid import to_mermaid

        return to_mermaid(self)

    def _repr_mimebundle_(self, include: Any = None, exclude: Any = None) -> dict[str, str]:
        from ._mermaid import mimebundle

        return mimebundle(self)


def _unstructure(bp: Blueprint) -> dict[str, Any]:
    data: dict[str, Any] = {
        "id": bp.id,
        "version": bp.version,
        "nodes": [_converter.unstructure(n) for n in bp.nodes],
        "edges": [_converter.unstructure(e) for e in bp.edges],
    }
    if bp.metadata:
        data["metadata"] = bp.metadata
    return data


def _canonical(data: Any) -> str:
    return json.dumps(data, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


converter = _converter

"""``Flow``: build blueprint graphs node by node, edge by edge."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .._durations import Backoff, Duration, to_seconds
from ..blueprint._model import Blueprint, EdgeSpec, JoinMode, NodeConfig, NodeKind, NodeSpec
from ..blueprint._validate import validate
from ..engine._invoke import ClassFallback, has_fallback
from ._node import module_name

if TYPE_CHECKING:
    from collections.abc import Callable, Mapping

_BUILTIN_KINDS: dict[str, NodeKind] = {
    "webhook": "webhook",
    "subflow": "subflow",
    "sleep": "sleep",
    "wait": "wait",
}


def implementation_name(fn: Any) -> str:
    """A readable registry name for a callable: ``module.qualname``."""
    target = getattr(fn, "__flowkit_impl__", fn)
    if not isinstance(target, type) and not callable(target):
        raise TypeError(f"{fn!r} is not callable")
    name = getattr(target, "__qualname__", None) or type(target).__qualname__
    return f"{module_name(target)}.{name}"


class Flow:
    """A blueprint builder for arbitrary graphs (diamonds, routed joins, loops, batches).

    >>> async def extract() -> int: return 1
    >>> async def load(x: int) -> int: return x
    >>> bp = Flow("etl").node("extract", extract).node("load", load).edge("extract", "load").build()
    """

    def __init__(
        self, id: str, *, version: int = 1, metadata: Mapping[str, Any] | None = None
    ) -> None:
        self.id = id
        self.version = version
        self.metadata = dict(metadata or {})
        self.registry: dict[str, Any] = {}
        self._nodes: list[NodeSpec] = []
        self._edges: list[EdgeSpec] = []
        self._built: Blueprint | None = None

    # -- nodes ----------------------------------------------------------------
    def node(
        self,
        id: str,
        fn: Callable[..., Any] | type | None = None,
        *,
        uses: str | None = None,
        params: Mapping[str, Any] | None = None,
        inputs: Mapping[str, str] | None = None,
        retries: int | None = None,
        backoff: Backoff | None = None,
        timeout: Duration | None = None,
        fallback: Callable[..., Any] | None = None,
        join: JoinMode | None = None,
    ) -> Flow:
        """Add a node running ``fn`` (a function, a ``@node``, or a ``flowkit.Node`` class).

        ``uses="webhook" | "subflow" | "sleep" | "wait"`` adds a built-in node
        kind configured by ``params``; any other ``uses`` names a registry entry.
        """
        options = dict(getattr(fn, "__flowkit_options__", {}) or {})
        kind: NodeKind = "call"
        if fn is not None:
            uses = self._register(fn, uses)
        elif uses in _BUILTIN_KINDS:
            kind, uses = _BUILTIN_KINDS[uses], None
        elif uses is None:
            raise TypeError(f"node {id!r} needs an implementation: pass fn or uses=")
        config = NodeConfig(
            retries=retries if retries is not None else int(options.get("retries", 0)),
            backoff=backoff if backoff is not None else options.get("backoff"),
            timeout=_seconds(timeout if timeout is not None else options.get("timeout")),
            fallback=self._fallback(uses, fallback or options.get("fallback"), fn),
            join=join,
        )
        return self._add(NodeSpec(id, kind, uses, dict(params or {}), dict(inputs or {}), config))

    def batch(
        self,
        id: str,
        fn: Callable[..., Any] | type,
        *,
        items: str | None = None,
        concurrency: int | None = None,
        retries: int | None = None,
        backoff: Backoff | None = None,
        timeout: Duration | None = None,
    ) -> Flow:
        """Run ``fn`` on each item (``items``: a source such as ``"$input.images"``);
        the output is the list of results in input order."""
        params: dict[str, Any] = {"map": True}
        if items is not None:
            params["items"] = items
        if concurrency is not None:
            params["concurrency"] = int(concurrency)
        return self.node(id, fn, params=params, retries=retries, backoff=backoff, timeout=timeout)

    def sleep(self, id: str, *, duration: Duration) -> Flow:
        """A durable timer: the run pauses for ``duration`` without holding a task."""
        return self._add(NodeSpec(id, "sleep", params={"duration": to_seconds(duration)}))

    def wait(self, id: str, *, name: str | None = None, timeout: Duration | None = None) -> Flow:
        """A durable wait resumed by ``signal(run_id, name or id, data)``."""
        params: dict[str, Any] = {}
        if name is not None:
            params["name"] = name
        if timeout is not None:
            params["timeout"] = to_seconds(timeout)
        return self._add(NodeSpec(id, "wait", params=params))

    def loop(
        self,
        id: str,
        *,
        start: str,
        end: str,
        condition: str,
        max_iterations: int = 10_000,
    ) -> Flow:
        """Repeat ``start`` .. ``end`` while ``condition`` (over ``result`` and ``state``) holds.

        Edges added from the loop node are taken when the loop exits.
        """
        params = {"start": start, "condition": condition, "max_iterations": int(max_iterations)}
        self._add(NodeSpec(id, "loop", params=params))
        return self.edge(end, id).edge(id, start)

    def edge(
        self, source: str, target: str, *, action: str | None = None, when: str | None = None
    ) -> Flow:
        """Connect two nodes; taken when ``action`` matches the source's and ``when`` holds."""
        self._edges.append(EdgeSpec(source, target, action, when))
        self._built = None
        return self

    # -- output ---------------------------------------------------------------
    def build(self) -> Blueprint:
        """The validated blueprint (``BlueprintError`` lists every problem)."""
        if self._built is None:
            bp = Blueprint(
                id=self.id,
                version=self.version,
                nodes=tuple(self._nodes),
                edges=tuple(self._edges),
                metadata=self.metadata,
            )
            self._built = validate(bp, self.registry)
        return self._built

    @property
    def blueprint(self) -> Blueprint:
        return self.build()

    def mermaid(self) -> str:
        return self.build().mermaid()

    def _repr_mimebundle_(self, include: Any = None, exclude: Any = None) -> dict[str, str]:
        return self.build()._repr_mimebundle_(include, exclude)

    # -- helpers --------------------------------------------------------------
    def _add(self, spec: NodeSpec) -> Flow:
        self._nodes.append(spec)  # duplicates are reported by build()
        self._built = None
        return self

    def _register(self, fn: Any, uses: str | None) -> str:
        name = uses or getattr(fn, "registry_name", None) or implementation_name(fn)
        existing = self.registry.get(name)
        if existing is not None and existing is not fn:
            suffix = 2
            while f"{name}#{suffix}" in self.registry:
                suffix += 1
            name = f"{name}#{suffix}"
        self.registry[name] = fn
        return name

    def _fallback(self, uses: str | None, fallback: Any, fn: Any) -> str | None:
        if uses is None:
            return None
        if fallback is not None:
            return self._register(fallback, None)
        impl = getattr(fn, "__flowkit_impl__", fn)
        if impl is not None and has_fallback(impl):
            return self._register(ClassFallback(impl), f"{uses}.fallback")
        return None


def _seconds(value: Duration | None) -> float | None:
    return None if value is None else to_seconds(value)

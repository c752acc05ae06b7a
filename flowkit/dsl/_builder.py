"""``Flow``: build blueprint graphs node by node, edge by edge."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from .._naming import implementation_name as implementation_name
from ..blueprint._model import (
    JOIN_MODES,
    Blueprint,
    EdgeSpec,
    JoinMode,
    NodeConfig,
    NodeKind,
    NodeSpec,
)
from ..blueprint._validate import validate
from ..shell._invoke import ClassFallback, has_fallback
from ..shell._limits import Limit
from ._node import Arguments, config_fields

if TYPE_CHECKING:
    from collections.abc import Callable

    from .._durations import Backoff, Duration

_BUILTIN_KINDS: dict[str, NodeKind] = {
    "webhook": "webhook",
    "subflow": "subflow",
    "sleep": "sleep",
    "wait": "wait",
}


class Flow:
    """A blueprint builder for arbitrary graphs (diamonds, routed joins, loops, batches).

    >>> async def extract() -> int: return 1
    >>> async def load(x: int) -> int: return x
    >>> bp = Flow("etl").node("extract", extract).node("load", load).edge("extract", "load").build()

    Each method checks its arguments at once: a bad one is a
    :class:`~flowkit.ConfigurationError` naming the method, the argument and what to pass.
    """

    def __init__(
        self,
        id: str,
        *,
        version: int = 1,
        metadata: Mapping[str, Any] | None = None,
        concurrency: Limit | None = None,
    ) -> None:
        """``concurrency`` (a :class:`~flowkit.Limit`) caps how many runs of the flow run
        at once per value of the run input ``key`` (see ``@flow(concurrency=...)``)."""
        Arguments("Flow()").text("id", id, example="Flow('checkout')")
        check = Arguments(f"Flow({id!r})")
        check.count("version", version, minimum=1, example="version=2")
        check.optional_mapping("metadata", metadata, example="metadata={'team': 'payments'}")
        self.id = id
        self.version = version
        self.metadata = dict(metadata or {})
        if concurrency is not None:
            if not isinstance(concurrency, Limit):
                check.refuse(
                    "concurrency", concurrency, "a flowkit.Limit, e.g. Limit(max=1, key='customer')"
                )
            self.metadata["concurrency"] = {"max": concurrency.max, "key": concurrency.key}
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
        check = self._check("node", id)
        if fn is not None:
            check.implementation("fn", fn)
        check.optional_text("uses", uses, example="uses='webhook'")
        check.optional_mapping("params", params, example="params={'path': '/hooks/pay'}")
        _check_inputs(check, inputs)
        if retries is not None:
            check.count("retries", retries, minimum=0, example="retries=3")
        check.optional_backoff("backoff", backoff)
        check.optional_callable("fallback", fallback)
        check.choice("join", join, JOIN_MODES)
        options = dict(getattr(fn, "__flowkit_options__", {}) or {})
        kind: NodeKind = "call"
        if fn is not None:
            uses = self._register(fn, uses)
        elif uses in _BUILTIN_KINDS:
            kind, uses = _BUILTIN_KINDS[uses], None
        elif uses is None:
            raise TypeError(f"node {id!r} needs an implementation: pass fn or uses=")
        fields = config_fields(options)
        config = NodeConfig(
            **dict(
                fields,
                retries=retries if retries is not None else fields["retries"],
                backoff=backoff if backoff is not None else fields["backoff"],
                timeout=check.optional_duration("timeout", timeout)
                if timeout is not None
                else fields["timeout"],
            ),
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
        check = self._check("batch", id)
        check.implementation("fn", fn)
        params: dict[str, Any] = {"map": True}
        if items is not None:
            params["items"] = check.text("items", items, example="items='$input.images'")
        if concurrency is not None:
            params["concurrency"] = check.count(
                "concurrency", concurrency, minimum=1, example="concurrency=8"
            )
        return self.node(id, fn, params=params, retries=retries, backoff=backoff, timeout=timeout)

    def sleep(self, id: str, *, duration: Duration) -> Flow:
        """A durable timer: the run pauses for ``duration`` without holding a task."""
        seconds = self._check("sleep", id).duration("duration", duration, zero=True)
        return self._add(NodeSpec(id, "sleep", params={"duration": seconds}))

    def wait(self, id: str, *, name: str | None = None, timeout: Duration | None = None) -> Flow:
        """A durable wait resumed by ``signal(run_id, name or id, data)``."""
        check = self._check("wait", id)
        params: dict[str, Any] = {}
        if name is not None:
            params["name"] = check.text("name", name, example="name='approval'")
        if timeout is not None:
            params["timeout"] = check.duration("timeout", timeout)
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
        check = self._check("loop", id)
        check.text("start", start, example="start='fetch'")
        check.text("end", end, example="end='check'")
        check.text("condition", condition, example="condition=\"not result['ready']\"")
        check.count("max_iterations", max_iterations, minimum=1, example="max_iterations=50")
        params = {"start": start, "condition": condition, "max_iterations": max_iterations}
        self._add(NodeSpec(id, "loop", params=params))
        return self.edge(end, id).edge(id, start)

    def edge(
        self, source: str, target: str, *, action: str | None = None, when: str | None = None
    ) -> Flow:
        """Connect two nodes; taken when ``action`` matches the source's and ``when`` holds."""
        check = Arguments(f"Flow({self.id!r}).edge()")
        check.text("source", source, example="'extract'")
        check.text("target", target, example="'load'")
        check.optional_text("action", action, example="action='big'")
        check.optional_text("when", when, example="when='result > 10'")
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
    def _check(self, method: str, node_id: object) -> Arguments:
        """The checker of ``method``'s other arguments, once ``node_id`` is a good id."""
        Arguments(f"Flow({self.id!r}).{method}()").text("id", node_id, example="'extract'")
        return Arguments(f"Flow({self.id!r}).{method}({node_id!r})")

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


def _check_inputs(check: Arguments, inputs: object) -> None:
    """``inputs``: parameter name -> source (a node id, ``$input.<name>``, ``$state.<key>``)."""
    example = "inputs={'a': 'extract', 'b': '$input.b'}"
    check.optional_mapping("inputs", inputs, example=example)
    for param, source in inputs.items() if isinstance(inputs, Mapping) else ():
        check.text("each key of inputs", param, example=example)
        check.text(f"inputs[{param!r}]", source, example="'extract' or '$input.b'")

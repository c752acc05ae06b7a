"""Awaited calls: nodes, subflows and the ``flow.*`` primitives."""

from __future__ import annotations

import ast
import inspect
import typing
from typing import TYPE_CHECKING, Any

import attrs

from ..blueprint._model import NodeConfig
from ..shell._invoke import ClassFallback, has_fallback
from ._compile_exprs import PATCH_ERRORS
from ._compile_options import CallOptions
from ._compile_resolve import LOCAL, UNRESOLVED, callee_kind, dotted
from ._compile_waits import Waits
from ._node import config_fields

if TYPE_CHECKING:
    from ._compile_base import Target
    from ._compile_graph import Port
    from ._compile_options import Options
    from ._node import NodeDef

_MEMBER_KINDS = frozenset(
    {"node", "flow", "primitive:sleep", "primitive:wait", "primitive:webhook"}
)
Member = tuple[ast.Call, Any, str, dict[str, Any], dict[str, Any]]
"""A flow.gather/first member: its call, callee, kind, node params and config options."""
_AWAITABLE_HINTS = {
    "asyncio.sleep": "use `await flow.sleep(...)`: a durable timer",
    "anyio.sleep": "use `await flow.sleep(...)`: a durable timer",
    "trio.sleep": "use `await flow.sleep(...)`: a durable timer",
    "asyncio.gather": "use `await flow.gather(...)`",
    "asyncio.wait_for": "give the node a timeout: @node(timeout=...)",
}


class Calls(CallOptions, Waits):
    """``await x(...)`` where ``x`` is a node, a flow or a primitive."""

    def await_call(self, node: ast.Await, target: Target | None, ports: list[Port]) -> list[Port]:
        call = node.value
        if not isinstance(call, ast.Call):
            raise self.error(
                node,
                f"cannot await {ast.unparse(call)!r}: only calls can be awaited in a flow",
                "await a call of a @node, a @flow or a flow.* primitive",
            )
        options = self.options_of(call)
        if options is not None:
            return self.node_call(call, options.node, target, ports, options)
        obj = self.resolver.resolve(call.func)
        kind = callee_kind(obj)
        if kind == "node":
            return self.node_call(call, obj, target, ports)
        if kind == "flow":
            return self.subflow_call(call, obj, target, ports)
        if kind in PATCH_ERRORS:
            raise self.error(call, *PATCH_ERRORS[kind])
        if kind is not None:
            return self.primitive(kind.removeprefix("primitive:"), call, target, ports)
        return self.not_awaitable(call, obj, target, ports)

    def not_awaitable(
        self, call: ast.Call, obj: Any, target: Target | None, ports: list[Port]
    ) -> list[Port]:
        name = dotted(call.func) or ast.unparse(call.func)
        if obj is UNRESOLVED:
            self.unresolved.append((call, name))
            for arg in call.args:
                _, ports = self.expr(arg, ports)
            return [(self.noop(self.graph.new_id(name), ports), None)]
        if obj is LOCAL:
            raise self.error(
                call,
                f"cannot await {name!r}: it is a flow variable, not a node",
                "call the @node by name; nodes are resolved when the flow is compiled",
            )
        hint = _AWAITABLE_HINTS.get(name)
        if hint is None and inspect.iscoroutinefunction(obj):
            hint = f"decorate {name} with @node so that it runs as a node"
        raise self.error(
            call,
            f"cannot await {name!r}: it is not a @node, a @flow or a flow.* primitive",
            hint or "only @node functions, @flow functions and flow.* primitives can be awaited",
        )

    # -- nodes ----------------------------------------------------------------
    def node_call(
        self,
        call: ast.Call,
        nodedef: NodeDef[Any, Any],
        target: Target | None,
        ports: list[Port],
        options: Options | None = None,
    ) -> list[Port]:
        params, ports = self.arguments(call, ports)
        static: dict[str, Any] = {}
        if options is not None:
            static, ports = self.compile_options(options, params, ports)
        return [(self.node_member(call, nodedef, params, target, ports, static), None)]

    def node_member(
        self,
        call: ast.AST,
        nodedef: NodeDef[Any, Any],
        params: dict[str, Any],
        target: Target | None,
        ports: list[Port],
        static: dict[str, Any] | None = None,
    ) -> str:
        if target is not None:
            params["assign"] = target
            self.note_type(target, return_hint(nodedef.fn))
        uses, config = self.register(nodedef)
        if static:
            config = attrs.evolve(config, **static)
        node_id = self.graph.new_id(str(nodedef.name))
        return self.add(node_id, "call", params, ports, uses=uses, config=config)

    def arguments(self, call: ast.Call, ports: list[Port]) -> tuple[dict[str, Any], list[Port]]:
        """``{"args": [...], "kwargs": {...}}`` of a node call, awaits hoisted."""
        args: list[str] = []
        for arg in call.args:
            if isinstance(arg, ast.Starred):
                raise self.error(
                    arg, "`*args` in a node call is not supported", "pass each argument explicitly"
                )
            source, ports = self.expr(arg, ports)
            args.append(source)
        kwargs: dict[str, str] = {}
        for keyword in call.keywords:
            if keyword.arg is None:
                raise self.error(
                    keyword.value,
                    "`**kwargs` in a node call is not supported",
                    "pass each keyword argument explicitly",
                )
            kwargs[keyword.arg], ports = self.expr(keyword.value, ports)
        params: dict[str, Any] = {"args": args}
        if kwargs:
            params["kwargs"] = kwargs
        return params, ports

    def register(self, nodedef: NodeDef[Any, Any]) -> tuple[str, NodeConfig]:
        """Put a node (and its fallback) in the registry; returns its name and config."""
        name = nodedef.registry_name
        suffix = 1
        while self.registry.get(name, nodedef) is not nodedef:
            suffix += 1
            name = f"{nodedef.registry_name}#{suffix}"
        self.registry[name] = nodedef
        options = nodedef.settings
        fallback: str | None = None
        impl = getattr(nodedef, "__flowkit_impl__", nodedef)
        if options.get("fallback") is not None:
            fallback = f"{name}.fallback"
            self.registry[fallback] = options["fallback"]
        elif has_fallback(impl):
            fallback = f"{name}.fallback"
            self.registry[fallback] = ClassFallback(impl)
        return name, NodeConfig(**config_fields(options), fallback=fallback)

    # -- subflows -------------------------------------------------------------
    def subflow_call(
        self, call: ast.Call, child: Any, target: Target | None, ports: list[Port]
    ) -> list[Port]:
        params, ports = self.subflow_params(call, child, ports)
        return [(self.subflow_member(child, params, target, ports), None)]

    def start_child(self, call: ast.Call, target: Target | None, ports: list[Port]) -> list[Port]:
        """``await other_flow.start(run_id=..., detach=..., **inputs)``: a child run that
        the flow does not wait for; the node's value is the child's run id."""
        assert isinstance(call.func, ast.Attribute)
        child = self.resolver.resolve(call.func.value)
        own = {k.arg: k.value for k in call.keywords if k.arg in ("run_id", "detach")}
        if "run_id" not in own:
            raise self.error(
                call,
                f"{child.id}.start() needs run_id=: the id of the child run it starts",
                f"write `child_id = await {child.id}.start(run_id=..., <inputs>)`",
            )
        rest = ast.Call(call.func, call.args, [k for k in call.keywords if k.arg not in own])
        ast.copy_location(rest, call)
        params, ports = self.subflow_params(rest, child, ports)
        params["run_id"], ports = self.expr(own["run_id"], ports)
        params["detach"] = bool(self.literal(own.get("detach"), "detach=", False))
        if target is not None:
            params["assign"] = target
        if not any(c is child for c in self.children):
            self.children.append(child)
        node_id = self.add(self.graph.new_id(f"start:{child.id}"), "subflow", params, ports)
        return [(node_id, None)]

    def subflow_member(
        self, child: Any, params: dict[str, Any], target: Target | None, ports: list[Port]
    ) -> str:
        if target is not None:
            params["assign"] = target
            self.note_type(target, return_hint(child.fn))
        if not any(c is child for c in self.children):
            self.children.append(child)
        return self.add(self.graph.new_id(str(child.id)), "subflow", params, ports)

    def subflow_params(
        self, call: ast.Call, child: Any, ports: list[Port]
    ) -> tuple[dict[str, Any], list[Port]]:
        """Map the call's arguments onto the child flow's parameter names."""
        if any(isinstance(a, ast.Starred) for a in call.args) or any(
            k.arg is None for k in call.keywords
        ):
            raise self.error(
                call,
                "subflow arguments must be passed one by one (no `*args`/`**kwargs`)",
                "pass each argument explicitly",
            )
        signature = inspect.signature(child.fn)
        try:
            bound = signature.bind(*call.args, **{str(k.arg): k.value for k in call.keywords})
        except TypeError as exc:
            raise self.error(
                call,
                f"arguments do not match flow {child.id!r}{signature}: {exc}",
                "call the subflow with the arguments its @flow function takes",
            ) from None
        kwargs: dict[str, str] = {}
        for name, value in bound.arguments.items():
            kind = signature.parameters[name].kind
            if kind is inspect.Parameter.VAR_POSITIONAL:
                raise self.error(
                    call,
                    f"flow {child.id!r} takes *{name}, which a subflow call cannot fill",
                    "give the child flow named parameters (runs take keyword inputs)",
                )
            items = value.items() if kind is inspect.Parameter.VAR_KEYWORD else [(name, value)]
            for key, node in items:
                kwargs[key], ports = self.expr(node, ports)
        return {"blueprint_id": str(child.id), "kwargs": kwargs}, ports

    # -- primitives -----------------------------------------------------------
    def primitive(
        self, name: str, call: ast.Call, target: Target | None, ports: list[Port]
    ) -> list[Port]:
        if name in ("gather", "first"):
            return self.fan_out(name, call, target, ports)
        if name == "map":
            return self.map_call(call, target, ports)
        if name == "start_child":
            return self.start_child(call, target, ports)
        return self.durable(name, call, target, ports)[1]

    def fan_out(
        self, name: str, call: ast.Call, target: Target | None, ports: list[Port]
    ) -> list[Port]:
        """``flow.gather`` / ``flow.first``: members run in parallel, then a join."""
        if call.keywords or not call.args:
            raise self.error(
                call,
                f"flow.{name}() takes the calls to run, as positional arguments",
                f"write `await flow.{name}(a(...), b(...))`",
            )
        prepared: list[Member] = []
        for argument in call.args:
            member, ports = self.prepare_member(name, argument, ports)
            prepared.append(member)
        members = [self.fan_member(m, ports) for m in prepared]
        join_id = self.graph.new_id(f"join@L{self.lineno(call)}")
        params: dict[str, Any] = {"first": True} if name == "first" else {"collect": members}
        if target is not None:
            params["assign"] = target
        config = NodeConfig(join="any" if name == "first" else "all")
        self.add(join_id, "join", params, [(m, None) for m in members], config=config)
        return [(join_id, None)]

    def prepare_member(
        self, name: str, argument: ast.expr, ports: list[Port]
    ) -> tuple[Member, list[Port]]:
        """Compile a member's arguments (hoisting their awaits) before the fan-out."""
        options = self.options_of(argument) if isinstance(argument, ast.Call) else None
        call, obj, kind = self.member(name, argument, options)
        params: dict[str, Any] = {}
        static: dict[str, Any] = {}
        if kind == "node":
            params, ports = self.arguments(call, ports)
            if options is not None:
                static, ports = self.compile_options(options, params, ports)
        elif kind == "flow":
            params, ports = self.subflow_params(call, obj, ports)
        return (call, obj, kind, params, static), ports

    def member(
        self, name: str, node: ast.expr, options: Options | None = None
    ) -> tuple[ast.Call, Any, str]:
        if options is not None and isinstance(node, ast.Call):
            return node, options.node, "node"
        if isinstance(node, ast.Await):
            raise self.error(
                node,
                f"flow.{name}() takes calls, not awaited results",
                f"drop the `await` inside flow.{name}(...)",
            )
        call = node if isinstance(node, ast.Call) else None
        obj = self.resolver.resolve(call.func) if call is not None else None
        kind = callee_kind(obj)
        if call is None or kind not in _MEMBER_KINDS:
            if call is not None and obj is UNRESOLVED:
                self.unresolved.append((call, dotted(call.func) or ""))
                return call, obj, "unresolved"
            raise self.error(
                node,
                f"flow.{name}() can only run calls of nodes, flows or flow.sleep/wait/webhook",
                "make the work a @node and pass `node(...)`",
            )
        return call, obj, str(kind)

    def fan_member(self, member: Member, ports: list[Port]) -> str:
        call, obj, kind, params, static = member
        if kind == "node":
            return self.node_member(call, obj, params, None, ports, static)
        if kind == "flow":
            return self.subflow_member(obj, params, None, ports)
        if kind == "unresolved":
            return self.noop(self.graph.new_id(dotted(call.func) or "call"), ports)
        node_id, _ = self.durable(kind.removeprefix("primitive:"), call, None, ports)
        return node_id

    def map_call(self, call: ast.Call, target: Target | None, ports: list[Port]) -> list[Port]:
        bound = self.bind_primitive("map", call)
        nodedef = self.resolver.resolve(bound["node"])
        if callee_kind(nodedef) != "node":
            if nodedef is UNRESOLVED:
                self.unresolved.append((bound["node"], dotted(bound["node"]) or ""))
                return [(self.noop(self.graph.new_id("map"), ports), None)]
            raise self.error(
                bound["node"],
                "flow.map() needs a @node as its first argument",
                "pass the node itself: `await flow.map(resize, images)`",
            )
        items, ports = self.expr(bound["items"], ports)
        concurrency = self.literal(bound.get("concurrency"), "flow.map's concurrency", 10)
        if not isinstance(concurrency, int) or isinstance(concurrency, bool) or concurrency < 1:
            raise self.error(
                call,
                f"flow.map's concurrency must be a positive int, got {concurrency!r}",
                "write e.g. `concurrency=10`",
            )
        params = {"map": True, "items_expr": items, "concurrency": concurrency}
        return [(self.node_member(call, nodedef, params, target, ports), None)]


def return_hint(fn: Any) -> Any:
    """The return annotation of ``fn`` (None when missing or unresolvable)."""
    try:
        return typing.get_type_hints(fn).get("return")
    except (NameError, TypeError, AttributeError):
        return None

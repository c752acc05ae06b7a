"""``flow.sleep``, ``flow.wait`` and ``flow.webhook``: durable timers and signals."""

from __future__ import annotations

import ast
import os
from typing import TYPE_CHECKING, Any

from .._durations import to_seconds
from .._naming import module_name
from ._compile_exprs import Expressions
from ._compile_resolve import dotted

if TYPE_CHECKING:
    from ._compile_base import Target
    from ._compile_graph import Port

_GETENV = frozenset({"os.getenv", "getenv", "os.environ.get", "environ.get"})


class Waits(Expressions):
    """The durable primitives, and reading their literal arguments."""

    def durable(
        self, name: str, call: ast.Call, target: Target | None, ports: list[Port]
    ) -> tuple[str, list[Port]]:
        """Compile ``flow.sleep/wait/webhook(...)``; returns the node id and the new ports."""
        bound = self.bind_primitive(name, call)
        if name == "sleep":
            return self.sleep(bound, target, ports)
        if name == "wait":
            return self.wait(bound, call, target, ports)
        return self.webhook(bound, target, ports)

    def sleep(
        self, bound: dict[str, Any], target: Target | None, ports: list[Port]
    ) -> tuple[str, list[Port]]:
        label = self.text(bound.get("name"), "flow.sleep's name", required=False)
        params: dict[str, Any] = {}
        duration = bound["duration"]
        if _is_literal(duration):
            params["duration"] = self.duration(duration, "flow.sleep's duration")
        else:
            params["duration_expr"], ports = self.expr(duration, ports)
        if target is not None:
            params["assign"] = target
        node_id = self.add(self.graph.new_id(label or "sleep"), "sleep", params, ports)
        return node_id, [(node_id, None)]

    def wait(
        self, bound: dict[str, Any], call: ast.Call, target: Target | None, ports: list[Port]
    ) -> tuple[str, list[Port]]:
        signal = self.text(bound["name"], "flow.wait's name", required=True)
        params: dict[str, Any] = {"name": signal}
        if bound.get("timeout") is not None:
            params["timeout"] = self.duration(bound["timeout"], "flow.wait's timeout")
        type_node = bound.get("type")
        structured = target
        if type_node is not None:
            params["type"] = self.type_name(type_node)
            if target is not None and not isinstance(target, str):
                target = self.temp("signal")
        if target is not None:
            params["assign"] = target
        node_id = self.add(self.graph.new_id(str(signal)), "wait", params, ports)
        ports = [(node_id, None)]
        if type_node is not None and structured is not None:
            type_source = self.pure(type_node)
            value = f"__flowkit_structure__({target}, {type_source})"
            ports = self.let(structured, value, ports, call)
        return node_id, ports

    def webhook(
        self, bound: dict[str, Any], target: Target | None, ports: list[Port]
    ) -> tuple[str, list[Port]]:
        params: dict[str, Any] = {
            "path": self.text(bound["path"], "flow.webhook's path", required=True),
            "secret": self.secret(bound["secret"]),
        }
        label = self.text(bound.get("name"), "flow.webhook's name", required=False)
        if label:
            params["name"] = label
        if bound.get("timeout") is not None:
            params["timeout"] = self.duration(bound["timeout"], "flow.webhook's timeout")
        if target is not None:
            params["assign"] = target
        node_id = self.add(self.graph.new_id(label or "webhook"), "webhook", params, ports)
        return node_id, [(node_id, None)]

    # -- literal arguments --------------------------------------------------------
    def bind_primitive(self, name: str, call: ast.Call) -> dict[str, Any]:
        """The call's arguments by parameter name (``ast`` nodes)."""
        from ._flow import primitive_signature

        signature = primitive_signature(name)
        if any(isinstance(a, ast.Starred) for a in call.args) or any(
            k.arg is None for k in call.keywords
        ):
            raise self.error(
                call, f"flow.{name}() arguments must be written out", f"flow.{name}{signature}"
            )
        try:
            bound = signature.bind(*call.args, **{str(k.arg): k.value for k in call.keywords})
        except TypeError as exc:
            raise self.error(call, f"flow.{name}(): {exc}", f"flow.{name}{signature}") from None
        return dict(bound.arguments)

    def literal(self, node: ast.expr | None, what: str, default: Any) -> Any:
        if node is None:
            return default
        try:
            return ast.literal_eval(node)
        except ValueError:
            raise self.error(
                node,
                f"{what} must be a literal value",
                "flowkit needs it when the flow is compiled: write the value itself",
            ) from None

    def text(self, node: ast.expr | None, what: str, *, required: bool) -> str | None:
        value = self.literal(node, what, None)
        if value is None and not required:
            return None
        if not isinstance(value, str) or not value:
            where = node if node is not None else ast.Constant(None)
            raise self.error(
                where,
                f"{what} must be a non-empty string literal",
                "signals and routes are matched by name before the flow runs",
            )
        return value

    def duration(self, node: ast.expr, what: str) -> float:
        value = self.literal(node, what, None)
        try:
            return to_seconds(value)
        except ValueError as exc:
            raise self.error(node, f"{what}: {exc}", 'write e.g. "30s", "10m" or 90') from None

    def type_name(self, node: ast.expr) -> str:
        obj = self.resolver.resolve(node)
        if isinstance(obj, type):
            return f"{module_name(obj)}.{obj.__qualname__}"
        text = dotted(node)
        if text is None:
            raise self.error(node, "flow.wait's type must be a class", "pass the class: type=Order")
        return text

    def secret(self, node: ast.expr) -> str:
        """A webhook secret: a literal, a string constant, or ``os.environ[...]`` (``$env.X``)."""
        if isinstance(node, ast.Constant) and isinstance(node.value, str):
            return node.value
        env = self._environment_name(node)
        if env is not None:
            return f"$env.{env}"
        value = self.resolver.resolve(node)
        if isinstance(value, str):
            return value
        raise self.error(
            node,
            "flow.webhook's secret must be a string, a string constant or os.environ[...]",
            'write secret="...", secret=SECRET or secret=os.environ["WEBHOOK_SECRET"]',
        )

    def _environment_name(self, node: ast.expr) -> str | None:
        if isinstance(node, ast.Subscript) and self.resolver.resolve(node.value) is os.environ:
            key = node.slice
        elif isinstance(node, ast.Call) and dotted(node.func) in _GETENV and node.args:
            key = node.args[0]
        else:
            return None
        if isinstance(key, ast.Constant) and isinstance(key.value, str):
            return key.value
        return None


def _is_literal(node: ast.expr) -> bool:
    try:
        ast.literal_eval(node)
    except ValueError:
        return False
    return True

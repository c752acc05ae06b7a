"""``flow.continue_as_new(**inputs)``: end the run and start a fresh run of the flow.

A statement (``flow.continue_as_new(n=n)`` or ``return flow.continue_as_new(n=n)``),
never awaited: it compiles to a ``return`` node whose ``params["continue_as_new"]``
is the source of a dict expression, the new run's inputs (see
:mod:`flowkit.core._continue`). Inside ``try``/``finally`` the inputs are computed
first, then the run leaves through the ``finally`` blocks, as a ``return`` does.
"""

from __future__ import annotations

import ast
from typing import TYPE_CHECKING

from ._compile_base import TryFrame
from ._compile_patches import Patches
from ._compile_resolve import callee_kind

if TYPE_CHECKING:
    from ._compile_graph import Port

_KIND = "primitive:continue_as_new"


class Continues(Patches):
    """``flow.continue_as_new(...)`` statements."""

    def stmt_Expr(self, node: ast.Expr, ports: list[Port]) -> list[Port]:
        if not self.is_continue(node.value):
            return super().stmt_Expr(node, ports)
        assert isinstance(node.value, ast.Call)
        return self.continue_as_new(node, node.value, ports)

    def stmt_Return(self, node: ast.Return, ports: list[Port]) -> list[Port]:
        if node.value is None or not self.is_continue(node.value):
            return super().stmt_Return(node, ports)
        assert isinstance(node.value, ast.Call)
        return self.continue_as_new(node, node.value, ports)

    def is_continue(self, value: ast.expr) -> bool:
        if not isinstance(value, ast.Call):
            return False
        return callee_kind(self.resolver.resolve(value.func)) == _KIND

    def continue_as_new(self, node: ast.stmt, call: ast.Call, ports: list[Port]) -> list[Port]:
        inputs = self.bind_primitive("continue_as_new", call).get("inputs", {})
        self.check_inputs(call, list(inputs))
        keys: list[ast.expr | None] = [ast.Constant(name) for name in inputs]
        source, ports = self.expr(ast.Dict(keys=keys, values=list(inputs.values())), ports)
        if any(isinstance(f, TryFrame) and f.final for f in self.frames):
            ports = self.let("__continue__", source, ports, node)
            source = "__continue__"
            ports = self.leave(ports, 0)
        params = {"continue_as_new": source}
        node_id = self.graph.new_id(f"continue_as_new@L{self.lineno(node)}")
        self.add(node_id, "return", params, ports)
        return []

    def check_inputs(self, call: ast.Call, names: list[str]) -> None:
        unknown = [n for n in names if n not in self.parameters]
        if unknown and not self.takes_any:
            raise self.error(
                call,
                f"flow.continue_as_new() got {', '.join(map(repr, unknown))}, which the flow "
                f"does not take (its parameters: {', '.join(self.parameters) or 'none'})",
                "pass the new run's inputs by the flow's parameter names, e.g. "
                "`flow.continue_as_new(count=count)`",
            )

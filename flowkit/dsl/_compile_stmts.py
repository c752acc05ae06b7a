"""Simple statements: assignments, expression statements, return, raise, assert, break."""

from __future__ import annotations

import ast
import copy
from typing import TYPE_CHECKING

from ._compile_base import LoopFrame, TryFrame
from ._compile_calls import Calls
from ._compile_exprs import root_name

if TYPE_CHECKING:
    from collections.abc import Sequence

    from ._compile_graph import Port

_MOVE_TO_NODE = "move this into a @node"
REJECTED: dict[type[ast.stmt], tuple[str, str]] = {
    ast.FunctionDef: ("nested function definitions are not allowed in a flow",
                      "define it at module level (as a @node if it does work)"),
    ast.AsyncFunctionDef: ("nested function definitions are not allowed in a flow",
                           "define it at module level (as a @node if it does work)"),
    ast.ClassDef: ("class definitions are not allowed in a flow",
                   "define the class at module level"),
    ast.Global: ("`global` is not allowed in a flow",
                 "flow variables live in the run's state: pass values in and return them"),
    ast.Nonlocal: ("`nonlocal` is not allowed in a flow",
                   "flow variables live in the run's state: pass values in and return them"),
    ast.With: ("`with` blocks are not allowed in a flow", _MOVE_TO_NODE),
    ast.AsyncWith: ("`async with` blocks are not allowed in a flow", _MOVE_TO_NODE),
    ast.AsyncFor: ("`async for` is not allowed in a flow",
                   "fetch the items with a @node and loop with `for`, or use flow.map"),
    ast.Import: ("imports are not allowed inside a flow", "import at module level"),
    ast.ImportFrom: ("imports are not allowed inside a flow", "import at module level"),
    ast.Delete: ("`del` is not supported in a flow", "assign None instead"),
    ast.TryStar: ("`except*` is not supported in a flow", "use plain `except` clauses"),
}  # fmt: skip


class Statements(Calls):
    """Statements that do not branch."""

    def block(self, stmts: Sequence[ast.stmt], ports: list[Port]) -> list[Port]:
        for stmt in stmts:
            ports = self.stmt(stmt, ports)
        return ports

    def stmt(self, stmt: ast.stmt, ports: list[Port]) -> list[Port]:
        handler = getattr(self, f"stmt_{type(stmt).__name__}", None)
        if handler is None:
            message, hint = REJECTED.get(
                type(stmt),
                (f"`{type(stmt).__name__}` statements are not supported in a flow", _MOVE_TO_NODE),
            )
            raise self.error(stmt, message, hint)
        result: list[Port] = handler(stmt, ports)
        return result

    # -- assignments ----------------------------------------------------------
    def stmt_Assign(self, node: ast.Assign, ports: list[Port]) -> list[Port]:
        if len(node.targets) == 1:
            return self.assign(node.targets[0], node.value, ports, node)
        temp = ast.copy_location(ast.Name(self.temp("value"), ast.Store()), node)
        ports = self.assign(temp, node.value, ports, node)
        for target in node.targets:
            loaded = ast.copy_location(ast.Name(temp.id, ast.Load()), node)
            ports = self.assign(target, loaded, ports, node)
        return ports

    def stmt_AnnAssign(self, node: ast.AnnAssign, ports: list[Port]) -> list[Port]:
        if node.value is None:
            return ports
        return self.assign(node.target, node.value, ports, node)

    def stmt_AugAssign(self, node: ast.AugAssign, ports: list[Port]) -> list[Port]:
        current = copy.deepcopy(node.target)
        current.ctx = ast.Load()
        value = ast.copy_location(ast.BinOp(current, node.op, node.value), node)
        return self.assign(node.target, value, ports, node)

    def assign(
        self, node: ast.expr, value: ast.expr, ports: list[Port], stmt: ast.stmt
    ) -> list[Port]:
        target = self.target(node)
        if target is not None and isinstance(value, ast.Await):
            return self.await_call(value, target, ports)
        source, ports = self.expr(value, ports)
        if target is not None:
            return self.let(target, source, ports, stmt)
        return self.store(node, source, ports)

    def stmt_Expr(self, node: ast.Expr, ports: list[Port]) -> list[Port]:
        value = node.value
        if isinstance(value, ast.Constant):
            return ports  # docstrings, `...`
        if isinstance(value, ast.Await):
            return self.await_call(value, None, ports)
        source, ports = self.expr(value, ports)
        root = _method_receiver(value)
        if root is not None and root in self.locals:
            # `items.append(x)`: re-bind `items` so that the change is recorded in the run's state
            return self.let(root, f"({source}, {root})[1]", ports, node)
        return self.let(None, source, ports, node)

    def stmt_Pass(self, node: ast.Pass, ports: list[Port]) -> list[Port]:
        return ports

    # -- leaving a block ------------------------------------------------------
    def stmt_Return(self, node: ast.Return, ports: list[Port]) -> list[Port]:
        params: dict[str, str] = {}
        if node.value is not None:
            params["expr"], ports = self.expr(node.value, ports)
        if any(isinstance(f, TryFrame) and f.final for f in self.frames):
            if params:
                ports = self.let("__return__", params["expr"], ports, node)
                params["expr"] = "__return__"
            ports = self.leave(ports, 0)
        self.add(self.graph.new_id(f"return@L{self.lineno(node)}"), "return", dict(params), ports)
        return []

    def stmt_Raise(self, node: ast.Raise, ports: list[Port]) -> list[Port]:
        if node.exc is None:
            return self.reraise_current(node, ports)
        source, ports = self.expr(node.exc, ports)
        params = {"expr": f"__flowkit_raise__({source})"}
        self.add(self.graph.new_id(f"raise@L{self.lineno(node)}"), "let", params, ports)
        return []

    def stmt_Assert(self, node: ast.Assert, ports: list[Port]) -> list[Port]:
        test, ports = self.expr(node.test, ports)
        message = self.pure(node.msg) if node.msg is not None else ""
        params = {"expr": f"({test}) or __flowkit_raise__(AssertionError({message}))"}
        node_id = self.add(self.graph.new_id(f"assert@L{self.lineno(node)}"), "let", params, ports)
        return [(node_id, None)]

    def stmt_Break(self, node: ast.Break, ports: list[Port]) -> list[Port]:
        index, loop = self.innermost_loop()
        loop.breaks.extend(self.leave(ports, index + 1))
        return []

    def stmt_Continue(self, node: ast.Continue, ports: list[Port]) -> list[Port]:
        index, loop = self.innermost_loop()
        self.graph.connect(self.leave(ports, index + 1), loop.loop_id)
        return []

    def innermost_loop(self) -> tuple[int, LoopFrame]:
        for index in range(len(self.frames) - 1, -1, -1):
            frame = self.frames[index]
            if isinstance(frame, LoopFrame):
                return index, frame
        raise AssertionError("break/continue outside a loop is a SyntaxError")  # pragma: no cover

    def leave(self, ports: list[Port], stop: int) -> list[Port]:
        """Run the ``finally`` bodies of the try frames above ``frames[stop]`` (innermost first)."""
        for index in range(len(self.frames) - 1, stop - 1, -1):
            frame = self.frames[index]
            if isinstance(frame, TryFrame) and frame.final:
                saved = self.frames
                self.frames = saved[:index]
                try:
                    ports = self.block(frame.final, ports)
                finally:
                    self.frames = saved
        return ports

    def reraise_current(self, node: ast.Raise, ports: list[Port]) -> list[Port]:
        """A bare ``raise``: hand the error being handled on, as if its node failed here."""
        handling = next(
            (f for f in reversed(self.frames) if isinstance(f, TryFrame) and f.handling), None
        )
        if handling is None:
            raise self.error(
                node,
                "a bare `raise` is only allowed inside an `except` block",
                "raise an exception explicitly: `raise ValueError(...)`",
            )
        if handling.saved is not None:
            ports = self.let("__error__", handling.saved, ports, node)
        self.reraise(ports, node)
        return []

    def reraise(self, ports: list[Port], node: ast.AST) -> None:
        """Send an error on: to the enclosing handler, or fail the run with it."""
        handler = self.on_error()
        if handler is not None:
            handler.used = True
            self.graph.connect(ports, handler.id)
            return
        node_id = self.graph.new_id(f"raise@L{self.lineno(node)}")
        self.add(node_id, "return", {"raise": True}, ports)


def _method_receiver(value: ast.expr) -> str | None:
    """``items`` for ``items.append(x)`` (a method call on a name's value)."""
    if isinstance(value, ast.Call) and isinstance(value.func, ast.Attribute):
        return root_name(value.func.value)
    return None

"""Expressions in a flow body: checks, hoisted awaits, assignment targets.

An expression compiles to its source text (``ast.unparse``), evaluated later
by the flow's evaluator. On the way it is checked (no lambda, no ``yield``, no
non-deterministic calls, no node called without ``await``) and every
``await`` inside it is hoisted into a node of its own that runs first, its
result held in a temporary variable.
"""

from __future__ import annotations

import ast
import copy
from typing import TYPE_CHECKING, Any

from ._compile_base import CompilerBase, Target
from ._compile_resolve import UNRESOLVED, callee_kind, dotted, nondeterministic

if TYPE_CHECKING:
    from ._compile_graph import Port

_AWAIT_HINT = "await in its own statement first (`value = await node(...)`), then use the variable"
PATCH_ERRORS = {
    "primitive:patched": (
        "flow.patched(...) must be the whole condition of an `if`",
        'write `if flow.patched("my-change"):` with the new code, the old code in `else`',
    ),
    "primitive:deprecate_patch": (
        "flow.deprecate_patch(...) must be a statement of its own",
        'write `flow.deprecate_patch("my-change")` on a line of its own',
    ),
    "primitive:continue_as_new": (
        "flow.continue_as_new(...) is a statement: it is not awaited and has no value",
        "write `flow.continue_as_new(n=n)` (or `return flow.continue_as_new(n=n)`) on a "
        "line of its own, without await",
    ),
}
_NODE_WITHOUT_AWAIT = (
    "write `await {name}(...)`; inside flow.gather/flow.first pass the call without await"
)


class Expressions(CompilerBase):
    """Compiling expressions and assignment targets."""

    def expr(self, node: ast.expr, ports: list[Port]) -> tuple[str, list[Port]]:
        """Source of ``node`` (awaits hoisted into nodes fed by ``ports``) and the new ports."""
        walker = _Walker(self, ports, hoist=True)
        rewritten = walker.visit(self.own(node))
        return ast.unparse(rewritten), walker.ports

    def pure(self, node: ast.expr) -> str:
        """Source of an expression that may not contain ``await`` (a loop condition...)."""
        walker = _Walker(self, [], hoist=False)
        return ast.unparse(walker.visit(self.own(node)))

    def own(self, node: ast.expr) -> ast.expr:
        """``node``, copied when compiling will change it (the same statement may be
        compiled more than once: a ``finally`` body is compiled once per way out)."""
        rewrites = self.rewrites
        for child in ast.walk(node):
            if isinstance(child, ast.Await) or (
                isinstance(child, ast.Name) and child.id in rewrites
            ):
                return copy.deepcopy(node)
        return node

    def check_call(self, node: ast.Call) -> None:
        """Refuse calls that cannot run between awaits: nodes, primitives, clocks, RNGs."""
        obj = self.resolver.resolve(node.func)
        text = dotted(node.func)
        kind = callee_kind(obj)
        name = text or ast.unparse(node.func)
        if kind in ("node", "flow"):
            what = "node" if kind == "node" else "flow"
            raise self.error(
                node,
                f"{what} {name!r} is called without await",
                _NODE_WITHOUT_AWAIT.format(name=name),
            )
        if kind in PATCH_ERRORS:
            raise self.error(node, *PATCH_ERRORS[kind])
        if kind is not None:
            raise self.error(node, f"{name}(...) must be awaited", f"write `await {name}(...)`")
        found = nondeterministic(obj, text)
        if found is not None:
            raise self.error(
                node,
                f"{found}() is not deterministic and cannot run in a flow body",
                "move this into a @node: code between awaits may run again on another worker",
            )
        if obj is UNRESOLVED and text is not None:
            self.unresolved.append((node, ""))  # checked again once the name exists

    def target(self, node: ast.expr) -> Target | None:
        """A name or nested list of names; ``None`` for attribute/subscript targets."""
        if isinstance(node, ast.Name):
            if node.id in self.rewrites:
                raise self.error(
                    node,
                    f"cannot assign to {node.id!r}, the exception bound by `except ... as`",
                    "use another variable name",
                )
            return node.id
        if isinstance(node, ast.Tuple | ast.List):
            items = [self.target(e) for e in node.elts]
            if any(item is None for item in items):
                raise self.error(
                    node, "can only unpack into plain names", "unpack into names, then assign"
                )
            return [item for item in items if item is not None]
        if isinstance(node, ast.Starred):
            raise self.error(
                node,
                "starred assignment (`a, *rest = ...`) is not supported in a flow",
                "assign the sequence, then slice it (`rest = values[1:]`)",
            )
        return None

    def name_target(self, node: ast.expr, what: str) -> Target:
        """A target that must be names (a ``for`` target, a node's result)."""
        target = self.target(node)
        if target is None:
            raise self.error(
                node,
                f"{what} can only be assigned to names",
                "assign to a variable, then store it in a separate statement",
            )
        return target

    def store(self, node: ast.expr, value: str, ports: list[Port]) -> list[Port]:
        """``obj.attr = value`` / ``obj[key] = value`` as a ``let`` that re-binds ``obj``'s root."""
        if isinstance(node, ast.Subscript):
            obj, ports = self.expr(node.value, ports)
            key, ports = self.expr(node.slice, ports)
            call = f"__flowkit_setitem__({obj}, {key}, {value})"
        elif isinstance(node, ast.Attribute):
            obj, ports = self.expr(node.value, ports)
            call = f"__flowkit_setattr__({obj}, {node.attr!r}, {value})"
        else:
            raise self.error(
                node,
                f"cannot assign to {ast.unparse(node)!r} in a flow",
                "assign to a variable name",
            )
        root = root_name(node)
        if root is not None and root in self.locals:
            return self.let(root, f"({call}, {root})[1]", ports, node)
        return self.let(None, call, ports, node)


def root_name(node: ast.expr) -> str | None:
    """``a`` for ``a.b[c].d``."""
    while isinstance(node, ast.Attribute | ast.Subscript):
        node = node.value
    return node.id if isinstance(node, ast.Name) else None


class _Walker(ast.NodeTransformer):
    """Checks an expression and hoists its awaits (``hoist=True``) in evaluation order."""

    def __init__(self, compiler: Expressions, ports: list[Port], *, hoist: bool) -> None:
        self.c = compiler
        self.ports = ports
        self.hoist = hoist
        self.lazy = 0

    def visit_Await(self, node: ast.Await) -> ast.AST:
        if not self.hoist:
            raise self.c.error(node, "await is not allowed here", _AWAIT_HINT)
        if self.lazy:
            raise self.c.error(
                node,
                "await inside a conditional expression, `and`/`or` or a comprehension "
                "is not supported",
                _AWAIT_HINT,
            )
        temp = self.c.temp("await")
        self.ports = self.c.await_call(node, temp, self.ports)
        return ast.copy_location(ast.Name(temp, ast.Load()), node)

    def visit_BoolOp(self, node: ast.BoolOp) -> ast.AST:
        node.values[0] = self.visit(node.values[0])
        node.values[1:] = [self._lazy(v) for v in node.values[1:]]
        return node

    def visit_IfExp(self, node: ast.IfExp) -> ast.AST:
        node.test = self.visit(node.test)
        node.body = self._lazy(node.body)
        node.orelse = self._lazy(node.orelse)
        return node

    def _comprehension(self, node: Any) -> ast.AST:
        first = node.generators[0]
        first.iter = self.visit(first.iter)
        self.lazy += 1
        try:
            for generator in node.generators:
                generator.ifs = [self.visit(i) for i in generator.ifs]
            for generator in node.generators[1:]:
                generator.iter = self.visit(generator.iter)
            for field in ("elt", "key", "value"):
                if hasattr(node, field):
                    setattr(node, field, self.visit(getattr(node, field)))
        finally:
            self.lazy -= 1
        return node  # type: ignore[no-any-return]

    visit_ListComp = visit_SetComp = visit_DictComp = visit_GeneratorExp = _comprehension

    def _lazy(self, node: ast.expr) -> Any:
        self.lazy += 1
        try:
            return self.visit(node)
        finally:
            self.lazy -= 1

    def visit_Lambda(self, node: ast.Lambda) -> ast.AST:
        raise self.c.error(
            node,
            "lambda is not allowed in a flow body",
            "define a module-level function (or use operator.itemgetter/attrgetter)",
        )

    def visit_Yield(self, node: ast.Yield) -> ast.AST:
        raise self.c.error(node, "a flow cannot yield", "return the result (or use flow.map)")

    visit_YieldFrom = visit_Yield  # type: ignore[assignment]

    def visit_NamedExpr(self, node: ast.NamedExpr) -> ast.AST:
        raise self.c.error(
            node, "`:=` is not supported in a flow body", "assign in a separate statement"
        )

    def visit_Call(self, node: ast.Call) -> ast.AST:
        self.c.check_call(node)
        return self.generic_visit(node)

    def visit_Name(self, node: ast.Name) -> ast.AST:
        replacement = self.c.rewrites.get(node.id)
        if replacement is None or not isinstance(node.ctx, ast.Load):
            return node
        return ast.copy_location(ast.parse(replacement, mode="eval").body, node)

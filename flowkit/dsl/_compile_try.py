"""``try`` / ``except`` / ``else`` / ``finally``.

Every node compiled inside a ``try`` body carries ``on_error``: the id of the
handler the core enters when that node fails for good, with the error record
in ``__error__``. The handler is a chain of ``branch`` nodes, one per
``except`` clause; no matching clause re-raises. A ``finally`` body is
compiled once for every way out that carries on after the statement, once
more on the way out of a failure (``finally`` then re-raise), and once per
``return``/``break``/``continue`` that leaves through it.
"""

from __future__ import annotations

import ast
from typing import TYPE_CHECKING

from ._compile_base import Handler, TryFrame
from ._compile_continue import Continues
from ._compile_graph import Draft

if TYPE_CHECKING:
    from ._compile_graph import Port


class Tries(Continues):
    """``try`` statements."""

    def stmt_Try(self, node: ast.Try, ports: list[Port]) -> list[Port]:
        final = node.finalbody
        after_failure = None
        if final:
            after_failure = Handler(self.graph.new_id(f"finally@L{self.lineno(final[0])}"))
        handler = None
        if node.handlers:
            handler = Handler(self.graph.new_id(f"except@L{self.lineno(node.handlers[0])}"))
        normal = self.region(node.body, ports, TryFrame(handler or after_failure, final))
        if node.orelse:
            normal = self.region(node.orelse, normal, TryFrame(after_failure, final))
        if handler is not None and handler.used:
            normal += self.handlers(node, handler, after_failure)
        exits = self.block(final, normal)
        if after_failure is not None and after_failure.used:
            self.finally_then_reraise(node, after_failure)
        return exits

    def region(self, body: list[ast.stmt], ports: list[Port], frame: TryFrame) -> list[Port]:
        self.frames.append(frame)
        try:
            return self.block(body, ports)
        finally:
            self.frames.pop()

    def handlers(
        self, node: ast.Try, handler: Handler, after_failure: Handler | None
    ) -> list[Port]:
        """The ``except`` chain: test each clause in turn; no match re-raises."""
        saved = self.temp("error") if _nests_try(node.handlers) else None
        frame = TryFrame(after_failure, node.finalbody, handling=True, saved=saved)
        ports: list[Port] = []
        if saved is not None or node.handlers[0].type is None:
            params = {"expr": "__error__", "assign": saved} if saved else {}
            ports = [(self.graph.add(handler.id, Draft("let", params), []), None)]
        exits: list[Port] = []
        self.frames.append(frame)
        try:
            for clause in node.handlers:
                body, ports = self.clause(clause, handler, ports)
                exits += self.clause_body(clause, body)
            if ports:
                if saved is not None:
                    ports = self.let("__error__", saved, ports, node)
                self.reraise(ports, node)
        finally:
            self.frames.pop()
        self.link(handler)
        return exits

    def clause(
        self, clause: ast.ExceptHandler, handler: Handler, ports: list[Port]
    ) -> tuple[list[Port], list[Port]]:
        """Test one ``except`` clause: the ports into its body and to the next clause."""
        if clause.type is None:
            return ports, []
        types = self.pure(clause.type)
        node_id = (
            handler.id
            if handler.id not in self.graph.drafts
            else (self.graph.new_id(f"except@L{self.lineno(clause)}"))
        )
        cond = f"__flowkit_matches__(__error__, {types})"
        self.add(node_id, "branch", {"cond": cond}, ports)
        return [(node_id, "true")], [(node_id, "false")]

    def clause_body(self, clause: ast.ExceptHandler, ports: list[Port]) -> list[Port]:
        name = clause.name
        if name is None:
            return self.block(clause.body, ports)
        record = f"__except_{name}__"
        params = {"expr": "__error__", "assign": record}
        ports = [(self.add(self.graph.new_id(f"let:{name}"), "let", params, ports), None)]
        previous = self.rewrites.get(name)
        self.rewrites[name] = f"__flowkit_exception__({record})"
        try:
            return self.block(clause.body, ports)
        finally:
            if previous is None:
                del self.rewrites[name]
            else:
                self.rewrites[name] = previous

    def finally_then_reraise(self, node: ast.Try, handler: Handler) -> None:
        """The way out of a failure through ``finally``: run it, then re-raise."""
        saved = self.temp("error") if _nests_try([node.finalbody]) else None
        params = {"expr": "__error__", "assign": saved} if saved else {}
        self.graph.add(handler.id, Draft("let", params), [])
        ports = self.block(node.finalbody, [(handler.id, None)])
        if saved is not None:
            ports = self.let("__error__", saved, ports, node)
        self.reraise(ports, node)
        self.link(handler)

    def link(self, handler: Handler) -> None:
        if handler.link_from is not None:
            self.graph.link(handler.link_from, handler.id, "error")


def _nests_try(parts: list[ast.ExceptHandler] | list[list[ast.stmt]]) -> bool:
    nodes: list[ast.AST] = []
    for part in parts:
        nodes.extend(part if isinstance(part, list) else [part])
    return any(isinstance(n, ast.Try | ast.TryStar) for top in nodes for n in ast.walk(top))

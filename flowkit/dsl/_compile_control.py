"""Branching and looping: ``if``, ``match``, ``for``, ``while``."""

from __future__ import annotations

import ast
import copy
from typing import TYPE_CHECKING, Any

from ._compile_base import LoopFrame
from ._compile_stmts import Statements
from ._evaluator import pattern_names

if TYPE_CHECKING:
    from ._compile_graph import Port

FOR_CAP = 1_000_000
"""Iteration cap of ``for`` loops (they are bounded by their iterable anyway)."""
WHILE_CAP = 10_000
"""Iteration cap of ``while`` loops."""


class Control(Statements):
    """Statements that branch or loop."""

    # -- if / match -----------------------------------------------------------
    def stmt_If(self, node: ast.If, ports: list[Port]) -> list[Port]:
        cond, ports = self.expr(node.test, ports)
        branch = self.branch(f"if@L{self.lineno(node)}", cond, ports)
        then = self.block(node.body, [(branch, "true")])
        otherwise = self.block(node.orelse, [(branch, "false")])
        return then + otherwise

    def branch(self, base: str, cond: str, ports: list[Port]) -> str:
        return self.add(self.graph.new_id(base), "branch", {"cond": cond}, ports)

    def stmt_Match(self, node: ast.Match, ports: list[Port]) -> list[Port]:
        subject = node.subject
        captured = {n for case in node.cases for n in pattern_names(case.pattern)}
        if isinstance(subject, ast.Name) and subject.id not in captured:
            source, ports = self.expr(subject, ports)
        else:
            value, ports = self.expr(subject, ports)
            source = self.temp("match")
            line = self.lineno(node)
            params = {"expr": value, "assign": source}
            ports = [(self.add(self.graph.new_id(f"match@L{line}"), "let", params, ports), None)]
        exits: list[Port] = []
        for case in node.cases:
            body, ports = self.case(case, source, ports)
            exits += self.block(case.body, body)
        return exits + ports

    def case(
        self, case: ast.match_case, subject: str, ports: list[Port]
    ) -> tuple[list[Port], list[Port]]:
        """Test one case: returns the ports into its body and the ports to the next case."""
        pattern, line = case.pattern, self.lineno(case.pattern)
        rest: list[Port] = []
        if not _irrefutable(pattern):
            branch = self.branch(f"case@L{line}", self.pattern_test(pattern, subject), ports)
            ports, rest = [(branch, "true")], [(branch, "false")]
        names = list(pattern_names(pattern))
        if isinstance(pattern, ast.MatchAs) and pattern.pattern is None and pattern.name:
            ports = self.let(pattern.name, subject, ports, case.pattern)
        elif names:
            value = f"__flowkit_match__({subject}, {ast.unparse(pattern)!r})"
            ports = self.let(names, value, ports, case.pattern)
        if case.guard is not None:
            cond, ports = self.expr(case.guard, ports)
            guard = self.branch(f"guard@L{self.lineno(case.guard)}", cond, ports)
            ports, rest = [(guard, "true")], [*rest, (guard, "false")]
        return ports, rest

    def pattern_test(self, pattern: ast.pattern, subject: str) -> str:
        if isinstance(pattern, ast.MatchValue):
            return f"{subject} == {self.pure(pattern.value)}"
        if isinstance(pattern, ast.MatchSingleton):
            return f"{subject} is {pattern.value!r}"
        return f"__flowkit_match__({subject}, {ast.unparse(pattern)!r}) is not None"

    # -- loops ----------------------------------------------------------------
    def stmt_For(self, node: ast.For, ports: list[Port]) -> list[Port]:
        items, ports = self.expr(node.iter, ports)
        target = self.name_target(node.target, "a for loop's variable")
        params = {"mode": "for", "iter": items, "target": target, "max_iterations": FOR_CAP}
        return self.loop(node, f"for@L{self.lineno(node)}", params, ports)

    def stmt_While(self, node: ast.While, ports: list[Port]) -> list[Port]:
        test, body = node.test, list(node.body)
        if any(isinstance(n, ast.Await) for n in ast.walk(test)):
            if node.orelse:
                raise self.error(
                    test,
                    "`while` with an awaited condition cannot have an `else` block",
                    "await the condition at the end of the loop body into a variable",
                )
            body = [_break_unless(test), *body]
            test = ast.copy_location(ast.Constant(True), test)
        cond = self.pure(test)
        params = {"mode": "while", "cond": cond, "max_iterations": WHILE_CAP}
        looped = copy.copy(node)
        looped.body = body
        return self.loop(looped, f"while@L{self.lineno(node)}", params, ports)

    def loop(
        self, node: ast.For | ast.While, base: str, params: dict[str, Any], ports: list[Port]
    ) -> list[Port]:
        if self.entered(ports):  # a loop needs a node before it (see _compile_graph)
            ports = [(self.noop(self.graph.new_id(f"start@L{self.lineno(node)}"), ports), None)]
        loop_id = self.graph.new_id(base)
        params["start"] = ""
        self.add(loop_id, "loop", params, ports)
        head = self.noop(self.graph.new_id(f"{base}:body"), [(loop_id, None)])
        frame = LoopFrame(loop_id)
        self.frames.append(frame)
        try:
            tails = self.block(node.body, [(head, None)])
        finally:
            self.frames.pop()
        self.graph.connect(tails, loop_id)
        start = self.elide_head(head, loop_id)
        self.graph.drafts[loop_id].params["start"] = start
        for source, _ in ports[:1]:
            self.graph.link(source, start, "loop")
        exits = self.block(node.orelse, [(loop_id, "exit")])
        return exits + frame.breaks

    def elide_head(self, head: str, loop_id: str) -> str:
        """Drop the body's placeholder entry when the body has a single first node."""
        outs = self.graph.out_edges(head)
        if len(outs) != 1 or self.graph.edges[outs[0]].target == loop_id:
            return head
        return self.graph.elide(head) or head


def _irrefutable(pattern: ast.pattern) -> bool:
    return isinstance(pattern, ast.MatchAs) and pattern.pattern is None


def _break_unless(test: ast.expr) -> ast.If:
    negated = ast.copy_location(ast.UnaryOp(ast.Not(), copy.deepcopy(test)), test)
    brk = ast.copy_location(ast.Break(), test)
    return ast.copy_location(ast.If(test=negated, body=[brk], orelse=[]), test)

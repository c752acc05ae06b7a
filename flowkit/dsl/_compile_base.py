"""State shared by the compiler's parts: the graph, the scope frames, errors."""

from __future__ import annotations

import ast
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import attrs

from .._errors import CompileError
from ..blueprint._model import NodeConfig, NodeKind
from ._compile_graph import START, Draft, Graph, Port

if TYPE_CHECKING:
    from ._compile_resolve import Resolver

Target = str | list[Any]
"""An assignment target: a name, or a (nested) list of names."""


@attrs.define
class Handler:
    """Where a failing node goes: an ``except`` chain or a ``finally``-then-re-raise path."""

    id: str
    used: bool = False
    link_from: str | None = None


@attrs.define
class LoopFrame:
    """The loop that ``break`` and ``continue`` refer to."""

    loop_id: str
    breaks: list[Port] = attrs.field(factory=list)


@attrs.define
class TryFrame:
    """A region of a ``try`` statement: its error handler and its ``finally`` body.

    ``handling`` marks an ``except`` body (a bare ``raise`` is allowed there);
    ``saved`` names the variable holding the error being handled when nested
    ``try`` statements might overwrite ``__error__``.
    """

    on_error: Handler | None
    final: list[ast.stmt]
    handling: bool = False
    saved: str | None = None


Frame = LoopFrame | TryFrame


@attrs.define
class Source:
    """Where the flow's source lives, for error positions."""

    filename: str
    line_offset: int
    indent: int
    lines: Sequence[str]

    def line(self, lineno: int) -> str:
        index = lineno - self.line_offset - 1
        return self.lines[index].rstrip("\n") if 0 <= index < len(self.lines) else ""


class CompilerBase:
    """The compiler's shared state; statement and expression handling live in mixins."""

    def __init__(self, source: Source, resolver: Resolver, local_names: frozenset[str]) -> None:
        self.src = source
        self.resolver = resolver
        self.locals = local_names
        self.graph = Graph()
        self.frames: list[Frame] = []
        self.rewrites: dict[str, str] = {}
        self.registry: dict[str, Any] = {}
        self.children: list[Any] = []
        self.unresolved: list[tuple[ast.AST, str]] = []
        self.var_types: dict[str, Any] = {}  # flow variable -> the type its value has
        self.patches: set[str] = set()  # ids of flow.patched(...)
        self.deprecated: set[str] = set()  # ids of flow.deprecate_patch(...)
        self.parameters: list[str] = []  # the flow's parameters (flow.continue_as_new's inputs)
        self.takes_any = False  # the flow has a **kwargs parameter
        self._temps = 0

    def note_type(self, target: Any, hint: Any) -> None:
        """Remember the declared type of a variable (None: it is assigned differently)."""
        if not isinstance(target, str):
            return
        if target in self.var_types and self.var_types[target] != hint:
            hint = None
        self.var_types[target] = hint

    # -- errors ---------------------------------------------------------------
    def error(self, node: ast.AST, message: str, hint: str) -> CompileError:
        lineno = self.lineno(node)
        return CompileError(
            message,
            filename=self.src.filename,
            lineno=lineno,
            col_offset=getattr(node, "col_offset", 0) + self.src.indent,
            source_line=self.src.line(lineno),
            hint=hint,
        )

    def lineno(self, node: ast.AST) -> int:
        return int(getattr(node, "lineno", 1)) + self.src.line_offset

    # -- nodes ----------------------------------------------------------------
    def add(
        self,
        node_id: str,
        kind: NodeKind,
        params: dict[str, Any],
        ports: Sequence[Port],
        *,
        uses: str | None = None,
        config: NodeConfig | None = None,
    ) -> str:
        """Add a node fed by ``ports``; inside a ``try`` it gets ``on_error``."""
        handler = self.on_error()
        if handler is not None:
            params["on_error"] = handler.id
            handler.used = True
            if handler.link_from is None:
                handler.link_from = node_id
        draft = Draft(kind, params, uses, config or NodeConfig())
        return self.graph.add(node_id, draft, ports)

    def noop(self, node_id: str, ports: Sequence[Port]) -> str:
        """A ``let`` that does nothing (a loop body's entry, a handler's entry)."""
        return self.graph.add(node_id, Draft("let"), ports)

    def let(
        self, target: Target | None, source: str, ports: Sequence[Port], node: ast.AST
    ) -> list[Port]:
        base = f"let:{_names(target)}" if target is not None else f"expr@L{self.lineno(node)}"
        params: dict[str, Any] = {"expr": source}
        if target is not None:
            params["assign"] = target
        return [(self.add(self.graph.new_id(base), "let", params, ports), None)]

    def temp(self, stem: str) -> str:
        self._temps += 1
        return f"__{stem}{self._temps}__"

    def on_error(self) -> Handler | None:
        for frame in reversed(self.frames):
            if isinstance(frame, TryFrame) and frame.on_error is not None:
                return frame.on_error
        return None

    @staticmethod
    def entered(ports: Sequence[Port]) -> bool:
        """Whether ``ports`` is the flow's entry (nothing compiled yet)."""
        return any(source == START for source, _ in ports)

    # -- provided by the mixins ---------------------------------------------------
    def block(self, stmts: Sequence[ast.stmt], ports: list[Port]) -> list[Port]:
        raise NotImplementedError

    def expr(self, node: ast.expr, ports: list[Port]) -> tuple[str, list[Port]]:
        raise NotImplementedError

    def await_call(self, node: ast.Await, target: Target | None, ports: list[Port]) -> list[Port]:
        raise NotImplementedError


def _names(target: Target | None) -> str:
    if isinstance(target, str):
        return target
    return ",".join(_names(t) for t in target or ())

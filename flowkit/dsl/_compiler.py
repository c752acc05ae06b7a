"""The ``@flow`` compiler: an ``async def`` body, parsed with ``ast``, becomes a Blueprint.

Each statement compiles to nodes of the kinds the core runs (``call``,
``let``, ``branch``, ``loop``, ``join``, ``sleep``, ``wait``, ``webhook``,
``subflow``, ``return``); flow variables live in the run's context, and every
expression is kept as source text for :class:`~flowkit.dsl._evaluator.FlowEvaluator`.
The blueprint's metadata sets ``join_default="pass"``: a node runs on each
edge taken into it (only one path is ever live), while gathers use explicit
``join="all"``/``"any"`` nodes.

The parts live in mixins, one module each: expressions (``_compile_exprs``),
awaited calls (``_compile_calls``, ``_compile_waits``), simple statements
(``_compile_stmts``), branches and loops (``_compile_control``) and ``try``
(``_compile_try``).
"""

from __future__ import annotations

import ast
import inspect
import textwrap
from typing import TYPE_CHECKING, Any

import attrs

from .._errors import CompileError
from ..blueprint._model import Blueprint
from ..blueprint._validate import validate
from ._compile_base import Source
from ._compile_graph import START, Draft, Port
from ._compile_resolve import Resolver
from ._compile_try import Tries
from ._evaluator import FlowEvaluator

if TYPE_CHECKING:
    from collections.abc import Callable

METADATA = {"join_default": "pass", "compiled": True}
_SCOPES = (ast.Lambda, ast.ListComp, ast.SetComp, ast.DictComp, ast.GeneratorExp,
           ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)  # fmt: skip


@attrs.frozen
class CompiledFlow:
    """What a ``@flow`` compiles to: the blueprint and everything needed to run it."""

    blueprint: Blueprint
    registry: dict[str, Any]
    children: tuple[Any, ...]
    evaluator: FlowEvaluator


class FlowCompiler(Tries):
    """Compiles one flow function body."""

    def function(self, fn_node: ast.AsyncFunctionDef, fn: Callable[..., Any]) -> None:
        ports: list[Port] = [(START, None)]
        names = _parameters(fn_node)
        if names:
            uses = f"{fn.__module__}.{fn.__qualname__}:inputs"
            self.registry[uses] = InputBinder(fn)
            node_id = self.graph.new_id(f"inputs@L{self.lineno(fn_node)}")
            self.graph.add(node_id, Draft("call", {"assign": list(names)}, uses), ports)
            ports = [(node_id, None)]
        tails = self.block(fn_node.body, ports)
        if tails:
            self.add(self.graph.new_id("end"), "return", {}, tails)


class InputBinder:
    """The entry node of a flow with parameters: binds the run's inputs to them.

    Runs the inputs through the flow function's signature (so defaults apply
    and a missing input fails like a Python call would) and returns the
    parameters' values, which the entry node assigns to the flow variables.
    """

    def __init__(self, fn: Callable[..., Any]) -> None:
        self.signature = inspect.signature(fn)
        self.__name__ = f"{getattr(fn, '__name__', 'flow')}:inputs"

    async def __call__(self, **inputs: Any) -> tuple[Any, ...]:
        bound = self.signature.bind(**inputs)
        bound.apply_defaults()
        return tuple(bound.arguments.values())


def compile_flow(
    fn: Callable[..., Any], *, flow_id: str, version: int, final: bool
) -> CompiledFlow | None:
    """Compile ``fn``'s body; ``None`` when a name it uses is not defined yet and not ``final``.

    Raises:
        CompileError: the body uses something outside the compiled subset (or,
            when ``final``, awaits a name that is still undefined).
    """
    source, fn_node = _parse(fn)
    local_names = _local_names(fn_node)
    compiler = FlowCompiler(source, Resolver(fn, local_names), local_names)
    compiler.function(fn_node, fn)
    pending = [(node, name) for node, name in compiler.unresolved if name]
    if compiler.unresolved and not final:
        return None
    if pending:
        node, name = pending[0]
        raise compiler.error(
            node,
            f"cannot resolve {name!r} when compiling flow {flow_id!r}",
            "define the node (or flow) at module level or before the flow is first run",
        )
    bp = compiler.graph.blueprint(flow_id, version, dict(METADATA))
    validate(bp, compiler.registry)
    evaluator = FlowEvaluator(fn, local_names)
    return CompiledFlow(bp, compiler.registry, tuple(compiler.children), evaluator)


def _parse(fn: Callable[..., Any]) -> tuple[Source, ast.AsyncFunctionDef]:
    code = getattr(fn, "__code__", None)
    filename = code.co_filename if code else "<unknown>"
    try:
        lines, first = inspect.getsourcelines(fn)
    except (OSError, TypeError):
        raise CompileError(
            f"cannot read the source of {getattr(fn, '__qualname__', fn)!r}",
            filename=filename,
            lineno=code.co_firstlineno if code else 1,
            col_offset=0,
            hint="define flows in a .py file (the compiler reads the function's source)",
        ) from None
    text = "".join(lines)
    dedented = textwrap.dedent(text)
    indent = len(lines[0]) - len(lines[0].lstrip()) if lines else 0
    source = Source(filename, max(first, 1) - 1, indent, lines)
    tree = ast.parse(dedented)
    fn_node = next(n for n in tree.body if isinstance(n, ast.FunctionDef | ast.AsyncFunctionDef))
    if not isinstance(fn_node, ast.AsyncFunctionDef):
        lineno = fn_node.lineno + source.line_offset
        raise CompileError(
            f"@flow needs an async function; {fn_node.name!r} is a plain def",
            filename=filename,
            lineno=lineno,
            col_offset=fn_node.col_offset + indent,
            source_line=source.line(lineno),
            hint=f"write `async def {fn_node.name}(...)`",
        )
    return source, fn_node


def _parameters(fn_node: ast.AsyncFunctionDef) -> list[str]:
    args = fn_node.args
    names = [a.arg for a in (*args.posonlyargs, *args.args)]
    if args.vararg:
        names.append(args.vararg.arg)
    names += [a.arg for a in args.kwonlyargs]
    if args.kwarg:
        names.append(args.kwarg.arg)
    return names


def _local_names(fn_node: ast.AsyncFunctionDef) -> frozenset[str]:
    """The flow's own variables: parameters and every name its body binds."""
    names = set(_parameters(fn_node))
    todo: list[ast.AST] = list(fn_node.body)
    while todo:
        node = todo.pop()
        if isinstance(node, ast.Name) and isinstance(node.ctx, ast.Store):
            names.add(node.id)
        elif isinstance(node, ast.ExceptHandler | ast.MatchAs | ast.MatchStar) and node.name:
            names.add(node.name)
        elif isinstance(node, ast.MatchMapping) and node.rest:
            names.add(node.rest)
        if not isinstance(node, _SCOPES):
            todo.extend(ast.iter_child_nodes(node))
    return frozenset(names)

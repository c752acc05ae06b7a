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
import linecache
import typing
from typing import TYPE_CHECKING, Any

import attrs

from .._errors import CompileError
from ..blueprint._model import Blueprint
from ..blueprint._validate import validate
from ._compile_base import Source
from ._compile_graph import START, Port
from ._compile_resolve import Resolver
from ._compile_try import Tries
from ._evaluator import FlowEvaluator

if TYPE_CHECKING:
    from collections.abc import Callable, Mapping
    from types import CodeType

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
        self.parameters = names
        self.takes_any = fn_node.args.kwarg is not None
        try:
            hints = typing.get_type_hints(fn)
        except (NameError, TypeError):
            hints = {}
        for name in names:
            self.note_type(name, hints.get(name))
        for arg in ast.walk(fn_node.args):
            if isinstance(arg, ast.arg) and arg.arg == "run_id":
                raise self.error(
                    arg,
                    "`run_id` cannot be a flow parameter: it is reserved for the run's id",
                    "rename the parameter; read the run's id in a node with flowkit.context()",
                )
        tails = self.block(fn_node.body, ports)
        if tails:
            self.add(self.graph.new_id("end"), "return", {}, tails)


def compile_flow(
    fn: Callable[..., Any],
    *,
    flow_id: str,
    version: int,
    final: bool,
    concurrency: Mapping[str, Any] | None = None,
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
    metadata = _metadata(compiler)
    if concurrency is not None:  # @flow(concurrency=Limit(...)): see core/_admission.py
        metadata["concurrency"] = dict(concurrency)
    bp = compiler.graph.blueprint(flow_id, version, metadata)
    validate(bp, compiler.registry)
    evaluator = FlowEvaluator(fn, local_names, typed_variables(compiler.var_types))
    return CompiledFlow(bp, compiler.registry, tuple(compiler.children), evaluator)


def _metadata(compiler: FlowCompiler) -> dict[str, Any]:
    """The blueprint's metadata: the compiled-flow defaults, and the patch ids it knows."""
    metadata: dict[str, Any] = dict(METADATA)
    if compiler.patches or compiler.deprecated:
        metadata["patches"] = sorted(compiler.patches | compiler.deprecated)
    if compiler.deprecated:
        metadata["deprecated_patches"] = sorted(compiler.deprecated)
    return metadata


def _parse(fn: Callable[..., Any]) -> tuple[Source, ast.AsyncFunctionDef]:
    """The function's definition, from its module's source (kept by ``linecache``)."""
    code = inspect.unwrap(fn).__code__
    filename = code.co_filename
    lines = linecache.getlines(filename)
    fn_node = _find_function(_module_tree(filename, lines), code) if lines else None
    if fn_node is None:
        raise CompileError(
            f"cannot read the source of {getattr(fn, '__qualname__', fn)!r}",
            filename=filename,
            lineno=code.co_firstlineno,
            col_offset=0,
            hint="define flows in a .py file (the compiler reads the function's source)",
        )
    source = Source(filename, 0, 0, lines)
    if not isinstance(fn_node, ast.AsyncFunctionDef):
        raise CompileError(
            f"@flow needs an async function; {fn_node.name!r} is a plain def",
            filename=filename,
            lineno=fn_node.lineno,
            col_offset=fn_node.col_offset,
            source_line=source.line(fn_node.lineno),
            hint=f"write `async def {fn_node.name}(...)`",
        )
    return source, fn_node


_TREES: dict[str, tuple[list[str], ast.Module | None]] = {}


def _module_tree(filename: str, lines: list[str]) -> ast.Module | None:
    """The parsed module, cached while ``linecache`` holds the same text."""
    cached = _TREES.get(filename)
    if cached is not None and cached[0] is lines:
        return cached[1]
    try:
        tree: ast.Module | None = ast.parse("".join(lines), filename)
    except SyntaxError:  # the file changed since it was imported
        tree = None
    _TREES[filename] = (lines, tree)
    return tree


def _find_function(
    tree: ast.Module | None, code: CodeType
) -> ast.FunctionDef | ast.AsyncFunctionDef | None:
    """The definition whose first line (decorators included) is the code's first line."""
    if tree is None:
        return None
    for node in ast.walk(tree):
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef) and node.name == code.co_name:
            first = node.decorator_list[0].lineno if node.decorator_list else node.lineno
            if first == code.co_firstlineno:
                return node
    return None


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


def typed_variables(var_types: dict[str, Any]) -> dict[str, Any]:
    """Variables whose values should be structured back into rich types after a reload."""
    from ..shell._structure import is_rich

    return {name: hint for name, hint in var_types.items() if hint is not None and is_rich(hint)}

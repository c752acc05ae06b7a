"""A safe evaluator for small expressions such as builder edge conditions.

``compile_safe("result < 10")`` parses the text with :func:`ast.parse`, checks
every node against a strict whitelist, rewrites ``+ * % **`` and calls of the
whitelisted functions into guarded helpers, then compiles it once.
:meth:`SafeExpression.evaluate` runs the code with empty ``__builtins__``, so
evaluation costs about as much as the expression itself.
"""

from __future__ import annotations

import ast
import warnings
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, NoReturn

from ._errors import FlowkitError

if TYPE_CHECKING:
    from collections.abc import Callable, Collection, Iterable, Mapping
    from types import CodeType

__all__ = ["ExpressionError", "SafeExpression", "compile_safe"]

MAX_SOURCE_CHARS = 2000
MAX_SIZE = 1_000_000  # largest str/list/tuple that ``*`` or ``+`` may build
MAX_EXPONENT = 1000
MAX_POW_BITS = 100_000

_SCALARS = (int, float, str, bool, type(None))
_SEQUENCES = (str, list, tuple)
_BINOPS: dict[type[ast.operator], str] = {ast.Add: "add", ast.Sub: "", ast.Mult: "mul",
    ast.Div: "", ast.FloorDiv: "", ast.Mod: "mod", ast.Pow: "pow"}  # fmt: skip
_UNARYOPS = (ast.Not, ast.USub, ast.UAdd)
_REFUSED_OPS: dict[type[ast.AST], str] = {ast.BitOr: "|", ast.BitAnd: "&", ast.BitXor: "^",
    ast.LShift: "<<", ast.RShift: ">>", ast.MatMult: "@", ast.Invert: "~"}  # fmt: skip
_KEYWORDS = frozenset({"reverse", "default", "start", "ndigits", "base"})
_BLOCKED_ATTRS = frozenset({"gi_frame", "gi_code", "cr_frame", "cr_code", "ag_frame",
    "ag_code", "f_globals", "f_locals", "f_builtins", "f_back", "f_code", "tb_frame",
    "tb_next", "mro"})  # fmt: skip
_PASS_THROUGH = (ast.Expression, ast.Subscript, ast.Slice, ast.Tuple, ast.List, ast.Set,
                 ast.Compare, ast.BoolOp, ast.IfExp, ast.expr_context, ast.boolop, ast.cmpop,
                 ast.operator, ast.unaryop, ast.keyword, ast.UnaryOp, ast.Dict)  # fmt: skip
_REFUSED_NAMES: dict[type[ast.AST], str] = {
    ast.Lambda: "lambda", ast.NamedExpr: "':='", ast.JoinedStr: "an f-string",
    ast.ListComp: "a comprehension", ast.SetComp: "a comprehension",
    ast.DictComp: "a comprehension", ast.GeneratorExp: "a comprehension",
    ast.Starred: "'*' unpacking",
}  # fmt: skip


class ExpressionError(FlowkitError, ValueError):
    """An expression was refused at compile time or failed when evaluated."""

    def __init__(self, expression: str, problem: str, hint: str = "") -> None:
        self.expression = expression
        self.problem = problem
        self.hint = hint
        super().__init__(expression, problem, hint)

    def __str__(self) -> str:
        text = f"expression {self.expression!r}: {self.problem}"
        return f"{text}; {self.hint}" if self.hint else text


class _Refused(Exception):
    """Raised by a runtime guard; :meth:`SafeExpression.evaluate` re-raises it."""


def _refuse(problem: str) -> NoReturn:
    """Stop evaluation with ``problem`` as the reason."""
    raise _Refused(problem)


def _guard_add(a: Any, b: Any) -> Any:
    """``a + b``, refusing to concatenate sequences past :data:`MAX_SIZE`."""
    if isinstance(a, _SEQUENCES) and isinstance(b, _SEQUENCES) and len(a) + len(b) > MAX_SIZE:
        _refuse(f"'+' would build a sequence longer than {MAX_SIZE:,}")
    return a + b


def _check_repeat(seq: Any, count: Any) -> None:
    """Refuse ``seq * count`` when the result (counted deeply) exceeds :data:`MAX_SIZE`."""
    if not isinstance(seq, _SEQUENCES) or not isinstance(count, int) or count <= 1:
        return
    too_big = len(seq) * count > MAX_SIZE
    if not too_big and not isinstance(seq, str):
        if not all(isinstance(e, _SCALARS) for e in seq):
            _refuse("'*' may repeat only lists/tuples of numbers, strings, bools and None")
        too_big = sum(len(e) if isinstance(e, str) else 1 for e in seq) * count > MAX_SIZE
    if too_big:
        _refuse(f"'*' would build a sequence longer than {MAX_SIZE:,}")


def _guard_mul(a: Any, b: Any) -> Any:
    """``a * b``, guarding sequence repetition."""
    _check_repeat(a, b)
    _check_repeat(b, a)
    return a * b


def _guard_mod(a: Any, b: Any) -> Any:
    """``a % b`` for numbers; '%'-formatting of strings is refused."""
    if isinstance(a, str):
        _refuse("'%' string formatting is not allowed")
    return a % b


def _guard_pow(base: Any, exp: Any) -> Any:
    """``base ** exp``, refusing integer powers too large to compute quickly."""
    if isinstance(base, int) and isinstance(exp, int):
        if exp > MAX_EXPONENT:
            _refuse(f"'**' exponent {exp} is larger than {MAX_EXPONENT}")
        if abs(base) > 1 and base.bit_length() * exp > MAX_POW_BITS:
            _refuse(f"'**' result would have more than {MAX_POW_BITS:,} bits")
    return base**exp


def _safe_sum(iterable: Iterable[Any], /, start: Any = 0) -> Any:
    """``sum`` restricted to a numeric start (no list concatenation)."""
    if not isinstance(start, int | float):
        _refuse("sum() start must be a number")
    return sum(iterable, start)


def _safe_round(number: Any, ndigits: Any = None) -> Any:
    """``round`` with ``ndigits`` bounded by :data:`MAX_EXPONENT`."""
    if ndigits is None:
        return round(number)
    if isinstance(ndigits, int) and abs(ndigits) > MAX_EXPONENT:
        _refuse(f"round() ndigits must be within ±{MAX_EXPONENT}")
    return round(number, ndigits)


FUNCTIONS: Mapping[str, Callable[..., Any]] = {
    "len": len, "min": min, "max": max, "abs": abs, "sum": _safe_sum, "any": any,
    "all": all, "round": _safe_round, "sorted": sorted, "str": str, "int": int,
    "float": float, "bool": bool,
}  # fmt: skip
_GLOBALS: dict[str, Any] = {
    "__builtins__": {},
    **FUNCTIONS,
    **{f"__fk_call_{name}": fn for name, fn in FUNCTIONS.items()},
    "__fk_add": _guard_add, "__fk_mul": _guard_mul, "__fk_mod": _guard_mod,
    "__fk_pow": _guard_pow,
}  # fmt: skip
_FUNCTION_LIST = ", ".join(FUNCTIONS)
_ALLOWED_HINT = (
    "allowed: str/int/float/bool/None literals, tuple/list/dict/set displays, names, "
    "attributes and subscripts, comparisons, and/or/not, + - * / // % **, "
    f"'a if c else b', and calls by name of {_FUNCTION_LIST}"
)


@dataclass(frozen=True, slots=True)
class SafeExpression:
    """A validated, compiled expression; call :meth:`evaluate` as often as needed."""

    source: str
    code: CodeType = field(repr=False, compare=False)

    def evaluate(self, names: Mapping[str, object]) -> object:
        """Evaluate with ``names`` as the variables; failures raise ExpressionError."""
        try:
            return eval(self.code, _GLOBALS, names)
        except _Refused as exc:
            raise ExpressionError(self.source, str(exc)) from None
        except Exception as exc:
            problem = f"evaluation failed with {type(exc).__name__}: {exc}"
            raise ExpressionError(self.source, problem) from exc


class _Validator:
    """Checks every node of a parsed expression against the whitelist."""

    def __init__(self, source: str, allowed_names: Collection[str] | None) -> None:
        self.source = source
        self.allowed_names = allowed_names

    def fail(self, node: ast.AST, problem: str, hint: str = _ALLOWED_HINT) -> NoReturn:
        """Raise an ExpressionError quoting the offending part of the source."""
        segment = ast.get_source_segment(self.source, node) if hasattr(node, "lineno") else None
        where = f" (in {segment!r})" if segment and segment != self.source else ""
        raise ExpressionError(self.source, problem + where, hint)

    def check(self, tree: ast.AST) -> None:
        """Validate ``tree`` node by node (iteratively, so nesting cannot overflow)."""
        for node in ast.walk(tree):
            self.check_node(node)

    def check_node(self, node: ast.AST) -> None:
        """Validate one node; children are visited by :meth:`check`."""
        if isinstance(node, ast.Constant):
            if type(node.value) not in _SCALARS:
                self.fail(node, f"{type(node.value).__name__} literals are not allowed")
        elif isinstance(node, ast.Name):
            self.check_name(node)
        elif isinstance(node, ast.Attribute):
            if node.attr.startswith("_") or node.attr in _BLOCKED_ATTRS:
                hint = "attributes starting with '_' and frame/code internals are refused"
                self.fail(node, f"attribute {node.attr!r} is not allowed", hint)
        elif isinstance(node, ast.Call):
            self.check_call(node)
        elif isinstance(node, ast.BinOp):
            if type(node.op) not in _BINOPS:
                self.fail(node, f"operator {_REFUSED_OPS.get(type(node.op))!r} is not allowed")
        elif isinstance(node, ast.UnaryOp) and not isinstance(node.op, _UNARYOPS):
            self.fail(node, f"operator {_REFUSED_OPS.get(type(node.op))!r} is not allowed")
        elif isinstance(node, ast.Dict) and None in node.keys:
            self.fail(node, "'**' unpacking is not allowed")
        elif not isinstance(node, _PASS_THROUGH):
            what = _REFUSED_NAMES.get(type(node), type(node).__name__)
            self.fail(node, f"{what} is not allowed")

    def check_name(self, node: ast.Name) -> None:
        """Refuse private names and, if a list was given, names outside it."""
        if node.id.startswith("_"):
            self.fail(node, f"private name {node.id!r} is not allowed", "no names with '_' first")
        allowed = self.allowed_names
        if allowed is not None and node.id not in allowed and node.id not in FUNCTIONS:
            names = ", ".join(sorted(allowed)) or "none"
            self.fail(node, f"unknown name {node.id!r}", f"available names: {names}")

    def check_call(self, node: ast.Call) -> None:
        """Allow only calls of whitelisted functions, by name, with plain arguments."""
        hint = f"only these functions may be called, by name: {_FUNCTION_LIST}"
        if not isinstance(node.func, ast.Name) or node.func.id not in FUNCTIONS:
            self.fail(node, "this call is not allowed", hint)
        for kw in node.keywords:
            if kw.arg not in _KEYWORDS:
                what = "'**' unpacking" if kw.arg is None else f"keyword {kw.arg!r}"
                self.fail(node, f"{what} is not allowed",
                          f"allowed keywords: {', '.join(sorted(_KEYWORDS))}")  # fmt: skip


class _Guarder(ast.NodeTransformer):
    """Rewrites guarded operators and whitelisted calls into helper calls."""

    def visit_BinOp(self, node: ast.BinOp) -> ast.expr:
        """Turn ``a * b`` (and + % **) into ``__fk_mul(a, b)``."""
        self.generic_visit(node)
        helper = _BINOPS[type(node.op)]
        if not helper:
            return node
        func = ast.Name(id=f"__fk_{helper}", ctx=ast.Load())
        call = ast.Call(func=func, args=[node.left, node.right], keywords=[])
        return ast.copy_location(call, node)

    def visit_Call(self, node: ast.Call) -> ast.expr:
        """Bind whitelisted calls to the real functions, whatever ``names`` holds."""
        self.generic_visit(node)
        assert isinstance(node.func, ast.Name)
        node.func = ast.Name(id=f"__fk_call_{node.func.id}", ctx=ast.Load())
        return node


def _parse(source: str) -> ast.Expression:
    """Parse ``source`` as one expression, turning every failure into ExpressionError."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return ast.parse(source, "<expression>", mode="eval")
    except SyntaxError as exc:
        raise ExpressionError(source, f"invalid syntax: {exc.msg}", _ALLOWED_HINT) from None
    except (ValueError, RecursionError, MemoryError) as exc:
        raise ExpressionError(source, f"cannot parse: {exc or 'too deeply nested'}") from None


def compile_safe(source: str, *, allowed_names: Collection[str] | None = None) -> SafeExpression:
    """Validate and compile ``source``; raise ExpressionError if it is not allowed."""
    if not isinstance(source, str):
        raise ExpressionError(repr(source), "an expression must be a str")
    if len(source) > MAX_SOURCE_CHARS:
        raise ExpressionError(source[:40] + "...", f"longer than {MAX_SOURCE_CHARS} characters")
    tree = _parse(source)
    _Validator(source, allowed_names).check(tree)
    try:
        guarded = ast.fix_missing_locations(_Guarder().visit(tree))
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            code = compile(guarded, "<expression>", "eval")
    except (RecursionError, MemoryError, SyntaxError, ValueError):
        raise ExpressionError(source, "too deeply nested to compile") from None
    return SafeExpression(source, code)

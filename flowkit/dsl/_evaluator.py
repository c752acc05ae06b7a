"""Evaluating a compiled flow's expressions with Python's own name resolution.

Every expression a ``@flow`` compiles to (call arguments, conditions, ``let``
values, loop iterables) is kept as source text in the blueprint. In-process it
is compiled once with :func:`compile` and evaluated against a scope that
resolves names the way Python resolves them inside the flow function: the
run's flow variables, then the function's closure, then its module globals,
then builtins. The expressions come from the flow's own source code, never
from message data.

The scope is a ``dict`` subclass whose ``__missing__`` does the lookup, so
comprehensions (which read outer names as globals) see flow variables too,
and evaluating an expression copies nothing.
"""

from __future__ import annotations

import ast
import builtins
import sys
import types
from typing import TYPE_CHECKING, Any

import cattrs

from .._errors import NodeError

if TYPE_CHECKING:
    from collections.abc import Callable, Mapping

    Compiled = Callable[[Mapping[str, Any]], Any]

_converter = cattrs.Converter()


class CaughtError(NodeError):
    """The exception bound by ``except T as e`` when its type cannot be rebuilt.

    ``str(e)`` is the original message; ``error_type`` and ``error_mro`` name
    the original exception class.
    """

    def __str__(self) -> str:
        return self.message


class FlowEvaluator:
    """Turns expression source into ``evaluate(flow_variables) -> value``.

    ``local_names`` are the flow's own variables: reading one before it is
    assigned raises ``UnboundLocalError`` (as in Python) instead of falling
    back to a global of the same name.
    """

    def __init__(
        self,
        fn: Callable[..., Any],
        local_names: frozenset[str],
        var_types: Mapping[str, Any] | None = None,
    ) -> None:
        code = fn.__code__
        self.filename = code.co_filename
        self._cells: dict[str, types.CellType] = dict(
            zip(code.co_freevars, getattr(fn, "__closure__", None) or (), strict=True)
        )
        self._globals: dict[str, Any] = getattr(fn, "__globals__", {})
        self._builtins: Any = self._globals.get("__builtins__", builtins)
        self._locals = local_names
        self.types: dict[str, Any] = dict(var_types or {})

    def typed(self, name: str, value: Any) -> Any:
        """A variable's value as its declared type (it may arrive as plain data)."""
        hint = self.types.get(name)
        if hint is None or value is None or (isinstance(hint, type) and isinstance(value, hint)):
            return value
        from .._serde import from_data, is_already

        return value if is_already(value, hint) else from_data(value, hint)

    def __call__(self, source: str) -> Compiled:
        code = compile(source, self.filename, "eval")

        def evaluate(variables: Mapping[str, Any]) -> Any:
            return eval(code, _Scope(variables, self))

        return evaluate

    def lookup(self, name: str, scope: _Scope) -> Any:
        """Resolve a name that is not a flow variable (``KeyError``: try builtins)."""
        helper = _HELPERS.get(name)
        if helper is not None:
            return helper(scope)
        if name in self._locals:
            raise UnboundLocalError(
                f"cannot access local variable {name!r} where it is not associated with a value"
            )
        cell = self._cells.get(name)
        if cell is not None:
            try:
                return cell.cell_contents
            except ValueError:
                raise NameError(
                    f"cannot access free variable {name!r} where it is not associated with a "
                    "value in enclosing scope"
                ) from None
        return self._globals[name]


class _Scope(dict[str, Any]):
    """Globals of one evaluation: flow variables, closure, module, builtins."""

    __slots__ = ("_evaluator", "_variables")

    def __init__(self, variables: Mapping[str, Any], evaluator: FlowEvaluator) -> None:
        super().__init__(__builtins__=evaluator._builtins)
        self._variables = variables
        self._evaluator = evaluator

    def __missing__(self, key: str) -> Any:
        try:
            value = self._variables[key]
        except KeyError:
            return self._evaluator.lookup(key, self)
        return self._evaluator.typed(key, value) if self._evaluator.types else value


# -- helpers the compiled expressions call ------------------------------------


def error_matches(record: Mapping[str, Any] | None, types_: Any) -> bool:
    """Whether an error record (``__error__``) is an instance of ``types_``.

    Matching is by qualified name against the record's ``mro``, so errors that
    crossed a process boundary match the classes they were raised as.
    """
    if not record:
        return False
    mro = record.get("mro") or [record.get("type")]
    candidates = types_ if isinstance(types_, tuple) else (types_,)
    return any(f"{t.__module__}.{t.__qualname__}" in mro for t in candidates)


def rebuild_exception(record: Mapping[str, Any]) -> BaseException:
    """The exception object ``except T as e`` binds, rebuilt from an error record.

    The original class is used when it is already imported and can hold the
    message (``str(e)`` is the message); otherwise a :class:`CaughtError`.
    Nothing is imported on the strength of an error record.
    """
    type_name = str(record.get("type", ""))
    message = str(record.get("message", ""))
    cls = _loaded_class(type_name)
    if cls is not None and issubclass(cls, Exception):
        try:
            exc = cls.__new__(cls, message)
            exc.args = (message,)
            str(exc)
        except Exception:  # a class whose __new__/__str__ needs more than a message
            pass
        else:
            return exc
    return CaughtError(
        str(record.get("node", "")),
        int(record.get("attempt", 0) or 0),
        message,
        error_type=type_name or "builtins.Exception",
        error_mro=tuple(record.get("mro") or ()),
    )


def _loaded_class(qualified: str) -> type | None:
    parts = qualified.split(".")
    for cut in range(len(parts) - 1, 0, -1):
        module = sys.modules.get(".".join(parts[:cut]))
        if module is None:
            continue
        target: Any = module
        for attr in parts[cut:]:
            target = getattr(target, attr, None)
        return target if isinstance(target, type) else None
    return None


def raise_(exc: Any) -> Any:
    """``raise exc`` as an expression (``raise X`` statements compile to this)."""
    if isinstance(exc, type) and issubclass(exc, BaseException):
        raise exc()
    if isinstance(exc, BaseException):
        raise exc
    raise TypeError("exceptions must derive from BaseException")


def structure(value: Any, type_: Any) -> Any:
    """Structure a signal payload into ``type_`` (``flow.wait(..., type=T)``)."""
    if isinstance(type_, type) and isinstance(value, type_):
        return value
    return _converter.structure(value, type_)


def setitem(target: Any, key: Any, value: Any) -> None:
    """``target[key] = value`` as an expression."""
    target[key] = value


def set_attribute(target: Any, name: str, value: Any) -> None:
    """``target.name = value`` as an expression."""
    setattr(target, name, value)


# -- match statements -----------------------------------------------------------

_MATCHERS: dict[str, tuple[types.CodeType, tuple[str, ...]]] = {}
_SUBJECT = "__flowkit_subject__"


def pattern_names(pattern: ast.pattern) -> tuple[str, ...]:
    """The names a ``case`` pattern binds, in the order the matcher returns them."""
    names: set[str] = set()
    for node in ast.walk(pattern):
        if isinstance(node, ast.MatchAs | ast.MatchStar) and node.name:
            names.add(node.name)
        elif isinstance(node, ast.MatchMapping) and node.rest:
            names.add(node.rest)
    return tuple(sorted(names))


def _matcher(pattern: str) -> tuple[types.CodeType, tuple[str, ...]]:
    found = _MATCHERS.get(pattern)
    if found is None:
        case = ast.parse(f"match _:\n case {pattern}:\n  pass").body[0]
        assert isinstance(case, ast.Match)
        names = pattern_names(case.cases[0].pattern)
        returned = "".join(f"{n}, " for n in names)
        source = (
            f"def matcher({_SUBJECT}):\n"
            f"    match {_SUBJECT}:\n"
            f"        case {pattern}:\n"
            f"            return ({returned})\n"
            f"    return None\n"
        )
        namespace: dict[str, Any] = {}
        exec(compile(source, "<flowkit match>", "exec"), namespace)
        found = _MATCHERS[pattern] = (namespace["matcher"].__code__, names)
    return found


def _match_in(scope: _Scope) -> Callable[[Any, str], tuple[Any, ...] | None]:
    def match(subject: Any, pattern: str) -> tuple[Any, ...] | None:
        """The values a pattern binds (sorted by name), or ``None`` if it does not match."""
        code, _ = _matcher(pattern)
        result: tuple[Any, ...] | None = types.FunctionType(code, scope)(subject)
        return result

    return match


def _constant(value: Any) -> Callable[[_Scope], Any]:
    return lambda scope: value


_HELPERS: dict[str, Callable[[_Scope], Any]] = {
    "__flowkit_matches__": _constant(error_matches),
    "__flowkit_exception__": _constant(rebuild_exception),
    "__flowkit_raise__": _constant(raise_),
    "__flowkit_structure__": _constant(structure),
    "__flowkit_setitem__": _constant(setitem),
    "__flowkit_setattr__": _constant(set_attribute),
    "__flowkit_match__": _match_in,
}

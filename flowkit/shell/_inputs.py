"""Checking a run's inputs before it starts: every parameter given, each of its type, as JSON.

A run's inputs are stored (and cross processes) as JSON, so only values JSON
can hold get in: no NaN or infinity, no int of more digits than Python
converts, no sets or arbitrary objects where the flow declares no type that
brings them back. A declared type is checked strictly (``"1"`` is not an
``int``, ``1`` not a ``str``); a rich type (attrs class, dataclass, enum,
datetime, UUID, Decimal) also takes the plain data it is structured from.
"""

from __future__ import annotations

import collections.abc as abc
import inspect
import math
import types
import typing
from typing import TYPE_CHECKING, Any

from .._errors import InvalidInputs
from .._serde import SerializationError, _key, fits_json, from_data, to_data, too_long

if TYPE_CHECKING:
    from collections.abc import Callable, Mapping

Problem = tuple[str, str]  # (where: an argument, or a path into one; why)

_SEQUENCES = {list, tuple, abc.Sequence, abc.MutableSequence, abc.Collection, abc.Iterable}
_SETS = {set, frozenset, abc.Set, abc.MutableSet}
_MAPPINGS = {dict, abc.Mapping, abc.MutableMapping}
_SCALARS = {bool: "bool", int: "int", float: "float", str: "str"}
_UNCHECKED = (typing.TypeVar, typing.ForwardRef, str)  # hints that name no checkable type


def check_flow_inputs(
    flow_id: str, fn: Callable[..., Any], hints: Mapping[str, Any], inputs: Mapping[str, Any]
) -> None:
    """Raise :class:`InvalidInputs` naming every input that does not fit ``fn``'s parameters."""
    signature = inspect.signature(fn)
    problems = dict(arity_problems(signature, inputs))
    var_keyword = next(
        (p.name for p in signature.parameters.values() if p.kind is p.VAR_KEYWORD), None
    )
    for name, value in inputs.items():
        if name in problems:
            continue
        param = signature.parameters.get(name)
        hint_of = name if param is not None else var_keyword
        found = value_problem(value, hints.get(hint_of or "", Any), name)
        if found is not None:
            problems[found[0]] = found[1]
    if problems:
        raise InvalidInputs(flow_id, problems)


def check_json_inputs(flow_id: str, inputs: Mapping[str, Any]) -> None:
    """Raise :class:`InvalidInputs` naming every input JSON cannot hold (a flow with no
    signature: a ``Flow`` builder or a blueprint)."""
    found = [json_problem(value, name) for name, value in inputs.items()]
    problems = dict(problem for problem in found if problem is not None)
    if problems:
        raise InvalidInputs(flow_id, problems)


def arity_problems(signature: inspect.Signature, inputs: Mapping[str, Any]) -> list[Problem]:
    """Parameters missing from ``inputs``, and inputs no parameter takes."""
    params = signature.parameters
    kinds = {p.kind for p in params.values()}
    named = [p for p in params.values() if p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)]
    problems = [
        (p.name, "required but missing: pass it as a keyword argument")
        for p in named
        if p.default is p.empty and p.name not in inputs and p.kind is not p.POSITIONAL_ONLY
    ]
    problems += [
        (p.name, "positional-only, which a run's inputs cannot fill: drop the '/' after it")
        for p in named
        if p.kind is p.POSITIONAL_ONLY and (p.default is p.empty or p.name in inputs)
    ]
    if inspect.Parameter.VAR_KEYWORD not in kinds:
        takes = ", ".join(p.name for p in named if p.kind is not p.POSITIONAL_ONLY) or "nothing"
        problems += [
            (name, f"not a parameter of the flow (it takes: {takes})")
            for name in inputs
            if name not in params
        ]
    return problems


def value_problem(value: Any, hint: Any, where: str) -> Problem | None:
    """Why ``value`` cannot be passed where ``hint`` is declared, or None if it can."""
    try:
        return _problem(value, hint, where)
    except RecursionError:
        return where, "nested too deeply to store"


def json_problem(value: Any, where: str) -> Problem | None:
    """Why JSON cannot hold ``value`` as it is, or None if it can."""
    try:
        return _json_problem(value, where)
    except RecursionError:
        return where, "nested too deeply to store"


def _problem(value: Any, hint: Any, where: str) -> Problem | None:
    if hint is Any or hint is object or isinstance(hint, _UNCHECKED):
        return _json_problem(value, where)
    supertype = getattr(hint, "__supertype__", None)  # a NewType
    if supertype is not None:
        return _problem(value, supertype, where)
    origin, args = typing.get_origin(hint) or hint, typing.get_args(hint)
    if origin is typing.Annotated:
        return _problem(value, args[0], where)
    if origin is typing.Union or origin is types.UnionType:
        return _union_problem(value, hint, args, where)
    if origin is typing.Literal:
        if any(type(value) is type(option) and value == option for option in args):
            return None
        return where, f"expected one of {', '.join(map(repr, args))}, got {_described(value)}"
    if hint is None or hint is type(None):
        return None if value is None else (where, f"expected None, got {_described(value)}")
    if hint in _SCALARS:
        return _scalar_problem(value, hint, where)
    if origin in _SEQUENCES or origin in _SETS:
        return _collection_problem(value, origin, args, where)
    if origin in _MAPPINGS:
        return _mapping_problem(value, args, where)
    return _structured_problem(value, hint, where)


def _union_problem(value: Any, hint: Any, members: tuple[Any, ...], where: str) -> Problem | None:
    found = [_problem(value, member, where) for member in members]
    if any(problem is None for problem in found):
        return None
    if value is not None and type(None) in members and len(members) == 2:
        return next(problem for problem in found if problem is not None)  # Optional[X]: X's
    return where, f"expected {_hint_name(hint)}, got {_described(value)}"


def _scalar_problem(value: Any, hint: type, where: str) -> Problem | None:
    if hint is bool:
        fits = isinstance(value, bool)
    elif hint is str:
        fits = isinstance(value, str)
    else:
        kinds = int if hint is int else (int, float)
        fits = isinstance(value, kinds) and not isinstance(value, bool)
    if not fits:
        return where, f"expected {_SCALARS[hint]}, got {_described(value)}"
    return _json_problem(value, where)


def _collection_problem(
    value: Any, origin: Any, args: tuple[Any, ...], where: str
) -> Problem | None:
    accepted: tuple[type, ...] = (list, tuple)
    if origin in _SETS:
        accepted = (list, tuple, set, frozenset)
    if not isinstance(value, accepted):
        return where, f"expected {_origin_name(origin)}, got {_described(value)}"
    items = list(typing.cast("abc.Iterable[Any]", value))
    if origin is tuple and args and args[-1] is not Ellipsis:
        if len(items) != len(args):
            return where, f"expected {len(args)} items, got {len(items)}"
        hints = list(args)
    else:
        hints = [args[0] if args else Any] * len(items)
    for index, (item, hint) in enumerate(zip(items, hints, strict=True)):
        found = _problem(item, hint, f"{where}[{index}]")
        if found is not None:
            return found
    return None


def _mapping_problem(value: Any, args: tuple[Any, ...], where: str) -> Problem | None:
    if not isinstance(value, abc.Mapping):
        return where, f"expected a dict, got {_described(value)}"
    key_hint, value_hint = args if len(args) == 2 else (Any, Any)
    for key, item in value.items():
        found = _key_problem(key, key_hint, where)
        if found is None:
            found = _problem(item, value_hint, f"{where}[{_shown(key)}]")
        if found is not None:
            return found
    return None


def _key_problem(key: Any, hint: Any, where: str) -> Problem | None:
    if hint is Any or isinstance(hint, _UNCHECKED):
        return _json_key_problem(key, where)
    found = _problem(key, hint, f"{where} key {_shown(key)}")
    if found is not None:
        return found
    try:
        _key(key)
    except SerializationError as exc:
        return where, str(exc)
    return None


def _structured_problem(value: Any, hint: Any, where: str) -> Problem | None:
    """A rich type (attrs class, dataclass, enum, datetime, ...): an instance, or the
    plain data it is structured from."""
    cls = typing.get_origin(hint) or hint
    if isinstance(cls, type) and isinstance(value, cls):
        return _json_problem(value, where)
    found = _json_problem(value, where)
    if found is not None:
        return found
    try:
        from_data(value, hint)
    except SerializationError:
        return where, f"expected {_hint_name(hint)}, got {_described(value)}"
    return None


def _json_problem(value: Any, where: str) -> Problem | None:
    if value is None or isinstance(value, str | bool):
        return None
    if isinstance(value, int):
        return None if fits_json(value) else (where, too_long(value))
    if isinstance(value, float):
        if math.isfinite(value):
            return None
        return where, f"{value!r} is not a JSON number: pass None or a string instead"
    if isinstance(value, list | tuple):
        return _first(_json_problem(item, f"{where}[{i}]") for i, item in enumerate(value))
    if isinstance(value, abc.Mapping):
        return _first(
            _json_key_problem(key, where) or _json_problem(item, f"{where}[{_shown(key)}]")
            for key, item in value.items()
        )
    if isinstance(value, set | frozenset):
        return where, (
            "a set is not JSON (it would come back as a list): pass a list, or declare "
            "the parameter as set[...]"
        )
    try:
        data = to_data(value)
    except SerializationError as exc:
        return where, str(exc)
    return _json_problem(data, where)


def _json_key_problem(key: Any, where: str) -> Problem | None:
    if isinstance(key, str):
        return None
    return where, (
        f"key {_shown(key)} is not a string: JSON keys are strings, so it would come back "
        f"as one; use string keys, or declare the parameter as dict[{type(key).__name__}, ...]"
    )


def _first(problems: abc.Iterable[Problem | None]) -> Problem | None:
    return next((problem for problem in problems if problem is not None), None)


def _described(value: Any) -> str:
    return f"{type(value).__name__} {_shown(value)}"


def _shown(value: Any) -> str:
    """A short ``repr``: a value in bad input may be huge."""
    if isinstance(value, int) and not fits_json(value):
        return f"<an int of about {int(value.bit_length() / math.log2(10)) + 1} digits>"
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _hint_name(hint: Any) -> str:
    if isinstance(hint, type):
        return hint.__qualname__
    return repr(hint).replace("typing.", "").replace("collections.abc.", "")


def _origin_name(origin: Any) -> str:
    if origin in _SETS:
        return "a set or a list"
    return "a tuple or a list" if origin is tuple else "a list"

"""Compile-time name resolution: what does a name in a flow body refer to?

Names resolve as Python resolves them inside the flow function: flow
variables (dynamic, unknown at compile time), the closure, module globals,
builtins. A closure cell that is still empty (a node defined after the flow in
the enclosing function) or a global not yet defined (a node defined further
down the module) is *unresolved*: the compiler then tries again when the
blueprint is first needed.
"""

from __future__ import annotations

import ast
import builtins
import datetime
import os
import random
import secrets
import time
import uuid
from typing import TYPE_CHECKING, Any, Final

from ._node import NodeDef

if TYPE_CHECKING:
    from collections.abc import Callable


class _Marker:
    def __init__(self, name: str) -> None:
        self.name = name

    def __repr__(self) -> str:
        return self.name


UNRESOLVED: Final = _Marker("UNRESOLVED")
"""Not defined (yet): the compiler retries when the blueprint is first used."""
LOCAL: Final = _Marker("LOCAL")
"""A flow variable: its value exists only while the flow runs."""

_NONDETERMINISTIC_FUNCTIONS: Final[dict[Any, str]] = {
    time.time: "time.time",
    time.time_ns: "time.time_ns",
    time.monotonic: "time.monotonic",
    time.monotonic_ns: "time.monotonic_ns",
    time.perf_counter: "time.perf_counter",
    time.perf_counter_ns: "time.perf_counter_ns",
    time.process_time: "time.process_time",
    uuid.uuid1: "uuid.uuid1",
    uuid.uuid4: "uuid.uuid4",
    os.urandom: "os.urandom",
}
_CLOCK_METHODS: Final = frozenset({"now", "utcnow", "today"})
_NONDETERMINISTIC_MODULES: Final = {random: "random", secrets: "secrets"}
_NONDETERMINISTIC_TEXT: Final = frozenset({
    "time.time", "time.time_ns", "time.monotonic", "time.monotonic_ns", "time.perf_counter",
    "time.perf_counter_ns", "time.process_time", "datetime.now", "datetime.utcnow",
    "datetime.today", "datetime.datetime.now", "datetime.datetime.utcnow", "date.today",
    "datetime.date.today", "uuid.uuid1", "uuid.uuid4", "os.urandom",
})  # fmt: skip


class Resolver:
    """Looks names up in a flow function's closure, module globals and builtins."""

    def __init__(self, fn: Callable[..., Any], local_names: frozenset[str]) -> None:
        code = fn.__code__
        closure = getattr(fn, "__closure__", None) or ()
        self._cells = dict(zip(code.co_freevars, closure, strict=True))
        self._globals: dict[str, Any] = getattr(fn, "__globals__", {})
        self._locals = local_names

    def lookup(self, name: str) -> Any:
        """The object ``name`` refers to, ``LOCAL`` or ``UNRESOLVED``."""
        if name in self._locals:
            return LOCAL
        cell = self._cells.get(name)
        if cell is not None:
            try:
                return cell.cell_contents
            except ValueError:
                return UNRESOLVED
        if name in self._globals:
            return self._globals[name]
        return getattr(builtins, name, UNRESOLVED)

    def resolve(self, node: ast.expr) -> Any:
        """The object a name or dotted name refers to; ``UNRESOLVED`` for anything else."""
        if isinstance(node, ast.Name):
            return self.lookup(node.id)
        if isinstance(node, ast.Attribute):
            base = self.resolve(node.value)
            if base is UNRESOLVED or base is LOCAL:
                return base
            try:
                return getattr(base, node.attr)
            except Exception:  # a missing attribute (or a property that raised)
                return UNRESOLVED
        return UNRESOLVED


def dotted(node: ast.expr) -> str | None:
    """``"a.b.c"`` for a dotted name, else ``None``."""
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        base = dotted(node.value)
        return None if base is None else f"{base}.{node.attr}"
    return None


def nondeterministic(obj: Any, text: str | None) -> str | None:
    """The name of a known non-deterministic function, if ``obj`` is one.

    Resolved objects are recognised by identity (however they were imported);
    names that do not resolve yet are judged by their dotted text.
    """
    if obj is LOCAL:
        return None
    if obj is not UNRESOLVED:
        return _nondeterministic_object(obj)
    if text is None:
        return None
    if text in _NONDETERMINISTIC_TEXT or text.startswith(("random.", "secrets.")):
        return text
    return None


def _nondeterministic_object(obj: Any) -> str | None:
    try:
        known = _NONDETERMINISTIC_FUNCTIONS.get(obj)
    except TypeError:  # unhashable
        known = None
    if known is not None:
        return known
    owner = getattr(obj, "__self__", None)
    name = getattr(obj, "__name__", "")
    if isinstance(owner, type) and issubclass(owner, datetime.date) and name in _CLOCK_METHODS:
        return f"{owner.__name__}.{name}"
    if isinstance(owner, random.Random):
        return f"random.{name}"
    module = getattr(obj, "__module__", None)
    for mod, mod_name in _NONDETERMINISTIC_MODULES.items():
        if module == mod.__name__ or obj is mod:
            return f"{mod_name}.{name}" if name else mod_name
    return None


def callee_kind(obj: Any) -> str | None:
    """``"node"``, ``"flow"``, ``"primitive:<name>"`` or ``None`` for other objects."""
    if isinstance(obj, NodeDef):
        return "node"
    if getattr(obj, "__flowkit_flowdef__", False) is True:
        return "flow"
    primitive = getattr(obj, "__flowkit_primitive__", None)
    if isinstance(primitive, str):
        return f"primitive:{primitive}"
    return None

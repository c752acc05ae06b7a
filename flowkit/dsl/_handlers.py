"""``@flow_fn.query`` and ``@flow_fn.update``: the handlers a flow declares for its runs."""

from __future__ import annotations

import inspect
from typing import TYPE_CHECKING, Any, TypeVar

from ..shell._handlers import Update
from ._node import Arguments

if TYPE_CHECKING:
    from collections.abc import Callable

F = TypeVar("F", bound="Callable[..., Any]")


class Handlers:
    """A flow's queries and updates, by name (shared with every shell that runs it)."""

    def __init__(self, flow_id: str) -> None:
        self.flow_id = flow_id
        self.queries: dict[str, Callable[[dict[str, Any]], Any]] = {}
        self.updates: dict[str, Update] = {}

    def query(self, fn: Any, name: str | None) -> None:
        check = Arguments.of_decorator(f"@{self.flow_id}.query", fn)
        name = self._name(check, fn, name, arity=1, shape="def progress(vars) -> dict")
        self._unique(check, name, self.queries)
        self.queries[name] = fn

    def update(self, fn: Any, name: str | None, validator: Any) -> None:
        check = Arguments.of_decorator(f"@{self.flow_id}.update", fn)
        shape = "def add_item(vars, item) -> int"
        name = self._name(check, fn, name, arity=2, shape=shape)
        if validator is not None:
            _plain(check, "validator", validator, 2, "def check_item(vars, item) -> None")
        self._unique(check, name, self.updates)
        self.updates[name] = Update(name, fn, validator)

    @staticmethod
    def _name(check: Arguments, fn: Any, name: Any, *, arity: int, shape: str) -> str:
        _plain(check, "the decorated object", fn, arity, shape)
        chosen = check.optional_text("name", name, example="name='cart'") or fn.__name__
        assert isinstance(chosen, str)
        return chosen

    @staticmethod
    def _unique(check: Arguments, name: str, taken: dict[str, Any]) -> None:
        if name in taken:
            check.refuse("name", name, f"a name not used yet (taken: {sorted(taken)})")


def _plain(check: Arguments, what: str, fn: Any, arity: int, shape: str) -> None:
    """Refuse anything but a plain (not async) function taking ``arity`` arguments."""
    if not inspect.isfunction(fn) or inspect.iscoroutinefunction(fn):
        check.refuse(what, fn, f"a plain def function (not async), e.g. {shape}")
    try:
        inspect.signature(fn).bind(*range(arity))
    except TypeError:
        check.refuse(what, fn, f"a function of {arity} argument(s), e.g. {shape}")

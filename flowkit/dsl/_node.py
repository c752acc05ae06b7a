"""``@node``: mark a function (or ``flowkit.Node`` class) as a unit of work."""

from __future__ import annotations

import functools
import inspect
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any, Generic, ParamSpec, TypeVar, overload

from .._durations import Backoff, Duration, to_seconds

if TYPE_CHECKING:
    from collections.abc import Callable

P = ParamSpec("P")
R = TypeVar("R")


class NodeDef(Generic[P, R]):
    """A ``@node`` function: still directly callable, plus the options flows use.

    ``name`` is the base of the node's id in compiled flows; ``registry_name``
    is how blueprints refer to the implementation.
    """

    def __init__(
        self,
        fn: Callable[P, R],
        *,
        name: str | None = None,
        retries: int = 0,
        backoff: Backoff | None = None,
        timeout: Duration | None = None,
        fallback: Callable[..., Any] | None = None,
    ) -> None:
        if not callable(fn):
            raise TypeError(f"{fn!r} is not callable")
        if retries < 0:
            raise ValueError(f"retries must be 0 or more, got {retries}")
        self.fn = fn
        self.name = name or getattr(fn, "__name__", type(fn).__name__)
        qualname = getattr(fn, "__qualname__", None) or type(fn).__qualname__
        self.registry_name = f"{module_name(fn)}.{qualname if name is None else name}"
        self.__flowkit_impl__ = fn
        self.__flowkit_options__: dict[str, Any] = {
            "retries": retries,
            "backoff": backoff,
            "timeout": None if timeout is None else to_seconds(timeout),
            "fallback": fallback,
        }
        self.is_async = inspect.iscoroutinefunction(fn)
        functools.update_wrapper(self, fn)

    @property
    def options(self) -> dict[str, Any]:
        return dict(self.__flowkit_options__)

    def __call__(self, *args: P.args, **kwargs: P.kwargs) -> R:
        return self.fn(*args, **kwargs)

    def __repr__(self) -> str:
        return f"<node {self.name}>"


@overload
def node(fn: Callable[P, R], /) -> NodeDef[P, R]: ...


@overload
def node(
    *,
    name: str | None = None,
    retries: int = 0,
    backoff: Backoff | None = None,
    timeout: Duration | None = None,
    fallback: Callable[..., Any] | None = None,
) -> Callable[[Callable[P, R]], NodeDef[P, R]]: ...


def node(
    fn: Callable[P, R] | None = None,
    /,
    *,
    name: str | None = None,
    retries: int = 0,
    backoff: Backoff | None = None,
    timeout: Duration | None = None,
    fallback: Callable[..., Any] | None = None,
) -> NodeDef[P, R] | Callable[[Callable[P, R]], NodeDef[P, R]]:
    """Declare a node; usable bare (``@node``) or called (``@node(retries=3)``).

    >>> @node(retries=3, timeout="30s")
    ... async def fetch_order(order_id: str) -> dict:
    ...     return {"id": order_id}
    """

    def wrap(target: Callable[P, R]) -> NodeDef[P, R]:
        return NodeDef(
            target,
            name=name,
            retries=retries,
            backoff=backoff,
            timeout=timeout,
            fallback=fallback,
        )

    return wrap(fn) if fn is not None else wrap


MAIN = "__main__"


def module_name(obj: Any) -> str:
    """The name ``obj``'s module is imported by, even when it runs as ``__main__``.

    A script started with ``python shop.py`` or ``python -m shop`` defines its
    functions in ``__main__``, while workers import the same file as ``shop``:
    node names (and so blueprint digests) must not depend on which. Stays
    ``"__main__"`` when no importable name exists (a REPL, a notebook, ``python -c``).
    """
    target = getattr(obj, "__flowkit_impl__", obj)
    module = getattr(target, "__module__", None) or type(target).__module__
    if module != MAIN:
        return str(module)
    return main_module_name() or MAIN


def main_module_name() -> str | None:
    """The importable name of the ``__main__`` module, if it has one."""
    main = sys.modules.get(MAIN)
    spec = getattr(main, "__spec__", None)
    if spec is not None and spec.name and spec.name != MAIN:
        return str(spec.name)  # python -m package.module
    path = getattr(main, "__file__", None)
    return _module_at(Path(path)) if path else None


def _module_at(path: Path) -> str | None:
    """The dotted name ``path`` (a .py file) is importable by from ``sys.path``, if any."""
    if path.suffix != ".py":
        return None
    file = path.resolve()
    for entry in sys.path:
        try:
            relative = file.relative_to(Path(entry or os.getcwd()).resolve())
        except (ValueError, OSError):
            continue
        parts = relative.with_suffix("").parts
        if parts and all(part.isidentifier() for part in parts):
            return ".".join(parts)
    return None

"""``@node``: mark a function (or ``flowkit.Node`` class) as a unit of work."""

from __future__ import annotations

import functools
import inspect
from typing import TYPE_CHECKING, Any, Generic, ParamSpec, TypeVar, overload

from .._durations import Backoff, Duration, to_seconds
from ._builder import implementation_name

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
        if retries < 0:
            raise ValueError(f"retries must be 0 or more, got {retries}")
        self.fn = fn
        self.name = name or getattr(fn, "__name__", type(fn).__name__)
        self.registry_name = (
            implementation_name(fn) if name is None else (f"{getattr(fn, '__module__', '')}.{name}")
        )
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

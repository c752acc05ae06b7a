"""Calling node implementations: async and sync functions and class nodes."""

from __future__ import annotations

import functools
import inspect
from collections.abc import Awaitable, Callable
from typing import Any

import anyio.to_thread

from ._context import NodeContext
from ._structure import structurer

Invoker = Callable[[tuple[Any, ...], dict[str, Any], NodeContext], Awaitable[Any]]


class Node:
    """A class-based node with Flowcraft's lifecycle: ``prep`` -> ``exec`` -> ``post``.

    Each method may be sync or async. ``prep`` receives the node's arguments
    and returns what ``exec`` works on; ``post`` turns ``exec``'s result into the
    node's output; ``fallback``, when overridden, supplies the output once the
    retries are used up.

    >>> class Double(Node):
    ...     async def exec(self, prepared):
    ...         return prepared * 2
    """

    __flowkit_node__ = True  # how the core recognises class nodes without importing this

    def prep(self, ctx: NodeContext, *args: Any, **kwargs: Any) -> Any:
        """Gather what ``exec`` needs; by default the single argument (or all kwargs)."""
        if len(args) == 1 and not kwargs:
            return args[0]
        return kwargs if not args else (args, kwargs)

    def exec(self, prepared: Any) -> Any:
        """Do the work (the part that is retried and timed out)."""
        raise NotImplementedError(f"{type(self).__name__} must implement exec(prepared)")

    def post(self, ctx: NodeContext, result: Any) -> Any:
        """Turn ``exec``'s result into the node's output; by default unchanged."""
        return result

    def fallback(self, ctx: NodeContext, error: BaseException) -> Any:
        """Output to use once the retries are exhausted (only when overridden)."""
        raise error


async def _maybe_await(value: Any) -> Any:
    if inspect.isawaitable(value):
        return await value
    return value


def has_fallback(impl: Any) -> bool:
    """Whether a class node overrides ``fallback``."""
    cls = impl if isinstance(impl, type) else type(impl)
    return issubclass(cls, Node) and cls.fallback is not Node.fallback


class ClassFallback:
    """The registry entry for a class node's ``fallback(ctx, error)``."""

    def __init__(self, impl: type[Node] | Node) -> None:
        self._factory: Callable[[], Node] = impl if isinstance(impl, type) else (lambda: impl)

    async def __call__(self, *args: Any, **kwargs: Any) -> Any:
        from ._context import context

        ctx = context()
        error = ctx.error or RuntimeError(f"node {ctx.node_id!r} used up its attempts")
        return await _maybe_await(self._factory().fallback(ctx, error))


def make_invoker(impl: Any) -> Invoker:
    """An ``invoke(args, kwargs, ctx)`` coroutine function for any node implementation.

    Arguments are structured by the implementation's type hints (see ``_structure``).
    """
    target = getattr(impl, "__flowkit_impl__", impl)
    if isinstance(target, type) and issubclass(target, Node):
        return _class_invoker(target)
    if isinstance(target, Node):
        return _class_invoker(lambda: target)
    if not callable(target):
        raise TypeError(f"{impl!r} is not callable and cannot be a node implementation")
    structure = structurer(target)
    if inspect.iscoroutinefunction(target) or inspect.iscoroutinefunction(
        getattr(target, "__call__", None)  # noqa: B004 - async callable objects
    ):
        # These return the implementation's own coroutine: no frame of ours in between.
        if structure is None:

            def invoke_async(args: tuple[Any, ...], kwargs: dict[str, Any], ctx: Any) -> Any:
                return target(*args, **kwargs)

            return invoke_async

        def invoke_structured(args: tuple[Any, ...], kwargs: dict[str, Any], ctx: Any) -> Any:
            args, kwargs = structure(args, kwargs)
            return target(*args, **kwargs)

        return invoke_structured

    async def invoke_sync(args: tuple[Any, ...], kwargs: dict[str, Any], ctx: Any) -> Any:
        if structure is not None:
            args, kwargs = structure(args, kwargs)
        return await anyio.to_thread.run_sync(functools.partial(target, *args, **kwargs))

    return invoke_sync


def _class_invoker(factory: Callable[[], Node]) -> Invoker:
    async def invoke_class(args: tuple[Any, ...], kwargs: dict[str, Any], ctx: NodeContext) -> Any:
        instance = factory()
        prepared = await _maybe_await(instance.prep(ctx, *args, **kwargs))
        result = await _maybe_await(instance.exec(prepared))
        return await _maybe_await(instance.post(ctx, result))

    return invoke_class

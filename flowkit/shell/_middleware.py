"""Middleware: hooks around every node execution, in every shell."""

from __future__ import annotations

import functools
from collections.abc import Awaitable, Callable, Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ._context import NodeContext

CallNext = Callable[[], Awaitable[Any]]


class Middleware:
    """Subclass and override any of the three hooks.

    Order: every ``before_node`` in list order; then the ``around_node`` hooks,
    the first in the list outermost; the node (prep -> exec -> post); then every
    ``after_node`` in list order. A hook that raises fails the node like the
    node itself would (and it is retried like it).

    >>> import time
    >>> class Timing(Middleware):
    ...     async def around_node(self, ctx, call_next):
    ...         start = time.perf_counter()
    ...         result = await call_next()
    ...         ctx.log.info("timed", seconds=time.perf_counter() - start)
    ...         return result
    """

    async def before_node(self, ctx: NodeContext) -> None:
        """Called before the node runs."""

    async def after_node(self, ctx: NodeContext, result: Any) -> None:
        """Called after the node returned ``result``."""

    async def around_node(self, ctx: NodeContext, call_next: CallNext) -> Any:
        """Wrap the node: call ``await call_next()`` and return its result."""
        return await call_next()

    def on_run_start(
        self, run_id: str, flow: str, traceparent: str | None, parent: str | None = None
    ) -> str | None:
        """Called as a run is created, in the process creating it; returns its traceparent.

        ``traceparent`` is the caller's trace context (a child run's: its parent
        run's). The value returned is stored with the run and is every node's
        ``ctx.traceparent``. Synchronous and must not block.
        """
        return traceparent


def _overrides(mw: Middleware, name: str) -> bool:
    return getattr(type(mw), name) is not getattr(Middleware, name)


class Pipeline:
    """Middleware list prepared once: only overridden hooks are called."""

    def __init__(self, middleware: Sequence[Middleware]) -> None:
        self.before = [m.before_node for m in middleware if _overrides(m, "before_node")]
        self.after = [m.after_node for m in middleware if _overrides(m, "after_node")]
        self.around = [m.around_node for m in middleware if _overrides(m, "around_node")]
        self.empty = not (self.before or self.after or self.around)
        self.run_start = [m.on_run_start for m in middleware if _overrides(m, "on_run_start")]

    def run_traceparent(
        self, run_id: str, flow: str, traceparent: str | None, parent: str | None = None
    ) -> str | None:
        """The traceparent to store with a new run: every ``on_run_start``, in list order."""
        for hook in self.run_start:
            traceparent = hook(run_id, flow, traceparent, parent)
        return traceparent

    async def run(self, ctx: NodeContext, call: CallNext) -> Any:
        for hook in self.before:
            await hook(ctx)
        for around in reversed(self.around):
            call = functools.partial(around, ctx, call)
        result = await call()
        for after in self.after:
            await after(ctx, result)
        return result

"""``flow``: the ``@flow`` decorator and the primitives a flow body awaits.

Inside a compiled flow, ``await flow.sleep(...)`` and friends are never
called: the compiler turns them into nodes. Called as plain Python (running
``FlowDef.fn`` or a flow directly), ``gather``, ``first`` and ``map`` really
run the calls concurrently with anyio, so a flow can be checked against its
compiled form; ``sleep``, ``wait`` and ``webhook`` need a run and say so.
"""

from __future__ import annotations

import inspect
from typing import TYPE_CHECKING, Any, NoReturn, ParamSpec, TypeVar, overload

import anyio

from ._flowdef import FlowDef

if TYPE_CHECKING:
    from collections.abc import Callable, Coroutine, Iterable

    from .._durations import Duration
    from ..shell._limits import Limit

P = ParamSpec("P")
R = TypeVar("R")
F = TypeVar("F", bound="Callable[..., Any]")

_NEEDS_RUN = (
    "flow.{name}() only works inside a flowkit run: run the flow with "
    "`await my_flow.run(...)` (or a Runtime) instead of calling it as plain Python"
)


def _primitive(name: str) -> Callable[[F], F]:
    def mark(fn: F) -> F:
        fn.__flowkit_primitive__ = name  # type: ignore[attr-defined]
        return fn

    return mark


@_primitive("sleep")
async def sleep(duration: Duration, *, name: str | None = None) -> None:
    """A durable timer: the run pauses for ``duration`` without holding a task."""
    raise RuntimeError(_NEEDS_RUN.format(name="sleep"))


@_primitive("patched")
def patched(patch_id: str) -> bool:
    """Whether this run takes the code of patch ``patch_id``: the whole condition of an ``if``.

    A run decides once, at its start: runs started by code that already had
    the patch take the ``if`` body, runs started before it the ``else``
    block. Called as plain Python it is ``True`` (the new code).
    """
    return True


@_primitive("deprecate_patch")
def deprecate_patch(patch_id: str) -> None:
    """Mark patch ``patch_id`` as the only path left (its ``else`` block removed).

    Its runs still know the patch; a run started before the patch is refused
    by this code. Remove the call once no run started with it is left.
    """


@_primitive("continue_as_new")
def continue_as_new(**inputs: Any) -> NoReturn:
    """End the run and start a fresh run of the same flow with ``inputs``: a statement
    (``flow.continue_as_new(n=n)`` or ``return flow.continue_as_new(n=n)``), not awaited.

    The run completes with no output and ``continued_as`` naming the new run, whose
    id is the first run's with ``:<n>`` added; ``result()`` on any run of the chain
    waits for the last. A long-lived loop (polling, an entity) calls it every few
    hundred iterations so that each run's history stays bounded.
    """
    raise RuntimeError(_NEEDS_RUN.format(name="continue_as_new"))


@_primitive("wait")
async def wait(name: str, *, timeout: Duration | None = None, type: Any = None) -> Any:
    """A durable wait for the signal ``name``; returns its payload (structured into ``type``)."""
    raise RuntimeError(_NEEDS_RUN.format(name="wait"))


@_primitive("webhook")
async def webhook(
    path: str, *, secret: str, name: str | None = None, timeout: Duration | None = None
) -> Any:
    """A wait resumed by a signed ``POST {base}{path}/{run_id}``; returns the JSON body."""
    raise RuntimeError(_NEEDS_RUN.format(name="webhook"))


@_primitive("gather")
async def gather(*calls: Any) -> tuple[Any, ...]:
    """Run the calls concurrently; their results as a tuple, in order.

    The first failure cancels the others and is raised.
    """
    results: list[Any] = [None] * len(calls)
    errors: list[Exception] = []

    async def run(index: int, call: Any) -> None:
        try:
            results[index] = await _resolve(call)
        except Exception as exc:
            errors.append(exc)
            tg.cancel_scope.cancel()

    async with anyio.create_task_group() as tg:
        for index, call in enumerate(calls):
            tg.start_soon(run, index, call)
    if errors:
        raise errors[0]
    return tuple(results)


@_primitive("first")
async def first(*calls: Any) -> Any:
    """Run the calls concurrently; the first success wins and the rest are cancelled.

    Raises the first failure when every call fails.
    """
    if not calls:
        raise ValueError("flow.first() needs at least one call")
    winners: list[Any] = []
    errors: list[Exception] = []

    async def run(call: Any) -> None:
        try:
            value = await _resolve(call)
        except Exception as exc:
            errors.append(exc)
            return
        if not winners:
            winners.append(value)
            tg.cancel_scope.cancel()

    async with anyio.create_task_group() as tg:
        for call in calls:
            tg.start_soon(run, call)
    if winners:
        return winners[0]
    raise errors[0]


@_primitive("map")
async def map(
    node: Callable[[Any], Any], items: Iterable[Any], *, concurrency: int = 10
) -> list[Any]:
    """``node(item)`` for every item, at most ``concurrency`` at a time; results in input order."""
    values = list(items)
    results: list[Any] = [None] * len(values)
    errors: list[Exception] = []
    limiter = anyio.CapacityLimiter(max(1, concurrency))

    async def run(index: int) -> None:
        async with limiter:
            try:
                results[index] = await _resolve(node(values[index]))
            except Exception as exc:
                errors.append(exc)
                tg.cancel_scope.cancel()

    async with anyio.create_task_group() as tg:
        for index in range(len(values)):
            tg.start_soon(run, index)
    if errors:
        raise errors[0]
    return results


async def _resolve(value: Any) -> Any:
    """Await ``value`` if it is awaitable (async nodes), else return it (sync nodes)."""
    if inspect.isawaitable(value):
        return await value
    return value


_PRIMITIVES: dict[str, Callable[..., Any]] = {
    "sleep": sleep, "wait": wait, "webhook": webhook, "gather": gather, "first": first, "map": map,
    "patched": patched, "deprecate_patch": deprecate_patch, "continue_as_new": continue_as_new,
}  # fmt: skip


def primitive_signature(name: str) -> inspect.Signature:
    """The signature of ``flow.<name>`` (the compiler binds calls against it)."""
    return inspect.signature(_PRIMITIVES[name])


class FlowDecorator:
    """``@flow`` / ``@flow(id=..., version=..., schedule=..., timezone=...)``, and the
    namespace of flow primitives.

    >>> @flow
    ... async def greet(name: str) -> str:
    ...     return f"hello {name}"
    >>> greet.blueprint.id
    'greet'
    """

    sleep = staticmethod(sleep)
    wait = staticmethod(wait)
    webhook = staticmethod(webhook)
    gather = staticmethod(gather)
    first = staticmethod(first)
    map = staticmethod(map)
    patched = staticmethod(patched)
    deprecate_patch = staticmethod(deprecate_patch)
    continue_as_new = staticmethod(continue_as_new)

    @overload
    def __call__(self, fn: Callable[P, Coroutine[Any, Any, R]], /) -> FlowDef[P, R]: ...

    @overload
    def __call__(
        self,
        fn: None = None,
        /,
        *,
        id: str | None = None,
        version: int = 1,
        schedule: str | None = None,
        timezone: str | None = None,
        concurrency: Limit | None = None,
    ) -> Callable[[Callable[P, Coroutine[Any, Any, R]]], FlowDef[P, R]]: ...

    def __call__(
        self,
        fn: Callable[P, Coroutine[Any, Any, R]] | None = None,
        /,
        *,
        id: str | None = None,
        version: int = 1,
        schedule: str | None = None,
        timezone: str | None = None,
        concurrency: Limit | None = None,
    ) -> FlowDef[P, R] | Callable[[Callable[P, Coroutine[Any, Any, R]]], FlowDef[P, R]]:
        """``schedule`` (a cron expression, in ``timezone``) makes a
        :class:`~flowkit.Schedule` with the flow's id and no inputs: a Runtime or Worker
        the flow is registered on starts a run at each tick. ``concurrency`` (a
        :class:`~flowkit.Limit`) caps how many runs run at once per value of the input
        ``key``, across every worker; a run started while its pool is full is
        ``queued`` until a slot frees, in order of arrival."""

        def wrap(target: Callable[P, Coroutine[Any, Any, R]]) -> FlowDef[P, R]:
            return FlowDef(
                target,
                id=id,
                version=version,
                schedule=schedule,
                timezone=timezone,
                concurrency=concurrency,
            )

        return wrap(fn) if fn is not None else wrap

    def __repr__(self) -> str:
        return "flowkit.flow"


flow = FlowDecorator()
"""The ``@flow`` decorator; also ``flow.sleep``, ``flow.wait``, ``flow.webhook``,
``flow.gather``, ``flow.first``, ``flow.map``, ``flow.patched``,
``flow.deprecate_patch`` and ``flow.continue_as_new``."""

__all__ = ["FlowDecorator", "flow"]

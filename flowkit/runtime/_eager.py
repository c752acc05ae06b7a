"""Run a coroutine in the current task and find out whether it ever blocks.

Spawning a task per node costs more than a trivial node itself (about 15 µs
on anyio). The runtime instead runs ready nodes one after another in the
current task; the moment one actually blocks (yields to the event loop), the
remaining ready nodes are handed to a new task, so true concurrency is kept
while non-blocking nodes cost no task at all. The coroutine never changes task,
so cancel scopes and context variables behave exactly as if it were awaited.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Generator
from typing import Any, TypeVar

T = TypeVar("T")


class NoticeBlocking(Awaitable[T]):
    """``await NoticeBlocking(coro, on_block)``: like ``await coro``, but calls
    ``on_block()`` once, just before ``coro`` first yields to the event loop."""

    __slots__ = ("_awaitable", "_on_block")

    def __init__(self, awaitable: Awaitable[T], on_block: Callable[[], None]) -> None:
        self._awaitable = awaitable
        self._on_block = on_block

    def __await__(self) -> Generator[Any, Any, T]:
        inner = self._awaitable.__await__()
        try:
            yielded = inner.send(None)
        except StopIteration as done:
            result: T = done.value
            return result
        self._on_block()
        while True:  # the rest of PEP 380's `yield from`, by hand
            try:
                sent = yield yielded
            except GeneratorExit:
                inner.close()
                raise
            except BaseException as exc:
                try:
                    yielded = inner.throw(exc)
                except StopIteration as done:
                    result = done.value
                    return result
            else:
                try:
                    yielded = inner.send(sent)
                except StopIteration as done:
                    result = done.value
                    return result


class Resume(Awaitable[T]):
    """``await Resume(coro, first)``: continue a coroutine already stepped by hand.

    ``first`` is what its first ``send(None)`` yielded; from there this is
    ``yield from`` written out, in the task that started the coroutine.
    """

    __slots__ = ("_coro", "_first")

    def __init__(self, coro: Any, first: Any) -> None:
        self._coro = coro
        self._first = first

    def __await__(self) -> Generator[Any, Any, T]:
        coro, yielded = self._coro, self._first
        while True:
            try:
                sent = yield yielded
            except GeneratorExit:
                coro.close()
                raise
            except BaseException as exc:
                try:
                    yielded = coro.throw(exc)
                except StopIteration as done:
                    result: T = done.value
                    return result
            else:
                try:
                    yielded = coro.send(sent)
                except StopIteration as done:
                    result = done.value
                    return result

"""``MemoryTransport``: queues in this process's memory (the reference transport).

Deliveries not settled within ``visibility_timeout`` come back, as from a real
broker; ``dead_letter`` keeps messages in :attr:`MemoryTransport.dead_letters`.
Available messages are delivered highest ``priority`` first, in the order they
became available within a priority.
"""

from __future__ import annotations

import math
import time
from collections import deque
from typing import TYPE_CHECKING, Any

import anyio
import attrs

from .._errors import ConfigurationError, TransportError
from ..backends._options import redact, split_options

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Mapping


@attrs.define(eq=False)  # queues hold messages by identity
class _Message:
    body: bytes
    headers: dict[str, str]
    key: str | None
    attempt: int = 0
    visible_at: float = 0.0
    token: int = 0
    priority: int = 0


class _Ready:
    """Available messages: one FIFO per priority, the highest served first."""

    def __init__(self) -> None:
        self._levels: dict[int, deque[_Message]] = {}

    def append(self, message: _Message) -> None:
        level = self._levels.get(message.priority)
        if level is None:
            level = self._levels[message.priority] = deque()
            self._levels = dict(sorted(self._levels.items(), reverse=True))
        level.append(message)

    def popleft(self) -> _Message:
        for level in self._levels.values():
            if level:
                return level.popleft()
        raise IndexError("no message is available")

    def remove(self, message: _Message) -> None:
        self._levels[message.priority].remove(message)

    def __contains__(self, message: object) -> bool:
        return any(message in level for level in self._levels.values())

    def __len__(self) -> int:
        return sum(len(level) for level in self._levels.values())


@attrs.define
class DeadLetter:
    queue: str
    body: bytes
    headers: dict[str, str]
    reason: str


class _Queue:
    def __init__(self) -> None:
        self.ready = _Ready()
        self.later: list[_Message] = []  # delayed or in flight, by visible_at
        self.changed = anyio.Event()

    def wake(self) -> None:
        self.changed.set()
        self.changed = anyio.Event()


class MemoryDelivery:
    """A delivery from :class:`MemoryTransport`."""

    def __init__(self, transport: MemoryTransport, queue: str, message: _Message) -> None:
        self._transport = transport
        self._queue = queue
        self._message = message
        self._token = message.token
        self.body = message.body
        self.headers: Mapping[str, str] = dict(message.headers)
        self.key = message.key
        self.attempt = message.attempt

    def _check(self) -> None:
        if self._message.token != self._token:
            raise TransportError(
                f"delivery on {self._queue!r} is no longer held (settled, or its visibility "
                "timeout ran out and it was redelivered); extend() long handlers"
            )

    async def ack(self) -> None:
        self._check()
        self._message.token += 1
        self._transport._remove(self._queue, self._message)

    async def nack(self, requeue_after: float | None = None) -> None:
        self._check()
        self._message.token += 1
        self._transport._requeue(self._queue, self._message, requeue_after or 0.0)

    async def extend(self, seconds: float) -> None:
        self._check()
        self._transport._hold(self._queue, self._message, seconds)

    async def dead_letter(self, reason: str) -> None:
        self._check()
        self._message.token += 1
        self._transport._remove(self._queue, self._message)
        self._transport.dead_letters.append(
            DeadLetter(self._queue, self.body, dict(self.headers), reason)
        )


class MemoryTransport:
    """In-process queues with visibility timeouts, delays and a dead-letter list."""

    in_process = True  # every worker and client on it shares this process

    def __init__(self, *, visibility_timeout: float = 30.0) -> None:
        self.visibility_timeout = visibility_timeout
        self.dead_letters: list[DeadLetter] = []
        self._queues: dict[str, _Queue] = {}
        self._closed = False

    @classmethod
    def from_url(cls, url: str = "memory://", **options: Any) -> MemoryTransport:
        """Build from ``memory://``, optionally ``memory://?visibility_timeout=5``.

        Query options: ``visibility_timeout`` (float seconds); any other is
        refused. Keyword ``options`` override the query.

        >>> MemoryTransport.from_url("memory://?visibility_timeout=5").visibility_timeout
        5.0
        """
        if not url.lower().startswith("memory://"):
            raise ConfigurationError(f"not a memory transport URL: {redact(url)!r}; use memory://")
        _, found = split_options(url, {"visibility_timeout": float})
        return cls(**(found | options))

    def _queue(self, name: str) -> _Queue:
        queue = self._queues.get(name)
        if queue is None:
            queue = self._queues[name] = _Queue()
        return queue

    async def send(
        self,
        queue: str,
        body: bytes,
        *,
        key: str | None = None,
        headers: Mapping[str, str] | None = None,
        delay: float | None = None,
        priority: int | None = None,
    ) -> None:
        if self._closed:
            raise TransportError("MemoryTransport is closed")
        message = _Message(bytes(body), dict(headers or {}), key, priority=priority or 0)
        q = self._queue(queue)
        if delay:
            message.visible_at = time.monotonic() + delay
            q.later.append(message)
        else:
            q.ready.append(message)
        q.wake()

    async def receive(self, queue: str) -> AsyncIterator[MemoryDelivery]:
        q = self._queue(queue)
        while not self._closed:
            message = self._next(q)
            if message is None:
                changed = q.changed
                with anyio.move_on_after(self._wait_time(q)):
                    await changed.wait()
                continue
            message.attempt += 1
            message.token += 1
            message.visible_at = time.monotonic() + self.visibility_timeout
            q.later.append(message)
            yield MemoryDelivery(self, queue, message)

    def _next(self, q: _Queue) -> _Message | None:
        now = time.monotonic()
        due = [m for m in q.later if m.visible_at <= now]
        for message in due:
            q.later.remove(message)
            q.ready.append(message)
        return q.ready.popleft() if q.ready else None

    def _wait_time(self, q: _Queue) -> float:
        if not q.later:
            return math.inf
        return max(0.0, min(m.visible_at for m in q.later) - time.monotonic())

    def _remove(self, queue: str, message: _Message) -> None:
        q = self._queue(queue)
        if message in q.later:
            q.later.remove(message)
        if message in q.ready:
            q.ready.remove(message)

    def _hold(self, queue: str, message: _Message, seconds: float) -> None:
        """Keep ``message`` invisible for ``seconds`` (wherever it is now)."""
        self._remove(queue, message)
        message.visible_at = time.monotonic() + seconds
        self._queue(queue).later.append(message)

    def _requeue(self, queue: str, message: _Message, after: float) -> None:
        q = self._queue(queue)
        if after <= 0:
            self._remove(queue, message)
            q.ready.append(message)
        else:
            self._hold(queue, message, after)
        q.wake()

    def pending(self, queue: str) -> int:
        """Messages waiting or in flight on ``queue`` (for tests and metrics)."""
        q = self._queue(queue)
        return len(q.ready) + len(q.later)

    async def close(self) -> None:
        self._closed = True
        for q in self._queues.values():
            q.wake()

    def __repr__(self) -> str:
        return "MemoryTransport()"

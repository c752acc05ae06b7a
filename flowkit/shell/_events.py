"""Observable events (``workflow:start``, ``node:finish``, ...) and the event bus."""

from __future__ import annotations

import math
from collections.abc import AsyncIterator, Callable, Collection
from typing import TYPE_CHECKING, Any, Final

import anyio
import attrs

if TYPE_CHECKING:
    from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream

EVENT_TYPES: Final = frozenset(
    {
        "workflow:start",
        "workflow:finish",
        "workflow:stall",
        "workflow:pause",
        "workflow:resume",
        "workflow:cancel",
        "workflow:retry",
        "workflow:queue",
        "workflow:admit",
        "node:start",
        "node:finish",
        "node:error",
        "node:retry",
        "node:fallback",
        "node:complete",
        "node:deferred",
        "node:heartbeat",
        "context:change",
        "batch:start",
        "batch:finish",
        "timer:set",
        "timer:fire",
        "signal:receive",
        "message:dead_letter",
    }
)


@attrs.frozen
class Event:
    """One thing that happened to a run; ``type`` is one of ``EVENT_TYPES``.

    ``flow`` (the run's blueprint id) and ``traceparent`` (the run's W3C trace
    context) let subscribers label and trace events without loading the run.
    """

    type: str
    run_id: str
    timestamp: float
    node_id: str | None = None
    attempt: int | None = None
    duration: float | None = None
    data: Any = None
    flow: str | None = None
    traceparent: str | None = None


Handler = Callable[[Event], object]


class EventBus:
    """Fan events out to subscribers and streams; costs nothing with no listeners.

    >>> bus = EventBus()
    >>> seen = []
    >>> unsubscribe = bus.subscribe(seen.append, types={"node:finish"})
    """

    def __init__(self) -> None:
        self._handlers: list[tuple[Handler, frozenset[str] | None]] = []
        self._streams: list[tuple[MemoryObjectSendStream[Event], frozenset[str] | None]] = []

    @property
    def active(self) -> bool:
        """Whether anyone listens (shells skip building events otherwise)."""
        return bool(self._handlers or self._streams)

    def subscribe(
        self, handler: Handler, types: Collection[str] | None = None
    ) -> Callable[[], None]:
        """Call ``handler(event)`` for each event (of ``types``); returns an unsubscribe."""
        entry = (handler, _types(types))
        self._handlers.append(entry)
        return lambda: self._handlers.remove(entry) if entry in self._handlers else None

    def stream(self, types: Collection[str] | None = None) -> EventStream:
        """An async iterator of events from now on; close it (or leave ``async with``) to stop."""
        chosen = _types(types)  # validate before anything needs closing
        send, receive = anyio.create_memory_object_stream[Event](math.inf)
        entry = (send, chosen)
        self._streams.append(entry)
        return EventStream(receive, lambda: self._drop_stream(entry))

    def _drop_stream(self, entry: tuple[MemoryObjectSendStream[Event], Any]) -> None:
        if entry in self._streams:
            self._streams.remove(entry)
            entry[0].close()

    def emit_for(
        self,
        run_id: str,
        type_: str,
        header: Any,
        node_id: str | None = None,
        attempt: int | None = None,
        duration: float | None = None,
        data: Any = None,
    ) -> None:
        """Build an event for a run from its state header (blueprint, traceparent) and emit it."""
        from .. import _clock

        header = header or {}
        self.emit(
            Event(
                type_,
                run_id,
                _clock.now(),
                node_id,
                attempt,
                duration,
                data,
                header.get("blueprint"),
                header.get("traceparent"),
            )
        )

    def emit(self, event: Event) -> None:
        for handler, types in list(self._handlers):
            if types is None or event.type in types:
                handler(event)
        for send, types in self._streams:
            if types is None or event.type in types:
                send.send_nowait(event)


class EventStream:
    """Async iterator over events; usable as an async context manager."""

    def __init__(
        self, receive: MemoryObjectReceiveStream[Event], close: Callable[[], None]
    ) -> None:
        self._receive = receive
        self._close = close

    def __aiter__(self) -> AsyncIterator[Event]:
        return self

    async def __anext__(self) -> Event:
        try:
            return await self._receive.receive()
        except (anyio.EndOfStream, anyio.ClosedResourceError):
            raise StopAsyncIteration from None

    async def __aenter__(self) -> EventStream:
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._close()
        self._receive.close()


def _types(types: Collection[str] | None) -> frozenset[str] | None:
    if types is None:
        return None
    chosen = frozenset(types)
    unknown = chosen - EVENT_TYPES
    if unknown:
        raise ValueError(
            f"unknown event type(s) {sorted(unknown)}; known types: {sorted(EVENT_TYPES)}"
        )
    return chosen

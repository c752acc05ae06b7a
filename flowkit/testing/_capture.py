"""``capture_events()``: collect the events of runtimes and workers in a block."""

from __future__ import annotations

from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from collections.abc import Collection, Iterator

    from ..shell._events import Event


@contextmanager
def capture_events(*sources: Any, types: Collection[str] | None = None) -> Iterator[list[Event]]:
    """Collect events from each source's ``.events`` bus while the block runs.

    Like structlog's ``capture_logs``:

    >>> import flowkit
    >>> rt = flowkit.Runtime()
    >>> with capture_events(rt) as events:
    ...     pass
    >>> events
    []
    """
    captured: list[Event] = []
    unsubscribes = [s.events.subscribe(captured.append, types) for s in sources]
    try:
        yield captured
    finally:
        for unsubscribe in unsubscribes:
            unsubscribe()

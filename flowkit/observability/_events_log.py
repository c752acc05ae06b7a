"""``EventLogger``: every flowkit event as one structured log line."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Final

import structlog

if TYPE_CHECKING:
    from ..shell._events import Event

_LEVELS: Final = ("debug", "info", "warning", "error", "critical")
# Event fields written when set, besides run_id and type (always written).
_OPTIONAL: Final = ("node_id", "attempt", "duration", "flow", "data")


class EventLogger:
    """Writes each event it is given as a structured log line.

    The line's message is the event type (``"node:finish"``); its fields are
    ``type``, ``run_id`` and, when the event has them, ``node_id``,
    ``attempt``, ``duration`` (seconds), ``flow`` and ``data``. Rendering,
    level filtering and redaction are the logging configuration's business
    (see :func:`flowkit.observability.configure_logging`).

    Args:
        logger: a structlog (or structlog-wrapped stdlib) logger; default
            ``structlog.get_logger("flowkit.events")``.
        level: the level every line is written at.

    >>> import flowkit
    >>> rt = flowkit.Runtime()
    >>> unsubscribe = rt.events.subscribe(EventLogger())
    """

    def __init__(self, logger: Any = None, level: str = "info") -> None:
        if level.lower() not in _LEVELS:
            raise ValueError(f"unknown log level {level!r}; use one of {', '.join(_LEVELS)}")
        self.level = level.lower()
        self._logger = logger if logger is not None else structlog.get_logger("flowkit.events")

    def __call__(self, event: Event) -> None:
        """Log ``event`` (the signature ``EventBus.subscribe`` expects)."""
        getattr(self._logger, self.level)(event.type, **fields_of(event))

    def __repr__(self) -> str:
        return f"EventLogger(level={self.level!r})"


def fields_of(event: Event) -> dict[str, Any]:
    """The structured fields of ``event``, leaving out the ones it does not have."""
    fields: dict[str, Any] = {"type": event.type, "run_id": event.run_id}
    for name in _OPTIONAL:
        value = getattr(event, name, None)
        if value is not None:
            fields[name] = value
    return fields

"""Whether a failed node execution is tried again: the node's retry policy.

Decided from data alone, so every shell decides the same: the node's config,
the options evaluated at its call site (kept in the dispatch record), the
attempt number, the error's qualified type names (``mro``) and the times the
shell reported in its events. Nothing here reads a clock.

* ``retries``: attempts after the first; ``None`` means no limit.
* ``retry_on``: when given, only errors of these types (or subclasses) are retried.
* ``never_retry``: errors of these types (or subclasses) are never retried; it
  wins over ``retry_on``.
* ``retry_timeout``: no attempt is scheduled to start later than this many
  seconds after the first attempt started.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Final

import attrs

from .._durations import Backoff, to_seconds
from .._errors import ConfigurationError

if TYPE_CHECKING:
    from collections.abc import Mapping

    from ..blueprint._model import NodeConfig

CALL_OPTIONS: Final = ("retries", "timeout", "retry_timeout", "queue")
"""Options whose value a compiled flow may compute at the call (``node.options(...)``)."""


@attrs.frozen
class Policy:
    """The retry settings in force for one dispatch."""

    retries: int | None
    backoff: Backoff | None
    retry_on: tuple[str, ...]
    never_retry: tuple[str, ...]
    retry_timeout: float | None

    @classmethod
    def of(cls, config: NodeConfig, options: Mapping[str, Any] | None) -> Policy:
        """``config``'s settings, with the call's evaluated ``options`` over them."""
        options = options or {}
        return cls(
            retries=options.get("retries", config.retries),
            backoff=config.backoff,
            retry_on=config.retry_on,
            never_retry=config.never_retry,
            retry_timeout=options.get("retry_timeout", config.retry_timeout),
        )

    def refusal(self, attempt: int, error: Mapping[str, Any]) -> str | None:
        """Why the failed ``attempt`` is not retried (before looking at time), or None."""
        if self.retries is not None and attempt > self.retries:
            return f"its {_attempts(self.retries + 1)} are used up"
        names = set(error.get("mro") or ()) | {str(error.get("type", ""))}
        barred = [name for name in self.never_retry if name in names]
        if barred:
            return f"{barred[0]} is in never_retry"
        if self.retry_on and not names.intersection(self.retry_on):
            return f"{error.get('type')} is not in retry_on"
        return None

    def late(self, first_started: float | None, due: float | None) -> str | None:
        """Why an attempt due at ``due`` would start too late, or None."""
        if self.retry_timeout is None or first_started is None or due is None:
            return None
        if due - first_started > self.retry_timeout:
            return f"retry_timeout of {self.retry_timeout:g}s after the first attempt has passed"
        return None


def _attempts(count: int) -> str:
    return "1 attempt" if count == 1 else f"{count} attempts"


def evaluated_options(values: Mapping[str, Any], node_id: str) -> dict[str, Any]:
    """The values of a call's computed options, checked; raises ConfigurationError."""
    options: dict[str, Any] = {}
    for name, value in values.items():
        where = f"node {node_id!r}: options({name}=...) evaluated to {value!r}"
        if name == "retries":
            if value is not None and (
                isinstance(value, bool) or not isinstance(value, int) or value < 0
            ):
                raise ConfigurationError(
                    f"{where}; retries must be a whole number of 0 or more, or None for "
                    "no limit: fix the expression"
                )
            options[name] = value
        elif name == "queue":
            if value is not None and (not isinstance(value, str) or not value.strip()):
                raise ConfigurationError(
                    f"{where}; queue must be a non-empty string (a queue name), or None for "
                    "the run's own queue: fix the expression"
                )
            if value is not None:
                options[name] = value
        elif value is not None:
            options[name] = _seconds(value, where)
    return options


def _seconds(value: Any, where: str) -> float:
    try:
        seconds = to_seconds(value)
    except ConfigurationError as exc:
        raise ConfigurationError(f"{where}: {exc}") from None
    if seconds <= 0:
        raise ConfigurationError(f"{where}; use a duration above zero, e.g. '30s', or None")
    return seconds

"""Run priorities: 0 (the default, lowest) to 9 (highest); higher is served sooner.

A run's priority is kept in its header (only when it is not the default, so runs
started without one are stored as before) and every node message of the run is
sent with it; transports that can order by it do (see ``docs/flow-control.md``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .._errors import ConfigurationError

if TYPE_CHECKING:
    from collections.abc import Mapping

MIN_PRIORITY = 0
MAX_PRIORITY = 9
DEFAULT_PRIORITY = MIN_PRIORITY
"""Runs started without ``priority=`` get the lowest: raising one puts it ahead."""


def check_priority(value: object, *, where: str = "priority") -> int:
    """``value`` if it is a valid priority, else a ConfigurationError saying why.

    >>> check_priority(7)
    7
    """
    if isinstance(value, bool) or not isinstance(value, int):
        raise ConfigurationError(
            f"{where} must be an integer from {MIN_PRIORITY} to {MAX_PRIORITY} "
            f"(higher is served sooner), got {value!r} of type {type(value).__name__}"
        )
    if not MIN_PRIORITY <= value <= MAX_PRIORITY:
        raise ConfigurationError(
            f"{where} must be from {MIN_PRIORITY} to {MAX_PRIORITY} (higher is served "
            f"sooner), got {value}"
        )
    return value


def priority_of(header: Mapping[str, Any]) -> int:
    """The priority a run's header records (the default if it records none)."""
    value = header.get("priority", DEFAULT_PRIORITY)
    return value if isinstance(value, int) and not isinstance(value, bool) else DEFAULT_PRIORITY

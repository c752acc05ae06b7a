"""``Action``: a node's way of choosing which outgoing edges to take."""

from __future__ import annotations

from typing import Any

import attrs


@attrs.frozen
class Action:
    """Route along edges whose ``action=`` equals ``name``; ``value`` flows on.

    >>> async def decide(total: int) -> Action:
    ...     return Action("big" if total > 100 else "small", total)
    """

    name: str
    value: Any = None


def split_action(value: Any, action: str | None = None) -> tuple[Any, str | None]:
    """``(value, action)`` with an :class:`Action` taken apart; anything else as given."""
    if isinstance(value, Action):
        return value.value, value.name
    return value, action

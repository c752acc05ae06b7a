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

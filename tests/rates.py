"""The rate-limit safety check shared by test_limits and the e2e rate test: from the
times a bucket granted its tokens, never more in any window than the rate allows."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from collections.abc import Sequence


def granted_at(now: float, level: float, count: int, rate: float) -> list[float]:
    """When a bucket's answer to ``reserve_tokens(count=..., now=now)`` (its ``level``)
    grants each of the ``count`` tokens."""
    return [now + max(0.0, (j - level) / rate) for j in range(1, count + 1)]


def most_beyond_rate(times: Sequence[float], rate: float, capacity: float) -> float:
    """The most tokens granted in one window beyond what the rate allows there (``rate``
    a second over the window, plus the ``capacity`` the bucket may hold): <= 0 if the
    rate was kept."""
    ordered = sorted(times)
    worst = float("-inf")
    for i, first in enumerate(ordered):
        for k in range(i, len(ordered)):
            worst = max(worst, (k - i + 1) - (rate * (ordered[k] - first) + capacity))
    return worst

"""The token-bucket arithmetic shared by the stores that compute it in Python
(MemoryStore, SQLiteStore); PostgreSQL and Redis do the same in their statement and
script."""

from __future__ import annotations


def reserve(
    tokens: float | None, updated: float, *, count: int, rate: float, capacity: float, now: float
) -> float:
    """The bucket's level at ``now`` (refilled; below zero while it owes tokens) before
    ``count`` tokens are taken. A ``now`` before ``updated`` (another process's clock,
    or a call that took longer) counts back from the level then: the bucket grants
    tokens at ``rate`` from when it last granted, whichever clock asks; it is then
    written as ``(level - count, now)``."""
    return capacity if tokens is None else min(capacity, tokens + (now - updated) * rate)


def refill(
    tokens: float | None, updated: float, *, rate: float, capacity: float, now: float
) -> tuple[float, float]:
    """Take a token if there is one: the bucket's tokens afterwards, and 0.0 if one was
    taken, else the seconds until there is one. ``tokens`` None: a new (full) bucket."""
    level = capacity if tokens is None else min(capacity, tokens + max(0.0, now - updated) * rate)
    if level >= 1.0:
        return level - 1.0, 0.0
    return level, (1.0 - level) / rate

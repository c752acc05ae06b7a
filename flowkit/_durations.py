"""Durations (``"250ms"``, ``30``, ``timedelta``) and retry backoff."""

from __future__ import annotations

import hashlib
import re
from datetime import timedelta

import attrs

Duration = timedelta | int | float | str

_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}
_PATTERN = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)\s*$")
_ACCEPTED = "a timedelta, seconds as int/float, or a string like '250ms', '30s', '10m', '2h', '3d'"


def to_seconds(value: Duration) -> float:
    """Convert a duration to seconds, or raise ``ValueError`` naming the accepted forms.

    >>> to_seconds("250ms"), to_seconds(90), to_seconds(timedelta(minutes=1))
    (0.25, 90.0, 60.0)
    """
    if isinstance(value, bool):
        raise ValueError(f"invalid duration {value!r}: expected {_ACCEPTED}")
    if isinstance(value, timedelta):
        seconds = value.total_seconds()
    elif isinstance(value, int | float):
        seconds = float(value)
    elif isinstance(value, str):
        match = _PATTERN.match(value)
        if match is None:
            raise ValueError(f"invalid duration {value!r}: expected {_ACCEPTED}")
        seconds = float(match.group(1)) * _UNITS[match.group(2)]
    else:
        raise ValueError(f"invalid duration {value!r}: expected {_ACCEPTED}")
    if seconds < 0 or seconds != seconds:
        raise ValueError(f"invalid duration {value!r}: must be zero or positive")
    return seconds


def _seconds_field(value: Duration) -> float:
    return to_seconds(value)


@attrs.frozen
class Backoff:
    """Delay between retry attempts: ``initial * factor ** (retry - 1)``, capped at ``max``.

    With ``jitter`` the delay is scaled by a factor in [0.5, 1.0] derived from
    the run, node and attempt, so it is spread out yet reproducible (and the
    core stays deterministic).

    >>> Backoff(initial="1s", factor=2.0, max="1m").delay(3)
    4.0
    """

    initial: float = attrs.field(default=1.0, converter=_seconds_field)
    factor: float = 2.0
    max: float = attrs.field(default=300.0, converter=_seconds_field)
    jitter: bool = False

    def delay(self, retry: int, seed: str = "") -> float:
        """Seconds to wait before retry number ``retry`` (1 for the first retry)."""
        base = min(self.max, self.initial * self.factor ** max(0, retry - 1))
        if not self.jitter:
            return base
        digest = hashlib.blake2b(f"{seed}:{retry}".encode(), digest_size=2).digest()
        return base * (0.5 + int.from_bytes(digest, "big") / 131070)

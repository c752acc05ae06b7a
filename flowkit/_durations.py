"""Durations (``"250ms"``, ``30``, ``timedelta``) and retry backoff.

A duration or backoff that makes no sense is a :class:`~flowkit.ConfigurationError`
(also a ``ValueError``) saying what was given and what to pass instead.
"""

from __future__ import annotations

import hashlib
import math
import re
from datetime import timedelta
from typing import TYPE_CHECKING, NoReturn

import attrs

from ._errors import ConfigurationError

if TYPE_CHECKING:
    from collections.abc import Iterator

Duration = timedelta | int | float | str

_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}
_PATTERN = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)\s*$")
_ACCEPTED = "a timedelta, seconds as int/float, or a string like '250ms', '30s', '10m', '2h', '3d'"


def to_seconds(value: Duration) -> float:
    """Convert a duration to seconds, or raise ``ConfigurationError`` (a ``ValueError``)
    naming the accepted forms.

    >>> to_seconds("250ms"), to_seconds(90), to_seconds(timedelta(minutes=1))
    (0.25, 90.0, 60.0)
    """
    if isinstance(value, bool):
        raise ConfigurationError(f"invalid duration {value!r}: expected {_ACCEPTED}")
    if isinstance(value, timedelta):
        seconds = value.total_seconds()
    elif isinstance(value, int | float):
        seconds = _float(value)
    elif isinstance(value, str):
        match = _PATTERN.match(value)
        if match is None:
            raise ConfigurationError(f"invalid duration {value!r}: expected {_ACCEPTED}")
        seconds = float(match.group(1)) * _UNITS[match.group(2)]
    else:
        raise ConfigurationError(f"invalid duration {shown(value)}: expected {_ACCEPTED}")
    if not 0 <= seconds < math.inf:  # NaN too
        raise ConfigurationError(
            f"invalid duration {shown(value)}: expected zero or more seconds, and finite"
        )
    return seconds


def _float(number: float) -> float:
    try:
        return float(number)
    except OverflowError:  # an int too large for a float: too long a duration anyway
        return math.inf


def shown(value: object) -> str:
    """``value`` for an error message: its repr, cut short, with its type when the repr
    alone does not tell it (``True (a bool)``, ``<object ...> (an object)``)."""
    try:
        text = repr(value)
    except ValueError:  # an int over Python's digit limit
        text = "<an int too long to print>"
    if len(text) > 60:
        text = f"{text[:57]}..."
    if value is None or type(value) in (str, int, float):
        return text
    kind = type(value).__name__
    return f"{text} ({'an' if kind[:1].lower() in 'aeiou' else 'a'} {kind})"


def _initial_seconds(value: Duration) -> float:
    return _backoff_seconds("initial", value)


def _max_seconds(value: Duration) -> float:
    return _backoff_seconds("max", value)


def _backoff_seconds(name: str, value: Duration) -> float:
    try:
        return to_seconds(value)
    except ConfigurationError as exc:
        raise ConfigurationError(f"Backoff: {name}: {exc}") from None


@attrs.frozen
class Backoff:
    """Delay between retry attempts: ``initial * factor ** (retry - 1)``, capped at ``max``.

    ``initial`` is zero or more, ``factor`` 1 or more and ``max`` at least
    ``initial``; anything else is a :class:`~flowkit.ConfigurationError`.
    With ``jitter`` the delay is scaled by a factor in [0.5, 1.0] derived from
    the run, node and attempt, so it is spread out yet reproducible (and the
    core stays deterministic).

    >>> Backoff(initial="1s", factor=2.0, max="1m").delay(3)
    4.0
    """

    initial: float = attrs.field(default=1.0, converter=_initial_seconds)
    factor: float = attrs.field(default=2.0)
    max: float = attrs.field(default=300.0, converter=_max_seconds)
    jitter: bool = attrs.field(default=False)

    @factor.validator
    def _check_factor(self, _: attrs.Attribute[float], value: object) -> None:
        if isinstance(value, bool) or not isinstance(value, int | float):
            self._refuse("factor", value, "a number of 1 or more, e.g. factor=2.0")
        if not 1 <= value < math.inf:  # NaN too
            self._refuse("factor", value, "1 or more (1 keeps the delay, 2 doubles it)")

    @max.validator
    def _check_max(self, _: attrs.Attribute[float], value: float) -> None:
        if value < self.initial:
            self._refuse(
                "max", value, f"at least initial ({self.initial:g}s), e.g. max={self.initial:g}"
            )

    @jitter.validator
    def _check_jitter(self, _: attrs.Attribute[bool], value: object) -> None:
        if not isinstance(value, bool):
            self._refuse("jitter", value, "True or False")

    @staticmethod
    def _refuse(name: str, value: object, expected: str) -> NoReturn:
        raise ConfigurationError(f"Backoff: {name} must be {expected}; got {shown(value)}")

    def delay(self, retry: int, seed: str = "") -> float:
        """Seconds to wait before retry number ``retry`` (1 for the first retry)."""
        base = min(self.max, self.initial * self.factor ** max(0, retry - 1))
        return self._jittered(base, retry, seed)

    def delays(self, seed: str = "") -> Iterator[float]:
        """``delay(1, seed)``, ``delay(2, seed)``, ... without end, for a loop that waits
        between tries: a fresh iterator starts again from ``initial`` (a poll back-off
        resets when work arrives).

        Once the delay reaches ``max`` it stays there without computing
        ``factor ** retry`` any further, so a loop may draw from it for ever
        (``delay(n)`` itself overflows for n in the thousands).

        >>> from itertools import islice
        >>> list(islice(Backoff(initial=0.05, max=0.5).delays(), 6))
        [0.05, 0.1, 0.2, 0.4, 0.5, 0.5]
        """
        base, retry = self.initial, 1
        while True:
            yield self._jittered(min(self.max, base), retry, seed)
            retry += 1
            if base < self.max and self.initial > 0:  # else it can grow no more
                base = self.initial * self.factor ** (retry - 1)

    def _jittered(self, base: float, retry: int, seed: str) -> float:
        if not self.jitter:
            return base
        digest = hashlib.blake2b(f"{seed}:{retry}".encode(), digest_size=2).digest()
        return base * (0.5 + int.from_bytes(digest, "big") / 131070)

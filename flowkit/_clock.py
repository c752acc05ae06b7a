"""The wall clock, replaceable per task (``flowkit.testing`` runs on virtual time)."""

from __future__ import annotations

import time
from contextlib import contextmanager
from contextvars import ContextVar
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator

_clock: ContextVar[Callable[[], float]] = ContextVar("flowkit_clock", default=time.time)


def now() -> float:
    """Seconds since the epoch, from the clock in effect for this task."""
    return _clock.get()()


@contextmanager
def use_clock(clock: Callable[[], float]) -> Iterator[None]:
    """Make ``clock`` the time source of flowkit code run in this context."""
    token = _clock.set(clock)
    try:
        yield
    finally:
        _clock.reset(token)

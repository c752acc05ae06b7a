"""Run ids: time-ordered, so a store's index of runs by id grows at its end."""

from __future__ import annotations

import os
import time

_VARIANT = {digit: "89ab"[int(digit, 16) & 3] for digit in "0123456789abcdef"}
"""A random hex digit -> one with the RFC 9562 variant bits (10xx) and its 2 low bits."""


def new_run_id() -> str:
    """A new run id: 32 hex digits laid out as a UUIDv7 (RFC 9562).

    The first 48 bits are the Unix time in milliseconds, so ids sort by when they
    were made (to the millisecond); 74 of the others are random (``os.urandom``).
    Cheaper than ``uuid.uuid4().hex``, and as unique.
    """
    rand = os.urandom(10).hex()
    return f"{time.time_ns() // 1_000_000:012x}7{rand[:3]}{_VARIANT[rand[3]]}{rand[4:19]}"

"""Payloads (inputs, outputs, variables, errors) as text for a page, cut when large.

The text is plain: templates escape it, so a run whose output is ``<script>`` shows
those characters. A payload longer than :data:`PREVIEW_CHARS` is cut there and
the page offers a "show all" link that renders it whole.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

import attrs

PREVIEW_CHARS = 2_000
"""How much of a payload a page shows before "show all"."""


@attrs.frozen
class Payload:
    """A payload's text, maybe cut, and how long it is whole."""

    text: str
    size: int
    cut: bool


def as_text(value: Any) -> str:
    """``value`` as indented JSON; a value JSON cannot hold is shown as its ``repr``."""
    if isinstance(value, str):
        return value
    try:
        return json.dumps(value, indent=2, ensure_ascii=False, sort_keys=True, default=repr)
    except (TypeError, ValueError):  # keys that are not strings, a cycle
        return repr(value)


def payload(value: Any, *, full: bool = False) -> Payload:
    """The text of ``value``, cut to :data:`PREVIEW_CHARS` unless ``full``."""
    text = as_text(value)
    if full or len(text) <= PREVIEW_CHARS:
        return Payload(text, len(text), cut=False)
    return Payload(text[:PREVIEW_CHARS], len(text), cut=True)


def short(value: Any, limit: int = 80) -> str:
    """``value`` on one line, at most ``limit`` characters (for tables)."""
    text = " ".join(as_text(value).split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def when(at: float | None) -> str:
    """Unix seconds as ``YYYY-MM-DD HH:MM:SS`` UTC; ``""`` for None."""
    if at is None:
        return ""
    return datetime.fromtimestamp(at, UTC).strftime("%Y-%m-%d %H:%M:%S")


def duration(seconds: float | None) -> str:
    """``0.4s``, ``12.0s``, ``3.5m``, ``2.0h``, ``4.1d``; ``""`` for None."""
    if seconds is None:
        return ""
    seconds = max(0.0, seconds)
    for unit, size, limit in (("s", 1, 120), ("m", 60, 7_200), ("h", 3_600, 172_800)):
        if seconds < limit:
            return f"{seconds / size:.1f}{unit}"
    return f"{seconds / 86_400:.1f}d"


def span(seconds: float) -> str:
    """A declared duration in its largest whole unit: ``1h``, ``90m``, ``2.5s``."""
    for unit, size in (("d", 86_400), ("h", 3_600), ("m", 60)):
        if seconds >= size and seconds % size == 0:
            return f"{seconds / size:g}{unit}"
    return f"{seconds:g}s"

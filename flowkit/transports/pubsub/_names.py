"""Pub/Sub resource names, message attributes and limits (see ``_pubsub.py``)."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import attrs

if TYPE_CHECKING:
    from collections.abc import Mapping

KEY = "x-flowkit-key"
REASON = "x-flowkit-reason"
ATTEMPTS = "x-flowkit-attempts"  # deliveries before a long nack republished the message
DELIVER_AFTER = "x-flowkit-deliver-after"  # epoch seconds
_EMPTY = "x-flowkit-empty"  # Pub/Sub refuses a message with no data and no attributes
_INTERNAL = frozenset({KEY, ATTEMPTS, DELIVER_AFTER, _EMPTY})
MAX_DEADLINE = 600  # Pub/Sub's longest ack deadline / modack, seconds
_NAME_CHARS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_.+")


def _escape(name: str) -> str:
    """``name`` with every character Pub/Sub names do not allow written as ``%XX``."""
    return "".join(
        c if c in _NAME_CHARS else "".join(f"%{b:02X}" for b in c.encode()) for c in name
    )


@attrs.frozen
class _Names:
    """The resource paths behind one flowkit queue."""

    topic: str
    subscription: str
    dead_topic: str
    dead_subscription: str
    delay_topic: str
    delay_subscription: str

    @classmethod
    def of(cls, project: str, base: str) -> _Names:
        topics, subscriptions = f"projects/{project}/topics/", f"projects/{project}/subscriptions/"
        dead, delay = f"{base}-dlq", f"{base}~delay"
        return cls(
            topics + base,
            subscriptions + base,
            topics + dead,
            subscriptions + dead,
            topics + delay,
            subscriptions + delay,
        )


def _attributes(headers: Mapping[str, str] | None, key: str | None) -> dict[str, str]:
    attributes = {str(name): str(value) for name, value in (headers or {}).items()}
    if key is not None:
        attributes[KEY] = key
    return attributes


def _deadline(seconds: float) -> int:
    """``seconds`` as a modack deadline: whole seconds, rounded up, within 0..600."""
    return min(MAX_DEADLINE, max(0, math.ceil(seconds)))

"""``KafkaDelivery`` and the headers flowkit sets on Kafka records (see ``_kafka.py``)."""

from __future__ import annotations

import math
import time
from functools import partial
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from collections.abc import Iterable, Mapping

    from ._member import _Member
    from ._offsets import _Offsets


ATTEMPT = "x-flowkit-attempt"
DUE = "x-flowkit-due"
REASON = "x-flowkit-reason"
_INTERNAL = frozenset({ATTEMPT, DUE})

_HELD, _BUSY, _DONE = "held", "busy", "done"


def _decode_headers(raw: Iterable[tuple[str, bytes | None]]) -> dict[str, str]:
    return {name: (value or b"").decode("utf-8", "replace") for name, value in raw}


def _attempt(headers: Mapping[str, str]) -> int:
    try:
        return max(1, int(headers.get(ATTEMPT, "1")))
    except ValueError:
        return 1


class KafkaDelivery:
    """A delivery from :class:`KafkaTransport`: one record of one partition."""

    def __init__(self, member: _Member, tp: Any, offsets: _Offsets, record: Any) -> None:
        headers = _decode_headers(record.headers or ())
        self.body: bytes = record.value or b""
        self.raw_key: bytes | None = record.key
        self.key = None if record.key is None else record.key.decode("utf-8", "replace")
        self.attempt = _attempt(headers)
        self.headers: Mapping[str, str] = {k: v for k, v in headers.items() if k not in _INTERNAL}
        self.due = headers.get(DUE)
        self.partition: int = record.partition
        self.offset: int = record.offset
        self.deadline = math.inf
        self.state = _HELD
        self.tp = tp
        self.offsets = offsets
        self._member = member

    async def ack(self) -> None:
        """Done: commit (as far as the lowest unsettled offset allows)."""
        await self._member.settle(self, None)

    async def nack(self, requeue_after: float | None = None) -> None:
        """Re-produce the message (after ``requeue_after`` seconds), then settle this one."""
        await self._member.settle(self, partial(self._member.requeue, self, requeue_after))

    async def extend(self, seconds: float) -> None:
        """Keep the message from being redelivered for ``seconds`` more."""
        self._member.check(self)
        self.deadline = time.monotonic() + seconds
        self._member.wake()

    async def dead_letter(self, reason: str) -> None:
        """Produce the message to ``{topic}.dlq`` with ``reason``, then settle this one."""
        await self._member.settle(self, partial(self._member.dead_letter, self, reason))

    def __repr__(self) -> str:
        return f"<KafkaDelivery {self.tp.topic}[{self.partition}]@{self.offset} {self.state}>"

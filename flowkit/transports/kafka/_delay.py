"""The delay forwarder: holds ``topic.delay`` records until due (see ``_kafka.py``)."""

from __future__ import annotations

import time
from functools import partial
from typing import TYPE_CHECKING

from ._delivery import ATTEMPT
from ._member import _Member

if TYPE_CHECKING:
    from ._delivery import KafkaDelivery
    from ._transport import KafkaTransport

_DELAY_HOLD = 10_000  # delayed records one forwarder holds in memory


class _Forwarder(_Member):
    """Holds records of ``topic.delay`` until due, then produces them to ``topic``."""

    def __init__(self, transport: KafkaTransport, topic: str, group: str) -> None:
        super().__init__(transport, f"{topic}.delay", f"{group}.delay", _DELAY_HOLD)
        self.target = topic

    def _take(self, delivery: KafkaDelivery) -> None:
        try:
            due = float(delivery.due or 0.0)
        except ValueError:
            due = 0.0
        delivery.deadline = time.monotonic() + max(0.0, due - time.time())
        self.held.add(delivery)
        self.wake()

    def _drained(self) -> bool:
        return True  # what it holds is uncommitted and goes to another forwarder

    def _busy(self) -> set[int]:
        return set()  # held records are not work in progress: partitions may move

    def _topics_needed(self) -> dict[str, int]:
        return {}  # the reader's member checks the queue's topics, these included

    async def _hand_back(self) -> None:
        """Nothing: records not forwarded yet stay uncommitted for the next forwarder."""

    async def _expire(self, delivery: KafkaDelivery) -> None:
        await self._retrying(delivery, partial(self._forward, delivery))

    async def _forward(self, delivery: KafkaDelivery) -> None:
        headers = {**delivery.headers, ATTEMPT: str(delivery.attempt)}
        await self.transport._produce(self.target, delivery.body, delivery.raw_key, headers)

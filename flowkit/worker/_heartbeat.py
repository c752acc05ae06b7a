"""One heartbeat loop per worker: it keeps the leases of every node in flight.

A node that runs longer than a third of its lease has its dispatch lease (in
the store, which the reconciler reads) and its delivery's visibility (in the
broker) pushed out, every third of a lease, until it finishes. One loop for
all of a worker's deliveries costs less than a task per delivery.
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import TYPE_CHECKING

import anyio
import structlog

from .. import _clock as clock
from .._errors import StoreError, TransportError
from ..transports._protocol import DeliveryError

if TYPE_CHECKING:
    from collections.abc import Iterator

    from ..stores._protocol import Store
    from ..transports._protocol import Delivery
    from ._messages import NodeMessage

log = structlog.get_logger("flowkit.worker")


class _Beat:
    """A node in flight: its delivery, its message, and when to extend them next."""

    __slots__ = ("delivery", "due", "message")

    def __init__(self, delivery: Delivery, message: NodeMessage, due: float) -> None:
        self.delivery = delivery
        self.message = message
        self.due = due


class Heartbeats:
    """The nodes a worker runs, kept leased by :meth:`run` while :meth:`beating`."""

    def __init__(self, store: Store, *, lease: float, visibility: float) -> None:
        self.store = store
        self.lease = lease
        self.extension = max(lease, visibility)
        self.interval = min(lease, visibility) / 3
        self._beating: set[_Beat] = set()

    @contextmanager
    def beating(self, delivery: Delivery, message: NodeMessage) -> Iterator[None]:
        """Keep ``delivery`` and its dispatch leased while the block runs."""
        beat = _Beat(delivery, message, anyio.current_time() + self.interval)
        self._beating.add(beat)
        try:
            yield
        finally:
            self._beating.discard(beat)

    async def run(self) -> None:
        """Extend whatever is due, every half interval (so at most 1.5 intervals apart)."""
        while True:
            await anyio.sleep(self.interval / 2)
            now = anyio.current_time()
            due = [beat for beat in self._beating if beat.due <= now]
            for beat in due:
                beat.due = now + self.interval
            if len(due) == 1:
                await self._extend(due[0])
            elif due:
                async with anyio.create_task_group() as tg:
                    for beat in due:
                        tg.start_soon(self._extend, beat)

    async def _extend(self, beat: _Beat) -> None:
        message = beat.message
        try:
            await self.store.extend_lease(
                message.run_id, message.dispatch_id, clock.now() + self.lease
            )
            await beat.delivery.extend(self.extension)
        except DeliveryError as exc:  # the broker gave the message to someone else
            self._beating.discard(beat)
            log.warning(
                "lost a delivery while running its node",
                run_id=message.run_id,
                node_id=message.node_id,
                error=str(exc),
            )
        except (StoreError, TransportError) as exc:  # the next beat tries again
            log.warning(
                "heartbeat failed; retrying",
                run_id=message.run_id,
                node_id=message.node_id,
                error=str(exc),
            )

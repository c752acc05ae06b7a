"""Concurrency slots and rate limits on workers: the store's slot leases, taken before a
limited node runs and given back when it ends, and its token buckets.

A node delayed by its rate sleeps, holding its delivery, until the store says the
next token is there, and takes it then (another worker may have been quicker: it
sleeps again).

A node whose pool is full waits here, holding its delivery (the heartbeat keeps the
delivery and its dispatch leased, and its slot once it has one): it is not nacked, so a
broker's redelivery count (SQS's ``maxReceiveCount``, Pub/Sub's dead-letter policy)
never sends waiting work to a dead-letter queue. Waiters of one pool in one worker
form a queue: a slot given back in this worker wakes the first of them at once. Slots
given back by other workers are found by asking the store again, after a backoff that
starts at :data:`WAIT_BACKOFF`'s initial delay and grows to its maximum: no tight polling.
"""

from __future__ import annotations

import random
from collections import deque
from typing import TYPE_CHECKING

import anyio
import structlog

from .. import _clock as clock
from .._durations import Backoff
from .._errors import StoreError

if TYPE_CHECKING:
    from ..shell._limits import Bucket, Slot
    from ..stores._protocol import Store

log = structlog.get_logger("flowkit.worker")

TOKEN_JITTER = 0.1
"""A node delayed by a rate limit sleeps until the next token and up to 10 % more."""
WAIT_BACKOFF = Backoff(initial=0.05, factor=2.0, max=1.0, jitter=True)
"""Between two attempts of a waiting node to take a slot another worker may have freed."""


class Slots:
    """The slot leases of one worker's nodes: taking (waiting in line), giving back."""

    def __init__(self, store: Store, *, lease: float) -> None:
        self.store = store
        self.lease = lease
        self.round_trips = 0  # store calls made for slots (for benchmarks)
        self._waiters: dict[tuple[str, str], deque[anyio.Event]] = {}

    async def take(self, slot: Slot, holder: str) -> None:
        """Return once ``holder`` has a slot of ``slot``'s pool (cancel to stop waiting)."""
        pool = (slot.limit_id, slot.key)
        if await self._acquire(slot, holder):
            return
        line = self._waiters.setdefault(pool, deque())
        event = anyio.Event()
        line.append(event)
        delays = WAIT_BACKOFF.delays(holder)
        try:
            while True:
                with anyio.move_on_after(next(delays)):
                    await event.wait()
                if event.is_set():  # woken by a slot given back here: stay first in line
                    line.remove(event)
                    event = anyio.Event()
                    line.appendleft(event)
                    delays = WAIT_BACKOFF.delays(holder)
                if await self._acquire(slot, holder):
                    return
        finally:
            if event in line:
                line.remove(event)
            if not line and self._waiters.get(pool) is line:
                del self._waiters[pool]

    async def take_token(self, bucket: Bucket) -> None:
        """Return once a token of ``bucket`` is taken: a refused take says how long until
        the next token, and this sleeps that long (a little more, spread by ``jitter``
        so that the workers waiting for one bucket do not all ask at once)."""
        while True:
            self.round_trips += 1
            wait = await self.store.take_token(
                bucket.limit_id,
                bucket.key,
                rate=bucket.rate,
                capacity=bucket.capacity,
                now=clock.now(),
            )
            if wait <= 0.0:
                return
            await anyio.sleep(wait * (1.0 + random.random() * TOKEN_JITTER))

    async def _acquire(self, slot: Slot, holder: str) -> bool:
        now = clock.now()
        self.round_trips += 1
        return await self.store.acquire_slot(
            slot.limit_id, slot.key, holder, max=slot.max, now=now, expires_at=now + self.lease
        )

    async def extend(self, slot: Slot, holder: str) -> None:
        """Keep ``holder``'s slot (the heartbeat of its node)."""
        self.round_trips += 1
        if not await self.store.extend_slot(
            slot.limit_id, slot.key, holder, clock.now() + self.lease
        ):
            log.warning(
                "a running node's concurrency slot had expired; taking it again",
                limit=slot.limit_id,
                key=slot.key,
            )
            await self._acquire(slot, holder)

    async def give_back(self, slot: Slot, holder: str) -> None:
        """Release ``holder``'s slot (even while cancelled); wake this worker's first
        waiter of the pool. A store that fails leaves the slot to expire with its lease."""
        with anyio.CancelScope(shield=True):
            try:
                self.round_trips += 1
                await self.store.release_slot(slot.limit_id, slot.key, holder)
            except StoreError as exc:
                log.warning(
                    "could not release a concurrency slot; it frees when its lease expires",
                    limit=slot.limit_id,
                    key=slot.key,
                    error=str(exc),
                )
        line = self._waiters.get((slot.limit_id, slot.key))
        if line:
            line[0].set()

"""``PubSubDelivery`` and the ``receive`` loop behind it (see ``_pubsub.py``)."""

from __future__ import annotations

import threading
import time
from collections import deque
from functools import partial
from typing import TYPE_CHECKING

import anyio

from ..._errors import TransportError
from .._protocol import DeliveryError
from ._delay import _Forwarder
from ._names import _INTERNAL, ATTEMPTS, DELIVER_AFTER, KEY, MAX_DEADLINE, REASON

if TYPE_CHECKING:
    from collections.abc import Mapping

    from google.pubsub_v1 import SubscriberClient
    from google.pubsub_v1.types import ReceivedMessage

    from ._names import _Names
    from ._transport import PubSubTransport


class PubSubDelivery:
    """A message pulled by :meth:`PubSubTransport.receive`, leased until its deadline."""

    def __init__(self, receiver: _Receiver, received: ReceivedMessage, expires: float) -> None:
        attributes = dict(received.message.attributes)
        self._receiver = receiver
        self._ack_id: str = received.ack_id
        self._attributes = attributes
        self._expires = expires
        self._done = False
        self.body: bytes = bytes(received.message.data)
        self.headers: Mapping[str, str] = {
            name: value for name, value in attributes.items() if name not in _INTERNAL
        }
        self.key: str | None = attributes.get(KEY)
        base = attributes.get(ATTEMPTS, "0")
        self.attempt = (int(base) if base.isdigit() else 0) + max(1, received.delivery_attempt)

    @property
    def live(self) -> bool:
        """Held: neither settled nor past its lease."""
        return not self._done and time.monotonic() < self._expires

    def _check(self, operation: str) -> None:
        if self._done:
            raise DeliveryError(
                f"cannot {operation} a Pub/Sub delivery that was already settled or handed "
                "back (the transport was closed)"
            )
        if time.monotonic() >= self._expires:
            raise DeliveryError(
                f"cannot {operation} a Pub/Sub delivery whose lease ran out (Pub/Sub redelivers "
                "it); extend() long handlers"
            )

    def _settle(self, operation: str) -> None:
        self._check(operation)
        self._done = True
        self._receiver.release(self)

    async def ack(self) -> None:
        self._settle("ack")
        await self._receiver.transport._acknowledge(self._receiver.names.subscription, self._ack_id)

    async def nack(self, requeue_after: float | None = None) -> None:
        self._settle("nack")
        after = requeue_after or 0.0
        transport, names = self._receiver.transport, self._receiver.names
        if after <= MAX_DEADLINE:
            await transport._modack(names.subscription, [self._ack_id], after, settling=True)
            return
        attributes = {**self._attributes, ATTEMPTS: str(self.attempt)}
        attributes[DELIVER_AFTER] = repr(time.time() + after)
        await transport._publish(names.delay_topic, self.body, None, attributes, settling=True)
        await transport._acknowledge(names.subscription, self._ack_id)

    async def extend(self, seconds: float) -> None:
        self._check("extend")
        seconds = min(float(MAX_DEADLINE), seconds)
        started = time.monotonic()
        await self._receiver.transport._modack(
            self._receiver.names.subscription, [self._ack_id], max(seconds, 1.0), settling=True
        )
        if not self._done:
            self._expires = started + seconds

    async def dead_letter(self, reason: str) -> None:
        self._settle("dead-letter")
        transport, names = self._receiver.transport, self._receiver.names
        attributes = {**self._attributes, REASON: reason}
        await transport._publish(names.dead_topic, self.body, None, attributes, settling=True)
        await transport._acknowledge(names.subscription, self._ack_id)

    def hand_back(self) -> str | None:
        """Give the delivery up (for :meth:`PubSubTransport.close`); its ack id if it was held."""
        held = self.live
        self._done = True
        return self._ack_id if held else None

    def __repr__(self) -> str:
        return f"PubSubDelivery(key={self.key!r}, attempt={self.attempt})"


class _Receiver:
    """One ``receive(queue)`` loop: what it pulled, what it holds, its delay forwarder."""

    def __init__(self, transport: PubSubTransport, names: _Names) -> None:
        self.transport = transport
        self.names = names
        self.stopped = False
        self.held: set[PubSubDelivery] = set()
        self.pending: deque[PubSubDelivery] = deque()
        self._inbox: list[ReceivedMessage] = []  # filled by the pull thread
        self._lock = threading.Lock()
        self._changed = anyio.Event()
        self._scope: anyio.CancelScope | None = None
        self._puller: SubscriberClient | None = None  # its own channel, closed by stop()
        self.forwarder = _Forwarder(self)

    def puller(self) -> SubscriberClient:
        """The client this loop pulls with (in worker threads); closing it ends its pulls."""
        with self._lock:
            if self.stopped:
                raise TransportError("this receive loop has stopped")
            if self._puller is None:
                self._puller = self.transport._new_subscriber()
            return self._puller

    def release(self, delivery: PubSubDelivery) -> None:
        self.held.discard(delivery)
        if self.stopped and not self.held:
            self.transport._receivers.discard(self)
        self._wake()

    def _wake(self) -> None:
        self._changed.set()
        self._changed = anyio.Event()

    def next_ready(self) -> PubSubDelivery | None:
        """The next pulled delivery still within its lease, now held by the consumer."""
        while self.pending and not self.stopped:
            delivery = self.pending.popleft()
            if delivery.live:
                self.held.add(delivery)
                return delivery
        return None

    async def fill(self) -> None:
        """Wait for room under ``flow_control``, then pull at most that many messages."""
        free = await self._room()
        if not free:
            return
        self.forwarder.check()
        with anyio.CancelScope() as self._scope:
            await self.transport._call(
                f"pulling from {self.names.subscription}", partial(self._pull, free), abandon=True
            )
        with self._lock:
            received, self._inbox = self._inbox, []
        if not received:
            return
        sent_at = time.monotonic()
        ack_ids = [r.ack_id for r in received]
        await self.transport._modack(self.names.subscription, ack_ids, self.transport.lease)
        if self.stopped:  # closed during the receipt modack: give them straight back
            await self.transport._hand_back([(self.names.subscription, ack_ids)])
            return
        expires = sent_at + self.transport.lease
        self.pending.extend(PubSubDelivery(self, r, expires) for r in received)

    async def _room(self) -> int:
        while not self.stopped:
            self.held = {d for d in self.held if d.live}
            free = self.transport.flow_control - len(self.held)
            if free > 0:
                return free
            changed = self._changed
            soonest = min(d._expires for d in self.held)
            with anyio.move_on_after(max(0.0, soonest - time.monotonic())):
                await changed.wait()
        return 0

    def _pull(self, free: int) -> None:
        """In a worker thread: pull, and keep the messages unless the loop stopped meanwhile."""
        try:
            received = self.transport._pull_sync(self.puller(), self.names.subscription, free)
        except Exception:
            if self.stopped:
                return  # an abandoned pull failing as the client closes: nothing was received
            raise
        with self._lock:
            if not self.stopped:
                self._inbox.extend(received)
                return
        self.transport._hand_back_sync(self.names.subscription, [r.ack_id for r in received])

    def stop(self) -> list[str]:
        """Stop pulling; the ack ids of messages pulled but never yielded."""
        with self._lock:
            self.stopped = True
            unyielded = [r.ack_id for r in self._inbox]
            self._inbox, puller, self._puller = [], self._puller, None
        if puller is not None:  # ends a pull in flight, so it cannot take messages any more
            puller.transport.close()  # type: ignore[no-untyped-call]  # untyped in the SDK
        unyielded += [d.hand_back() or "" for d in self.pending]
        self.pending.clear()
        if self._scope is not None:
            self._scope.cancel()
        self.forwarder.stop()
        self._wake()
        return [ack_id for ack_id in unyielded if ack_id]

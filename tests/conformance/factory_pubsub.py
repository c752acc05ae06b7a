"""``PubSubTransport`` in the transport conformance suite, against Google's Pub/Sub emulator.

Google Cloud cannot be reached from these machines; Google's official Pub/Sub
emulator (``pubsub_emulator.py``) runs on loopback instead. It serves the real
Pub/Sub gRPC API, and the transport talks to it through the real
google-cloud-pubsub client library (``PUBSUB_EMULATOR_HOST``), so wire protocol
and client are the production ones. One emulator serves the whole test
process; each test gets its own topic prefix, so its topics and subscriptions
are its own, and every ``make()`` is a new transport with its own gRPC
channels, as a separate worker process would have. The transport runs the
client library in worker threads, so these cases run on asyncio and on trio.

The factory uses a 1 s lease (``ack_deadline=1.0``: each pulled message is
modacked to 1 s) and ``flow_control=4``.

Ordering: ``ordering=True`` (the default), so a message's key is its Pub/Sub
ordering key. Messages of one key are handed out in publish order, and a
nacked or expired one comes back ahead of the later messages of its key;
delayed messages (``send(delay=...)``, nacks beyond 600 s) are republished when
due, behind whatever their key published meanwhile. Messages without a key, and
messages of different keys, come in no particular order; competing consumers
interleave. The suite assumes no order.

What the emulator does differently from Pub/Sub (none of it is relied on here):
it ignores StreamingPull flow control (which is one reason the transport uses
synchronous pull); on an ordered subscription it ignores a nack (modack 0)
while later messages of the same key are outstanding, redelivering only at the
ack deadline, and it silently drops, instead of dead-lettering, an ordered
message that exhausts ``max_delivery_attempts``; it accepts ack deadlines below
Pub/Sub's 10 s minimum and modacks above its 600 s maximum.
"""

from __future__ import annotations

import uuid
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING

import anyio

from flowkit.transports.pubsub._transport import REASON, PubSubTransport

from .pubsub_emulator import shared_emulator

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Callable
    from pathlib import Path

PROJECT = "flowkit-test"


class PubSubFactory:
    """A fresh topic prefix per test; a new transport (and gRPC channels) per ``make()``."""

    name = "pubsub"
    backends = ("asyncio", "trio")
    visibility_timeout = 1.0
    flow_control = 4

    @asynccontextmanager
    async def open(self, tmp_path: Path) -> AsyncIterator[Callable[[], PubSubTransport]]:
        shared_emulator()
        prefix = f"fk{uuid.uuid4().hex[:12]}"
        made: list[PubSubTransport] = []

        def make() -> PubSubTransport:
            transport = PubSubTransport(
                PROJECT,
                topic_prefix=prefix,
                ack_deadline=self.visibility_timeout,
                flow_control=self.flow_control,
            )
            made.append(transport)
            return transport

        try:
            yield make
        finally:
            for transport in made:
                await transport.close()

    async def dead_letters(self, transport: PubSubTransport, queue: str) -> list[tuple[bytes, str]]:
        """Peek at the dead-letter subscription: pull what it holds, then nack it back."""
        return await anyio.to_thread.run_sync(peek_dead_letters, transport, queue)


def peek_dead_letters(transport: PubSubTransport, queue: str) -> list[tuple[bytes, str]]:
    """``(body, reason)`` of every message on ``queue``'s dead-letter subscription."""
    from google.api_core.exceptions import DeadlineExceeded
    from google.auth.credentials import AnonymousCredentials
    from google.pubsub_v1 import SubscriberClient

    subscription = transport.names(queue).dead_subscription
    client = SubscriberClient(credentials=AnonymousCredentials())
    try:
        try:
            response = client.pull(subscription=subscription, max_messages=1000, timeout=2.0)
        except DeadlineExceeded:  # the emulator holds an empty pull until its deadline
            return []
        received = list(response.received_messages)
        if received:
            ack_ids = [r.ack_id for r in received]
            client.modify_ack_deadline(
                subscription=subscription, ack_ids=ack_ids, ack_deadline_seconds=0
            )
        return [(bytes(r.message.data), r.message.attributes.get(REASON, "")) for r in received]
    finally:
        client.transport.close()


FACTORY = PubSubFactory()

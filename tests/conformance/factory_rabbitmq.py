"""``RabbitMQTransport`` in the transport conformance suite.

Talks to the real RabbitMQ on loopback (``FLOWKIT_TEST_RABBITMQ`` overrides the
URL). Each test gets a unique queue prefix; every queue the test's transports
declared (work queues, their ``.dlq`` and the delay holding queues) is deleted
after. Every ``make()`` is a new transport with its own connection, as a
separate worker process would be. aio-pika is asyncio-only, so this factory runs
on asyncio alone (its tests are marked ``asyncio_only``). RabbitMQ itself has
no visibility timeout; the transport's client-side one is set to
``visibility_timeout`` here so redelivery tests are quick.

Ordering: a quorum queue hands messages out FIFO, so one consumer sees them in
publish order until something is redelivered. A nack (``basic.nack`` requeue)
or an expired lease puts the message back for immediate redelivery, ahead of
or behind others depending on the server version; a delayed send or delayed
nack re-enters the queue behind whatever is there when its TTL runs out. With
competing consumers each channel prefetches its own run of messages, so they
interleave; ``key`` implies no ordering.
"""

from __future__ import annotations

import os
import uuid
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Any, ClassVar

from flowkit.transports.rabbitmq._transport import REASON_HEADER, RabbitMQTransport

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Callable, Iterable
    from pathlib import Path

RABBITMQ_URL = os.environ.get("FLOWKIT_TEST_RABBITMQ", "amqp://guest:guest@127.0.0.1:5672/")


class RabbitMQFactory:
    """A unique queue prefix per test; a new transport (and connection) per ``make()``."""

    name = "rabbitmq"
    backends = ("asyncio",)
    visibility_timeout = 1.0
    options: ClassVar[dict[str, Any]] = {}  # more RabbitMQTransport keywords

    @asynccontextmanager
    async def open(self, tmp_path: Path) -> AsyncIterator[Callable[[], RabbitMQTransport]]:
        prefix = f"fk_test_{uuid.uuid4().hex[:12]}"
        made: list[RabbitMQTransport] = []

        def make() -> RabbitMQTransport:
            transport = RabbitMQTransport(
                RABBITMQ_URL,
                queue_prefix=prefix,
                visibility_timeout=self.visibility_timeout,
                **self.options,
            )
            made.append(transport)
            return transport

        try:
            yield make
        finally:
            for transport in made:
                await transport.close()
            await delete_queues(name for t in made for name in t.declared_queues)

    async def dead_letters(
        self, transport: RabbitMQTransport, queue: str
    ) -> list[tuple[bytes, str]]:
        """Peek at the dead-letter queue: get every message unacked, then let them go back."""
        import aio_pika

        parked: list[tuple[bytes, str]] = []
        connection = await aio_pika.connect(RABBITMQ_URL)
        async with connection:
            channel = await connection.channel()
            dlq = await channel.get_queue(f"{transport.queue_name(queue)}.dlq")
            while (message := await dlq.get(fail=False)) is not None:
                parked.append((message.body, str(message.headers.get(REASON_HEADER))))
        return parked


async def delete_queues(names: Iterable[str]) -> None:
    """Delete the queues (deleting one that does not exist is not an error in RabbitMQ)."""
    import aio_pika

    connection = await aio_pika.connect(RABBITMQ_URL)
    async with connection:
        channel = await connection.channel()
        for name in sorted(set(names)):
            await channel.queue_delete(name, if_unused=False, if_empty=False)


FACTORY = RabbitMQFactory()

"""A transport's optional ``connect(queue)``: it reaches the broker and declares the queue.

Against the real Redis, RabbitMQ and NATS on loopback (``FLOWKIT_TEST_REDIS``,
``FLOWKIT_TEST_RABBITMQ``, ``FLOWKIT_TEST_NATS`` override the addresses), on a
prefix unique to the test, ``connect`` succeeds and may be called again; against
a closed port it raises TransportError promptly. Every SDK here is asyncio-only.
"""

from __future__ import annotations

import os
import uuid
from typing import TYPE_CHECKING, Any

import anyio
import pytest
from conformance.factory_nats import delete_streams
from test_transport_rabbitmq_redis import delete_keys, delete_queues

from flowkit import TransportError
from flowkit.transports.nats._transport import NATSTransport
from flowkit.transports.rabbitmq._transport import RabbitMQTransport
from flowkit.transports.redis._transport import RedisTransport

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Callable

pytestmark = [
    pytest.mark.anyio,
    pytest.mark.asyncio_only,
    pytest.mark.parametrize("anyio_backend", ["asyncio"]),
]

REDIS = os.environ.get("FLOWKIT_TEST_REDIS", "redis://127.0.0.1:6379/0")
RABBITMQ = os.environ.get("FLOWKIT_TEST_RABBITMQ", "amqp://guest:guest@127.0.0.1:5672/")
NATS = os.environ.get("FLOWKIT_TEST_NATS", "nats://127.0.0.1:4222")
CLOSED = {  # nothing listens on port 1
    "redis": "redis://127.0.0.1:1/0",
    "rabbitmq": "amqp://guest:guest@127.0.0.1:1/",
    "nats": "nats://127.0.0.1:1",
}
PROMPTLY = 15.0  # a connect to a closed port fails within this


def build(broker: str, url: str, prefix: str) -> Any:
    if broker == "redis":
        return RedisTransport(url, prefix=prefix)
    if broker == "rabbitmq":
        return RabbitMQTransport(url, queue_prefix=prefix)
    return NATSTransport(url, stream_prefix=prefix.upper())


@pytest.fixture
async def make() -> AsyncIterator[Callable[[str, str], Any]]:
    """Makes transports on a prefix unique to the test; closes them, deletes what they made."""
    prefix = f"fk_test_{uuid.uuid4().hex[:12]}"
    made: list[tuple[str, Any]] = []

    def make(broker: str, url: str) -> Any:
        made.append((broker, build(broker, url, prefix)))
        return made[-1][1]

    yield make
    for _, transport in made:
        await transport.close()
    for broker, transport in made:
        if broker == "redis":
            await delete_keys(f"{prefix}:*")
        elif broker == "rabbitmq":
            await delete_queues(transport.declared_queues)
        elif transport.url == NATS:
            await delete_streams(prefix.upper())


async def test_redis_connect_creates_the_group_and_is_idempotent(
    make: Callable[[str, str], Any],
) -> None:
    transport: RedisTransport = make("redis", REDIS)
    with anyio.fail_after(PROMPTLY):
        await transport.connect("q")
        await transport.connect("q")
        again: RedisTransport = make("redis", REDIS)  # another process, same group
        await again.connect("q")
        await transport.send("q", b"after connect")
        deliveries: Any = transport.receive("q")
        delivery = await deliveries.__anext__()
        assert b"after connect" == delivery.body
        await delivery.ack()
        await deliveries.aclose()


async def test_rabbitmq_connect_declares_the_queues_and_is_idempotent(
    make: Callable[[str, str], Any],
) -> None:
    transport: RabbitMQTransport = make("rabbitmq", RABBITMQ)
    with anyio.fail_after(PROMPTLY):
        await transport.connect("q")
        await transport.connect("q")
        await make("rabbitmq", RABBITMQ).connect("q")  # another process: declared as it is
    name = transport.queue_name("q")
    assert {name, f"{name}.dlq"} <= transport.declared_queues


async def test_nats_connect_creates_the_streams_and_is_idempotent(
    make: Callable[[str, str], Any],
) -> None:
    transport: NATSTransport = make("nats", NATS)
    with anyio.fail_after(PROMPTLY):
        await transport.connect("q")
        await transport.connect("q")
        await make("nats", NATS).connect("q")  # another process: the same consumer
        await transport.send("q", b"after connect")
        deliveries: Any = transport.receive("q")
        delivery = await deliveries.__anext__()
        assert b"after connect" == delivery.body
        await delivery.ack()
        await deliveries.aclose()


@pytest.mark.parametrize("broker", sorted(CLOSED))
async def test_connect_to_a_closed_port_raises_transport_error_promptly(
    broker: str, make: Callable[[str, str], Any]
) -> None:
    transport = make(broker, CLOSED[broker])
    with anyio.fail_after(PROMPTLY), pytest.raises(TransportError, match=r"127\.0\.0\.1:1\b"):
        await transport.connect("q")

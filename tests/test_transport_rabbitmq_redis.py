"""What RabbitMQTransport and RedisTransport do beyond the shared conformance suite.

Dead letters as stored on the broker, attempts carried through delayed nacks,
``max_deliveries``, foreign messages, closing, leases past the visibility
timeout and configuration. Talks to the real RabbitMQ and Redis on loopback
(``FLOWKIT_TEST_RABBITMQ`` / ``FLOWKIT_TEST_REDIS`` override the addresses);
aio-pika and redis-py's asyncio client are asyncio-only, so every test here runs
on asyncio alone (marked ``asyncio_only``).
"""

from __future__ import annotations

import os
import uuid
from typing import TYPE_CHECKING, Any

import aio_pika
import anyio
import pytest
import redis.asyncio

from flowkit import TransportError
from flowkit.stores._urls import ConfigurationError
from flowkit.transports import from_url
from flowkit.transports._protocol import DeliveryError, Outgoing
from flowkit.transports.rabbitmq._transport import REASON_HEADER, RabbitMQTransport
from flowkit.transports.redis._transport import RedisTransport

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Callable, Iterable

    from flowkit.transports import Delivery, Transport

RABBITMQ_URL = os.environ.get("FLOWKIT_TEST_RABBITMQ", "amqp://guest:guest@127.0.0.1:5672/")
REDIS_URL = os.environ.get("FLOWKIT_TEST_REDIS", "redis://127.0.0.1:6379/0")
ON_ASYNCIO = [
    pytest.mark.anyio,
    pytest.mark.asyncio_only,
    pytest.mark.parametrize("anyio_backend", ["asyncio"]),
]
WAIT = 20.0  # bound on any single wait


async def first(transport: Transport, queue: str = "q") -> Delivery:
    """The next delivery of ``queue``, from a receive loop closed right after.

    Only for Redis: a RabbitMQ delivery is settled on the channel of its loop.
    """
    deliveries: Any = transport.receive(queue)
    try:
        with anyio.fail_after(WAIT):
            delivery: Delivery = await deliveries.__anext__()
            return delivery
    finally:
        await deliveries.aclose()


@pytest.fixture
async def rabbit() -> AsyncIterator[Callable[..., RabbitMQTransport]]:
    """Makes RabbitMQ transports on a queue prefix unique to the test; deletes their queues."""
    prefix = f"fk_test_{uuid.uuid4().hex[:12]}"
    made: list[RabbitMQTransport] = []

    def make(**options: Any) -> RabbitMQTransport:
        made.append(RabbitMQTransport(RABBITMQ_URL, queue_prefix=prefix, **options))
        return made[-1]

    yield make
    for transport in made:
        await transport.close()
    await delete_queues(name for t in made for name in t.declared_queues)


@pytest.fixture
async def red() -> AsyncIterator[Callable[..., RedisTransport]]:
    """Makes Redis transports on a key prefix unique to the test; deletes its keys."""
    prefix = f"fk_test_{uuid.uuid4().hex[:12]}"
    made: list[RedisTransport] = []

    def make(**options: Any) -> RedisTransport:
        options.setdefault("block_ms", 100)
        made.append(RedisTransport(REDIS_URL, prefix=prefix, **options))
        return made[-1]

    yield make
    for transport in made:
        await transport.close()
    await delete_keys(f"{prefix}:*")


async def delete_queues(names: Iterable[str]) -> None:
    async with await aio_pika.connect(RABBITMQ_URL) as connection:
        channel = await connection.channel()
        for name in sorted(set(names)):
            await channel.queue_delete(name, if_unused=False, if_empty=False)


async def delete_keys(pattern: str) -> None:
    client = redis.asyncio.Redis.from_url(REDIS_URL)
    keys = [key async for key in client.scan_iter(pattern)]
    if keys:
        await client.delete(*keys)
    await client.aclose()


async def amqp_get_all(queue: str) -> list[aio_pika.abc.AbstractIncomingMessage]:
    """Every message now in ``queue``, taken off it."""
    taken = []
    async with await aio_pika.connect(RABBITMQ_URL) as connection:
        channel = await connection.channel()
        amqp_queue = await channel.get_queue(queue)
        while (message := await amqp_queue.get(fail=False)) is not None:
            await message.ack()
            taken.append(message)
    return taken


class TestRabbitMQDeadLetters:
    """A dead letter is a copy in ``<queue>.dlq`` with the reason, headers, key and attempts."""

    pytestmark = ON_ASYNCIO

    async def test_stored_with_reason(self, rabbit: Callable[..., RabbitMQTransport]) -> None:
        transport = rabbit()
        await transport.send("q", b"poison", key="run-1", headers={"h": "v"})
        deliveries: Any = transport.receive("q")
        with anyio.fail_after(WAIT):
            await (await deliveries.__anext__()).dead_letter("bad input")
        await deliveries.aclose()
        [parked] = await amqp_get_all(f"{transport.queue_name('q')}.dlq")
        assert b"poison" == parked.body
        headers = parked.headers
        assert ("bad input", "v", "run-1") == (
            headers[REASON_HEADER],
            headers["h"],
            headers["x-flowkit-key"],
        )
        assert 1 == headers["x-flowkit-attempts"]

    async def test_max_deliveries(self, rabbit: Callable[..., RabbitMQTransport]) -> None:
        transport = rabbit(max_deliveries=2)
        await transport.send("q", b"crashes workers")
        deliveries: Any = transport.receive("q")
        with anyio.fail_after(WAIT):
            for attempt in (1, 2):
                delivery = await deliveries.__anext__()
                assert attempt == delivery.attempt
                await delivery.nack()
            await transport.send("q", b"next")
            assert b"next" == (await deliveries.__anext__()).body
        await deliveries.aclose()
        [parked] = await amqp_get_all(f"{transport.queue_name('q')}.dlq")
        assert "delivered 3 times (max_deliveries=2)" == parked.headers[REASON_HEADER]


class TestRabbitMQSendMany:
    """``send_many`` publishes every message, then acks the delivery given."""

    pytestmark = ON_ASYNCIO

    async def test_sends_then_acks(self, rabbit: Callable[..., RabbitMQTransport]) -> None:
        transport = rabbit()
        await transport.send("q", b"running")
        deliveries: Any = transport.receive("q")
        messages = [Outgoing("q", b"one", "run/a", {"h": "1"}), Outgoing("q", b"two")]
        with anyio.fail_after(WAIT):
            held = await deliveries.__anext__()
            await transport.send_many(messages, then_ack=held)
            got = [await deliveries.__anext__() for _ in range(2)]
            with pytest.raises(DeliveryError):  # acked by send_many
                await held.ack()
            for delivery in got:
                await delivery.ack()
        await deliveries.aclose()
        assert {(b"one", "run/a"), (b"two", None)} == {(d.body, d.key) for d in got}


class TestRabbitMQAttempts:
    """Attempts count on through delayed nacks, which republish the message."""

    pytestmark = ON_ASYNCIO

    async def test_through_delayed_nacks(self, rabbit: Callable[..., RabbitMQTransport]) -> None:
        transport = rabbit()
        await transport.send("q", b"retry me", key="k", headers={"h": "v"})
        deliveries: Any = transport.receive("q")
        seen = []
        with anyio.fail_after(WAIT):
            for _ in range(3):
                delivery = await deliveries.__anext__()
                seen.append((delivery.attempt, delivery.key, dict(delivery.headers)))
                await delivery.nack(requeue_after=0.05)
        await deliveries.aclose()
        assert [(n, "k", {"h": "v"}) for n in (1, 2, 3)] == seen
        assert f"{transport.queue_name('q')}.delay.50" in transport.declared_queues

    async def test_foreign_message(self, rabbit: Callable[..., RabbitMQTransport]) -> None:
        transport = rabbit()
        await transport.send("q", b"declares the queue")
        deliveries: Any = transport.receive("q")
        with anyio.fail_after(WAIT):
            await (await deliveries.__anext__()).ack()
            async with await aio_pika.connect(RABBITMQ_URL) as connection:
                channel = await connection.channel()
                headers: Any = {
                    "n": 7,
                    "raw": bytearray(b"\xffbytes"),
                    "x-flowkit-attempts": "junk",
                }
                message = aio_pika.Message(b"foreign", headers=headers)
                await channel.default_exchange.publish(message, transport.queue_name("q"))
            delivery = await deliveries.__anext__()
            await delivery.ack()
        await deliveries.aclose()
        assert (b"foreign", None, 1) == (delivery.body, delivery.key, delivery.attempt)
        assert {"n": "7", "raw": "\ufffdbytes"} == dict(delivery.headers)


class TestRabbitMQClose:
    """Closing the transport ends a receive loop that is waiting for messages."""

    pytestmark = ON_ASYNCIO

    async def test_ends_waiting_receiver(self, rabbit: Callable[..., RabbitMQTransport]) -> None:
        transport = rabbit()
        receiving, ended = anyio.Event(), anyio.Event()

        async def consume() -> None:
            async for _ in transport.receive("q"):
                receiving.set()
            ended.set()

        await transport.send("q", b"x")
        with anyio.fail_after(WAIT):
            async with anyio.create_task_group() as tg:
                tg.start_soon(consume)
                await receiving.wait()
                await transport.close()
                await ended.wait()


class TestRedisDeadLetters:
    """A dead letter is the entry's fields in ``<queue>:dlq`` plus ``reason`` and ``attempt``."""

    pytestmark = ON_ASYNCIO

    async def test_stored_with_reason(self, red: Callable[..., RedisTransport]) -> None:
        transport = red()
        await transport.send("q", b"poison", key="run-1", headers={"h": "v"})
        delivery = await first(transport)
        await delivery.nack()
        delivery = await first(transport)
        await delivery.dead_letter("bad input")
        client = redis.asyncio.Redis.from_url(REDIS_URL)
        [(_, fields)] = await client.xrange(transport.keys("q")[-1])
        await client.aclose()
        assert {
            b"body": b"poison",
            b"key": b"run-1",
            b"headers": b'{"h":"v"}',
            b"attempt": b"2",
            b"reason": b"bad input",
        } == fields

    async def test_foreign_entry(self, red: Callable[..., RedisTransport]) -> None:
        transport = red()
        client = redis.asyncio.Redis.from_url(REDIS_URL)
        await client.xadd(transport.keys("q")[0], {"junk": "1", "headers": "[not an object"})
        await client.aclose()
        delivery = await first(transport)
        assert (b"", {}, None, 1) == (
            delivery.body,
            dict(delivery.headers),
            delivery.key,
            delivery.attempt,
        )
        await delivery.dead_letter("malformed")


class TestRedisSendMany:
    """``send_many`` adds every message, then acks the delivery given, in one script."""

    pytestmark = ON_ASYNCIO

    async def test_sends_then_acks(self, red: Callable[..., RedisTransport]) -> None:
        transport = red()
        await transport.send("q", b"running")
        held = await first(transport)
        messages = [
            Outgoing("q", b"one", "run/a", {"h": "1"}),
            Outgoing("other", b"two"),
            Outgoing("q", b"urgent", priority=5),
        ]
        await transport.send_many(messages, then_ack=held)
        got = [await first(transport) for _ in range(2)]
        assert [(b"urgent", None), (b"one", "run/a")] == [(d.body, d.key) for d in got]
        assert {"h": "1"} == dict(got[1].headers)
        assert b"two" == (await first(transport, "other")).body
        with pytest.raises(DeliveryError):  # acked by send_many
            await held.ack()

    async def test_a_delivery_no_longer_held(self, red: Callable[..., RedisTransport]) -> None:
        """The messages are sent, and the ack refused, as ``send`` then ``ack`` would."""
        transport = red()
        await transport.send("q", b"running")
        held = await first(transport)
        await held.ack()
        with pytest.raises(DeliveryError):
            await transport.send_many([Outgoing("q", b"next")], then_ack=held)
        assert b"next" == (await first(transport)).body

    async def test_without_an_ack(self, red: Callable[..., RedisTransport]) -> None:
        transport = red()
        await transport.send_many([Outgoing("q", b"a"), Outgoing("q", b"b")])
        assert [b"a", b"b"] == [(await first(transport)).body for _ in range(2)]


class TestRedisLease:
    """``extend`` holds a delivery past the visibility timeout; other consumers wait."""

    pytestmark = ON_ASYNCIO

    async def test_extend_past_visibility(self, red: Callable[..., RedisTransport]) -> None:
        mine, theirs = red(visibility_timeout=0.3), red(visibility_timeout=0.3)
        await mine.send("q", b"long")
        held = await first(mine)
        await held.extend(30.0)
        await mine.send("q", b"marker", delay=1.0)  # arrives after three visibility timeouts
        assert b"marker" == (await first(theirs)).body
        await held.ack()


class TestRedisGiveBack:
    """Entries read in a batch but never handed over go back when the loop ends."""

    pytestmark = ON_ASYNCIO

    async def test_unyielded_entries_return(self, red: Callable[..., RedisTransport]) -> None:
        reader, other = red(), red()
        for body in (b"one", b"two", b"three"):
            await reader.send("q", body)
        assert b"one" == (await first(reader)).body  # read all three, handed over one
        deliveries: Any = other.receive("q")
        with anyio.fail_after(WAIT):
            rest = [await deliveries.__anext__() for _ in range(2)]
        await deliveries.aclose()
        assert [(b"two", 1), (b"three", 1)] == [(d.body, d.attempt) for d in rest]


class TestRedisConsumers:
    """A transport leaves its consumer group on close if it holds nothing, else stays."""

    pytestmark = ON_ASYNCIO

    async def test_leaves_when_idle(self, red: Callable[..., RedisTransport]) -> None:
        idle, holding = red(count=1), red()
        await idle.send("q", b"acked")
        await idle.send("q", b"held")
        await (await first(idle)).ack()
        assert b"held" == (await first(holding)).body
        await idle.close()
        await holding.close()
        client = redis.asyncio.Redis.from_url(REDIS_URL)
        consumers = await client.xinfo_consumers(idle.keys("q")[0], "flowkit")
        await client.aclose()
        assert [holding.consumer.encode()] == [c["name"] for c in consumers]


class TestRedisBursts:
    """More concurrent commands than pooled connections wait for one instead of failing."""

    pytestmark = ON_ASYNCIO

    async def test_a_burst_beyond_the_pool(self, red: Callable[..., RedisTransport]) -> None:
        transport = red(max_connections=2)
        bodies = [str(i).encode() for i in range(150)]
        async with anyio.create_task_group() as tg:
            for body in bodies:
                tg.start_soon(transport.send, "q", body)
        received = []
        async for delivery in transport.receive("q"):
            received.append(delivery.body)
            await delivery.ack()
            if len(received) == len(bodies):
                break
        assert sorted(bodies) == sorted(received)


class TestAsyncioOnly:
    """Under trio, both transports refuse with a clear error instead of failing obscurely."""

    pytestmark = [pytest.mark.anyio, pytest.mark.parametrize("anyio_backend", ["trio"])]

    async def test_rabbitmq(self) -> None:
        transport = RabbitMQTransport(RABBITMQ_URL)
        with pytest.raises(TransportError, match="asyncio only"):
            await transport.send("q", b"x")

    async def test_redis(self) -> None:
        transport = RedisTransport(REDIS_URL)
        with pytest.raises(TransportError, match="asyncio only"):
            await transport.send("q", b"x")


class TestConfiguration:
    """``from_url`` builds either transport with options; bad options are refused up front."""

    def test_from_url(self) -> None:
        rabbit = from_url("amqp://guest:s3cret@127.0.0.1:5672/", prefetch=4, queue_prefix="p")
        assert isinstance(rabbit, RabbitMQTransport)
        assert (4, "p") == (rabbit.prefetch, rabbit.queue_prefix)
        assert "s3cret" not in repr(rabbit)
        red = from_url("redis://127.0.0.1:6379/0", group="g", consumer="c1")
        assert isinstance(red, RedisTransport)
        assert ("g", "c1") == (red.group, red.consumer)

    @pytest.mark.parametrize(
        "build",
        [
            lambda: RabbitMQTransport("redis://127.0.0.1/"),
            lambda: RabbitMQTransport(prefetch=0),
            lambda: RabbitMQTransport(max_deliveries=0),
            lambda: RabbitMQTransport(visibility_timeout=0),
            lambda: RedisTransport("amqp://127.0.0.1/"),
            lambda: RedisTransport(visibility_timeout=0),
            lambda: RedisTransport(block_ms=0),
            lambda: RedisTransport(count=0),
        ],
    )
    def test_bad_options(self, build: Callable[[], object]) -> None:
        with pytest.raises(ConfigurationError):
            build()

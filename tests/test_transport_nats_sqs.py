"""What ``NATSTransport`` and ``SQSTransport`` do beyond the shared conformance suite.

NATS tests talk to the real NATS server with JetStream on 127.0.0.1:4222 (see
``tests/conformance/factory_nats.py``), each test under its own stream prefix.
No real SQS is reachable here: SQS tests start a private ``moto_server`` on a
free loopback port, a local stand-in speaking the real SQS HTTP API to the real
aiobotocore client (``tests/conformance/factory_sqs.py``). Both SDKs are
asyncio-only, so these tests run on asyncio alone.
"""

from __future__ import annotations

import time
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Any

import anyio
import pytest
from conformance.factory_nats import FACTORY as NATS
from conformance.factory_sqs import FACTORY as SQS

from flowkit import TransportError
from flowkit.stores._urls import ConfigurationError
from flowkit.transports import DeliveryError, from_url
from flowkit.transports.nats._transport import NATSTransport
from flowkit.transports.sqs import _transport as sqs_module
from flowkit.transports.sqs._transport import SQSTransport

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Callable
    from pathlib import Path

    from anyio.abc import ObjectReceiveStream

    from flowkit.transports import Delivery, Transport

    Make = Callable[..., Any]

pytestmark = [pytest.mark.anyio, pytest.mark.asyncio_only]

QUEUE = "jobs"
TIMEOUT = 20.0


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture(params=["nats", "sqs"])
async def make(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Make]:
    factory = NATS if request.param == "nats" else SQS
    async with factory.open(tmp_path) as made:
        yield made


@pytest.fixture
async def make_nats(tmp_path: Path) -> AsyncIterator[Make]:
    async with NATS.open(tmp_path) as made:
        yield made


@pytest.fixture
async def make_sqs(tmp_path: Path) -> AsyncIterator[Make]:
    async with SQS.open(tmp_path) as made:
        yield made


# -- helpers -------------------------------------------------------------------------
def kind(request: pytest.FixtureRequest) -> str:
    """Which transport the ``make`` fixture builds in this test: "nats" or "sqs"."""
    return str(request.node.callspec.params["make"])


async def _pump(transport: Transport, queue: str, out: Any) -> None:
    deliveries = transport.receive(queue)
    try:
        async with out:
            async for delivery in deliveries:
                await out.send(delivery)
    finally:
        with anyio.CancelScope(shield=True):
            await deliveries.aclose()  # type: ignore[attr-defined]


@asynccontextmanager
async def consuming(
    transport: Transport, queue: str = QUEUE
) -> AsyncIterator[ObjectReceiveStream[Delivery]]:
    """A running consumer of ``queue``; its receive loop stops when the block ends."""
    send, receive = anyio.create_memory_object_stream["Delivery"](0)
    async with receive, anyio.create_task_group() as tg:
        tg.start_soon(_pump, transport, queue, send)
        yield receive
        tg.cancel_scope.cancel()


async def take(stream: ObjectReceiveStream[Delivery], timeout: float = TIMEOUT) -> Delivery:
    with anyio.fail_after(timeout):
        return await stream.receive()


# -- both transports -----------------------------------------------------------------
class TestEncoding:
    """Odd queue names, empty bodies and any key survive the broker's naming and encoding."""

    async def test_odd_queue_name_empty_body(self, make: Make) -> None:
        producer, consumer = make(), make()
        queue = "orders.v2/ü *>"
        await producer.send(queue, b"", key="run ü/1", headers={"a": "b"})
        async with consuming(consumer, queue) as stream:
            delivery = await take(stream)
            await delivery.ack()
        assert (b"", "run ü/1", "b", 1) == (
            delivery.body,
            delivery.key,
            delivery.headers.get("a"),
            delivery.attempt,
        )


class TestMaxDeliveries:
    """A message delivered too often ends in the dead-letter queue, not in a loop."""

    async def test_dead_lettered_after_the_limit(
        self, make: Make, request: pytest.FixtureRequest
    ) -> None:
        nats = "nats" == kind(request)
        limit = {"max_deliver": 2} if nats else {"max_receive_count": 2}
        producer, consumer = make(**limit), make(**limit)
        await producer.send(QUEUE, b"poison")
        await producer.send(QUEUE, b"marker", delay=2.0)
        attempts = []
        async with consuming(consumer) as stream:
            while (delivery := await take(stream)).body == b"poison":
                attempts.append(delivery.attempt)
                await delivery.nack()
            await delivery.ack()
        assert [1, 2] == attempts
        [parked] = await consumer.dead_letters(QUEUE)
        assert b"poison" == parked.body
        assert ("max_deliver=2" if nats else "maxReceiveCount=2") in parked.reason


class TestDeadLetterKeepsMessage:
    """The dead-letter queue keeps body, headers and reason."""

    async def test_none_yet(self, make: Make) -> None:
        """Reading an empty dead-letter queue (a worker's first look) is no error."""
        transport = make()
        await transport.send(QUEUE, b"fine")
        assert [] == await transport.dead_letters(QUEUE)

    async def test_headers_and_reason(self, make: Make) -> None:
        transport = make()
        await transport.send(QUEUE, b"bad", key="k", headers={"traceparent": "00-x"})
        async with consuming(transport) as stream:
            await (await take(stream)).dead_letter("no such node")
        [parked] = await transport.dead_letters(QUEUE)
        assert (b"bad", {"traceparent": "00-x"}, "no such node") == (
            parked.body,
            dict(parked.headers),
            parked.reason,
        )


class TestStoppedReceiver:
    """Messages fetched in a batch but never handed over come back at once, not after the lease."""

    async def test_unyielded_batch_returns(
        self, make: Make, request: pytest.FixtureRequest
    ) -> None:
        lease = {"nats": {"ack_wait": 60.0}, "sqs": {"visibility_timeout": 60}}[kind(request)]
        producer, first, second = make(**lease), make(batch=10, **lease), make(**lease)
        for body in (b"one", b"two", b"three"):
            await producer.send(QUEUE, body)
        deliveries = first.receive(QUEUE)
        with anyio.fail_after(TIMEOUT):
            taken = await anext(deliveries)  # the fetch took all three
        await taken.ack()
        await deliveries.aclose()  # two fetched, never yielded
        async with consuming(second) as stream:
            rest = [await take(stream, timeout=10.0) for _ in range(2)]  # well before the lease
            for delivery in rest:
                await delivery.ack()
        assert {b"one", b"two", b"three"} == {taken.body, *(d.body for d in rest)}


class TestFetchedBatch:
    """A message that waited behind the others of its fetched batch reaches its handler with
    a lease renewed, not with what is left of the one its fetch started."""

    async def test_late_in_its_batch_gets_a_fresh_lease(
        self, make: Make, request: pytest.FixtureRequest
    ) -> None:
        seconds = 6  # the lease's own clock is what is under test: its margins are seconds
        lease = {"nats": {"ack_wait": float(seconds)}, "sqs": {"visibility_timeout": seconds}}
        producer, consumer = make(), make(batch=2, **lease[kind(request)])
        for body in (b"first", b"second"):
            await producer.send(QUEUE, body)
        deliveries = consumer.receive(QUEUE)
        try:
            with anyio.fail_after(TIMEOUT):
                first = await anext(deliveries)  # the fetch took both
            fetched = time.monotonic()
            await anyio.sleep(0.6 * seconds)  # the first's handler takes most of a lease
            await first.ack()
            second = await anext(deliveries)
            # past the end of the lease the fetch started: the second is still held
            await anyio.sleep(max(0.0, fetched + 1.1 * seconds - time.monotonic()))
            await second.ack()
        finally:
            await deliveries.aclose()  # type: ignore[attr-defined]
        assert (b"first", b"second") == (first.body, second.body)


class TestSettledTwice:
    """A delivery settles once; a second settlement raises DeliveryError."""

    async def test_double_ack(self, make: Make) -> None:
        transport = make()
        await transport.send(QUEUE, b"once")
        async with consuming(transport) as stream:
            delivery = await take(stream)
            await delivery.ack()
            with pytest.raises(DeliveryError, match="already settled"):
                await delivery.ack()


class TestClose:
    """Closing a transport ends its receive loops."""

    async def test_close_ends_receive(self, make: Make) -> None:
        transport = make()
        await transport.send(QUEUE, b"warm-up")  # connects and creates the queue
        received = anyio.Event()
        ended = anyio.Event()

        async def consume() -> None:
            async for delivery in transport.receive(QUEUE):
                await delivery.ack()
                received.set()
            ended.set()

        with anyio.fail_after(TIMEOUT):
            async with anyio.create_task_group() as tg:
                tg.start_soon(consume)
                await received.wait()
                await transport.close()
                await ended.wait()
        with pytest.raises(TransportError, match="closed"):
            await transport.send(QUEUE, b"late")


# -- NATS ----------------------------------------------------------------------------
class TestNATSHeaders:
    """Headers NATS cannot carry, or that its server would act on, are refused before sending."""

    async def test_line_break_refused(self, make_nats: Make) -> None:
        with pytest.raises(TransportError, match="line breaks"):
            await make_nats().send(QUEUE, b"x", headers={"h": "a\r\nInjected: 1"})

    async def test_server_headers_refused(self, make_nats: Make) -> None:
        with pytest.raises(TransportError, match="reserved"):
            await make_nats().send(QUEUE, b"x", headers={"Nats-Msg-Id": "1"})


class TestNATSDelay:
    """A delayed message waits in the broker's hold subject and arrives as a first attempt."""

    async def test_first_attempt_after_delay(self, make_nats: Make) -> None:
        producer, consumer = make_nats(), make_nats()
        async with consuming(consumer) as stream:
            sent_at = time.monotonic()
            await producer.send(QUEUE, b"later", key="k", headers={"h": "v"}, delay=0.5)
            delivery = await take(stream)
            assert 0.5 <= time.monotonic() - sent_at
            await delivery.ack()
        assert (b"later", "k", {"h": "v"}, 1) == (
            delivery.body,
            delivery.key,
            dict(delivery.headers),
            delivery.attempt,
        )


# -- SQS -----------------------------------------------------------------------------
class TestSQSFifo:
    """With fifo=True, messages of one key arrive in order."""

    async def test_order_per_key(self, make_sqs: Make) -> None:
        producer, consumer = make_sqs(fifo=True), make_sqs(fifo=True)
        sent = [(key, f"{key}-{i}".encode()) for i in range(5) for key in ("a", "b")]
        for key, body in sent:
            await producer.send(QUEUE, body, key=key)
        got: dict[str | None, list[bytes]] = {"a": [], "b": []}
        async with consuming(consumer) as stream:
            for _ in sent:
                delivery = await take(stream)
                got[delivery.key].append(delivery.body)
                await delivery.ack()
        assert {k: [b for key, b in sent if key == k] for k in ("a", "b")} == got

    async def test_no_per_message_delay(self, make_sqs: Make) -> None:
        with pytest.raises(TransportError, match="FIFO"):
            await make_sqs(fifo=True).send(QUEUE, b"x", delay=5)


class TestSQSLongDelay:
    """A delay past SQS's limit hops through the queue and still arrives as a first attempt."""

    async def test_hops(self, make_sqs: Make, monkeypatch: pytest.MonkeyPatch) -> None:
        monkeypatch.setattr(sqs_module, "MAX_DELAY", 1)  # SQS's 900 s, scaled down
        producer, consumer = make_sqs(), make_sqs()
        async with consuming(consumer) as stream:
            sent_at = time.monotonic()
            await producer.send(QUEUE, b"much later", delay=2.5)
            delivery = await take(stream)
            assert 2.5 <= time.monotonic() - sent_at
            await delivery.ack()
        assert (b"much later", 1) == (delivery.body, delivery.attempt)


class TestSQSForeignMessages:
    """A message from another producer (plain text, no flowkit attributes) reads as its text."""

    async def test_plain_text(self, make_sqs: Make) -> None:
        transport: SQSTransport = make_sqs()
        url = await transport._queue_url(QUEUE)
        client = await transport._client()
        await client.send_message(QueueUrl=url, MessageBody="héllo")
        async with consuming(transport) as stream:
            delivery = await take(stream)
            await delivery.ack()
        assert (b"h\xc3\xa9llo", {}, None) == (delivery.body, dict(delivery.headers), delivery.key)


class TestSQSMissingQueue:
    """With create_queues=False a missing queue is a TransportError that says so."""

    async def test_missing(self, make_sqs: Make) -> None:
        with pytest.raises(TransportError, match="does not exist"):
            await make_sqs(create_queues=False).send(QUEUE, b"x")


# -- URLs ----------------------------------------------------------------------------
class TestFromURL:
    """``transports.from_url`` builds both from their URL forms, options in the query."""

    def test_nats(self) -> None:
        transport = from_url("nats://127.0.0.1:4222?stream_prefix=SHOP&ack_wait=12&batch=4")
        assert isinstance(transport, NATSTransport)
        assert ("nats://127.0.0.1:4222", "SHOP", 12.0, 4) == (
            transport.url,
            transport.stream_prefix,
            transport.ack_wait,
            transport.batch,
        )

    def test_sqs(self) -> None:
        transport = from_url("sqs://eu-west-1/shop?endpoint=http://127.0.0.1:9&fifo=true")
        assert isinstance(transport, SQSTransport)
        assert ("eu-west-1", "shop", "http://127.0.0.1:9", True) == (
            transport.region,
            transport.queue_prefix,
            transport.endpoint_url,
            transport.fifo,
        )
        assert "shop-jobs-dlq.fifo" == transport.queue_name("jobs", dead=True)

    @pytest.mark.parametrize(
        "url",
        [
            "nats://127.0.0.1:4222?prefetch=3",
            "nats://127.0.0.1:4222?ack_wait=soon",
            "nats://127.0.0.1:4222?stream_prefix=a.b",
            "sqs://us-east-1/shop?fifo=maybe",
            "sqs://key:secret@us-east-1/shop",
            "sqs://us-east-1/shop?batch=11",
        ],
    )
    def test_bad_urls(self, url: str) -> None:
        with pytest.raises(ConfigurationError) as caught:
            from_url(url)
        assert "secret" not in str(caught.value)

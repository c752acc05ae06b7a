"""``PubSubTransport`` against Google's official Pub/Sub emulator, on asyncio and trio.

Google Cloud cannot be reached from these machines. The emulator
(``tests/conformance/pubsub_emulator.py``, started once per test process on a
free loopback port) is Google's own server for the Pub/Sub gRPC API, and the
transport reaches it through the real google-cloud-pubsub client library
(``PUBSUB_EMULATOR_HOST``): the wire protocol and the client are the production
ones. A missing emulator fails these tests, it never skips them.

The shared suite (``tests/conformance/test_transport.py``) checks the protocol;
these tests check what is particular to Pub/Sub: the topology created on
demand, ordering keys, exact flow control between competing workers, a
consumer killed with SIGKILL, attempts counted by the server, its dead-letter
policy, and delays that do not inflate attempts.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Any

import anyio
import pytest
from conformance.pubsub_emulator import shared_emulator

from flowkit.stores._urls import ConfigurationError
from flowkit.transports import DeliveryError, from_url
from flowkit.transports.pubsub._transport import REASON, PubSubTransport

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Callable
    from pathlib import Path

    from anyio.abc import ObjectReceiveStream, ObjectSendStream

    from flowkit.transports.pubsub._transport import PubSubDelivery

    Make = Callable[..., PubSubTransport]
    Deliveries = ObjectReceiveStream[PubSubDelivery]

PROJECT = "flowkit-test"
QUEUE = "jobs"
TIMEOUT = 20.0

on_emulator = pytest.mark.anyio


@pytest.fixture
async def make() -> AsyncIterator[Make]:
    """New transports on one fresh topic prefix (1 s leases); all closed after the test."""
    shared_emulator()
    prefix = f"fk{uuid.uuid4().hex[:12]}"
    made: list[PubSubTransport] = []

    def make(**options: Any) -> PubSubTransport:
        settings = {"topic_prefix": prefix, "ack_deadline": 1.0, "flow_control": 4, **options}
        transport = PubSubTransport(PROJECT, **settings)
        made.append(transport)
        return transport

    yield make
    for transport in made:
        await transport.close()


async def _pump(
    transport: PubSubTransport, queue: str, out: ObjectSendStream[PubSubDelivery]
) -> None:
    deliveries = transport.receive(queue)
    try:
        async with out:
            async for delivery in deliveries:
                await out.send(delivery)
    finally:
        with anyio.CancelScope(shield=True):
            await deliveries.aclose()  # type: ignore[attr-defined]


@asynccontextmanager
async def consuming(transport: PubSubTransport, queue: str = QUEUE) -> AsyncIterator[Deliveries]:
    """A running receive loop on ``queue``, handing deliveries over one at a time."""
    send, receive = anyio.create_memory_object_stream["PubSubDelivery"](0)
    async with receive, anyio.create_task_group() as tg:
        tg.start_soon(_pump, transport, queue, send)
        yield receive
        tg.cancel_scope.cancel()


async def take(stream: Deliveries, count: int = 1) -> list[PubSubDelivery]:
    with anyio.fail_after(TIMEOUT):
        return [await stream.receive() for _ in range(count)]


@on_emulator
class TestTopology:
    """Topics and subscriptions are created on demand, configured as documented."""

    async def test_created_on_first_send(self, make: Make) -> None:
        transport = make(ack_deadline=45.0, max_delivery_attempts=7)
        await transport.send(QUEUE, b"x")
        names = transport.names(QUEUE)
        subscription = await anyio.to_thread.run_sync(
            lambda: transport._subscriber().get_subscription(subscription=names.subscription)
        )
        assert names.topic == subscription.topic
        assert (45, True) == (
            subscription.ack_deadline_seconds,
            subscription.enable_message_ordering,
        )
        assert names.dead_topic == subscription.dead_letter_policy.dead_letter_topic
        assert 7 == subscription.dead_letter_policy.max_delivery_attempts
        assert "expiration_policy" in subscription  # set without a ttl: it never expires

    async def test_create_false_uses_what_exists(self, make: Make) -> None:
        await make().send(QUEUE, b"first")
        locked_down = make(create=False)
        await locked_down.send(QUEUE, b"second")
        async with consuming(locked_down) as stream:
            deliveries = await take(stream, 2)
            for delivery in deliveries:
                await delivery.ack()
        assert {b"first", b"second"} == {d.body for d in deliveries}


@on_emulator
class TestRoundTrip:
    """Bodies, keys and headers arrive intact, keyed messages in publish order."""

    async def test_empty_body_and_unicode_headers(self, make: Make) -> None:
        producer, consumer = make(), make()
        await producer.send(QUEUE, b"", key="run-1/a", headers={"x-note": "ünïcödé"})
        async with consuming(consumer) as stream:
            (delivery,) = await take(stream)
            await delivery.ack()
        assert (b"", "run-1/a", 1) == (delivery.body, delivery.key, delivery.attempt)
        assert {"x-note": "ünïcödé"} == dict(delivery.headers)

    async def test_one_key_in_publish_order(self, make: Make) -> None:
        producer, consumer = make(), make(flow_control=1)
        bodies = [f"step-{i}".encode() for i in range(6)]
        for body in bodies:
            await producer.send(QUEUE, body, key="run-7/node")
        async with consuming(consumer) as stream:
            received = []
            for _ in bodies:
                (delivery,) = await take(stream)
                received.append(delivery.body)
                await delivery.ack()
        assert bodies == received


@on_emulator
class TestFlowControl:
    """A receive loop holds at most ``flow_control`` messages; the rest go to other workers."""

    async def test_competing_workers_share_a_backlog(self, make: Make) -> None:
        producer, greedy, other = make(), make(flow_control=2), make(ack_deadline=30.0)
        bodies = {f"job-{i}".encode() for i in range(6)}
        for body in bodies:
            await producer.send(QUEUE, body)
        async with consuming(greedy) as greedy_stream:
            held = await take(greedy_stream, 2)
            async with consuming(other) as other_stream:
                rest = await take(other_stream, 4)  # all four, while greedy holds its two
                for delivery in [*held, *rest]:
                    await delivery.ack()
        assert bodies == {d.body for d in [*held, *rest]}

    async def test_a_stopped_loop_hands_back_what_it_did_not_yield(self, make: Make) -> None:
        producer, first, second = make(), make(ack_deadline=60.0), make(ack_deadline=60.0)
        for i in range(4):
            await producer.send(QUEUE, f"job-{i}".encode())
        deliveries = first.receive(QUEUE)
        with anyio.fail_after(TIMEOUT):
            kept = await deliveries.__anext__()  # the loop pulled up to four, yielded one
        await deliveries.aclose()  # type: ignore[attr-defined]
        async with consuming(second) as stream:
            others = await take(stream, 3)  # long before the 60 s lease of the other three
            for delivery in others:
                await delivery.ack()
        await kept.ack()  # still held: the loop stopped, the lease did not
        assert 4 == len({kept.body, *(d.body for d in others)})


_CRASHING_CONSUMER = """
import sys, anyio
from flowkit.transports.pubsub._transport import PubSubTransport

async def main() -> None:
    transport = PubSubTransport(sys.argv[1], topic_prefix=sys.argv[2], ack_deadline=2.0)
    async for delivery in transport.receive(sys.argv[3]):
        print("holding", delivery.body.decode(), delivery.attempt, flush=True)
        await anyio.sleep_forever()

anyio.run(main)
"""


@on_emulator
class TestRedelivery:
    """Unsettled messages come back, and the server counts every delivery."""

    async def test_after_the_consumer_is_killed(self, make: Make) -> None:
        producer = make()
        await producer.send(QUEUE, b"survivor", key="run-9/charge")
        command = [sys.executable, "-c", _CRASHING_CONSUMER, PROJECT, producer.topic_prefix, QUEUE]
        with anyio.fail_after(TIMEOUT):
            async with await anyio.open_process(command, env=dict(os.environ)) as child:
                assert child.stdout is not None
                output = b""
                while b"\n" not in output:
                    output += await child.stdout.receive()
                child.send_signal(signal.SIGKILL)  # no close(), no hand-back: a crash
                await child.wait()
        assert b"holding survivor 1\n" == output
        async with consuming(make()) as stream:
            (again,) = await take(stream)
            await again.ack()
        assert (b"survivor", "run-9/charge", 2) == (again.body, again.key, again.attempt)

    async def test_attempts_count_nacks(self, make: Make) -> None:
        producer, consumer = make(), make()
        await producer.send(QUEUE, b"flaky")
        attempts = []
        async with consuming(consumer) as stream:
            for _ in range(3):
                (delivery,) = await take(stream)
                attempts.append(delivery.attempt)
                await (delivery.ack() if delivery.attempt == 3 else delivery.nack())
        assert [1, 2, 3] == attempts

    async def test_nack_with_delay_not_before(self, make: Make) -> None:
        producer, consumer = make(), make()
        await producer.send(QUEUE, b"later")
        async with consuming(consumer) as stream:
            (first,) = await take(stream)
            nacked_at = time.monotonic()
            await first.nack(requeue_after=1.5)
            (again,) = await take(stream)
            waited = time.monotonic() - nacked_at
            await again.ack()
        assert 1.5 <= waited
        assert (b"later", 2) == (again.body, again.attempt)


@on_emulator
class TestLease:
    """``extend`` keeps a delivery; a delivery whose lease ran out cannot be settled."""

    async def test_extend_outlasts_the_lease(self, make: Make) -> None:
        producer, mine, theirs = make(), make(flow_control=1), make()
        await producer.send(QUEUE, b"long")
        async with consuming(mine) as held_stream:
            (held,) = await take(held_stream)
            await held.extend(6.0)
            async with consuming(theirs) as other_stream:
                await producer.send(QUEUE, b"marker", delay=2.5)  # due after the 1 s lease
                (first,) = await take(other_stream)  # the marker, not the held message
                await first.ack()
            await held.ack()
        assert b"marker" == first.body

    async def test_settling_after_the_lease_raises(self, make: Make) -> None:
        producer, consumer = make(), make()
        await producer.send(QUEUE, b"slow")
        async with consuming(consumer) as stream:
            (stale,) = await take(stream)
            (current,) = await take(stream)  # redelivered once the 1 s lease ran out
            with pytest.raises(DeliveryError, match="lease ran out"):
                await stale.ack()
            await current.ack()
        assert (1, 2) == (stale.attempt, current.attempt)


@on_emulator
class TestDeadLetters:
    """Dead letters are kept on ``{queue}-dlq`` with their reason, and read back from it."""

    async def test_dead_letter_keeps_reason_and_key(self, make: Make) -> None:
        producer, consumer = make(), make()
        await producer.send(QUEUE, b"poison", key="run-3/parse", headers={"h": "v"})
        async with consuming(consumer) as stream:
            (delivery,) = await take(stream)
            await delivery.dead_letter("cannot parse")
        async with consuming(make(), f"{QUEUE}-dlq") as stream:
            (parked,) = await take(stream)
            await parked.ack()
        assert (b"poison", "run-3/parse") == (parked.body, parked.key)
        assert {"h": "v", REASON: "cannot parse"} == dict(parked.headers)

    async def test_server_dead_letters_after_max_attempts(self, make: Make) -> None:
        # unordered: the emulator drops, instead of dead-lettering, an ordered message; and
        # it moves a message to the dead-letter topic only when the work subscription is
        # pulled again, so the consumer keeps running until the dead letter is read
        producer, consumer = make(ordering=False), make(ordering=False)
        await producer.send(QUEUE, b"crashes-workers")
        async with consuming(consumer) as stream:
            for _ in range(5):  # max_delivery_attempts
                (delivery,) = await take(stream)
                await delivery.nack()
            async with consuming(make(ordering=False), f"{QUEUE}-dlq") as dead:
                (parked,) = await take(dead)
                await parked.ack()
        assert (b"crashes-workers", 5) == (parked.body, delivery.attempt)
        assert "5" == parked.headers["CloudPubSubDeadLetterSourceDeliveryCount"]


@on_emulator
class TestDelay:
    """A delayed message waits on the delay subscription, so its attempt stays 1."""

    async def test_not_before_the_delay(self, make: Make) -> None:
        producer, consumer = make(), make()
        async with consuming(consumer) as stream:
            sent_at = time.monotonic()
            await producer.send(QUEUE, b"delayed", key="run-5/sleep", delay=1.5)
            (delivery,) = await take(stream)
            waited = time.monotonic() - sent_at
            await delivery.ack()
        assert 1.5 <= waited
        assert (b"delayed", "run-5/sleep", 1) == (delivery.body, delivery.key, delivery.attempt)


@on_emulator
class TestClose:
    """Closing ends receive loops and hands back what they held."""

    async def test_close_ends_the_loop_and_hands_back(self, make: Make) -> None:
        producer, consumer = make(), make(ack_deadline=60.0)
        await producer.send(QUEUE, b"held")
        with anyio.fail_after(TIMEOUT):
            deliveries = consumer.receive(QUEUE)
            held = await deliveries.__anext__()
            await consumer.close()
            assert [] == [d async for d in deliveries]
        with pytest.raises(DeliveryError, match="closed"):
            await held.ack()
        async with consuming(make()) as stream:  # long before the 60 s lease
            (again,) = await take(stream)
            await again.ack()
        assert (b"held", 2) == (again.body, again.attempt)


_SEND_AND_RECEIVE = """
import sys, anyio
from flowkit.transports import from_url

async def main() -> None:
    transport = from_url(f"pubsub://{sys.argv[1]}?topic_prefix={sys.argv[2]}")
    await transport.send("jobs", b"via the emulator")
    async for delivery in transport.receive("jobs"):
        await delivery.ack()
        print(delivery.body.decode())
        break
    await transport.close()

anyio.run(main)
"""


class TestEmulatorHost:
    """With ``PUBSUB_EMULATOR_HOST`` set the transport uses the emulator, without credentials."""

    def test_no_credentials_needed(self, tmp_path: Path) -> None:
        env = {**os.environ, "PUBSUB_EMULATOR_HOST": shared_emulator()}
        env["GOOGLE_APPLICATION_CREDENTIALS"] = str(tmp_path / "no-such-key.json")
        prefix = f"fk{uuid.uuid4().hex[:12]}"
        command = [sys.executable, "-c", _SEND_AND_RECEIVE, PROJECT, prefix]
        done = subprocess.run(command, capture_output=True, text=True, env=env, timeout=60)
        assert (0, "via the emulator\n") == (done.returncode, done.stdout), done.stderr


class TestConfiguration:
    """URLs and options are checked before any call to Pub/Sub."""

    def test_from_url(self) -> None:
        url = "pubsub://my-project?topic_prefix=shop&flow_control=8&ordering=false&create=0"
        transport = from_url(url, ack_deadline=90)
        assert isinstance(transport, PubSubTransport)
        settings = (transport.project, transport.topic_prefix, transport.flow_control)
        assert ("my-project", "shop", 8) == settings
        assert (False, False, 90) == (transport.ordering, transport.create, transport.ack_deadline)
        assert "projects/my-project/topics/shop-jobs" == transport.names("jobs").topic

    def test_no_dead_letter_policy(self) -> None:
        assert None is from_url("pubsub://p?max_delivery_attempts=none").max_delivery_attempts

    @pytest.mark.parametrize(
        "url",
        [
            "pubsub://",
            "pubsub://p?colour=blue",
            "pubsub://p?flow_control=many",
            "pubsub://p?ordering=maybe",
            "pubsub://p?max_delivery_attempts=3",
            "pubsub://p?topic_prefix=goog-x",
            "pubsub://p?topic_prefix=9lives",
            "pubsub://p?flow_control=0",
            "pubsub://p?ack_deadline=0",
        ],
    )
    def test_rejected(self, url: str) -> None:
        with pytest.raises(ConfigurationError):
            from_url(url)

    def test_queue_names_are_escaped_injectively(self) -> None:
        transport = PubSubTransport("p", topic_prefix="fk")
        assert "projects/p/subscriptions/fk-a%2Fb%7Ec%25" == transport.names("a/b~c%").subscription
        assert transport.names("x~delay").topic != transport.names("x").delay_topic
        assert transport.names("x-dlq").topic == transport.names("x").dead_topic

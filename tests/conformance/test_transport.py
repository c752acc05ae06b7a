"""The ``Transport`` conformance suite: every transport passes the same tests.

Parametrised over the factories found in ``factory_*.py`` next to this file.
Each such module defines ``FACTORY``, an object with:

* ``name: str`` and ``backends: tuple[str, ...]``: ``("asyncio", "trio")``, or
  ``("asyncio",)`` for a transport whose SDK is asyncio-only (its params are
  then marked ``asyncio_only``);
* ``open(tmp_path)``: an async context manager yielding ``make()``, which
  returns a new connected transport on a broker namespace unique to the test
  (so a test can run several producers and consumers), all cleaned up on exit.
  A transport that lives in one process (MemoryTransport) hands back the same
  instance every time; the suite never closes a transport another party of the
  test still uses;
* ``visibility_timeout: float`` (optional, default 1.0): the visibility timeout
  or lease the factory configures; redelivery tests wait that long;
* ``stale_settle_skip: str`` (optional): why the broker cannot tell that a
  delivery's lease was taken over by another consumer; the test of that
  guarantee is then skipped with this reason (never silently);
* ``dead_letters(transport, queue)`` (optional, async): the ``(body, reason)``
  pairs dead-lettered from ``queue``; where present, the dead-letter tests also
  inspect the dead-letter queue.
* ``priorities: bool`` (optional, default False): whether ``send(priority=...)``
  orders the queue (highest first); a transport without it must accept the
  keyword and deliver the message all the same.
* ``priority_levels: int`` (optional, default 10): with ``priorities``, 2 for a
  transport that orders priorities 1-9 (FIFO among them) before 0.

Each factory module's docstring documents its transport's ordering: the suite
assumes none. Brokers run on loopback; consumers here pull deliveries through an
unbuffered stream, so a consumer holds at most one delivery it has not handed
over yet. No test asserts on wall-clock time except "not before the delay".
"""

from __future__ import annotations

import importlib
import math
import time
import uuid
from contextlib import asynccontextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

import anyio
import pytest

from flowkit import Client, Flow, RunStatus, TransportError, Worker
from flowkit.stores import MemoryStore
from flowkit.transports import Delivery, Transport
from flowkit.worker import NodeMessage

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Awaitable, Callable, Mapping

    from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream

    Make = Callable[[], Transport]
    Deliveries = MemoryObjectReceiveStream[Delivery]

pytestmark = pytest.mark.anyio

QUEUE = "conformance"
TIMEOUT = 20.0  # bound on any single wait; the suite's waits normally take well under a second
DELAY = 0.5


def _discover() -> list[Any]:
    here = Path(__file__).parent
    modules = sorted(path.stem for path in here.glob("factory_*.py"))
    return [importlib.import_module(f"{__package__}.{name}").FACTORY for name in modules]


FACTORIES = _discover()


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """Run every test once per (factory, anyio backend the factory supports)."""
    if "factory" not in metafunc.fixturenames:
        return
    params = [
        pytest.param(
            factory,
            backend,
            id=f"{factory.name}-{backend}",
            marks=[pytest.mark.asyncio_only] if tuple(factory.backends) == ("asyncio",) else [],
        )
        for factory in FACTORIES
        for backend in factory.backends
    ]
    metafunc.parametrize(("factory", "anyio_backend"), params)


@pytest.fixture
async def make(factory: Any, tmp_path: Path) -> AsyncIterator[Make]:
    async with factory.open(tmp_path) as make:
        yield make


# -- helpers -----------------------------------------------------------------------
def visibility(factory: Any) -> float:
    return float(getattr(factory, "visibility_timeout", 1.0))


async def _pump(transport: Transport, queue: str, out: MemoryObjectSendStream[Delivery]) -> None:
    deliveries = transport.receive(queue)
    try:
        async with out:
            async for delivery in deliveries:
                await out.send(delivery)
    finally:
        aclose = getattr(deliveries, "aclose", None)
        if aclose is not None:
            with anyio.CancelScope(shield=True):
                await aclose()


@asynccontextmanager
async def consuming(transport: Transport, queue: str = QUEUE) -> AsyncIterator[Deliveries]:
    """A running consumer of ``queue``; its receive loop stops when the block ends."""
    send, receive = anyio.create_memory_object_stream[Delivery](0)
    async with receive, anyio.create_task_group() as tg:
        tg.start_soon(_pump, transport, queue, send)
        yield receive
        tg.cancel_scope.cancel()


async def next_delivery(*streams: Deliveries, timeout: float = TIMEOUT) -> Delivery:
    """The next delivery from whichever consumer gets one first."""
    got: list[Delivery] = []
    with anyio.fail_after(timeout):
        async with anyio.create_task_group() as tg:

            async def take(stream: Deliveries) -> None:
                got.append(await stream.receive())
                tg.cancel_scope.cancel()

            for stream in streams:
                tg.start_soon(take, stream)
    return got[0]


async def assert_quiet(factory: Any, producer: Transport, *streams: Deliveries) -> None:
    """Nothing is redelivered: a marker sent to arrive after any lease runs out comes first."""
    marker = f"marker-{uuid.uuid4().hex}".encode()
    await producer.send(QUEUE, marker, delay=visibility(factory) * 1.5)
    delivery = await next_delivery(*streams)
    assert marker == delivery.body
    await delivery.ack()


async def held_until(event: anyio.Event, delivery: Delivery, lease: float) -> None:
    """Wait for ``event``, extending ``delivery`` every third of ``lease`` meanwhile."""
    while not event.is_set():
        with anyio.move_on_after(lease / 3):
            await event.wait()
        if not event.is_set():
            await delivery.extend(lease)


def assert_idle(*streams: Deliveries) -> None:
    """No consumer holds a delivery right now."""
    for stream in streams:
        with pytest.raises(anyio.WouldBlock):
            stream.receive_nowait()


async def dead_lettered(factory: Any, transport: Transport) -> list[tuple[bytes, str]] | None:
    """The factory's view of the dead-letter queue, or None if it offers none."""
    inspect = getattr(factory, "dead_letters", None)
    return None if inspect is None else list(await inspect(transport, QUEUE))


async def take_over(
    factory: Any, producer: Transport, stale: Delivery, *streams: Deliveries
) -> None:
    """Once ``stale``'s lease ran out and another claim holds the message, it cannot settle."""
    current = await next_delivery(*streams)
    assert b"contested" == current.body
    assert 2 <= current.attempt
    settles: list[Callable[[], Awaitable[None]]] = [
        stale.ack,
        stale.nack,
        lambda: stale.extend(60.0),
        lambda: stale.dead_letter("stale"),
    ]
    for settle in settles:
        with pytest.raises(TransportError):
            await settle()
    await current.ack()
    await assert_quiet(factory, producer, *streams)


def shared(transport: Transport, *others: Transport) -> bool:
    return any(transport is other for other in others)


# -- the suite ---------------------------------------------------------------------
class TestRoundTrip:
    """What is sent is what is received: body bytes, headers and key."""

    async def test_body_headers_key(self, make: Make) -> None:
        producer, consumer = make(), make()
        body = bytes(range(256)) + b"\x00end"
        headers = {
            "traceparent": "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
            "x-flowkit": "ünïcödé",
        }
        await producer.send(QUEUE, body, key="run-42", headers=headers)
        await producer.send(QUEUE, b"bare")
        async with consuming(consumer) as stream:
            received = {d.body: d for d in [await next_delivery(stream) for _ in range(2)]}
            for delivery in received.values():
                await delivery.ack()
        full, bare = received[body], received[b"bare"]
        assert isinstance(producer, Transport)
        assert isinstance(full, Delivery)
        assert headers == {name: full.headers.get(name) for name in headers}
        assert ("run-42", 1) == (full.key, full.attempt)
        assert (None, 1) == (bare.key, bare.attempt)

    async def test_many_messages_all_delivered(self, make: Make) -> None:
        producer, consumer = make(), make()
        bodies = [f"message-{i}".encode() for i in range(100)]
        for body in bodies:
            await producer.send(QUEUE, body)
        received: list[bytes] = []
        async with consuming(consumer) as stream:
            for _ in bodies:
                delivery = await next_delivery(stream)
                received.append(delivery.body)
                await delivery.ack()
        assert sorted(bodies) == sorted(received)


class TestAtLeastOnce:
    """An unsettled delivery comes back once its lease runs out, and settles normally then."""

    async def test_redelivered_after_consumer_dies(self, make: Make) -> None:
        producer, doomed = make(), make()
        await producer.send(QUEUE, b"survivor", key="k")
        async with consuming(doomed) as stream:
            first = await next_delivery(stream)
        if not shared(doomed, producer):
            await doomed.close()  # dies holding the delivery, unacked
        async with consuming(make()) as stream:
            again = await next_delivery(stream)
            assert (b"survivor", "k") == (again.body, again.key)
            assert 2 <= again.attempt
            assert 1 == first.attempt
            await again.ack()

    async def test_ack_after_redelivery(self, factory: Any, make: Make) -> None:
        producer, consumer = make(), make()
        await producer.send(QUEUE, b"slow")
        async with consuming(consumer) as stream:
            first = await next_delivery(stream)
            again = await next_delivery(stream)  # the lease ran out
            assert (b"slow", b"slow") == (first.body, again.body)
            await again.ack()
            await assert_quiet(factory, producer, stream)


class TestCompetingConsumers:
    """Consumers of one queue share its messages: each is processed once, by one of them."""

    async def test_share_the_work(self, factory: Any, make: Make) -> None:
        producer, consumers = make(), {"a": make(), "b": make()}
        bodies = [f"job-{i}".encode() for i in range(40)]
        for body in bodies:
            await producer.send(QUEUE, body)
        seen: dict[str, list[bytes]] = {"a": [], "b": []}
        holding = {"a": anyio.Event(), "b": anyio.Event()}
        all_done = anyio.Event()

        async def work(name: str, other: str, stream: Deliveries) -> None:
            async for delivery in stream:
                seen[name].append(delivery.body)
                holding[name].set()
                # each holds work before either goes on, its lease kept meanwhile (as a
                # worker's heartbeat keeps it): the other may be slow to get its first
                await held_until(holding[other], delivery, visibility(factory))
                await delivery.ack()
                if len(bodies) == len(seen["a"]) + len(seen["b"]):
                    all_done.set()

        async with consuming(consumers["a"]) as a, consuming(consumers["b"]) as b:
            with anyio.fail_after(TIMEOUT):
                async with anyio.create_task_group() as tg:
                    tg.start_soon(work, "a", "b", a)
                    tg.start_soon(work, "b", "a", b)
                    await all_done.wait()
                    tg.cancel_scope.cancel()
        assert sorted(bodies) == sorted(seen["a"] + seen["b"])
        assert seen["a"]
        assert seen["b"]


class TestNack:
    """A nacked message comes back: at once, or no earlier than ``requeue_after``."""

    async def test_redelivered(self, factory: Any, make: Make) -> None:
        producer, consumer = make(), make()
        await producer.send(QUEUE, b"again", key="k", headers={"h": "v"})
        async with consuming(consumer) as stream:
            first = await next_delivery(stream)
            await first.nack()
            again = await next_delivery(stream)
            assert (b"again", "k", "v") == (again.body, again.key, again.headers.get("h"))
            assert 2 <= again.attempt
            await again.ack()
            await assert_quiet(factory, producer, stream)

    async def test_requeue_after(self, make: Make) -> None:
        producer, consumer = make(), make()
        await producer.send(QUEUE, b"later")
        async with consuming(consumer) as stream:
            first = await next_delivery(stream)
            nacked_at = time.monotonic()
            await first.nack(requeue_after=DELAY)
            again = await next_delivery(stream)
            assert DELAY <= time.monotonic() - nacked_at
            assert b"later" == again.body
            await again.ack()


class TestLease:
    """Extending keeps a long handler's message; a lease taken over cannot be settled."""

    async def test_extend_keeps_message_from_others(self, factory: Any, make: Make) -> None:
        producer, mine, theirs = make(), make(), make()
        seconds = visibility(factory)
        await producer.send(QUEUE, b"long")
        async with consuming(mine) as held_stream:
            held = await next_delivery(held_stream)
            async with consuming(theirs) as other_stream:  # started later: it cannot claim first
                # three visibility timeouts, extending every third of one by two of them (a
                # broker slowed by a loaded machine must not let the lease run out between)
                for _ in range(9):
                    await anyio.sleep(seconds / 3)
                    await held.extend(2 * seconds)
                assert_idle(held_stream, other_stream)
                await held.ack()
                await assert_quiet(factory, producer, held_stream, other_stream)

    async def test_settling_a_taken_over_delivery_raises(self, factory: Any, make: Make) -> None:
        reason = getattr(factory, "stale_settle_skip", None)
        if reason:
            pytest.skip(f"{factory.name}: {reason}")
        producer, slow, fast = make(), make(), make()
        await producer.send(QUEUE, b"contested")
        async with consuming(slow) as slow_stream:
            stale = await next_delivery(slow_stream)
            async with consuming(fast) as fast_stream:
                await take_over(factory, producer, stale, slow_stream, fast_stream)


class TestDeadLetter:
    """A dead-lettered message leaves the queue, kept with its reason."""

    async def test_kept_out_of_the_queue(self, factory: Any, make: Make) -> None:
        producer, consumer = make(), make()
        await producer.send(QUEUE, b"poison")
        async with consuming(consumer) as stream:
            delivery = await next_delivery(stream)
            await delivery.dead_letter("cannot be processed: test")
            await assert_quiet(factory, producer, stream)
        parked = await dead_lettered(factory, consumer)
        if parked is not None:
            assert [(b"poison", "cannot be processed: test")] == parked


class TestPriority:
    """A transport that has priorities serves a later high-priority message before an
    earlier backlog of low ones; any other accepts ``priority=`` and delivers as usual."""

    async def test_high_priority_overtakes_a_backlog(self, factory: Any, make: Make) -> None:
        if not getattr(factory, "priorities", False):
            pytest.skip(f"{factory.name} has no priorities (it accepts and ignores them)")
        producer, consumer = make(), make()
        for i in range(10):
            await producer.send(QUEUE, f"low-{i}".encode(), priority=0)
        await producer.send(QUEUE, b"middle", priority=4)
        await producer.send(QUEUE, b"high", priority=9)
        async with consuming(consumer) as stream:
            received = []
            for _ in range(12):
                delivery = await next_delivery(stream)
                received.append(delivery.body)
                await delivery.ack()
        if getattr(factory, "priority_levels", 10) == 10:
            assert [b"high", b"middle"] == received[:2]
        else:  # 4 and 9 share a level
            assert [b"middle", b"high"] == received[:2]
        assert [f"low-{i}".encode() for i in range(10)] == received[2:]

    async def test_priority_is_accepted(self, make: Make) -> None:
        producer, consumer = make(), make()
        await producer.send(QUEUE, b"urgent", key="k", headers={"h": "v"}, priority=9)
        await producer.send(QUEUE, b"plain", priority=None)
        async with consuming(consumer) as stream:
            received = {d.body: d for d in [await next_delivery(stream) for _ in range(2)]}
            for delivery in received.values():
                await delivery.ack()
        assert {b"urgent", b"plain"} == set(received)
        assert ("k", "v") == (received[b"urgent"].key, received[b"urgent"].headers.get("h"))


class TestDelay:
    """A delayed message is delivered, and no earlier than its delay."""

    async def test_not_before_the_delay(self, make: Make) -> None:
        producer, consumer = make(), make()
        async with consuming(consumer) as stream:
            sent_at = time.monotonic()
            await producer.send(QUEUE, b"delayed", delay=DELAY)
            delivery = await next_delivery(stream)
            assert DELAY <= time.monotonic() - sent_at
            assert b"delayed" == delivery.body
            await delivery.ack()


# -- a real Worker over the transport ------------------------------------------------
async def one() -> int:
    return 1


async def plus_one(value: int) -> int:
    return value + 1


class _SpiedDelivery:
    """A delivery that reports its dead-lettering on a stream."""

    def __init__(self, inner: Delivery, report: MemoryObjectSendStream[tuple[bytes, str]]) -> None:
        self._inner = inner
        self._report = report
        self.body = inner.body
        self.headers: Mapping[str, str] = inner.headers
        self.key = inner.key
        self.attempt = inner.attempt

    async def ack(self) -> None:
        await self._inner.ack()

    async def nack(self, requeue_after: float | None = None) -> None:
        await self._inner.nack(requeue_after)

    async def extend(self, seconds: float) -> None:
        await self._inner.extend(seconds)

    async def dead_letter(self, reason: str) -> None:
        await self._inner.dead_letter(reason)
        self._report.send_nowait((self.body, reason))


class _DeadLetterSpy:
    """A transport whose deliveries report their dead-lettering (so tests can await it)."""

    def __init__(self, inner: Transport, report: MemoryObjectSendStream[tuple[bytes, str]]) -> None:
        self.inner = inner
        self.report = report

    async def send(
        self,
        queue: str,
        body: bytes,
        *,
        key: str | None = None,
        headers: Mapping[str, str] | None = None,
        delay: float | None = None,
    ) -> None:
        await self.inner.send(queue, body, key=key, headers=headers, delay=delay)

    async def receive(self, queue: str) -> AsyncIterator[_SpiedDelivery]:
        deliveries = self.inner.receive(queue)
        try:
            async for delivery in deliveries:
                yield _SpiedDelivery(delivery, self.report)
        finally:
            aclose = getattr(deliveries, "aclose", None)
            if aclose is not None:
                with anyio.CancelScope(shield=True):
                    await aclose()

    async def close(self) -> None:
        await self.inner.close()


class TestMalformedMessages:
    """Garbage is the consumer's concern: a Worker dead-letters it and keeps serving."""

    async def test_worker_dead_letters_garbage_and_carries_on(
        self, factory: Any, make: Make
    ) -> None:
        flow = Flow("conformance").node("one", one).node("plus", plus_one).edge("one", "plus")
        unknown = NodeMessage("run-x", "one", 1, "dispatch-x", "0" * 64).encode()
        garbage = [b"not json", b"{}", unknown]
        report, reported = anyio.create_memory_object_stream[tuple[bytes, str]](math.inf)
        store, producer, consumer = MemoryStore(), make(), make()
        worker = Worker([flow], _DeadLetterSpy(consumer, report), store, queue=QUEUE)
        client = Client(make(), store, queue=QUEUE, flows=[flow])
        for body in garbage:
            await producer.send(QUEUE, body)
        with anyio.fail_after(TIMEOUT):
            async with report, reported, anyio.create_task_group() as tg:
                await tg.start(worker.run)
                dead = dict([await reported.receive() for _ in garbage])
                result = await client.run(flow, timeout=TIMEOUT)
                worker.stop()  # drained: its last node is acked and counted by the time run ends
        assert sorted(garbage) == sorted(dead)
        assert "not JSON" in dead[b"not json"]
        assert "malformed node message" in dead[b"{}"]
        assert "unknown blueprint digest" in dead[unknown]
        assert (RunStatus.COMPLETED, 2) == (result.status, result.output)
        assert (3, 2) == (worker.dead_lettered, worker.processed)
        parked = await dead_lettered(factory, consumer)
        if parked is not None:
            assert sorted(garbage) == sorted(body for body, _ in parked)

"""``KafkaTransport``: queues as Kafka topics read by a consumer group (aiokafka).

**asyncio only**: aiokafka runs on asyncio, so code using this transport runs
under asyncio (``anyio.run(main, backend="asyncio")``), never trio.

Topics, created on demand with ``partitions`` partitions each, for a queue ``q``
(``topic`` is ``f"{topic_prefix}.{q}"``):

* ``topic`` — the queue itself.
* ``topic.delay`` — messages not due yet (``send(delay=...)``, ``nack(requeue_after=...)``),
  with their due time (epoch seconds) in the ``x-flowkit-due`` header. Every
  receiver also runs a *forwarder* in group ``f"{group}.delay"`` that holds each
  record until it is due, produces it to ``topic`` and only then marks it settled,
  so a delayed message survives any crash (it may be forwarded twice, never lost).
* ``topic.dlq`` — dead letters, with the reason in the ``x-flowkit-reason``
  header; ``receive(f"{q}.dlq")`` reads them back.
* ``topic.acks.{group}`` (and ``topic.delay.acks.{group}.delay``) — settlement
  snapshots, see below.

**Keys and ordering.** ``key`` picks the partition (murmur2, as the Java client).
flowkit sends ``f"{run_id}/{node_id}"``, so one run's parallel branches spread
over partitions and are never serialised behind each other. Messages are handed
out in partition order, but settled concurrently and out of order, and
redeliveries (nack, visibility timeout) go to the end of the queue: there is no
ordering guarantee between messages, even with one key.

**Out-of-order settlement.** Offsets are committed manually: per partition the
transport tracks the fetched-but-unsettled offsets and commits up to the lowest
one. Offsets settled *above* that point are recorded in a snapshot (produced to
the ``acks`` topic before the commit; Kafka's commit metadata would do, but
tansu drops it), so a member taking the partition over skips what was settled
and redelivers only what was not. At most ``max_in_flight`` deliveries per
``receive`` are unsettled (fetching pauses at the limit).

**Redelivery.** Kafka cannot "un-ack": a ``nack`` or a delivery whose
``visibility_timeout`` runs out (``extend`` pushes it) is *re-produced* with
``x-flowkit-attempt`` incremented, and the original is then marked settled.
``close()`` hands held deliveries back the same way. A member that dies leaves
its offsets uncommitted, and once the group drops it (``session_timeout``) the
rebalance hands them to another member: delivery is at least once (such a
redelivery keeps its ``attempt``: the broker does not count deliveries).

**Rebalances.** Members use a sticky assignor (:func:`balance`): a partition
with deliveries in flight stays with its member when others join, and a
partition that comes back to its member resumes where it was, so a joining
worker does not cause work in progress to run twice. A delivery whose partition
did move raises :class:`DeliveryError` when settled (the new owner has it).

Example::

    transport = KafkaTransport("127.0.0.1:9092", group="shop")
    await transport.send("flowkit", b"...", key="order-A1/charge")
    async for delivery in transport.receive("flowkit"):
        await delivery.ack()
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import re
import time
from collections import deque
from contextlib import contextmanager
from functools import partial
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qsl, urlsplit

import attrs
import structlog

from .._errors import MissingDependency, TransportError
from ..stores._urls import ConfigurationError, redact
from ._protocol import DeliveryError

try:
    from aiokafka import (  # type: ignore[import-untyped,unused-ignore]
        AIOKafkaConsumer,
        AIOKafkaProducer,
        TopicPartition,
    )
    from aiokafka import errors as kafka_errors
    from aiokafka.abc import ConsumerRebalanceListener  # type: ignore[import-untyped,unused-ignore]
    from aiokafka.admin import AIOKafkaAdminClient, NewTopic  # type: ignore[import-untyped,unused-ignore]
    from aiokafka.coordinator.protocol import (  # type: ignore[import-untyped,unused-ignore]
        ConsumerProtocolMemberAssignment,
        ConsumerProtocolMemberMetadata,
    )
except ImportError:  # the "kafka" extra is not installed: KafkaTransport() says so
    _HAVE_KAFKA = False
else:
    _HAVE_KAFKA = True

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Iterator, Mapping

log = structlog.get_logger("flowkit.transports.kafka")

ATTEMPT = "x-flowkit-attempt"
DUE = "x-flowkit-due"
REASON = "x-flowkit-reason"
_INTERNAL = frozenset({ATTEMPT, DUE})
_LEGAL = re.compile(r"[A-Za-z0-9._-]+")
_DELAY_HOLD = 10_000  # delayed records one forwarder holds in memory
_RETRY = 1.0  # seconds before retrying a failed redelivery or forward
_HAND_BACK_TIMEOUT = 10.0  # close() gives up handing deliveries back after this
_FETCH_WAIT_MS = 500
_URL_OPTIONS: dict[str, Callable[[str], Any]] = {
    "group": str,
    "topic_prefix": str,
    "partitions": int,
    "max_in_flight": int,
    "visibility_timeout": float,
    "session_timeout": float,
    "replication_factor": int,
}


def _sdk_errors() -> tuple[type[Exception], ...]:
    """The roots of every exception class in ``aiokafka.errors``."""
    return (
        kafka_errors.KafkaError,
        kafka_errors.ConsumerStoppedError,
        kafka_errors.IllegalOperation,
    )


@contextmanager
def translate_errors(operation: str, where: str) -> Iterator[None]:
    """Re-raise any aiokafka error in the block as a TransportError naming ``operation``.

    The one place where aiokafka exceptions become flowkit's.
    """
    try:
        yield
    except _sdk_errors() as exc:
        raise TransportError(
            f"Kafka {redact(where)!r}: {operation} failed ({type(exc).__name__}: "
            f"{_text(exc)}); check that the broker is reachable and the topic exists"
        ) from exc


def _text(exc: Exception) -> str:
    """``str(exc)``; aiokafka's BrokerResponseError base class cannot format itself."""
    try:
        return str(exc)
    except AttributeError:
        return ", ".join(map(str, exc.args))


# -- settlement bookkeeping ---------------------------------------------------


@attrs.define
class _Offsets:
    """Settlement state of one partition: what may be committed, what to skip on refetch."""

    committed: int | None = None  # position last committed (or found) on the broker
    next: int = -1  # one past the highest offset known (fetched, or restored from a snapshot)
    fetched: int = -1  # one past the last record received: where fetching resumes
    pending: set[int] = attrs.Factory(set)  # known and unsettled
    unfetched: set[int] = attrs.Factory(set)  # restored as unsettled, not received yet
    written: tuple[int, int, frozenset[int]] | None = None  # last snapshot produced
    revoked: bool = False  # the partition went to another member

    def receive(self, offset: int) -> bool:
        """Note ``offset`` as fetched; False if it is settled already (skip it)."""
        self.fetched = offset + 1
        if offset < self.next:
            if offset not in self.unfetched:
                return False
            self.unfetched.discard(offset)
            return True
        self.pending.add(offset)
        self.next = offset + 1
        return True

    def position(self) -> int | None:
        """The offset to commit: the lowest unsettled one, else one past the last known."""
        if self.pending:
            return min(self.pending)
        return self.next if self.next >= 0 else None

    def wanted(self) -> tuple[int, bytes | None] | None:
        """``(position, snapshot or None)`` if the broker is behind, else None."""
        position = self.position()
        if position is None:
            return None
        state = (position, self.next, frozenset(self.pending))
        if self.next - position > len(self.pending) and state != self.written:
            body = {"c": position, "n": self.next, "u": sorted(self.pending)}
            return position, json.dumps(body).encode()
        return None if position == self.committed else (position, None)

    def wrote(self, position: int, snapshot: bytes | None) -> None:
        """The broker now has ``position`` (and ``snapshot``)."""
        self.committed = position
        if snapshot is not None:
            self.written = (position, self.next, frozenset(self.pending))

    def restore(self, snapshot: bytes) -> None:
        """Skip what a previous owner settled, if ``snapshot`` matches the committed offset."""
        try:
            data = json.loads(snapshot)
            committed, next_, unsettled = int(data["c"]), int(data["n"]), data["u"]
            unsettled = {int(offset) for offset in unsettled}
        except (ValueError, TypeError, KeyError):
            log.warning("ignoring an unreadable settlement snapshot")
            return
        if committed == self.committed:
            self.next = next_
            self.pending = set(unsettled)
            self.unfetched = set(unsettled)


# -- deliveries ---------------------------------------------------------------

_HELD, _BUSY, _DONE = "held", "busy", "done"


def _decode_headers(raw: Iterable[tuple[str, bytes | None]]) -> dict[str, str]:
    return {name: (value or b"").decode("utf-8", "replace") for name, value in raw}


def _attempt(headers: Mapping[str, str]) -> int:
    try:
        return max(1, int(headers.get(ATTEMPT, "1")))
    except ValueError:
        return 1


class KafkaDelivery:
    """A delivery from :class:`KafkaTransport`: one record of one partition."""

    def __init__(self, member: _Member, tp: Any, offsets: _Offsets, record: Any) -> None:
        headers = _decode_headers(record.headers or ())
        self.body: bytes = record.value or b""
        self.raw_key: bytes | None = record.key
        self.key = None if record.key is None else record.key.decode("utf-8", "replace")
        self.attempt = _attempt(headers)
        self.headers: Mapping[str, str] = {k: v for k, v in headers.items() if k not in _INTERNAL}
        self.due = headers.get(DUE)
        self.partition: int = record.partition
        self.offset: int = record.offset
        self.deadline = math.inf
        self.state = _HELD
        self.tp = tp
        self.offsets = offsets
        self._member = member

    async def ack(self) -> None:
        """Done: commit (as far as the lowest unsettled offset allows)."""
        await self._member.settle(self, None)

    async def nack(self, requeue_after: float | None = None) -> None:
        """Re-produce the message (after ``requeue_after`` seconds), then settle this one."""
        await self._member.settle(self, partial(self._member.requeue, self, requeue_after))

    async def extend(self, seconds: float) -> None:
        """Keep the message from being redelivered for ``seconds`` more."""
        self._member.check(self)
        self.deadline = time.monotonic() + seconds
        self._member.wake()

    async def dead_letter(self, reason: str) -> None:
        """Produce the message to ``{topic}.dlq`` with ``reason``, then settle this one."""
        await self._member.settle(self, partial(self._member.dead_letter, self, reason))

    def __repr__(self) -> str:
        return f"<KafkaDelivery {self.tp.topic}[{self.partition}]@{self.offset} {self.state}>"


# -- group assignment -----------------------------------------------------------


def balance(
    partitions: Iterable[int],
    members: Iterable[str],
    owned: Mapping[str, Iterable[int]],
    busy: Mapping[str, Iterable[int]],
) -> dict[str, list[int]]:
    """Sticky assignment of one topic's partitions to the members subscribed to it.

    A partition where a member holds unsettled deliveries stays with it; other
    partitions stay with their owner up to a fair share; the rest go to the
    least loaded members. So a member joining never takes work in progress.

    >>> balance(range(4), ["a", "b"], {"a": [0, 1, 2, 3]}, {"a": [3]})
    {'a': [3, 0], 'b': [1, 2]}
    """
    exists, names = set(partitions), sorted(members)
    result: dict[str, list[int]] = {name: [] for name in names}
    if not names:
        return result
    quota = -(-len(exists) // len(names))
    for claims, limit in ((busy, len(exists)), (owned, quota)):
        for name in names:
            for partition in sorted(claims.get(name, ())):
                if partition in exists and len(result[name]) < limit:
                    result[name].append(partition)
                    exists.discard(partition)
    for partition in sorted(exists):
        min(result.values(), key=len).append(partition)
    return result


class _StickyAssignor:
    """aiokafka partition assignor (protocol ``flowkit-sticky``) built on :func:`balance`.

    Each member's join metadata carries the partitions it owns and those with
    deliveries in flight. (aiokafka's own sticky assignor keeps its state on the
    class, so two consumers in one process would share it.)
    """

    name = "flowkit-sticky"
    version = 0

    def __init__(self, member: _Member) -> None:
        self.member = member

    def metadata(self, topics: Iterable[str]) -> Any:
        claims = json.dumps(self.member.claims()).encode()
        return ConsumerProtocolMemberMetadata(self.version, sorted(topics), claims)

    def on_assignment(self, assignment: Any) -> None:
        """Nothing to remember: claims are read from the member at each join."""

    def assign(self, cluster: Any, members: Mapping[str, Any]) -> dict[str, Any]:
        claims = {name: _claims(meta.user_data) for name, meta in members.items()}
        plan: dict[str, list[tuple[str, list[int]]]] = {name: [] for name in members}
        for topic in sorted({t for meta in members.values() for t in meta.subscription}):
            subscribed = [name for name, meta in members.items() if topic in meta.subscription]
            mine = {name: claims[name] for name in subscribed if claims[name]["topic"] == topic}
            owned = {name: claim["owned"] for name, claim in mine.items()}
            busy = {name: claim["busy"] for name, claim in mine.items()}
            partitions = cluster.partitions_for_topic(topic) or ()
            for name, assigned in balance(partitions, subscribed, owned, busy).items():
                plan[name].append((topic, assigned))
        return {
            name: ConsumerProtocolMemberAssignment(self.version, topics, b"")
            for name, topics in plan.items()
        }


def _claims(user_data: bytes | None) -> dict[str, Any]:
    try:
        claims = json.loads(user_data or b"{}")
        owned, busy = ([int(p) for p in claims[name]] for name in ("owned", "busy"))
        return {"topic": str(claims["topic"]), "owned": owned, "busy": busy}
    except (ValueError, TypeError, KeyError):
        return {"topic": "", "owned": [], "busy": []}


# -- one consumer-group member ------------------------------------------------


class _Rebalance:
    """aiokafka's rebalance callbacks, forwarded to the member."""

    def __init__(self, member: _Member) -> None:
        self.member = member

    async def on_partitions_revoked(self, revoked: set[Any]) -> None:
        await self.member.on_revoked(revoked)

    async def on_partitions_assigned(self, assigned: set[Any]) -> None:
        await self.member.on_assigned(assigned)


if _HAVE_KAFKA:
    ConsumerRebalanceListener.register(_Rebalance)


class _Member:
    """One consumer-group member on one topic: fetches, tracks, settles and commits.

    Two background tasks (owned here, cancelled and awaited by :meth:`stop`): the
    fetch loop keeps polling (so the member stays in the group while handlers
    run) and pauses at ``limit`` unsettled records; the watch loop acts on
    deadlines (visibility timeouts here, due times in :class:`_Forwarder`).
    """

    def __init__(self, transport: KafkaTransport, topic: str, group: str, limit: int) -> None:
        self.transport = transport
        self.topic = topic
        self.acks_topic = f"{topic}.acks.{_topic_safe(group)}"
        self.limit = limit
        self.kafka = transport._consumer(group, _StickyAssignor(self))
        self.offsets: dict[Any, _Offsets] = {}
        self.limbo: dict[Any, _Offsets] = {}  # revoked, maybe coming back
        self.restoring: set[Any] = set()
        self.ready: deque[KafkaDelivery] = deque()
        self.held: set[KafkaDelivery] = set()
        self.forwarder: _Member | None = None  # stopped with this member
        self.failure: Exception | None = None
        self.retiring = False
        self.stopped = False
        self._finished = False
        self._changed = asyncio.Event()
        self._commit_lock = asyncio.Lock()
        self._tasks: list[asyncio.Task[None]] = []

    async def start(self) -> None:
        with translate_errors(f"joining a consumer group on {self.topic!r}", self.transport.where):
            self.kafka.subscribe([self.topic], listener=_Rebalance(self))
            await self.kafka.start()
        self._tasks = [
            asyncio.create_task(self._guard(self._fetch_loop())),
            asyncio.create_task(self._guard(self._watch_loop())),
        ]

    def wake(self) -> None:
        self._changed.set()
        self._changed = asyncio.Event()

    async def _wait(self, timeout: float = math.inf) -> None:
        changed = self._changed
        if timeout > 0:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(None if math.isinf(timeout) else timeout):
                    await changed.wait()

    async def _guard(self, loop: Awaitable[None]) -> None:
        try:
            await loop
        except Exception as exc:  # surfaced to the reader by next()
            self.failure = exc
            self.wake()

    # -- fetching -----------------------------------------------------------
    async def _fetch_loop(self) -> None:
        while True:
            room = self.limit - len(self.ready) - len(self.held)
            with translate_errors(f"fetching from {self.topic!r}", self.transport.where):
                self._set_paused(full=room <= 0)
                batch = await self.kafka.getmany(
                    timeout_ms=_FETCH_WAIT_MS if room > 0 else 0, max_records=max(room, 1)
                )
            for tp, records in batch.items():
                for record in records:
                    self._accept(tp, record)
            if room <= 0:
                await self._wait(_FETCH_WAIT_MS / 1000)

    def _set_paused(self, *, full: bool) -> None:
        assigned = set(self.kafka.assignment())
        pause = assigned if full else assigned & self.restoring
        resume = (assigned - pause) & set(self.kafka.paused())
        if pause:
            self.kafka.pause(*pause)
        if resume:
            self.kafka.resume(*resume)

    def _accept(self, tp: Any, record: Any) -> None:
        offsets = self.offsets.setdefault(tp, _Offsets())
        if offsets.receive(record.offset):
            self._take(KafkaDelivery(self, tp, offsets, record))

    def _take(self, delivery: KafkaDelivery) -> None:
        self.ready.append(delivery)
        self.wake()

    def claims(self) -> dict[str, Any]:
        """What this member asks to keep at the next rebalance (see :func:`balance`)."""
        owned = {tp.partition for tp in (*self.offsets, *self.limbo)}
        return {"topic": self.topic, "owned": sorted(owned), "busy": sorted(self._busy())}

    def _busy(self) -> set[int]:
        return {d.partition for d in self.held if d.state != _DONE and not d.offsets.revoked}

    async def next(self) -> KafkaDelivery | None:
        """The next delivery (its visibility clock starts now), or None once stopped."""
        while True:
            if self.failure is not None:
                raise self.failure
            if self.retiring or self.stopped:
                return None
            while self.ready:
                delivery = self.ready.popleft()
                if not delivery.offsets.revoked:
                    delivery.deadline = time.monotonic() + self.transport.visibility_timeout
                    self.held.add(delivery)
                    self.wake()
                    return delivery
            await self._wait()

    # -- deadlines ----------------------------------------------------------
    async def _watch_loop(self) -> None:
        while not (self.stopped or (self.retiring and self._drained())):
            now = time.monotonic()
            for delivery in [d for d in self.held if d.state == _HELD and d.deadline <= now]:
                await self._expire(delivery)
            deadlines = [d.deadline for d in self.held if d.state == _HELD]
            await self._wait(min(deadlines, default=math.inf) - time.monotonic())
        await self._finish()

    def _drained(self) -> bool:
        return not self.held

    async def _expire(self, delivery: KafkaDelivery) -> None:
        log.warning(
            "visibility timeout ran out; redelivering",
            topic=self.topic,
            partition=delivery.partition,
            offset=delivery.offset,
        )
        await self._retrying(delivery, partial(self.requeue, delivery, None))

    async def _retrying(
        self, delivery: KafkaDelivery, action: Callable[[], Awaitable[None]]
    ) -> None:
        try:
            await self.settle(delivery, action)
        except TransportError as exc:
            log.warning("could not move a record; retrying", topic=self.topic, error=str(exc))
            delivery.deadline = time.monotonic() + _RETRY

    # -- settling -----------------------------------------------------------
    def check(self, delivery: KafkaDelivery) -> None:
        """Raise DeliveryError unless ``delivery`` is still held by this member."""
        where = f"delivery {delivery.offset} of {self.topic!r}[{delivery.partition}]"
        if self.stopped:
            raise DeliveryError(f"{where}: the transport was closed; it will be delivered again")
        if delivery.offsets.revoked:
            raise DeliveryError(
                f"{where}: its partition went to another consumer in a rebalance; "
                "it will be delivered again there"
            )
        if delivery.state != _HELD:
            raise DeliveryError(
                f"{where} is no longer held (settled, or its visibility timeout ran out and it "
                "was redelivered); extend() long handlers"
            )

    async def settle(
        self, delivery: KafkaDelivery, action: Callable[[], Awaitable[None]] | None
    ) -> None:
        """Run ``action`` (produce a copy somewhere), then mark ``delivery`` settled and commit."""
        self.check(delivery)
        delivery.state = _BUSY
        done = False
        try:
            if action is not None:
                await action()
            done = True
        finally:
            delivery.state = _DONE if done else _HELD
        self.held.discard(delivery)
        delivery.offsets.pending.discard(delivery.offset)
        self.wake()
        await self.commit()

    async def requeue(self, delivery: KafkaDelivery, after: float | None) -> None:
        headers = {**delivery.headers, ATTEMPT: str(delivery.attempt + 1)}
        await self.transport._put(self.topic, delivery.body, delivery.raw_key, headers, after)

    async def dead_letter(self, delivery: KafkaDelivery, reason: str) -> None:
        headers = {**delivery.headers, ATTEMPT: str(delivery.attempt), REASON: reason}
        await self.transport._produce(f"{self.topic}.dlq", delivery.body, delivery.raw_key, headers)

    async def commit(self) -> None:
        """Commit every partition's lowest unsettled offset, snapshot first if needed."""
        async with self._commit_lock:
            plan = [
                (tp, o, wanted)
                for tp, o in list(self.offsets.items())
                if tp not in self.restoring and (wanted := o.wanted()) is not None
            ]
            commits: dict[Any, int] = {}
            for tp, offsets, (position, snapshot) in plan:
                if snapshot is not None:
                    await self.transport._produce(self.acks_topic, snapshot, None, {}, tp.partition)
                if position != offsets.committed:
                    commits[tp] = position
            if commits:
                with translate_errors(
                    f"committing offsets of {self.topic!r}", self.transport.where
                ):
                    await self.kafka.commit(commits)
            for _, offsets, wanted in plan:
                offsets.wrote(*wanted)

    # -- rebalancing ---------------------------------------------------------
    async def on_revoked(self, revoked: set[Any]) -> None:
        """Commit what can be committed; keep the trackers in case the partitions come back."""
        try:
            await self.commit()
        except TransportError as exc:
            log.warning("commit before a rebalance failed", topic=self.topic, error=str(exc))
        for tp in revoked:
            offsets = self.offsets.pop(tp, None)
            if offsets is not None:
                self.limbo[tp] = offsets

    async def on_assigned(self, assigned: set[Any]) -> None:
        """Resume partitions that came back where they were; restore new ones from snapshots."""
        self.restoring |= assigned
        if assigned:
            self.kafka.pause(*assigned)  # no records before their tracker is ready
        try:
            for tp in assigned:
                self.offsets[tp] = await self._resume(tp)
        finally:
            self.restoring -= assigned
        for tp, offsets in self.limbo.items():
            offsets.revoked = self.offsets.get(tp) is not offsets
        self.limbo.clear()
        self.ready = deque(d for d in self.ready if not d.offsets.revoked)
        self.held = {d for d in self.held if not d.offsets.revoked}
        self.wake()
        try:
            await self.commit()  # what was settled while the partitions were in limbo
        except TransportError as exc:
            log.warning("commit after a rebalance failed", topic=self.topic, error=str(exc))

    async def _resume(self, tp: Any) -> _Offsets:
        old = self.limbo.get(tp)
        try:
            with translate_errors(f"resuming {tp}", self.transport.where):
                committed = await self.kafka.committed(tp)
                if old is not None and old.committed == committed:
                    if old.fetched >= 0:
                        self.kafka.seek(tp, old.fetched)  # hand out nothing twice
                    return old
        except TransportError as exc:
            log.warning("could not resume a partition", topic=self.topic, error=str(exc))
            return _Offsets()
        fresh = _Offsets(committed=committed)
        if committed is not None:
            snapshot = await self.transport._last_record(self.acks_topic, tp.partition)
            if snapshot is not None:
                fresh.restore(snapshot)
        return fresh

    # -- stopping -------------------------------------------------------------
    def retire(self) -> None:
        """Stop fetching; leave the group once every handed-out delivery is settled."""
        if self.forwarder is not None:
            self.forwarder.retire()
        if not self.retiring and self._tasks:
            self.retiring = True
            self._tasks[0].cancel()
            self.wake()

    async def _finish(self) -> None:
        """Commit what is settled and leave the group (once)."""
        if self._finished:
            return
        self._finished = True
        try:
            await self.commit()
        except TransportError as exc:
            log.warning("final commit failed", topic=self.topic, error=str(exc))
        with contextlib.suppress(TransportError), translate_errors("leaving", self.transport.where):
            await self.kafka.stop()

    async def stop(self) -> None:
        """Hand held deliveries back (re-produce them, attempt + 1), then leave the group.

        Whatever cannot be handed back stays uncommitted: the group redelivers it.
        """
        if self.stopped:
            return
        self.retiring = True
        if self._tasks:
            self._tasks[0].cancel()
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(_HAND_BACK_TIMEOUT):
                await self._hand_back()
        self.stopped = True
        self.wake()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self._finish()

    async def _hand_back(self) -> None:
        for delivery in [d for d in self.held if d.state == _HELD and not d.offsets.revoked]:
            await self._retrying(delivery, partial(self.requeue, delivery, None))


class _Forwarder(_Member):
    """Holds records of ``topic.delay`` until due, then produces them to ``topic``."""

    def __init__(self, transport: KafkaTransport, topic: str, group: str) -> None:
        super().__init__(transport, f"{topic}.delay", f"{group}.delay", _DELAY_HOLD)
        self.target = topic

    def _take(self, delivery: KafkaDelivery) -> None:
        try:
            due = float(delivery.due or 0.0)
        except ValueError:
            due = 0.0
        delivery.deadline = time.monotonic() + max(0.0, due - time.time())
        self.held.add(delivery)
        self.wake()

    def _drained(self) -> bool:
        return True  # what it holds is uncommitted and goes to another forwarder

    def _busy(self) -> set[int]:
        return set()  # held records are not work in progress: partitions may move

    async def _hand_back(self) -> None:
        """Nothing: records not forwarded yet stay uncommitted for the next forwarder."""

    async def _expire(self, delivery: KafkaDelivery) -> None:
        await self._retrying(delivery, partial(self._forward, delivery))

    async def _forward(self, delivery: KafkaDelivery) -> None:
        headers = {**delivery.headers, ATTEMPT: str(delivery.attempt)}
        await self.transport._produce(self.target, delivery.body, delivery.raw_key, headers)


# -- the transport ------------------------------------------------------------


def _topic_safe(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]", "_", name)


class KafkaTransport:
    """Queues as Kafka topics, consumed by a consumer group (asyncio only).

    Args:
        bootstrap: ``host:port[,host:port...]`` of the brokers.
        group: consumer group; every worker of one deployment uses the same one.
        topic_prefix: topics are ``f"{topic_prefix}.{queue}"`` (and ``.delay``, ``.dlq``, ...).
        partitions: partitions of each topic this transport creates.
        max_in_flight: unsettled deliveries per ``receive`` before fetching pauses.
        visibility_timeout: seconds before an unsettled delivery is redelivered.
        session_timeout: seconds without heartbeats before the group drops a member
            (Kafka accepts 6 to 1800 by default).
        replication_factor: replication of the topics this transport creates.

    Example::

        transport = KafkaTransport("kafka-1:9092,kafka-2:9092", group="shop")
        worker = flowkit.Worker(app=[checkout], transport=transport, store=store)
    """

    def __init__(
        self,
        bootstrap: str = "127.0.0.1:9092",
        *,
        group: str = "flowkit",
        topic_prefix: str = "flowkit",
        partitions: int = 8,
        max_in_flight: int = 32,
        visibility_timeout: float = 30.0,
        session_timeout: float = 10.0,
        replication_factor: int = 1,
    ) -> None:
        if not _HAVE_KAFKA:
            raise MissingDependency("KafkaTransport", "kafka")
        numbers = {
            "partitions": partitions,
            "max_in_flight": max_in_flight,
            "visibility_timeout": visibility_timeout,
            "session_timeout": session_timeout,
            "replication_factor": replication_factor,
        }
        for name, value in numbers.items():
            if not value > 0:
                raise ConfigurationError(f"KafkaTransport: {name} must be positive, got {value}")
        if not (topic_prefix and _LEGAL.fullmatch(topic_prefix)):
            raise ConfigurationError(
                f"KafkaTransport: topic_prefix {topic_prefix!r} may use only letters, digits, "
                "'.', '_' and '-'"
            )
        self.bootstrap = bootstrap
        self.where = redact(bootstrap)
        self.group = group
        self.topic_prefix = topic_prefix
        self.partitions = partitions
        self.max_in_flight = max_in_flight
        self.visibility_timeout = visibility_timeout
        self.session_timeout = session_timeout
        self.replication_factor = replication_factor
        self._clients: dict[str, Any] = {}
        self._topics: set[str] = set()
        self._members: list[_Member] = []
        self._lock = asyncio.Lock()
        self._reader_lock = asyncio.Lock()
        self._closing = False  # no new sends or receives
        self._closed = False  # no broker calls at all

    @classmethod
    def from_url(cls, url: str, **options: Any) -> KafkaTransport:
        """Build from ``kafka://host:port[,host:port]?group=shop&partitions=16``.

        Keyword ``options`` override the query string.
        """
        parts = urlsplit(url)
        if parts.scheme.lower() != "kafka" or "@" in parts.netloc:
            raise ConfigurationError(
                f"not a Kafka URL: {redact(url)!r}; use kafka://host:port (credentials are "
                "not supported in the URL)"
            )
        for name, text in parse_qsl(parts.query):
            if name not in _URL_OPTIONS:
                raise ConfigurationError(
                    f"unknown option {name!r} in {redact(url)!r}: use {', '.join(_URL_OPTIONS)}"
                )
            try:
                options.setdefault(name, _URL_OPTIONS[name](text))
            except ValueError as exc:
                raise ConfigurationError(f"bad {name}={text!r} in {redact(url)!r}") from exc
        return cls(parts.netloc or "127.0.0.1:9092", **options)

    # -- clients ------------------------------------------------------------
    def _consumer(self, group: str, assignor: _StickyAssignor) -> Any:
        return AIOKafkaConsumer(
            bootstrap_servers=self.bootstrap,
            group_id=group,
            partition_assignment_strategy=(assignor,),
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            session_timeout_ms=round(self.session_timeout * 1000),
            heartbeat_interval_ms=max(100, min(3000, round(self.session_timeout * 1000 / 6))),
        )

    async def _client(self, kind: str) -> Any:
        """The started producer, admin client or snapshot reader, started on first use."""
        async with self._lock:
            if self._closed:
                raise TransportError("KafkaTransport is closed")
            client = self._clients.get(kind)
            if client is None:
                client = self._new_client(kind)
                with translate_errors(f"connecting ({kind})", self.where):
                    await client.start()
                self._clients[kind] = client
            return client

    def _new_client(self, kind: str) -> Any:
        if kind == "producer":
            return AIOKafkaProducer(bootstrap_servers=self.bootstrap, acks="all")
        if kind == "admin":
            return AIOKafkaAdminClient(bootstrap_servers=self.bootstrap)
        return AIOKafkaConsumer(bootstrap_servers=self.bootstrap, enable_auto_commit=False)

    def _check_open(self) -> None:
        if self._closing:
            raise TransportError("KafkaTransport is closed")

    # -- topics -------------------------------------------------------------
    def topic(self, queue: str) -> str:
        """The topic that holds ``queue``."""
        topic = f"{self.topic_prefix}.{queue}"
        longest = f"{topic}.delay.acks.{_topic_safe(self.group)}.delay"
        if not _LEGAL.fullmatch(queue) or len(longest) > 249:
            raise ConfigurationError(
                f"queue {queue!r} cannot be a Kafka topic: use letters, digits, '.', '_' and '-', "
                "and keep prefix, queue and group short (topic names end at 249 characters)"
            )
        return topic

    async def _ensure(self, topics: Mapping[str, int]) -> None:
        missing = [name for name in topics if name not in self._topics]
        if not missing:
            return
        admin = await self._client("admin")
        with translate_errors(f"creating topics {missing}", self.where):
            new = [NewTopic(name, topics[name], self.replication_factor) for name in missing]
            response = await admin.create_topics(new)
            for name, code, message in response.topic_errors:
                if code not in (0, kafka_errors.TopicAlreadyExistsError.errno):
                    raise kafka_errors.for_code(code)(f"topic {name!r}: {message}")
        self._topics.update(missing)

    async def _queue_topics(self, queue: str) -> str:
        self._check_open()
        topic = self.topic(queue)
        n = self.partitions
        await self._ensure({topic: n, f"{topic}.delay": n, f"{topic}.dlq": n})
        return topic

    async def _partition_count(self, topic: str) -> int:
        producer = await self._client("producer")
        with translate_errors(f"reading the partitions of {topic!r}", self.where):
            ids: set[int] = await producer.partitions_for(topic)
        return max(ids) + 1

    # -- producing ----------------------------------------------------------
    async def _produce(
        self,
        topic: str,
        body: bytes,
        key: bytes | None,
        headers: Mapping[str, str],
        partition: int | None = None,
    ) -> None:
        producer = await self._client("producer")
        encoded = [(name, value.encode()) for name, value in headers.items()]
        with translate_errors(f"producing to {topic!r}", self.where):
            await producer.send_and_wait(topic, body, key=key, headers=encoded, partition=partition)

    async def _put(
        self,
        topic: str,
        body: bytes,
        key: bytes | None,
        headers: Mapping[str, str],
        delay: float | None,
    ) -> None:
        if delay is not None and delay > 0:
            due = {**headers, DUE: repr(time.time() + delay)}
            await self._produce(f"{topic}.delay", body, key, due)
        else:
            await self._produce(topic, body, key, headers)

    async def send(
        self,
        queue: str,
        body: bytes,
        *,
        key: str | None = None,
        headers: Mapping[str, str] | None = None,
        delay: float | None = None,
    ) -> None:
        """Produce ``body`` to the queue's topic (``.delay`` if ``delay``); all replicas ack."""
        topic = await self._queue_topics(queue)
        raw_key = None if key is None else key.encode()
        await self._put(topic, bytes(body), raw_key, dict(headers or {}), delay)

    # -- consuming ----------------------------------------------------------
    async def receive(self, queue: str) -> AsyncIterator[KafkaDelivery]:
        """Join the group on the queue's topic (and its delay forwarder); yield deliveries."""
        member = await self._join(await self._queue_topics(queue))
        try:
            while (delivery := await member.next()) is not None:
                yield delivery
        finally:
            member.retire()

    async def _join(self, topic: str) -> _Member:
        member = _Member(self, topic, self.group, self.max_in_flight)
        forwarder = _Forwarder(self, topic, self.group)
        await self._ensure(
            {
                member.acks_topic: await self._partition_count(topic),
                forwarder.acks_topic: await self._partition_count(f"{topic}.delay"),
            }
        )
        member.forwarder = forwarder
        self._members += [forwarder, member]
        joined = await asyncio.gather(forwarder.start(), member.start(), return_exceptions=True)
        for failure in joined:  # both joins ran (concurrently: joins take a while)
            if isinstance(failure, BaseException):
                raise failure
        return member

    async def _last_record(self, topic: str, partition: int) -> bytes | None:
        """The value of the last record of ``topic[partition]``, if any."""
        reader = await self._client("reader")
        tp = TopicPartition(topic, partition)
        async with self._reader_lock:
            try:
                with translate_errors(f"reading the last record of {topic!r}", self.where):
                    reader.assign([tp])
                    end = (await reader.end_offsets([tp]))[tp]
                    if end == 0:
                        return None
                    reader.seek(tp, end - 1)
                    batch = await reader.getmany(tp, timeout_ms=5000, max_records=1)
            except TransportError as exc:
                log.warning("could not read a settlement snapshot", topic=topic, error=str(exc))
                return None
        records = batch.get(tp) or ()
        value: bytes | None = records[0].value if records else None
        return value

    async def close(self) -> None:
        """Hand held deliveries back, leave every group, disconnect; idempotent."""
        self._closing = True
        for member in self._members:
            await member.stop()
        self._closed = True
        for kind, client in self._clients.items():
            with contextlib.suppress(TransportError), translate_errors("closing", self.where):
                await (client.close() if kind == "admin" else client.stop())
        self._clients.clear()

    def __repr__(self) -> str:
        return f"KafkaTransport({self.where!r}, group={self.group!r})"

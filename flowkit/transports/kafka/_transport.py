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
import re
import time
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

import anyio
import structlog

from ..._errors import ConfigurationError, MissingDependency, TransportError
from ...backends._options import redact, split_options
from ._delay import _Forwarder
from ._delivery import ATTEMPT as ATTEMPT
from ._delivery import DUE
from ._delivery import REASON as REASON
from ._delivery import KafkaDelivery as KafkaDelivery
from ._errors import translate_errors as translate_errors
from ._group import balance as balance
from ._member import _HAND_BACK_TIMEOUT, _Member, _topic_safe
from ._offsets import _Offsets as _Offsets

try:
    from aiokafka import (  # type: ignore[import-untyped,unused-ignore]
        AIOKafkaConsumer,
        AIOKafkaProducer,
        TopicPartition,
    )
    from aiokafka import errors as kafka_errors
    from aiokafka.admin import AIOKafkaAdminClient, NewTopic  # type: ignore[import-untyped,unused-ignore]
except ImportError:  # the "kafka" extra is not installed: KafkaTransport() says so
    _HAVE_KAFKA = False
else:
    _HAVE_KAFKA = True

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Callable, Mapping

    from ._group import _StickyAssignor

log = structlog.get_logger("flowkit.transports.kafka")
_STOP_UNUSED_TIMEOUT = 5.0
_PRODUCE_TIMEOUT = 10.0  # a produce the broker does not answer fails after this


def close_bound(transport: KafkaTransport) -> float:
    """Seconds ``transport.close()`` takes at most, whatever the broker does: handing
    deliveries back, the final commit, leaving the group (one request), and the
    producer's last request (sent during the final commit)."""
    leave = transport._consumer_request_timeout_ms() / 1000
    return _HAND_BACK_TIMEOUT + transport.session_timeout + leave + _PRODUCE_TIMEOUT


_LEGAL = re.compile(r"[A-Za-z0-9._-]+")
_URL_OPTIONS: dict[str, Callable[[str], Any]] = {
    "group": str,
    "topic_prefix": str,
    "partitions": int,
    "max_in_flight": int,
    "visibility_timeout": float,
    "session_timeout": float,
    "replication_factor": int,
}


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
        _, found = split_options(url, _URL_OPTIONS)
        return cls(parts.netloc or "127.0.0.1:9092", **(found | options))

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
            metadata_max_age_ms=self._metadata_max_age_ms(),
            rebalance_timeout_ms=self._rebalance_timeout_ms(),
            request_timeout_ms=self._consumer_request_timeout_ms(),
        )

    def _rebalance_timeout_ms(self) -> int:
        """How long a rebalance waits for the members to rejoin. aiokafka's default is its
        max poll interval, 5 minutes: a member leaving (a transport closing, a worker
        draining) while another was rejoining could hold both that long. Members here
        poll all along and their rebalance callbacks end within half a session timeout."""
        return round(max(4 * self.session_timeout, 10.0) * 1000)

    def _consumer_request_timeout_ms(self) -> int:
        """How long a consumer waits for an answer: a JoinGroup may be held for the
        rebalance timeout, and 5 s more (the Java client's rule); aiokafka's default, 40 s,
        also held up leaving the group when the broker did not answer."""
        return self._rebalance_timeout_ms() + 5000

    def _metadata_max_age_ms(self) -> int:
        """How old clients let their view of the topics get: a broker that restarted empty
        may have made a topic again with another partition count, and a stale view kept
        consumers off partitions (aiokafka's default is 5 minutes)."""
        return round(max(self.session_timeout, 5.0) * 1000)

    async def _client(self, kind: str) -> Any:
        """The started producer, admin client or snapshot reader, started on first use."""
        async with self._lock:
            if self._closed:
                raise TransportError("KafkaTransport is closed")
            client = self._clients.get(kind)
            if client is None:
                client = await self._started(kind)
                if self._closed:  # close() ran meanwhile and could not see this client
                    await self._stop_unused(kind, client)
                    raise TransportError("KafkaTransport is closed")
                self._clients[kind] = client
            return client

    async def _started(self, kind: str) -> Any:
        """A new started client; stopped again if starting fails or is cancelled halfway
        (its connections and background tasks would outlive the transport)."""
        client = self._new_client(kind)
        try:
            with translate_errors(f"connecting ({kind})", self.where):
                await client.start()
        except BaseException:
            await self._stop_unused(kind, client)
            raise
        return client

    async def _stop_unused(self, kind: str, client: Any) -> None:
        """Stop a client that is not in use, even while being cancelled (bounded)."""
        with anyio.move_on_after(_STOP_UNUSED_TIMEOUT, shield=True):
            try:
                await (client.close() if kind == "admin" else client.stop())
            except Exception as exc:  # it never connected, or the broker went away: gone anyway
                log.debug("stopping an unused client failed", kind=kind, error=repr(exc))

    def _new_client(self, kind: str) -> Any:
        if kind == "producer":
            return AIOKafkaProducer(
                bootstrap_servers=self.bootstrap,
                acks="all",
                request_timeout_ms=round(_PRODUCE_TIMEOUT * 1000),
                metadata_max_age_ms=self._metadata_max_age_ms(),
            )
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
        missing = {name: n for name, n in topics.items() if name not in self._topics}
        if missing:
            await self._create(missing)

    async def _create(self, topics: Mapping[str, int]) -> list[str]:
        """Create whichever of ``topics`` the broker lacks; the names it had to create.

        The producer's metadata is refreshed after a creation: a broker that lost its
        data may take records for topics it no longer lists (tansu does), and a cached
        layout would keep the producer writing where nothing can be committed.
        """
        admin = await self._client("admin")
        with translate_errors(f"creating topics {sorted(topics)}", self.where):
            new = [NewTopic(name, n, self.replication_factor) for name, n in topics.items()]
            response = await admin.create_topics(new)
            created = []
            for name, code, message in response.topic_errors:
                if code == 0:
                    created.append(name)
                elif code != kafka_errors.TopicAlreadyExistsError.errno:
                    raise kafka_errors.for_code(code)(f"topic {name!r}: {message}")
        self._topics.update(topics)
        if created:
            await self._refresh_layout()
        return created

    async def _refresh_layout(self) -> None:
        """Have the producer read its topics' partitions again (bounded): a broker that
        restarted empty may have made them again with another count, and producing by a
        stale layout fails for ever."""
        producer = self._clients.get("producer")
        if producer is not None:
            with contextlib.suppress(Exception), anyio.move_on_after(_STOP_UNUSED_TIMEOUT):
                await producer.client.force_metadata_update()

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
        try:
            with translate_errors(f"producing to {topic!r}", self.where):
                await producer.send_and_wait(
                    topic, body, key=key, headers=encoded, partition=partition
                )
        except TransportError:
            self._topics.discard(topic)  # a broker that lost it: the next send makes it again
            await self._refresh_layout()
            raise

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
        priority: int | None = None,
    ) -> None:
        """Produce ``body`` to the queue's topic (``.delay`` if ``delay``); all replicas ack."""
        topic = await self._queue_topics(queue)
        raw_key = None if key is None else key.encode()
        await self._put(topic, bytes(body), raw_key, dict(headers or {}), delay)

    # -- consuming ----------------------------------------------------------
    async def connect(self, queue: str) -> None:
        """Create the queue's topics (work, ``.delay``, ``.dlq``) where missing (idempotent);
        TransportError if the cluster cannot be reached."""
        await self._queue_topics(queue)

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
        await self._client("reader")  # started now, not in a rebalance callback's time
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
        """Hand held deliveries back, leave every group, disconnect; idempotent.

        Bounded even when the broker does not answer (see :func:`close_bound`); what could
        not be handed back or committed is delivered again.
        """
        self._closing = True
        await asyncio.gather(*(member.stop() for member in self._members))
        self._closed = True
        for kind, client in self._clients.items():
            with contextlib.suppress(TransportError), translate_errors("closing", self.where):
                await (client.close() if kind == "admin" else client.stop())
        self._clients.clear()

    def __repr__(self) -> str:
        return f"KafkaTransport({self.where!r}, group={self.group!r})"

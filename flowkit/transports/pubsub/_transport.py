"""``PubSubTransport``: queues on Google Cloud Pub/Sub, through google-cloud-pubsub.

Runs on asyncio and on trio: every call into the client library (which blocks)
runs in a worker thread (``anyio.to_thread``), so the event loop never waits on
the SDK. With ``PUBSUB_EMULATOR_HOST=host:port`` set, the clients talk plaintext
gRPC to that emulator and look up no credentials.

**Topology.** For a flowkit queue ``q`` and ``topic_prefix`` ``P`` (names are
``P-q`` with any character Pub/Sub does not allow in a name written ``%XX``):

* topic + subscription ``P-q`` — the work queue. The subscription has the
  ``ack_deadline`` (clamped to Pub/Sub's 10..600 s), message ordering when
  ``ordering=True``, and a dead-letter policy to ``P-q-dlq`` after
  ``max_delivery_attempts`` deliveries (``None``: no policy). Every worker reads
  the one subscription, so workers compete for messages.
* topic + subscription ``P-q-dlq`` — dead letters, kept by the subscription:
  the server's (after too many attempts) and :meth:`PubSubDelivery.dead_letter`'s,
  which publishes a copy carrying ``x-flowkit-reason`` and then acks.
  ``receive(f"{q}-dlq")`` reads them back.
* topic + subscription ``P-q~delay`` — messages not due yet (below).

With ``create=True`` (the default) ``send`` and ``receive`` create what is
missing (existing resources are used as they are, never updated). With
``create=False`` nothing is created: for locked-down projects, provision the
six resources above beforehand. Dead-lettering by the server needs the Pub/Sub
service agent to be allowed to publish to ``P-q-dlq`` and subscribe to ``P-q``.

**Receiving: synchronous pull with exact flow control.** ``receive`` calls
Pull for at most ``flow_control`` minus the deliveries it holds, so one
consumer never holds more than ``flow_control`` unsettled messages and the rest
stay available to other workers. (StreamingPull was rejected: its flow control
is advisory — the client library buffers what the server sends beyond it, and
the emulator ignores it entirely, so the first consumer of a backlog takes all
of it; and the library extends leases on its own, which contradicts the
protocol's visibility timeout. Google's advice for "each worker processes N at a
time" is synchronous pull.) Received messages get a *receipt* modack of
``ack_deadline`` at once, as the client library's own subscriber does, so a
delivery's lease is ``ack_deadline`` from its receipt. ``extend(s)`` is
ModifyAckDeadline(``s``, at most 600 s per call); ``nack(after)`` is
ModifyAckDeadline(``after``, rounded up; 0 when ``None``). Acks and modacks are
unary RPCs the caller waits for, so an ack is never lost when a receive loop or
the transport stops. Each delivery tracks its lease locally (conservatively, from
before the RPC that set it): settling a delivery whose lease ran out raises
:class:`~flowkit.transports.DeliveryError` without asking the server.
Stopping a ``receive`` hands back what it pulled but did not yield;
:meth:`PubSubTransport.close` also hands back every delivery still held.

**Delays.** Pub/Sub cannot hold a message back. ``send(delay=...)`` publishes to
``P-q~delay`` with ``x-flowkit-deliver-after`` (epoch seconds); every running
``receive(q)`` also runs a forwarder thread on that subscription, which nacks an
early message with the remaining delay (at most 600 s at a time) until it is
due, then publishes it to ``P-q`` and acks it. Keeping this off the work
subscription keeps early arrivals out of its delivery count and dead-letter
policy. "Due" is judged by wall clocks, so clock skew between machines shifts
delays. ``nack(requeue_after)`` beyond 600 s goes the same way (carrying the
attempts so far). Delays are bounded by the delay subscription's retention (7 days).

**Attempts.** ``attempt`` is Pub/Sub's ``delivery_attempt``, which the server
only counts when the subscription has a dead-letter policy; without one it is 1
(plus attempts carried across a long nack in ``x-flowkit-attempts``).

**Ordering.** With ``ordering=True`` the message key is the ordering key.
flowkit's key is ``run_id/node_id``, so a run's parallel branches are never
serialised; messages of one key are handed out in publish order, and a nacked
message comes back before later messages of its key. Without a key, no order.

**The emulator** (Google's, 0.8.20 tested) differs from Pub/Sub where it
matters here: it ignores StreamingPull flow control; its dead-letter policy is
partial — a message that used up ``max_delivery_attempts`` moves to the
dead-letter topic only when the work subscription is pulled again, and on an
ordered subscription it is dropped instead; on an ordered subscription a nack
(modack 0) is ignored while later messages of its key are outstanding (all come
back at the ack deadline, possibly out of order); and it accepts ack deadlines
under 10 s and modacks over 600 s, which Pub/Sub refuses (this transport sends
neither).

**Publishing** is one Publish RPC per ``send``, through the generated client of
google-cloud-pubsub (``google.pubsub_v1``), without the high-level publisher's
batching: ``send`` returns once Pub/Sub has the message and never waits out a
batch window, and per-key order is simply the order of the awaited sends.

Every exception of google-api-core, google-auth and the Pub/Sub client library
becomes a :class:`~flowkit.TransportError` (``DeliveryError`` while settling) in
:func:`translate_errors`, and nowhere else.

Example::

    transport = PubSubTransport("my-project", flow_control=32)
    await transport.send("flowkit", b"...", key="order-A1/charge")
    async for delivery in transport.receive("flowkit"):
        await delivery.ack()
"""

from __future__ import annotations

import contextlib
import threading
import time
from functools import partial
from typing import TYPE_CHECKING, Any, TypeVar
from urllib.parse import urlsplit

import anyio
import structlog

from ..._errors import ConfigurationError, MissingDependency, TransportError
from ...backends._options import redact, split_options
from ._errors import sdk_errors as sdk_errors
from ._errors import translate_errors as translate_errors
from ._names import (
    _EMPTY,
    DELIVER_AFTER,
    MAX_DEADLINE,
    _attributes,
    _deadline,
    _escape,
    _Names,
)
from ._names import REASON as REASON
from ._options import _URL_OPTIONS, _emulator_channel, _validate
from ._receiver import PubSubDelivery as PubSubDelivery
from ._receiver import _Receiver

try:
    import google.api_core.exceptions as api_errors
    from google.pubsub_v1 import PublisherClient, PubsubMessage, SubscriberClient
    from google.pubsub_v1.services.publisher.transports import PublisherGrpcTransport
    from google.pubsub_v1.services.subscriber.transports import SubscriberGrpcTransport
except ImportError:  # the "pubsub" extra is not installed: PubSubTransport() says so
    _HAVE_PUBSUB = False
else:
    _HAVE_PUBSUB = True

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Callable, Iterable, Mapping

    from google.pubsub_v1.types import ReceivedMessage

_log = structlog.get_logger("flowkit.transports")
T = TypeVar("T")

_MIN_SUBSCRIPTION_DEADLINE = 10
PULL_TIMEOUT = 10.0  # one Pull waits this long for messages before asking again


class PubSubTransport:
    """Queues on Google Cloud Pub/Sub (or its emulator, via ``PUBSUB_EMULATOR_HOST``).

    Args:
        project: the Google Cloud project id.
        topic_prefix: start of every topic and subscription name (a letter first).
        create: create missing topics and subscriptions (``False`` for locked-down projects).
        flow_control: at most this many unsettled deliveries per ``receive`` (the
            worker's concurrency).
        ack_deadline: a delivery's lease, seconds, until ``extend``-ed; the work
            subscription's ack deadline (clamped to 10..600 s), which is how long the
            messages of a crashed consumer take to come back. Keep it above a Worker's
            heartbeat (``lease / 3``), or deliveries lapse before their first extend.
        max_delivery_attempts: dead-letter after this many deliveries (5..100), or
            ``None`` for no dead-letter policy.
        ordering: use the message key as Pub/Sub's ordering key.

    Example:
        >>> PubSubTransport("my-project", flow_control=8)
        PubSubTransport('my-project', topic_prefix='flowkit')
    """

    def __init__(
        self,
        project: str,
        *,
        topic_prefix: str = "flowkit",
        create: bool = True,
        flow_control: int = 32,
        ack_deadline: float = 30,
        max_delivery_attempts: int | None = 5,
        ordering: bool = True,
    ) -> None:
        if not _HAVE_PUBSUB:
            raise MissingDependency("PubSubTransport", "pubsub")
        _validate(project, topic_prefix, flow_control, ack_deadline, max_delivery_attempts)
        self.project = project
        self.topic_prefix = topic_prefix
        self.create = create
        self.flow_control = flow_control
        self.ack_deadline = ack_deadline
        self.lease = min(float(MAX_DEADLINE), ack_deadline)
        self.max_delivery_attempts = max_delivery_attempts
        self.ordering = ordering
        self.where = f"project {project!r}"
        self._names: dict[str, _Names] = {}
        self._receivers: set[_Receiver] = set()
        self._ensuring = anyio.Lock()
        self._clients_lock = threading.Lock()
        self._clients: tuple[PublisherClient, SubscriberClient] | None = None
        self._closed = False

    @classmethod
    def from_url(cls, url: str, **options: Any) -> PubSubTransport:
        """Build from ``pubsub://project?topic_prefix=shop&flow_control=16&ordering=false``.

        The query may set any keyword argument; keyword ``options`` override it.
        """
        parts = urlsplit(url)
        if parts.scheme.lower() != "pubsub" or not parts.hostname or "@" in parts.netloc:
            raise ConfigurationError(f"not a Pub/Sub URL: {redact(url)!r}; use pubsub://project-id")
        _, found = split_options(url, _URL_OPTIONS)
        return cls(parts.netloc, **(found | options))

    # -- names ------------------------------------------------------------------
    def names(self, queue: str) -> _Names:
        """The topic and subscription paths behind ``queue`` (see the module docstring)."""
        base = f"{self.topic_prefix}-{_escape(queue)}"
        if len(base) + len("~delay") > 255:
            raise ConfigurationError(f"queue name {queue!r} is too long for a Pub/Sub name")
        return _Names.of(self.project, base)

    # -- the SDK, in worker threads ---------------------------------------------
    def _publisher(self) -> PublisherClient:
        return self._client_pair()[0]

    def _subscriber(self) -> SubscriberClient:
        return self._client_pair()[1]

    def _client_pair(self) -> tuple[PublisherClient, SubscriberClient]:
        """The generated gRPC clients, made on first use (in a worker thread: it may block)."""
        with self._clients_lock:
            if self._clients is None:
                if self._closed:  # closing: the clients still open serve the hand-back
                    raise TransportError(f"PubSubTransport for {self.where} is closed")
                emulator = _emulator_channel()
                if emulator is None:
                    self._clients = (PublisherClient(), SubscriberClient())
                else:
                    publishing = PublisherGrpcTransport(channel=emulator)
                    self._clients = (PublisherClient(transport=publishing), self._new_subscriber())
            return self._clients

    def _new_subscriber(self) -> SubscriberClient:
        if self._closed:
            raise TransportError(f"PubSubTransport for {self.where} is closed")
        emulator = _emulator_channel()
        if emulator is None:
            return SubscriberClient()
        return SubscriberClient(transport=SubscriberGrpcTransport(channel=emulator))

    async def _call(
        self, operation: str, fn: Callable[[], T], *, settling: bool = False, abandon: bool = False
    ) -> T:
        """Run ``fn`` in a worker thread, translating SDK errors."""
        with translate_errors(operation, self.where, settling=settling):
            return await anyio.to_thread.run_sync(fn, abandon_on_cancel=abandon)

    @staticmethod
    def _pull_sync(
        client: SubscriberClient, subscription: str, max_messages: int
    ) -> list[ReceivedMessage]:
        try:
            response = client.pull(
                subscription=subscription, max_messages=max_messages, timeout=PULL_TIMEOUT
            )
        except api_errors.DeadlineExceeded:
            return []  # nothing arrived while the pull waited
        return list(response.received_messages)

    def _modack_sync(self, subscription: str, ack_ids: list[str], seconds: float) -> None:
        self._subscriber().modify_ack_deadline(
            subscription=subscription, ack_ids=ack_ids, ack_deadline_seconds=_deadline(seconds)
        )

    def _hand_back_sync(self, subscription: str, ack_ids: list[str]) -> None:
        """Nack ``ack_ids`` from a thread nobody waits on: failures are logged, never raised."""
        if not ack_ids:
            return
        try:
            self._modack_sync(subscription, ack_ids, 0)
        except Exception as exc:  # they come back when their deadline passes anyway
            _log.warning("could not hand messages back", subscription=subscription, error=str(exc))

    def _publish_sync(
        self, topic: str, body: bytes, key: str | None, attributes: dict[str, str]
    ) -> None:
        """One Publish RPC: no client-side batching, so ``send`` never waits for a batch."""
        if not body and not attributes:
            attributes = {_EMPTY: "1"}
        ordering_key = key if self.ordering and key else ""
        message = PubsubMessage(data=body, attributes=attributes, ordering_key=ordering_key)
        self._publisher().publish(topic=topic, messages=[message])

    def _ack_sync(self, subscription: str, ack_ids: list[str]) -> None:
        self._subscriber().acknowledge(subscription=subscription, ack_ids=ack_ids)

    async def _publish(
        self,
        topic: str,
        body: bytes,
        key: str | None,
        attributes: dict[str, str],
        *,
        settling: bool = False,
    ) -> None:
        publish = partial(self._publish_sync, topic, body, key, attributes)
        await self._call(f"publishing to {topic}", publish, settling=settling)

    async def _modack(
        self, subscription: str, ack_ids: list[str], seconds: float, *, settling: bool = False
    ) -> None:
        modack = partial(self._modack_sync, subscription, ack_ids, seconds)
        await self._call(f"modifying ack deadlines on {subscription}", modack, settling=settling)

    async def _acknowledge(self, subscription: str, ack_id: str) -> None:
        ack = partial(self._ack_sync, subscription, [ack_id])
        await self._call(f"acknowledging on {subscription}", ack, settling=True)

    # -- topology ---------------------------------------------------------------
    async def _ensure(self, queue: str) -> _Names:
        """The queue's names, after creating its resources (once per transport) if asked."""
        if self._closed:
            raise TransportError(f"PubSubTransport for {self.where} is closed")
        names = self._names.get(queue)
        if names is not None:
            return names
        async with self._ensuring:
            if queue not in self._names:
                names = self.names(queue)
                if self.create:
                    operation = f"creating the topics and subscriptions of queue {queue!r}"
                    await self._call(operation, partial(self._create_sync, names))
                self._names[queue] = names
            return self._names[queue]

    def _create_sync(self, names: _Names) -> None:
        for topic in (names.topic, names.dead_topic, names.delay_topic):
            self._create(partial(self._publisher().create_topic, name=topic))
        self._create_subscription(names.dead_subscription, names.dead_topic)
        self._create_subscription(names.delay_subscription, names.delay_topic, 60)
        deadline = max(_MIN_SUBSCRIPTION_DEADLINE, _deadline(self.ack_deadline))
        extra: dict[str, Any] = {"enable_message_ordering": self.ordering}
        if self.max_delivery_attempts is not None:
            extra["dead_letter_policy"] = {
                "dead_letter_topic": names.dead_topic,
                "max_delivery_attempts": self.max_delivery_attempts,
            }
        self._create_subscription(names.subscription, names.topic, deadline, **extra)

    def _create_subscription(
        self, name: str, topic: str, deadline: int = _MIN_SUBSCRIPTION_DEADLINE, **extra: Any
    ) -> None:
        request = {"name": name, "topic": topic, "ack_deadline_seconds": deadline, **extra}
        request["expiration_policy"] = {}  # a work queue never expires for lack of readers
        self._create(partial(self._subscriber().create_subscription, request=request))

    @staticmethod
    def _create(create: Callable[[], object]) -> None:
        with contextlib.suppress(api_errors.AlreadyExists):  # made elsewhere: used as it is
            create()

    # -- Transport ----------------------------------------------------------------
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
        """Publish ``body`` and return once Pub/Sub has it (``delay``: via the delay topic)."""
        names = await self._ensure(queue)
        attributes = _attributes(headers, key)
        topic = names.topic
        if delay is not None and delay > 0:
            attributes[DELIVER_AFTER] = repr(time.time() + delay)
            topic, key = names.delay_topic, None
        await self._publish(topic, bytes(body), key, attributes)

    async def connect(self, queue: str) -> None:
        """Create ``queue``'s topics and subscriptions if ``create`` (idempotent);
        TransportError if Pub/Sub cannot be reached. Without ``create`` it checks nothing."""
        await self._ensure(queue)

    async def receive(self, queue: str) -> AsyncIterator[PubSubDelivery]:
        """Deliveries from ``queue`` until the transport is closed (or the loop is left)."""
        names = await self._ensure(queue)
        receiver = _Receiver(self, names)
        self._receivers.add(receiver)
        receiver.forwarder.start()
        try:
            while not (self._closed or receiver.stopped):
                await receiver.fill()
                while (delivery := receiver.next_ready()) is not None:
                    yield delivery
        finally:
            unyielded = receiver.stop()
            with anyio.CancelScope(shield=True):
                await self._hand_back([(names.subscription, unyielded)])
            if not any(d.live for d in receiver.held):
                self._receivers.discard(receiver)

    async def _hand_back(self, groups: Iterable[tuple[str, list[str]]]) -> None:
        """Nack these ack ids, so Pub/Sub redelivers them now (best effort)."""
        for subscription, ack_ids in groups:
            if ack_ids:
                await anyio.to_thread.run_sync(self._hand_back_sync, subscription, ack_ids)

    async def close(self) -> None:
        """Stop every receive loop, hand back what they hold, and close the clients."""
        if self._closed:
            return
        self._closed = True
        groups = []
        for receiver in list(self._receivers):
            unsettled = [d.hand_back() for d in receiver.held]
            ack_ids = receiver.stop() + [ack_id for ack_id in unsettled if ack_id]
            groups.append((receiver.names.subscription, ack_ids))
        self._receivers.clear()
        with anyio.CancelScope(shield=True):
            await self._hand_back(groups)
            await anyio.to_thread.run_sync(self._close_clients)

    def _close_clients(self) -> None:
        with self._clients_lock:
            clients, self._clients = self._clients, None
        if clients is not None:
            for client in clients:
                client.transport.close()  # type: ignore[no-untyped-call]  # untyped in the SDK

    def __repr__(self) -> str:
        return f"PubSubTransport({self.project!r}, topic_prefix={self.topic_prefix!r})"

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
import math
import os
import threading
import time
from collections import deque
from contextlib import contextmanager
from functools import partial
from typing import TYPE_CHECKING, Any, TypeVar
from urllib.parse import parse_qsl, urlsplit

import anyio
import attrs
import structlog

from .._errors import MissingDependency, TransportError
from ..stores._urls import ConfigurationError, redact
from ._protocol import DeliveryError

try:
    import google.api_core.exceptions as api_errors
    import google.auth.exceptions as auth_errors
    import grpc  # type: ignore[import-untyped,unused-ignore]  # grpcio ships no type hints
    from google.cloud.pubsub_v1.publisher import (  # type: ignore[import-untyped,unused-ignore]
        exceptions as publish_errors,  # this subpackage has no py.typed marker
    )
    from google.pubsub_v1 import PublisherClient, PubsubMessage, SubscriberClient
    from google.pubsub_v1.services.publisher.transports import PublisherGrpcTransport
    from google.pubsub_v1.services.subscriber.transports import SubscriberGrpcTransport
except ImportError:  # the "pubsub" extra is not installed: PubSubTransport() says so
    _HAVE_PUBSUB = False
else:
    _HAVE_PUBSUB = True

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Callable, Iterable, Iterator, Mapping

    from google.pubsub_v1.types import ReceivedMessage

_log = structlog.get_logger("flowkit.transports")
T = TypeVar("T")

KEY = "x-flowkit-key"
REASON = "x-flowkit-reason"
ATTEMPTS = "x-flowkit-attempts"  # deliveries before a long nack republished the message
DELIVER_AFTER = "x-flowkit-deliver-after"  # epoch seconds
_EMPTY = "x-flowkit-empty"  # Pub/Sub refuses a message with no data and no attributes
_INTERNAL = frozenset({KEY, ATTEMPTS, DELIVER_AFTER, _EMPTY})
MAX_DEADLINE = 600  # Pub/Sub's longest ack deadline / modack, seconds
_MIN_SUBSCRIPTION_DEADLINE = 10
PULL_TIMEOUT = 10.0  # one Pull waits this long for messages before asking again
_NAME_CHARS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_.+")
_URL_OPTIONS: dict[str, Callable[[str], Any]] = {
    "topic_prefix": str,
    "create": lambda text: _boolean(text),
    "flow_control": int,
    "ack_deadline": float,
    "max_delivery_attempts": lambda text: None if text.lower() in ("", "none", "0") else int(text),
    "ordering": lambda text: _boolean(text),
}


def _boolean(text: str) -> bool:
    if text.lower() in ("1", "true", "yes", "on"):
        return True
    if text.lower() in ("0", "false", "no", "off"):
        return False
    raise ValueError(text)


# -- errors ------------------------------------------------------------------
def sdk_errors() -> tuple[type[BaseException], ...]:
    """The roots of every exception google-api-core, google-auth and google-cloud-pubsub raise."""
    return (
        api_errors.GoogleAPIError,  # every RPC error, RetryError, PublishError, AcknowledgeError
        # not a GoogleAPIError, and absent from older google-api-core releases
        getattr(api_errors, "AsyncRestUnsupportedParameterError", api_errors.GoogleAPIError),
        auth_errors.GoogleAuthError,  # no or bad credentials
        publish_errors.MessageTooLargeError,
        publish_errors.PublishToPausedOrderingKeyException,
        publish_errors.FlowControlLimitError,
        grpc.RpcError,  # a raw gRPC failure the library did not wrap
    )


def _hint(exc: BaseException) -> str:
    """What to do next about ``exc``."""
    if isinstance(exc, api_errors.NotFound):
        return "the topic or subscription does not exist: create it, or use create=True"
    if isinstance(
        exc, api_errors.Forbidden | api_errors.Unauthorized | auth_errors.GoogleAuthError
    ):
        return (
            "check the credentials (GOOGLE_APPLICATION_CREDENTIALS) and their Pub/Sub IAM "
            "roles, or set PUBSUB_EMULATOR_HOST to use the emulator"
        )
    if isinstance(exc, api_errors.Conflict | api_errors.FailedPrecondition):
        return "a resource of that name exists with other settings: delete it or rename"
    if isinstance(exc, api_errors.BadRequest | publish_errors.MessageTooLargeError):
        return "Pub/Sub refused the request: check names, ordering settings and message size"
    if isinstance(exc, publish_errors.PublishToPausedOrderingKeyException):
        return "an earlier publish with this ordering key failed: send again"
    return "check that Pub/Sub (or PUBSUB_EMULATOR_HOST) is reachable, then retry"


@contextmanager
def translate_errors(operation: str, where: str, *, settling: bool = False) -> Iterator[None]:
    """Re-raise any SDK error in the block as a TransportError (DeliveryError if ``settling``)."""
    try:
        yield
    except sdk_errors() as exc:
        error = DeliveryError if settling else TransportError
        raise error(
            f"Pub/Sub {where}: {operation} failed "
            f"({type(exc).__name__}: {_text(exc)}); {_hint(exc)}"
        ) from exc


def _text(exc: BaseException) -> str:
    try:
        return str(exc)
    except Exception:  # an SDK class whose __str__ needs arguments it was not given
        return repr(exc.args)


# -- names and messages --------------------------------------------------------
def _escape(name: str) -> str:
    """``name`` with every character Pub/Sub names do not allow written as ``%XX``."""
    return "".join(
        c if c in _NAME_CHARS else "".join(f"%{b:02X}" for b in c.encode()) for c in name
    )


@attrs.frozen
class _Names:
    """The resource paths behind one flowkit queue."""

    topic: str
    subscription: str
    dead_topic: str
    dead_subscription: str
    delay_topic: str
    delay_subscription: str

    @classmethod
    def of(cls, project: str, base: str) -> _Names:
        topics, subscriptions = f"projects/{project}/topics/", f"projects/{project}/subscriptions/"
        dead, delay = f"{base}-dlq", f"{base}~delay"
        return cls(
            topics + base,
            subscriptions + base,
            topics + dead,
            subscriptions + dead,
            topics + delay,
            subscriptions + delay,
        )


def _attributes(headers: Mapping[str, str] | None, key: str | None) -> dict[str, str]:
    attributes = {str(name): str(value) for name, value in (headers or {}).items()}
    if key is not None:
        attributes[KEY] = key
    return attributes


def _deadline(seconds: float) -> int:
    """``seconds`` as a modack deadline: whole seconds, rounded up, within 0..600."""
    return min(MAX_DEADLINE, max(0, math.ceil(seconds)))


class PubSubDelivery:
    """A message pulled by :meth:`PubSubTransport.receive`, leased until its deadline."""

    def __init__(self, receiver: _Receiver, received: ReceivedMessage, expires: float) -> None:
        attributes = dict(received.message.attributes)
        self._receiver = receiver
        self._ack_id: str = received.ack_id
        self._attributes = attributes
        self._expires = expires
        self._done = False
        self.body: bytes = bytes(received.message.data)
        self.headers: Mapping[str, str] = {
            name: value for name, value in attributes.items() if name not in _INTERNAL
        }
        self.key: str | None = attributes.get(KEY)
        base = attributes.get(ATTEMPTS, "0")
        self.attempt = (int(base) if base.isdigit() else 0) + max(1, received.delivery_attempt)

    @property
    def live(self) -> bool:
        """Held: neither settled nor past its lease."""
        return not self._done and time.monotonic() < self._expires

    def _check(self, operation: str) -> None:
        if self._done:
            raise DeliveryError(
                f"cannot {operation} a Pub/Sub delivery that was already settled or handed "
                "back (the transport was closed)"
            )
        if time.monotonic() >= self._expires:
            raise DeliveryError(
                f"cannot {operation} a Pub/Sub delivery whose lease ran out (Pub/Sub redelivers "
                "it); extend() long handlers"
            )

    def _settle(self, operation: str) -> None:
        self._check(operation)
        self._done = True
        self._receiver.release(self)

    async def ack(self) -> None:
        self._settle("ack")
        await self._receiver.transport._acknowledge(self._receiver.names.subscription, self._ack_id)

    async def nack(self, requeue_after: float | None = None) -> None:
        self._settle("nack")
        after = requeue_after or 0.0
        transport, names = self._receiver.transport, self._receiver.names
        if after <= MAX_DEADLINE:
            await transport._modack(names.subscription, [self._ack_id], after, settling=True)
            return
        attributes = {**self._attributes, ATTEMPTS: str(self.attempt)}
        attributes[DELIVER_AFTER] = repr(time.time() + after)
        await transport._publish(names.delay_topic, self.body, None, attributes, settling=True)
        await transport._acknowledge(names.subscription, self._ack_id)

    async def extend(self, seconds: float) -> None:
        self._check("extend")
        seconds = min(float(MAX_DEADLINE), seconds)
        started = time.monotonic()
        await self._receiver.transport._modack(
            self._receiver.names.subscription, [self._ack_id], max(seconds, 1.0), settling=True
        )
        if not self._done:
            self._expires = started + seconds

    async def dead_letter(self, reason: str) -> None:
        self._settle("dead-letter")
        transport, names = self._receiver.transport, self._receiver.names
        attributes = {**self._attributes, REASON: reason}
        await transport._publish(names.dead_topic, self.body, None, attributes, settling=True)
        await transport._acknowledge(names.subscription, self._ack_id)

    def hand_back(self) -> str | None:
        """Give the delivery up (for :meth:`PubSubTransport.close`); its ack id if it was held."""
        held = self.live
        self._done = True
        return self._ack_id if held else None

    def __repr__(self) -> str:
        return f"PubSubDelivery(key={self.key!r}, attempt={self.attempt})"


# -- receiving ---------------------------------------------------------------------
class _Receiver:
    """One ``receive(queue)`` loop: what it pulled, what it holds, its delay forwarder."""

    def __init__(self, transport: PubSubTransport, names: _Names) -> None:
        self.transport = transport
        self.names = names
        self.stopped = False
        self.held: set[PubSubDelivery] = set()
        self.pending: deque[PubSubDelivery] = deque()
        self._inbox: list[ReceivedMessage] = []  # filled by the pull thread
        self._lock = threading.Lock()
        self._changed = anyio.Event()
        self._scope: anyio.CancelScope | None = None
        self._puller: SubscriberClient | None = None  # its own channel, closed by stop()
        self.forwarder = _Forwarder(self)

    def puller(self) -> SubscriberClient:
        """The client this loop pulls with (in worker threads); closing it ends its pulls."""
        with self._lock:
            if self.stopped:
                raise TransportError("this receive loop has stopped")
            if self._puller is None:
                self._puller = self.transport._new_subscriber()
            return self._puller

    def release(self, delivery: PubSubDelivery) -> None:
        self.held.discard(delivery)
        if self.stopped and not self.held:
            self.transport._receivers.discard(self)
        self._wake()

    def _wake(self) -> None:
        self._changed.set()
        self._changed = anyio.Event()

    def next_ready(self) -> PubSubDelivery | None:
        """The next pulled delivery still within its lease, now held by the consumer."""
        while self.pending and not self.stopped:
            delivery = self.pending.popleft()
            if delivery.live:
                self.held.add(delivery)
                return delivery
        return None

    async def fill(self) -> None:
        """Wait for room under ``flow_control``, then pull at most that many messages."""
        free = await self._room()
        if not free:
            return
        self.forwarder.check()
        with anyio.CancelScope() as self._scope:
            await self.transport._call(
                f"pulling from {self.names.subscription}", partial(self._pull, free), abandon=True
            )
        with self._lock:
            received, self._inbox = self._inbox, []
        if not received:
            return
        sent_at = time.monotonic()
        ack_ids = [r.ack_id for r in received]
        await self.transport._modack(self.names.subscription, ack_ids, self.transport.lease)
        if self.stopped:  # closed during the receipt modack: give them straight back
            await self.transport._hand_back([(self.names.subscription, ack_ids)])
            return
        expires = sent_at + self.transport.lease
        self.pending.extend(PubSubDelivery(self, r, expires) for r in received)

    async def _room(self) -> int:
        while not self.stopped:
            self.held = {d for d in self.held if d.live}
            free = self.transport.flow_control - len(self.held)
            if free > 0:
                return free
            changed = self._changed
            soonest = min(d._expires for d in self.held)
            with anyio.move_on_after(max(0.0, soonest - time.monotonic())):
                await changed.wait()
        return 0

    def _pull(self, free: int) -> None:
        """In a worker thread: pull, and keep the messages unless the loop stopped meanwhile."""
        try:
            received = self.transport._pull_sync(self.puller(), self.names.subscription, free)
        except Exception:
            if self.stopped:
                return  # an abandoned pull failing as the client closes: nothing was received
            raise
        with self._lock:
            if not self.stopped:
                self._inbox.extend(received)
                return
        self.transport._hand_back_sync(self.names.subscription, [r.ack_id for r in received])

    def stop(self) -> list[str]:
        """Stop pulling; the ack ids of messages pulled but never yielded."""
        with self._lock:
            self.stopped = True
            unyielded = [r.ack_id for r in self._inbox]
            self._inbox, puller, self._puller = [], self._puller, None
        if puller is not None:  # ends a pull in flight, so it cannot take messages any more
            puller.transport.close()  # type: ignore[no-untyped-call]  # untyped in the SDK
        unyielded += [d.hand_back() or "" for d in self.pending]
        self.pending.clear()
        if self._scope is not None:
            self._scope.cancel()
        self.forwarder.stop()
        self._wake()
        return [ack_id for ack_id in unyielded if ack_id]


class _Forwarder:
    """A thread moving due messages from a queue's delay subscription to its topic.

    It stops at its first failure and keeps the error, which ``receive`` then raises.
    """

    def __init__(self, receiver: _Receiver) -> None:
        self._receiver = receiver
        self._transport = receiver.transport
        self._names = receiver.names
        self._stopping = threading.Event()
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="flowkit-pubsub-delay", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stopping.set()

    def check(self) -> None:
        """Raise (translated) the error the forwarder stopped on, if any."""
        if self._error is not None:
            error, self._error = self._error, None
            with translate_errors("forwarding delayed messages", self._transport.where):
                raise error

    def _run(self) -> None:
        try:
            while not self._stopping.is_set():
                self._forward_batch()
        except Exception as exc:  # kept for receive() to raise: a thread cannot raise it
            if not self._stopping.is_set():
                self._error = exc

    def _forward_batch(self) -> None:
        puller = self._receiver.puller()
        received = self._transport._pull_sync(puller, self._names.delay_subscription, 100)
        if self._stopping.is_set():
            self._transport._hand_back_sync(
                self._names.delay_subscription, [r.ack_id for r in received]
            )
            return
        for message in received:
            self._forward(message)

    def _forward(self, received: ReceivedMessage) -> None:
        attributes = dict(received.message.attributes)
        try:
            wait = float(attributes.pop(DELIVER_AFTER, "0")) - time.time()
        except ValueError:
            wait = 0.0  # a malformed due time: deliver now rather than never
        transport, names = self._transport, self._names
        if wait > 0:
            transport._modack_sync(names.delay_subscription, [received.ack_id], wait)
            return
        key = attributes.get(KEY)
        transport._publish_sync(names.topic, bytes(received.message.data), key, attributes)
        transport._ack_sync(names.delay_subscription, [received.ack_id])


# -- the transport -----------------------------------------------------------------
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
        for name, text in parse_qsl(parts.query, keep_blank_values=True):
            if name not in _URL_OPTIONS:
                raise ConfigurationError(
                    f"unknown option {name!r} in {redact(url)!r}: use {', '.join(_URL_OPTIONS)}"
                )
            try:
                options.setdefault(name, _URL_OPTIONS[name](text))
            except ValueError as exc:
                raise ConfigurationError(f"bad {name}={text!r} in {redact(url)!r}") from exc
        return cls(parts.netloc, **options)

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
    ) -> None:
        """Publish ``body`` and return once Pub/Sub has it (``delay``: via the delay topic)."""
        names = await self._ensure(queue)
        attributes = _attributes(headers, key)
        topic = names.topic
        if delay is not None and delay > 0:
            attributes[DELIVER_AFTER] = repr(time.time() + delay)
            topic, key = names.delay_topic, None
        await self._publish(topic, bytes(body), key, attributes)

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


def _emulator_channel() -> Any:
    """A plaintext channel to ``PUBSUB_EMULATOR_HOST`` if it is set (no credentials are
    looked up then), else ``None``. Done here rather than left to the generated clients,
    whose own emulator support is slated for removal (googleapis/python-pubsub#1349)."""
    host = os.environ.get("PUBSUB_EMULATOR_HOST")
    return grpc.insecure_channel(host) if host else None


def _validate(
    project: str,
    prefix: str,
    flow_control: int,
    ack_deadline: float,
    max_delivery_attempts: int | None,
) -> None:
    """Refuse settings Pub/Sub would refuse later, with what to do instead."""
    if not project or "/" in project:
        raise ConfigurationError(f"bad Google Cloud project id {project!r}")
    if not prefix[:1].isalpha() or prefix.lower().startswith("goog") or _escape(prefix) != prefix:
        raise ConfigurationError(
            f"bad topic_prefix {prefix!r}: start with a letter (not 'goog') and use only "
            "letters, digits and - _ . +"
        )
    if flow_control < 1:
        raise ConfigurationError(f"flow_control must be 1 or more, got {flow_control}")
    if not ack_deadline > 0:
        raise ConfigurationError(f"ack_deadline must be positive, got {ack_deadline}")
    if max_delivery_attempts is not None and not 5 <= max_delivery_attempts <= 100:
        raise ConfigurationError(
            f"max_delivery_attempts must be 5..100 (Pub/Sub's range) or None, "
            f"got {max_delivery_attempts}"
        )

"""``NATSTransport``: work queues on NATS JetStream, through nats-py (asyncio only).

nats-py runs on asyncio, not trio, so this transport does too.

Topology, under ``stream_prefix`` (``P``), for a flowkit queue ``q`` (``t`` is
``q`` made safe for subjects and stream names: letters, digits and ``-`` kept,
every other UTF-8 byte written ``_xx``):

* stream ``P_t``: retention *WorkQueue* (a message is removed once settled),
  file storage, subjects ``P.t.work`` (ready messages) and ``P.t.hold``
  (delayed ones). One durable pull consumer, ``flowkit``, reads both subjects
  with explicit acks and ``ack_wait``; every ``receive()`` of every process
  pulls from it, so they compete for the messages. Declared on first use (the
  consumer only by receivers, so a sender never changes the receivers'
  ``ack_wait``; the last receiver to start sets it).
* stream ``P_t_DLQ``: subject ``P.t.dlq``, limits retention: the dead letters,
  each with ``x-flowkit-reason`` and ``x-flowkit-attempts`` headers
  (:meth:`NATSTransport.dead_letters` lists them).

Delays. JetStream before 2.11 has no per-message delay, so ``send(delay=...)``
publishes to ``P.t.hold`` with an ``x-flowkit-deliver-at`` header (UNIX time by
the sender's clock). A receiver that pulls a held message *naks it with a
delay* of the time left (``-NAK {"delay": ns}``, server 2.7+); once it is due,
the receiver republishes it to ``P.t.work`` (a ``Nats-Msg-Id`` makes a repeated
republish a duplicate the stream drops) and acks the held copy. A delayed
message so waits in the broker, not in a process, moves only while some
receiver of its queue runs, and arrives as a first attempt.
``nack(requeue_after=...)`` is a nak with that delay.

Leases. ``ack_wait`` is the visibility timeout. ``extend()`` sends ``+WPI``
(work in progress), which restarts the *whole* ``ack_wait``: JetStream cannot
extend by a chosen amount, so ``extend(seconds)`` keeps the message for
``ack_wait`` more, whatever ``seconds`` says. Configure ``ack_wait`` longer
than the gap between a Worker's heartbeats (a third of its lease).

Settling. Acks, naks, terms and ``+WPI`` are sent as requests the server
answers, so ``ack()`` returns once the server has it. The server accepts an ack
from a delivery whose ``ack_wait`` ran out and that went to another consumer
(it acks by stream sequence), so each delivery keeps a lease clock of its own,
started when the fetch returned (no earlier than the server's) and restarted
by ``extend()``; once it ran out (less a guard of 5 %, at most 0.5 s, for the
server's clock being ahead) settling raises
:class:`~flowkit.transports.DeliveryError`. Fetched messages wait in the
receiver until the consumer asks for the next one; one whose lease ran out
meanwhile is dropped (the server redelivers it), and those still waiting when
the receiver stops are nak'd back at once.

Max deliveries. JetStream's own ``max_deliver`` only stops redelivering: the
message would stay in the work-queue stream for ever, with no reason recorded.
So the consumer is created with ``max_deliver=-1`` and the receiver
dead-letters a message on its ``max_deliver + 1``-th delivery instead of
yielding it. ``attempt`` is JetStream's ``num_delivered``.

Ordering: one consumer receives the queue in stream order, but redeliveries
(after a nak or a lease running out) come before newer messages, a delayed
message joins the end when it falls due, and competing consumers interleave;
``key`` implies no ordering.

Every nats-py exception (and socket error) is translated to
:class:`~flowkit.TransportError` (:class:`~flowkit.transports.DeliveryError`
while settling a delivery) by :func:`translate_errors`, and nowhere else.
"""

from __future__ import annotations

import json
import time
from collections import deque
from typing import TYPE_CHECKING, Any

import anyio
import structlog

from ..._errors import MissingDependency, TransportError
from ...backends._options import redact, split_options
from .._memory import DeadLetter
from .._protocol import DeliveryError
from .._sdk import Lease as _Lease
from .._sdk import fresh
from ._delivery import NATSDelivery as NATSDelivery
from ._errors import sdk_errors as sdk_errors
from ._errors import translate_errors as translate_errors
from ._names import (
    DELIVER_AT_HEADER,
    KEY_HEADER,
    REASON_HEADER,
    _deliver_at,
    _Names,
    _outgoing,
    _user_headers,
)
from ._options import _URL_OPTIONS, _check_options

try:
    import nats.errors as nats_errors
    import nats.js.errors as js_errors
    from nats.aio.client import Client as NATSClient
    from nats.js.api import AckPolicy, ConsumerConfig, RetentionPolicy, StorageType, StreamConfig
except ImportError:  # the "nats" extra is not installed: NATSTransport() says so
    _HAVE_NATS = False
else:
    _HAVE_NATS = True

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Mapping

    from nats.aio.msg import Msg
    from nats.js.client import JetStreamContext

    PullSubscription = JetStreamContext.PullSubscription

_log = structlog.get_logger("flowkit.transports")

CONSUMER = "flowkit"  # the durable pull consumer every receiver shares
_RELEASE_TIMEOUT = 5.0


class NATSTransport:
    """Work queues on NATS JetStream (asyncio only).

    Example::

        transport = NATSTransport("nats://127.0.0.1:4222", ack_wait=30.0)
        await transport.send("flowkit", b"hello")
        async for delivery in transport.receive("flowkit"):
            await delivery.ack()

    Args:
        url: a ``nats://`` (or ``tls://``) server URL, credentials included if any.
        stream_prefix: starts every stream and subject name (letters, digits, ``_``, ``-``).
        ack_wait: seconds a delivery stays invisible before JetStream redelivers it.
        max_deliver: dead-letter a message delivered more often than this.
        batch: messages one fetch takes (keep it at most the worker's concurrency).
        fetch_wait: seconds one fetch waits for messages before asking again.
        request_timeout: seconds to wait for the server's answer to a request.
        connect_timeout: seconds to keep trying to connect before giving up (once
            connected, nats-py reconnects by itself after an outage).
    """

    def __init__(
        self,
        url: str = "nats://127.0.0.1:4222",
        *,
        stream_prefix: str = "FLOWKIT",
        ack_wait: float = 30.0,
        max_deliver: int = 5,
        batch: int = 32,
        fetch_wait: float = 5.0,
        request_timeout: float = 5.0,
        connect_timeout: float = 10.0,
    ) -> None:
        if not _HAVE_NATS:
            raise MissingDependency("NATSTransport", "nats")
        _check_options(url, stream_prefix, ack_wait, max_deliver, batch, fetch_wait)
        self.url = url
        self.stream_prefix = stream_prefix
        self.ack_wait = ack_wait
        self.max_deliver = max_deliver
        self.batch = batch
        self.fetch_wait = fetch_wait
        self.request_timeout = request_timeout
        self.connect_timeout = connect_timeout
        self._nc: NATSClient | None = None
        self._js: JetStreamContext | None = None
        self._lock = anyio.Lock()
        self._declared: set[str] = set()
        self._consumers: set[str] = set()
        self._closed = False

    @classmethod
    def from_url(cls, url: str, **options: Any) -> NATSTransport:
        """Build from ``nats://host:port?stream_prefix=P&ack_wait=30&max_deliver=5&batch=32``.

        Keyword ``options`` override the query string.
        """
        rest, found = split_options(url, _URL_OPTIONS)
        return cls(rest, **(found | options))

    def names(self, queue: str) -> tuple[str, str]:
        """The work stream and the dead-letter stream behind the flowkit queue ``queue``."""
        names = _Names.of(self.stream_prefix, queue)
        return names.stream, names.dlq_stream

    def _errors(self, operation: str, *, settling: bool = False) -> Any:
        return translate_errors(operation, self.url, settling=settling)

    # -- sending ---------------------------------------------------------------
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
        """Publish ``body`` and wait for the stream's ack; with ``delay``, to the hold subject."""
        names = await self._declare(queue)
        extra = {} if key is None else {KEY_HEADER: key}
        subject = names.work
        if delay and delay > 0:
            extra[DELIVER_AT_HEADER] = repr(time.time() + delay)
            subject = names.hold
        await self._publish(subject, bytes(body), _outgoing(headers or {}, extra))

    async def _publish(self, subject: str, body: bytes, headers: dict[str, str]) -> None:
        js = await self._jetstream()
        with self._errors(f"publish to {subject!r}"):
            await js.publish(subject, body, headers=headers or None)

    async def _bury(self, queue: str, body: bytes, headers: dict[str, str]) -> None:
        names = await self._declare(queue)
        await self._publish(names.dlq, body, headers)

    async def _confirm(self, msg: Msg, payload: bytes) -> None:
        """Send an ack-family ``payload`` for ``msg`` and wait for the server's answer."""
        nc = await self._client()
        await nc.request(msg.reply, payload, timeout=self.request_timeout)

    # -- receiving -------------------------------------------------------------
    async def connect(self, queue: str) -> None:
        """Connect and create ``queue``'s streams and durable consumer (idempotent);
        TransportError if the server cannot be reached."""
        await self._declare(queue, consumer=True)

    async def receive(self, queue: str) -> AsyncIterator[NATSDelivery]:
        """Deliveries from ``queue`` through the shared durable pull consumer.

        Leaving the loop naks the messages fetched but not yielded yet, so they
        come back at once; yielded, unsettled ones come back after ``ack_wait``.
        """
        names = await self._declare(queue, consumer=True)
        js = await self._jetstream()
        with self._errors(f"subscribe to {names.stream!r}"):
            sub = await js.pull_subscribe_bind(CONSUMER, names.stream)
        waiting: deque[tuple[Msg, _Lease]] = deque()
        try:
            while not self._closed:
                if not waiting:
                    waiting.extend(await self._fetch(sub, names))
                    continue
                msg, lease = waiting.popleft()
                delivery = await self._admit(queue, names, msg, lease)
                if delivery is not None:
                    yield delivery
        finally:
            await self._release(sub, waiting)

    async def _fetch(self, sub: PullSubscription, names: _Names) -> list[tuple[Msg, _Lease]]:
        """The next batch of messages, each with its lease clock; [] if none came."""
        try:
            with self._errors(f"fetch from {names.stream!r}"):
                try:
                    msgs = await sub.fetch(self.batch, timeout=self.fetch_wait)
                except nats_errors.TimeoutError:
                    return []
        except TransportError:
            if self._closed:
                return []
            raise
        return [(msg, _Lease(self.ack_wait)) for msg in msgs]

    async def _admit(
        self, queue: str, names: _Names, msg: Msg, lease: _Lease
    ) -> NATSDelivery | None:
        """The delivery to yield for ``msg``, or None if it was handled here."""
        if lease.expired():
            return None  # its ack_wait ran out while it waited here: JetStream redelivers it
        if msg.subject == names.hold:
            await self._hold_or_release(names, msg)
            return None
        delivery = NATSDelivery(self, queue, msg, lease)
        if delivery.attempt > self.max_deliver:
            await self._over_limit(delivery)
            return None
        return delivery if await fresh(delivery, lease, self.ack_wait) else None

    async def _hold_or_release(self, names: _Names, msg: Msg) -> None:
        """Nak a held message until it falls due, then move it to the work subject."""
        left = _deliver_at(msg) - time.time()
        try:
            with self._errors(f"move a delayed message of {names.stream!r}"):
                if left > 0:
                    payload = json.dumps({"delay": round(left * 1e9)}).encode()
                    await self._confirm(msg, b"-NAK " + payload)
                    return
                headers = dict(msg.headers or {})
                headers.pop(DELIVER_AT_HEADER, None)
                headers["Nats-Msg-Id"] = f"held-{msg.metadata.sequence.stream}"
                await self._publish(names.work, msg.data, headers)
                await self._confirm(msg, b"+ACK")
        except TransportError as exc:  # it stays unsettled: ack_wait brings it back
            _log.warning("could not move a delayed message", error=str(exc))

    async def _over_limit(self, delivery: NATSDelivery) -> None:
        """Dead-letter ``delivery``: it came more than ``max_deliver`` times."""
        reason = f"delivered {delivery.attempt} times (max_deliver={self.max_deliver})"
        try:
            await delivery.dead_letter(reason)
        except DeliveryError as exc:  # it stays unsettled: ack_wait brings it back
            _log.error("could not dead-letter an over-delivered message", error=str(exc))
        else:
            _log.warning("message delivered too often; dead-lettered", attempt=delivery.attempt)

    async def _release(self, sub: PullSubscription, waiting: deque[tuple[Msg, _Lease]]) -> None:
        """Nak what was fetched but not yielded, and drop the subscription."""
        with anyio.move_on_after(_RELEASE_TIMEOUT, shield=True):
            try:
                with self._errors("release a subscription"):
                    if self._nc is not None and not self._nc.is_closed:
                        for msg, _ in waiting:
                            await msg.nak()
                        await sub.unsubscribe()
            except TransportError as exc:
                _log.debug("could not release a subscription", error=str(exc))

    # -- topology --------------------------------------------------------------
    async def _declare(self, queue: str, *, consumer: bool = False) -> _Names:
        """Create the queue's streams (and, for a receiver, its consumer) once."""
        names = _Names.of(self.stream_prefix, queue)
        js = await self._jetstream()
        if names.stream not in self._declared:
            with self._errors(f"declare the streams of {names.stream!r}"):
                await js.add_stream(_dlq_stream(names))
                await js.add_stream(_work_stream(names))
            self._declared.add(names.stream)
        if consumer and names.stream not in self._consumers:
            with self._errors(f"declare the consumer of {names.stream!r}"):
                await js.add_consumer(names.stream, self._consumer_config())
            self._consumers.add(names.stream)
        return names

    def _consumer_config(self) -> ConsumerConfig:
        return ConsumerConfig(
            durable_name=CONSUMER,
            ack_policy=AckPolicy.EXPLICIT,
            ack_wait=self.ack_wait,
            max_deliver=-1,  # the receiver dead-letters past max_deliver (see the module docs)
        )

    # -- connection ------------------------------------------------------------
    async def _client(self) -> NATSClient:
        if self._closed:
            raise TransportError("NATSTransport is closed")
        async with self._lock:
            if self._nc is None:
                nc = await self._connect()
                if self._closed:  # close() ran meanwhile and could not see this client
                    await _abandon(nc)
                    raise TransportError("NATSTransport is closed")
                self._nc = nc
            return self._nc

    async def _connect(self) -> NATSClient:
        """A connected client; nats-py alone would retry a refused first connection for minutes.

        A connect that fails or is cancelled halfway closes its client: its
        reading and ping tasks would otherwise outlive the transport.
        """
        nc = NATSClient()
        try:
            with anyio.fail_after(self.connect_timeout), self._errors("connect"):
                await nc.connect(
                    self.url,
                    connect_timeout=max(1, round(self.request_timeout)),
                    error_cb=_log_error,
                )
        except TimeoutError as exc:
            await _abandon(nc)
            raise TransportError(
                f"NATS {redact(self.url)!r}: no connection within {self.connect_timeout:g}s; "
                "check that nats-server is running (with -js) and reachable at that URL"
            ) from exc
        except BaseException:
            await _abandon(nc)
            raise
        return nc

    async def _jetstream(self) -> JetStreamContext:
        nc = await self._client()
        if self._js is None:
            self._js = nc.jetstream(timeout=self.request_timeout)
        return self._js

    async def close(self) -> None:
        """Close the connection: receivers stop; unsettled deliveries return after ``ack_wait``."""
        self._closed = True
        nc, self._nc, self._js = self._nc, None, None
        if nc is not None and not nc.is_closed:
            with self._errors("close"):
                await nc.close()

    # -- inspection ------------------------------------------------------------
    async def dead_letters(self, queue: str) -> list[DeadLetter]:
        """The messages dead-lettered from ``queue``, oldest first."""
        names = await self._declare(queue)
        js = await self._jetstream()
        letters: list[DeadLetter] = []
        with self._errors(f"read the dead letters of {names.stream!r}"):
            state = (await js.stream_info(names.dlq_stream)).state
            if not state.messages:  # an empty stream's first_seq is 0: no message has that
                return letters
            for seq in range(state.first_seq, state.last_seq + 1):
                try:
                    raw = await js.get_msg(names.dlq_stream, seq)
                except js_errors.NotFoundError:
                    continue  # deleted from the dead-letter stream
                headers = raw.headers or {}
                reason = headers.get(REASON_HEADER, "")
                letters.append(DeadLetter(queue, raw.data or b"", _user_headers(headers), reason))
        return letters

    def __repr__(self) -> str:
        return f"NATSTransport({redact(self.url)!r}, stream_prefix={self.stream_prefix!r})"


def _work_stream(names: _Names) -> StreamConfig:
    return StreamConfig(
        name=names.stream,
        subjects=[names.work, names.hold],
        retention=RetentionPolicy.WORK_QUEUE,
        storage=StorageType.FILE,
    )


def _dlq_stream(names: _Names) -> StreamConfig:
    return StreamConfig(
        name=names.dlq_stream,
        subjects=[names.dlq],
        retention=RetentionPolicy.LIMITS,
        storage=StorageType.FILE,
    )


async def _abandon(nc: NATSClient) -> None:
    """Close a client that is not in use, even while being cancelled (bounded)."""
    with anyio.move_on_after(_RELEASE_TIMEOUT, shield=True):
        try:
            await nc.close()
        except Exception as exc:  # it never connected, or the server went away: gone anyway
            _log.debug("closing an unused NATS client failed", error=repr(exc))


async def _log_error(exc: Exception) -> None:
    """nats-py's error callback: connection trouble it recovers from by itself."""
    _log.warning("NATS connection error", error=f"{type(exc).__name__}: {exc}")

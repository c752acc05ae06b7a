"""``RabbitMQTransport``: durable queues on RabbitMQ, through aio-pika (asyncio only).

aio-pika runs on asyncio, not trio, so this transport does too.

Topology, under ``queue_prefix`` (``P``), for a flowkit queue ``q``:

* ``P.q`` — the work queue: durable, a *quorum* queue when the server has them
  (RabbitMQ 3.8+; they count redeliveries in ``x-delivery-count``), a classic
  durable queue otherwise. Declared on first use, with ``P.q.dlq`` as its
  dead-letter target (through the default exchange).
* ``P.q.dlq`` — the dead-letter queue. :meth:`RabbitMQDelivery.dead_letter`
  *publishes* a copy there carrying an ``x-flowkit-reason`` header, then acks
  the original. (Rejecting into the dead-letter exchange could not carry the
  reason.) If the process dies between the two, the message is both parked and
  redelivered: at least once, like everything else.
* ``P.q.delay.<ms>`` — one holding queue per distinct delay, with a message TTL
  of ``<ms>`` that dead-letters expired messages back into ``P.q``. Every
  message in a holding queue has the same TTL, so they expire in order; the
  queue deletes itself (``x-expires``) a minute after it was last used. This is
  plain RabbitMQ: no delayed-message plugin. ``send(delay=...)`` and
  ``nack(requeue_after=...)`` both use it (the latter republishes, then acks).

Messages are persistent and published with publisher confirms (``send``
returns once the broker has them) and ``mandatory`` (an unroutable message is an
error, not a silent drop). Consumers ack manually; ``prefetch`` is the channel
QoS, i.e. how many unsettled deliveries one ``receive()`` holds (match it to
the worker's concurrency). The connection is aio-pika's robust connection.

RabbitMQ has no visibility timeout: an unacked message goes back to the queue
only when the channel it was delivered on closes (a consumer crash, a lost
connection, leaving ``receive()``, :meth:`RabbitMQTransport.close`). Within a
live process this transport adds one on the client: a delivery not settled or
:meth:`~RabbitMQDelivery.extend`-ed within ``visibility_timeout`` is nacked
back to the queue by its ``receive()`` loop (while that loop waits for the next
message), and settling it afterwards raises
:class:`~flowkit.transports.DeliveryError`. With ``visibility_timeout=None``
there is no such lease and ``extend`` is a no-op. A process that hangs while
holding messages keeps them (RabbitMQ's own ``consumer_timeout``, 30 minutes by
default, eventually closes its channel); the store's lease reconciler
re-dispatches that work meanwhile. Raise the server's ``consumer_timeout`` for
nodes that run longer than it, even extended.

``attempt`` is 1 + the quorum queue's ``x-delivery-count`` (on a classic queue:
2 once ``redelivered`` is set, whatever the true count), plus the deliveries
before a delayed ``nack`` republished it (carried in ``x-flowkit-attempts``).
With ``max_deliveries``, a delivery whose attempt exceeds it is dead-lettered
instead of yielded.

Ordering: FIFO per queue for a single consumer and no redeliveries; competing
consumers, prefetch, nacks and delays all reorder.

Every aio-pika, aiormq and pamqp exception is translated to
:class:`~flowkit.TransportError` (:class:`~flowkit.transports.DeliveryError`
while settling a delivery) by :func:`translate_errors`, and nowhere else.
"""

from __future__ import annotations

import math
import time
from contextlib import contextmanager, suppress
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

import anyio
import sniffio
import structlog

from .._errors import MissingDependency, TransportError
from ..stores._urls import ConfigurationError, redact
from ._protocol import DeliveryError

try:
    import aio_pika
    import aiormq.exceptions as amqp_errors
    import pamqp.exceptions as pamqp_errors
except ImportError:  # the "rabbitmq" extra is not installed: RabbitMQTransport() says so
    _HAVE_AIO_PIKA = False
else:
    _HAVE_AIO_PIKA = True

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Mapping

    from aio_pika.abc import AbstractChannel, AbstractIncomingMessage, AbstractRobustConnection
    from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream

_log = structlog.get_logger("flowkit.transports")

KEY_HEADER = "x-flowkit-key"
ATTEMPTS_HEADER = "x-flowkit-attempts"  # deliveries before a delayed nack republished it
REASON_HEADER = "x-flowkit-reason"
# Headers the broker or this module sets: never shown to users, never republished.
_INTERNAL = ("x-flowkit-", "x-death", "x-first-death-", "x-last-death-", "x-delivery-count")
_HOLD_MARGIN_MS = 60_000  # a holding queue outlives its TTL by this before x-expires
_CONNECT_TIMEOUT = 15.0


# -- errors ------------------------------------------------------------------
def sdk_errors() -> tuple[type[BaseException], ...]:
    """The roots of every exception aio-pika, aiormq and pamqp raise (and socket errors)."""
    return (
        amqp_errors.AMQPError,
        amqp_errors.AMQPException,
        amqp_errors.ChannelInvalidStateError,
        pamqp_errors.PAMQPException,
        OSError,  # includes ConnectionError and TimeoutError from connecting
    )


def _hint(exc: BaseException) -> str:
    """What to do next about ``exc``."""
    if isinstance(
        exc,
        amqp_errors.AuthenticationError
        | amqp_errors.ProbableAuthenticationError
        | amqp_errors.ChannelAccessRefused
        | pamqp_errors.AMQPAccessRefused,
    ):
        return "check the user, password and vhost permissions in the URL"
    if isinstance(exc, amqp_errors.ChannelPreconditionFailed | pamqp_errors.AMQPPreconditionFailed):
        return (
            "a queue of that name exists with other arguments (type, TTL, dead-lettering): "
            "delete it or choose another queue_prefix"
        )
    if isinstance(exc, amqp_errors.ChannelInvalidStateError):
        return "the channel closed; RabbitMQ redelivers what was not acked on it"
    if isinstance(exc, OSError | amqp_errors.AMQPConnectionError):
        return "check that RabbitMQ is running and reachable at that URL"
    return "retry; if it keeps failing, check the broker's logs"


def _text(exc: BaseException, url: str) -> str:
    """``exc`` as text without the URL's password (some SDK classes cannot ``str()``)."""
    try:
        text = str(exc)
    except Exception:  # an SDK class whose __str__ needs arguments it was not given
        text = repr(exc.args)
    password = urlsplit(url).password
    return text.replace(password, "***") if password else text


@contextmanager
def translate_errors(operation: str, url: str, *, settling: bool = False) -> Iterator[None]:
    """Re-raise any SDK error in the block as a TransportError (DeliveryError if ``settling``)."""
    try:
        yield
    except sdk_errors() as exc:
        error = DeliveryError if settling else TransportError
        raise error(
            f"RabbitMQ {redact(url)!r}: {operation} failed "
            f"({type(exc).__name__}: {_text(exc, url)}); {_hint(exc)}"
        ) from exc


# -- messages ----------------------------------------------------------------
def _is_internal(name: str) -> bool:
    return name.startswith(_INTERNAL)


def _as_str(value: object) -> str:
    if isinstance(value, bytes | bytearray):
        return bytes(value).decode("utf-8", "replace")
    return str(value)


def _user_headers(raw: Mapping[str, Any]) -> dict[str, str]:
    """The headers the sender set, as strings."""
    return {name: _as_str(value) for name, value in raw.items() if not _is_internal(name)}


def _count(value: object) -> int:
    """A header value that should be a non-negative integer, else 0 (foreign messages)."""
    try:
        return max(0, int(_as_str(value)))
    except ValueError:
        return 0


def _attempt(message: AbstractIncomingMessage) -> int:
    headers = message.headers
    before = _count(headers.get(ATTEMPTS_HEADER, 0))
    if "x-delivery-count" in headers:
        return before + _count(headers["x-delivery-count"]) + 1
    return before + (2 if message.redelivered else 1)


def _message(body: bytes, headers: Mapping[str, Any]) -> aio_pika.Message:
    return aio_pika.Message(
        body, headers=dict(headers), delivery_mode=aio_pika.DeliveryMode.PERSISTENT
    )


class RabbitMQDelivery:
    """A delivery from :class:`RabbitMQTransport`; settle it once.

    If settling fails (:class:`~flowkit.transports.DeliveryError`) the delivery
    stays unsettled: settle it again, or RabbitMQ redelivers it when the channel
    closes.
    """

    def __init__(
        self,
        transport: RabbitMQTransport,
        queue: str,
        message: AbstractIncomingMessage,
        leases: _Leases,
    ) -> None:
        self._transport = transport
        self._queue = queue
        self._message = message
        self._leases = leases
        self._settled = False
        self._lost = False
        self.body: bytes = message.body
        self.headers: Mapping[str, str] = _user_headers(message.headers)
        key = message.headers.get(KEY_HEADER)
        self.key: str | None = None if key is None else _as_str(key)
        self.attempt: int = _attempt(message)

    async def ack(self) -> None:
        """Done: the message will not be delivered again."""
        await self._settle("ack", self._message.ack)

    async def nack(self, requeue_after: float | None = None) -> None:
        """Requeue now (``basic.nack``), or republish through a holding queue and ack."""
        if requeue_after is None or _ms(requeue_after) == 0:
            await self._settle("nack", lambda: self._message.nack(requeue=True))
            return

        async def republish() -> None:
            headers = self._copy_headers({ATTEMPTS_HEADER: self.attempt})
            await self._transport._publish(self._queue, headers, self.body, delay=requeue_after)
            await self._message.ack()

        await self._settle("nack", republish)

    async def extend(self, seconds: float) -> None:
        """Keep the client-side lease for ``seconds`` more (no-op without a visibility timeout).

        Raises :class:`~flowkit.transports.DeliveryError` if the delivery was
        settled, its lease ran out or its channel closed (it was requeued).
        """
        self._check_held()
        self._leases.extend(self, seconds)

    async def dead_letter(self, reason: str) -> None:
        """Publish a copy to ``<queue>.dlq`` with an ``x-flowkit-reason`` header, then ack."""

        async def park() -> None:
            headers = self._copy_headers({REASON_HEADER: reason, ATTEMPTS_HEADER: self.attempt})
            await self._transport._publish_dead(self._queue, headers, self.body)
            await self._message.ack()

        await self._settle("dead_letter", park)

    def _copy_headers(self, extra: Mapping[str, Any]) -> dict[str, Any]:
        """The original headers (the broker's removed) plus ``extra``."""
        raw = self._message.headers
        kept = {name: value for name, value in raw.items() if not _is_internal(name)}
        if KEY_HEADER in raw:
            kept[KEY_HEADER] = raw[KEY_HEADER]
        return kept | dict(extra)

    def _check_held(self) -> None:
        if self._settled:
            raise DeliveryError(f"delivery on {self._queue!r} was already settled")
        if self._lost:
            raise DeliveryError(
                f"delivery on {self._queue!r}: its visibility timeout ran out and it was "
                "requeued; extend() long-running deliveries"
            )
        with self._transport._errors(f"settle a delivery on {self._queue!r}", settling=True):
            _ = self._message.channel  # raises ChannelInvalidStateError once it closed

    async def _settle(self, action: str, settle: Callable[[], Awaitable[None]]) -> None:
        self._check_held()
        self._settled = done = True
        try:
            with self._transport._errors(f"{action} on {self._queue!r}", settling=True):
                await settle()
        except TransportError as exc:
            done = False
            if isinstance(exc, DeliveryError):
                raise
            raise DeliveryError(str(exc)) from exc.__cause__  # a republish failed
        finally:
            self._settled = done
        self._leases.release(self)

    async def _expire(self) -> None:
        """The lease ran out: give the message back to the queue."""
        self._lost = True
        self._leases.release(self)
        try:
            with self._transport._errors(f"requeue an expired delivery on {self._queue!r}"):
                await self._message.nack(requeue=True)
        except TransportError as exc:  # its channel closed: RabbitMQ requeued it already
            _log.debug("expired delivery already requeued", error=str(exc))


class _Leases:
    """Client-side visibility timeouts of the deliveries one ``receive()`` handed out."""

    def __init__(self, visibility_timeout: float | None) -> None:
        self._timeout = visibility_timeout
        self._until: dict[RabbitMQDelivery, float] = {}

    def hold(self, delivery: RabbitMQDelivery) -> None:
        if self._timeout is not None:
            self._until[delivery] = time.monotonic() + self._timeout

    def extend(self, delivery: RabbitMQDelivery, seconds: float) -> None:
        if delivery in self._until:
            self._until[delivery] = time.monotonic() + seconds

    def release(self, delivery: RabbitMQDelivery) -> None:
        self._until.pop(delivery, None)

    def wait(self) -> float:
        """Seconds until the next lease runs out (inf if none is held)."""
        if not self._until:
            return math.inf
        return max(0.0, min(self._until.values()) - time.monotonic())

    def expired(self) -> list[RabbitMQDelivery]:
        """Deliveries whose lease ran out and that are not being settled right now."""
        now = time.monotonic()
        return [d for d, until in self._until.items() if until <= now and not d._settled]


def _ms(seconds: float) -> int:
    return max(0, round(seconds * 1000))


class _Consumer:
    """One ``receive()`` loop: its own channel, an inbox its consumer callback fills, leases.

    The loop waits on the inbox, waking when a lease runs out to requeue that
    delivery; :meth:`RabbitMQTransport.close` ends it by closing the inbox.
    """

    def __init__(self, transport: RabbitMQTransport) -> None:
        self._transport = transport
        self._channel: AbstractChannel | None = None
        self.leases = _Leases(transport.visibility_timeout)
        self.inbox, self._outbox = _inbox()

    async def start(self, name: str) -> None:
        """Open the channel and start consuming ``name``."""
        transport = self._transport
        channel = self._channel = await transport._open_channel(f"consume from {name!r}")
        with transport._errors(f"consume from {name!r}"):
            await channel.set_qos(prefetch_count=transport.prefetch)
            amqp_queue = await channel.declare_queue(
                name, durable=True, arguments=transport._work_arguments(name)
            )
            await amqp_queue.consume(self._on_message)

    async def _on_message(self, message: AbstractIncomingMessage) -> None:
        # once the loop has ended, closing its channel requeues the message
        with suppress(anyio.ClosedResourceError, anyio.BrokenResourceError):
            self._outbox.send_nowait(message)

    async def next(self) -> AbstractIncomingMessage | None:
        """The next message, requeueing expired deliveries meanwhile; None once closed."""
        while True:
            for delivery in self.leases.expired():
                await delivery._expire()
            with anyio.move_on_after(self.leases.wait()):
                try:
                    return await self.inbox.receive()
                except anyio.EndOfStream:
                    return None

    def close_inbox(self) -> None:
        self._outbox.close()

    async def stop(self) -> None:
        """Close the inbox and the channel (RabbitMQ requeues what was not acked)."""
        self._outbox.close()
        self.inbox.close()
        if self._channel is not None:
            await self._transport._close_quietly(self._channel)


def _inbox() -> tuple[
    MemoryObjectReceiveStream[AbstractIncomingMessage],
    MemoryObjectSendStream[AbstractIncomingMessage],
]:
    send, receive = anyio.create_memory_object_stream["AbstractIncomingMessage"](math.inf)
    return receive, send


# -- the transport -----------------------------------------------------------
class RabbitMQTransport:
    """Queues on RabbitMQ (asyncio only).

    Example::

        transport = RabbitMQTransport("amqp://guest:guest@127.0.0.1:5672/", prefetch=32)
        await transport.send("flowkit", b"hello")
        async for delivery in transport.receive("flowkit"):
            await delivery.ack()

    Args:
        url: an ``amqp://`` or ``amqps://`` URL (aio-pika reads its query options).
        prefetch: unsettled deliveries per ``receive()`` (channel QoS).
        queue_prefix: prepended (with a dot) to every queue name.
        max_deliveries: dead-letter a message delivered more often than this.
        visibility_timeout: seconds a delivery may stay unsettled and not
            extended before its ``receive()`` loop requeues it (None: never).
    """

    def __init__(
        self,
        url: str = "amqp://guest:guest@127.0.0.1:5672/",
        *,
        prefetch: int = 32,
        queue_prefix: str = "flowkit",
        max_deliveries: int | None = None,
        visibility_timeout: float | None = 30.0,
    ) -> None:
        if not _HAVE_AIO_PIKA:
            raise MissingDependency("RabbitMQTransport", "rabbitmq")
        _check_options(url, prefetch, queue_prefix, max_deliveries, visibility_timeout)
        self.url = url
        self.prefetch = prefetch
        self.queue_prefix = queue_prefix
        self.max_deliveries = max_deliveries
        self.visibility_timeout = visibility_timeout
        self._consumers: set[_Consumer] = set()
        self._connection: AbstractRobustConnection | None = None
        self._publisher: AbstractChannel | None = None
        self._lock = anyio.Lock()
        self._publisher_lock = anyio.Lock()
        self._declared: set[str] = set()
        self._holding: set[str] = set()
        self._server_version: tuple[int, ...] = ()
        self._closed = False

    @classmethod
    def from_url(cls, url: str, **options: Any) -> RabbitMQTransport:
        """Build from an ``amqp://`` URL; ``options`` are the keyword arguments."""
        return cls(url, **options)

    def queue_name(self, queue: str) -> str:
        """The RabbitMQ queue behind the flowkit queue ``queue``."""
        return f"{self.queue_prefix}.{queue}"

    @property
    def declared_queues(self) -> frozenset[str]:
        """The RabbitMQ queues this transport declared: work, ``.dlq`` and holding queues."""
        dead = {f"{name}.dlq" for name in self._declared}
        return frozenset(self._declared | dead | self._holding)

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
    ) -> None:
        """Publish ``body`` (persistent, confirmed); with ``delay``, via a holding queue."""
        extra = {} if key is None else {KEY_HEADER: key}
        await self._publish(queue, dict(headers or {}) | extra, bytes(body), delay=delay)

    async def _publish(
        self, queue: str, headers: Mapping[str, Any], body: bytes, *, delay: float | None
    ) -> None:
        name = await self._declare(queue)
        ms = _ms(delay or 0.0)
        if ms:
            name = await self._declare_holding(name, ms)
        await self._publish_to(name, _message(body, headers))

    async def _publish_dead(self, queue: str, headers: Mapping[str, Any], body: bytes) -> None:
        name = await self._declare(queue)
        await self._publish_to(f"{name}.dlq", _message(body, headers))

    async def _publish_to(self, routing_key: str, message: aio_pika.Message) -> None:
        channel = await self._publishing_channel()
        with self._errors(f"publish to {routing_key!r}"):
            await channel.default_exchange.publish(message, routing_key, mandatory=True)

    # -- receiving -------------------------------------------------------------
    async def receive(self, queue: str) -> AsyncIterator[RabbitMQDelivery]:
        """Deliveries from ``queue`` on a channel of its own, until the transport closes.

        Leaving the loop closes that channel: RabbitMQ requeues every delivery
        it yielded that was not settled yet.
        """
        name = await self._declare(queue)
        consumer = _Consumer(self)
        self._consumers.add(consumer)
        try:
            await consumer.start(name)
            while (message := await consumer.next()) is not None:
                delivery = RabbitMQDelivery(self, queue, message, consumer.leases)
                if not await self._over_limit(delivery):
                    consumer.leases.hold(delivery)
                    yield delivery
        finally:
            self._consumers.discard(consumer)
            await consumer.stop()

    async def _over_limit(self, delivery: RabbitMQDelivery) -> bool:
        """Dead-letter ``delivery`` if it came more than ``max_deliveries`` times."""
        limit = self.max_deliveries
        if limit is None or delivery.attempt <= limit:
            return False
        reason = f"delivered {delivery.attempt} times (max_deliveries={limit})"
        try:
            await delivery.dead_letter(reason)
        except DeliveryError as exc:  # it stays unacked; the channel's close requeues it
            _log.error("could not dead-letter an over-delivered message", error=str(exc))
        else:
            _log.warning("message delivered too often; dead-lettered", attempt=delivery.attempt)
        return True

    # -- topology --------------------------------------------------------------
    async def _declare(self, queue: str) -> str:
        """Declare the work queue and its dead-letter queue once; return the work queue."""
        name = self.queue_name(queue)
        if name in self._declared:
            return name
        channel = await self._publishing_channel()
        with self._errors(f"declare queue {name!r}"):
            await channel.declare_queue(
                f"{name}.dlq", durable=True, arguments=self._type_arguments()
            )
            await channel.declare_queue(name, durable=True, arguments=self._work_arguments(name))
        self._declared.add(name)
        return name

    async def _declare_holding(self, name: str, ms: int) -> str:
        """Declare (and so keep alive) the holding queue for a ``ms`` delay into ``name``."""
        holding = f"{name}.delay.{ms}"
        arguments: dict[str, Any] = {
            "x-message-ttl": ms,
            "x-expires": ms + _HOLD_MARGIN_MS,
            "x-dead-letter-exchange": "",
            "x-dead-letter-routing-key": name,
        }
        channel = await self._publishing_channel()
        with self._errors(f"declare holding queue {holding!r}"):
            await channel.declare_queue(holding, durable=True, arguments=arguments)
        self._holding.add(holding)
        return holding

    def _quorum(self) -> bool:
        return self._server_version >= (3, 8)

    def _type_arguments(self) -> dict[str, Any]:
        return {"x-queue-type": "quorum"} if self._quorum() else {}

    def _work_arguments(self, name: str) -> dict[str, Any]:
        arguments: dict[str, Any] = {
            "x-dead-letter-exchange": "",
            "x-dead-letter-routing-key": f"{name}.dlq",
            **self._type_arguments(),
        }
        if self._quorum() and self._server_version >= (4,):
            arguments["x-delivery-limit"] = -1  # RabbitMQ 4 defaults to 20; we count ourselves
        return arguments

    # -- connection ------------------------------------------------------------
    async def _connect(self) -> AbstractRobustConnection:
        if self._closed:
            raise TransportError("RabbitMQTransport is closed")
        _require_asyncio()
        async with self._lock:
            if self._connection is None:
                with self._errors("connect"):
                    connection = await aio_pika.connect_robust(self.url, timeout=_CONNECT_TIMEOUT)
                self._server_version = _server_version(connection)
                self._connection = connection
            return self._connection

    async def _open_channel(self, purpose: str, *, confirms: bool = False) -> AbstractChannel:
        connection = await self._connect()
        with self._errors(purpose):
            return await connection.channel(publisher_confirms=confirms, on_return_raises=confirms)

    async def _publishing_channel(self) -> AbstractChannel:
        async with self._publisher_lock:
            channel = self._publisher
            if channel is None or channel.is_closed:
                channel = await self._open_channel("open the publishing channel", confirms=True)
                self._publisher = channel
            return channel

    async def _close_quietly(self, channel: AbstractChannel) -> None:
        try:
            with self._errors("close a channel"):
                await channel.close()
        except TransportError as exc:
            _log.debug("channel already closed", error=str(exc))

    async def close(self) -> None:
        """Close the connection: receivers stop, unacked deliveries go back to their queues."""
        self._closed = True
        for consumer in self._consumers:
            consumer.close_inbox()
        connection, self._connection = self._connection, None
        if connection is not None:
            with self._errors("close"):
                await connection.close()

    def __repr__(self) -> str:
        return f"RabbitMQTransport({redact(self.url)!r}, queue_prefix={self.queue_prefix!r})"


def _require_asyncio() -> None:
    library = sniffio.current_async_library()
    if library != "asyncio":
        raise TransportError(
            f"RabbitMQTransport runs on asyncio only (aio-pika does), not {library}: "
            "run the worker or client under asyncio"
        )


def _server_version(connection: AbstractRobustConnection) -> tuple[int, ...]:
    """RabbitMQ's version from the connection handshake, e.g. ``(3, 10, 8)``."""
    transport = connection.transport
    properties = transport.connection.server_properties if transport else {}
    text = _as_str(properties.get("version", ""))
    parts = []
    for part in text.split("."):
        if not part.isdigit():
            break
        parts.append(int(part))
    return tuple(parts)


def _check_options(
    url: str, prefetch: int, prefix: str, max_deliveries: int | None, timeout: float | None
) -> None:
    if urlsplit(url).scheme.lower() not in ("amqp", "amqps"):
        raise ConfigurationError(f"RabbitMQTransport needs an amqp:// URL, got {redact(url)!r}")
    if prefetch < 1:
        raise ConfigurationError(f"prefetch must be 1 or more, got {prefetch}")
    if not prefix:
        raise ConfigurationError("queue_prefix must not be empty")
    if max_deliveries is not None and max_deliveries < 1:
        raise ConfigurationError(f"max_deliveries must be 1 or more, got {max_deliveries}")
    if timeout is not None and timeout <= 0:
        raise ConfigurationError(f"visibility_timeout must be positive or None, got {timeout}")

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
returns once the broker has them; ``send_many`` publishes several at once and
awaits their confirms together) and ``mandatory`` (an unroutable message is an
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

Priorities are opt-in, with ``max_priority`` (1-9; URL ``?max_priority=9``): the
work queue is then a *classic* queue declared with ``x-max-priority`` (quorum
queues of RabbitMQ 3.x take no such argument), and each message carries its
``priority`` property (above ``max_priority`` counts as ``max_priority``); RabbitMQ
hands out the highest first, subject to what consumers have prefetched. Without
it, ``send(priority=...)`` is accepted and ignored. RabbitMQ refuses to declare a
queue again with other arguments (``PRECONDITION_FAILED``), so turning
priorities on or off for an existing queue needs the queue deleted first (drain
it, stop its workers) or another ``queue_prefix``; the error says so.

Every aio-pika, aiormq and pamqp exception is translated to
:class:`~flowkit.TransportError` (:class:`~flowkit.transports.DeliveryError`
while settling a delivery) by :func:`translate_errors`, and nowhere else.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

import anyio
import sniffio
import structlog

from ..._errors import ConfigurationError, MissingDependency, TransportError
from ...backends._options import optional_float, optional_int, redact, split_options
from .._protocol import DeliveryError
from ._consumer import _Consumer
from ._delivery import KEY_HEADER, _as_str, _ms
from ._delivery import REASON_HEADER as REASON_HEADER
from ._delivery import RabbitMQDelivery as RabbitMQDelivery
from ._errors import sdk_errors as sdk_errors
from ._errors import translate_errors as translate_errors

try:
    import aio_pika
    from aio_pika.connection import make_url
except ImportError:  # the "rabbitmq" extra is not installed: RabbitMQTransport() says so
    _HAVE_AIO_PIKA = False
else:
    _HAVE_AIO_PIKA = True

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Mapping, Sequence

    from aio_pika.abc import AbstractChannel, AbstractRobustConnection

    from ...backends._options import Converter
    from .._protocol import Delivery, Outgoing

_log = structlog.get_logger("flowkit.transports")

_HOLD_MARGIN_MS = 60_000  # a holding queue outlives its TTL by this before x-expires
_CONNECT_TIMEOUT = 15.0
_CLOSE_TIMEOUT = 5.0
_URL_OPTIONS: dict[str, Converter] = {
    "prefetch": int,
    "queue_prefix": str,
    "max_deliveries": optional_int,
    "visibility_timeout": optional_float,
    "max_priority": optional_int,
}


def _message(
    body: bytes, headers: Mapping[str, Any], priority: int | None = None
) -> aio_pika.Message:
    return aio_pika.Message(
        body,
        headers=dict(headers),
        delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
        priority=priority or None,
    )


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
        max_priority: honour ``send(priority=...)`` up to this level (1-9), with
            classic queues declared with ``x-max-priority`` (None: no priorities).
    """

    def __init__(
        self,
        url: str = "amqp://guest:guest@127.0.0.1:5672/",
        *,
        prefetch: int = 32,
        queue_prefix: str = "flowkit",
        max_deliveries: int | None = None,
        visibility_timeout: float | None = 30.0,
        max_priority: int | None = None,
    ) -> None:
        if not _HAVE_AIO_PIKA:
            raise MissingDependency("RabbitMQTransport", "rabbitmq")
        _check_options(url, prefetch, queue_prefix, max_deliveries, visibility_timeout)
        _check_max_priority(max_priority)
        self.max_priority = max_priority
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
        """Build from ``amqp[s]://user:password@host:port/vhost?prefetch=16&queue_prefix=shop``.

        Query options: ``prefetch`` (int), ``queue_prefix`` (str),
        ``max_deliveries`` (int or ``none``), ``visibility_timeout`` (float
        seconds or ``none``), ``max_priority`` (int 1-9, or ``none``). Other
        parameters (``heartbeat=``, ``name=``, ``cafile=``...) stay in the URL for
        aio-pika. Keyword ``options`` override the query.
        """
        rest, found = split_options(url, _URL_OPTIONS, mode="pass-through")
        return cls(rest, **(found | options))

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
        priority: int | None = None,
    ) -> None:
        """Publish ``body`` (persistent, confirmed); with ``delay``, via a holding queue.
        ``priority`` is the message's priority property with ``max_priority`` (else
        ignored)."""
        extra = {} if key is None else {KEY_HEADER: key}
        await self._publish(
            queue, dict(headers or {}) | extra, bytes(body), delay=delay, priority=priority
        )

    async def send_many(
        self, messages: Sequence[Outgoing], *, then_ack: Delivery | None = None
    ) -> None:
        """Publish every message at once (their confirms awaited together), then ack
        ``then_ack`` if all were confirmed; the first failure is raised once all were
        tried."""
        failures: list[TransportError] = []

        async def send(message: Outgoing) -> None:
            try:
                await self.send(
                    message.queue,
                    message.body,
                    key=message.key,
                    headers=message.headers,
                    priority=message.priority,
                )
            except TransportError as exc:  # raised below, once the others were tried
                failures.append(exc)

        try:
            async with anyio.create_task_group() as tg:
                for message in messages:
                    tg.start_soon(send, message)
        except BaseExceptionGroup as group:  # only what send() lets through: not a failure
            raise group.exceptions[0] from None  # to publish, but the task's cancellation
        if failures:
            raise failures[0]
        if then_ack is not None:
            await then_ack.ack()

    async def _publish(
        self,
        queue: str,
        headers: Mapping[str, Any],
        body: bytes,
        *,
        delay: float | None,
        priority: int | None = None,
    ) -> None:
        name = await self._declare(queue)
        ms = _ms(delay or 0.0)
        if ms:
            name = await self._declare_holding(name, ms)
        level = min(priority or 0, self.max_priority) if self.max_priority else None
        await self._publish_to(name, _message(body, headers, level))

    async def _publish_dead(self, queue: str, headers: Mapping[str, Any], body: bytes) -> None:
        name = await self._declare(queue)
        await self._publish_to(f"{name}.dlq", _message(body, headers))

    async def _publish_to(self, routing_key: str, message: aio_pika.Message) -> None:
        channel = await self._publishing_channel()
        with self._errors(f"publish to {routing_key!r}"):
            await channel.default_exchange.publish(message, routing_key, mandatory=True)

    # -- receiving -------------------------------------------------------------
    async def connect(self, queue: str) -> None:
        """Connect and declare ``queue`` and its dead-letter queue (idempotent);
        TransportError if the broker cannot be reached."""
        await self._declare(queue)

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
        }
        if self.max_priority:  # a classic queue: quorum queues of 3.x have no priorities
            return arguments | {"x-max-priority": self.max_priority}
        arguments.update(self._type_arguments())
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
                connection = await self._new_connection()
                if self._closed:  # close() ran meanwhile and could not see this connection
                    await _close_connection(connection)
                    raise TransportError("RabbitMQTransport is closed")
                self._server_version = _server_version(connection)
                self._connection = connection
            return self._connection

    async def _new_connection(self) -> AbstractRobustConnection:
        """A connected robust connection, closed again if connecting fails or is cancelled.

        A robust connection connects (and reconnects) in a task of its own. One
        left behind by a cancelled connect would never be closed: that task
        shrugs off the event loop's cancellation at exit, retries every few
        seconds and keeps the process alive.
        """
        connection = aio_pika.RobustConnection(make_url(self.url))
        try:
            with self._errors("connect"):
                await connection.connect(timeout=_CONNECT_TIMEOUT)
        except BaseException:
            await _close_connection(connection)
            raise
        return connection

    async def _open_channel(self, purpose: str, *, confirms: bool = False) -> AbstractChannel:
        connection = await self._connect()
        with self._errors(purpose):
            try:
                return await connection.channel(
                    publisher_confirms=confirms, on_return_raises=confirms
                )
            except RuntimeError as exc:  # aiormq: "<Connection> closed" during a close
                raise TransportError(f"RabbitMQ: cannot {purpose}: {exc}") from exc

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


async def _close_connection(connection: AbstractRobustConnection) -> None:
    """Close a connection that is not in use, even while being cancelled (bounded)."""
    with anyio.move_on_after(_CLOSE_TIMEOUT, shield=True):
        try:
            await connection.close()
        except Exception as exc:  # it was not connected, or the broker went away: gone anyway
            _log.debug("closing an unused connection failed", error=repr(exc))


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


def _check_max_priority(max_priority: int | None) -> None:
    if max_priority is None:
        return
    if isinstance(max_priority, bool) or not isinstance(max_priority, int):
        raise ConfigurationError(
            f"max_priority must be an integer from 1 to 9 or None, got {max_priority!r}"
        )
    if not 1 <= max_priority <= 9:
        raise ConfigurationError(
            f"max_priority must be from 1 to 9 (flowkit priorities are 0-9), got {max_priority}"
        )


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

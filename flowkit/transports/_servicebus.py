"""``ServiceBusTransport``: Azure Service Bus queues through ``azure-servicebus`` (asyncio only).

The SDK's ``azure.servicebus.aio`` client runs on asyncio, so this transport
does too: under trio it raises :class:`~flowkit.TransportError` saying so.

**Queues.** A flowkit queue ``q`` is the Service Bus queue ``q``, provisioned
beforehand; with ``create_queues=True`` a missing queue is created through
``ServiceBusAdministrationClient`` (the HTTPS management API: needs the
*Manage* claim and aiohttp) with ``lock_duration`` as its LockDuration.

**Receiving** is peek-lock, through the SDK's prefetch buffer: it keeps up
to ``prefetch`` + 1 messages locked ahead of the consumer (their locks run
while they wait, so keep ``prefetch`` near the worker's concurrency; 0 locks
one message at a time, when asked), and ``receive`` hands them out one at a
time. A message whose lock ran out in the buffer is skipped (Service Bus
redelivers it). A receiver is closed, which releases its buffer, once its
``receive`` has stopped and the deliveries it handed out are settled (or the
transport is closed), so a draining worker can still ack; until then what it
buffered stays locked.

**Concurrency.** The SDK's senders and receivers are not safe for concurrent
calls (two sends at once can put one transfer on the wire twice), so each
queue's sender takes one call at a time, and so do a receiver's settlements,
with its receive call paused meanwhile so an ack is not kept waiting behind
the socket reads of a pending receive.

**Leases.** The lock lasts the queue's LockDuration; ``lock_duration`` says
what that is (Service Bus's default, 60 s), and is the ``visibility_timeout``
the worker's heartbeat reads. ``extend(seconds)`` renews the lock, always for
one LockDuration (Service Bus takes no length). With ``lock_renewal=True`` an
``AutoLockRenewer`` also renews every received message's lock until it is
settled, for at most ``max_lock_renewal`` seconds (it looks once a second, so
it needs locks of a few seconds: Service Bus's minimum is 5 s). A lock that ran
out cannot be settled: :class:`~flowkit.transports.DeliveryError`.

**Settling.** ``ack`` completes; ``nack()`` abandons (redelivered at once,
delivery count + 1); ``nack(requeue_after=s)`` renews the lock (proving it is
still held), schedules a copy ``s`` seconds out carrying the attempts so far
(``x-flowkit-attempts``), then completes the original, cancelling the copy if
that fails (a process dying in between leaves both: at least once).
``dead_letter(reason)`` moves the message to the dead-letter subqueue with
``reason`` as DeadLetterReason (at most 4096 characters) and the attempt in
DeadLetterErrorDescription; :meth:`ServiceBusTransport.dead_letters` peeks at it.

**Messages.** The body is the data section, headers are application
properties, the key is ``x-flowkit-key``. ``attempt`` is the SDK's
``delivery_count`` (0 or absent at first) + 1, plus ``x-flowkit-attempts``.
``send(delay=s)`` schedules the message (``schedule_messages``) for now + ``s``.

**Ordering.** Roughly FIFO per queue, but an abandoned or expired message
returns ahead of or behind others, scheduled messages enter when due, and
competing consumers interleave. ``key`` implies no order (no sessions).

**Credentials.** A connection string (``Endpoint=sb://...;SharedAccessKeyName=
...;SharedAccessKey=...``; ``UseDevelopmentEmulator=true`` for the emulator,
over plain AMQP), or ``namespace=`` plus a credential: an ``azure.identity.aio``
token credential such as ``DefaultAzureCredential()``, an
``AzureNamedKeyCredential`` or an ``AzureSasCredential``.

Every exception of azure-servicebus, azure-core and the SDK's AMQP layer (and
socket errors) becomes a :class:`~flowkit.TransportError`
(:class:`~flowkit.transports.DeliveryError` while settling) in
:func:`translate_errors`, and nowhere else.

Example::

    transport = ServiceBusTransport("Endpoint=sb://shop.servicebus.windows.net/;...")
    await transport.send("flowkit", b"...", key="order-A1/charge", delay=30)
    async for delivery in transport.receive("flowkit"):
        await delivery.ack()
"""

from __future__ import annotations

import datetime
import re
from contextlib import asynccontextmanager, suppress
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote

import anyio
import sniffio
import structlog

from .._errors import ConfigurationError, MissingDependency, TransportError
from ..backends._options import boolean, redact, split_options
from ._memory import DeadLetter
from ._protocol import DeliveryError
from ._sdk import translating

try:
    from azure.core.exceptions import AzureError, DeserializationError, SerializationError
    from azure.servicebus import (
        ServiceBusMessage,
        ServiceBusReceivedMessage,
        ServiceBusReceiveMode,
        ServiceBusSubQueue,
    )
    from azure.servicebus.aio import AutoLockRenewer, ServiceBusClient
    from azure.servicebus.exceptions import (
        MessageAlreadySettled,
        MessageLockLostError,
        MessageSizeExceededError,
        MessagingEntityNotFoundError,
        ServiceBusAuthenticationError,
        ServiceBusAuthorizationError,
        ServiceBusCommunicationError,
        ServiceBusConnectionError,
        ServiceBusQuotaExceededError,
        ServiceBusServerBusyError,
    )
except ImportError:  # the "servicebus" extra is not installed: ServiceBusTransport() says so
    _HAVE_SDK = False
else:
    _HAVE_SDK = True

try:  # the SDK's AMQP layer, whose errors the SDK normally wraps: caught should one escape
    from azure.servicebus._pyamqp.error import AMQPException
except ImportError:
    _AMQP_ERRORS: tuple[type[BaseException], ...] = ()
else:
    _AMQP_ERRORS = (AMQPException,)

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Awaitable, Mapping
    from contextlib import AbstractAsyncContextManager, AbstractContextManager

    from azure.servicebus.aio import ServiceBusReceiver, ServiceBusSender

    from ..backends._options import Converter

_log = structlog.get_logger("flowkit.transports")

KEY_PROPERTY = "x-flowkit-key"
ATTEMPTS_PROPERTY = "x-flowkit-attempts"
_INTERNAL = (KEY_PROPERTY, ATTEMPTS_PROPERTY)
_MAX_REASON = 4096  # Service Bus's limit on DeadLetterReason / DeadLetterErrorDescription
_WAIT = 5.0  # seconds one receive call waits for a message
# How long one SDK read waits for a frame. The SDK's reads and writes share a lock,
# so a send or lock renewal waits out a read in progress (its default: 0.2 s).
_SOCKET_TIMEOUT = 0.05
_RELEASE_TIMEOUT = 5.0
_SECRET = re.compile(r"(SharedAccess(?:Key|Signature)=|\bsig=)[^;&\s]*", re.IGNORECASE)
_URL_OPTIONS: dict[str, Converter] = {
    "prefetch": int,
    "lock_renewal": boolean,
    "max_lock_renewal": float,
    "lock_duration": float,
    "create_queues": boolean,
}


# -- errors ------------------------------------------------------------------
def sdk_errors() -> tuple[type[BaseException], ...]:
    """The roots of every exception azure-servicebus and azure-core raise, and socket errors."""
    return (
        AzureError,  # ServiceBusError and all its subclasses, HttpResponseError, ...
        MessageAlreadySettled,  # a ValueError, not an AzureError
        DeserializationError,  # azure-core's (de)serialisation errors are ValueErrors
        SerializationError,
        OSError,  # sockets, and asyncio's TimeoutError
        *_AMQP_ERRORS,
    )


def _hint(exc: BaseException) -> str:
    """What to do next about ``exc``."""
    if isinstance(exc, MessageLockLostError | MessageAlreadySettled):
        return (
            "the message's lock ran out (or it was settled) and Service Bus redelivers it; "
            "extend() long handlers"
        )
    if isinstance(exc, MessagingEntityNotFoundError):
        return "the queue does not exist: create it, or use ServiceBusTransport(create_queues=True)"
    if isinstance(exc, ServiceBusAuthenticationError | ServiceBusAuthorizationError):
        return "check the connection string or credential and its Send/Listen/Manage claims"
    if isinstance(exc, MessageSizeExceededError):
        return "the message is larger than the namespace allows (256 KB on Standard)"
    if isinstance(exc, ServiceBusServerBusyError | ServiceBusQuotaExceededError):
        return "Service Bus is throttling or full: retry later, or scale the namespace"
    if isinstance(exc, ServiceBusConnectionError | ServiceBusCommunicationError | OSError):
        return "check the network and the namespace (or emulator) address, then retry"
    return "retry; if it keeps failing, check the namespace and the queue in the Azure portal"


def _text(exc: BaseException) -> str:
    """``exc`` as text (some SDK classes cannot ``str()`` without their arguments)."""
    try:
        return _SECRET.sub(r"\1***", str(exc)) or type(exc).__name__
    except Exception:  # an SDK class whose __str__ needs arguments it was not given
        return repr(exc.args)


def translate_errors(
    operation: str, where: str, *, settling: bool = False
) -> AbstractContextManager[None]:
    """Re-raise any SDK error in the block as a TransportError (DeliveryError if ``settling``)."""
    where = f"Service Bus {where}"
    return translating(where, operation, sdk_errors(), _hint, settling=settling, text=_text)


# -- messages ----------------------------------------------------------------
def _message(body: bytes, properties: Mapping[str, str]) -> ServiceBusMessage:
    application: dict[str | bytes, Any] = {name: value for name, value in properties.items()}
    return ServiceBusMessage(body, application_properties=application)


def _text_of(value: object) -> str:
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)


def _properties(message: ServiceBusReceivedMessage) -> dict[str, str]:
    raw = message.application_properties or {}
    return {_text_of(name): _text_of(value) for name, value in raw.items()}


def _body(message: ServiceBusReceivedMessage) -> bytes:
    body: Any = message.body
    if isinstance(body, bytes | bytearray):
        return bytes(body)
    if isinstance(body, str):
        return body.encode()
    try:
        return b"".join(bytes(part) for part in body)  # data sections
    except TypeError:  # a foreign message with some other AMQP value
        return str(body).encode()


def _count(text: str | None) -> int:
    try:
        return max(0, int(text or 0))
    except ValueError:
        return 0


def _utc_in(seconds: float) -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC) + datetime.timedelta(seconds=seconds)


def _lock_held(message: ServiceBusReceivedMessage) -> bool:
    until = message.locked_until_utc
    return until is None or until > datetime.datetime.now(datetime.UTC)


# -- deliveries --------------------------------------------------------------
class ServiceBusDelivery:
    """A delivery from :class:`ServiceBusTransport`; settle it once.

    If settling fails with :class:`~flowkit.transports.DeliveryError` because
    the lock ran out, Service Bus redelivers the message; after other failures
    the delivery stays unsettled and can be settled again.
    """

    def __init__(self, receiver: _Receiver, message: ServiceBusReceivedMessage) -> None:
        self._receiver = receiver
        self._message = message
        self._settled = False
        properties = _properties(message)
        self.body: bytes = _body(message)
        self.headers: Mapping[str, str] = {
            name: value for name, value in properties.items() if name not in _INTERNAL
        }
        self.key: str | None = properties.get(KEY_PROPERTY)
        before = _count(properties.get(ATTEMPTS_PROPERTY))
        self.attempt: int = (message.delivery_count or 0) + 1 + before

    async def ack(self) -> None:
        """Done: complete the message."""
        async with self._settling("ack") as sdk:
            await sdk.complete_message(self._message)
        await self._done()

    async def nack(self, requeue_after: float | None = None) -> None:
        """Abandon (redelivered at once), or schedule a copy ``requeue_after`` seconds out."""
        if not requeue_after or requeue_after <= 0:
            async with self._settling("nack") as sdk:
                await sdk.abandon_message(self._message)
        else:
            await self._requeue_later(requeue_after)
        await self._done()

    async def extend(self, seconds: float) -> None:
        """Renew the lock (Service Bus renews for the queue's LockDuration)."""
        async with self._settling("extend") as sdk:
            await sdk.renew_message_lock(self._message)

    async def dead_letter(self, reason: str) -> None:
        """Move the message to the queue's dead-letter subqueue with ``reason``."""
        description = f"dead-lettered by flowkit on attempt {self.attempt}"
        async with self._settling("dead_letter") as sdk:
            await sdk.dead_letter_message(
                self._message,
                reason=(reason or "(no reason given)")[:_MAX_REASON],
                error_description=description,
            )
        await self._done()

    async def _requeue_later(self, seconds: float) -> None:
        properties = _properties(self._message) | {ATTEMPTS_PROPERTY: str(self.attempt)}
        copy = _message(self.body, properties)
        transport = self._receiver.transport
        async with self._settling("nack") as sdk:
            await sdk.renew_message_lock(self._message)  # still ours, or this raises
        sequence = await transport._schedule(self._receiver.queue, copy, seconds)
        try:
            async with self._settling("nack") as sdk:
                await sdk.complete_message(self._message)
        except DeliveryError:
            await transport._cancel_scheduled(self._receiver.queue, sequence)
            raise

    def _settling(self, operation: str) -> AbstractAsyncContextManager[ServiceBusReceiver]:
        if self._settled:
            raise DeliveryError(
                f"{operation} on {self._receiver.queue!r}: the delivery was already settled"
            )
        return self._receiver.settling(operation)

    async def _done(self) -> None:
        self._settled = True
        self._receiver.held.discard(self)
        await self._receiver.transport._settled(self._receiver)

    def __repr__(self) -> str:
        return f"ServiceBusDelivery(queue={self._receiver.queue!r}, attempt={self.attempt})"


class _Receiver:
    """One SDK receiver: open while its ``receive`` runs or its deliveries are unsettled.

    Settling goes one call at a time, with the receive call paused: the SDK's
    reads and writes share one lock, and an SDK call waiting for its answer
    while another reads would wait out that read, then another for an answer
    the other had already taken (``socket_timeout`` each). Pausing cancels the
    receive call, which is safe: the SDK keeps a half-read frame, and messages
    it already took stay in its buffer for the next call.
    """

    def __init__(self, transport: ServiceBusTransport, queue: str, sdk: ServiceBusReceiver) -> None:
        self.transport = transport
        self.queue = queue
        self.sdk = sdk
        self.held: set[ServiceBusDelivery] = set()
        self.receiving = True
        self.closed = False
        self.poll: anyio.CancelScope | None = None
        self.lock = anyio.Lock()
        self.settlements = 0  # settling or waiting to
        self.calm = anyio.Event()  # set while nothing is being settled
        self.calm.set()

    @asynccontextmanager
    async def settling(self, operation: str) -> AsyncIterator[ServiceBusReceiver]:
        """The SDK receiver to settle with, alone, its errors becoming DeliveryError."""
        if not self.settlements:
            self.calm = anyio.Event()
        self.settlements += 1
        try:
            if self.poll is not None:
                self.poll.cancel()
            async with self.lock:
                if self.closed:
                    raise DeliveryError(
                        f"{operation} on {self.queue!r}: the transport was closed; Service "
                        "Bus redelivers the message when its lock runs out"
                    )
                with self.transport._errors(operation, settling=True):
                    yield self.sdk
        finally:
            self.settlements -= 1
            if not self.settlements:
                self.calm.set()

    def idle(self) -> bool:
        return not self.receiving and not self.held

    async def close(self) -> None:
        """Close the SDK receiver (it releases what its link still has), best effort."""
        if self.closed:
            return
        self.closed = True
        with anyio.move_on_after(_RELEASE_TIMEOUT, shield=True):
            try:
                with self.transport._errors(f"close the receiver of {self.queue!r}"):
                    await self.sdk.close()
            except TransportError as exc:
                _log.debug("closing a Service Bus receiver failed", error=str(exc))


class _Sender:
    """One SDK sender and the lock that keeps its calls one at a time."""

    def __init__(self, sdk: ServiceBusSender) -> None:
        self.sdk = sdk
        self.lock = anyio.Lock()


# -- the transport -----------------------------------------------------------
class ServiceBusTransport:
    """Azure Service Bus queues with peek-lock receive, scheduled delays and dead-lettering.

    Args:
        connection_string: ``Endpoint=sb://<namespace>/;SharedAccessKeyName=...;...``.
        namespace: ``<name>.servicebus.windows.net``, with ``credential``, instead.
        credential: an ``azure.identity.aio`` credential (``DefaultAzureCredential()``),
            ``AzureNamedKeyCredential`` or ``AzureSasCredential``.
        prefetch: the SDK's prefetch: messages locked ahead of the consumer (plus one).
        lock_renewal: renew every received message's lock until it is settled.
        max_lock_renewal: seconds after which automatic renewal gives up.
        lock_duration: the queues' LockDuration in seconds (used as the visibility timeout).
        create_queues: create missing queues through the management API.
        client_options: passed to ``ServiceBusClient`` (``retry_total``, ``logging_enable``...).

    Example::

        transport = ServiceBusTransport(
            namespace="shop.servicebus.windows.net", credential=DefaultAzureCredential()
        )
    """

    def __init__(
        self,
        connection_string: str | None = None,
        *,
        namespace: str | None = None,
        credential: Any = None,
        prefetch: int = 32,
        lock_renewal: bool = True,
        max_lock_renewal: float = 3600.0,
        lock_duration: float = 60.0,
        create_queues: bool = False,
        client_options: Mapping[str, Any] | None = None,
    ) -> None:
        if not _HAVE_SDK:
            raise MissingDependency("ServiceBusTransport", "servicebus")
        _check_options(connection_string, namespace, credential, prefetch, lock_duration)
        self.connection_string = connection_string
        self.namespace = namespace or _namespace_of(connection_string or "")
        self.credential = credential
        self.prefetch = prefetch
        self.lock_renewal = lock_renewal
        self.max_lock_renewal = max_lock_renewal
        self.visibility_timeout = lock_duration
        self.create_queues = create_queues
        self.client_options = dict(client_options or {})
        self._client: ServiceBusClient | None = None
        self._renewer: AutoLockRenewer | None = None
        self._senders: dict[str, _Sender] = {}
        self._receivers: set[_Receiver] = set()
        self._polls: set[anyio.CancelScope] = set()
        self._created: set[str] = set()
        self._lock = anyio.Lock()
        self._closed = False

    @classmethod
    def from_url(cls, url: str, **options: Any) -> ServiceBusTransport:
        """Build from ``servicebus://<connection string>`` or ``servicebus://<namespace>``.

        A query (``?prefetch=16&lock_duration=30``) may set options; keyword
        ``options`` override it. The namespace form needs ``credential=``.
        """
        where, found = "", dict[str, Any]()
        if url.lower().startswith("servicebus://"):
            rest, found = split_options(url, _URL_OPTIONS)
            where = unquote(rest[len("servicebus://") :])
        if not where:
            raise ConfigurationError(
                f"not a Service Bus URL: {_redact(url)!r}; use servicebus://<connection string> "
                "or servicebus://<namespace>.servicebus.windows.net"
            )
        if "endpoint=" in where.lower():
            return cls(where, **(found | options))
        return cls(namespace=where, **(found | options))

    def _errors(self, operation: str, *, settling: bool = False) -> Any:
        return translate_errors(operation, repr(self.namespace), settling=settling)

    # -- clients ---------------------------------------------------------------
    async def _sdk(self) -> ServiceBusClient:
        if self._closed:
            raise TransportError("ServiceBusTransport is closed")
        if sniffio.current_async_library() != "asyncio":
            raise TransportError(
                "ServiceBusTransport runs on asyncio only (azure-servicebus's aio client); "
                "run this worker or client under asyncio"
            )
        if self._client is None:
            with self._errors("create a client"):
                self._client = self._new_client()
        return self._client

    def _new_client(self) -> ServiceBusClient:
        if self.connection_string is not None:
            return ServiceBusClient.from_connection_string(
                self.connection_string, **self.client_options
            )
        return ServiceBusClient(self.namespace, self.credential, **self.client_options)

    @asynccontextmanager
    async def _sending(self, queue: str, operation: str) -> AsyncIterator[ServiceBusSender]:
        """``queue``'s sender, used by one call at a time, with its errors translated.

        azure-servicebus's sender is not safe for concurrent calls: two sends at
        once can put the same transfer on the wire twice, which the broker
        answers by closing the connection (a session sequencing error).
        """
        async with self._lock:
            sender = self._senders.get(queue)
            if sender is None:
                await self._ensure_queue(queue)
                client = await self._sdk()
                with self._errors(f"open a sender for {queue!r}"):
                    sdk = client.get_queue_sender(queue, socket_timeout=_SOCKET_TIMEOUT)
                sender = self._senders[queue] = _Sender(sdk)
        async with sender.lock:
            with self._errors(f"{operation} {queue!r}"):
                yield sender.sdk

    async def _ensure_queue(self, queue: str) -> None:
        """Create ``queue`` if ``create_queues`` and it is missing (once per transport)."""
        if not self.create_queues or queue in self._created:
            return
        from azure.core.exceptions import ResourceExistsError
        from azure.servicebus.aio.management import ServiceBusAdministrationClient

        if self.connection_string is not None:
            admin = ServiceBusAdministrationClient.from_connection_string(self.connection_string)
        else:
            admin = ServiceBusAdministrationClient(self.namespace, self.credential)
        async with admin:
            with self._errors(f"create queue {queue!r}"), suppress(ResourceExistsError):
                await admin.create_queue(  # one that exists is used as it is
                    queue, lock_duration=datetime.timedelta(seconds=self.visibility_timeout)
                )
        self._created.add(queue)

    def _renew(self, receiver: _Receiver, message: ServiceBusReceivedMessage) -> None:
        """Keep ``message``'s lock until it is settled (``lock_renewal``)."""
        if not self.lock_renewal:
            return
        if self._renewer is None:
            self._renewer = AutoLockRenewer(max_lock_renewal_duration=self.max_lock_renewal)
        with self._errors(f"renew locks on {receiver.queue!r}"):
            self._renewer.register(receiver.sdk, message)

    # -- sending -----------------------------------------------------------------
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
        """Send ``body``; with ``delay``, schedule it for now + ``delay`` seconds."""
        properties = dict(headers or {})
        if key is not None:
            properties[KEY_PROPERTY] = key
        message = _message(bytes(body), properties)
        if delay and delay > 0:
            await self._schedule(queue, message, delay)
            return
        async with self._sending(queue, "send to") as sender:
            await sender.send_messages(message)

    async def _schedule(self, queue: str, message: ServiceBusMessage, seconds: float) -> int:
        async with self._sending(queue, "schedule a message on") as sender:
            numbers = await sender.schedule_messages(message, _utc_in(seconds))
        return int(numbers[0])

    async def _cancel_scheduled(self, queue: str, sequence: int) -> None:
        try:
            async with self._sending(queue, "cancel a scheduled message on") as sender:
                await sender.cancel_scheduled_messages(sequence)
        except TransportError as exc:
            _log.warning("could not cancel a scheduled copy", queue=queue, error=str(exc))

    # -- receiving -----------------------------------------------------------------
    async def connect(self, queue: str) -> None:
        """Create ``queue`` if ``create_queues`` and it is missing (idempotent);
        TransportError if the namespace cannot be reached. Without ``create_queues``
        it checks nothing: the first receive does."""
        await self._ensure_queue(queue)

    async def receive(self, queue: str) -> AsyncIterator[ServiceBusDelivery]:
        """Deliveries from ``queue`` (peek-lock), until the transport is closed."""
        receiver = await self._open_receiver(queue)
        try:
            while not self._closed:
                message = await self._poll(receiver)
                if message is None or not _lock_held(message):
                    continue  # nothing yet, or its lock ran out in the buffer (redelivered)
                delivery = ServiceBusDelivery(receiver, message)
                receiver.held.add(delivery)
                yield delivery
        finally:
            receiver.receiving = False
            if receiver.idle():
                with anyio.CancelScope(shield=True):
                    await self._close_receiver(receiver)

    async def _open_receiver(self, queue: str) -> _Receiver:
        await self._ensure_queue(queue)
        client = await self._sdk()
        with self._errors(f"open a receiver for {queue!r}"):
            sdk = client.get_queue_receiver(
                queue,
                receive_mode=ServiceBusReceiveMode.PEEK_LOCK,
                prefetch_count=self.prefetch,
                socket_timeout=_SOCKET_TIMEOUT,
            )
        receiver = _Receiver(self, queue, sdk)
        self._receivers.add(receiver)
        return receiver

    async def _poll(self, receiver: _Receiver) -> ServiceBusReceivedMessage | None:
        """The next message (the SDK's buffer first), or None.

        :meth:`close` cancels the call, and so does settling (see _Receiver).
        """
        messages: list[ServiceBusReceivedMessage] = []
        while receiver.settlements:
            await receiver.calm.wait()
        with anyio.CancelScope() as scope:
            self._polls.add(scope)
            receiver.poll = scope
            try:
                with self._errors(f"receive from {receiver.queue!r}"):
                    messages = await receiver.sdk.receive_messages(
                        max_message_count=1, max_wait_time=_WAIT
                    )
            except TransportError:
                if not self._closed:
                    raise
            finally:
                receiver.poll = None
                self._polls.discard(scope)
        for message in messages:
            self._renew(receiver, message)
        return messages[0] if messages else None

    async def _close_receiver(self, receiver: _Receiver) -> None:
        self._receivers.discard(receiver)
        await receiver.close()

    async def _settled(self, receiver: _Receiver) -> None:
        """Close ``receiver`` once its ``receive`` ended and its last delivery settled."""
        if receiver.idle() and not receiver.closed:
            await self._close_receiver(receiver)

    # -- closing and inspection ------------------------------------------------------
    async def close(self) -> None:
        """Stop receiving and close every link (unsettled messages return as their locks end).

        Every part is closed even if one fails; the first failure is raised after.
        """
        if self._closed:
            return
        self._closed = True
        for scope in list(self._polls):
            scope.cancel()
        senders, self._senders = list(self._senders.values()), {}
        failures: list[TransportError] = []
        with anyio.CancelScope(shield=True):
            if self._renewer is not None:
                await self._closing("stop renewing locks", self._renewer.close(), failures)
            for receiver in list(self._receivers):
                await self._close_receiver(receiver)
            for sender in senders:
                await self._closing("close a sender", sender.sdk.close(), failures)
            if self._client is not None:
                await self._closing("close the client", self._client.close(), failures)
        if failures:
            raise failures[0]

    async def _closing(
        self, what: str, closing: Awaitable[None], failures: list[TransportError]
    ) -> None:
        try:
            with self._errors(what):
                await closing
        except TransportError as exc:
            failures.append(exc)

    async def dead_letters(self, queue: str, *, limit: int = 1000) -> list[DeadLetter]:
        """The messages in ``queue``'s dead-letter subqueue (peeked: they stay there)."""
        client = await self._sdk()
        parked: list[DeadLetter] = []
        with self._errors(f"read the dead letters of {queue!r}"):
            async with client.get_queue_receiver(
                queue, sub_queue=ServiceBusSubQueue.DEAD_LETTER
            ) as receiver:
                while len(parked) < limit:
                    batch = await receiver.peek_messages(max_message_count=100)
                    if not batch:
                        break
                    parked.extend(_dead_letter(queue, message) for message in batch)
        return parked

    def __repr__(self) -> str:
        return f"ServiceBusTransport(namespace={self.namespace!r}, prefetch={self.prefetch})"


def _dead_letter(queue: str, message: ServiceBusReceivedMessage) -> DeadLetter:
    properties = _properties(message)
    headers = {name: value for name, value in properties.items() if name not in _INTERNAL}
    reason = message.dead_letter_reason or "(no reason given)"
    return DeadLetter(queue, _body(message), headers, reason)


def _namespace_of(connection_string: str) -> str:
    """The host of a connection string's ``Endpoint=sb://host/``, for messages."""
    for part in connection_string.split(";"):
        name, _, value = part.partition("=")
        if name.strip().lower() == "endpoint":
            return value.split("://", 1)[-1].strip("/")
    return "(no endpoint)"


def _redact(url: str) -> str:
    return _SECRET.sub(r"\1***", redact(url))


def _check_options(
    connection_string: str | None,
    namespace: str | None,
    credential: Any,
    prefetch: int,
    lock_duration: float,
) -> None:
    if (connection_string is None) == (namespace is None):
        raise ConfigurationError(
            "give ServiceBusTransport either a connection string or namespace= with credential="
        )
    if namespace is not None and credential is None:
        raise ConfigurationError(
            f"namespace={namespace!r} needs credential=, e.g. "
            "azure.identity.aio.DefaultAzureCredential()"
        )
    if connection_string is not None and "endpoint=" not in connection_string.lower():
        raise ConfigurationError(
            "the Service Bus connection string has no Endpoint=sb://...: copy it from the "
            "namespace's Shared access policies"
        )
    if not 0 <= prefetch <= 50_000:
        raise ConfigurationError(f"prefetch must be 0 to 50000, got {prefetch}")
    if lock_duration <= 0:
        raise ConfigurationError(f"lock_duration must be positive, got {lock_duration}")

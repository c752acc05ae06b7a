"""A test-only stand-in for Azure Service Bus: an AMQP 1.0 broker on python-qpid-proton.

No Service Bus emulator can run on these machines (Microsoft's is a container
image), so the ``ServiceBusTransport`` tests talk to this broker instead. It
speaks the real wire protocol, AMQP 1.0 over TCP, to the real
``azure-servicebus`` SDK, which connects with a development-emulator
connection string (``Endpoint=sb://127.0.0.1:PORT;...;UseDevelopmentEmulator=true``:
plain TCP, no TLS). It listens on 127.0.0.1 only, on a free port, in a
background thread (a proton ``Container``); :meth:`ServiceBusStandIn.stop` ends it.

What it reproduces, as the SDK sees it on the wire:

* **Connection**: SASL ANONYMOUS (what the SDK sends: Service Bus authorises
  by claims-based security, not SASL); ``open``, ``begin``, ``attach``,
  ``flow``, ``transfer``, ``disposition``, ``detach``, ``end``, ``close``, with
  the settle modes the client asks for.
* **CBS** (the ``$cbs`` node): ``put-token`` requests carrying a
  ``SharedAccessSignature`` token, whose HMAC-SHA256 signature is checked
  against the stand-in's key, and its expiry; the reply carries
  ``status-code`` 202 (or 401) and the request's message id as
  ``correlation-id``. Attaching to an entity, or calling its ``$management``
  node, on a connection without a valid token for it (or for the namespace) is
  refused with ``amqp:unauthorized-access``.
* **Queues**: created on first attach (``auto_create``, the default; otherwise
  an unknown queue is refused with ``amqp:not-found``: attach, then detach with
  the error, as Service Bus does). Sends are settled ``accepted``; each message
  gets ``x-opt-sequence-number`` and ``x-opt-enqueued-time``; one carrying
  ``x-opt-scheduled-enqueue-time`` in the future is held until then.
* **Peek-lock receive**: messages go to receiver links with credit, round robin
  between a queue's links, in sequence-number order, unsettled, each under a
  fresh lock: the 16-byte delivery tag is the lock token (a UUID in
  little-endian bytes, which the SDK reads as ``lock_token``), also sent as
  ``x-opt-lock-token``; ``x-opt-locked-until`` says when the lock runs out and
  the header's ``delivery-count`` counts earlier failed deliveries. Link
  credit and ``drain`` are honoured. Receive-and-delete links
  (sender-settle-mode ``settled``) get messages pre-settled and removed.
* **Settlement** on the receiver link (the SDK uses receiver-settle-mode
  *second* and waits for the outcome): ``accepted`` completes; ``modified``
  with ``delivery-failed`` abandons (delivery count + 1; with
  ``undeliverable-here``, a deferral, it is treated as an abandon);
  ``released`` puts the message back uncounted; ``rejected`` with
  ``com.microsoft:dead-letter`` moves it to ``<queue>/$DeadLetterQueue`` with
  the ``DeadLetterReason`` and ``DeadLetterErrorDescription`` application
  properties and ``x-opt-deadletter-source``. The broker echoes the outcome
  and settles. Settling under a lock that expired is answered ``rejected``
  with ``com.microsoft:message-lock-lost``.
* **Lock expiry**: a lock not renewed within ``lock_duration`` runs out and the
  message is available again, delivery count + 1; after
  ``max_delivery_count`` failed deliveries it is dead-lettered with reason
  ``MaxDeliveryCountExceeded``. A lock outlives the link that took it (it can
  still be renewed or settled through ``$management``) until it runs out.
* **``$management``** (``<entity>/$management``), answered on the link whose
  address is the request's ``reply-to`` with ``statusCode``,
  ``statusDescription`` and, on failure, ``errorCondition``:
  ``com.microsoft:renew-lock`` (new ``expirations``; 410
  ``message-lock-lost`` for a stale token), ``schedule-message`` (answers
  ``sequence-numbers``), ``cancel-scheduled-message``, ``peek-message``
  (``from-sequence-number``, ``message-count``; 204 when nothing is left;
  scheduled and locked messages included) and ``update-disposition``
  (completed, abandoned, defered, suspended with the dead-letter reason and
  description). Other operations get 501 ``amqp:not-implemented``.

What it does not reproduce: TLS and WebSockets; SASL PLAIN or EXTERNAL; token
*claims* (Listen, Send and Manage are not told apart) and token expiry after
the put; topics, subscriptions and rules; sessions; transactions; deferral and
``receive-by-sequence-number``; message batches sent as one transfer (message
format ``0x80013700``: proton's Python binding does not expose a transfer's
format, so a batch would be stored as one message; ``ServiceBusTransport``
sends one message per transfer); duplicate detection, time-to-live, partitions,
size limits, quotas and throttling (``server-busy``); idle-connection timeouts;
the ATOM/HTTPS management API (``ServiceBusAdministrationClient``); persistence
(state is in memory until :meth:`ServiceBusStandIn.stop`); the service's exact
error texts; and its timings: ``lock_duration`` may be far below the 5-second
minimum Service Bus allows, so lease tests run quickly. Proton leaves a
``delivery-count`` of 0 out of the header (a default field), which the SDK
reports as ``delivery_count`` None rather than 0.
"""

from __future__ import annotations

import base64
import bisect
import hashlib
import hmac
import itertools
import socket
import threading
import time
import urllib.parse
import uuid
from collections import deque
from typing import Any

from proton import (
    UNDESCRIBED,
    Array,
    Condition,
    Data,
    Delivery,
    Disposition,
    Endpoint,
    Handler,
    Link,
    Message,
    symbol,
    timestamp,
)
from proton.reactor import ApplicationEvent, Container, EventInjector

VENDOR = "com.microsoft"
LOCK_LOST = symbol(f"{VENDOR}:message-lock-lost")
DLQ_SUFFIX = "/$deadletterqueue"
MANAGEMENT = "/$management"
_ACTIVE = Endpoint.LOCAL_ACTIVE
_UNINIT = Endpoint.LOCAL_UNINIT


def _now_ms() -> int:
    return int(time.time() * 1000)


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _is_node(entity: str) -> bool:
    """``$cbs`` or an ``<entity>/$management`` node (request/response, not a queue)."""
    return entity == "$cbs" or entity.endswith(MANAGEMENT)


def entity_of(address: str | None) -> str:
    """``amqps://host/queue/$management`` -> ``queue/$management`` (lower case)."""
    text = address or ""
    if "://" in text:
        text = urllib.parse.urlsplit(text).path
    return text.strip("/").lower()


# -- state ----------------------------------------------------------------------
class _Stored:
    """One message in a queue, with what Service Bus keeps about it."""

    def __init__(self, message: Message, sequence: int) -> None:
        self.message = message
        self.sequence = sequence
        self.enqueued_ms = _now_ms()
        self.delivery_count = 0
        self.token: uuid.UUID | None = None
        self.locked_until = 0.0  # monotonic
        self.due = 0.0  # monotonic time a scheduled message becomes available

    def __lt__(self, other: _Stored) -> bool:
        return self.sequence < other.sequence


class _Queue:
    def __init__(self, name: str) -> None:
        self.name = name
        self.available: list[_Stored] = []  # sorted by sequence number
        self.scheduled: dict[int, _Stored] = {}  # by sequence number
        self.locked: dict[uuid.UUID, _Stored] = {}
        self.consumers: deque[Link] = deque()

    def put(self, stored: _Stored) -> None:
        bisect.insort(self.available, stored)

    def all_messages(self) -> list[_Stored]:
        """Every message the queue holds (for peek), by sequence number."""
        held = self.available + list(self.scheduled.values()) + list(self.locked.values())
        return sorted(held, key=lambda s: s.sequence)


# -- the broker (runs in the container's thread only) ---------------------------------
class _Broker(Handler):
    def __init__(self, standin: ServiceBusStandIn) -> None:
        super().__init__()
        self.standin = standin
        self.queues: dict[str, _Queue] = {}
        self.sequence = itertools.count(1)
        self.acceptor: Any = None

    # -- lifecycle
    def on_reactor_init(self, event: Any) -> None:
        standin = self.standin
        self.acceptor = event.container.listen(f"127.0.0.1:{standin.port}")
        event.container.selectable(standin.injector)
        event.container.schedule(standin.tick, self)
        standin.ready.set()

    def on_timer_task(self, event: Any) -> None:
        self.expire_locks()
        self.release_scheduled()
        event.container.schedule(self.standin.tick, self)

    def on_standin_stop(self, event: Any) -> None:
        if self.acceptor is not None:
            self.acceptor.close()
        self.standin._container.stop()

    def on_standin_call(self, event: Any) -> None:
        function, box, done = event.subject
        try:
            box.append(function(self))
        except Exception as exc:  # handed back to the calling thread
            box.append(exc)
        done.set()

    # -- endpoints
    def on_connection_bound(self, event: Any) -> None:
        sasl = event.transport.sasl()
        sasl.allowed_mechs("ANONYMOUS")

    def on_connection_remote_open(self, event: Any) -> None:
        if event.connection.state & _UNINIT:
            event.connection.open()

    def on_session_remote_open(self, event: Any) -> None:
        if event.session.state & _UNINIT:
            event.session.open()

    def on_link_remote_open(self, event: Any) -> None:
        link = event.link
        if not link.state & _UNINIT:
            return
        link.source.address = link.remote_source.address
        link.target.address = link.remote_target.address
        link.snd_settle_mode = link.remote_snd_settle_mode
        link.rcv_settle_mode = link.remote_rcv_settle_mode
        address = link.remote_source.address if link.is_sender else link.remote_target.address
        entity = entity_of(address)
        if _is_node(entity):
            link.open()
        elif (queue := self._attachable(link, entity)) is not None:
            link.open()
            if link.is_sender:
                queue.consumers.append(link)
                self.dispatch(queue)
        if link.is_receiver and link.state & _ACTIVE:
            link.flow(100)

    def _attachable(self, link: Link, entity: str) -> _Queue | None:
        """The queue behind ``entity``, or None after refusing the attach."""
        if not self._authorised(link.connection, entity):
            self._refuse(link, "amqp:unauthorized-access", f"Unauthorized access to '{entity}'.")
            return None
        base = entity.removesuffix(DLQ_SUFFIX)
        if base not in self.queues and not self.standin.auto_create:
            self._refuse(link, "amqp:not-found", f"The messaging entity '{entity}' was not found.")
            return None
        self.queue(base)
        return self.queue(entity)

    @staticmethod
    def _refuse(link: Link, condition: str, description: str) -> None:
        """Attach, then detach at once with ``condition``, as Service Bus refuses a link."""
        link.open()
        link.condition = Condition(condition, description)
        link.close()

    def _authorised(self, connection: Any, entity: str) -> bool:
        if not self.standin.key:
            return True
        audiences: set[str] = getattr(connection, "standin_audiences", set())
        base = entity.split("/", 1)[0]
        return any(a in ("", base) for a in audiences)

    def on_link_remote_close(self, event: Any) -> None:
        self._forget(event.link)
        if not event.link.state & Endpoint.LOCAL_CLOSED:
            event.link.close()

    def _forget(self, link: Link) -> None:
        for queue in self.queues.values():
            if link in queue.consumers:
                queue.consumers.remove(link)

    def on_session_remote_close(self, event: Any) -> None:
        if not event.session.state & Endpoint.LOCAL_CLOSED:
            event.session.close()

    def on_connection_remote_close(self, event: Any) -> None:
        if not event.connection.state & Endpoint.LOCAL_CLOSED:
            event.connection.close()

    def on_transport_closed(self, event: Any) -> None:
        connection = event.connection
        if connection is None:
            return
        for queue in self.queues.values():
            for link in list(queue.consumers):
                if link.connection is connection:
                    queue.consumers.remove(link)

    # -- flow and deliveries
    def on_link_flow(self, event: Any) -> None:
        link = event.link
        if link.is_sender:
            queue = self.queues.get(entity_of(link.source.address))
            if queue is not None:
                self.dispatch(queue)
            if link.drain_mode and link.credit > 0:
                link.drained()

    def on_delivery(self, event: Any) -> None:
        delivery = event.delivery
        if event.link.is_receiver:
            self._incoming(event.link, delivery)
        elif delivery.remote_state is not None or delivery.remote.settled:
            self._disposition(delivery)

    def _incoming(self, link: Link, delivery: Delivery) -> None:
        if delivery.partial or not delivery.readable:
            return
        payload = link.recv(delivery.pending)
        link.advance()
        if not link.state & _ACTIVE:  # a refused link: the transfer raced its detach
            delivery.settle()
            return
        entity = entity_of(link.target.address)
        message = Message()
        message.decode(payload)
        delivery.update(Disposition.ACCEPTED)
        delivery.settle()
        link.flow(1)
        if entity == "$cbs":
            self.reply(link, message, *self.put_token(link.connection, message))
        elif entity.endswith(MANAGEMENT):
            entity = entity.removesuffix(MANAGEMENT)
            self.reply(link, message, *self.management(link.connection, entity, message))
        else:
            self.enqueue(self.queues[entity], message)

    # -- queues
    def queue(self, entity: str) -> _Queue:
        queue = self.queues.get(entity)
        if queue is None:
            queue = self.queues[entity] = _Queue(entity)
        return queue

    def enqueue(self, queue: _Queue, message: Message) -> int:
        stored = _Stored(message, next(self.sequence))
        annotations = message.annotations or {}
        scheduled = annotations.get(symbol("x-opt-scheduled-enqueue-time"))
        if scheduled is not None and float(scheduled) / 1000 > time.time():
            stored.due = time.monotonic() + float(scheduled) / 1000 - time.time()
            queue.scheduled[stored.sequence] = stored
        else:
            queue.put(stored)
            self.dispatch(queue)
        return stored.sequence

    def dispatch(self, queue: _Queue) -> None:
        """Hand available messages to the queue's consumers with credit, round robin."""
        while queue.available:
            link = self._next_consumer(queue)
            if link is None:
                return
            self.send(queue, link, queue.available.pop(0))

    @staticmethod
    def _next_consumer(queue: _Queue) -> Link | None:
        for _ in range(len(queue.consumers)):
            link = queue.consumers[0]
            queue.consumers.rotate(-1)
            if link.credit > 0 and link.state & _ACTIVE:
                return link
        return None

    def send(self, queue: _Queue, link: Link, stored: _Stored) -> None:
        presettled = link.snd_settle_mode == Link.SND_SETTLED
        token = uuid.uuid4()
        message = self._outgoing(stored, token, presettled)
        delivery = link.delivery(token.bytes_le)
        delivery.standin_token = token  # proton reads tags back as text: keep the UUID here
        link.send(message.encode())
        link.advance()
        if presettled:
            delivery.settle()
            return
        stored.token = token
        stored.locked_until = time.monotonic() + self.standin.lock_duration
        queue.locked[token] = stored

    def _outgoing(self, stored: _Stored, token: uuid.UUID, presettled: bool) -> Message:
        """The message as Service Bus hands it out: system annotations and delivery count."""
        message = Message()
        message.decode(stored.message.encode())
        annotations = dict(message.annotations or {})
        annotations[symbol("x-opt-sequence-number")] = stored.sequence
        annotations[symbol("x-opt-enqueued-time")] = timestamp(stored.enqueued_ms)
        if not presettled:
            until = _now_ms() + int(self.standin.lock_duration * 1000)
            annotations[symbol("x-opt-locked-until")] = timestamp(until)
            annotations[symbol("x-opt-lock-token")] = token
        message.annotations = annotations
        message.delivery_count = stored.delivery_count
        return message

    def _disposition(self, delivery: Delivery) -> None:
        state = delivery.remote_state
        queue = self.queues.get(entity_of(delivery.link.source.address))
        token = getattr(delivery, "standin_token", None)
        if queue is None or token is None or delivery.settled:
            return
        if token not in queue.locked:
            delivery.local.condition = Condition(LOCK_LOST, "The lock supplied is invalid.")
            delivery.update(Disposition.REJECTED)
            delivery.settle()
            return
        remote = delivery.remote
        self.settle_locked(queue, token, state, remote.condition, bool(remote.failed))
        if state is not None:
            delivery.update(state)
        delivery.settle()

    def settle_locked(
        self,
        queue: _Queue,
        token: uuid.UUID,
        state: Any,
        condition: Condition | None,
        failed: bool,
    ) -> None:
        stored = queue.locked.pop(token)
        stored.token = None
        if state == Disposition.ACCEPTED:
            return
        if state == Disposition.REJECTED:
            info = (condition.info if condition is not None else None) or {}
            reason = info.get("DeadLetterReason") or info.get(symbol("DeadLetterReason"))
            text = info.get("DeadLetterErrorDescription") or info.get(
                symbol("DeadLetterErrorDescription")
            )
            self.dead_letter(queue, stored, reason, text)
            return
        if state == Disposition.MODIFIED and failed:
            self.abandon(queue, stored)
            return
        queue.put(stored)  # released (or no outcome): back, uncounted
        self.dispatch(queue)

    def abandon(self, queue: _Queue, stored: _Stored) -> None:
        stored.delivery_count += 1
        if stored.delivery_count >= self.standin.max_delivery_count:
            self.dead_letter(
                queue,
                stored,
                "MaxDeliveryCountExceeded",
                f"Message could not be consumed after {stored.delivery_count} delivery attempts.",
            )
            return
        queue.put(stored)
        self.dispatch(queue)

    def dead_letter(self, queue: _Queue, stored: _Stored, reason: Any, text: Any) -> None:
        message = stored.message
        properties = dict(message.properties or {})
        if reason is not None:
            properties["DeadLetterReason"] = str(reason)
        if text is not None:
            properties["DeadLetterErrorDescription"] = str(text)
        message.properties = properties
        annotations = dict(message.annotations or {})
        annotations[symbol("x-opt-deadletter-source")] = queue.name
        message.annotations = annotations
        dlq = self.queue(queue.name + DLQ_SUFFIX)
        dead = _Stored(message, next(self.sequence))
        dead.delivery_count = stored.delivery_count
        dlq.put(dead)
        self.dispatch(dlq)

    def expire_locks(self) -> None:
        now = time.monotonic()
        for queue in list(self.queues.values()):
            for token, stored in list(queue.locked.items()):
                if stored.locked_until <= now:
                    del queue.locked[token]
                    stored.token = None
                    self.abandon(queue, stored)

    def release_scheduled(self) -> None:
        now = time.monotonic()
        for queue in list(self.queues.values()):
            for sequence, stored in list(queue.scheduled.items()):
                if stored.due <= now:
                    del queue.scheduled[sequence]
                    stored.enqueued_ms = _now_ms()
                    queue.put(stored)
            self.dispatch(queue)

    # -- request/response nodes
    def reply(
        self,
        link: Link,
        request: Message,
        status: int,
        description: str,
        body: Any = None,
        condition: str | None = None,
    ) -> None:
        """Answer ``request`` on the connection's link from its reply-to (or the node) address."""
        cbs = entity_of(link.target.address) == "$cbs"
        code_name = "status-code" if cbs else "statusCode"
        text_name = "status-description" if cbs else "statusDescription"
        response = Message(body=body)
        response.correlation_id = request.id
        properties: dict[str, Any] = {code_name: status, text_name: description}
        if condition:
            properties["errorCondition"] = symbol(condition)
        response.properties = properties
        reply_link = self._reply_link(link.connection, request.reply_to or link.target.address)
        if reply_link is None:
            return  # nobody to answer: Service Bus drops the response too
        delivery = reply_link.delivery(uuid.uuid4().bytes)
        reply_link.send(response.encode())
        reply_link.advance()
        delivery.settle()

    @staticmethod
    def _reply_link(connection: Any, address: str | None) -> Link | None:
        wanted = entity_of(address)
        link = connection.link_head(_ACTIVE)
        while link is not None:
            if link.is_sender and entity_of(link.source.address) == wanted:
                return link  # type: ignore[no-any-return]
            link = link.next(_ACTIVE)
        return None

    def put_token(self, connection: Any, request: Message) -> tuple[int, str]:
        properties = request.properties or {}
        audience = str(properties.get("name", ""))
        token = str(request.body or "")
        problem = self.standin.check_token(token, audience)
        if problem:
            return 401, problem
        entity = entity_of(audience)
        audiences: set[str] = getattr(connection, "standin_audiences", set())
        audiences.add(entity.split("/", 1)[0])
        connection.standin_audiences = audiences
        return 202, "Accepted"

    def management(self, connection: Any, entity: str, request: Message) -> tuple[Any, ...]:
        if not self._authorised(connection, entity):
            return 401, f"Unauthorized access to '{entity}'.", None, "amqp:unauthorized-access"
        properties = request.properties or {}
        operation = str(properties.get("operation", ""))
        body = request.body if isinstance(request.body, dict) else {}
        body = {str(k): v for k, v in body.items()}
        handler = {
            f"{VENDOR}:renew-lock": self.renew_lock,
            f"{VENDOR}:schedule-message": self.schedule,
            f"{VENDOR}:cancel-scheduled-message": self.cancel_scheduled,
            f"{VENDOR}:peek-message": self.peek,
            f"{VENDOR}:update-disposition": self.update_disposition,
        }.get(operation)
        if handler is None:
            return 501, f"operation {operation!r} is not implemented", None, "amqp:not-implemented"
        queue = self.queues.get(entity)
        if queue is None:
            return 404, f"The messaging entity '{entity}' was not found.", None, "amqp:not-found"
        return handler(queue, body)

    def renew_lock(self, queue: _Queue, body: dict[str, Any]) -> tuple[Any, ...]:
        tokens = list(body.get("lock-tokens") or [])
        expirations = []
        for token in tokens:
            stored = queue.locked.get(token)
            if stored is None:
                return 410, "The lock supplied is invalid.", None, LOCK_LOST
            stored.locked_until = time.monotonic() + self.standin.lock_duration
            expirations.append(timestamp(_now_ms() + int(self.standin.lock_duration * 1000)))
        return 200, "OK", {"expirations": Array(UNDESCRIBED, Data.TIMESTAMP, *expirations)}

    def schedule(self, queue: _Queue, body: dict[str, Any]) -> tuple[Any, ...]:
        numbers = []
        for entry in body.get("messages") or []:
            message = Message()
            message.decode(bytes(entry["message"]))
            numbers.append(self.enqueue(queue, message))
        return 200, "OK", {"sequence-numbers": Array(UNDESCRIBED, Data.LONG, *numbers)}

    def cancel_scheduled(self, queue: _Queue, body: dict[str, Any]) -> tuple[Any, ...]:
        for number in body.get("sequence-numbers") or []:
            queue.scheduled.pop(int(number), None)
        return 200, "OK", None

    def peek(self, queue: _Queue, body: dict[str, Any]) -> tuple[Any, ...]:
        start = int(body.get("from-sequence-number") or 0)
        count = int(body.get("message-count") or 1)
        found = [s for s in queue.all_messages() if s.sequence >= start][:count]
        if not found:
            return 204, "No messages", None
        encoded = [{"message": self._outgoing(s, uuid.UUID(int=0), True).encode()} for s in found]
        return 200, "OK", {"messages": encoded}

    def update_disposition(self, queue: _Queue, body: dict[str, Any]) -> tuple[Any, ...]:
        status = str(body.get("disposition-status", ""))
        for token in body.get("lock-tokens") or []:
            if token not in queue.locked:
                return 410, "The lock supplied is invalid.", None, LOCK_LOST
        for token in body.get("lock-tokens") or []:
            stored = queue.locked.pop(token)
            stored.token = None
            if status in ("abandoned", "defered"):
                self.abandon(queue, stored)
            elif status == "suspended":
                reason, text = body.get("deadletter-reason"), body.get("deadletter-description")
                self.dead_letter(queue, stored, reason, text)
        return 200, "OK", None


class ServiceBusStandIn:
    """The stand-in broker: ``start()`` it, give :attr:`connection_string` to the SDK, ``stop()``.

    Args:
        lock_duration: seconds a peek-lock lasts (Service Bus: the queue's LockDuration).
        max_delivery_count: failed deliveries after which a message is dead-lettered.
        key_name, key: the shared access policy tokens are signed with ('' accepts any token).
        auto_create: create queues on first attach (otherwise unknown ones are ``amqp:not-found``).
    """

    def __init__(
        self,
        *,
        lock_duration: float = 1.0,
        max_delivery_count: int = 10,
        key_name: str = "RootManageSharedAccessKey",
        key: str = "SAS_KEY_VALUE",
        auto_create: bool = True,
    ) -> None:
        self.lock_duration = lock_duration
        self.max_delivery_count = max_delivery_count
        self.key_name = key_name
        self.key = key
        self.auto_create = auto_create
        self.port = _free_port()
        self.tick = 0.02
        self.ready = threading.Event()
        self.injector = EventInjector()
        self._broker = _Broker(self)
        self._container = Container(self._broker)
        self._thread = threading.Thread(target=self._run, name="servicebus-standin", daemon=True)
        self._failure: BaseException | None = None

    @property
    def connection_string(self) -> str:
        """A development-emulator connection string for this broker."""
        return (
            f"Endpoint=sb://127.0.0.1:{self.port};SharedAccessKeyName={self.key_name};"
            f"SharedAccessKey={self.key};UseDevelopmentEmulator=true;"
        )

    def _run(self) -> None:
        try:
            self._container.run()
        except BaseException as exc:  # reported by stop()/start()
            self._failure = exc
            self.ready.set()

    def start(self) -> ServiceBusStandIn:
        self._thread.start()
        if not self.ready.wait(10) or self._failure is not None:
            raise RuntimeError(f"the Service Bus stand-in did not start: {self._failure!r}")
        return self

    def stop(self) -> None:
        if self._thread.is_alive():
            self.injector.trigger(ApplicationEvent("standin_stop"))
            self._thread.join(10)
        self.injector.close()
        if self._failure is not None:
            raise RuntimeError("the Service Bus stand-in failed") from self._failure

    def __enter__(self) -> ServiceBusStandIn:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def call(self, function: Any) -> Any:
        """Run ``function(broker)`` in the broker's thread and return its result."""
        box: list[Any] = []
        done = threading.Event()
        self.injector.trigger(ApplicationEvent("standin_call", subject=(function, box, done)))
        if not done.wait(10):
            raise TimeoutError("the Service Bus stand-in did not answer")
        if isinstance(box[0], Exception):
            raise box[0]
        return box[0]

    def messages(self, queue: str) -> list[Message]:
        """Copies of the messages in ``queue`` (``q/$DeadLetterQueue`` for its dead letters)."""

        def read(broker: _Broker) -> list[Message]:
            found = broker.queues.get(entity_of(queue))
            copies = []
            for stored in found.all_messages() if found else []:
                copy = Message()
                copy.decode(stored.message.encode())
                copies.append(copy)
            return copies

        return list(self.call(read))

    def check_token(self, token: str, audience: str) -> str:
        """'' if ``token`` is a valid SAS token for ``audience``, else what is wrong with it."""
        if not self.key:
            return ""
        if not token.startswith("SharedAccessSignature "):
            return "not a SharedAccessSignature token"
        fields = dict(urllib.parse.parse_qsl(token.removeprefix("SharedAccessSignature ")))
        resource, expiry = fields.get("sr", ""), fields.get("se", "0")
        if fields.get("skn") != self.key_name:
            return f"unknown key name {fields.get('skn')!r}"
        signed = f"{urllib.parse.quote_plus(resource)}\n{expiry}".encode()
        digest = hmac.new(self.key.encode(), signed, hashlib.sha256).digest()
        if not hmac.compare_digest(base64.b64encode(digest).decode(), fields.get("sig", "")):
            return "InvalidSignature: the token's signature does not match the key"
        if int(expiry) < time.time():
            return "ExpiredToken: the token has expired"
        return ""

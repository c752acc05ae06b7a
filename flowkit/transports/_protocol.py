"""The ``Transport`` protocol: at-least-once queues between clients and workers.

Every implementation passes ``tests/conformance/test_transport.py``:

* ``send`` returns once the broker has the message (durably, where the broker can).
* ``receive(queue)`` yields :class:`Delivery` objects; an unacknowledged
  delivery comes back (to this or another consumer) after its visibility
  timeout or a ``nack``: delivery is at least once, so consumers are idempotent.
* ``Delivery.extend(seconds)`` keeps a long-running delivery from coming back.
* ``Delivery.dead_letter(reason)`` moves a message that can never be processed
  out of the way, keeping it (and the reason) for inspection.
* ``send(..., priority=N)``: a transport that can order by priority delivers an
  available message of a higher priority before those of lower ones; the others
  accept the keyword and ignore it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, NamedTuple, Protocol, runtime_checkable

from .._errors import TransportError

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Mapping, Sequence


class DeliveryError(TransportError):
    """Acknowledging, extending or dead-lettering a delivery failed."""


@runtime_checkable
class Delivery(Protocol):
    """One received message, to be settled exactly once (ack, nack or dead-letter)."""

    body: bytes
    headers: Mapping[str, str]
    key: str | None
    attempt: int  # 1 on first delivery, counting redeliveries where the broker knows

    async def ack(self) -> None:
        """Done: the message will not be delivered again."""

    async def nack(self, requeue_after: float | None = None) -> None:
        """Not done: deliver it again (after ``requeue_after`` seconds, if given)."""

    async def extend(self, seconds: float) -> None:
        """Keep the message invisible to other consumers for ``seconds`` more."""

    async def dead_letter(self, reason: str) -> None:
        """Give up on the message: park it in the dead-letter queue with ``reason``."""


@runtime_checkable
class Transport(Protocol):
    """A message broker seen as named queues.

    A transport may also have an optional method, not part of this protocol (nor of its
    ``isinstance`` check)::

        async def connect(self, queue: str) -> None: ...

    It makes sure the broker is reachable and ``queue`` exists (declaring it where the
    transport declares queues), and raises TransportError otherwise; it is idempotent.

    The worker CLI calls it, when the transport has it, before it logs "worker started",
    so an unreachable broker fails the start instead of the first receive.
    """

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
        """Enqueue ``body``; ``key`` groups related messages (partition, ordering key).

        ``priority`` (0-9, higher first; ``None`` is 0) orders the queue where the
        transport can (memory, SQLite, PostgreSQL, Redis, RabbitMQ with
        ``max_priority``); the others accept it and ignore it. Within one priority
        the transport's usual order holds.
        """

    def receive(self, queue: str) -> AsyncIterator[Delivery]:
        """Deliveries from ``queue``, as they arrive, until the transport is closed."""

    async def close(self) -> None:
        """Stop receiving and release connections."""


class Outgoing(NamedTuple):
    """One message of :meth:`SendsMany.send_many`: the arguments of ``send`` (no delay)."""

    queue: str
    body: bytes
    key: str | None = None
    headers: Mapping[str, str] | None = None
    priority: int | None = None


@runtime_checkable
class SendsMany(Protocol):
    """A transport that sends several messages, and acks a delivery after them, in one
    round trip with its broker (optional: without it, each message is sent on its own
    and the delivery acked after them)."""

    async def send_many(
        self, messages: Sequence[Outgoing], *, then_ack: Delivery | None = None
    ) -> None:
        """``send`` every message, in order; then ack ``then_ack`` (a delivery this
        transport gave), only once every message was sent. Raises as ``send`` does, and
        as ``ack`` does for the ack."""

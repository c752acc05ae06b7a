"""``RabbitMQDelivery``, its client-side lease, and the headers flowkit sets.

See ``_rabbitmq.py``.
"""

from __future__ import annotations

import math
import time
from typing import TYPE_CHECKING, Any

import structlog

from ..._errors import TransportError
from .._protocol import DeliveryError

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable, Mapping

    from aio_pika.abc import AbstractIncomingMessage

    from ._transport import RabbitMQTransport

_log = structlog.get_logger("flowkit.transports")

KEY_HEADER = "x-flowkit-key"
ATTEMPTS_HEADER = "x-flowkit-attempts"  # deliveries before a delayed nack republished it
REASON_HEADER = "x-flowkit-reason"
# Headers the broker or this module sets: never shown to users, never republished.
_INTERNAL = ("x-flowkit-", "x-death", "x-first-death-", "x-last-death-", "x-delivery-count")


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
            await self._transport._publish(
                self._queue,
                headers,
                self.body,
                delay=requeue_after,
                priority=self._message.priority,
            )
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

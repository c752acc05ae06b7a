"""``SQSDelivery`` and its lease clock (see ``_sqs.py``, **Leases**)."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

from .._protocol import DeliveryError
from ._messages import (
    ATTEMPTS_ATTR,
    QUEUE_ATTR,
    REASON_ATTR,
    _attempt,
    _body,
    _headers,
    _key,
    _seconds,
)

if TYPE_CHECKING:
    from collections.abc import Mapping

    from .._sdk import Lease as _Lease
    from ._messages import Message
    from ._transport import SQSTransport

MAX_VISIBILITY = 43_200  # 12 hours


class SQSDelivery:
    """A delivery from :class:`SQSTransport`; settle it once.

    If settling fails (:class:`~flowkit.transports.DeliveryError`) the delivery
    stays unsettled: settle it again, or SQS redelivers it when its visibility
    timeout runs out.
    """

    def __init__(
        self, transport: SQSTransport, queue: str, url: str, message: Message, lease: _Lease
    ) -> None:
        self._transport = transport
        self._queue = queue
        self._url = url
        self._message = message
        self._lease = lease
        self._settled = False
        self.body: bytes = _body(message)
        self.headers: Mapping[str, str] = _headers(message)
        self.key: str | None = _key(message)
        self.attempt: int = _attempt(message)

    @property
    def _handle(self) -> str:
        return str(self._message["ReceiptHandle"])

    async def ack(self) -> None:
        """Done: ``DeleteMessage``."""
        self._check_held("ack")
        with self._errors("ack"):
            client = await self._transport._client()
            await client.delete_message(QueueUrl=self._url, ReceiptHandle=self._handle)
        self._settled = True

    async def nack(self, requeue_after: float | None = None) -> None:
        """Visible again now, or after ``requeue_after`` seconds (``ChangeMessageVisibility``)."""
        self._check_held("nack")
        seconds = _seconds(requeue_after or 0.0)
        if seconds > MAX_VISIBILITY and self._transport.fifo:
            raise DeliveryError(
                f"nack on {self._queue!r}: a FIFO queue can hold a message back at most "
                f"{MAX_VISIBILITY}s, not {seconds}s; use a store timer for longer waits"
            )
        with self._errors("nack"):
            if seconds > MAX_VISIBILITY:
                await self._transport._defer(self._url, self._message, seconds, self.attempt)
            else:
                await self._change_visibility(seconds)
        self._settled = True

    async def extend(self, seconds: float) -> None:
        """Keep the message invisible for ``seconds`` more (from now)."""
        self._check_held("extend")
        whole = _seconds(seconds)
        sent = time.monotonic()
        with self._errors("extend"):
            await self._change_visibility(whole)
        self._lease.renew(whole, since=sent)

    async def dead_letter(self, reason: str) -> None:
        """Send a copy with ``reason`` to the dead-letter queue, then delete the original."""
        self._check_held("dead_letter")
        extra = {
            REASON_ATTR: reason or "(no reason given)",
            ATTEMPTS_ATTR: str(self.attempt),
            QUEUE_ATTR: self._queue,
        }
        with self._errors("dead_letter"):
            await self._transport._bury(self._queue, self._message, extra)
            client = await self._transport._client()
            await client.delete_message(QueueUrl=self._url, ReceiptHandle=self._handle)
        self._settled = True

    async def _change_visibility(self, seconds: int) -> None:
        client = await self._transport._client()
        await client.change_message_visibility(
            QueueUrl=self._url, ReceiptHandle=self._handle, VisibilityTimeout=seconds
        )

    def _errors(self, action: str) -> Any:
        return self._transport._errors(f"{action} on {self._queue!r}", settling=True)

    def _check_held(self, action: str) -> None:
        if self._settled:
            raise DeliveryError(f"{action}: the delivery on {self._queue!r} was already settled")
        if self._lease.expired():
            raise DeliveryError(
                f"{action}: the delivery on {self._queue!r} is no longer held (its visibility "
                f"timeout of {self._lease.seconds:g}s ran out, so SQS redelivers it); extend() "
                "long handlers or raise SQSTransport(visibility_timeout=...)"
            )

"""``NATSDelivery`` and its lease clock (see ``_nats.py``, **Leases** and **Settling**)."""

from __future__ import annotations

import json
import time
from typing import TYPE_CHECKING, Any

from .._protocol import DeliveryError
from ._names import (
    ATTEMPTS_HEADER,
    KEY_HEADER,
    QUEUE_HEADER,
    REASON_HEADER,
    _outgoing,
    _user_headers,
)

if TYPE_CHECKING:
    from collections.abc import Mapping

    from nats.aio.msg import Msg

    from .._sdk import Lease as _Lease
    from ._transport import NATSTransport


class NATSDelivery:
    """A delivery from :class:`NATSTransport`; settle it once.

    If settling fails (:class:`~flowkit.transports.DeliveryError`) the delivery
    stays unsettled: settle it again, or JetStream redelivers it after ``ack_wait``.
    """

    def __init__(self, transport: NATSTransport, queue: str, msg: Msg, lease: _Lease) -> None:
        self._transport = transport
        self._queue = queue
        self._msg = msg
        self._lease = lease
        self._settled = False
        self.body: bytes = msg.data
        self.headers: Mapping[str, str] = _user_headers(msg.headers)
        self.key: str | None = (msg.headers or {}).get(KEY_HEADER)
        self.attempt: int = msg.metadata.num_delivered

    async def ack(self) -> None:
        """Done: the server removes the message from the work queue."""
        await self._settle("ack", b"+ACK")

    async def nack(self, requeue_after: float | None = None) -> None:
        """Redeliver now, or after ``requeue_after`` seconds (a nak with a delay)."""
        payload = b"-NAK"
        if requeue_after and requeue_after > 0:
            payload += b" " + json.dumps({"delay": round(requeue_after * 1e9)}).encode()
        await self._settle("nack", payload)

    async def extend(self, seconds: float) -> None:
        """Restart the message's ``ack_wait`` (``+WPI``); see the module docs on ``seconds``."""
        self._check_held("extend")
        sent = time.monotonic()
        with self._errors("extend"):
            await self._transport._confirm(self._msg, b"+WPI")
        self._lease.renew(since=sent)

    async def dead_letter(self, reason: str) -> None:
        """Publish a copy to the dead-letter stream with ``reason``, then terminate it."""
        self._check_held("dead_letter")
        extra = {
            REASON_HEADER: reason,
            ATTEMPTS_HEADER: str(self.attempt),
            QUEUE_HEADER: self._queue,
            # a repeated dead_letter (the term failed) is a duplicate the stream drops
            "Nats-Msg-Id": f"dead-{self._msg.metadata.sequence.stream}",
        }
        if self.key is not None:
            extra[KEY_HEADER] = self.key
        with self._errors("dead_letter"):
            await self._transport._bury(self._queue, self.body, _outgoing(self.headers, extra))
        await self._settle("dead_letter", b"+TERM")

    def _errors(self, action: str) -> Any:
        return self._transport._errors(f"{action} on {self._queue!r}", settling=True)

    def _check_held(self, action: str) -> None:
        if self._settled:
            raise DeliveryError(f"{action}: the delivery on {self._queue!r} was already settled")
        if self._lease.expired():
            raise DeliveryError(
                f"{action}: the delivery on {self._queue!r} is no longer held (its ack_wait of "
                f"{self._lease.seconds:g}s ran out, so JetStream redelivers it); extend() long "
                "handlers or raise NATSTransport(ack_wait=...)"
            )

    async def _settle(self, action: str, payload: bytes) -> None:
        self._check_held(action)
        with self._errors(action):
            await self._transport._confirm(self._msg, payload)
        self._settled = True

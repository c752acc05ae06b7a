"""``RedisDelivery`` and the stream entries and keys behind it (see ``_redis.py``)."""

from __future__ import annotations

import json
import time
import uuid
from typing import TYPE_CHECKING, Any

import attrs

from .._protocol import DeliveryError

if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence

    from ._transport import RedisTransport


HIGH = ":high"
"""Suffix of the stream (and its leases) of a queue's entries of priority 1 to 9."""


@attrs.frozen
class _Keys:
    """The Redis keys of one flowkit queue, as one of its streams sees them: the stream
    and its leases are the priority level's, the rest is shared by the queue's levels."""

    stream: str
    delayed: str
    delayed_msgs: str
    leases: str
    dlq: str
    high_stream: str  # where the delayed entries of priority 1-9 are promoted to

    @classmethod
    def of(cls, prefix: str, queue: str, priority: int | None = None) -> _Keys:
        """The keys of ``queue``'s stream of ``priority`` (0 and None: the normal one)."""
        base = f"{prefix}:{queue}"
        level = f"{base}{HIGH}" if priority else base
        return cls(
            level,
            f"{base}:delayed",
            f"{base}:delayed:msgs",
            f"{level}:leases",
            f"{base}:dlq",
            f"{base}{HIGH}",
        )


def _pairs(fields: Any) -> dict[bytes, bytes]:
    """Stream entry fields, as redis-py (a dict) or a script (a flat list) returns them."""
    if isinstance(fields, dict):
        return dict(fields)
    flat = list(fields or ())
    return dict(zip(flat[0::2], flat[1::2], strict=False))


def _decoded(value: bytes | None) -> str | None:
    return None if value is None else value.decode("utf-8", "replace")


def _count(value: bytes | None) -> int:
    try:
        return max(0, int(value or 0))
    except ValueError:
        return 0


def _headers(value: bytes | None) -> dict[str, str]:
    """The ``headers`` field: a JSON object; anything else (a foreign entry) reads as none."""
    try:
        decoded = json.loads(value) if value else {}
    except (ValueError, RecursionError):  # not JSON, not UTF-8, or absurdly nested
        return {}
    if not isinstance(decoded, dict):
        return {}
    return {str(name): str(item) for name, item in decoded.items()}


def _fields(
    body: bytes, key: str | None, headers: Mapping[str, str] | None, priority: int | None = None
) -> dict[Any, Any]:
    fields: dict[Any, Any] = {"body": body}
    if key is not None:
        fields["key"] = key
    if headers:
        fields["headers"] = json.dumps(dict(headers), separators=(",", ":"))
    if priority:
        fields["priority"] = str(priority)  # a delayed entry is promoted to the high stream
    return fields


class RedisDelivery:
    """A delivery from :class:`RedisTransport`, held while it is pending for this consumer."""

    def __init__(
        self,
        transport: RedisTransport,
        keys: _Keys,
        entry_id: bytes,
        fields: Mapping[bytes, bytes],
        count: int,
    ) -> None:
        self._transport = transport
        self._keys = keys
        self._id = entry_id
        self._count = count
        self.received_at = time.monotonic()
        self.body: bytes = fields.get(b"body", b"")
        self.headers: Mapping[str, str] = _headers(fields.get(b"headers"))
        self.key: str | None = _decoded(fields.get(b"key"))
        self.attempt: int = _count(fields.get(b"attempt")) + count

    async def ack(self) -> None:
        """Done: XACK + XDEL."""
        await self._settle("ack", "ack")

    async def nack(self, requeue_after: float | None = None) -> None:
        """Ack and re-add the entry (after ``requeue_after`` seconds, via the delayed set)."""
        await self._settle("nack", "requeue", delay=requeue_after or 0.0)

    async def extend(self, seconds: float) -> None:
        """Reset the idle clock and keep the entry from being claimed for ``seconds``.

        It stays unclaimable for ``max(seconds, visibility_timeout)``.
        """
        await self._run("extend", self._transport._extend, [*self._held(), _ms(seconds)])

    async def dead_letter(self, reason: str) -> None:
        """XADD the entry and ``reason`` to ``<queue>:dlq``, then ack."""
        await self._settle("dead_letter", "dead", reason=reason)

    async def _refresh(self) -> bool:
        """Reset the idle clock of a delivery read a while ago; False if it was claimed."""
        with self._transport._errors(f"refresh {self._where()}"):
            done = await self._transport._extend(
                keys=[self._keys.stream, self._keys.leases], args=[*self._held(), 0]
            )
        return bool(done)

    async def _settle(
        self, action: str, mode: str, *, delay: float = 0.0, reason: str = ""
    ) -> None:
        args = [*self._held(), mode, _ms(delay), uuid.uuid4().hex, reason]
        await self._run(action, self._transport._settle, args, keys=self._all_keys())

    async def _ack_after(self, streams: list[str], entries: list[Any]) -> None:
        """XADD the entries to the streams, then ack: one script, one round trip."""
        args = [*self._held(), "ack", 0, "", "", *entries]
        keys = [*self._all_keys(), *streams]
        await self._run("ack", self._transport._send_then_settle, args, keys=keys)

    async def _run(
        self, action: str, script: Any, args: Sequence[Any], *, keys: Sequence[str] = ()
    ) -> None:
        keys = keys or [self._keys.stream, self._keys.leases]
        with self._transport._errors(f"{action} {self._where()}", settling=True):
            done = await script(keys=list(keys), args=list(args))
        if not done:
            raise DeliveryError(
                f"{action} {self._where()}: the delivery is no longer held (settled already, "
                "or its visibility timeout ran out and it was claimed again); extend() "
                "long-running deliveries"
            )

    def _held(self) -> list[Any]:
        """The script arguments that identify this delivery: group, id, consumer, count."""
        transport = self._transport
        return [transport.group, self._id, transport.consumer, str(self._count)]

    def _all_keys(self) -> list[str]:
        k = self._keys
        return [k.stream, k.leases, k.dlq, k.delayed, k.delayed_msgs]

    def _where(self) -> str:
        return f"entry {self._id.decode()} of {self._keys.stream!r}"


def _ms(seconds: float) -> int:
    return max(0, round(seconds * 1000))

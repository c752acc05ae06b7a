"""``RedisTransport``: queues on Redis Streams with consumer groups (asyncio only).

redis-py's asyncio client runs on asyncio, not trio, so this transport does too.
It is the BullMQ-style option: no broker beyond the Redis you may already run.

Keys, for a flowkit queue ``q`` under ``prefix`` (``P``):

* ``P:q`` — the stream. ``send`` XADDs an entry with fields ``body``, and
  ``key``, ``headers`` (a JSON object) and ``attempt`` (deliveries before it was
  re-added) when set. The consumer group ``group`` is created on first
  ``receive`` (``MKSTREAM``, from id ``0`` so earlier entries are delivered).
* ``P:q:delayed`` / ``P:q:delayed:msgs`` — delayed entries: a sorted set of ids
  scored by due time (Redis server time, in ms) and a hash of their packed
  fields. Every receiver moves due entries into the stream atomically (Lua),
  before each read; a delay is honoured to within ``block_ms``.
* ``P:q:leases`` — for deliveries extended past the visibility timeout, the
  Redis time until which they may not be claimed.
* ``P:q:dlq`` — dead letters: the entry's fields plus ``reason``.
* ``P:q:high`` (and ``P:q:high:leases``) — the stream of entries sent with a
  ``priority`` of 1 to 9 (and a ``priority`` field), with the same consumer
  group. Receivers read it before ``P:q``: its entries are handed out first,
  after those already read in a batch (up to ``count``). Priorities have two
  levels here, 0 and 1-9: within the high stream, entries are FIFO whatever
  their priority. Delayed entries of both share the delayed set and are
  promoted to their stream.

A receiver reads new entries with ``XREADGROUP`` (blocking up to ``block_ms``)
and claims entries another consumer (or this one) left idle longer than
``visibility_timeout``: a consumer that died loses its deliveries to the next
receiver. Claiming is ``XPENDING IDLE`` + ``XCLAIM`` in one script rather than
``XAUTOCLAIM``, so it can skip deliveries whose lease was extended beyond the
visibility timeout. A delivery is held by ``(consumer, delivery count)``: every
settlement and ``extend`` is one script that first checks the entry is still
pending for this consumer at that count, and raises
:class:`~flowkit.transports.DeliveryError` otherwise (the delivery timed out
and was claimed again).

Entries read in a batch but not handed over when a ``receive()`` loop ends are
re-added at once (``attempt`` unchanged) rather than left to time out.

``send_many`` XADDs several entries in one script and, given a delivery, acks it in
the same script once they are added: a worker publishes a node's successors and acks
its message in one round trip. ``ack`` is ``XACK`` + ``XDEL``; ``nack`` acks and
re-adds the fields (now, or via the delayed set) with ``attempt`` raised; ``extend``
re-``XCLAIM``s the entry to this consumer (``JUSTID``: resets its idle time, not its count) and
records the lease; ``dead_letter`` XADDs to ``P:q:dlq`` then acks. ``attempt``
is ``attempt`` + the stream's delivery count.

Ordering: priority 1-9 before 0, then FIFO per stream for a single consumer and
no redeliveries; competing
consumers, claims after a timeout, nacks and delays reorder. Durability is the
server's (AOF/RDB configuration). Not for Redis Cluster (scripts touch several
keys of a queue without hash tags).

Every redis-py exception is translated to :class:`~flowkit.TransportError`
(:class:`~flowkit.transports.DeliveryError` while settling) by
:func:`translate_errors`, and nowhere else.
"""

from __future__ import annotations

import os
import secrets
import socket
import time
import uuid
from collections import deque
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

import anyio
import attrs
import sniffio
import structlog

from ..._errors import ConfigurationError, MissingDependency, TransportError
from ...backends._options import redact, split_options
from ...backends._redis import _HAVE_REDIS, redis_client  # without the extra: see __init__
from ._delivery import RedisDelivery as RedisDelivery
from ._delivery import _fields, _Keys, _ms, _pairs
from ._errors import sdk_errors as sdk_errors
from ._errors import translate_errors as translate_errors
from ._scripts import (
    _CLAIM,
    _CREATE_GROUP,
    _DELAY,
    _EXTEND,
    _PROMOTE,
    _RELEASE,
    _SEND,
    _SEND_THEN_SETTLE,
    _SETTLE,
)

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Iterable, Mapping, Sequence

    from ...backends._options import Converter
    from .._protocol import Delivery, Outgoing

_log = structlog.get_logger("flowkit.transports")
_URL_OPTIONS: dict[str, Converter] = {
    "group": str,
    "consumer": str,
    "prefix": str,
    "visibility_timeout": float,
    "block_ms": int,
    "count": int,
    "max_connections": int,
}


@attrs.define
class _Cursor:
    """Where one receiver's claim scan is, and when it next runs."""

    start: bytes = b"-"
    next_claim: float = 0.0


class RedisTransport:
    """Queues on Redis Streams (asyncio only).

    Example::

        transport = RedisTransport("redis://127.0.0.1:6379/0", visibility_timeout=30.0)
        await transport.send("flowkit", b"hello", delay=5.0)
        async for delivery in transport.receive("flowkit"):
            await delivery.ack()

    Args:
        url: a ``redis://`` or ``rediss://`` URL.
        group: the consumer group every worker of a queue shares.
        consumer: this process's name in the group (default: host-pid-random).
        visibility_timeout: seconds a delivery may stay unsettled (and not
            extended) before another receiver claims it.
        block_ms: how long one read waits for new entries; also bounds how late
            a delayed entry or a claim can be.
        count: entries read per round trip.
        prefix: the first part of every key.
        max_connections: connections in the pool; beyond it callers wait for one.
    """

    def __init__(
        self,
        url: str = "redis://127.0.0.1:6379/0",
        *,
        group: str = "flowkit",
        consumer: str | None = None,
        visibility_timeout: float = 30.0,
        block_ms: int = 1000,
        count: int = 32,
        prefix: str = "flowkit",
        max_connections: int = 64,
    ) -> None:
        if not _HAVE_REDIS:
            raise MissingDependency("RedisTransport", "redis")
        _check_options(url, visibility_timeout, block_ms, count, max_connections)
        self.url = url
        self.group = group
        self.consumer = consumer or _default_consumer()
        self.visibility_timeout = visibility_timeout
        self.block_ms = block_ms
        self.count = count
        self.prefix = prefix
        self.max_connections = max_connections
        self._client = redis_client(url, max_connections)
        scripts = (_CREATE_GROUP, _DELAY, _PROMOTE, _CLAIM, _EXTEND, _SETTLE, _RELEASE, _SEND)
        (
            self._create_group,
            self._delay,
            self._promote,
            self._claim,
            self._extend,
            self._settle,
            self._release,
            self._send,
        ) = (self._client.register_script(source) for source in scripts)
        self._send_then_settle = self._client.register_script(_SEND_THEN_SETTLE)
        self._queues: set[_Keys] = set()
        self._closed = False

    @classmethod
    def from_url(cls, url: str, **options: Any) -> RedisTransport:
        """Build from ``redis://[:password@]host:port/db?group=shop&visibility_timeout=60``
        (or ``rediss://``).

        Query options: ``group``, ``consumer``, ``prefix`` (str),
        ``visibility_timeout`` (float seconds), ``block_ms``, ``count``,
        ``max_connections`` (int). Other parameters (``socket_timeout=``,
        ``health_check_interval=``...) stay in the URL for redis-py. Keyword
        ``options`` override the query.
        """
        rest, found = split_options(url, _URL_OPTIONS, mode="pass-through")
        return cls(rest, **(found | options))

    def keys(self, queue: str) -> tuple[str, ...]:
        """Every Redis key ``queue`` uses: streams (normal and high priority), delayed set
        and hash, leases, dead letters (last)."""
        k, high = _Keys.of(self.prefix, queue), _Keys.of(self.prefix, queue, 1)
        return (k.stream, high.stream, k.delayed, k.delayed_msgs, k.leases, high.leases, k.dlq)

    def _errors(self, operation: str, *, settling: bool = False) -> Any:
        return translate_errors(operation, self.url, settling=settling)

    def _check_open(self) -> None:
        if self._closed:
            raise TransportError("RedisTransport is closed")
        library = sniffio.current_async_library()
        if library != "asyncio":
            raise TransportError(
                f"RedisTransport runs on asyncio only (redis-py's client does), not {library}: "
                "run the worker or client under asyncio"
            )

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
        """XADD ``body`` to the queue's stream (its high-priority stream for a ``priority``
        of 1 to 9), or (with ``delay``) to its delayed set."""
        self._check_open()
        keys = _Keys.of(self.prefix, queue, priority)
        fields = _fields(bytes(body), key, headers, priority)
        ms = _ms(delay or 0.0)
        with self._errors(f"send to {keys.stream!r}"):
            if ms:
                args = [uuid.uuid4().hex, ms, *(item for pair in fields.items() for item in pair)]
                await self._delay(keys=[keys.delayed, keys.delayed_msgs], args=args)
            else:
                await self._client.xadd(keys.stream, fields)

    async def send_many(
        self, messages: Sequence[Outgoing], *, then_ack: Delivery | None = None
    ) -> None:
        """XADD every message in one script, then (in it) ack ``then_ack``: one round trip."""
        self._check_open()
        if not isinstance(then_ack, RedisDelivery) or then_ack._transport is not self:
            if messages:
                with self._errors(f"send {len(messages)} messages"):
                    await self._send(*_entries(self.prefix, messages))
            if then_ack is not None:
                await then_ack.ack()
            return
        await then_ack._ack_after(*_entries(self.prefix, messages))

    # -- receiving -------------------------------------------------------------
    async def connect(self, queue: str) -> None:
        """Reach the server and create ``queue``'s stream and consumer group (idempotent);
        TransportError if the server cannot be reached."""
        self._check_open()
        for keys in _levels(self.prefix, queue):
            await self._join(keys)

    async def receive(self, queue: str) -> AsyncIterator[RedisDelivery]:
        """New and timed-out deliveries from ``queue``, until the transport is closed."""
        self._check_open()
        levels = _levels(self.prefix, queue)
        for keys in levels:
            await self._join(keys)
        cursors = [_Cursor() for _ in levels]
        batch: deque[RedisDelivery] = deque()
        try:
            while not self._closed:
                try:
                    batch.extend(await self._poll(levels, cursors))
                except TransportError:
                    if self._closed:  # close() cut the blocking read short
                        return
                    raise
                while batch and not self._closed:
                    delivery = batch.popleft()
                    if await self._still_held(delivery):
                        yield delivery
        finally:
            await self._give_back(batch)

    async def _give_back(self, unyielded: Iterable[RedisDelivery]) -> None:
        """Re-add entries read but never handed over, so others need not wait to claim them."""
        if self._closed:  # they stay pending here, and are claimed after the timeout
            return
        with anyio.CancelScope(shield=True):
            for delivery in unyielded:
                try:
                    await delivery._settle("give back", "return")
                except TransportError as exc:  # still pending here: claimed after the timeout
                    _log.debug("could not give an entry back", error=str(exc))

    async def _join(self, keys: _Keys) -> None:
        with self._errors(f"create consumer group {self.group!r} on {keys.stream!r}"):
            await self._create_group(keys=[keys.stream], args=[self.group])
        self._queues.add(keys)

    async def _poll(self, levels: list[_Keys], cursors: list[_Cursor]) -> list[RedisDelivery]:
        """Promote due delayed entries, claim timed-out ones, else read new ones (the
        high-priority stream's first)."""
        keys = levels[-1]  # the normal stream's: the delayed set is shared
        with self._errors(f"receive from {keys.stream!r}"):
            wait = await self._promote(
                keys=[keys.stream, keys.delayed, keys.delayed_msgs, keys.high_stream],
                args=[self.count],
            )
            for level, cursor in zip(levels, cursors, strict=True):
                if time.monotonic() >= cursor.next_claim:
                    claimed = await self._claim_idle(level, cursor)
                    if claimed:
                        return claimed
            block = min(self._block_ms(int(wait), cursor) or 0 for cursor in cursors)
            return await self._read(levels, block or None)

    async def _claim_idle(self, keys: _Keys, cursor: _Cursor) -> list[RedisDelivery]:
        args: list[Any] = [self.group, self.consumer, _ms(self.visibility_timeout)]
        args += [cursor.start, self.count]
        start, entries = await self._claim(keys=[keys.stream, keys.leases], args=args)
        cursor.start = start
        if start == b"-":  # scanned to the end: rest a while before the next scan
            cursor.next_claim = time.monotonic() + min(self.visibility_timeout / 4, 1.0)
        return [RedisDelivery(self, keys, i, _pairs(f), int(n)) for i, f, n in entries]

    async def _read(self, levels: list[_Keys], block_ms: int | None) -> list[RedisDelivery]:
        """New entries of every level's stream, the first level's first."""
        reply: Any = await self._client.xreadgroup(
            self.group,
            self.consumer,
            {keys.stream: ">" for keys in levels},
            count=self.count,
            block=block_ms,
        )
        streams = dict(reply.items() if isinstance(reply, dict) else (reply or ()))
        by_name = {_name(name): entries for name, entries in streams.items()}
        return [
            RedisDelivery(self, keys, entry_id, _pairs(fields), 1)
            for keys in levels
            for entry_id, fields in by_name.get(keys.stream, ())
            if fields is not None
        ]

    def _block_ms(self, wait: int, cursor: _Cursor) -> int | None:
        """How long a read may block: until the next delayed entry or claim scan is due."""
        until_claim = _ms(max(0.0, cursor.next_claim - time.monotonic()))
        block = min(self.block_ms, until_claim, self.block_ms if wait < 0 else wait)
        return block or None  # 0 would block forever; None does not block

    async def _still_held(self, delivery: RedisDelivery) -> bool:
        """Refresh a delivery that waited in the batch; False if another consumer took it."""
        if time.monotonic() - delivery.received_at < self.visibility_timeout / 2:
            return True
        return await delivery._refresh()

    # -- closing -----------------------------------------------------------------
    async def close(self) -> None:
        """Stop receiving, leave the groups (if nothing is pending here) and disconnect."""
        if self._closed:
            return
        self._closed = True
        try:
            for keys in self._queues:
                with self._errors(f"leave consumer group on {keys.stream!r}"):
                    await self._release(keys=[keys.stream], args=[self.group, self.consumer])
        finally:
            with self._errors("close"):
                await self._client.aclose()

    def __repr__(self) -> str:
        return f"RedisTransport({redact(self.url)!r}, prefix={self.prefix!r})"


def _entries(prefix: str, messages: Sequence[Outgoing]) -> tuple[list[str], list[Any]]:
    """The streams and the arguments of the messages, as the ``add_all`` script reads them."""
    streams: list[str] = []
    args: list[Any] = []
    for message in messages:
        streams.append(_Keys.of(prefix, message.queue, message.priority).stream)
        fields = _fields(bytes(message.body), message.key, message.headers, message.priority)
        items = [item for pair in fields.items() for item in pair]
        args += [len(items), *items]
    return streams, args


def _levels(prefix: str, queue: str) -> list[_Keys]:
    """The keys of ``queue``'s streams, the highest priority's first."""
    return [_Keys.of(prefix, queue, 1), _Keys.of(prefix, queue)]


def _name(stream: Any) -> str:
    return stream.decode() if isinstance(stream, bytes) else str(stream)


def _default_consumer() -> str:
    return f"{socket.gethostname()}-{os.getpid()}-{secrets.token_hex(3)}"


def _check_options(
    url: str, visibility_timeout: float, block_ms: int, count: int, max_connections: int
) -> None:
    if urlsplit(url).scheme.lower() not in ("redis", "rediss", "unix"):
        raise ConfigurationError(f"RedisTransport needs a redis:// URL, got {redact(url)!r}")
    if visibility_timeout <= 0:
        raise ConfigurationError(f"visibility_timeout must be positive, got {visibility_timeout}")
    if block_ms < 1:
        raise ConfigurationError(f"block_ms must be 1 or more, got {block_ms}")
    if count < 1:
        raise ConfigurationError(f"count must be 1 or more, got {count}")
    if max_connections < 1:
        raise ConfigurationError(f"max_connections must be 1 or more, got {max_connections}")

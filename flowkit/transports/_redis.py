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

``ack`` is ``XACK`` + ``XDEL``; ``nack`` acks and re-adds the fields (now, or
via the delayed set) with ``attempt`` raised; ``extend`` re-``XCLAIM``s the
entry to this consumer (``JUSTID``: resets its idle time, not its count) and
records the lease; ``dead_letter`` XADDs to ``P:q:dlq`` then acks. ``attempt``
is ``attempt`` + the stream's delivery count.

Ordering: FIFO per queue for a single consumer and no redeliveries; competing
consumers, claims after a timeout, nacks and delays reorder. Durability is the
server's (AOF/RDB configuration). Not for Redis Cluster (scripts touch several
keys of a queue without hash tags).

Every redis-py exception is translated to :class:`~flowkit.TransportError`
(:class:`~flowkit.transports.DeliveryError` while settling) by
:func:`translate_errors`, and nowhere else.
"""

from __future__ import annotations

import json
import os
import secrets
import socket
import time
import uuid
from collections import deque
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

import anyio
import attrs
import sniffio
import structlog

from .._errors import MissingDependency, TransportError
from ..stores._urls import ConfigurationError, redact
from ._protocol import DeliveryError

try:
    import redis.asyncio as aioredis
    from redis import exceptions as redis_errors
except ImportError:  # the "redis" extra is not installed: RedisTransport() says so
    _HAVE_REDIS = False
else:
    _HAVE_REDIS = True

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Iterable, Iterator, Mapping, Sequence

_log = structlog.get_logger("flowkit.transports")

# -- scripts -------------------------------------------------------------------
_LIB = """
local function now_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end
local function held(stream, group, id, consumer, count)
  local p = redis.call('XPENDING', stream, group, id, id, 1)[1]
  return p ~= nil and p[2] == consumer and tostring(p[4]) == count
end
local function get_field(fields, name)
  for i = 1, #fields, 2 do if fields[i] == name then return fields[i + 1] end end
  return nil
end
local function set_field(fields, name, value)
  for i = 1, #fields, 2 do
    if fields[i] == name then fields[i + 1] = value; return fields end
  end
  fields[#fields + 1] = name; fields[#fields + 1] = value
  return fields
end
"""
# KEYS: stream. ARGV: group. Creates the group unless it exists.
_CREATE_GROUP = """
local ok = redis.pcall('XGROUP', 'CREATE', KEYS[1], ARGV[1], '0', 'MKSTREAM')
if type(ok) == 'table' and ok.err then
  if string.find(ok.err, 'BUSYGROUP', 1, true) then return 0 end
  return redis.error_reply(ok.err)
end
return 1
"""
# KEYS: delayed, delayed msgs. ARGV: id, delay ms, field, value, ...
_DELAY = (
    _LIB
    + """
local fields = {}
for i = 3, #ARGV do fields[#fields + 1] = ARGV[i] end
redis.call('HSET', KEYS[2], ARGV[1], cmsgpack.pack(fields))
redis.call('ZADD', KEYS[1], now_ms() + tonumber(ARGV[2]), ARGV[1])
return 1
"""
)
# KEYS: stream, delayed, delayed msgs. ARGV: limit. Returns ms until the next due entry,
# 0 if more may be due now, -1 if none is waiting.
_PROMOTE = (
    _LIB
    + """
local now = now_ms()
local limit = tonumber(ARGV[1])
local due = redis.call('ZRANGEBYSCORE', KEYS[2], '-inf', now, 'LIMIT', 0, limit)
for _, id in ipairs(due) do
  local packed = redis.call('HGET', KEYS[3], id)
  if packed then redis.call('XADD', KEYS[1], '*', unpack(cmsgpack.unpack(packed))) end
  redis.call('ZREM', KEYS[2], id)
  redis.call('HDEL', KEYS[3], id)
end
if #due == limit then return 0 end
local first = redis.call('ZRANGE', KEYS[2], 0, 0, 'WITHSCORES')
if first[2] == nil then return -1 end
return math.max(0, tonumber(first[2]) - now)
"""
)
# KEYS: stream, leases. ARGV: group, consumer, min idle ms, start, count.
# Returns {next start, {{id, fields, delivery count}, ...}}.
_CLAIM = (
    _LIB
    + """
local now = now_ms()
local pending = redis.call('XPENDING', KEYS[1], ARGV[1], 'IDLE', ARGV[3], ARGV[4], '+', ARGV[5])
local claimed = {}
for _, p in ipairs(pending) do
  local id = p[1]
  if tonumber(redis.call('HGET', KEYS[2], id) or '0') <= now then
    redis.call('HDEL', KEYS[2], id)
    local got = redis.call('XCLAIM', KEYS[1], ARGV[1], ARGV[2], ARGV[3], id)
    if got[1] and got[1][2] then claimed[#claimed + 1] = {got[1][1], got[1][2], p[4] + 1} end
  end
end
local start = '-'
if #pending == tonumber(ARGV[5]) then start = '(' .. pending[#pending][1] end
return {start, claimed}
"""
)
# KEYS: stream, leases. ARGV: group, id, consumer, count, lease ms (0: keep the lease).
_EXTEND = (
    _LIB
    + """
if not held(KEYS[1], ARGV[1], ARGV[2], ARGV[3], ARGV[4]) then return 0 end
redis.call('XCLAIM', KEYS[1], ARGV[1], ARGV[3], 0, ARGV[2], 'JUSTID')
local ms = tonumber(ARGV[5])
if ms > 0 then redis.call('HSET', KEYS[2], ARGV[2], now_ms() + ms) end
return 1
"""
)
# KEYS: stream, leases, dlq, delayed, delayed msgs.
# ARGV: group, id, consumer, count, mode (ack|requeue|return|dead), delay ms, new id, reason.
_SETTLE = (
    _LIB
    + """
if not held(KEYS[1], ARGV[1], ARGV[2], ARGV[3], ARGV[4]) then return 0 end
local entry = redis.call('XRANGE', KEYS[1], ARGV[2], ARGV[2])[1]
redis.call('XACK', KEYS[1], ARGV[1], ARGV[2])
redis.call('XDEL', KEYS[1], ARGV[2])
redis.call('HDEL', KEYS[2], ARGV[2])
if ARGV[5] == 'ack' or entry == nil then return 1 end
local fields = entry[2]
local counted = tonumber(ARGV[4])
if ARGV[5] == 'return' then counted = counted - 1 end  -- it never reached a consumer
local attempts = (tonumber(get_field(fields, 'attempt')) or 0) + counted
set_field(fields, 'attempt', tostring(attempts))
if ARGV[5] == 'dead' then
  redis.call('XADD', KEYS[3], '*', unpack(set_field(fields, 'reason', ARGV[8])))
elseif tonumber(ARGV[6]) <= 0 then
  redis.call('XADD', KEYS[1], '*', unpack(fields))
else
  redis.call('HSET', KEYS[5], ARGV[7], cmsgpack.pack(fields))
  redis.call('ZADD', KEYS[4], now_ms() + tonumber(ARGV[6]), ARGV[7])
end
return 1
"""
)
# KEYS: stream. ARGV: group, consumer. Forget the consumer if it holds nothing.
_RELEASE = """
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
local ok = redis.pcall('XPENDING', KEYS[1], ARGV[1], '-', '+', 1, ARGV[2])
if type(ok) ~= 'table' or ok.err or #ok > 0 then return 0 end
return redis.call('XGROUP', 'DELCONSUMER', KEYS[1], ARGV[1], ARGV[2])
"""


# -- errors --------------------------------------------------------------------
def sdk_errors() -> tuple[type[BaseException], ...]:
    """The roots of every exception redis-py raises (and socket errors)."""
    return (
        redis_errors.RedisError,
        redis_errors.RedisClusterException,
        redis_errors.ChildDeadlockedError,
        redis_errors.IncorrectPolicyType,
        OSError,
    )


def _hint(exc: BaseException) -> str:
    """What to do next about ``exc``."""
    if isinstance(
        exc,
        redis_errors.AuthenticationError
        | redis_errors.AuthorizationError
        | redis_errors.NoPermissionError,
    ):
        return "check the user and password in the URL and the user's ACL"
    if isinstance(exc, redis_errors.ConnectionError | redis_errors.TimeoutError | OSError):
        return "check that Redis is running and reachable at that URL"
    if isinstance(exc, redis_errors.ResponseError) and "WRONGTYPE" in repr(exc.args):
        return "a key of the transport's prefix holds something else: choose another prefix"
    return "retry; if it keeps failing, check the server's logs"


@contextmanager
def translate_errors(operation: str, url: str, *, settling: bool = False) -> Iterator[None]:
    """Re-raise any redis-py error in the block as a TransportError.

    It is a :class:`~flowkit.transports.DeliveryError` if ``settling``.
    """
    try:
        yield
    except sdk_errors() as exc:
        error = DeliveryError if settling else TransportError
        raise error(
            f"Redis transport {redact(url)!r}: {operation} failed "
            f"({type(exc).__name__}: {_text(exc, url)}); {_hint(exc)}"
        ) from exc


def _text(exc: BaseException, url: str) -> str:
    """``exc`` as text without the URL's password (even if its ``__str__`` fails)."""
    try:
        text = str(exc)
    except Exception:  # an SDK class whose __str__ needs attributes it was not given
        text = repr(exc.args)
    password = urlsplit(url).password
    return text.replace(password, "***") if password else text


# -- entries -------------------------------------------------------------------
@attrs.frozen
class _Keys:
    """The Redis keys of one flowkit queue."""

    stream: str
    delayed: str
    delayed_msgs: str
    leases: str
    dlq: str

    @classmethod
    def of(cls, prefix: str, queue: str) -> _Keys:
        base = f"{prefix}:{queue}"
        return cls(base, f"{base}:delayed", f"{base}:delayed:msgs", f"{base}:leases", f"{base}:dlq")


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


def _fields(body: bytes, key: str | None, headers: Mapping[str, str] | None) -> dict[Any, Any]:
    fields: dict[Any, Any] = {"body": body}
    if key is not None:
        fields["key"] = key
    if headers:
        fields["headers"] = json.dumps(dict(headers), separators=(",", ":"))
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


@attrs.define
class _Cursor:
    """Where one receiver's claim scan is, and when it next runs."""

    start: bytes = b"-"
    next_claim: float = 0.0


# -- the transport -------------------------------------------------------------
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
    ) -> None:
        if not _HAVE_REDIS:
            raise MissingDependency("RedisTransport", "redis")
        _check_options(url, visibility_timeout, block_ms, count)
        self.url = url
        self.group = group
        self.consumer = consumer or _default_consumer()
        self.visibility_timeout = visibility_timeout
        self.block_ms = block_ms
        self.count = count
        self.prefix = prefix
        self._client = aioredis.Redis.from_url(url)
        scripts = (_CREATE_GROUP, _DELAY, _PROMOTE, _CLAIM, _EXTEND, _SETTLE, _RELEASE)
        (
            self._create_group,
            self._delay,
            self._promote,
            self._claim,
            self._extend,
            self._settle,
            self._release,
        ) = (self._client.register_script(source) for source in scripts)
        self._queues: set[_Keys] = set()
        self._closed = False

    @classmethod
    def from_url(cls, url: str, **options: Any) -> RedisTransport:
        """Build from a ``redis://`` URL; ``options`` are the keyword arguments."""
        return cls(url, **options)

    def keys(self, queue: str) -> tuple[str, ...]:
        """Every Redis key ``queue`` uses: stream, delayed set and hash, leases, dead letters."""
        k = _Keys.of(self.prefix, queue)
        return (k.stream, k.delayed, k.delayed_msgs, k.leases, k.dlq)

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
    ) -> None:
        """XADD ``body`` to the queue's stream, or (with ``delay``) to its delayed set."""
        self._check_open()
        keys = _Keys.of(self.prefix, queue)
        fields = _fields(bytes(body), key, headers)
        ms = _ms(delay or 0.0)
        with self._errors(f"send to {keys.stream!r}"):
            if ms:
                args = [uuid.uuid4().hex, ms, *(item for pair in fields.items() for item in pair)]
                await self._delay(keys=[keys.delayed, keys.delayed_msgs], args=args)
            else:
                await self._client.xadd(keys.stream, fields)

    # -- receiving -------------------------------------------------------------
    async def receive(self, queue: str) -> AsyncIterator[RedisDelivery]:
        """New and timed-out deliveries from ``queue``, until the transport is closed."""
        self._check_open()
        keys = _Keys.of(self.prefix, queue)
        await self._join(keys)
        cursor = _Cursor()
        batch: deque[RedisDelivery] = deque()
        try:
            while not self._closed:
                try:
                    batch.extend(await self._poll(keys, cursor))
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

    async def _poll(self, keys: _Keys, cursor: _Cursor) -> list[RedisDelivery]:
        """Promote due delayed entries, claim timed-out ones, else read new ones."""
        with self._errors(f"receive from {keys.stream!r}"):
            wait = await self._promote(
                keys=[keys.stream, keys.delayed, keys.delayed_msgs], args=[self.count]
            )
            if time.monotonic() >= cursor.next_claim:
                claimed = await self._claim_idle(keys, cursor)
                if claimed:
                    return claimed
            return await self._read(keys, self._block_ms(int(wait), cursor))

    async def _claim_idle(self, keys: _Keys, cursor: _Cursor) -> list[RedisDelivery]:
        args: list[Any] = [self.group, self.consumer, _ms(self.visibility_timeout)]
        args += [cursor.start, self.count]
        start, entries = await self._claim(keys=[keys.stream, keys.leases], args=args)
        cursor.start = start
        if start == b"-":  # scanned to the end: rest a while before the next scan
            cursor.next_claim = time.monotonic() + min(self.visibility_timeout / 4, 1.0)
        return [RedisDelivery(self, keys, i, _pairs(f), int(n)) for i, f, n in entries]

    async def _read(self, keys: _Keys, block_ms: int | None) -> list[RedisDelivery]:
        reply: Any = await self._client.xreadgroup(
            self.group, self.consumer, {keys.stream: ">"}, count=self.count, block=block_ms
        )
        streams = reply.items() if isinstance(reply, dict) else (reply or ())
        return [
            RedisDelivery(self, keys, entry_id, _pairs(fields), 1)
            for _, entries in streams
            for entry_id, fields in entries
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


def _default_consumer() -> str:
    return f"{socket.gethostname()}-{os.getpid()}-{secrets.token_hex(3)}"


def _check_options(url: str, visibility_timeout: float, block_ms: int, count: int) -> None:
    if urlsplit(url).scheme.lower() not in ("redis", "rediss", "unix"):
        raise ConfigurationError(f"RedisTransport needs a redis:// URL, got {redact(url)!r}")
    if visibility_timeout <= 0:
        raise ConfigurationError(f"visibility_timeout must be positive, got {visibility_timeout}")
    if block_ms < 1:
        raise ConfigurationError(f"block_ms must be 1 or more, got {block_ms}")
    if count < 1:
        raise ConfigurationError(f"count must be 1 or more, got {count}")

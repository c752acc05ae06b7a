"""The concurrency slots and rate-limit buckets of :class:`~flowkit.stores.RedisStore`.

Slots: a sorted set per pool, ``{prefix}:slots:<limit id and key as JSON>``, of
holders scored by when their slot expires. Taking a slot is one Lua script (drop the
expired, count, add), so concurrent acquirers never pass the pool's size; the set
expires with its last slot. Buckets: a hash per bucket, ``{prefix}:bucket:<...>``,
of its tokens and when they were counted, refilled and taken from by one script."""

from __future__ import annotations

import json
import math
from typing import TYPE_CHECKING, Any

from .. import _clock as clock

if TYPE_CHECKING:
    from collections.abc import Callable, Sequence
    from contextlib import AbstractContextManager

# KEYS: the pool's set; ARGV: max, now, expires at, time to live (ms), the holders. How
# many of the first holders hold a slot.
_ACQUIRE = """
redis.call('zremrangebyscore', KEYS[1], '-inf', ARGV[2])
local taken = 0
for i = 5, #ARGV do
  if not redis.call('zscore', KEYS[1], ARGV[i])
     and redis.call('zcard', KEYS[1]) >= tonumber(ARGV[1]) then
    break
  end
  redis.call('zadd', KEYS[1], ARGV[3], ARGV[i])
  taken = taken + 1
end
if taken > 0 and redis.call('pttl', KEYS[1]) < tonumber(ARGV[4]) then
  redis.call('pexpire', KEYS[1], ARGV[4])
end
return taken
"""
# KEYS: the pool's set; ARGV: holder, expires at, time to live (ms)
_EXTEND = """
if not redis.call('zscore', KEYS[1], ARGV[1]) then return 0 end
redis.call('zadd', KEYS[1], ARGV[2], ARGV[1])
if redis.call('pttl', KEYS[1]) < tonumber(ARGV[3]) then
  redis.call('pexpire', KEYS[1], ARGV[3])
end
return 1
"""
# KEYS: the bucket's hash; ARGV: rate (tokens a second), capacity, now
_TAKE_TOKEN = """
local rate, cap, now = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
local tokens, updated = cap, now
local found = redis.call('hmget', KEYS[1], 'tokens', 'updated')
if found[1] then
  updated = tonumber(found[2])
  tokens = math.min(cap, tonumber(found[1]) + math.max(0, now - updated) * rate)
end
local wait = 0
if tokens >= 1 then tokens = tokens - 1 else wait = (1 - tokens) / rate end
redis.call('hset', KEYS[1], 'tokens', tostring(tokens), 'updated', tostring(math.max(now, updated)))
redis.call('pexpire', KEYS[1], math.ceil(cap / rate * 1000) + 60000)
return tostring(wait)
"""
# KEYS: the bucket's hash; ARGV: count, rate (tokens a second), capacity, now. The level
# before the take, which may leave it below zero (tokens owed).
_RESERVE_TOKENS = """
local count, rate, cap, now = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3]),
  tonumber(ARGV[4])
local tokens, updated = cap, now
local found = redis.call('hmget', KEYS[1], 'tokens', 'updated')
if found[1] then
  updated = tonumber(found[2])
  tokens = math.min(cap, tonumber(found[1]) + (now - updated) * rate)
end
local exact = '%.17g'  -- tostring keeps 14 digits: a tenth of a millisecond of a timestamp
redis.call('hset', KEYS[1], 'tokens', string.format(exact, tokens - count),
  'updated', string.format(exact, now))
redis.call('pexpire', KEYS[1], math.ceil((cap + count - tokens) / rate * 1000) + 60000)
return string.format(exact, tokens)
"""
_MARGIN_MS = 60_000  # the set outlives its latest slot by this much (clocks differ)


class RedisSlots:
    """The slot pools of one store: its redis-py client, prefix and error translation."""

    def __init__(
        self,
        client: Any,
        prefix: str,
        url: str,
        translate: Callable[[str, str], AbstractContextManager[None]],
    ) -> None:
        self._client = client
        self._prefix = prefix
        self._url = url
        self._translate = translate
        self._acquire = client.register_script(_ACQUIRE)
        self._extend = client.register_script(_EXTEND)
        self._take_token = client.register_script(_TAKE_TOKEN)
        self._reserve_tokens = client.register_script(_RESERVE_TOKENS)

    def _key(self, limit_id: str, key: str) -> str:
        return f"{self._prefix}:slots:{json.dumps([limit_id, key])}"

    def _bucket(self, limit_id: str, key: str) -> str:
        return f"{self._prefix}:bucket:{json.dumps([limit_id, key])}"

    async def acquire(
        self,
        limit_id: str,
        key: str,
        holders: Sequence[str],
        max: int,
        now: float,
        expires_at: float,
    ) -> int:
        """Slots for as many of the first ``holders`` as fit, by one script."""
        ttl = _ttl_ms(now, expires_at)
        with self._translate("acquire_slot", self._url):
            taken = await self._acquire(
                keys=[self._key(limit_id, key)],
                args=[max, repr(now), repr(expires_at), ttl, *holders],
            )
        return int(taken)

    async def extend(self, limit_id: str, key: str, holder: str, expires_at: float) -> bool:
        with self._translate("extend_slot", self._url):
            extended = await self._extend(
                keys=[self._key(limit_id, key)],
                args=[holder, repr(expires_at), _ttl_ms(clock.now(), expires_at)],
            )
        return bool(extended)

    async def take_token(
        self, limit_id: str, key: str, rate: float, capacity: float, now: float
    ) -> float:
        """A token from the bucket (a hash: tokens, updated), refilled and taken by one
        script; 0.0 or the seconds until the next token."""
        with self._translate("take_token", self._url):
            wait = await self._take_token(
                keys=[self._bucket(limit_id, key)], args=[repr(rate), repr(capacity), repr(now)]
            )
        return float(wait)

    async def reserve_tokens(
        self, limit_id: str, key: str, count: int, rate: float, capacity: float, now: float
    ) -> float:
        """``count`` tokens from the bucket, taken by one script (owed if it has fewer);
        the bucket's level before."""
        with self._translate("reserve_tokens", self._url):
            before = await self._reserve_tokens(
                keys=[self._bucket(limit_id, key)],
                args=[count, repr(rate), repr(capacity), repr(now)],
            )
        return float(before)

    async def release(self, limit_id: str, key: str, holders: Sequence[str]) -> None:
        if holders:
            with self._translate("release_slots", self._url):
                await self._client.zrem(self._key(limit_id, key), *holders)

    async def holders(self, limit_id: str, key: str) -> list[str]:
        """The pool's holders by score (expiry), then holder (a sorted set's order)."""
        with self._translate("slot_holders", self._url):
            found = await self._client.zrange(self._key(limit_id, key), 0, -1)
        return [_text(holder) for holder in found]

    async def pools(self, prefix: str) -> list[tuple[str, str]]:
        """The pools whose limit id starts with ``prefix``: a SCAN of the pools' keys."""
        head = f"{self._prefix}:slots:"
        pattern = _glob_escape(head + json.dumps([prefix])[:-2]) + "*"
        found: set[tuple[str, str]] = set()
        with self._translate("slot_pools", self._url):
            async for name in self._client.scan_iter(match=pattern, count=500):
                limit_id, key = json.loads(_text(name)[len(head) :])
                if limit_id.startswith(prefix):
                    found.add((limit_id, key))
        return sorted(found)


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


def _glob_escape(text: str) -> str:
    """``text`` matched literally by a SCAN pattern."""
    return "".join("\\" + c if c in "*?[]\\" else c for c in text)


def _ttl_ms(now: float, expires_at: float) -> int:
    return max(1, math.ceil((expires_at - now) * 1000)) + _MARGIN_MS

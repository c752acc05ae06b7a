"""``RedisTransport`` in the transport conformance suite.

Talks to the real Redis on loopback (``FLOWKIT_TEST_REDIS`` overrides the URL).
Each test gets a unique key prefix, and every key under it is deleted after.
Every ``make()`` is a new transport with its own connection pool and consumer
name, as a separate worker process would be. redis-py's asyncio client is
asyncio-only, so this factory runs on asyncio alone (its tests are marked
``asyncio_only``). The visibility timeout is short (1 s) so redelivery tests
are quick, and reads block for at most 200 ms so delays are honoured promptly.

Ordering: entries of priority 1-9 (their own stream) before those of 0; a
stream is FIFO, so one consumer sees entries in ``send`` order
until something is redelivered. A nacked, delayed or timed-out entry re-enters
at the end of the stream (a timed-out one is claimed by whichever receiver
scans the pending list first, ahead of new entries). Competing consumers each
read their own batch of up to ``count`` entries, so they interleave; ``key``
implies no ordering.
"""

from __future__ import annotations

import os
import uuid
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING

from flowkit.transports.redis._transport import RedisTransport

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Callable
    from pathlib import Path

REDIS_URL = os.environ.get("FLOWKIT_TEST_REDIS", "redis://127.0.0.1:6379/0")


class RedisFactory:
    """A unique key prefix per test; a new transport (and consumer) per ``make()``."""

    name = "redis"
    priorities = True  # send(priority=) orders the queue
    priority_levels = 2  # 1-9 (one stream) before 0
    backends = ("asyncio",)
    visibility_timeout = 1.0

    @asynccontextmanager
    async def open(self, tmp_path: Path) -> AsyncIterator[Callable[[], RedisTransport]]:
        prefix = f"fk_test_{uuid.uuid4().hex[:12]}"
        made: list[RedisTransport] = []

        def make() -> RedisTransport:
            transport = RedisTransport(
                REDIS_URL, prefix=prefix, visibility_timeout=self.visibility_timeout, block_ms=200
            )
            made.append(transport)
            return transport

        try:
            yield make
        finally:
            for transport in made:
                await transport.close()
            await delete_keys(f"{prefix}:*")

    async def dead_letters(self, transport: RedisTransport, queue: str) -> list[tuple[bytes, str]]:
        """The ``(body, reason)`` of every entry in the queue's dead-letter stream."""
        import redis.asyncio

        client = redis.asyncio.Redis.from_url(REDIS_URL)
        try:
            entries = await client.xrange(transport.keys(queue)[-1])
        finally:
            await client.aclose()
        return [(fields[b"body"], fields[b"reason"].decode()) for _, fields in entries]


async def delete_keys(pattern: str) -> None:
    import redis.asyncio

    client = redis.asyncio.Redis.from_url(REDIS_URL)
    try:
        keys = [key async for key in client.scan_iter(pattern)]
        if keys:
            await client.delete(*keys)
    finally:
        await client.aclose()


FACTORY = RedisFactory()

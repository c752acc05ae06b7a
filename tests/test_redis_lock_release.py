"""A run lock a RedisStore could not release (the server went away as it tried) is released
by the store's next call that reaches the server, not only by its next transaction.

A worker that takes no new work after a Redis restart still reads timers and leases every
poll interval; if only its next transaction released the lock, every other worker would
wait ``lock_timeout`` for the run. Real Redis on loopback (redis-py's asyncio client: the
test runs on asyncio); the release fails once, as it does while the server is away.
"""

from __future__ import annotations

import os
import uuid
from typing import Any

import anyio
import pytest
import redis.asyncio
import redis.exceptions

from flowkit.core._state import RunState
from flowkit.stores import RedisStore

pytestmark = pytest.mark.anyio

REDIS_URL = os.environ.get("FLOWKIT_TEST_REDIS", "redis://127.0.0.1:6379/0")
HOUR = 3600.0


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


class ReleaseFailsOnce:
    """Stands in for the store's release script: the first call fails as a dropped
    connection would, later ones run the real script."""

    def __init__(self, script: Any) -> None:
        self.script = script
        self.failed = False

    async def __call__(self, **kwargs: Any) -> Any:
        if not self.failed:
            self.failed = True
            raise redis.exceptions.ConnectionError("Connection closed by server.")
        return await self.script(**kwargs)


@pytest.mark.parametrize("call", ["due_timers", "expired_leases", "info", "load"])
async def test_the_next_call_that_reaches_redis_releases_the_lock(call: str) -> None:
    prefix = f"fk_lock_{uuid.uuid4().hex[:10]}"
    store = RedisStore(REDIS_URL, prefix=prefix, lock_timeout=HOUR)
    client = redis.asyncio.Redis.from_url(REDIS_URL)
    try:
        await store.create_run("r", RunState("r"), blueprint_id="b", digest="d")
        store._release = ReleaseFailsOnce(store._release)  # type: ignore[method-assign]
        async with store.transaction("r"):
            pass  # its lock's release fails as it ends
        lock = store._keys("r")[2]
        assert await client.exists(lock)  # held, for an hour if nobody releases it
        if call in ("info", "load"):
            await getattr(store, call)("r")
        else:
            await getattr(store, call)(0.0)
        assert not await client.exists(lock)
        with anyio.fail_after(10):  # another process takes the run's lock at once
            other = RedisStore(REDIS_URL, prefix=prefix, lock_timeout=HOUR)
            async with other.transaction("r"):
                pass
            await other.close()
    finally:
        await store.close()
        keys = [key async for key in client.scan_iter(f"{prefix}:*")]
        if keys:
            await client.delete(*keys)
        await client.aclose()

"""Redis as transport and store under faults: restarted mid-load, down for a while, workers killed.

Three ``python -m flowkit.worker`` processes serve ``flows_faults`` with messages
(streams) and run state in one private ``redis-server`` with an append-only
file, so a restart keeps the data as a production Redis would. Node executions
are recorded in the shared PostgreSQL (``pg_schema``).

* The server is restarted (a clean stop, started again at once) mid-load.
* The server is stopped for ``OUTAGE`` seconds mid-load, then started: the
  workers cannot receive, commit or extend meanwhile, then resume by themselves.
* Worker processes are SIGKILLed one after another, a replacement after each:
  their deliveries are claimed by the others once idle past the visibility timeout.
"""

from __future__ import annotations

import uuid
from typing import TYPE_CHECKING, Any

import pytest

from .load import Load, show
from .servers import PrivateRedis, private_redis

if TYPE_CHECKING:
    from collections.abc import Iterator

pytestmark = pytest.mark.anyio

LEASE = 3.0  # seconds: the visibility timeout and the dispatch lease
OUTAGE = 4.0  # seconds the server stays stopped


@pytest.fixture(scope="module")
def redis_module() -> Iterator[PrivateRedis]:
    with private_redis() as server:
        yield server


@pytest.fixture
def redis_server(redis_module: PrivateRedis) -> PrivateRedis:
    """The module's server, started again if an earlier test left it stopped."""
    if not redis_module.running:
        redis_module.start()
    return redis_module


def load(worker_pool: Any, redis: PrivateRedis, pg_schema: str) -> Load:
    tag = f"fk{uuid.uuid4().hex[:10]}"
    return Load(
        worker_pool,
        transport_url=f"{redis.url}?prefix={tag}q&group={tag}&visibility_timeout={LEASE}",
        store_url=f"{redis.url}?prefix={tag}s",
        schema=pg_schema,
        lease=LEASE,
        tag=tag,
    )


@pytest.mark.timeout(180)
async def test_runs_complete_when_redis_restarts_mid_load(
    redis_server: PrivateRedis, pg_schema: str, worker_pool: Any
) -> None:
    async with load(worker_pool, redis_server, pg_schema) as faulted:
        await faulted.outage(redis_server.stop, redis_server.start, 0.0)
        report = await faulted.check()
    show("redis restarted", report)


@pytest.mark.timeout(180)
async def test_runs_complete_when_redis_is_down_for_a_while(
    redis_server: PrivateRedis, pg_schema: str, worker_pool: Any
) -> None:
    async with load(worker_pool, redis_server, pg_schema) as faulted:
        await faulted.outage(redis_server.stop, redis_server.start, OUTAGE)
        report = await faulted.check()
    show(f"redis down {OUTAGE:g}s", report)
    assert report["paused"] >= 1, "no worker logged that it paused"


@pytest.mark.timeout(180)
async def test_runs_complete_while_workers_are_killed_repeatedly(
    redis_server: PrivateRedis, pg_schema: str, worker_pool: Any
) -> None:
    async with load(worker_pool, redis_server, pg_schema) as faulted:
        await faulted.kill_workers()
        report = await faulted.check()
    show("redis, worker kills", report)

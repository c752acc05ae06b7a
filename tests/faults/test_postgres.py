"""PostgreSQL store under faults: the server stopped mid-load and started again, workers killed.

Three ``python -m flowkit.worker`` processes serve ``flows_faults`` with run state
in a private PostgreSQL cluster (its own port and data directory) and messages on
a private Redis: the test may stop the store without touching anyone else's
server. Node executions are recorded in the shared PostgreSQL (``pg_schema``).

* The store is stopped for ``OUTAGE`` seconds while runs are in flight: the
  workers take no new deliveries meanwhile and hold the results of the nodes in
  flight, then resume by themselves once it is back.
* Worker processes are SIGKILLed one after another, a replacement after each.
"""

from __future__ import annotations

import uuid
from typing import TYPE_CHECKING, Any

import pytest

from .load import Load, show
from .servers import PrivatePostgres, PrivateRedis, private_postgres, private_redis

if TYPE_CHECKING:
    from collections.abc import Iterator

pytestmark = pytest.mark.anyio

LEASE = 3.0  # seconds: a killed worker's dispatches are republished after this
OUTAGE = 5.0  # seconds the store stays stopped


@pytest.fixture(scope="module")
def postgres() -> Iterator[PrivatePostgres]:
    with private_postgres() as server:
        yield server


@pytest.fixture(scope="module")
def redis_server() -> Iterator[PrivateRedis]:
    with private_redis() as server:
        yield server


@pytest.fixture
def running_postgres(postgres: PrivatePostgres) -> PrivatePostgres:
    """The module's cluster, started again if an earlier test left it stopped."""
    if not postgres.running:
        postgres.start()
    return postgres


def load(worker_pool: Any, postgres: PrivatePostgres, redis: PrivateRedis, pg_schema: str) -> Load:
    tag = f"fk{uuid.uuid4().hex[:10]}"
    postgres.create_schema(tag)
    return Load(
        worker_pool,
        transport_url=f"{redis.url}?prefix={tag}&group={tag}&visibility_timeout={LEASE}",
        store_url=f"{postgres.dsn}?schema={tag}",
        schema=pg_schema,
        lease=LEASE,
        tag=tag,
    )


@pytest.mark.timeout(180)
async def test_runs_complete_when_the_store_is_stopped_mid_load(
    running_postgres: PrivatePostgres, redis_server: PrivateRedis, pg_schema: str, worker_pool: Any
) -> None:
    async with load(worker_pool, running_postgres, redis_server, pg_schema) as faulted:
        await faulted.outage(running_postgres.stop, running_postgres.start, OUTAGE)
        report = await faulted.check()
    show(f"postgres store stopped {OUTAGE:g}s", report)
    assert report["paused"] >= 1, "no worker logged that it paused its intake"


@pytest.mark.timeout(180)
async def test_runs_complete_while_workers_are_killed_repeatedly(
    running_postgres: PrivatePostgres, redis_server: PrivateRedis, pg_schema: str, worker_pool: Any
) -> None:
    async with load(worker_pool, running_postgres, redis_server, pg_schema) as faulted:
        await faulted.kill_workers()
        report = await faulted.check()
    show("postgres store, worker kills", report)

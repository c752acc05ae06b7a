"""RabbitMQ under faults, with run state in PostgreSQL: workers killed, the broker restarted.

Three ``python -m flowkit.worker`` processes serve ``flows_faults`` on a private
RabbitMQ node (its own name, ports, data and logs; about 15 s to boot here),
with run state and node executions in a schema of the shared PostgreSQL.

* Worker processes are SIGKILLed one after another, a replacement after each:
  the broker requeues what a dead connection held.
* The node is stopped cleanly and started again mid-load: its durable queues
  and persistent messages survive; the workers reconnect by themselves.
"""

from __future__ import annotations

import uuid
from typing import TYPE_CHECKING, Any

import pytest

from .flows_faults import DSN
from .load import Load, show
from .servers import PrivateRabbitMQ, private_rabbitmq

if TYPE_CHECKING:
    from collections.abc import Iterator

pytestmark = pytest.mark.anyio

LEASE = 3.0  # seconds: a dispatch whose message was lost is republished after this


@pytest.fixture(scope="module")
def rabbitmq_module() -> Iterator[PrivateRabbitMQ]:
    with private_rabbitmq() as server:
        yield server


@pytest.fixture
def rabbitmq(rabbitmq_module: PrivateRabbitMQ) -> PrivateRabbitMQ:
    """The module's node, started again if an earlier test left it stopped."""
    if not rabbitmq_module.running:
        rabbitmq_module.start()
    return rabbitmq_module


def load(worker_pool: Any, rabbitmq: PrivateRabbitMQ, pg_schema: str) -> Load:
    tag = f"fk{uuid.uuid4().hex[:10]}"
    return Load(
        worker_pool,
        transport_url=f"{rabbitmq.url}?queue_prefix={tag}",
        store_url=f"{DSN}?schema={pg_schema}",
        schema=pg_schema,
        lease=LEASE,
        tag=tag,
    )


@pytest.mark.timeout(180)
async def test_runs_complete_while_workers_are_killed_repeatedly(
    rabbitmq: PrivateRabbitMQ, pg_schema: str, worker_pool: Any
) -> None:
    async with load(worker_pool, rabbitmq, pg_schema) as faulted:
        await faulted.kill_workers()
        report = await faulted.check()
    show("rabbitmq + postgres, worker kills", report)


@pytest.mark.timeout(240)
async def test_runs_complete_when_the_broker_restarts_mid_load(
    rabbitmq: PrivateRabbitMQ, pg_schema: str, worker_pool: Any
) -> None:
    async with load(worker_pool, rabbitmq, pg_schema) as faulted:
        await faulted.outage(rabbitmq.stop, rabbitmq.start, 0.0)
        report = await faulted.check()
    show("rabbitmq restarted", report)

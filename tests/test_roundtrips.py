"""The network round trips of one node step on a worker, counted on real servers.

A worker handles a delivery in one task: the round trips made there (and in the
tasks it starts) are the step's, counted by :class:`tests.roundtrips.RoundTrips`
at the client libraries (redis-py, psycopg, aiormq). The receive loop's fetches
and the background loops (timers, leases) are not part of a step.

The pinned numbers are those of the chain's steps after the first on a worker
that holds the run: the first step of a run on a worker loads it once more.
``python -m tests.test_roundtrips`` prints every count (both set-ups, one and
two workers, chain and fan).

Talks to Redis, PostgreSQL and RabbitMQ on loopback (asyncio only: their
clients are), each test in a key prefix, schema and queue prefix of its own.
"""

from __future__ import annotations

import os
import uuid
from collections import Counter, defaultdict
from typing import TYPE_CHECKING, Any

import anyio
import pytest

import flowkit
from flowkit import RunStatus
from flowkit.worker._messages import NodeMessage

from roundtrips import RoundTrips

if TYPE_CHECKING:
    from flowkit.transports._protocol import Delivery

PG_DSN = os.environ.get("FLOWKIT_TEST_POSTGRES", "postgresql://postgres@127.0.0.1:5432/test")
REDIS_URL = os.environ.get("FLOWKIT_TEST_REDIS", "redis://127.0.0.1:6379/0")
AMQP_URL = os.environ.get("FLOWKIT_TEST_AMQP", "amqp://guest:guest@127.0.0.1:5672/")
CHAIN = 6
FAN = 8
BOUND = 60.0

pytestmark = [pytest.mark.anyio, pytest.mark.asyncio_only]


async def inc(x: int = 0) -> int:
    return (x or 0) + 1


async def done(_: Any = None) -> str:
    return "done"


chain = flowkit.Flow("roundtrips-chain")
for _i in range(CHAIN):
    chain.node(f"n{_i}", inc)
for _i in range(CHAIN - 1):
    chain.edge(f"n{_i}", f"n{_i + 1}")

fan = flowkit.Flow("roundtrips-fan")
fan.node("src", inc)
for _i in range(FAN):
    fan.node(f"w{_i}", inc).edge("src", f"w{_i}")
fan.node("sink", done, join="all")
for _i in range(FAN):
    fan.edge(f"w{_i}", "sink")


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


class CountedWorker(flowkit.Worker):
    """A worker whose deliveries are handled each under a label: its node's id."""

    counter: RoundTrips

    async def handle(self, delivery: Delivery) -> None:
        node = NodeMessage.decode(delivery.body).node_id
        with self.counter.counting(node):
            await super().handle(delivery)


class Servers:
    """Stores and transports of one set-up, under names of their own; removed after."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self.name = f"fk_rt_{uuid.uuid4().hex[:10]}"
        self.things: list[Any] = []

    def store(self, counter: RoundTrips) -> Any:
        if self.kind == "redis":
            from flowkit.stores import RedisStore

            store: Any = RedisStore(REDIS_URL, prefix=self.name)
            counter.watch_redis(store, "store")
        else:
            from flowkit.stores import PostgresStore

            store = PostgresStore(PG_DSN, schema=self.name)
        self.things.append(store)
        return store

    def transport(self, counter: RoundTrips) -> Any:
        if self.kind == "redis":
            from flowkit.transports.redis._transport import RedisTransport

            transport: Any = RedisTransport(REDIS_URL, prefix=f"{self.name}q", block_ms=100)
            counter.watch_redis(transport, "broker")
        else:
            from flowkit.transports.rabbitmq._transport import RabbitMQTransport

            transport = RabbitMQTransport(AMQP_URL, queue_prefix=self.name)
        self.things.append(transport)
        return transport

    async def drop(self) -> None:
        for thing in self.things:
            await thing.close()
        if self.kind == "redis":
            import redis.asyncio

            client = redis.asyncio.Redis.from_url(REDIS_URL)
            keys = [key async for key in client.scan_iter(f"{self.name}*")]
            if keys:
                await client.delete(*keys)
            await client.aclose()
            return
        import psycopg
        from psycopg import sql

        async with await psycopg.AsyncConnection.connect(PG_DSN, autocommit=True) as conn:
            drop = sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE")
            await conn.execute(drop.format(sql.Identifier(self.name)))
        await _delete_queues(self.name)


async def _delete_queues(prefix: str) -> None:
    import aio_pika

    connection = await aio_pika.connect(AMQP_URL)
    async with connection:
        channel = await connection.channel()
        for name in (f"{prefix}.flowkit", f"{prefix}.flowkit.dlq"):
            await channel.queue_delete(name)


async def measure(kind: str, flow: Any, *, workers: int = 1) -> tuple[RoundTrips, Counter[str]]:
    """Run ``flow`` once on ``workers`` workers; the round trips, and the deliveries
    handled, by node id."""
    servers = Servers(kind)
    handled: Counter[str] = Counter()
    try:
        with RoundTrips() as counter:
            pool = []
            for _ in range(workers):
                worker = CountedWorker(
                    [chain, fan], servers.transport(counter), servers.store(counter)
                )
                worker.counter = counter
                pool.append(worker)
            client = flowkit.Client(
                servers.transport(counter), servers.store(counter), flows=[chain, fan]
            )
            with anyio.fail_after(BOUND):
                async with anyio.create_task_group() as tg:
                    for worker in pool:
                        await tg.start(worker.run)
                    result = await client.run(flow)
                    for worker in pool:
                        worker.stop()
            assert result.status == RunStatus.COMPLETED
            for label in counter.counts:
                handled[label] = 1
    finally:
        await servers.drop()
    return counter, handled


def per_step(counter: RoundTrips, labels: list[str]) -> dict[str, int]:
    return {label: counter.total(label) for label in labels}


@pytest.mark.parametrize("kind", ["redis", "rabbitmq-postgres"])
async def test_a_chain_step_after_the_first(kind: str) -> None:
    """Store: one commit. Broker: the next node's publish and this one's ack."""
    counter, _ = await measure("redis" if kind == "redis" else "postgres", chain)
    steps = [f"n{i}" for i in range(1, CHAIN - 1)]  # the last one finishes the run
    expected = {"redis": {"store": 1, "broker": 2}, "rabbitmq-postgres": {"store": 1, "broker": 1}}
    for step in steps:
        by_side = {side: counter.total(step, side) for side in ("store", "broker")}
        assert by_side == expected[kind], (step, dict(counter.counts[step]))


def report() -> None:
    """Print every count: chain and fan, one and two workers, both set-ups."""

    async def main() -> None:
        for kind in ("redis", "postgres"):
            for workers in (1, 2):
                for flow, first, middle in ((chain, "n0", "n2"), (fan, "src", "w3")):
                    counter, _ = await measure(kind, flow, workers=workers)
                    print(f"== {kind} x{workers} {flow.id}")
                    sums: defaultdict[tuple[str, str], int] = defaultdict(int)
                    for label, counts in sorted(counter.counts.items()):
                        if label == "other":
                            continue
                        print(f"  {label}: {sum(counts.values())} {dict(counts)}")
                        for key, n in counts.items():
                            sums[key] += n
                    for label, frames in sorted(counter.frames.items()):
                        print(f"  frames {label}: {dict(frames)}")
                    print(f"  other: {dict(counter.counts['other'])}")

    anyio.run(main)


if __name__ == "__main__":
    report()

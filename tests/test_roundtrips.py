"""The network round trips of one node step on a worker, counted on real servers.

A worker handles a delivery in one task: the round trips made there (and in the
tasks it starts) are the step's, counted by :class:`tests.roundtrips.RoundTrips`
at the client libraries (redis-py, psycopg, aiormq). The receive loop's fetches
and the background loops (timers, leases) are not part of a step.

The pinned numbers are those of the chain's steps after the first on a worker
that holds the run: the first step of a run on a worker loads it once more.
A fan's completions that wait for the run's turn on one worker share one commit.
``python -m tests.test_roundtrips`` prints every count (both set-ups, one and
two workers, chain and fan).

Talks to Redis, PostgreSQL and RabbitMQ on loopback (asyncio only: their
clients are), each test in a key prefix, schema and queue prefix of its own.
"""

from __future__ import annotations

import os
import uuid
from collections import Counter
from typing import TYPE_CHECKING, Any

import anyio
import anyio.lowlevel
import pytest
from roundtrips import RoundTrips

import flowkit
from flowkit import RunStatus
from flowkit.core import _protocol as p
from flowkit.transports import MemoryTransport
from flowkit.worker._messages import NodeMessage
from flowkit.worker._shell import Shell

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


def dispatches(shell: Shell, run_id: str) -> list[str]:
    replica = shell._replicas[run_id]
    return list(replica.state.sections["dispatches"])


@pytest.mark.parametrize("kind", ["redis", "rabbitmq-postgres"])
async def test_a_chain_step_after_the_first(kind: str) -> None:
    """Store: one commit. Broker: one call, the next node's publish (RabbitMQ: its
    confirm; the ack is a frame that waits for no answer) or, on Redis, that publish
    and this delivery's ack in one script."""
    counter, _ = await measure("redis" if kind == "redis" else "postgres", chain)
    for step in [f"n{i}" for i in range(1, CHAIN - 1)]:  # the last one finishes the run
        by_side = {side: counter.total(step, side) for side in ("store", "broker")}
        assert by_side == {"store": 1, "broker": 1}, (step, dict(counter.counts[step]))
        if kind == "redis":
            assert counter.counts[step][("broker", "_send_then_settle")] == 1
        else:
            assert counter.frames[step] == Counter({("broker", "basic_ack"): 1})


async def test_a_fan_source_publishes_in_one_call() -> None:
    """Redis: a transition's publishes go out in one script, with the ack."""
    counter, _ = await measure("redis", fan)
    assert counter.counts["src"][("broker", "_send_then_settle")] == 1
    assert counter.total("src", "broker") == 1


@pytest.mark.parametrize("kind", ["redis", "postgres"])
async def test_a_stale_copy_catches_up_by_its_deltas(kind: str) -> None:
    """Another process stepped the run: a fresh copy is one read of what it missed (not
    the run loaded whole), and the next step commits at once."""
    servers = Servers(kind)
    try:
        with RoundTrips() as counter:
            store = servers.store(counter)
            mine, theirs = (
                Shell(MemoryTransport(), store, queue="q", lease=30.0, flows=[chain])
                for _ in range(2)
            )
            run_id = await mine.start(mine.target_for(chain), None, {})
            await theirs.replica(run_id)
            (first,) = dispatches(theirs, run_id)
            await theirs.step(run_id, p.NodeCompleted(first, 1))
            with counter.counting("catch-up"):
                replica = await mine.replica(run_id, fresh=True)
            (second,) = dispatches(mine, run_id)
            with counter.counting("step"):
                await mine.step(run_id, p.NodeCompleted(second, 2))
        assert replica is mine._replicas[run_id]  # the same copy, moved on
        assert counter.total("catch-up") == 1
        assert counter.total("step") == 1
        assert store.stats.catch_ups == 1
        assert store.stats.conflicts == 0
        if kind == "redis":
            assert counter.counts["catch-up"] == Counter({("store", "_changes"): 1})
    finally:
        await servers.drop()


@pytest.mark.parametrize("kind", ["redis", "postgres"])
async def test_a_conflict_is_tried_again_without_the_lock(kind: str) -> None:
    """Two processes complete nodes of one fan from copies of the same version: the
    second's attempt conflicts, reloads the run and commits on its second try (three
    round trips, no lock); its next step catches up before it attempts (two)."""
    servers = Servers(kind)
    try:
        with RoundTrips() as counter:
            store = servers.store(counter)
            mine, theirs = (
                Shell(MemoryTransport(), store, queue="q", lease=30.0, flows=[fan])
                for _ in range(2)
            )
            run_id = await mine.start(mine.target_for(fan), None, {})
            (src,) = dispatches(mine, run_id)
            await mine.step(run_id, p.NodeCompleted(src, 1))
            await theirs.replica(run_id)
            workers = dispatches(mine, run_id)
            await theirs.step(run_id, p.NodeCompleted(workers[0], 2))
            with counter.counting("conflict"):
                await mine.step(run_id, p.NodeCompleted(workers[1], 2))
            await theirs.step(run_id, p.NodeCompleted(workers[2], 2))
            with counter.counting("contended"):
                await mine.step(run_id, p.NodeCompleted(workers[3], 2))
        assert store.stats.conflicts == 2  # theirs conflicted too, on workers[2]
        assert counter.total("conflict") == 3  # attempt, reload, attempt
        assert counter.total("contended") == 2  # catch-up, attempt
        if kind == "redis":
            assert counter.counts["conflict"] == Counter(
                {("store", "_commit"): 2, ("store", "pipeline[HMGET+HGETALL]"): 1}
            )
            assert counter.counts["contended"] == Counter(
                {("store", "_changes"): 1, ("store", "_commit"): 1}
            )
        replica = await mine.replica(run_id, fresh=True)
        done = replica.state.sections["dispatches"]
        assert not {workers[0], workers[1], workers[2], workers[3]} & set(done)
    finally:
        await servers.drop()


@pytest.mark.parametrize("kind", ["redis", "postgres"])
async def test_completions_waiting_for_their_turn_share_one_commit(kind: str) -> None:
    """A fan's completions on one process that wait for the run's turn behind another
    step are committed together: one store round trip for all of them."""
    servers = Servers(kind)
    try:
        with RoundTrips() as counter:
            store = servers.store(counter)
            shell = Shell(MemoryTransport(), store, queue="q", lease=30.0, flows=[fan])
            run_id = await shell.start(shell.target_for(fan), None, {})
            (src,) = dispatches(shell, run_id)
            await shell.step(run_id, p.NodeCompleted(src, 1))
            workers = dispatches(shell, run_id)
            with anyio.fail_after(BOUND), counter.counting("together"):
                async with (
                    anyio.create_task_group() as tg,
                    shell._one_step_at_a_time(run_id) as turns,
                ):
                    for dispatch_id in workers:
                        tg.start_soon(shell.step, run_id, p.NodeCompleted(dispatch_id, 2))
                    while len(turns.waiting) < FAN:
                        await anyio.lowlevel.checkpoint()
        assert counter.total("together", "store") == 1, dict(counter.counts["together"])
        if kind == "redis":
            assert counter.counts["together"] == Counter({("store", "_commit"): 1})
        assert [
            d["node"] for d in shell._replicas[run_id].state.sections["dispatches"].values()
        ] == ["sink"]
    finally:
        await servers.drop()


def report() -> None:
    """Print every count: chain and fan, one and two workers, both set-ups."""

    async def main() -> None:
        for kind in ("redis", "postgres"):
            for workers in (1, 2):
                for flow in (chain, fan):
                    counter, _ = await measure(kind, flow, workers=workers)
                    print(f"== {kind} x{workers} {flow.id}")
                    for label, counts in sorted(counter.counts.items()):
                        print(f"  {label}: {sum(counts.values())} {dict(counts)}")
                    for label, frames in sorted(counter.frames.items()):
                        print(f"  frames {label}: {dict(frames)}")

    anyio.run(main)


if __name__ == "__main__":
    report()

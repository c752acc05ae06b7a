"""Kafka (tansu) under faults: the broker killed and restarted empty, workers killed.

Three ``python -m flowkit.worker`` processes serve ``flows_faults`` (a 5-node
chain and a 10-way gather) on a :class:`~flowkit.transports.KafkaTransport` with
run state in a PostgreSQL schema of the test's own; this process starts the runs
with a :class:`~flowkit.Client` and waits, bounded, until every one completed.

* The broker is SIGKILLed while runs are in flight and started again on the
  same port. tansu keeps everything in memory, so the new broker has no topics,
  records, groups or committed offsets: the workers must rejoin, create the
  topics again and carry on; the dispatches whose messages died with the broker
  are republished by the workers' reconcilers once their leases run out.
* Worker processes are SIGKILLed one after another while runs are in flight, a
  replacement started after each kill: the partitions of a dead member must move
  to live ones and the backlog drain.

Each test checks every run's output and that every node activation ran under
one idempotency key (re-executions are printed, not asserted: a kill makes them).
"""

from __future__ import annotations

import contextlib
import time
import uuid
from collections import defaultdict
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Any

import anyio
import pytest
from conformance.tansu import SESSION_TIMEOUT

from flowkit import Client, RunStatus
from flowkit.stores import from_url as store_from_url
from flowkit.transports import KafkaTransport
from flowkit.transports import from_url as transport_from_url

from .flows_faults import (
    DSN,
    FLOWS,
    SCHEMA_ENV,
    activations,
    expected_output,
    read_executions,
)

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Callable

    from .broker import RestartableTansu
    from .workers import WorkerPool, WorkerProcess

pytestmark = pytest.mark.anyio

WORKERS = 3
CONCURRENCY = 8
LEASE = 3.0  # seconds: the reconciler republishes a dispatch whose message was lost after this
PARTITIONS = 8  # not tansu's default for a topic it makes on its own (4)
RUNS_PER_SHAPE = 15
QUEUE = "faults"
START_TIMEOUT = 30.0  # a worker process logs "worker started" within this
COMPLETION_TIMEOUT = 90.0  # every run completes within this after the last fault
PROGRESS_TIMEOUT = 60.0  # the load makes progress (node executions) within this
OUTAGE = 2.0  # seconds the broker stays dead before it is started again
KILLS = 3
EXECUTIONS_BETWEEN_KILLS = 25
ACKS = 64  # acked by HANDLERS handlers in the commit test
HANDLERS = 16
POLL = 0.2  # seconds between looks at the store or the executions table
STORE_POOL = 3  # connections per process: the shared PostgreSQL server has 100 in all


@asynccontextmanager
async def connect(transport_url: str, store_url: str) -> AsyncIterator[Client]:
    transport = transport_from_url(transport_url)
    store = store_from_url(store_url)
    try:
        yield Client(transport, store, queue=QUEUE, flows=list(FLOWS.values()), lease=LEASE)
    finally:
        await transport.close()
        await store.close()


def urls(broker: RestartableTansu, schema: str) -> tuple[str, str]:
    namespace = f"fk{uuid.uuid4().hex[:10]}"
    transport = (
        f"kafka://{broker.address}?group={namespace}&topic_prefix={namespace}"
        f"&partitions={PARTITIONS}&visibility_timeout={LEASE}&session_timeout={SESSION_TIMEOUT}"
    )
    return transport, f"{DSN}?schema={schema}&pool_size={STORE_POOL}"


async def start_pool(
    worker_pool: Callable[[list[str], dict[str, str]], WorkerPool],
    transport_url: str,
    store_url: str,
    schema: str,
) -> WorkerPool:
    args = [
        "--app", "faults.flows_faults",
        "--transport", transport_url,
        "--store", store_url,
        "--queue", QUEUE,
        "--concurrency", str(CONCURRENCY),
        "--lease", str(LEASE),
        "--log-format", "json",
    ]  # fmt: skip
    pool = worker_pool(args, {SCHEMA_ENV: schema})
    for worker in [pool.start() for _ in range(WORKERS)]:
        await worker.started(START_TIMEOUT)
    return pool


def run_ids(tag: str) -> dict[str, tuple[str, int]]:
    """``run_id -> (shape, n)``: half chains, half fans."""
    return {
        f"{tag}-{shape}-{i:02d}": (shape, i + 1) for shape in FLOWS for i in range(RUNS_PER_SHAPE)
    }


async def start_runs(client: Client, runs: dict[str, tuple[str, int]]) -> None:
    for run_id, (shape, n) in runs.items():
        await client.start(FLOWS[shape], run_id=run_id, n=n)


async def executions(schema: str) -> list[tuple[str, str, str, str]]:
    return await anyio.to_thread.run_sync(read_executions, schema)


async def wait_for_executions(schema: str, count: int) -> list[tuple[str, str, str, str]]:
    """The executions once there are at least ``count`` (bounded)."""
    with anyio.fail_after(PROGRESS_TIMEOUT):
        while True:  # rows another process writes: nothing to await but the table
            found = await executions(schema)
            if len(found) >= count:
                return found
            await anyio.sleep(POLL)


async def wait_completed(client: Client, runs: dict[str, tuple[str, int]]) -> float:
    """Seconds until every run completed; fails naming the runs left after the bound."""
    started = time.monotonic()
    pending = set(runs)
    try:
        with anyio.fail_after(COMPLETION_TIMEOUT):
            while pending:
                for run_id in sorted(pending):
                    info = await client.store.info(run_id)
                    assert info is not None, f"run {run_id} vanished from the store"
                    assert info.status not in (RunStatus.FAILED, RunStatus.CANCELLED), (
                        f"run {run_id} {info.status}: {(await client.result(run_id)).error!r}"
                    )
                    if info.status == RunStatus.COMPLETED:
                        pending.discard(run_id)
                if pending:
                    await anyio.sleep(POLL)
    except TimeoutError:
        raise AssertionError(
            f"{len(pending)} of {len(runs)} runs not completed {COMPLETION_TIMEOUT}s after "
            f"the last fault: {sorted(pending)[:6]}"
        ) from None
    return time.monotonic() - started


async def check(client: Client, schema: str, runs: dict[str, tuple[str, int]]) -> dict[str, Any]:
    """Right outputs; every activation ran under one key. The counts, to print."""
    for run_id, (shape, n) in runs.items():
        result = await client.result(run_id)
        assert (RunStatus.COMPLETED, expected_output(shape, n)) == (result.status, result.output)
    rows = await executions(schema)
    keys: dict[tuple[str, str], set[str]] = defaultdict(set)
    for key, run_id, activation, _worker in rows:
        keys[(run_id, activation)].add(key)
    two_keys = {k: v for k, v in keys.items() if len(v) != 1}
    assert {} == two_keys, "a node activation ran under two different idempotency keys"
    for run_id, (shape, _) in runs.items():
        assert activations(shape) == {a for (r, a) in keys if r == run_id}, run_id
    return {"executions": len(rows), "re-executions": len(rows) - len(keys)}


async def test_acks_in_flight_share_commits(running_tansu: RestartableTansu) -> None:
    """Handlers acking one delivery after another, side by side, share commits: taking
    turns, each ack found settlements newer than the last commit and made a round trip
    of its own, so commits set the pace (and stalled behind a rebalance)."""
    namespace = f"fk{uuid.uuid4().hex[:10]}"
    options = {"group": namespace, "topic_prefix": namespace, "partitions": 1}
    producer = KafkaTransport(running_tansu.address, **options)
    receiver = KafkaTransport(running_tansu.address, **options, max_in_flight=ACKS)
    try:
        for n in range(ACKS):
            await producer.send(QUEUE, str(n).encode())
        with anyio.fail_after(COMPLETION_TIMEOUT):
            async with contextlib.aclosing(receiver.receive(QUEUE)) as deliveries:
                held = [await anext(deliveries) for _ in range(ACKS)]
                commits = counting(held[0]._member.kafka)

                async def handler(mine: list[Any]) -> None:
                    for delivery in mine:
                        await delivery.ack()

                async with anyio.create_task_group() as tg:
                    for first in range(HANDLERS):
                        tg.start_soon(handler, held[first::HANDLERS])
        print(f"\n{ACKS} acks from {HANDLERS} handlers: {commits[0]} commits")
        assert commits[0] <= ACKS // 4
    finally:
        await producer.close()
        await receiver.close()


def counting(consumer: Any) -> list[int]:
    """Count ``consumer.commit`` calls (in a one-item list)."""
    calls = [0]
    commit = consumer.commit

    async def counted(*args: Any, **kwargs: Any) -> Any:
        calls[0] += 1
        return await commit(*args, **kwargs)

    consumer.commit = counted
    return calls


@pytest.mark.timeout(240)
async def test_runs_complete_after_the_broker_is_killed_and_restarted_empty(
    running_tansu: RestartableTansu, pg_schema: str, worker_pool: Any
) -> None:
    transport_url, store_url = urls(running_tansu, pg_schema)
    await start_pool(worker_pool, transport_url, store_url, pg_schema)
    before, after = run_ids("before"), run_ids("after")
    async with connect(transport_url, store_url) as client:
        await start_runs(client, before)
        await wait_for_executions(pg_schema, 40)  # mid-load
        running_tansu.kill()
        await anyio.sleep(OUTAGE)  # the outage itself, not a wait for something
        running_tansu.start()
        restarted = time.monotonic()
        await start_runs(client, after)  # this client's topics are gone too
        await wait_completed(client, before | after)
        recovery = time.monotonic() - restarted
        counts = await check(client, pg_schema, before | after)
    print(
        f"\nbroker restart: all {len(before | after)} runs completed {recovery:.1f}s after "
        f"the broker came back; {counts}"
    )


@pytest.mark.timeout(240)
async def test_runs_complete_while_workers_are_killed_repeatedly(
    running_tansu: RestartableTansu, pg_schema: str, worker_pool: Any
) -> None:
    transport_url, store_url = urls(running_tansu, pg_schema)
    pool = await start_pool(worker_pool, transport_url, store_url, pg_schema)
    runs = run_ids("kills")
    killed: list[int] = []
    async with connect(transport_url, store_url) as client:
        await start_runs(client, runs)
        seen = 0
        for _ in range(KILLS):
            rows = await wait_for_executions(pg_schema, seen + EXECUTIONS_BETWEEN_KILLS)
            seen = len(rows)
            victim = busiest(pool, rows)
            victim.kill()
            killed.append(victim.pid)
            pool.start()  # its replacement
        last_kill = time.monotonic()
        await wait_completed(client, runs)
        recovery = time.monotonic() - last_kill
        counts = await check(client, pg_schema, runs)
    print(
        f"\nworker kills: {KILLS} workers killed ({killed}); all {len(runs)} runs completed "
        f"{recovery:.1f}s after the last kill; {counts}"
    )


def busiest(pool: WorkerPool, rows: list[tuple[str, str, str, str]]) -> WorkerProcess:
    """The running worker that executed the latest node (it likely holds work in flight)."""
    running = {str(p.pid): p for p in pool.running}
    for *_, worker in reversed(rows):
        if worker in running:
            return running[worker]
    return pool.running[0]

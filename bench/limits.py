"""Concurrency and rate limits: what they cost in worker throughput, and in store calls.

One invocation runs ``flow.map`` over N trivial nodes on an in-process Worker (a
MemoryTransport, and a PostgreSQL and a Redis store when reachable, else SQLite)
three ways: unlimited, limited by ``Limit(max=10_000)`` (nobody waits: the pure
cost of taking and giving back a slot), and rate-limited at a million a second (no
token is waited for: the pure cost of taking one). The three, on every store, are
timed in turns, round after round, and each ratio (limited ÷ unlimited throughput) is
the median of its rounds' ratios, so a slow phase of a noisy machine hits all alike.
It also counts the store calls the limits made per execution (``Slots.round_trips``).

The budget: a limit costs at most 15 % of throughput (ratio >= 0.85) and at most one
store round trip per execution.

    python -m bench.limits [N] [--postgres DSN] [--redis URL] [--rounds R]
"""

from __future__ import annotations

import os
import statistics
import sys
import tempfile
import time
import uuid
from contextlib import suppress
from pathlib import Path
from typing import TYPE_CHECKING, Any

import anyio

import flowkit
from flowkit.stores import SQLiteStore
from flowkit.transports import MemoryTransport

from ._util import Config, Table, reachable

if TYPE_CHECKING:
    from collections.abc import Callable

POSTGRES_URL = os.environ.get("FLOWKIT_BENCH_POSTGRES", "postgresql://postgres@127.0.0.1:5432/test")
REDIS_URL = os.environ.get("FLOWKIT_BENCH_REDIS", "redis://127.0.0.1:6379/0")
BUDGET_RATIO = 0.85  # limited ÷ unlimited throughput
BUDGET_CALLS = 1.0  # store calls per execution
KINDS = ("concurrency", "rate")


@flowkit.node(concurrency=flowkit.Limit(max=10_000))
async def limited(n: int) -> int:
    return n


@flowkit.node(rate="1000000/s")
async def rated(n: int) -> int:
    return n


@flowkit.node
async def unlimited(n: int) -> int:
    return n


@flowkit.flow
async def fan_limited(items: list[int]) -> list[int]:
    return await flowkit.flow.map(limited, items, concurrency=64)


@flowkit.flow
async def fan_rated(items: list[int]) -> list[int]:
    return await flowkit.flow.map(rated, items, concurrency=64)


@flowkit.flow
async def fan_unlimited(items: list[int]) -> list[int]:
    return await flowkit.flow.map(unlimited, items, concurrency=64)


FLOWS = {"none": fan_unlimited, "concurrency": fan_limited, "rate": fan_rated}


async def _timed(store: Any, target: Any, n: int) -> tuple[float, float, int]:
    """Seconds to run ``target`` over n items (wall, and this process's CPU), and the
    store calls its limits made."""
    transport = MemoryTransport()
    worker = flowkit.Worker([target], transport, store, poll_interval=0.5)
    client = flowkit.Client(transport, store, flows=[target])
    async with anyio.create_task_group() as tg:
        await tg.start(worker.run)
        started, cpu = time.perf_counter(), time.process_time()
        result = await client.run(target, items=list(range(n)))
        seconds, cpu = time.perf_counter() - started, time.process_time() - cpu
        worker.stop()  # drained: its idle slots are given back, and counted
    assert result.status == flowkit.RunStatus.COMPLETED
    return seconds, cpu, worker.slots.round_trips


def stores(tmp: str, postgres: str | None, redis: str | None) -> dict[str, Callable[[], Any]]:
    """A factory of a fresh store (own schema or key prefix) for every reachable server."""
    out: dict[str, Callable[[], Any]] = {}
    if postgres and reachable(postgres):
        from flowkit.stores import PostgresStore

        schema = f"fk_bench_limits_{uuid.uuid4().hex[:10]}"
        out["postgres"] = lambda: PostgresStore(postgres, schema=schema)
    if redis and reachable(redis):
        from flowkit.stores import RedisStore

        prefix = f"flowkit-bench-limits-{uuid.uuid4().hex[:8]}"
        out["redis"] = lambda: RedisStore(redis, prefix=prefix)
    if not out:
        out["sqlite"] = lambda: SQLiteStore(Path(tmp) / "runs.db")
    return out


async def _cleanup(store: Any) -> None:
    """Drop what the benchmark wrote to a shared server (its schema, its keys)."""
    with suppress(Exception):
        if hasattr(store, "schema"):
            import psycopg
            from psycopg import sql

            async with await psycopg.AsyncConnection.connect(store.dsn, autocommit=True) as conn:
                await conn.execute(
                    sql.SQL("DROP SCHEMA {} CASCADE").format(sql.Identifier(store.schema))
                )
        elif hasattr(store, "_client"):
            keys = [k async for k in store._client.scan_iter(match=f"{store.prefix}:*")]
            if keys:
                await store._client.delete(*keys)


async def measure(
    factories: dict[str, Callable[[], Any]], n: int, rounds: int, warm: bool = True
) -> dict[str, dict[str, Any]]:
    """Per store and limit kind: the rounds' throughput ratios and calls per execution."""
    opened = {name: factory() for name, factory in factories.items()}
    out: dict[str, dict[str, Any]] = {
        name: {kind: {"ratios": [], "cpu": [], "calls": []} for kind in KINDS} for name in opened
    }
    try:
        for store in opened.values():  # warm up: schema, connections, each flow
            for target in FLOWS.values() if warm else [fan_unlimited]:
                await _timed(store, target, min(n, 20))
        variants = list(FLOWS)
        for round_ in range(rounds):
            for name, store in opened.items():
                order = variants[round_ % 3 :] + variants[: round_ % 3]  # who goes first turns
                seconds: dict[str, float] = {}
                cpu: dict[str, float] = {}
                for variant in order:
                    seconds[variant], cpu[variant], calls = await _timed(store, FLOWS[variant], n)
                    if variant in KINDS:
                        out[name][variant]["calls"].append(calls / n)
                for kind in KINDS:
                    out[name][kind]["ratios"].append(seconds["none"] / seconds[kind])
                    out[name][kind]["cpu"].append(cpu["none"] / cpu[kind])
    finally:
        for store in opened.values():
            await _cleanup(store)
            await store.close()
    return out


def table(results: dict[str, dict[str, Any]], n: int) -> Table:
    out = Table(f"limits: flow.map over {n} trivial nodes on a Worker, limited vs unlimited")
    for store, kinds in results.items():
        for kind, r in kinds.items():
            ratio = round(statistics.median(r["ratios"]), 2)
            calls = round(max(r["calls"]), 2)
            out.rows.append(
                {
                    "store": store,
                    "limit": kind,
                    "x_unlimited": ratio,
                    "rounds": " ".join(f"{x:.2f}" for x in r["ratios"]),
                    "x_unlimited_cpu": round(statistics.median(r["cpu"]), 2),
                    "store_calls_execution": calls,
                    "met": ratio >= BUDGET_RATIO and calls <= BUDGET_CALLS,
                }
            )
    out.notes.append(
        "x_unlimited: throughput with the limit ÷ without (median of the rounds; "
        f"budget >= {BUDGET_RATIO}); store_calls_execution: the most of any round "
        f"(budget <= {BUDGET_CALLS:g}). concurrency: Limit(max=10_000), rate: 1000000/s "
        "(nobody waits: the pure cost). x_unlimited_cpu: the same ratio in this process's "
        "CPU seconds (the worker's, not the store server's): steadier on a busy machine"
    )
    return out


def summary(tables: list[Table]) -> list[dict[str, Any]]:
    """The rows of the section's table, for the budgets."""
    return [row for t in tables for row in t.rows]


def run(config: Config) -> list[Table]:
    n = config.pick(300, 200, 10)
    rounds = config.pick(9, 5, 1)
    with tempfile.TemporaryDirectory() as tmp:
        factories = stores(tmp, POSTGRES_URL, REDIS_URL)
        return [table(anyio.run(measure, factories, n, rounds, not config.smoke), n)]


def main(argv: list[str]) -> None:
    postgres = argv[argv.index("--postgres") + 1] if "--postgres" in argv else None
    redis = argv[argv.index("--redis") + 1] if "--redis" in argv else None
    rounds = int(argv[argv.index("--rounds") + 1]) if "--rounds" in argv else 7
    n = int(argv[0]) if argv and argv[0].isdigit() else 300
    with tempfile.TemporaryDirectory() as tmp:
        results = anyio.run(measure, stores(tmp, postgres, redis), n, rounds)
    t = table(results, n)
    for row in t.rows:
        print(
            f"{row['store']:>8} {row['limit']:<11} limited/unlimited throughput "
            f"{row['x_unlimited']:.2f} (rounds {row['rounds']}; in CPU time "
            f"{row['x_unlimited_cpu']:.2f}); "
            f"store calls per execution {row['store_calls_execution']:.2f}"
        )


if __name__ == "__main__":
    main(sys.argv[1:])

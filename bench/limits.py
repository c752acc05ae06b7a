"""Concurrency limits: what a slot costs in worker throughput, and in store calls.

One invocation runs ``flow.map`` over N trivial nodes on an in-process Worker (a
MemoryTransport and a SQLiteStore, or a PostgresStore with ``--postgres``), once
with a node limited by ``Limit(max=M)`` (M large enough that no execution waits:
the pure cost of taking and giving back a slot) and once with the same node
unlimited, in alternating rounds; it prints the median ratio of their
throughputs and the store calls the slots took per execution.

    python -m bench.limits [N] [--postgres DSN]
"""

from __future__ import annotations

import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import anyio

import flowkit
from flowkit.stores import SQLiteStore
from flowkit.transports import MemoryTransport

ROUNDS = 6


@flowkit.node(concurrency=flowkit.Limit(max=10_000))
async def limited(n: int) -> int:
    return n


@flowkit.node
async def unlimited(n: int) -> int:
    return n


@flowkit.flow
async def fan_limited(items: list[int]) -> list[int]:
    return await flowkit.flow.map(limited, items, concurrency=64)


@flowkit.flow
async def fan_unlimited(items: list[int]) -> list[int]:
    return await flowkit.flow.map(unlimited, items, concurrency=64)


async def _timed(store: Any, target: Any, n: int) -> tuple[float, int]:
    transport = MemoryTransport()
    worker = flowkit.Worker([target], transport, store, poll_interval=0.5)
    client = flowkit.Client(transport, store, flows=[target])
    async with anyio.create_task_group() as tg:
        await tg.start(worker.run)
        started = time.perf_counter()
        result = await client.run(target, items=list(range(n)))
        seconds = time.perf_counter() - started
        tg.cancel_scope.cancel()
    assert result.status == flowkit.RunStatus.COMPLETED
    return seconds, worker.slots.round_trips


async def _drop_schema(dsn: str, schema: str) -> None:
    import psycopg
    from psycopg import sql

    async with await psycopg.AsyncConnection.connect(dsn, autocommit=True) as conn:
        await conn.execute(sql.SQL("DROP SCHEMA {} CASCADE").format(sql.Identifier(schema)))


async def main(n: int, dsn: str | None) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        store: Any
        if dsn:
            from flowkit.stores import PostgresStore

            store = PostgresStore(dsn, schema=f"fk_bench_{uuid.uuid4().hex[:10]}")
        else:
            store = SQLiteStore(Path(tmp) / "runs.db")
        ratios, calls = [], 0
        for round_ in range(ROUNDS):  # alternating which goes first
            if round_ % 2:
                without, _ = await _timed(store, fan_unlimited, n)
            with_limit, calls = await _timed(store, fan_limited, n)
            if not round_ % 2:
                without, _ = await _timed(store, fan_unlimited, n)
            ratios.append(without / with_limit)
        await store.close()
        if dsn:
            await _drop_schema(dsn, store.schema)
    kind = "postgres" if dsn else "sqlite"
    print(
        f"{kind}: {n} nodes, limited/unlimited throughput {statistics.median(ratios):.2f} "
        f"(rounds {', '.join(f'{r:.2f}' for r in ratios)}); "
        f"slot store calls per execution {calls / n:.2f}"
    )


if __name__ == "__main__":
    args = sys.argv[1:]
    postgres = args[args.index("--postgres") + 1] if "--postgres" in args else None
    count = int(args[0]) if args and args[0].isdigit() else 300
    anyio.run(main, count, postgres)

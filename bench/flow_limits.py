"""Limits on runs (``@flow(concurrency=...)``): what a run's slot costs in throughput.

One invocation starts N runs of a one-node flow through a Client to an in-process
Worker (a MemoryTransport and a SQLiteStore, or a PostgresStore with ``--postgres``),
once with the flow limited by ``Limit(max=M)`` (M large enough that no run queues:
the pure cost of joining the queue, taking a slot and giving it back) and once with
the same flow unlimited, in alternating rounds; it prints the median ratio of their
throughputs. With ``--queued`` the limit is ``Limit(max=4)``: most runs queue, and
the ratio includes admitting them as slots free.

    python -m bench.flow_limits [N] [--queued] [--postgres DSN]
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


@flowkit.node
async def step(n: int) -> int:
    return n


@flowkit.flow(concurrency=flowkit.Limit(max=100_000))
async def roomy(n: int) -> int:
    return await step(n)


@flowkit.flow(concurrency=flowkit.Limit(max=4))
async def narrow(n: int) -> int:
    return await step(n)


@flowkit.flow
async def free(n: int) -> int:
    return await step(n)


async def _timed(store: Any, target: Any, n: int) -> float:
    transport = MemoryTransport()
    worker = flowkit.Worker([target], transport, store, poll_interval=0.5)
    client = flowkit.Client(transport, store, flows=[target])
    async with anyio.create_task_group() as tg:
        await tg.start(worker.run)
        started = time.perf_counter()
        handles = [await client.start(target, n=i) for i in range(n)]
        for handle in handles:
            result = await handle.result()
            assert result.status == flowkit.RunStatus.COMPLETED
        seconds = time.perf_counter() - started
        tg.cancel_scope.cancel()
    return seconds


async def main(n: int, queued: bool, dsn: str | None) -> None:
    limited = narrow if queued else roomy
    with tempfile.TemporaryDirectory() as tmp:
        store: Any
        if dsn:
            from flowkit.stores import PostgresStore

            store = PostgresStore(dsn, schema=f"fk_bench_{uuid.uuid4().hex[:10]}")
        else:
            store = SQLiteStore(Path(tmp) / "runs.db")
        ratios = []
        for round_ in range(ROUNDS):  # alternating which goes first
            if round_ % 2:
                without = await _timed(store, free, n)
            with_limit = await _timed(store, limited, n)
            if not round_ % 2:
                without = await _timed(store, free, n)
            ratios.append(without / with_limit)
        await store.close()
        if dsn:
            from bench.limits import _drop_schema

            await _drop_schema(dsn, store.schema)
    kind = "postgres" if dsn else "sqlite"
    what = "max=4 (runs queue)" if queued else "max=100000 (none queues)"
    print(
        f"{kind}: {n} runs, limited {what} / unlimited throughput "
        f"{statistics.median(ratios):.2f} (rounds {', '.join(f'{r:.2f}' for r in ratios)})"
    )


if __name__ == "__main__":
    args = sys.argv[1:]
    postgres = args[args.index("--postgres") + 1] if "--postgres" in args else None
    count = int(args[0]) if args and args[0].isdigit() else 100
    anyio.run(main, count, "--queued" in args, postgres)

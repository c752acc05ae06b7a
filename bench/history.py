"""Run history: what writing it costs in node throughput, on SQLite and PostgreSQL.

A chain of N trivial builder nodes runs on ``Runtime(store=...)`` with history on
and with history off (``history=False``), the two timed back to back in rounds in
one event loop; the cost is the median of the rounds' ratios, so a slow phase of a
noisy machine hits both runs of a round alike. Every node is one commit; with
history on that commit also writes its events (node started and completed, the
next node scheduled: three events, written by one insert statement; SQLite keeps a
commit's events in one row, PostgreSQL one row each). The budget: history costs
at most 10 % of node throughput, i.e. ``cost = seconds with / without <= 1.10``.

PostgreSQL runs the runtime's optimistic one-statement commit (``attempt``), the
path a worker's commits take too; SQLite its locked transaction.
"""

from __future__ import annotations

import gc
import os
import shutil
import statistics
import tempfile
import time
import uuid
from contextlib import suppress
from typing import TYPE_CHECKING, Any

import anyio

import flowkit
from flowkit.stores import SQLiteStore

from ._util import Config, Table, ratio, reachable

if TYPE_CHECKING:
    from collections.abc import Callable

POSTGRES_URL = os.environ.get("FLOWKIT_BENCH_POSTGRES", "postgresql://postgres@127.0.0.1:5432/test")
PG_SCHEMA = f"flowkit_bench_history_{os.getpid()}"  # own schema, dropped afterwards
BUDGET = 1.10


async def step(previous: Any = 0) -> int:
    return int(previous or 0) + 1


def build(n: int) -> flowkit.Flow:
    flow = flowkit.Flow(f"history-chain-{n}")
    for i in range(n):
        flow.node(f"s{i}", step)
        if i:
            flow.edge(f"s{i - 1}", f"s{i}")
    return flow


def factories(tmp: str) -> list[tuple[str, Callable[[bool], Any] | None, str]]:
    """(store kind, factory taking ``history``, or None with why it is skipped)."""
    out: list[tuple[str, Callable[[bool], Any] | None, str]] = [
        (
            "sqlite",
            lambda history: SQLiteStore(
                os.path.join(tmp, f"{uuid.uuid4().hex}.db"), history=history
            ),
            "",
        )
    ]
    if not reachable(POSTGRES_URL):
        out.append(("postgres", None, f"not reachable at {POSTGRES_URL}"))
        return out
    try:
        from flowkit.stores import PostgresStore
    except flowkit.MissingDependency as exc:  # pragma: no cover - the extra is missing
        out.append(("postgres", None, str(exc)))
        return out
    out.append(
        (
            "postgres",
            lambda history: PostgresStore(POSTGRES_URL, schema=PG_SCHEMA, history=history),
            "",
        )
    )
    return out


async def measure(factory: Callable[[bool], Any], n: int, runs: int) -> dict[str, Any]:
    """History on and off, each on a store of its own, timed in turns; medians and bests,
    and the events one run writes."""
    flow = build(n)
    stores = {"off": factory(False), "on": factory(True)}
    try:
        runtimes = {name: flowkit.Runtime(store=store) for name, store in stores.items()}
        for runtime in runtimes.values():  # warm-up: connections, tables, caches
            result = await runtime.run(flow)
            if result.status != "completed":
                raise RuntimeError(f"run ended {result.status}: {result.error}")
        probe = await runtimes["on"].run(flow)
        events = len(await runtimes["on"].history(probe.run_id))

        def timed(runtime: flowkit.Runtime) -> Callable[[], Any]:
            async def once() -> None:
                result = await runtime.run(flow)
                if result.status != "completed":
                    raise RuntimeError(f"run ended {result.status}: {result.error}")

            return once

        stats = await _interleaved({name: timed(rt) for name, rt in runtimes.items()}, runs)
        return {"stats": stats, "events": events}
    finally:
        for store in stores.values():
            with anyio.CancelScope(shield=True), suppress(Exception):
                await store.close()


async def _interleaved(fns: dict[str, Callable[[], Any]], runs: int) -> dict[str, dict[str, float]]:
    """Each function timed ``runs`` times in turns, the order flipped every round (on,
    off, off, on, ...): median and best wall seconds, median CPU seconds of this process
    (its threads too: SQLite's), and the median of the rounds' ratios to the first
    function's time (``paired``), which a slow phase of a shared machine hardly moves:
    both runs of a round see it."""
    names = list(fns)
    wall: dict[str, list[float]] = {name: [] for name in names}
    cpu: dict[str, list[float]] = {name: [] for name in names}
    for round_ in range(max(1, runs)):
        for name in names if round_ % 2 == 0 else reversed(names):
            gc.collect()
            start, start_cpu = time.perf_counter(), time.process_time()
            await fns[name]()
            wall[name].append(time.perf_counter() - start)
            cpu[name].append(time.process_time() - start_cpu)
    first = names[0]
    return {
        name: {
            "median": statistics.median(wall[name]),
            "best": min(wall[name]),
            "cpu": statistics.median(cpu[name]),
            "paired": statistics.median(
                [mine / theirs for mine, theirs in zip(wall[name], wall[first], strict=True)]
            ),
        }
        for name in names
    }


async def _drop_schema() -> None:
    with suppress(Exception):
        import psycopg

        conn = await psycopg.AsyncConnection.connect(POSTGRES_URL, autocommit=True)
        async with conn:
            await conn.execute(f"DROP SCHEMA IF EXISTS {PG_SCHEMA} CASCADE")


def run(config: Config) -> list[Table]:
    n = config.pick(200, 100, 10)
    runs = config.pick(41, 21, 1)
    table = Table(f"history: chain of {n} trivial nodes on Runtime(store=...), history on vs off")
    tmp = tempfile.mkdtemp(prefix="flowkit-bench-history-")
    try:
        for kind, factory, note in factories(tmp):
            if factory is None:
                table.notes.append(f"{kind}: skipped ({note})")
                continue
            try:
                result = anyio.run(measure, factory, n, runs)
            except Exception as exc:
                table.notes.append(f"{kind}: failed: {type(exc).__name__}: {exc}"[:300])
                continue
            finally:
                if kind == "postgres":
                    anyio.run(_drop_schema)
            on, off = result["stats"]["on"], result["stats"]["off"]
            cost = round(on["paired"], 3)
            table.rows.append(
                {
                    "store": kind,
                    "nodes_s_history": round(n / on["median"]),
                    "nodes_s_no_history": round(n / off["median"]),
                    "cost": cost,
                    "cost_medians": ratio(on["median"], off["median"], 3),
                    "cost_best": ratio(on["best"], off["best"], 3),
                    "cost_cpu": ratio(on["cpu"], off["cpu"], 3),
                    "events_node": round(result["events"] / n, 2),
                    "within_budget": None if cost is None else cost <= BUDGET,
                }
            )
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    table.notes.append(
        f"cost = median over {runs} rounds of (seconds of a run with history ÷ without, run "
        f"back to back); budget <= {BUDGET:.2f}. cost_medians compares the medians, cost_best "
        "the fastest runs, cost_cpu the process's CPU seconds (its threads included)"
    )
    return [table]


def summary(tables: list[Table]) -> dict[str, Any]:
    return {r["store"]: r for r in tables[0].rows}

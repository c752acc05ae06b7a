"""Scaling: µs per node as one run grows and as concurrent runs grow; and plain asyncio.

Two families, each in memory (``Runtime()``) and on ``SQLiteStore`` (a temp file):

* **one run of N nodes**: a chain and a fan of 1 000 / 10 000 / 100 000 nodes
  (``--quick``: 1 000 / 10 000 / 50 000 in memory, 200 / 1 000 on SQLite, which
  commits every node);
* **C concurrent runs of a 10-node chain**: 1 / 1 000 / 10 000 runs at once, each
  awaited in a task of one task group (``--quick``: 1 / 20 / 200 on SQLite). At
  C = 1 the runs go one after another (200; SQLite with ``--quick``: 30) so the
  figure is not one tiny sample.

The sizes of a family are timed in turns (the smallest, the next, ..., again)
and each figure is a median, so a slow phase of a noisy machine hits every size
alike. Reported: µs per node at each size and its growth against the smallest
size (1.0 = linear; the budget is <= 1.1 per row). In memory the µs are CPU time of
this process (nothing waits on I/O there, and CPU time leaves out the moments
other processes held the core); on SQLite, wall time.

Also here, in memory: flowkit's chain and fan of 1 000 nodes against the same
graph written by hand in plain asyncio (one ``create_task`` per node, each
awaiting its predecessors' tasks, then ``gather``): flowkit nodes/s ÷ asyncio
nodes/s, timed in turns, by CPU time.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import tempfile
from typing import TYPE_CHECKING, Any

import anyio

import flowkit
from flowkit.stores import SQLiteStore

from ._util import Config, Table, interleaved_stats, ratio, sig
from .shapes import build, done, inc, one

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable

GROWTH_BUDGET = 1.1
ASYNCIO_GOAL = 0.8
SMALL_RUN = 10  # nodes of each concurrent run


def node_sizes(config: Config, store: str) -> tuple[int, ...]:
    """Nodes of the one run (SQLite commits every node: 2 ms each on a busy machine)."""
    if store == "sqlite":
        return config.pick((1000, 10_000, 100_000), (200, 1000), (20, 40))
    return config.pick((1000, 10_000, 100_000), (1000, 10_000, 50_000), (20, 40))


def concurrency(config: Config, store: str) -> tuple[int, ...]:
    if store == "sqlite":
        return config.pick((1, 1000, 10_000), (1, 20, 200), (1, 4))
    return config.pick((1, 1000, 10_000), (1, 1000, 10_000), (1, 4))


def sequential(config: Config, store: str) -> int:
    """Runs one after another at concurrency 1."""
    return config.pick(200, 30 if store == "sqlite" else 200, 3)


def rounds(config: Config, store: str, largest: int) -> int:
    """Rounds of turns: fewer when the largest size takes seconds (SQLite at 100 000: 1)."""
    if store == "sqlite":
        return config.pick(3 if largest <= 10_000 else 1, 2, 1)
    return config.pick(5 if largest <= 10_000 else 3, 3, 1)


# -- the measured work ------------------------------------------------------------------------


async def _checked(runtime: flowkit.Runtime, flow: flowkit.Flow) -> None:
    result = await runtime.run(flow)
    if result.status != "completed":
        raise RuntimeError(f"{flow.name}: run ended {result.status}: {result.error}")


def one_run(runtime: flowkit.Runtime, flow: flowkit.Flow) -> Callable[[], Awaitable[None]]:
    return lambda: _checked(runtime, flow)


def concurrent_runs(
    runtime: flowkit.Runtime, flow: flowkit.Flow, runs: int, one_by_one: int
) -> Callable[[], Awaitable[None]]:
    """``runs`` runs at once (``one_by_one`` runs one after another when ``runs`` is 1)."""

    async def go() -> None:
        if runs == 1:
            for _ in range(one_by_one):
                await _checked(runtime, flow)
            return
        async with anyio.create_task_group() as tg:
            for _ in range(runs):
                tg.start_soon(_checked, runtime, flow)

    return go


def executed(runs: int, one_by_one: int) -> int:
    """Node executions of one timed call at this concurrency."""
    return (one_by_one if runs == 1 else runs) * SMALL_RUN


async def asyncio_graph(shape: str, n: int) -> Any:
    """The shape by hand: one asyncio task per node, awaiting its predecessors' tasks."""
    if shape == "chain":

        async def step(previous: asyncio.Task[int] | None) -> int:
            return await inc(0 if previous is None else await previous)

        tasks: list[asyncio.Task[int]] = []
        last: asyncio.Task[int] | None = None
        for _ in range(n):
            last = asyncio.create_task(step(last))
            tasks.append(last)
        return (await asyncio.gather(*tasks))[-1]
    source = asyncio.create_task(one())

    async def worker() -> int:
        return await inc(await source)

    workers = [asyncio.create_task(worker()) for _ in range(n)]

    async def sink() -> str:
        return await done(await asyncio.gather(*workers))

    results = await asyncio.gather(source, *workers, asyncio.create_task(sink()))
    return results[-1]


# -- measuring --------------------------------------------------------------------------------


async def _family(
    store: Any, calls: dict[int, Callable[[flowkit.Runtime], Callable[[], Awaitable[None]]]], n: int
) -> dict[int, float]:
    """Median seconds per size, the sizes timed in turns on one runtime: CPU seconds in
    memory (no I/O: a busy machine disturbs them least), wall seconds with a store."""
    runtime = flowkit.Runtime(store=store)
    try:
        fns = {size: make(runtime) for size, make in calls.items()}
        for fn in fns.values():  # warm-up: compiles, caches, the store's tables
            await fn()
        stats = await interleaved_stats({str(k): v for k, v in fns.items()}, n, cpu=store is None)
        return {int(k): s["median"] for k, s in stats.items()}
    finally:
        if store is not None:
            with anyio.CancelScope(shield=True):
                await store.close()


def _store(kind: str, tmp: str, name: str) -> Any:
    return None if kind == "memory" else SQLiteStore(os.path.join(tmp, f"{name}.db"))


def _growth_rows(
    table: Table, store: str, what: str, seconds: dict[int, float], nodes: dict[int, int]
) -> None:
    sizes = sorted(seconds)
    base = seconds[sizes[0]] / nodes[sizes[0]]
    for size in sizes:
        per = seconds[size] / nodes[size]
        growth = ratio(per, base)
        table.rows.append(
            {
                "store": store,
                "workload": what,
                "size": size,
                "us_node": sig(per * 1e6),
                "growth": growth,
                "met": None if size == sizes[0] or growth is None else growth <= GROWTH_BUDGET,
            }
        )


def _measure_store(config: Config, kind: str, tmp: str, table: Table) -> None:
    for shape in ("chain", "fan"):
        sizes = node_sizes(config, kind)
        flows = {n: build(shape, n) for n in sizes}
        calls = {n: (lambda rt, f=flows[n]: one_run(rt, f)) for n in sizes}
        seconds = anyio.run(
            _family, _store(kind, tmp, shape), calls, rounds(config, kind, sizes[-1])
        )
        nodes = {n: len(flows[n].build().nodes) for n in sizes}
        _growth_rows(table, kind, f"one {shape} of N nodes", seconds, nodes)
    small = build("chain", SMALL_RUN)
    levels = concurrency(config, kind)
    one_by_one = sequential(config, kind)
    calls = {c: (lambda rt, c=c: concurrent_runs(rt, small, c, one_by_one)) for c in levels}
    seconds = anyio.run(_family, _store(kind, tmp, "runs"), calls, rounds(config, kind, levels[-1]))
    nodes = {c: executed(c, one_by_one) for c in levels}
    _growth_rows(table, kind, f"N concurrent {SMALL_RUN}-node runs", seconds, nodes)


async def _versus_asyncio(n: int, runs: int) -> dict[str, dict[str, float]]:
    runtime = flowkit.Runtime()
    out = {}
    for shape in ("chain", "fan"):
        flow = build(shape, n)
        fns = {"flowkit": one_run(runtime, flow), "asyncio": lambda s=shape: asyncio_graph(s, n)}
        for fn in fns.values():
            await fn()
        stats = await interleaved_stats(fns, runs, cpu=True)
        out[shape] = {k: s["median"] for k, s in stats.items()}
    return out


def versus_asyncio(config: Config) -> Table:
    n = config.pick(1000, 1000, 20)
    table = Table(
        f"in memory vs plain asyncio: {n}-node chain and fan, one asyncio task per node "
        "awaiting its predecessors, then gather"
    )
    medians = anyio.run(_versus_asyncio, n, config.pick(31, 21, 1), backend="asyncio")
    for shape, m in medians.items():
        nodes = len(build(shape, n).build().nodes)
        x = ratio(m["asyncio"], m["flowkit"])
        table.rows.append(
            {
                "shape": shape,
                "nodes": nodes,
                "flowkit_us_node": sig(m["flowkit"] / nodes * 1e6),
                "asyncio_us_node": sig(m["asyncio"] / nodes * 1e6),
                "x_asyncio": x,
                "met": None if x is None else x >= ASYNCIO_GOAL,
            }
        )
    table.notes.append(
        f"x_asyncio = flowkit nodes/s ÷ asyncio nodes/s (goal >= {ASYNCIO_GOAL}), "
        "by CPU time, timed in turns, medians"
    )
    return table


def run(config: Config) -> list[Table]:
    table = Table("scaling: µs per node as the run grows and as concurrent runs grow")
    tmp = tempfile.mkdtemp(prefix="flowkit-bench-scaling-")
    try:
        for kind in ("memory", "sqlite"):
            _measure_store(config, kind, tmp, table)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    table.notes.append(
        f"growth = µs per node (CPU time in memory, wall time on SQLite) at that size ÷ at "
        f"the family's smallest size (budget <= "
        f"{GROWTH_BUDGET}: linear); sizes timed in turns after a warm-up run each, medians of "
        f"{rounds(config, 'memory', 50_000)} rounds in memory, {rounds(config, 'sqlite', 10_000)} "
        f"on SQLite (1 at 100 000 nodes); at 1 concurrent run, {sequential(config, 'memory')} "
        f"runs (SQLite: {sequential(config, 'sqlite')}) one after another"
    )
    return [table, versus_asyncio(config)]


def summary(tables: list[Table]) -> dict[str, Any]:
    """Rows by (store, workload, size), and the asyncio rows by shape."""
    rows = {(r["store"], r["workload"], r["size"]): r for r in tables[0].rows}
    return {"growth": rows, "asyncio": {r["shape"]: r for r in tables[1].rows}}

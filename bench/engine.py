"""In-memory engine throughput on the reference shapes, against plain Python and Flowcraft.

For each shape and size, flowkit's ``Runtime`` and the plain-Python floor (the
same functions awaited directly) are timed in turns and their medians taken;
Flowcraft runs the same shape right after, in a Node.js subprocess. Reported:
nodes/s of each, flowkit's overhead per node over the floor, the ratio
flowkit ÷ Flowcraft, and how the time per node grows from 1 000 nodes to the
largest size (1.0 = linear). Two more tables: flowkit against plain asyncio with
one task per node (``create_task`` + ``gather``, the floor for an engine that
gives every node a task), and the time per node of many short runs at once
(10-node chains, 1 000 then 10 000 concurrent runs: the fixed cost of a run,
and whether it grows with the number of runs in flight).
"""

from __future__ import annotations

import asyncio
from typing import Any

import anyio

import flowkit

from ._flowcraft import Flowcraft
from ._util import Config, Table, interleaved_stats, ratio, sig
from .shapes import build, done, inc, one, plain

SHAPES = ("chain", "fan", "diamond")


def sizes(config: Config) -> tuple[int, ...]:
    return config.pick((100, 1000, 5000, 10000), (100, 1000, 5000, 10000), (50,))


def runs_for(config: Config, n: int) -> int:
    """Repeats per measurement: more for small (fast, noisier) sizes."""
    full = {100: 51, 1000: 31, 5000: 15, 10000: 11}
    quick = {100: 31, 1000: 21, 5000: 11, 10000: 9}
    return config.pick(full.get(n, 7), quick.get(n, 5), 2)


def flowcraft_runs(config: Config, n: int) -> int:
    """Repeats inside Flowcraft's script (it takes the median itself)."""
    return config.pick(
        7 if n <= 1000 else 5 if n <= 5000 else 3, 5 if n <= 1000 else 3 if n <= 5000 else 2, 1
    )


async def measure(shape: str, n: int, runs: int) -> dict[str, Any]:
    """Median seconds of one run of flowkit and of plain Python for one shape and size."""
    flow = build(shape, n)
    nodes = len(flow.build().nodes)
    runtime = flowkit.Runtime()

    async def engine() -> None:
        result = await runtime.run(flow)
        if result.status != "completed":
            raise RuntimeError(f"{shape} {n}: run ended {result.status}: {result.error}")

    async def floor() -> None:
        await plain(shape, n)

    await engine()  # warm-up: resolves the target, fills caches
    await floor()
    stats = await interleaved_stats({"flowkit": engine, "plain": floor}, runs)
    return {
        "nodes": nodes,
        "flowkit_s": stats["flowkit"]["median"],
        "flowkit_best_s": stats["flowkit"]["best"],
        "plain_s": stats["plain"]["median"],
    }


async def tasks_floor(shape: str, n: int) -> Any:
    """One asyncio task per node: a chain awaits each in turn, a fan gathers them."""
    if shape == "chain":
        x = 0
        for _ in range(n):
            x = await asyncio.create_task(inc(x))
        return x
    src = await asyncio.create_task(one())
    values = await asyncio.gather(*[asyncio.create_task(inc(src)) for _ in range(n)])
    return await asyncio.create_task(done(values))


async def measure_tasks(shape: str, n: int, runs: int) -> dict[str, float]:
    """Median seconds of one run of flowkit and of the one-task-per-node floor."""
    flow = build(shape, n)
    runtime = flowkit.Runtime()

    async def engine() -> None:
        await runtime.run(flow)

    async def floor() -> None:
        await tasks_floor(shape, n)

    await engine()
    await floor()
    stats = await interleaved_stats({"flowkit": engine, "tasks": floor}, runs, cpu=True)
    return {name: s["median"] for name, s in stats.items()}


def short_flow() -> flowkit.Flow:
    flow = flowkit.Flow("short-10")
    for i in range(10):
        flow.node(f"n{i}", inc)
    for i in range(9):
        flow.edge(f"n{i}", f"n{i + 1}")
    return flow


async def measure_concurrent(counts: tuple[int, ...], runs: int) -> dict[int, float]:
    """Median seconds per node of ``count`` 10-node runs started at once on a fresh
    Runtime, for each count, timed in turns."""
    flow = short_flow()

    def at_once(count: int) -> Any:
        async def batch() -> None:
            runtime = flowkit.Runtime()
            results = await asyncio.gather(*(runtime.run(flow) for _ in range(count)))
            if any(r.status != "completed" for r in results):
                raise RuntimeError(f"a short run did not complete: {results[0]}")

        return batch

    await at_once(min(counts))()  # warm-up
    stats = await interleaved_stats({str(c): at_once(c) for c in counts}, runs, cpu=True)
    return {c: stats[str(c)]["median"] / (c * 10) for c in counts}


def floors(config: Config) -> list[Table]:
    """flowkit against one asyncio task per node, and many short runs at once."""
    n = config.pick(1000, 1000, 50)
    tasks = Table(
        f"in-memory engine vs plain asyncio create_task+gather (one task per node), {n} nodes"
    )
    for shape in ("chain", "fan"):
        m = anyio.run(measure_tasks, shape, n, config.pick(31, 15, 2))
        tasks.rows.append(
            {
                "shape": shape,
                "flowkit_us_node": sig(m["flowkit"] / n * 1e6),
                "tasks_us_node": sig(m["tasks"] / n * 1e6),
                "tasks_vs_flowkit": ratio(m["tasks"], m["flowkit"]),
            }
        )
    tasks.notes.append(
        "tasks_vs_flowkit = the floor's median CPU time ÷ flowkit's (1.0 = as fast as "
        "giving each node its own task; higher is faster); both run in this process, "
        "in turns, and neither waits on I/O"
    )
    small, large = config.pick((1000, 10000), (1000, 10000), (20, 200))
    per_node = anyio.run(measure_concurrent, (small, large), config.pick(5, 3, 1))
    concurrent = Table(
        f"µs per node at {small:,} vs {large:,} concurrent 10-node runs".replace(",", " ")
    )
    concurrent.rows.append(
        {
            "us_node_small": sig(per_node[small] * 1e6),
            "us_node_large": sig(per_node[large] * 1e6),
            "growth": ratio(per_node[large], per_node[small]),
        }
    )
    concurrent.notes.append(
        "each batch starts its runs at once (asyncio.gather) on a fresh Runtime; "
        "growth = CPU µs per node at the larger count ÷ at the smaller (1.0 = linear); "
        f"medians of {config.pick(5, 3, 1)} batches each, timed in turns"
    )
    return [tasks, concurrent]


def run(config: Config) -> list[Table]:
    """Every shape at every size; with Flowcraft available, the ratios against it too."""
    table = Table(
        "in-memory engine: nodes/s (medians), overhead over plain Python, ratio to Flowcraft"
    )
    growth = Table(
        "engine growth: time per node at the largest size ÷ at 1 000 nodes (1.0 = linear)"
    )
    reference = Flowcraft() if config.flowcraft and not config.smoke else None
    raw: dict[tuple[str, int], dict[str, Any]] = {}
    try:
        for shape in SHAPES:
            for n in sizes(config):
                m = anyio.run(measure, shape, n, runs_for(config, n))
                nodes = m["nodes"]
                row: dict[str, Any] = {
                    "shape": shape,
                    "nodes": nodes,
                    "flowkit_nodes_s": round(nodes / m["flowkit_s"]),
                    "plain_nodes_s": round(nodes / m["plain_s"]),
                    "overhead_us_node": round((m["flowkit_s"] - m["plain_s"]) / nodes * 1e6, 2),
                    "best_us_node": round(m["flowkit_best_s"] / nodes * 1e6, 2),
                }
                if reference is not None:
                    other = reference.run(shape, n, flowcraft_runs(config, n))
                    if other is not None:
                        m["flowcraft_s"] = other["median_ms"] / 1000
                        row["flowcraft_nodes_s"] = other["nodes_per_s"]
                        row["x_flowcraft"] = ratio(row["flowkit_nodes_s"], other["nodes_per_s"])
                    else:
                        row["flowcraft_nodes_s"] = None
                        row["x_flowcraft"] = None
                raw[(shape, n)] = m
                table.rows.append(row)
    finally:
        if reference is not None:
            reference.close()
    if reference is not None and reference.error:
        table.notes.append(f"Flowcraft unavailable: {reference.error}")
    elif reference is None:
        table.notes.append("Flowcraft not run (--no-flowcraft or smoke)")
    table.notes.append(
        "overhead_us_node = (flowkit median - plain median) / nodes; best_us_node = flowkit's "
        "fastest run per node (what the code costs when the machine is quiet); "
        "x_flowcraft = flowkit nodes/s ÷ Flowcraft nodes/s, Flowcraft timed right after "
        "flowkit in the same invocation"
    )
    largest = max(sizes(config))
    base = 1000 if 1000 in sizes(config) else min(sizes(config))
    if largest != base:
        growth.title = (
            f"engine growth: time per node at {largest:,} nodes ÷ at {base:,} (1.0 = linear)"
        ).replace(",", " ")
        for shape in SHAPES:
            big, small = raw[(shape, largest)], raw[(shape, base)]
            per = {
                k: big[k] / big["nodes"]
                for k in ("flowkit_s", "plain_s", "flowcraft_s")
                if k in big
            }
            per_small = {k: small[k] / small["nodes"] for k in per if k in small}
            growth.rows.append(
                {
                    "shape": shape,
                    "flowkit": ratio(per["flowkit_s"], per_small["flowkit_s"]),
                    "plain": ratio(per["plain_s"], per_small["plain_s"]),
                    "flowcraft": ratio(per.get("flowcraft_s"), per_small.get("flowcraft_s")),
                    "flowkit_us_node_small": sig(per_small["flowkit_s"] * 1e6),
                    "flowkit_us_node_large": sig(per["flowkit_s"] * 1e6),
                }
            )
        return [table, growth, *floors(config)]
    return [table, *floors(config)]


def summary(tables: list[Table]) -> dict[str, Any]:
    """Figures the budget check reads (see ``__main__``)."""
    rows = {(r["shape"], r["nodes"]): r for r in tables[0].rows}
    out: dict[str, Any] = {"rows": rows}
    for table in tables[1:]:
        if table.title.startswith("engine growth"):
            out["growth"] = {r["shape"]: r for r in table.rows}
        elif "create_task" in table.title:
            out["tasks"] = {r["shape"]: r for r in table.rows}
        elif "concurrent" in table.title:
            out["concurrent"] = table.rows[0]
    return out

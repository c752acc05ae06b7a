"""In-memory engine throughput on the reference shapes, against plain Python and Flowcraft.

For each shape and size, flowkit's ``Runtime`` and the plain-Python floor (the
same functions awaited directly) are timed in turns and their medians taken;
Flowcraft runs the same shape right after, in a Node.js subprocess. Reported:
nodes/s of each, flowkit's overhead per node over the floor, the ratio
flowkit ÷ Flowcraft, and how the time per node grows from 1 000 nodes to the
largest size (1.0 = linear).
"""

from __future__ import annotations

from typing import Any

import anyio

import flowkit

from ._flowcraft import Flowcraft
from ._util import Config, Table, interleaved_stats, ratio, sig
from .shapes import build, plain

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
        return [table, growth]
    return [table]


def summary(tables: list[Table]) -> dict[str, Any]:
    """Figures the budget check reads (see ``__main__``)."""
    rows = {(r["shape"], r["nodes"]): r for r in tables[0].rows}
    out: dict[str, Any] = {"rows": rows}
    if len(tables) > 1:
        out["growth"] = {r["shape"]: r for r in tables[1].rows}
    return out

"""In-memory engine throughput on the reference shapes, against plain Python and Flowcraft."""

from __future__ import annotations

import statistics
import time
from typing import Any

import anyio

import flowkit

from ._flowcraft import Flowcraft
from .shapes import build, plain

SHAPES = ("chain", "fan", "diamond")


async def _time_runs(fn: Any, runs: int) -> float:
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        await fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


async def measure(shape: str, n: int, runs: int) -> dict[str, Any]:
    """nodes/s of flowkit and of plain Python for one shape and size."""
    flow = build(shape, n)
    nodes = len(flow.build().nodes)
    runtime = flowkit.Runtime()

    async def engine() -> None:
        result = await runtime.run(flow)
        if result.status != "completed":
            raise RuntimeError(f"{shape} {n}: run ended {result.status}: {result.error}")

    await engine()  # warm-up: resolves the target, fills caches
    flowkit_s = await _time_runs(engine, runs)
    plain_s = await _time_runs(lambda: plain(shape, n), runs)
    return {
        "shape": shape, "n": nodes,
        "flowkit_nodes_per_s": round(nodes / flowkit_s),
        "plain_nodes_per_s": round(nodes / plain_s),
        "overhead_us_per_node": round((flowkit_s - plain_s) / nodes * 1e6, 2),
    }


def run(sizes: tuple[int, ...], runs: int, *, flowcraft: bool = True) -> list[dict[str, Any]]:
    """Every shape at every size; with ``flowcraft``, the ratio against Flowcraft too."""
    rows = []
    reference = Flowcraft() if flowcraft else None
    try:
        for shape in SHAPES:
            for n in sizes:
                row = anyio.run(measure, shape, n, runs)
                if reference is not None:
                    other = reference.run(shape, n, runs)
                    if other is not None:
                        row["flowcraft_nodes_per_s"] = other["nodes_per_s"]
                        row["ratio_vs_flowcraft"] = round(
                            row["flowkit_nodes_per_s"] / other["nodes_per_s"], 2
                        )
                    else:
                        row["flowcraft_error"] = reference.error
                rows.append(row)
    finally:
        if reference is not None:
            reference.close()
    return rows

"""``flowkit.testing.simulate`` of a flow that sleeps N times for a day.

Baselines measured in the same invocation: ``simulate`` of a chain of N
trivial nodes (the same shell without timers) and the in-memory ``Runtime``
running that chain, so the figures say what a virtual-time sleep costs next to
a node.
"""

from __future__ import annotations

import time
from datetime import timedelta
from typing import Any

import anyio

import flowkit
from flowkit.testing import simulate

from ._util import Config, Table, median_sync, ratio, sig
from .shapes import build

DAY = timedelta(days=1)


def sleeps(n: int) -> flowkit.Flow:
    """``sleep 1d -> sleep 1d -> ...`` ``n`` times, built with ``Flow(...).sleep(...)``."""
    flow = flowkit.Flow(f"sleeps-{n}")
    for i in range(n):
        flow.sleep(f"s{i}", duration="1d")
        if i:
            flow.edge(f"s{i - 1}", f"s{i}")
    return flow


def run(config: Config) -> list[Table]:
    n = config.pick(1000, 1000, 20)
    runs = config.pick(15, 7, 1)
    table = Table(f"simulation: simulate() of {n} chained 1-day sleeps (virtual time)")
    flow = sleeps(n)
    chain = build("chain", n)

    first = simulate(flow)  # warm-up, and the run whose result we check
    if first.status != "completed":
        raise RuntimeError(f"simulate ended {first.status}: {first.error}")
    sleeps_s = median_sync(lambda: simulate(flow), runs)
    chain_sim_s = median_sync(lambda: simulate(chain), runs)

    runtime = flowkit.Runtime()

    async def in_memory() -> None:
        await runtime.run(chain)

    anyio.run(in_memory)
    chain_rt_s = median_sync(lambda: anyio.run(in_memory), runs)
    # anyio.run itself (starting an event loop) is in both simulate() and the runtime figure.
    loop_s = median_sync(lambda: anyio.run(anyio.sleep, 0), runs)

    virtual = first.elapsed
    table.rows.append(
        {
            "sleeps": n,
            "wall_ms": sig(sleeps_s * 1e3),
            "us_per_sleep": sig(sleeps_s / n * 1e6),
            "virtual_days": round(virtual / DAY, 2),
            "virtual_per_wall_s": sig(virtual.total_seconds() / sleeps_s),
            "x_sim_chain": ratio(sleeps_s, chain_sim_s),
            "x_runtime_chain": ratio(sleeps_s, chain_rt_s),
        }
    )
    table.notes.append(
        f"baselines, same invocation: simulate() of a {n}-node trivial chain "
        f"{sig(chain_sim_s * 1e3)} ms, Runtime().run of it {sig(chain_rt_s * 1e3)} ms, "
        f"an empty anyio.run {sig(loop_s * 1e3)} ms; x_* = sleeps time ÷ that baseline"
    )
    expected = timedelta(days=n)
    if virtual != expected:
        table.notes.append(f"UNEXPECTED: virtual time {virtual}, expected {expected}")
    return [table]


def summary(tables: list[Table]) -> dict[str, Any]:
    return dict(tables[0].rows[0])


if __name__ == "__main__":  # pragma: no cover - manual use
    start = time.perf_counter()
    print(run(Config(quick=True))[0])
    print(time.perf_counter() - start)

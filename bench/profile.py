"""Where the in-memory engine's time goes: ``python -m bench.profile [chain|fan|diamond] [N]``.

Runs the shape under cProfile (``--runs`` times, after a warm-up) and prints
the functions with the most own time, in µs per node, next to the per-node
wall time measured without the profiler (cProfile inflates small calls; read
the shares, not the absolute figures). ``--pyinstrument`` uses pyinstrument
instead when it is installed.
"""

from __future__ import annotations

import argparse
import cProfile
import pstats
import sys
import time
from typing import Any

import anyio

import flowkit

from .shapes import build


async def _runs(flow: Any, runtime: flowkit.Runtime, runs: int) -> None:
    for _ in range(runs):
        result = await runtime.run(flow)
        assert result.status == "completed", result


def profile(shape: str, n: int, runs: int, top: int) -> str:
    flow = build(shape, n)
    nodes = len(flow.build().nodes)
    runtime = flowkit.Runtime()
    anyio.run(_runs, flow, runtime, 2)  # warm-up
    start = time.perf_counter()
    anyio.run(_runs, flow, runtime, runs)
    wall_us = (time.perf_counter() - start) / (runs * nodes) * 1e6

    profiler = cProfile.Profile()
    profiler.enable()
    anyio.run(_runs, flow, runtime, runs)
    profiler.disable()
    stats = pstats.Stats(profiler)
    total = sum(v[2] for v in stats.stats.values())  # type: ignore[attr-defined]
    rows = sorted(stats.stats.items(), key=lambda kv: kv[1][2], reverse=True)  # type: ignore[attr-defined]
    per = runs * nodes
    lines = [
        f"{shape} {nodes} nodes x {runs} runs: {wall_us:.2f} µs/node without the profiler, "
        f"{total / per * 1e6:.2f} µs/node under cProfile",
        f"{'own µs/node':>11}  {'cum µs/node':>11}  {'calls/node':>10}  {'share':>6}  function",
    ]
    for (filename, line, name), (_cc, ncalls, tottime, cumtime, _callers) in rows[:top]:
        short = filename.split("site-packages/")[-1].split("/work/main/")[-1]
        lines.append(
            f"{tottime / per * 1e6:11.3f}  {cumtime / per * 1e6:11.3f}  {ncalls / per:10.2f}  "
            f"{tottime / total:6.1%}  {short}:{line}({name})"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.profile", description=__doc__)
    parser.add_argument("shape", nargs="?", default="chain", choices=("chain", "fan", "diamond"))
    parser.add_argument("n", nargs="?", type=int, default=1000)
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--top", type=int, default=30)
    parser.add_argument("--pyinstrument", action="store_true", help="use pyinstrument")
    args = parser.parse_args(argv)
    if args.pyinstrument:
        try:
            from pyinstrument import Profiler  # type: ignore[import-not-found, unused-ignore]
        except ImportError:
            print("pyinstrument is not installed (pip install pyinstrument)", file=sys.stderr)
            return 2
        flow = build(args.shape, args.n)
        runtime = flowkit.Runtime()
        anyio.run(_runs, flow, runtime, 2)
        with Profiler(interval=0.0001) as profiler:
            anyio.run(_runs, flow, runtime, args.runs)
        print(profiler.output_text(unicode=True, color=False, show_all=False))
        return 0
    print(profile(args.shape, args.n, args.runs, args.top))
    return 0


if __name__ == "__main__":
    sys.exit(main())

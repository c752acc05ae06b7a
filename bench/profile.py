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


def _core_only(program: Any) -> float:
    """Seconds for one run of the pure core: events fed straight back, no executor, no anyio."""
    from flowkit.core import _protocol as p
    from flowkit.core._machine import handle_event, start_run
    from flowkit.core._state import RunState

    start = time.perf_counter()
    state = RunState("core-only")
    ready = [c for c in start_run(program, state, {}) if type(c) is p.ExecuteNode]
    state.journal.clear()
    while ready:
        command = ready.pop(0) if len(ready) < 64 else ready.pop()
        commands = handle_event(program, state, p.NodeCompleted(command.dispatch_id, 1))
        state.journal.clear()
        ready.extend(c for c in commands if type(c) is p.ExecuteNode)
    elapsed = time.perf_counter() - start
    assert state.finished, state.header
    return elapsed


async def _executor_only(flow: Any, calls: int) -> float:
    """Seconds per ``Executor.execute`` of one node (context, invoke, NodeCompleted)."""
    from flowkit.core import _protocol as p
    from flowkit.core._state import RunState
    from flowkit.shell._execute import Executor
    from flowkit.shell._target import resolve

    target = resolve(flow)
    executor = Executor()
    state = RunState("executor-only")
    node_id = target.program.blueprint.nodes[1].id
    command = p.ExecuteNode(f"{node_id}@1.1", node_id, 1, f"x:{node_id}@1", (1,), {})
    start = time.perf_counter()
    for _ in range(calls):
        await executor.execute("executor-only", target, state, command)
    return (time.perf_counter() - start) / calls


async def _plain_only(calls: int) -> float:
    from .shapes import inc

    start = time.perf_counter()
    for _ in range(calls):
        await inc(1)
    return (time.perf_counter() - start) / calls


def layers(shape: str, n: int, runs: int) -> str:
    """Per-node µs of each layer, timed directly (no profiler): core, executor, the rest."""
    import statistics

    from flowkit.shell._target import resolve

    flow = build(shape, n)
    nodes = len(flow.build().nodes)
    runtime = flowkit.Runtime()
    start = time.perf_counter()
    program = resolve(flow).program
    resolve_us = (time.perf_counter() - start) / nodes * 1e6
    anyio.run(_runs, flow, runtime, 2)
    totals, cores, execs, plains = [], [], [], []
    for _ in range(runs):
        start = time.perf_counter()
        anyio.run(_runs, flow, runtime, 1)
        totals.append((time.perf_counter() - start) / nodes)
        cores.append(_core_only(program) / nodes)
        execs.append(anyio.run(_executor_only, flow, nodes))
        plains.append(anyio.run(_plain_only, nodes))
    total, core, execute, plain = (
        statistics.median(x) * 1e6 for x in (totals, cores, execs, plains)
    )
    rest = total - core - execute
    return "\n".join(
        [
            f"{shape} {nodes} nodes, medians of {runs}, µs per node (timed directly, no profiler):",
            f"  whole run (Runtime.run)         {total:7.2f}",
            f"  core (handle_event + commands)  {core:7.2f}  {core / total:6.1%}",
            f"  executor (Executor.execute)     {execute:7.2f}  {execute / total:6.1%}",
            f"    of which the node itself      {plain:7.2f}",
            f"  driver and anyio (the rest)     {rest:7.2f}  {rest / total:6.1%}",
            f"  (once per target, cached: resolve() {resolve_us:.2f} µs per node)",
        ]
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.profile", description=__doc__)
    parser.add_argument("shape", nargs="?", default="chain", choices=("chain", "fan", "diamond"))
    parser.add_argument("n", nargs="?", type=int, default=1000)
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--top", type=int, default=30)
    parser.add_argument("--pyinstrument", action="store_true", help="use pyinstrument")
    parser.add_argument("--layers", action="store_true", help="time core/executor/driver apart")
    args = parser.parse_args(argv)
    if args.layers:
        print(layers(args.shape, args.n, args.runs))
        return 0
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

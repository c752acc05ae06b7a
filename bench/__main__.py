"""``python -m bench [--quick] [--json FILE] [--only SECTION[,SECTION]] [--no-flowcraft]``.

Sections: engine, compile, simulation, persistence, history, limits, scale, scaling,
distributed; the goals table at the end reads them all. ``--only
smoke`` runs every section at tiny sizes in a few seconds (no Flowcraft, no npm,
no broker). ``--only soak [--minutes N] [--rate R]`` (only on request) holds one
worker process under R runs/s for N minutes and prints its memory per minute.
``--only runs_index [--runs 100000,1000000] [--stores sqlite,postgres]`` (only on
request) times ``list_runs`` pages over that many stored runs against 20 ms.
A section may also be named without ``--only``: ``python -m bench runs_index``.
Every figure is a ratio against a baseline measured in the same invocation
(plain Python, Flowcraft, MemoryStore, Python's compile(), ...), each a median
of repeated runs, so the comparison holds on a noisy machine.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
import traceback
from typing import TYPE_CHECKING, Any

from . import compile as compile_section
from . import (
    distributed,
    engine,
    goals,
    history,
    limits,
    persistence,
    runs_index,
    scale,
    scaling,
    simulation,
    soak,
)
from ._util import Config, Table, print_tables

if TYPE_CHECKING:
    from collections.abc import Callable
    from types import ModuleType

SECTIONS: dict[str, ModuleType] = {
    "engine": engine,
    "compile": compile_section,
    "simulation": simulation,
    "persistence": persistence,
    "history": history,
    "limits": limits,
    "scale": scale,
    "scaling": scaling,
    "distributed": distributed,
}
# only when named: they take minutes
ON_REQUEST: dict[str, ModuleType] = {"soak": soak, "runs_index": runs_index}


def _only(value: str) -> list[str]:
    names = [v.strip() for v in value.split(",") if v.strip()]
    unknown = [n for n in names if n not in (*SECTIONS, *ON_REQUEST, "smoke")]
    if unknown or not names:
        raise argparse.ArgumentTypeError(
            f"unknown section(s) {', '.join(unknown) or value!r}; "
            f"choose from {', '.join([*SECTIONS, *ON_REQUEST, 'smoke'])}"
        )
    return names


def budgets(results: dict[str, list[Table]]) -> Table:
    """The performance budgets against what this invocation measured."""
    table = Table("budgets")

    def add(budget: str, target: str, measured: Any, met: bool | None) -> None:
        table.rows.append({"budget": budget, "target": target, "measured": measured, "met": met})

    if "engine" in results:
        e = engine.summary(results["engine"])
        rows = e["rows"]
        for shape, n, factor in (
            ("chain", 1000, 5),
            ("fan", 1002, 5),
            ("chain", 5000, 10),
            ("fan", 5002, 10),
        ):
            row = rows.get((shape, n))
            x = row.get("x_flowcraft") if row else None
            if row is not None:
                add(
                    f"{shape} {n} vs Flowcraft",
                    f">= {factor}x",
                    x,
                    None if x is None else x >= factor,
                )
        for shape, n in (("chain", 1000), ("fan", 1002)):
            row = rows.get((shape, n))
            if row is not None:
                us = row["overhead_us_node"]
                add(f"{shape} {n} overhead", "<= 10 us/node", us, us <= 10)
        row = rows.get(("chain", 1000))
        if row is not None:
            add(
                "chain 1000 throughput",
                ">= 100 000 nodes/s",
                row["flowkit_nodes_s"],
                row["flowkit_nodes_s"] >= 100_000,
            )
        for shape, g in e.get("growth", {}).items():
            add(
                f"{shape} growth (per-node time, largest ÷ 1 000)",
                "<= 1.25 (linear)",
                g["flowkit"],
                None if g["flowkit"] is None else g["flowkit"] <= 1.25,
            )
    if "compile" in results:
        c = compile_section.summary(results["compile"])
        if c:
            ms = c["compile"]["flow_compile_ms"]
            add(f"compile {c['compile']['statements']}-statement @flow", "< 100 ms", ms, ms < 100)
            ms = c["import"]["import_flowkit_ms"]
            add("import flowkit", "< 150 ms", ms, ms < 150)
    if "simulation" in results:
        s = simulation.summary(results["simulation"])
        add(
            f"simulate {s['virtual_days']:g} virtual days",
            "milliseconds (< 100 ms)",
            s["wall_ms"],
            s["wall_ms"] < 100,
        )
    if "persistence" in results:
        for store, r in persistence.summary(results["persistence"]).items():
            pct = r["reduction_pct"]
            add(
                f"delta vs full snapshot ({store})",
                ">= 80 % less (Flowcraft's claim: 80-95 %)",
                pct,
                None if pct is None else pct >= 80,
            )
            add(
                f"store transactions per node ({store})",
                "1",
                r["commits_node"],
                r["commits_node"] <= 1.01,
            )
    if "history" in results:
        for store, r in history.summary(results["history"]).items():
            add(
                f"history cost in node throughput ({store})",
                f"<= {history.BUDGET:.2f}x history off",
                r["cost"],
                r["within_budget"],
            )
    if "limits" in results:
        for row in limits.summary(results["limits"]):
            where = f"{row['limit']} limit ({row['store']})"
            ratio, calls = row["x_unlimited"], row["store_calls_execution"]
            add(
                f"{where}: throughput vs unlimited",
                f">= {limits.BUDGET_RATIO:.2f}x",
                ratio,
                ratio >= limits.BUDGET_RATIO,
            )
            add(
                f"{where}: store calls per execution",
                f"<= {limits.BUDGET_CALLS:g}",
                calls,
                calls <= limits.BUDGET_CALLS,
            )
    if "scale" in results:
        s = scale.summary(results["scale"])
        add(
            "sleeping runs hold no task",
            "tasks after = before, runs held = 0",
            f"{s['tasks_before']} -> {s['tasks_after']}, {s['runs_held']} held",
            s["tasks_after"] <= s["tasks_before"] and s["runs_held"] == 0,
        )
        blocks = s["py_blocks_run"]
        add(
            "sleeping runs hold no memory",
            "< 0.5 Python heap blocks per run",
            f"{blocks} blocks, {s['rss_B_run']} B RSS",
            blocks < 0.5,
        )
    if "runs_index" in results:
        worst: dict[tuple[str, int], list[dict[str, Any]]] = {}
        for row in runs_index.summary(results["runs_index"]):
            worst.setdefault((row["store"], row["runs"]), []).append(row)
        for (store, runs), rows in worst.items():
            slowest = max(rows, key=lambda r: r["p95_ms"])
            add(
                f"list_runs page over {runs} runs ({store})",
                f"<= {runs_index.BUDGET_MS:g} ms p95, by index",
                f"{slowest['p95_ms']} ms ({slowest['query']}, the slowest of {len(rows)})",
                all(r["met"] for r in rows),
            )
    table.notes.append(
        "absolute budgets (us, ms, nodes/s) depend on this machine; "
        "the ratios are the comparable part"
    )
    return table


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--quick", action="store_true", help="fewer repeats, 10 000 sleeping runs (< 5 min)"
    )
    parser.add_argument("--json", metavar="FILE", help="also write the results as JSON")
    parser.add_argument(
        "sections",
        nargs="?",
        type=_only,
        metavar="SECTION[,SECTION]",
        help="the same as --only",
    )
    parser.add_argument(
        "--only",
        type=_only,
        metavar="SECTION[,SECTION]",
        help=f"run some sections: {', '.join(SECTIONS)}, or smoke (all, tiny sizes), "
        "or soak or runs_index (only on request)",
    )
    soak_options = parser.add_argument_group("soak (--only soak)")
    soak_options.add_argument(
        "--minutes", type=float, help="how long to soak (default: 10, 1 with --quick)"
    )
    soak_options.add_argument(
        "--rate", type=float, help=f"runs started per second (default: {soak.DEFAULT_RATE:g})"
    )
    soak_options.add_argument(
        "--transport", metavar="URL", help="the worker's transport (default: SQLite, temp dir)"
    )
    soak_options.add_argument(
        "--store", metavar="URL", help="the worker's store (default: SQLite, temp dir)"
    )
    index_options = parser.add_argument_group("runs index (--only runs_index)")
    index_options.add_argument(
        "--runs",
        type=runs_index.parse_runs,
        metavar="N[,N]",
        help="stored runs to list (default: 100000,1000000; 100000 with --quick)",
    )
    index_options.add_argument(
        "--stores",
        type=runs_index.parse_stores,
        metavar="STORE[,STORE]",
        help=f"stores to fill and list (default: {','.join(runs_index.STORES)})",
    )
    parser.add_argument(
        "--no-flowcraft", action="store_true", help="skip the Flowcraft runs (no npm)"
    )
    parser.add_argument(
        "--plain", action="store_true", help="plain-text tables even if rich is installed"
    )
    args = parser.parse_args(argv)
    for value in (args.minutes, args.rate):
        if value is not None and value <= 0:
            parser.error("--minutes and --rate must be above 0")
    soak.OPTIONS.update(
        minutes=args.minutes, rate=args.rate, transport=args.transport, store=args.store
    )

    runs_index.OPTIONS.update(runs=args.runs, stores=args.stores)

    only = [*(args.only or []), *(args.sections or [])] or list(SECTIONS)
    smoke = "smoke" in only
    sections = {**SECTIONS, **ON_REQUEST}
    names = list(SECTIONS) if smoke else [n for n in sections if n in only]
    config = Config(quick=args.quick, smoke=smoke, flowcraft=not args.no_flowcraft and not smoke)
    mode = "smoke" if smoke else "quick" if args.quick else "full"
    print(
        f"flowkit bench ({mode}) on Python {platform.python_version()}, "
        f"{platform.machine()}, sections: {', '.join(names)}",
        flush=True,
    )

    results: dict[str, list[Table]] = {}
    timings: dict[str, float] = {}
    failed: list[str] = []
    for name in names:
        start = time.perf_counter()
        run: Callable[[Config], list[Table]] = sections[name].run
        try:
            tables = run(config)
        except Exception:
            failed.append(name)
            print(f"\n== {name} ==\nFAILED:\n{traceback.format_exc()}", flush=True)
            continue
        timings[name] = round(time.perf_counter() - start, 1)
        results[name] = tables
        print_tables(name, tables, use_rich=not args.plain)
    summary = budgets(results)
    if summary.rows:
        print_tables("budgets", [summary], use_rich=not args.plain)
    table = goals.table(results)
    print_tables("goals", [table], use_rich=not args.plain)
    print(f"\nsection seconds: {timings}", flush=True)
    if args.json:
        payload = {
            "mode": mode,
            "python": platform.python_version(),
            "machine": platform.machine(),
            "timestamp": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "sections": {n: [t.to_json() for t in ts] for n, ts in results.items()},
            "budgets": summary.to_json(),
            "goals": table.to_json(),
            "seconds": timings,
            "failed": failed,
        }
        with open(args.json, "w") as out:
            json.dump(payload, out, indent=2, default=str)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())

"""Scale: N sleeping runs of ``sleep 1d -> node`` on ``Runtime(store=SQLiteStore(tmp))``.

A sleeping run must be a row in the store, not a task or memory in the
process. Reported: process RSS growth per run (from
``/proc/self/statm``), store file size per run, live tasks before and after,
and runs started per second. The baseline measured in the same invocation is
the store's own bytes per run: RSS growth ÷ store bytes says how much of a
run the process keeps next to what it persisted (0 = nothing).
"""

from __future__ import annotations

import gc
import os
import shutil
import sqlite3
import sys
import tempfile
import time
from typing import Any

import anyio
import anyio.lowlevel

import flowkit
from flowkit.stores import SQLiteStore

from ._util import Config, Table, ratio, rss_bytes, sig


async def work(_: Any = None) -> str:
    return "woke"


def build() -> flowkit.Flow:
    return flowkit.Flow("nap").sleep("nap", duration="1d").node("work", work).edge("nap", "work")


def _store_bytes(path: str) -> int:
    return sum(
        os.path.getsize(path + suffix)
        for suffix in ("", "-wal", "-shm")
        if os.path.exists(path + suffix)
    )


async def measure(path: str, n: int, warm: int) -> dict[str, Any]:
    flow = build()
    store = SQLiteStore(path)
    out: dict[str, Any] = {}
    try:
        async with flowkit.Runtime(store=store) as rt:
            for _ in range(warm):  # warm-up: connection, tables, code paths, allocator pools
                result = await rt.run(flow)
                assert result.status == "awaiting", result
            gc.collect()
            await anyio.lowlevel.checkpoint()
            tasks_before = len(anyio.get_running_tasks())
            size_before = _store_bytes(path)
            half = n // 2
            marks: list[tuple[int, int]] = []  # (RSS, Python heap blocks) at n/2 and n
            start = time.perf_counter()
            for i in range(n):
                if i == half:
                    gc.collect()
                    marks.append((rss_bytes(), sys.getallocatedblocks()))
                result = await rt.run(flow)
                if result.status != "awaiting":
                    raise RuntimeError(f"a sleeping run ended {result.status}: {result.error}")
            seconds = time.perf_counter() - start
            gc.collect()
            await anyio.lowlevel.checkpoint()
            marks.append((rss_bytes(), sys.getallocatedblocks()))
            second_half = n - half
            out.update(
                seconds=seconds,
                rss_per_run=(marks[1][0] - marks[0][0]) / second_half,
                blocks_per_run=(marks[1][1] - marks[0][1]) / second_half,
                store_growth=_store_bytes(path) - size_before,
                tasks_before=tasks_before,
                tasks_after=len(anyio.get_running_tasks()),
                runs_in_memory=len(getattr(rt, "_runs", ())),
                local_timers=len(getattr(rt, "_timers", ())),
            )
    finally:
        await store.close()
    with sqlite3.connect(path) as conn:
        out["awaiting_rows"] = conn.execute(
            "SELECT count(*) FROM flowkit_runs WHERE status = 'awaiting'"
        ).fetchone()[0]
        out["timer_rows"] = conn.execute("SELECT count(*) FROM flowkit_timers").fetchone()[0]
    out["store_total"] = _store_bytes(path)
    return out


def run(config: Config) -> list[Table]:
    n = config.pick(100_000, 10_000, 200)
    warm = config.pick(1000, 500, 20)
    table = Table(f"scale: {n:,} sleeping runs (sleep 1d -> node) on SQLiteStore".replace(",", " "))
    tmp = tempfile.mkdtemp(prefix="flowkit-bench-scale-")
    try:
        m = anyio.run(measure, os.path.join(tmp, "runs.db"), n, warm)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    rss_per_run = m["rss_per_run"]
    store_per_run = m["store_growth"] / n
    table.rows.append(
        {
            "runs": n,
            "starts_s": round(n / m["seconds"]),
            "rss_B_run": sig(rss_per_run),
            "py_blocks_run": sig(m["blocks_per_run"]),
            "store_B_run": sig(store_per_run),
            "rss_vs_store": ratio(rss_per_run, store_per_run),
            "tasks_before": m["tasks_before"],
            "tasks_after": m["tasks_after"],
            "runs_held": m["runs_in_memory"],
            "awaiting_rows": m["awaiting_rows"],
        }
    )
    table.notes.append(
        "rss_B_run and py_blocks_run (sys.getallocatedblocks) are the growth from run n/2 to "
        f"run n (after {warm} warm-up runs and a full GC at each mark), per run, so the "
        f"allocator's reuse of warm-up garbage does not hide it; the store file is "
        f"{m['store_total'] / 2**20:.1f} MiB in all; runs_held = runs the Runtime keeps in "
        f"memory; {m['timer_rows']} timer rows"
    )
    if m["local_timers"]:
        table.notes.append(
            f"the Runtime's in-process timer heap holds {m['local_timers']:,} entries "
            "(one per sleeping run, although the store already indexes them)"
        )
    return [table]


def summary(tables: list[Table]) -> dict[str, Any]:
    return dict(tables[0].rows[0])

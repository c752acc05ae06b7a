"""The web console's server time: ``python -m bench.ui [--runs 100000] [--nodes 1000]``.

Not part of ``python -m bench``'s default sections (filling the store takes a minute or
two). It fills a private SQLite store with ``--runs`` runs through ``store.create_run``
(four flows, every status, a failed run's error, an ``env`` tag on every run and a
``customer`` tag on one in ten, spread over 30 days), then times
``flowkit.ui.app`` answering pages of the runs list (no filter, a status, a flow and
a tag, the second page by its cursor) and the page of one completed run of a
``--nodes``-node flow (a chain of builder nodes run by a Runtime over the same
store, so the graph, node table and state are all that size).

Server time is measured around the ASGI call itself (routing, store reads, counts,
templates, SVG), in-process, with no HTTP client or socket: the median and the
slowest of ``REPEATS`` requests after a warm-up. Budgets: a runs page <= 100 ms, the
run page <= 300 ms.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import anyio

import flowkit
from flowkit import Flow
from flowkit.core._state import RunState
from flowkit.stores import SQLiteStore
from flowkit.ui import app

REPEATS = 20
WARM_UP = 3
RUNS_BUDGET_MS = 100.0
RUN_BUDGET_MS = 300.0


FLOWS = ("orders", "billing", "emails", "reports")
STATUSES = ("completed",) * 17 + ("failed", "running", "awaiting", "cancelled")
DAYS = 30


async def fill(path: str, runs: int, now: float) -> None:
    """``runs`` runs of every status, the newest ``now``, through the public Store API."""
    store = SQLiteStore(path)
    try:
        for index in range(runs):
            run_id = f"{index:08d}-{(index * 2654435761) % 2**32:08x}"
            status = STATUSES[(index * 7) % len(STATUSES)]
            state = RunState(run_id)
            state.put("header", "status", status)
            state.put("header", "inputs", {"order_id": f"A-{index}"})
            if status == "failed":
                state.put("header", "error", {"type": "builtins.ValueError", "message": "declined"})
            tags = {"env": "prod" if index % 5 else "staging"}
            if index % 10 == 0:
                tags["customer"] = f"c-{index % 2000:04d}"
            await store.create_run(
                run_id,
                state,
                blueprint_id=FLOWS[index % len(FLOWS)],
                digest="0" * 64,
                tags=tags,
                created_at=now - DAYS * 86_400 * (1 - index / runs),
            )
    finally:
        await store.close()


async def request(asgi: Any, path: str) -> tuple[int, float]:
    """``GET path`` straight into the ASGI app: its status and the seconds it took."""
    raw_path, _, query = path.partition("?")
    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "GET",
        "scheme": "http",
        "path": raw_path,
        "raw_path": raw_path.encode(),
        "query_string": query.encode(),
        "root_path": "",
        "headers": [(b"host", b"bench"), (b"accept", b"text/html")],
        "client": ("127.0.0.1", 1),
        "server": ("127.0.0.1", 80),
    }
    status = 0

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        nonlocal status
        if message["type"] == "http.response.start":
            status = message["status"]

    started = time.perf_counter()
    await asgi(scope, receive, send)
    return status, time.perf_counter() - started


async def timed(asgi: Any, path: str) -> tuple[float, float]:
    """Median and slowest milliseconds of ``REPEATS`` GETs of ``path``."""
    for _ in range(WARM_UP):
        status, _ = await request(asgi, path)
        assert status == 200, f"GET {path} answered {status}"
    times = [(await request(asgi, path))[1] * 1000 for _ in range(REPEATS)]
    return statistics.median(times), max(times)


def chain(nodes: int) -> Flow:
    async def step(x: int) -> int:
        return x + 1

    flow = Flow(f"chain{nodes}")
    for index in range(nodes):
        flow = flow.node(f"step{index:04d}", step)
        if index:
            flow = flow.edge(f"step{index - 1:04d}", f"step{index:04d}")
    return flow


async def big_run(path: str, nodes: int) -> tuple[str, Flow]:
    flow = chain(nodes)
    async with flowkit.Runtime(store=SQLiteStore(path)) as rt:
        result = await rt.run(flow, x=0)
    return result.run_id, flow


async def measure(path: str, runs: int, nodes: int) -> list[tuple[str, float, float, float]]:
    run_id, flow = await big_run(path, nodes)
    store = SQLiteStore(path)
    try:
        asgi = app(store=store, flows=[flow])
        first = await store.list_runs(limit=50)
        rows = []
        for label, page in (
            (f"runs page, {runs:,} runs", "/runs"),
            ("runs page, status=failed", "/runs?status=failed"),
            ("runs page, flow + tag", "/runs?flow=orders&tag=env%3Dprod"),
            ("runs page, second page", f"/runs?cursor={first.cursor}"),
            ("runs page, live part", "/runs?partial=1"),
        ):
            rows.append((label, *await timed(asgi, page), RUNS_BUDGET_MS))
        label = f"run page, {nodes:,} nodes"
        rows.append((label, *await timed(asgi, f"/runs/{run_id}"), RUN_BUDGET_MS))
        return rows
    finally:
        await store.close()


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.ui", description=__doc__)
    parser.add_argument("--runs", type=int, default=100_000)
    parser.add_argument("--nodes", type=int, default=1_000)
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="flowkit-bench-ui-") as tmp:
        path = str(Path(tmp) / "runs.db")
        started = time.perf_counter()
        anyio.run(fill, path, args.runs, time.time())
        print(f"ui: filled {args.runs:,} runs in {time.perf_counter() - started:.1f}s", flush=True)
        rows = anyio.run(measure, path, args.runs, args.nodes, backend="asyncio")
    print(f"{'page':36} {'median ms':>10} {'max ms':>8} {'budget':>7}")
    over = False
    for label, median, slowest, budget in rows:
        verdict = "ok" if median <= budget else "OVER"
        over = over or median > budget
        print(f"{label:36} {median:10.1f} {slowest:8.1f} {budget:6.0f}  {verdict}")
    return 1 if over else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

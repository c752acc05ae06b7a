"""Schedules across worker processes: two ``python -m flowkit.worker`` processes on one
SQLite store, and three on a PostgreSQL store and queue (a fresh database) for 30 ticks,
start exactly one run per tick between them, and a worker killed with SIGKILL mid-way
leaves no tick without its run (the survivors carry on, and start what the killed one
decided but had not started).

The app (a module written to ``tmp_path``) defines an every-second schedule at module
level, which ``--app`` brings along. The test waits for the store to hold the runs it
expects (reading it every 0.2 s up to a deadline); it asserts on run ids, never on
times.
"""

from __future__ import annotations

import os
import textwrap
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import anyio
import pytest

from flowkit.stores import SQLiteStore
from flowkit.stores import from_url as store_from_url

if TYPE_CHECKING:
    from pathlib import Path

pytestmark = [pytest.mark.e2e, pytest.mark.anyio]

APP = """
    import flowkit
    from flowkit import flow

    @flow
    async def beat(n: int) -> int:
        return n

    every_second = flowkit.Schedule(
        beat, every="1s", inputs={"n": 1}, overlap="allow", catchup="all"
    )
"""
START_TIMEOUT = 30.0
WAIT = 60.0  # seconds the runs a step expects may take to appear


def tick_of(run_id: str) -> float:
    stamp = run_id.removeprefix("beat@").removesuffix("Z")
    return datetime.fromisoformat(stamp).replace(tzinfo=UTC).timestamp()


async def scheduled(store: Any) -> list[str]:
    page = await store.list_runs(tags={"schedule": "beat"}, limit=1000)
    return sorted(run.run_id for run in page.runs)


async def until_at_least(store: Any, count: int) -> list[str]:
    with anyio.fail_after(WAIT):  # another process writes them: read until they are there
        while True:
            found = await scheduled(store)
            if len(found) >= count:
                return found
            await anyio.sleep(0.2)


@pytest.mark.timeout(240)
async def test_two_worker_processes_one_killed(worker_processes: Any, tmp_path: Path) -> None:
    (tmp_path / "sched_app.py").write_text(textwrap.dedent(APP))
    env = {"PYTHONPATH": os.pathsep.join([str(tmp_path), worker_processes.env["PYTHONPATH"]])}
    args = [
        "--app", "sched_app",
        "--store", f"sqlite:///{tmp_path / 'runs.db'}",
        "--transport", f"sqlite:///{tmp_path / 'queue.db'}",
        "--log-format", "json",
    ]  # fmt: skip
    workers = [worker_processes.start(*args, env=env) for _ in range(2)]
    for worker in workers:
        await worker.wait_for_line("worker started", START_TIMEOUT)
    store = SQLiteStore(tmp_path / "runs.db")
    try:
        before = await until_at_least(store, 5)
        workers[0].kill()
        await workers[0].wait(10.0)
        after = await until_at_least(store, len(before) + 5)
    finally:
        await store.close()
    assert_one_run_per_tick(before, after)


@pytest.mark.timeout(300)
async def test_three_worker_processes_on_postgresql_for_30_ticks(
    worker_processes: Any, pg_database: str, tmp_path: Path
) -> None:
    (tmp_path / "sched_app.py").write_text(textwrap.dedent(APP))
    env = {"PYTHONPATH": os.pathsep.join([str(tmp_path), worker_processes.env["PYTHONPATH"]])}
    args = ["--app", "sched_app", "--store", pg_database, "--transport", pg_database,
            "--log-format", "json"]  # fmt: skip
    store = store_from_url(pg_database)
    try:
        # connected before the workers connect: a server at its connection limit (other
        # suites share it) can refuse a newcomer, not the test's reads
        assert [] == await scheduled(store)
        workers = [worker_processes.start(*args, env=env) for _ in range(3)]
        for worker in workers:
            await worker.wait_for_line("worker started", START_TIMEOUT)
        before = await until_at_least(store, 15)
        workers[1].kill()
        await workers[1].wait(10.0)
        after = await until_at_least(store, 30)
    finally:
        await store.close()
    assert_one_run_per_tick(before, after)


def assert_one_run_per_tick(before: list[str], after: list[str]) -> None:
    """The runs seen before the kill are still the first ones, and the runs' ticks are
    consecutive seconds: no tick twice, none missing."""
    assert after[: len(before)] == before
    ticks = [tick_of(run_id) for run_id in after]
    expected = [ticks[0] + n for n in range(len(ticks))]
    assert expected == ticks, "one run per tick: no tick twice, none missing"
    assert all(run_id.startswith("beat@") for run_id in after)

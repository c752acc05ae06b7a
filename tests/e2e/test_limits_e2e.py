"""Concurrency limits across worker processes, with one SIGKILLed mid-node.

Three ``python -m flowkit.worker`` processes on a PostgreSQL queue and store (a
fresh database) run ``flows_limits.limited``: six executions of ``hold`` for
account ``a`` (limited to two at once) and two for ``b``. Once an execution of
``a`` runs, its worker is SIGKILLed while it holds a slot. The slot is not
orphaned: it expires with its lease, the killed dispatch is run again, and the
run completes. Every execution's start and end (the kill, for the killed one) is
recorded, and at no instant do more than two executions of one account overlap.
"""

from __future__ import annotations

import sqlite3
import time
from typing import TYPE_CHECKING, Any

import anyio
import pytest
from flows_limits import SCHEMA, limited

from flowkit import Client, RunStatus
from flowkit.stores import from_url as store_from_url
from flowkit.transports import from_url as transport_from_url

if TYPE_CHECKING:
    from pathlib import Path

pytestmark = [pytest.mark.anyio, pytest.mark.e2e]

LEASE = 2.0
BOUND = 90.0
ACCOUNTS = ["a"] * 6 + ["b"] * 2


def _rows(effects: Path) -> list[tuple[str, str, int, float, float | None]]:
    conn = sqlite3.connect(effects, timeout=30)
    try:
        return conn.execute(
            "SELECT execution, account, pid, started, ended FROM executions"
        ).fetchall()
    finally:
        conn.close()


def most_at_once(intervals: list[tuple[float, float]]) -> int:
    """The most intervals that overlap at one instant (one ending as another starts: apart)."""
    edges = sorted([(end, -1) for _, end in intervals] + [(start, 1) for start, _ in intervals])
    running = peak = 0
    for _, step in edges:
        running += step
        peak = max(peak, running)
    return peak


class TestMostAtOnce:
    """The overlap count the fault test relies on."""

    def test_counts_overlaps(self) -> None:
        assert 2 == most_at_once([(0, 2), (1, 3), (2, 4)])
        assert 3 == most_at_once([(0, 5), (1, 3), (2, 4)])
        assert 0 == most_at_once([])


async def _running_execution(effects: Path, account: str, workers: Any) -> tuple[int, float]:
    """The pid of a worker running an execution of ``account`` now, and when it started."""
    while True:
        assert workers.running, "every worker exited"
        for _, acct, pid, started, ended in _rows(effects):
            if acct == account and ended is None:
                return pid, started
        await anyio.sleep(0.05)  # polling a table written by other processes


@pytest.mark.timeout(BOUND + 30)
async def test_a_killed_workers_slot_frees_with_its_lease(
    pg_database: str, worker_processes: Any, tmp_path: Path
) -> None:
    effects = tmp_path / "effects.db"
    with sqlite3.connect(effects) as conn:
        conn.execute(SCHEMA)
    conn.close()
    args = ["--app", "flows_limits", "--transport", pg_database, "--store", pg_database,
            "--lease", str(LEASE), "--log-format", "json"]  # fmt: skip
    env = {"FLOWKIT_LIMITS_EFFECTS": str(effects)}
    workers = {w.pid: w for w in (worker_processes.start(*args, env=env) for _ in range(3))}
    transport, store = transport_from_url(pg_database), store_from_url(pg_database)
    try:
        client = Client(transport, store, flows=[limited], lease=LEASE)
        with anyio.fail_after(BOUND):
            handle = await client.start(limited, accounts=ACCOUNTS)
            pid, _ = await _running_execution(effects, "a", worker_processes)
            workers[pid].kill()  # SIGKILL, while it holds a slot of account a
            killed_at = time.time()
            result = await handle.result()
            # a duplicate of a dispatch that completed elsewhere may still be being cancelled
            while True:
                if all(row[4] is not None or row[2] == pid for row in _rows(effects)):
                    break
                await anyio.sleep(0.05)  # polling a table written by other processes
    finally:
        await transport.close()
        await store.close()
    assert (RunStatus.COMPLETED, ACCOUNTS) == (result.status, result.output)
    rows = _rows(effects)
    cut = [row for row in rows if row[4] is None]
    assert cut, "the killed worker was running an execution"
    assert {pid} == {row[2] for row in cut}, "only the killed worker's executions never ended"
    for account in ("a", "b"):
        spans = [
            (s, e if e is not None else killed_at) for _, acct, _, s, e in rows if acct == account
        ]
        assert most_at_once(spans) <= 2, f"account {account}: {sorted(spans)}"
    after = sorted(s for _, acct, _, s, _ in rows if acct == "a" and s > killed_at)
    assert after, "the killed execution ran again once its slot and dispatch leases expired"
    print(
        f"\nfirst start of account a after the kill: {after[0] - killed_at:.2f}s (lease {LEASE}s)"
    )

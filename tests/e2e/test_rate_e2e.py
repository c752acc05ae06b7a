"""A rate limit across worker processes: 10 starts a second on one key, three workers.

Three ``python -m flowkit.worker`` processes on a PostgreSQL queue and store (a fresh
database) run ``flows_limits.ticking``: ``COUNT`` executions of ``tick``, all for one
tenant, limited to ``TICK_RATE`` a second (about 20 s of work). Every worker records
its bucket's answers (when it was asked, its level, how many tokens it reserved):
from them, the times the tokens were granted. The safety property holds exactly on
those times, whatever the machine's speed: in no window did the bucket grant more
than the rate allows (``rate * window + capacity``). Every execution ran (delayed,
not failed). The overall rate measured is printed, not asserted (a busy machine may
be slower; speed is the benchmarks' business).
"""

from __future__ import annotations

import sqlite3
from typing import TYPE_CHECKING, Any

import anyio
import pytest
from flows_limits import RATE_SCHEMA, TICK_RATE, ticking
from rates import granted_at, most_beyond_rate

from flowkit import Client, RunStatus
from flowkit.stores import from_url as store_from_url
from flowkit.transports import from_url as transport_from_url

if TYPE_CHECKING:
    from pathlib import Path

pytestmark = [pytest.mark.anyio, pytest.mark.e2e]

COUNT = 200  # executions: 20 s at 10 a second
BOUND = 60.0


def _read(effects: Path, query: str) -> list[Any]:
    conn = sqlite3.connect(effects, timeout=30)
    try:
        return conn.execute(query).fetchall()
    finally:
        conn.close()


@pytest.mark.timeout(BOUND + 30)
async def test_three_workers_keep_one_rate(
    pg_database: str, worker_processes: Any, tmp_path: Path
) -> None:
    effects = tmp_path / "effects.db"
    with sqlite3.connect(effects) as conn:
        for statement in RATE_SCHEMA:
            conn.execute(statement)
    conn.close()
    args = ["--app", "flows_limits", "--transport", pg_database, "--store", pg_database,
            "--log-format", "json"]  # fmt: skip
    env = {"FLOWKIT_LIMITS_EFFECTS": str(effects), "FLOWKIT_LIMITS_RECORD_GRANTS": "1"}
    for _ in range(3):
        worker_processes.start(*args, env=env)
    tenants = ["t"] * COUNT
    transport, store = transport_from_url(pg_database), store_from_url(pg_database)
    try:
        client = Client(transport, store, flows=[ticking])
        with anyio.fail_after(BOUND):
            result = await client.run(ticking, tenants=tenants)
    finally:
        await transport.close()
        await store.close()
    assert (RunStatus.COMPLETED, tenants) == (result.status, result.output)
    answers = _read(effects, "SELECT pid, now, level, count FROM grants")
    granted = sorted(
        at for _, now, level, count in answers for at in granted_at(now, level, count, TICK_RATE)
    )
    ran = _read(effects, "SELECT pid, started FROM ticks")
    assert len(ran) >= COUNT, "every execution ran"
    assert len(granted) >= len(ran), "every execution had a token"
    assert len({pid for pid, *_ in answers}) > 1, "the workers shared the bucket"
    beyond = most_beyond_rate(granted, TICK_RATE, 1.0)
    assert beyond <= 1e-3, f"{beyond:.3f} tokens beyond the rate in one window"  # (floats)
    span = granted[-1] - granted[0]
    starts = sorted(started for _, started in ran)
    print(
        f"\n{len(granted)} tokens granted over {span:.2f}s by {len(answers)} store calls "
        f"from 3 workers: {(len(granted) - 1) / span:.2f}/s (limit {TICK_RATE:g}/s); "
        f"{len(ran)} executions started over {starts[-1] - starts[0]:.2f}s: "
        f"{(len(ran) - 1) / (starts[-1] - starts[0]):.2f}/s"
    )

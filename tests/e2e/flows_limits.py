"""The flows of ``test_limits_e2e``, imported by the worker processes (``--app flows_limits``).

``hold`` is limited to two executions at once per account. Each execution writes a
row when it starts and updates it when it ends, in the SQLite file named by
``FLOWKIT_LIMITS_EFFECTS``: ``(execution, pid, started, ended)`` with times from
``time.time()`` (one machine, one clock for every process).

``tick`` is limited to ``TICK_RATE`` starts a second per tenant. Each execution writes
a row to ``ticks``; and every answer of the store's bucket (``reserve_tokens``: when
it was asked, its level, how many tokens) is written to ``grants`` by a wrapper of
the store this module installs in each worker process: the tokens' grant times, as
the bucket decided them, whatever the machine's speed.
"""

from __future__ import annotations

import os
import secrets
import sqlite3
import time
from typing import Any

import anyio

import flowkit

HOLD_SECONDS = 1.0  # how long an execution keeps its slot
SCHEMA = (
    "CREATE TABLE IF NOT EXISTS executions (execution TEXT PRIMARY KEY, account TEXT,"
    " pid INTEGER, started REAL, ended REAL)"
)
TICK_RATE = 10.0
RATE_SCHEMA = (
    "CREATE TABLE IF NOT EXISTS ticks (execution TEXT PRIMARY KEY, pid INTEGER, started REAL)",
    "CREATE TABLE IF NOT EXISTS grants (pid INTEGER, now REAL, level REAL, count INTEGER)",
)


def _write(query: str, params: tuple[object, ...]) -> None:
    conn = sqlite3.connect(os.environ["FLOWKIT_LIMITS_EFFECTS"], timeout=30)
    try:
        with conn:
            conn.execute(query, params)
    finally:
        conn.close()


@flowkit.node(concurrency=flowkit.Limit(max=2, key="account"))
async def hold(account: str) -> str:
    execution = secrets.token_hex(6)
    await anyio.to_thread.run_sync(
        _write,
        "INSERT INTO executions VALUES (?, ?, ?, ?, NULL)",
        (execution, account, os.getpid(), time.time()),
    )
    try:
        await anyio.sleep(HOLD_SECONDS)  # the work itself, holding the slot
    finally:  # a duplicate cancelled because its dispatch completed elsewhere ends too
        with anyio.CancelScope(shield=True):
            await anyio.to_thread.run_sync(
                _write,
                "UPDATE executions SET ended = ? WHERE execution = ?",
                (time.time(), execution),
            )
    return account


@flowkit.flow
async def limited(accounts: list[str]) -> list[str]:
    return await flowkit.flow.map(hold, accounts, concurrency=50)


@flowkit.node(rate="10/s", key="tenant")
async def tick(tenant: str) -> str:
    await anyio.to_thread.run_sync(
        _write,
        "INSERT INTO ticks VALUES (?, ?, ?)",
        (secrets.token_hex(6), os.getpid(), time.time()),
    )
    return tenant


@flowkit.flow
async def ticking(tenants: list[str]) -> list[str]:
    return await flowkit.flow.map(tick, tenants, concurrency=1000)


def _record_grants() -> None:
    """Record every answer of the PostgreSQL store's buckets in ``grants``."""
    from flowkit.stores import PostgresStore

    reserve_tokens = PostgresStore.reserve_tokens

    async def recorded(self: PostgresStore, limit_id: str, key: str, **options: Any) -> float:
        level = await reserve_tokens(self, limit_id, key, **options)
        await anyio.to_thread.run_sync(
            _write,
            "INSERT INTO grants VALUES (?, ?, ?, ?)",
            (os.getpid(), options["now"], level, options["count"]),
        )
        return level

    PostgresStore.reserve_tokens = recorded  # type: ignore[method-assign]


if os.environ.get("FLOWKIT_LIMITS_RECORD_GRANTS"):
    _record_grants()

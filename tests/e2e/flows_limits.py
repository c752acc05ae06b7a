"""The flow of ``test_limits_e2e``, imported by the worker processes (``--app flows_limits``).

``hold`` is limited to two executions at once per account. Each execution writes a
row when it starts and updates it when it ends, in the SQLite file named by
``FLOWKIT_LIMITS_EFFECTS``: ``(execution, pid, started, ended)`` with times from
``time.time()`` (one machine, one clock for every process).
"""

from __future__ import annotations

import os
import secrets
import sqlite3
import time

import anyio

import flowkit

HOLD_SECONDS = 1.0  # how long an execution keeps its slot
SCHEMA = (
    "CREATE TABLE IF NOT EXISTS executions (execution TEXT PRIMARY KEY, account TEXT,"
    " pid INTEGER, started REAL, ended REAL)"
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

"""The flows of the fault tests, served by worker processes (``--app faults.flows_faults``).

* ``chain(n)`` — five nodes in a row: ``n + 0 + 1 + 2 + 3 + 4``;
* ``fan(n)`` — ten parallel nodes gathered by a final one: ``sum(n * i for i < 10)``.

Every node execution appends ``(idempotency_key, run_id, activation, worker)`` to
the ``executions`` table of the test's PostgreSQL schema (:data:`SCHEMA_ENV`), so
a test sees re-executions and checks that each activation — the node's own
arguments name it, ``link:2`` is the chain's third node — ran under one key.
"""

from __future__ import annotations

import os
import threading
from typing import Any

import anyio

import flowkit
from flowkit import flow, node

DSN = os.environ.get("FLOWKIT_TEST_POSTGRES", "postgresql://postgres@127.0.0.1:5432/test")
SCHEMA_ENV = "FLOWKIT_FAULTS_SCHEMA"
CHAIN_LINKS = 5
FAN_WIDTH = 10
NODE_SECONDS = 0.02  # each node's "work"
GATE_ENV = "FLOWKIT_FAULTS_GATE"
"""A file: while it exists, every node waits once it has recorded its execution (the test
holds the load in flight, none of it completing)."""

_lock = threading.Lock()
_conn: Any = None


def create_executions(schema: str) -> None:
    """The schema's executions table (the schema exists)."""
    import psycopg

    with psycopg.connect(DSN, autocommit=True) as conn:
        conn.execute(
            f"CREATE TABLE {schema}.executions (id BIGSERIAL PRIMARY KEY, "
            "idempotency_key TEXT NOT NULL, run_id TEXT NOT NULL, activation TEXT NOT NULL, "
            "worker TEXT NOT NULL)"
        )


def read_executions(schema: str) -> list[tuple[str, str, str, str]]:
    """``(idempotency_key, run_id, activation, worker)`` of every execution so far."""
    import psycopg

    with psycopg.connect(DSN) as conn:
        rows = conn.execute(
            f"SELECT idempotency_key, run_id, activation, worker FROM {schema}.executions "
            "ORDER BY id"
        ).fetchall()
    return [(str(a), str(b), str(c), str(d)) for a, b, c, d in rows]


def _record(key: str, run_id: str, activation: str) -> None:
    import psycopg

    global _conn
    schema = os.environ[SCHEMA_ENV]
    with _lock:  # one connection per process: the shared server has few to spare
        if _conn is None or _conn.closed:
            _conn = psycopg.connect(DSN, autocommit=True)
        _conn.execute(
            f"INSERT INTO {schema}.executions (idempotency_key, run_id, activation, worker) "
            "VALUES (%s, %s, %s, %s)",
            (key, run_id, activation, str(os.getpid())),
        )


async def executed(activation: str) -> None:
    """Record this execution, then do a little "work"."""
    ctx = flowkit.context()
    await anyio.to_thread.run_sync(_record, ctx.idempotency_key, ctx.run_id, activation)
    gate = os.environ.get(GATE_ENV)
    if gate:
        await _through(anyio.Path(gate))
    await anyio.sleep(NODE_SECONDS)


async def _through(gate: anyio.Path) -> None:
    """Return once ``gate`` (a file the test removes) is gone."""
    while True:
        if not await gate.exists():
            return
        await anyio.sleep(0.01)  # another process removes it: nothing to await here


@node
async def link(x: int, i: int) -> int:
    await executed(f"link:{i}")
    return x + i


@node
async def leaf(n: int, i: int) -> int:
    await executed(f"leaf:{i}")
    return n * i


@node
async def total(values: list[int]) -> int:
    await executed("total")
    return sum(values)


@flow
async def chain(n: int) -> int:
    x = await link(n, 0)
    x = await link(x, 1)
    x = await link(x, 2)
    x = await link(x, 3)
    return await link(x, 4)


@flow
async def fan(n: int) -> int:
    values = await flow.gather(
        leaf(n, 0), leaf(n, 1), leaf(n, 2), leaf(n, 3), leaf(n, 4),
        leaf(n, 5), leaf(n, 6), leaf(n, 7), leaf(n, 8), leaf(n, 9),
    )  # fmt: skip
    return await total(list(values))


FLOWS: dict[str, Any] = {"chain": chain, "fan": fan}


def expected_output(shape: str, n: int) -> int:
    if shape == "chain":
        return n + sum(range(CHAIN_LINKS))
    return sum(n * i for i in range(FAN_WIDTH))


def activations(shape: str) -> set[str]:
    """The activations one completed run of ``shape`` records."""
    if shape == "chain":
        return {f"link:{i}" for i in range(CHAIN_LINKS)}
    return {f"leaf:{i}" for i in range(FAN_WIDTH)} | {"total"}

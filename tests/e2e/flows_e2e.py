"""The flow the end-to-end tests run on a pool of worker processes (``--app flows_e2e``).

``pipeline(n)`` exercises every construct that has to survive distribution:
a fan-out/fan-in (``flow.gather``), a durable ``flow.sleep``, a ``flow.wait``
resumed by ``Client.signal``, a ``flow.map`` over a few items and a ``for`` loop
calling a node. Its output is a pure function of ``n`` and the signal's payload
(:func:`expected_output`), so a test checks every run's result exactly.

Every node records its side effect in PostgreSQL under
``flowkit.context().idempotency_key``, in tables named from a prefix
(:class:`Tables`):

* ``{prefix}_effects(idempotency_key PRIMARY KEY, run_id, activation, ...)`` —
  ``INSERT ... ON CONFLICT DO NOTHING``: the idempotent side effect itself;
* ``{prefix}_executions(idempotency_key, run_id, activation, pid, worker, ...)``
  — append-only, one row per execution, so re-executions (a redelivery, a
  worker killed mid-node) are visible but harmless. ``worker`` is the process
  id, or the name an in-process test set in :data:`WORKER` for a Worker's task;
* ``{prefix}_traps(id, hold, worker, idempotency_key)`` — a test inserts a row
  to set a *trap*: the next node any worker runs records its side effect, claims
  the trap (writing its worker and key there) and then takes ``hold`` seconds,
  so the test can kill or stop that worker while it is certainly inside a node
  whose effect happened but whose completion did not. (Trapping whichever
  worker comes first, not a chosen one: a chosen worker may get no work at all
  for a while — its Kafka partitions went to the others, its SQLite poll lost
  every race.)

``activation`` names the logical node activation from the node's own arguments
(``step:2`` is the third loop iteration, ``square:1`` the second map item), so
a test can check that each activation was recorded under exactly one key. The
prefix and DSN come from the environment (:data:`TABLES_ENV`, :data:`DSN_ENV`),
so each test has its own tables.
"""

from __future__ import annotations

import contextlib
import contextvars
import os
import threading
from typing import TYPE_CHECKING, Any, NamedTuple

import anyio

import flowkit
from flowkit import flow, node

if TYPE_CHECKING:
    from collections.abc import Iterator

TABLES_ENV = "FLOWKIT_E2E_TABLES"
DSN_ENV = "FLOWKIT_E2E_DSN"
DEFAULT_DSN = os.environ.get("FLOWKIT_TEST_POSTGRES", "postgresql://postgres@127.0.0.1:5432/test")
NODE_SECONDS = 0.03  # each node's "work"
# the compiler needs literals in the flow body; these name the same values for the tests
SLEEP_SECONDS = 0.2
MAP_ITEMS = (0, 1, 2)
LOOP_STEPS = 3
WAIT_NAME = "approval"

# which worker executes a node: the process id, or a name in-process tests set per Worker task
WORKER: contextvars.ContextVar[str | None] = contextvars.ContextVar(
    "flows_e2e_worker", default=None
)


# -- side effects -----------------------------------------------------------------------------


class Tables(NamedTuple):
    effects: str
    executions: str
    traps: str


def tables(prefix: str | None = None) -> Tables:
    """The table names for ``prefix`` (default: from the environment)."""
    prefix = prefix or os.environ.get(TABLES_ENV)
    if not prefix or not prefix.replace("_", "").isalnum():
        raise RuntimeError(f"set {TABLES_ENV} to a table-name prefix (letters, digits and _)")
    return Tables(f"{prefix}_effects", f"{prefix}_executions", f"{prefix}_traps")


def create_tables(dsn: str, prefix: str) -> None:
    import psycopg

    names = tables(prefix)
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(
            f"CREATE TABLE {names.effects} (idempotency_key TEXT PRIMARY KEY, "
            "node_id TEXT NOT NULL, run_id TEXT NOT NULL, activation TEXT NOT NULL)"
        )
        conn.execute(
            f"CREATE TABLE {names.executions} (id BIGSERIAL PRIMARY KEY, "
            "idempotency_key TEXT NOT NULL, node_id TEXT NOT NULL, run_id TEXT NOT NULL, "
            "activation TEXT NOT NULL, attempt INTEGER NOT NULL, pid INTEGER NOT NULL, "
            "worker TEXT NOT NULL, at TIMESTAMPTZ NOT NULL DEFAULT clock_timestamp())"
        )
        conn.execute(
            f"CREATE TABLE {names.traps} (id BIGSERIAL PRIMARY KEY, "
            "hold DOUBLE PRECISION NOT NULL, worker TEXT, idempotency_key TEXT)"
        )


def drop_tables(dsn: str, prefix: str) -> None:
    import psycopg

    with psycopg.connect(dsn, autocommit=True) as conn:
        for table in tables(prefix):
            conn.execute(f"DROP TABLE IF EXISTS {table}")


# A few connections per process, shared by the worker threads that record effects: one
# per thread grew to one per concurrent node (32 a worker), and a few worker processes
# of concurrent test suites exhausted PostgreSQL's max_connections.
EFFECT_CONNECTIONS = 2
_slots = threading.BoundedSemaphore(EFFECT_CONNECTIONS)
_idle: list[Any] = []
_opened: list[Any] = []
_opened_lock = threading.Lock()


@contextlib.contextmanager
def _connection() -> Iterator[Any]:
    """One of this process's connections, for the block (opened when none is idle)."""
    import psycopg

    with _slots:
        with _opened_lock:
            conn = _idle.pop() if _idle else None
        if conn is None or conn.closed:
            conn = psycopg.connect(os.environ.get(DSN_ENV, DEFAULT_DSN), autocommit=True)
            with _opened_lock:
                _opened.append(conn)
        try:
            yield conn
        finally:
            with _opened_lock:
                _idle.append(conn)


def close_connections() -> None:
    """Close every connection the nodes opened in this process (in-process tests call it)."""
    with _opened_lock:
        opened, _opened[:], _idle[:] = list(_opened), [], []
    for conn in opened:
        conn.close()


def _record(
    key: str, node_id: str, run_id: str, activation: str, attempt: int, worker: str
) -> float | None:
    """Record the execution and the side effect; the hold of a trap this execution sprang."""
    names = tables()
    with _connection() as conn, conn.transaction():
        conn.execute(
            f"INSERT INTO {names.executions} (idempotency_key, node_id, run_id, activation, "
            "attempt, pid, worker) VALUES (%s, %s, %s, %s, %s, %s, %s)",
            (key, node_id, run_id, activation, attempt, os.getpid(), worker),
        )
        conn.execute(
            f"INSERT INTO {names.effects} (idempotency_key, node_id, run_id, activation)"
            " VALUES (%s, %s, %s, %s) ON CONFLICT DO NOTHING",
            (key, node_id, run_id, activation),
        )
        sprung = conn.execute(
            f"UPDATE {names.traps} SET idempotency_key = %s, worker = %s "
            f"WHERE id = (SELECT min(id) FROM {names.traps} WHERE idempotency_key IS NULL) "
            "AND idempotency_key IS NULL RETURNING hold",
            (key, worker),
        ).fetchone()
    return None if sprung is None else float(sprung[0])


async def side_effect(activation: str) -> None:
    """Record this node execution, then do a little "work" (or hold on, if trapped)."""
    ctx = flowkit.context()
    worker = WORKER.get() or str(os.getpid())
    hold = await anyio.to_thread.run_sync(
        _record, ctx.idempotency_key, ctx.node_id, ctx.run_id, activation, ctx.attempt, worker
    )
    await anyio.sleep(NODE_SECONDS if hold is None else hold)


# -- the flow ---------------------------------------------------------------------------------


@node
async def prepare(n: int) -> int:
    await side_effect("prepare")
    return n * 10


@node
async def left(base: int) -> int:
    await side_effect("left")
    return base + 1


@node
async def right(base: int) -> int:
    await side_effect("right")
    return base + 2


@node
async def square(item: int) -> int:
    await side_effect(f"square:{item}")
    return item * item


@node
async def step(total: int, i: int) -> int:
    await side_effect(f"step:{i}")
    return total + i


@node
async def finish(total: int, squares: list[int], bonus: int) -> dict[str, Any]:
    await side_effect("finish")
    return {"total": total, "squares": squares, "bonus": bonus}


@flow
async def pipeline(n: int) -> dict[str, Any]:
    base = await prepare(n)
    a, b = await flow.gather(left(base), right(base))
    await flow.sleep(0.2)
    decision = await flow.wait("approval", timeout="10m")
    squares = await flow.map(square, [0, 1, 2], concurrency=3)
    total = a + b
    for i in range(3):
        total = await step(total, i)
    return await finish(total, squares, decision["bonus"])


def expected_output(n: int, bonus: int) -> dict[str, Any]:
    base = n * 10
    total = (base + 1) + (base + 2) + sum(range(LOOP_STEPS))
    return {"total": total, "squares": [i * i for i in MAP_ITEMS], "bonus": bonus}


# every activation a completed run records, by the name ``side_effect`` gives it
ACTIVATIONS = frozenset(
    {"prepare", "left", "right", "finish"}
    | {f"square:{i}" for i in MAP_ITEMS}
    | {f"step:{i}" for i in range(LOOP_STEPS)}
)


# -- a one-node flow for the garbage-message tests (no side effects) -----------------------------


@node
async def plus_one(x: int) -> int:
    return x + 1


@flow
async def ping(x: int) -> int:
    return await plus_one(x)

"""Delta persistence: bytes written per step against a full snapshot, per store.

A chain of N builder nodes each writes a new ~1 KB value into
``flowkit.context().state`` (the state grows to ~N KB, ~1 MB at N = 1 000).
It runs on ``Runtime(store=...)`` with each reachable store. For every store:

* bytes written per step: ``stats.bytes_written / stats.commits`` (the deltas),
  and with the periodic snapshots the stores take (every 64 versions) added;
* a full snapshot per step: the length of the JSON of the whole run state at
  every commit (what a snapshot-per-step store would write), averaged;
* store transactions (commits) and round trips per node (SQLite: hops to its
  worker thread; PostgreSQL: statements sent; Redis: commands sent);
* nodes/s relative to MemoryStore (and to no store at all), same invocation.

A second table (bench/durable.py): a durable 100-step chain on PostgreSQL,
flowkit against DBOS on the same server.
"""

from __future__ import annotations

import gc
import hashlib
import os
import shutil
import statistics
import tempfile
import time
import uuid
from contextlib import asynccontextmanager, suppress
from typing import TYPE_CHECKING, Any

import anyio

import flowkit
from flowkit.stores import MemoryStore, SQLiteStore
from flowkit.stores._codec import encode_state

from ._util import Config, Table, ratio, reachable

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Callable

POSTGRES_URL = os.environ.get("FLOWKIT_BENCH_POSTGRES", "postgresql://postgres@127.0.0.1:5432/test")
REDIS_URL = os.environ.get("FLOWKIT_BENCH_REDIS", "redis://127.0.0.1:6379/0")
PG_SCHEMA = f"flowkit_bench_{os.getpid()}"  # own schema, dropped afterwards
VALUE_SIZE = 1000


def value(i: int) -> str:
    """~1 KB of ASCII, different for every node."""
    digest = hashlib.sha256(str(i).encode()).hexdigest()
    return (digest * (VALUE_SIZE // len(digest) + 1))[:VALUE_SIZE]


async def put(previous: Any = 0) -> int:
    """One step: write a new ~1 KB value into the run's state."""
    i = int(previous or 0) + 1
    flowkit.context().state[f"k{i:05d}"] = value(i)
    return i


def build(n: int) -> flowkit.Flow:
    flow = flowkit.Flow(f"grow-{n}")
    for i in range(n):
        flow.node(f"p{i}", put)
        if i:
            flow.edge(f"p{i - 1}", f"p{i}")
    return flow


# -- instrumentation (one untimed run per store) ----------------------------------------------


class _SnapshotProbe:
    """A store wrapper that measures the full state's JSON at every commit."""

    def __init__(self, inner: Any) -> None:
        self._inner = inner
        self.sizes: list[int] = []

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)

    @asynccontextmanager
    async def transaction(self, run_id: str) -> AsyncIterator[Any]:
        async with self._inner.transaction(run_id) as txn:
            yield _ProbeTxn(txn, self.sizes)


class _ProbeTxn:
    def __init__(self, inner: Any, sizes: list[int]) -> None:
        self._inner = inner
        self._sizes = sizes

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)

    async def commit(self, delta: Any, **kwargs: Any) -> int:
        state = kwargs.get("state")
        if state is not None:
            self._sizes.append(len(encode_state(state)))
        result: int = await self._inner.commit(delta, **kwargs)
        return result


def _count_calls(owner: Any, name: str, counter: list[int]) -> None:
    """Replace ``owner.name`` (on the instance) by a wrapper that counts its calls."""
    original = getattr(owner, name)

    def counting(*args: Any, **kwargs: Any) -> Any:
        counter[0] += 1
        return original(*args, **kwargs)

    setattr(owner, name, counting)


def count_round_trips(store: Any, kind: str) -> list[int] | None:
    """Instrument ``store`` so that its round trips are counted; None if not possible.

    Uses private attributes of the stores (this is a benchmark, not an API):
    SQLite's ``_run`` (one hop to the worker thread), PostgreSQL's connections'
    ``execute``, Redis' client ``execute_command``.
    """
    counter = [0]
    try:
        if kind == "sqlite":
            _count_calls(store, "_run", counter)
        elif kind == "postgres":
            open_connection = store._open

            async def counted_open() -> Any:
                conn = await open_connection()
                _count_calls(conn, "execute", counter)
                return conn

            store._pool._open = counted_open
        elif kind == "redis":
            _count_calls(store._client, "execute_command", counter)
        else:
            return None
    except AttributeError:
        return None
    return counter


# -- stores -----------------------------------------------------------------------------------


def store_factories(tmp: str, config: Config) -> list[tuple[str, Callable[[], Any] | None, str]]:
    """(name, factory or None when unavailable, note) for every store to measure."""
    out: list[tuple[str, Callable[[], Any] | None, str]] = [
        ("memory", MemoryStore, ""),
        ("sqlite", lambda: SQLiteStore(os.path.join(tmp, f"{uuid.uuid4().hex}.db")), ""),
    ]
    if reachable(POSTGRES_URL):
        try:
            from flowkit.stores import PostgresStore

            out.append(("postgres", lambda: PostgresStore(POSTGRES_URL, schema=PG_SCHEMA), ""))
        except flowkit.MissingDependency as exc:
            out.append(("postgres", None, str(exc)))
    else:
        out.append(("postgres", None, f"not reachable at {POSTGRES_URL}"))
    if reachable(REDIS_URL):
        try:
            from flowkit.stores import RedisStore

            prefix = f"flowkit-bench-{uuid.uuid4().hex[:8]}"
            out.append(("redis", lambda: RedisStore(REDIS_URL, prefix=prefix), prefix))
        except flowkit.MissingDependency as exc:
            out.append(("redis", None, str(exc)))
    else:
        out.append(("redis", None, f"not reachable at {REDIS_URL}"))
    return out


async def _cleanup(kind: str, note: str) -> None:
    """Remove what the benchmark wrote to shared servers (its own schema / key prefix)."""
    try:
        if kind == "postgres":
            import psycopg

            conn = await psycopg.AsyncConnection.connect(POSTGRES_URL, autocommit=True)
            async with conn:
                await conn.execute(f"DROP SCHEMA IF EXISTS {PG_SCHEMA} CASCADE")
        elif kind == "redis" and note:
            import redis.asyncio as aioredis

            client = aioredis.Redis.from_url(REDIS_URL)
            try:
                keys = [k async for k in client.scan_iter(match=f"{note}:*", count=1000)]
                for start in range(0, len(keys), 500):
                    await client.delete(*keys[start : start + 500])
            finally:
                await client.aclose()
    except Exception:
        pass


async def instrumented(
    kind: str, factory: Callable[[], Any], n: int, probe: bool
) -> dict[str, Any]:
    """One untimed run on a fresh store with counters: commits, bytes, round trips, snapshots."""
    store = factory()
    out: dict[str, Any] = {}
    try:
        trips = count_round_trips(store, kind)
        await store.info("bench-warm-up")  # connect (and migrate) before counting
        if trips is not None:
            trips[0] = 0
        target: Any = _SnapshotProbe(store) if probe else store
        result = await flowkit.Runtime(store=target).run(build(n))
        if result.status != "completed":
            raise RuntimeError(f"{kind}: run ended {result.status}: {result.error}")
        out["commits"] = store.stats.commits
        out["delta_bytes"] = store.stats.bytes_written
        out["snapshot_bytes"] = store.stats.snapshot_bytes
        out["round_trips"] = trips[0] if trips is not None else None
        if probe:
            out["full_sizes"] = target.sizes
    finally:
        await store.close()
    return out


async def measure(
    stores: list[tuple[str, Callable[[], Any] | None]], n: int, runs: int, failed: dict[str, str]
) -> dict[str, dict[str, Any]]:
    """Every store (and no store) instrumented once, then timed in turns (medians).

    Timing the stores in turns, in one event loop, makes a slow phase of a noisy
    machine hit all of them alike, so the ratios between them hold.
    """
    flow = build(n)
    results: dict[str, dict[str, Any]] = {}
    runtimes: dict[str, flowkit.Runtime] = {}
    opened: list[Any] = []
    try:
        for kind, factory in stores:
            try:
                if factory is not None:
                    results[kind] = await instrumented(kind, factory, n, kind == "memory")
                store = factory() if factory is not None else None
                if store is not None:
                    opened.append(store)
                runtime = flowkit.Runtime(store=store)
                result = await runtime.run(flow)  # warm-up: connections, tables, caches
                if result.status != "completed":
                    raise RuntimeError(f"run ended {result.status}: {result.error}")
                runtimes[kind] = runtime
                results.setdefault(kind, {})["times"] = []
            except Exception as exc:
                failed[kind] = f"{type(exc).__name__}: {exc}"[:300]
                results.pop(kind, None)
        for _ in range(runs):
            for kind, runtime in list(runtimes.items()):
                gc.collect()
                start = time.perf_counter()
                try:
                    result = await runtime.run(flow)
                    if result.status != "completed":
                        raise RuntimeError(f"run ended {result.status}: {result.error}")
                except Exception as exc:
                    failed[kind] = f"{type(exc).__name__}: {exc}"[:300]
                    results.pop(kind, None)
                    del runtimes[kind]
                    continue
                results[kind]["times"].append(time.perf_counter() - start)
    finally:
        for store in opened:
            with anyio.CancelScope(shield=True):
                with suppress(Exception):
                    await store.close()
    for r in results.values():
        r["seconds"] = statistics.median(r["times"])
    return results


def run(config: Config) -> list[Table]:
    n = config.pick(1000, 1000, 20)
    table = Table(
        f"persistence: chain of {n} nodes, each writing a new ~1 KB value into the state "
        f"(grows to ~{n * VALUE_SIZE // 1000} KB)"
    )
    tmp = tempfile.mkdtemp(prefix="flowkit-bench-persist-")
    try:
        skipped: list[str] = []
        stores: list[tuple[str, Callable[[], Any] | None]] = [("none", None)]
        cleanups: list[tuple[str, str]] = []
        for kind, factory, note in store_factories(tmp, config):
            if factory is None:
                skipped.append(f"{kind}: {note}")
            else:
                stores.append((kind, factory))
                cleanups.append((kind, note))
        failed: dict[str, str] = {}
        try:
            results = anyio.run(measure, stores, n, config.pick(5, 3, 1), failed)
        finally:
            for kind, note in cleanups:
                anyio.run(_cleanup, kind, note)
        skipped.extend(f"{kind}: failed: {error}" for kind, error in failed.items())
        baseline = results.pop("none", None)
        if baseline is None:
            raise RuntimeError(f"the run without a store failed: {failed.get('none')}")
        full_sizes = results.get("memory", {}).get("full_sizes")
        full_mean = statistics.fmean(full_sizes) if full_sizes else None
        memory_s = results.get("memory", {}).get("seconds")
        for kind, r in results.items():
            commits = r["commits"]
            delta_step = r["delta_bytes"] / commits
            with_snapshots = (r["delta_bytes"] + r["snapshot_bytes"]) / commits
            table.rows.append(
                {
                    "store": kind,
                    "nodes_s": round(n / r["seconds"]),
                    "x_memory": ratio(memory_s, r["seconds"], 3),
                    "x_no_store": ratio(baseline["seconds"], r["seconds"], 3),
                    "commits_node": round((commits - 1) / n, 3),
                    "round_trips_node": None
                    if r["round_trips"] is None
                    else round(r["round_trips"] / n, 2),
                    "delta_B_step": round(delta_step),
                    "full_B_step": None if full_mean is None else round(full_mean),
                    "reduction_pct": None
                    if not full_mean
                    else round(100 * (1 - delta_step / full_mean), 2),
                    "with_snapshots_B_step": round(with_snapshots),
                    "reduction_with_snapshots_pct": None
                    if not full_mean
                    else round(100 * (1 - with_snapshots / full_mean), 2),
                }
            )
        table.notes.append(
            f"no store at all: {round(n / baseline['seconds'])} nodes/s; x_memory / x_no_store = "
            "that store's nodes/s ÷ MemoryStore's / ÷ no store's, same invocation"
        )
        table.notes.append(
            "delta_B_step = stats.bytes_written / stats.commits; full_B_step = mean JSON length "
            "of the whole run state at each commit; with_snapshots adds the periodic snapshots "
            "(snapshot_every=64)"
        )
        table.notes.append(
            "commits_node leaves out the run's creation (one commit per run); "
            "delta_B_step divides by every commit, as StoreStats counts them"
        )
        table.notes.append(
            "round trips: SQLite = hops to its worker thread, PostgreSQL = statements, "
            "Redis = commands (counted in one untimed run); all stores timed in turns, medians"
        )
        table.notes.extend(f"skipped {s}" for s in skipped)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    from . import durable  # it imports this module

    return [table, durable.table(config)]


def summary(tables: list[Table]) -> dict[str, Any]:
    return {r["store"]: r for r in tables[0].rows}

"""The run index: ``list_runs`` pages over N stored runs, per store (only on request).

``python -m bench runs_index [--runs 100000,1000000] [--stores sqlite,postgres]`` (or
``--only runs_index``, or ``python -m bench.runs_index`` with the same options).

For every size N and store it fills a private store with N runs, then times pages
of ``store.list_runs(limit=50, ...)`` through the public API: one status filter,
flow and status, a common tag, a rare tag, and the second page of the status filter
(via its cursor); the median and p95 of 50 calls (20 with ``--quick``) after 5
warm-up calls, with the garbage collector off while timing. The budget: every page
in <= 20 ms (p95) at 100 000 and at 1 000 000 runs, which only an index gives. Each
query's plan (SQLite ``EXPLAIN QUERY PLAN`` of the statement the store ran, traced;
PostgreSQL ``EXPLAIN ANALYZE`` of the statement the store builds) is printed, and a
full scan of the runs or their tags fails the row whatever its time (at a few
hundred runs PostgreSQL rightly reads its small tables whole: sizes that small only
check that the bench runs).

The fill goes straight into the store's own tables: the store creates them (its
migrations), then the bench drops their indexes (on PostgreSQL their primary keys
too; SQLite's cannot be dropped), bulk-inserts the rows (SQLite ``executemany`` in
one transaction, PostgreSQL ``COPY``) and makes the same indexes and keys again from
their stored definitions. The runs, oldest first as a store appends them: ids of 32
random hex digits (as ``uuid4().hex``), 30 days of ``created_at``, six flows (40 %
down to 3 %), statuses 85 % completed, 7 % failed, 4 % running, 3 % awaiting, 1 %
cancelled, 3 % children of an earlier run, a ~360-byte snapshot each; tags ``env``
(every run: prod 80 %, staging 20 %), ``region`` (60 %: eu, us, ap) and ``customer``
(30 %: one of 2 000). SQLite: a temporary file, no ``ANALYZE`` (the store never runs
it). PostgreSQL: a fresh database ``flowkit_bench_idx_<random>``, a schema per size,
``VACUUM ANALYZE`` after the fill (what autovacuum does after a bulk insert); all
dropped at the end.
"""

from __future__ import annotations

import argparse
import gc
import json
import math
import os
import random
import shutil
import sqlite3
import statistics
import sys
import tempfile
import threading
import time
import uuid
from contextlib import suppress
from queue import Empty, Queue
from typing import TYPE_CHECKING, Any, TypeVar
from urllib.parse import urlsplit, urlunsplit

import anyio

from flowkit.core._state import RunState
from flowkit.stores import SQLiteStore
from flowkit.stores._codec import encode_state

from ._util import Config, Table, reachable

if TYPE_CHECKING:
    from collections.abc import Iterator

T = TypeVar("T")
POSTGRES_URL = os.environ.get("FLOWKIT_BENCH_POSTGRES", "postgresql://postgres@127.0.0.1:5432/test")
OPTIONS: dict[str, Any] = {}  # runs, stores: set by ``python -m bench``
STORES = ("sqlite", "postgres")
BUDGET_MS = 20.0
LIMIT = 50
WARM_UP = 5
BATCH = 50_000  # runs generated and written at a time
DAYS = 30

FLOWS = ("orders", "etl", "billing", "emails", "reports", "agent")
FLOW_WEIGHTS = (40, 25, 15, 10, 7, 3)
STATUSES = ("completed", "failed", "running", "awaiting", "cancelled")
STATUS_WEIGHTS = (85, 7, 4, 3, 1)
FINAL = frozenset({"completed", "failed", "cancelled"})
ERRORS = (
    ("flowkit._errors.NodeError", "node 'charge' failed: card declined"),
    ("flowkit._errors.NodeError", "node 'fetch' failed: HTTP 503 from upstream"),
    ("flowkit._errors.TimeoutError", "node 'export' timed out after 30 s"),
)
CUSTOMERS = 2000
RUN_COLUMNS = (
    "run_id",
    "blueprint_id",
    "digest",
    "parent",
    "status",
    "version",
    "snapshot_version",
    "snapshot",
    "created_at",
    "updated_at",
    "finished_at",
    "error_type",
    "error_message",
    "tags",
)
TAG_COLUMNS = ("run_id", "key", "value", "created_at")
INDEXED = ("flowkit_runs", "flowkit_run_tags")

# (name, list_runs arguments); "page 2" adds the cursor of the first page of "status"
QUERIES: tuple[tuple[str, dict[str, Any]], ...] = (
    ("status", {"status": "failed"}),
    ("flow+status", {"flow": "billing", "status": "failed"}),
    ("tag", {"tags": {"env": "staging"}}),
    ("rare tag", {"tags": {"customer": "c-0042"}}),
    ("status page 2", {"status": "failed"}),
)


# -- the runs -------------------------------------------------------------------------------
def _snapshots() -> dict[str, str]:
    """A run's snapshot per status, with ``@RUN@`` where its run id goes (~360 bytes)."""
    out = {}
    for status in STATUSES:
        state = RunState("@RUN@")
        state.put("header", "status", status)
        state.put("context", "order_id", "A-10042")
        state.put("context", "items", [{"sku": "SKU-1", "qty": 2}, {"sku": "SKU-7", "qty": 1}])
        for node in ("validate", "reserve", "charge"):
            state.put("outputs", node, {"ok": True, "at": 1_700_000_000.5})
            state.put("nodes", node, "completed")
        out[status] = encode_state(state)
    return out


def generate(n: int, *, now: float, seed: int = 7) -> Iterator[tuple[list[Any], list[Any]]]:
    """Batches of (run rows, tag rows) for ``n`` runs, oldest first, in column order."""
    rng = random.Random(seed)
    snapshots = _snapshots()
    digests = {flow: uuid.UUID(int=rng.getrandbits(128)).hex[:16] for flow in FLOWS}
    start = now - DAYS * 86_400.0
    step = DAYS * 86_400.0 / max(1, n)
    recent: list[str] = []
    for first in range(0, n, BATCH):
        size = min(BATCH, n - first)
        flows = rng.choices(FLOWS, FLOW_WEIGHTS, k=size)
        statuses = rng.choices(STATUSES, STATUS_WEIGHTS, k=size)
        runs: list[Any] = []
        tags: list[Any] = []
        for i in range(size):
            run_id = f"{rng.getrandbits(128):032x}"
            created = start + (first + i + rng.random()) * step
            status = statuses[i]
            updated = created + rng.expovariate(1 / 20.0)
            parent = rng.choice(recent) if recent and rng.random() < 0.03 else None
            error = rng.choice(ERRORS) if status == "failed" else (None, None)
            env = "prod" if rng.random() < 0.8 else "staging"
            region = rng.choice(("eu", "us", "ap")) if rng.random() < 0.6 else None
            customer = f"c-{rng.randrange(CUSTOMERS):04d}" if rng.random() < 0.3 else None
            tags.append((run_id, "env", env, created))
            text = f'"env":"{env}"'  # the JSON of the tags, keys sorted as the stores write it
            if customer is not None:
                tags.append((run_id, "customer", customer, created))
                text = f'"customer":"{customer}",{text}'
            if region is not None:
                tags.append((run_id, "region", region, created))
                text = f'{text},"region":"{region}"'
            runs.append(
                (
                    run_id,
                    flows[i],
                    digests[flows[i]],
                    parent,
                    status,
                    1,
                    1,
                    snapshots[status].replace("@RUN@", run_id),
                    created,
                    updated,
                    updated if status in FINAL else None,
                    error[0],
                    error[1],
                    f"{{{text}}}",
                )
            )
            if i % 97 == 0:
                recent = [*recent[-63:], run_id]
        yield runs, tags


def ahead(batches: Iterator[T], depth: int = 2) -> Iterator[T]:
    """``batches``, made in a thread of their own while the caller writes the previous ones
    (sqlite3 and the server write without the GIL)."""
    done = object()
    queue: Queue[Any] = Queue(maxsize=depth)
    stop = threading.Event()

    def produce() -> None:
        try:
            for batch in batches:
                if stop.is_set():
                    return
                queue.put(batch)
        except BaseException as exc:
            queue.put(exc)
        queue.put(done)

    thread = threading.Thread(target=produce, daemon=True, name="bench-runs-index-fill")
    thread.start()
    try:
        while (item := queue.get()) is not done:
            if isinstance(item, BaseException):
                raise item
            yield item
    finally:
        stop.set()
        with suppress(Empty):
            while True:
                queue.get_nowait()
        thread.join()


def fill_sqlite(path: str, n: int, now: float) -> None:
    """``n`` runs into the store's tables in the SQLite file ``path`` (created by the store)."""

    async def migrate() -> None:
        store = SQLiteStore(path)
        try:
            await store.info("bench-migrate")
        finally:
            await store.close()

    anyio.run(migrate)
    conn = sqlite3.connect(path, isolation_level=None)
    try:
        conn.execute("PRAGMA journal_mode=OFF")  # WAL again once filled; the file is private
        conn.execute("PRAGMA synchronous=OFF")
        conn.execute("PRAGMA cache_size=-512000")  # 500 MB
        indexes = conn.execute(
            "SELECT name, sql FROM sqlite_master WHERE type = 'index' AND sql IS NOT NULL"
            f" AND tbl_name IN ({', '.join('?' * len(INDEXED))})",
            INDEXED,
        ).fetchall()
        conn.execute("BEGIN")
        for name, _ in indexes:
            conn.execute(f'DROP INDEX "{name}"')
        insert_run = (
            f"INSERT INTO flowkit_runs ({', '.join(RUN_COLUMNS)})"
            f" VALUES ({', '.join('?' * len(RUN_COLUMNS))})"
        )
        insert_tag = f"INSERT INTO flowkit_run_tags ({', '.join(TAG_COLUMNS)}) VALUES (?, ?, ?, ?)"
        for runs, tags in ahead(generate(n, now=now)):
            conn.executemany(insert_run, runs)
            conn.executemany(insert_tag, tags)
        for _, statement in indexes:
            conn.execute(statement)
        conn.execute("COMMIT")
        conn.execute("PRAGMA journal_mode=WAL")
    finally:
        conn.close()


def _database_url(name: str) -> str:
    parts = urlsplit(POSTGRES_URL)
    return urlunsplit(parts._replace(path=f"/{name}"))


def fill_postgres(url: str, schema: str, n: int, now: float) -> None:
    """``n`` runs into the store's tables in ``schema`` (created by the store) by ``COPY``."""
    import psycopg
    from psycopg import sql

    async def migrate() -> None:
        from flowkit.stores import PostgresStore

        store = PostgresStore(url, schema=schema)
        try:
            await store.info("bench-migrate")
        finally:
            await store.close()

    anyio.run(migrate)
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(sql.SQL("SET search_path TO {}").format(sql.Identifier(schema)))
        conn.execute("SET maintenance_work_mem = '512MB'")
        # the tables' keys and indexes as the store made them, to drop now and make again
        keys = conn.execute(
            "SELECT t.relname, k.conname, pg_get_constraintdef(k.oid) FROM pg_constraint k"
            " JOIN pg_class t ON t.oid = k.conrelid JOIN pg_namespace s ON s.oid = t.relnamespace"
            " WHERE s.nspname = %s AND t.relname = ANY(%s) AND k.contype IN ('p', 'u')",
            (schema, list(INDEXED)),
        ).fetchall()
        indexes = conn.execute(
            "SELECT c.relname, pg_get_indexdef(i.indexrelid) FROM pg_index i"
            " JOIN pg_class c ON c.oid = i.indexrelid JOIN pg_class t ON t.oid = i.indrelid"
            " JOIN pg_namespace s ON s.oid = t.relnamespace"
            " WHERE s.nspname = %s AND t.relname = ANY(%s) AND NOT i.indisprimary"
            " AND NOT i.indisunique",
            (schema, list(INDEXED)),
        ).fetchall()
        with conn.transaction():
            for name, _ in indexes:
                conn.execute(sql.SQL("DROP INDEX {}").format(sql.Identifier(name)))
            for table, name, _ in keys:
                conn.execute(
                    sql.SQL("ALTER TABLE {} DROP CONSTRAINT {}").format(
                        sql.Identifier(table), sql.Identifier(name)
                    )
                )
            with conn.cursor() as cur:
                for runs, tags in ahead(generate(n, now=now)):
                    for table, columns, rows in (
                        ("flowkit_runs", RUN_COLUMNS, runs),
                        ("flowkit_run_tags", TAG_COLUMNS, tags),
                    ):
                        statement = sql.SQL("COPY {} ({}) FROM STDIN").format(
                            sql.Identifier(table), sql.SQL(", ").join(map(sql.Identifier, columns))
                        )
                        with cur.copy(statement) as copy:
                            for row in rows:
                                copy.write_row(row)
            for table, name, definition in keys:
                conn.execute(
                    sql.SQL("ALTER TABLE {} ADD CONSTRAINT {} {}").format(
                        sql.Identifier(table), sql.Identifier(name), sql.SQL(definition)
                    )
                )
            for _, definition in indexes:
                conn.execute(definition)
        for table in INDEXED:
            conn.execute(sql.SQL("VACUUM ANALYZE {}").format(sql.Identifier(table)))


# -- timing ---------------------------------------------------------------------------------
def _ms(seconds: float) -> float:
    return round(seconds * 1000, 3)


def _p95(times: list[float]) -> float:
    ordered = sorted(times)
    return ordered[max(0, math.ceil(0.95 * len(ordered)) - 1)]


async def _time_queries(store: Any, repeats: int) -> list[dict[str, Any]]:
    """Each query: warm-up, then ``repeats`` timed calls with the garbage collector off."""
    first = await store.list_runs(limit=LIMIT, status="failed")
    out = []
    for name, kwargs in QUERIES:
        args = {"limit": LIMIT, **kwargs}
        if name == "status page 2":
            args["cursor"] = first.cursor
        page = None
        for _ in range(WARM_UP):
            page = await store.list_runs(**args)
        times = []
        gc.collect()
        gc.disable()  # no collection inside a timed call (one before each query's calls)
        try:
            for _ in range(max(1, repeats)):
                start = time.perf_counter()
                page = await store.list_runs(**args)
                times.append(time.perf_counter() - start)
        finally:
            gc.enable()
        assert page is not None
        out.append(
            {
                "query": name,
                "args": args,
                "median_ms": _ms(statistics.median(times)),
                "p95_ms": _ms(_p95(times)),
                "rows": len(page.runs),
            }
        )
    return out


# -- plans ----------------------------------------------------------------------------------
async def _sqlite_plans(store: SQLiteStore, path: str, queries: list[dict[str, Any]]) -> None:
    """Each query's ``EXPLAIN QUERY PLAN``, of the statement the store ran (traced)."""
    seen: list[str] = []
    await store.info("bench-connect")
    conn = store._conn  # private: this is a benchmark, not an API
    assert conn is not None
    explain = sqlite3.connect(path)
    try:
        for q in queries:
            seen.clear()
            conn.set_trace_callback(seen.append)
            try:
                await store.list_runs(**q["args"])
            finally:
                conn.set_trace_callback(None)
            statement = next(s for s in seen if s.startswith("SELECT") and "flowkit_runs" in s)
            rows = explain.execute(f"EXPLAIN QUERY PLAN {statement}").fetchall()
            lines = [str(r[3]) for r in rows]
            q["plan_text"] = "\n".join(lines)
            q["plan"] = "; ".join(lines)
            # "SCAN r USING INDEX ..." walks an index in the page's order (and stops at
            # the limit); a bare "SCAN r" reads the whole table
            q["scan"] = any(line.startswith("SCAN ") and " USING " not in line for line in lines)
    finally:
        explain.close()


async def _postgres_plans(url: str, schema: str, queries: list[dict[str, Any]]) -> None:
    """Each query's ``EXPLAIN ANALYZE``, of the statement the store builds for it."""
    import psycopg
    from psycopg import sql

    from flowkit.stores._index import run_query
    from flowkit.stores._postgres import _list_query  # private: a benchmark, not an API

    async with await psycopg.AsyncConnection.connect(url, autocommit=True) as conn:
        await conn.execute(sql.SQL("SET search_path TO {}").format(sql.Identifier(schema)))
        for q in queries:
            statement, params = _list_query(run_query(**q["args"]))
            cur = await conn.execute(
                sql.SQL("EXPLAIN (ANALYZE, BUFFERS) {}").format(statement), params, prepare=False
            )
            q["plan_text"] = "\n".join(str(r[0]) for r in await cur.fetchall())
            cur = await conn.execute(
                sql.SQL("EXPLAIN (FORMAT JSON) {}").format(statement), params, prepare=False
            )
            row = await cur.fetchone()
            assert row is not None
            doc = row[0] if not isinstance(row[0], str) else json.loads(row[0])
            nodes = list(_pg_nodes(doc[0]["Plan"]))
            q["plan"] = " > ".join(
                f"{node['Node Type']}"
                + (" Backward" if node.get("Scan Direction") == "Backward" else "")
                + (f" {node['Index Name']}" if "Index Name" in node else "")
                + (
                    f" {node['Relation Name']}"
                    if "Relation Name" in node and "Index Name" not in node
                    else ""
                )
                for node in nodes
            )
            q["scan"] = any(
                node["Node Type"] == "Seq Scan" and node.get("Relation Name") in INDEXED
                for node in nodes
            )


def _pg_nodes(node: dict[str, Any]) -> Iterator[dict[str, Any]]:
    yield node
    for child in node.get("Plans", ()):
        yield from _pg_nodes(child)


# -- one store, one size ----------------------------------------------------------------------
def measure_sqlite(tmp: str, n: int, repeats: int) -> tuple[list[dict[str, Any]], float, int]:
    path = os.path.join(tmp, f"runs-{n}.db")
    started = time.perf_counter()
    fill_sqlite(path, n, time.time())
    fill_s = time.perf_counter() - started
    size = os.path.getsize(path)

    async def go() -> list[dict[str, Any]]:
        store = SQLiteStore(path)
        try:
            queries = await _time_queries(store, repeats)
            await _sqlite_plans(store, path, queries)
            return queries
        finally:
            await store.close()

    try:
        return anyio.run(go), fill_s, size
    finally:
        for suffix in ("", "-wal", "-shm"):
            with suppress(OSError):
                os.remove(path + suffix)


def measure_postgres(url: str, n: int, repeats: int) -> tuple[list[dict[str, Any]], float, int]:
    import psycopg
    from psycopg import sql

    schema = f"runs_{n}"
    started = time.perf_counter()
    fill_postgres(url, schema, n, time.time())
    fill_s = time.perf_counter() - started
    with psycopg.connect(url, autocommit=True) as conn:
        row = conn.execute(
            "SELECT coalesce(sum(pg_total_relation_size(c.oid)), 0) FROM pg_class c"
            " JOIN pg_namespace s ON s.oid = c.relnamespace"
            " WHERE s.nspname = %s AND c.relkind = 'r'",
            (schema,),
        ).fetchone()
        size = int(row[0]) if row else 0

    async def go() -> list[dict[str, Any]]:
        from flowkit.stores import PostgresStore

        store = PostgresStore(url, schema=schema)
        try:
            queries = await _time_queries(store, repeats)
        finally:
            await store.close()
        await _postgres_plans(url, schema, queries)
        return queries

    try:
        return anyio.run(go), fill_s, size
    finally:
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(schema)))


def _create_database() -> tuple[str, str]:
    import psycopg
    from psycopg import sql

    name = f"flowkit_bench_idx_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(POSTGRES_URL, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    return name, _database_url(name)


def _drop_database(name: str) -> None:
    import psycopg
    from psycopg import sql

    with suppress(Exception), psycopg.connect(POSTGRES_URL, autocommit=True) as conn:
        conn.execute(
            sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
        )


# -- the section ------------------------------------------------------------------------------
def parse_runs(value: str) -> tuple[int, ...]:
    """``"100000,1000000"`` (or ``1e6``, ``100_000``) as run counts."""
    try:
        sizes = tuple(int(float(v.strip().replace("_", ""))) for v in value.split(",") if v.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"--runs takes counts like 100000,1000000: {value!r}"
        ) from None
    if not sizes or any(size < 1 for size in sizes):
        raise argparse.ArgumentTypeError(f"--runs takes counts of at least 1: {value!r}")
    return sizes


def parse_stores(value: str) -> tuple[str, ...]:
    """``"sqlite,postgres"`` as store names."""
    names = tuple(v.strip() for v in value.split(",") if v.strip())
    unknown = [name for name in names if name not in STORES]
    if unknown or not names:
        raise argparse.ArgumentTypeError(
            f"unknown store(s) {', '.join(unknown) or value!r}; choose from {', '.join(STORES)}"
        )
    return names


def run(config: Config) -> list[Table]:
    sizes: tuple[int, ...] = OPTIONS.get("runs") or config.pick(
        (100_000, 1_000_000), (100_000,), (500,)
    )
    stores: tuple[str, ...] = OPTIONS.get("stores") or STORES
    repeats = config.pick(50, 20, 5)
    pages = Table(
        f"runs index: list_runs(limit={LIMIT}) pages, ms over {repeats} calls after "
        f"{WARM_UP} warm-up calls; budget <= {BUDGET_MS:g} ms (p95) and no table scan"
    )
    fills = Table("runs index: the fill (bulk insert into the store's tables, indexes rebuilt)")
    plans = Table("runs index: query plans")
    skipped: list[str] = []
    database: str | None = None
    url = ""
    if "postgres" in stores:
        if not reachable(POSTGRES_URL):
            skipped.append(f"postgres: not reachable at {POSTGRES_URL}")
            stores = tuple(s for s in stores if s != "postgres")
        else:
            try:
                database, url = _create_database()
            except Exception as exc:
                skipped.append(f"postgres: {type(exc).__name__}: {exc}"[:300])
                stores = tuple(s for s in stores if s != "postgres")
    tmp = tempfile.mkdtemp(prefix="flowkit-bench-runs-index-")
    try:
        for n in sizes:
            for kind in stores:
                print(f"runs_index: {kind}, {n:,} runs: filling ...", flush=True)
                try:
                    if kind == "sqlite":
                        queries, fill_s, size = measure_sqlite(tmp, n, repeats)
                    else:
                        queries, fill_s, size = measure_postgres(url, n, repeats)
                except Exception as exc:
                    skipped.append(f"{kind} at {n} runs: FAILED {type(exc).__name__}: {exc}"[:400])
                    continue
                fills.rows.append(
                    {
                        "store": kind,
                        "runs": n,
                        "fill_s": round(fill_s, 1),
                        "runs_s": round(n / fill_s) if fill_s else None,
                        "size_MB": round(size / 1e6, 1),
                    }
                )
                for q in queries:
                    print(
                        f"\n{kind}, {n:,} runs, {q['query']} {_shown(q['args'])}:"
                        f" median {q['median_ms']} ms, p95 {q['p95_ms']} ms\n{q['plan_text']}",
                        flush=True,
                    )
                    met = q["p95_ms"] <= BUDGET_MS and not q["scan"]
                    pages.rows.append(
                        {
                            "store": kind,
                            "runs": n,
                            "query": q["query"],
                            "median_ms": q["median_ms"],
                            "p95_ms": q["p95_ms"],
                            "rows": q["rows"],
                            "plan": "SCAN" if q["scan"] else "index",
                            "met": met,
                        }
                    )
                    plans.rows.append(
                        {"store": kind, "runs": n, "query": q["query"], "plan": q["plan"]}
                    )
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
        if database is not None:
            _drop_database(database)
    for name, kwargs in QUERIES:
        pages.notes.append(f"{name}: list_runs({_shown(kwargs)}, limit={LIMIT})")
    pages.notes[-1] += " with the cursor of the first page"
    verdict = all(row["met"] for row in pages.rows) if pages.rows else None
    pages.notes.append(
        "PASS: every page within budget, all by index"
        if verdict
        else "FAIL: see the rows marked met = no"
        if verdict is False
        else "nothing measured"
    )
    pages.notes.extend(f"skipped {s}" for s in skipped)
    fills.notes.append(
        "SQLite: executemany in one transaction; PostgreSQL: COPY, then VACUUM ANALYZE; "
        "the indexes (PostgreSQL: and primary keys) dropped for the insert, made again after"
    )
    return [pages, fills, plans]


def _shown(kwargs: dict[str, Any]) -> str:
    return ", ".join(f"{key}={value!r}" for key, value in kwargs.items())


def summary(tables: list[Table]) -> list[dict[str, Any]]:
    """The rows of the pages table."""
    return list(tables[0].rows)


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.runs_index", description=__doc__)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--smoke", action="store_true")
    parser.add_argument("--runs", type=parse_runs, help="run counts (default: 100000,1000000)")
    parser.add_argument("--stores", type=parse_stores, help="default: sqlite,postgres")
    args = parser.parse_args(argv)
    OPTIONS.update(runs=args.runs, stores=args.stores)
    from ._util import print_tables

    started = time.perf_counter()
    tables = run(Config(quick=args.quick, smoke=args.smoke))
    print_tables("runs_index", tables, use_rich=False)
    print(f"\nseconds: {time.perf_counter() - started:.1f}", flush=True)
    rows = tables[0].rows
    return 0 if rows and all(row["met"] for row in rows) else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

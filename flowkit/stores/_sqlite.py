"""``SQLiteStore``: the embedded default. WAL mode; safe for several processes on one machine.

The stdlib ``sqlite3`` module runs in a worker thread; a transaction takes the
database write lock (``BEGIN IMMEDIATE``), which also serialises transitions
across processes sharing the file.
"""

from __future__ import annotations

import json
import sqlite3
from contextlib import asynccontextmanager
from functools import partial
from typing import TYPE_CHECKING, Any, TypeVar

import anyio
import anyio.to_thread

from .. import _clock as clock
from .._errors import ConfigurationError, StoreError
from ..backends._options import (
    HISTORY_URL_OPTIONS,
    check_positive,
    redact,
    split_options,
    sqlite_path,
)
from ..backends._sqlite import connect
from ..core._state import FINISHED_VALUES
from ._buckets import refill, reserve
from ._codec import decode_delta, decode_state, encode_delta, encode_state, replay
from ._history import DEFAULT_PAYLOAD, HistoryEntry, HistoryEvent, check_read, event
from ._history import history_options as checked_history
from ._index import (
    SUMMARY_FIELDS,
    created_fields,
    error_of,
    purge_query,
    run_query,
    split_info,
    summary,
)
from ._protocol import (
    NO_INDEX,
    DueTimer,
    ExpiredLease,
    IndexOps,
    RunInfo,
    RunPage,
    RunSummary,
    ScheduleRecord,
    StoreStats,
)
from ._slots import OneHolderSlots

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Callable, Collection, Mapping, Sequence
    from pathlib import Path

    from ..core._state import Delta, RunState
    from ._index import RunQuery

T = TypeVar("T")
_PAIRS_PER_READ = 500  # (two bound parameters each; SQLite allows 32 766 per statement)
_V1 = """
CREATE TABLE IF NOT EXISTS flowkit_runs (
    run_id TEXT PRIMARY KEY, blueprint_id TEXT NOT NULL, digest TEXT NOT NULL,
    parent TEXT, status TEXT NOT NULL, version INTEGER NOT NULL,
    snapshot_version INTEGER NOT NULL, snapshot TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS flowkit_journal (
    run_id TEXT NOT NULL, version INTEGER NOT NULL, delta TEXT NOT NULL,
    PRIMARY KEY (run_id, version)
);
CREATE TABLE IF NOT EXISTS flowkit_timers (
    run_id TEXT NOT NULL, timer_id TEXT NOT NULL, due_at REAL NOT NULL,
    PRIMARY KEY (run_id, timer_id)
);
CREATE INDEX IF NOT EXISTS flowkit_timers_due ON flowkit_timers (due_at);
CREATE TABLE IF NOT EXISTS flowkit_leases (
    run_id TEXT NOT NULL, dispatch_id TEXT NOT NULL, expires_at REAL NOT NULL,
    PRIMARY KEY (run_id, dispatch_id)
);
CREATE INDEX IF NOT EXISTS flowkit_leases_expiry ON flowkit_leases (expires_at);
"""
_V2 = """
ALTER TABLE flowkit_runs ADD COLUMN created_at REAL;
ALTER TABLE flowkit_runs ADD COLUMN updated_at REAL;
ALTER TABLE flowkit_runs ADD COLUMN finished_at REAL;
ALTER TABLE flowkit_runs ADD COLUMN error_type TEXT;
ALTER TABLE flowkit_runs ADD COLUMN error_message TEXT;
ALTER TABLE flowkit_runs ADD COLUMN tags TEXT NOT NULL DEFAULT '{}';
CREATE TABLE flowkit_run_tags (
    run_id TEXT NOT NULL, key TEXT NOT NULL, value TEXT NOT NULL, created_at REAL NOT NULL,
    PRIMARY KEY (run_id, key)
);
CREATE INDEX flowkit_runs_created ON flowkit_runs (created_at, run_id);
CREATE INDEX flowkit_runs_status ON flowkit_runs (status, created_at, run_id);
CREATE INDEX flowkit_runs_flow ON flowkit_runs (blueprint_id, created_at, run_id);
CREATE INDEX flowkit_runs_parent ON flowkit_runs (parent, created_at, run_id);
CREATE INDEX flowkit_run_tags_match ON flowkit_run_tags (key, value, created_at, run_id);
"""
_V3 = """
ALTER TABLE flowkit_runs ADD COLUMN next_seq INTEGER NOT NULL DEFAULT 1;
CREATE TABLE flowkit_history (
    run_id TEXT NOT NULL, seq INTEGER NOT NULL, last INTEGER NOT NULL, events TEXT NOT NULL,
    PRIMARY KEY (run_id, seq)
) WITHOUT ROWID;
"""
_V4 = """
CREATE TABLE flowkit_schedules (
    schedule_id TEXT PRIMARY KEY, version INTEGER NOT NULL, data TEXT NOT NULL
)
"""
_V5 = """
CREATE TABLE flowkit_slots (
    limit_id TEXT NOT NULL, key TEXT NOT NULL, holder TEXT NOT NULL, expires_at REAL NOT NULL,
    PRIMARY KEY (limit_id, key, holder)
) WITHOUT ROWID;
CREATE TABLE flowkit_buckets (
    limit_id TEXT NOT NULL, key TEXT NOT NULL, tokens REAL NOT NULL, updated_at REAL NOT NULL,
    PRIMARY KEY (limit_id, key)
) WITHOUT ROWID
"""
# one row per commit: its events (seq to last) as a JSON array of
# [at, kind, node_id, attempt, worker, data]; one insert, not one per event
_INSERT_HISTORY = "INSERT INTO flowkit_history VALUES (?, ?, ?, ?)"
_ESCAPE: Callable[[str], str] = getattr(json.encoder, "c_encode_basestring", None) or (
    json.encoder.py_encode_basestring
)
# the header and index columns a commit sets (None: left as they are)
_HEADER = (
    "status=COALESCE(?, status), blueprint_id=COALESCE(?, blueprint_id),"
    " digest=COALESCE(?, digest), parent=COALESCE(?, parent), updated_at=?,"
    " finished_at=CASE WHEN ? THEN COALESCE(finished_at, ?) WHEN ? THEN NULL"
    " ELSE finished_at END,"
    " error_type=CASE WHEN ? THEN NULL ELSE COALESCE(?, error_type) END,"
    " error_message=CASE WHEN ? THEN NULL ELSE COALESCE(?, error_message) END"
)
_SUMMARY_R = ", ".join(f"r.{field}" for field in SUMMARY_FIELDS)  # of flowkit_runs r
# every table with rows of a run (keyed by run_id), flowkit_runs last
_RUN_TABLES = (
    "flowkit_journal",
    "flowkit_timers",
    "flowkit_leases",
    "flowkit_run_tags",
    "flowkit_history",
    "flowkit_runs",
)


def _statements(script: str) -> Callable[[sqlite3.Connection], None]:
    def run(conn: sqlite3.Connection) -> None:
        for statement in filter(str.strip, script.split(";")):
            conn.execute(statement)

    return run


def _backfill_index(conn: sqlite3.Connection) -> None:
    """Index fields of the runs stored before the index: their times are unknown, so the
    migration's (finished runs finished then too); a failed run's error from its state."""
    now = clock.now()
    conn.execute(
        "UPDATE flowkit_runs SET created_at = ?, updated_at = ?, finished_at = CASE"
        f" WHEN status IN ({', '.join('?' * len(FINISHED_VALUES))}) THEN ? END",
        (now, now, *sorted(FINISHED_VALUES), now),
    )
    failed = conn.execute(
        "SELECT run_id, snapshot, snapshot_version FROM flowkit_runs WHERE status = 'failed'"
    ).fetchall()
    for run_id, snapshot, since in failed:
        error = error_of(_materialise(conn, run_id, snapshot, since).header)
        if error is not None:
            conn.execute(
                "UPDATE flowkit_runs SET error_type = ?, error_message = ? WHERE run_id = ?",
                (*error, run_id),
            )


_MIGRATIONS: tuple[tuple[Callable[[sqlite3.Connection], None], ...], ...] = (
    (_statements(_V1),),  # v1: runs, journal, timers, leases
    (_statements(_V2), _backfill_index),  # v2: the run index (list_runs)
    (_statements(_V3),),  # v3: run history (next_seq numbers a run's events)
    (_statements(_V4),),  # v4: schedules
    (_statements(_V5),),  # v5: concurrency slots and rate-limit buckets
)
SCHEMA_VERSION = len(_MIGRATIONS)


class SQLiteStore(OneHolderSlots):
    """Runs in a SQLite file (``SQLiteStore("runs.db")``); ``":memory:"`` for a private one."""

    def __init__(
        self,
        path: str | Path = "flowkit.db",
        *,
        snapshot_every: int = 64,
        history: bool = True,
        history_payload: int = DEFAULT_PAYLOAD,
    ) -> None:
        check_positive("SQLiteStore", snapshot_every=snapshot_every)
        self.history_options = checked_history("SQLiteStore", history, history_payload)
        self.path = str(path)
        self.snapshot_every = snapshot_every
        self.stats = StoreStats()
        self._conn: sqlite3.Connection | None = None
        self._lock = anyio.Lock()

    @classmethod
    def from_url(cls, url: str, **options: Any) -> SQLiteStore:
        """Build from ``sqlite:///relative.db``, ``sqlite:////absolute.db`` or ``sqlite://``
        (in memory), optionally with ``?snapshot_every=8``.

        Query options: ``snapshot_every`` (int), ``history`` (true/false) and
        ``history_payload`` (int); any other is refused (the path is a file name, not
        a SQLite URI). Keyword ``options`` override the query.

        >>> SQLiteStore.from_url("sqlite:///runs.db?snapshot_every=8").snapshot_every
        8
        """
        if not url.lower().startswith("sqlite://"):
            raise ConfigurationError(
                f"not a SQLite store URL: {redact(url)!r}; use sqlite:///path/to/flowkit.db"
            )
        rest, found = split_options(url, {"snapshot_every": int, **HISTORY_URL_OPTIONS})
        return cls(sqlite_path(rest), **(found | options))

    def __repr__(self) -> str:
        return f"SQLiteStore({self.path!r})"

    # -- plumbing -------------------------------------------------------------
    def _connect(self) -> sqlite3.Connection:
        if self._conn is None:
            try:
                conn = connect(self.path)
                try:
                    _migrate(conn, self.path)
                except BaseException:
                    conn.close()
                    raise
            except sqlite3.Error as exc:
                raise StoreError(f"cannot open SQLite store {self.path!r}: {exc}") from exc
            self._conn = conn
        return self._conn

    async def _run(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        def call() -> T:
            try:
                return fn(self._connect())
            except sqlite3.Error as exc:
                raise StoreError(f"SQLite store {self.path!r}: {exc}") from exc

        return await anyio.to_thread.run_sync(call)

    async def _locked(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        async with self._lock:
            return await self._run(fn)

    # -- runs -----------------------------------------------------------------
    async def create_run(
        self,
        run_id: str,
        state: RunState,
        *,
        blueprint_id: str,
        digest: str,
        parent: str | None = None,
        index: IndexOps = NO_INDEX,
        tags: Mapping[str, str] | None = None,
        created_at: float | None = None,
        history: Sequence[HistoryEntry] = (),
    ) -> bool:
        new = created_fields(state, created_at, tags)
        snapshot = encode_state(state)
        error_type, error_message = new.error or (None, None)
        events = _batch(run_id, 1, history) if self.history_options.enabled else None

        def create(conn: sqlite3.Connection) -> bool:
            conn.execute("BEGIN IMMEDIATE")
            try:
                cur = conn.execute(
                    "INSERT OR IGNORE INTO flowkit_runs (run_id, blueprint_id, digest, parent,"
                    " status, version, snapshot_version, snapshot, created_at, updated_at,"
                    " finished_at, error_type, error_message, tags, next_seq)"
                    " VALUES (?, ?, ?, ?, ?, 1, 1, ?, ?, ?, ?, ?, ?, ?, ?)",
                    (
                        run_id,
                        blueprint_id,
                        digest,
                        parent,
                        new.status,
                        snapshot,
                        new.created_at,
                        new.created_at,
                        new.finished_at,
                        error_type,
                        error_message,
                        new.tags_json,
                        1 + len(history) if events else 1,
                    ),
                )
                created = cur.rowcount == 1
                if created:
                    _write_index(conn, run_id, index)
                    if events:
                        conn.execute(_INSERT_HISTORY, events)
                    conn.executemany(
                        "INSERT INTO flowkit_run_tags VALUES (?, ?, ?, ?)",
                        [(run_id, k, v, new.created_at) for k, v in new.tags.items()],
                    )
                conn.execute("COMMIT")
            except BaseException:
                conn.execute("ROLLBACK")
                raise
            return created

        created = await self._locked(create)
        if created:
            self.stats.commits += 1
            self.stats.snapshot_bytes += len(snapshot)
        return created

    @asynccontextmanager
    async def transaction(self, run_id: str) -> AsyncIterator[_SQLiteTransaction]:
        async with self._lock:
            row = await self._run(partial(_begin, run_id))
            txn = _SQLiteTransaction(self, run_id, row)
            try:
                yield txn
            finally:
                with anyio.CancelScope(shield=True):
                    await self._run(lambda c: c.execute("COMMIT" if txn.committed else "ROLLBACK"))

    async def load(self, run_id: str) -> tuple[RunState, int] | None:
        def read(conn: sqlite3.Connection) -> tuple[RunState, int] | None:
            conn.execute("BEGIN")
            try:
                row = conn.execute(
                    "SELECT version, snapshot_version, snapshot FROM flowkit_runs WHERE run_id=?",
                    (run_id,),
                ).fetchone()
                if row is None:
                    return None
                return _materialise(conn, run_id, row[2], row[1]), int(row[0])
            finally:
                conn.execute("COMMIT")

        return await self._locked(read)

    async def info(self, run_id: str) -> RunInfo | None:
        def read(conn: sqlite3.Connection) -> RunInfo | None:
            row = conn.execute(
                "SELECT run_id, blueprint_id, digest, status, version, parent FROM flowkit_runs "
                "WHERE run_id=?",
                (run_id,),
            ).fetchone()
            return None if row is None else RunInfo(*row)

        return await self._locked(read)

    async def run_summary(self, run_id: str) -> RunSummary | None:
        def read(conn: sqlite3.Connection) -> Any:
            return conn.execute(
                f"SELECT {_SUMMARY_R} FROM flowkit_runs r WHERE r.run_id = ?", (run_id,)
            ).fetchone()

        row = await self._locked(read)
        return None if row is None else summary(row)

    async def history(
        self, run_id: str, *, after: int = 0, limit: int | None = None
    ) -> list[HistoryEvent]:
        after, limit = check_read(after, limit)

        def read(conn: sqlite3.Connection) -> list[Any]:
            return conn.execute(
                "SELECT seq, events FROM flowkit_history WHERE run_id = ? AND last > ?"
                " ORDER BY seq",
                (run_id, after),
            ).fetchall()

        found = [
            event(seq, entry)
            for first, events in await self._locked(read)
            for seq, entry in enumerate(_unbatch(events), first)
            if seq > after
        ]
        return found if limit is None else found[:limit]

    async def list_runs(
        self,
        *,
        flow: str | None = None,
        status: str | Collection[str] | None = None,
        tags: Mapping[str, str] | None = None,
        created_after: float | None = None,
        created_before: float | None = None,
        parent: str | None = None,
        limit: int = 50,
        cursor: str | None = None,
    ) -> RunPage:
        """Runs newest first (see :meth:`flowkit.stores.Store.list_runs`), in one indexed
        query: by ``(created_at, run_id)``, or by status, flow or parent first, with tags
        matched in ``flowkit_run_tags``."""
        query = run_query(
            flow=flow,
            status=status,
            tags=tags,
            created_after=created_after,
            created_before=created_before,
            parent=parent,
            limit=limit,
            cursor=cursor,
        )
        statement, params = _list_query(query)

        def read(conn: sqlite3.Connection) -> list[Any]:
            return conn.execute(statement, params).fetchall()

        rows = await self._locked(read)
        return query.page([summary(row) for row in rows])

    async def purge(
        self,
        *,
        finished_before: float,
        status: str | Collection[str] | None = None,
        limit: int = 500,
    ) -> list[str]:
        """Delete finished runs (see :meth:`flowkit.stores.Store.purge`) in one write
        transaction, found through the status index."""
        query = purge_query(finished_before=finished_before, status=status, limit=limit)
        marks = ", ".join("?" * len(query.statuses))
        select = (
            f"SELECT run_id FROM flowkit_runs WHERE status IN ({marks}) AND created_at < ?"
            " AND COALESCE(finished_at, updated_at) < ? LIMIT ?"
        )

        def delete(conn: sqlite3.Connection) -> list[str]:
            conn.execute("BEGIN IMMEDIATE")
            try:
                rows = conn.execute(
                    select, (*query.statuses, query.before, query.before, query.limit)
                ).fetchall()
                for table in _RUN_TABLES:
                    conn.executemany(f"DELETE FROM {table} WHERE run_id = ?", rows)
                conn.execute("COMMIT")
            except BaseException:
                conn.execute("ROLLBACK")
                raise
            return [row[0] for row in rows]

        return await self._locked(delete)

    # -- timers and leases ----------------------------------------------------
    async def due_timers(self, now: float, limit: int = 100) -> list[DueTimer]:
        def read(conn: sqlite3.Connection) -> list[DueTimer]:
            rows = conn.execute(
                "SELECT run_id, timer_id, due_at FROM flowkit_timers WHERE due_at <= ? "
                "ORDER BY due_at LIMIT ?",
                (now, limit),
            ).fetchall()
            return [DueTimer(*r) for r in rows]

        return await self._locked(read)

    async def claim_timer(self, run_id: str, timer_id: str) -> bool:
        def claim(conn: sqlite3.Connection) -> bool:
            cur = conn.execute(
                "DELETE FROM flowkit_timers WHERE run_id=? AND timer_id=?", (run_id, timer_id)
            )
            return cur.rowcount == 1

        return await self._locked(claim)

    # -- schedules ------------------------------------------------------------
    async def load_schedule(self, schedule_id: str) -> ScheduleRecord | None:
        row = await self._locked(
            lambda c: c.execute(
                "SELECT version, data FROM flowkit_schedules WHERE schedule_id = ?",
                (schedule_id,),
            ).fetchone()
        )
        return None if row is None else ScheduleRecord(schedule_id, row[0], json.loads(row[1]))

    async def list_schedules(self) -> list[ScheduleRecord]:
        rows = await self._locked(
            lambda c: c.execute(
                "SELECT schedule_id, version, data FROM flowkit_schedules ORDER BY schedule_id"
            ).fetchall()
        )
        return [ScheduleRecord(i, v, json.loads(d)) for i, v, d in rows]

    async def write_schedule(self, schedule_id: str, data: dict[str, Any], *, version: int) -> bool:
        """One statement: an insert that yields to an existing row, or an update at
        ``version``; SQLite's write lock makes it atomic across processes."""
        text = json.dumps(data)

        def write(conn: sqlite3.Connection) -> bool:
            if version == 0:
                cur = conn.execute(
                    "INSERT OR IGNORE INTO flowkit_schedules VALUES (?, 1, ?)", (schedule_id, text)
                )
            else:
                cur = conn.execute(
                    "UPDATE flowkit_schedules SET version = version + 1, data = ?"
                    " WHERE schedule_id = ? AND version = ?",
                    (text, schedule_id, version),
                )
            return cur.rowcount == 1

        return await self._locked(write)

    async def delete_schedule(self, schedule_id: str) -> bool:
        cur = await self._locked(
            lambda c: c.execute(
                "DELETE FROM flowkit_schedules WHERE schedule_id = ?", (schedule_id,)
            )
        )
        return bool(cur.rowcount == 1)

    # -- concurrency slots ----------------------------------------------------------
    async def acquire_slots(
        self,
        limit_id: str,
        key: str,
        holders: Sequence[str],
        *,
        max: int,
        now: float,
        expires_at: float,
    ) -> int:
        """Under SQLite's write lock: drop the pool's expired slots, then take or renew,
        holder by holder, until the pool is full."""

        def acquire(conn: sqlite3.Connection) -> int:
            pool = (limit_id, key)
            conn.execute("BEGIN IMMEDIATE")  # the write lock first: no other process counts
            try:
                conn.execute(
                    "DELETE FROM flowkit_slots WHERE limit_id=? AND key=? AND expires_at<=?",
                    (*pool, now),
                )
                taken = 0
                for holder in holders:
                    cur = conn.execute(
                        "INSERT INTO flowkit_slots SELECT ?, ?, ?, ? WHERE (SELECT count(*)"
                        " FROM flowkit_slots WHERE limit_id=? AND key=? AND holder<>?) < ?"
                        " ON CONFLICT (limit_id, key, holder) DO UPDATE SET"
                        " expires_at=excluded.expires_at",
                        (*pool, holder, expires_at, *pool, holder, max),
                    )
                    if cur.rowcount != 1:
                        break
                    taken += 1
            except BaseException:
                conn.execute("ROLLBACK")
                raise
            conn.execute("COMMIT")
            return taken

        return await self._locked(acquire)

    async def extend_slot(self, limit_id: str, key: str, holder: str, expires_at: float) -> bool:
        cur = await self._locked(
            lambda c: c.execute(
                "UPDATE flowkit_slots SET expires_at=? WHERE limit_id=? AND key=? AND holder=?",
                (expires_at, limit_id, key, holder),
            )
        )
        return bool(cur.rowcount == 1)

    async def take_token(
        self, limit_id: str, key: str, *, rate: float, capacity: float, now: float
    ) -> float:
        """Under SQLite's write lock: read the bucket, refill and take, write it back."""

        def take(conn: sqlite3.Connection) -> float:
            conn.execute("BEGIN IMMEDIATE")
            try:
                row = conn.execute(
                    "SELECT tokens, updated_at FROM flowkit_buckets WHERE limit_id=? AND key=?",
                    (limit_id, key),
                ).fetchone()
                tokens, updated = (None, now) if row is None else row
                left, wait = refill(tokens, updated, rate=rate, capacity=capacity, now=now)
                conn.execute(
                    "INSERT OR REPLACE INTO flowkit_buckets VALUES (?, ?, ?, ?)",
                    (limit_id, key, left, max(now, updated)),
                )
            except BaseException:
                conn.execute("ROLLBACK")
                raise
            conn.execute("COMMIT")
            return wait

        return await self._locked(take)

    async def reserve_tokens(
        self, limit_id: str, key: str, *, count: int, rate: float, capacity: float, now: float
    ) -> float:
        """Under SQLite's write lock: read the bucket, refill and take, write it back."""

        def take(conn: sqlite3.Connection) -> float:
            conn.execute("BEGIN IMMEDIATE")
            try:
                row = conn.execute(
                    "SELECT tokens, updated_at FROM flowkit_buckets WHERE limit_id=? AND key=?",
                    (limit_id, key),
                ).fetchone()
                tokens, updated = (None, now) if row is None else row
                before = reserve(
                    tokens, updated, count=count, rate=rate, capacity=capacity, now=now
                )
                conn.execute(
                    "INSERT OR REPLACE INTO flowkit_buckets VALUES (?, ?, ?, ?)",
                    (limit_id, key, before - count, now),
                )
            except BaseException:
                conn.execute("ROLLBACK")
                raise
            conn.execute("COMMIT")
            return float(before)

        return await self._locked(take)

    async def release_slots(self, limit_id: str, key: str, holders: Sequence[str]) -> None:
        await self._locked(
            lambda c: c.executemany(
                "DELETE FROM flowkit_slots WHERE limit_id=? AND key=? AND holder=?",
                [(limit_id, key, holder) for holder in holders],
            )
        )

    async def slot_holders(self, limit_id: str, key: str) -> list[str]:
        def read(conn: sqlite3.Connection) -> list[str]:
            rows = conn.execute(
                "SELECT holder FROM flowkit_slots WHERE limit_id=? AND key=?"
                " ORDER BY expires_at, holder",
                (limit_id, key),
            ).fetchall()
            return [str(row[0]) for row in rows]

        return await self._locked(read)

    async def slot_pools(self, prefix: str) -> list[tuple[str, str]]:
        def read(conn: sqlite3.Connection) -> list[tuple[str, str]]:
            rows = conn.execute(
                "SELECT DISTINCT limit_id, key FROM flowkit_slots"
                " WHERE substr(limit_id, 1, ?) = ? ORDER BY limit_id, key",
                (len(prefix), prefix),
            ).fetchall()
            return [(str(row[0]), str(row[1])) for row in rows]

        return await self._locked(read)

    async def expired_leases(self, now: float, limit: int = 100) -> list[ExpiredLease]:
        def read(conn: sqlite3.Connection) -> list[ExpiredLease]:
            rows = conn.execute(
                "SELECT run_id, dispatch_id, expires_at FROM flowkit_leases WHERE expires_at <= ? "
                "ORDER BY expires_at LIMIT ?",
                (now, limit),
            ).fetchall()
            return [ExpiredLease(*r) for r in rows]

        return await self._locked(read)

    async def extend_lease(self, run_id: str, dispatch_id: str, expires_at: float) -> None:
        await self._locked(
            lambda c: c.execute(
                "UPDATE flowkit_leases SET expires_at=? WHERE run_id=? AND dispatch_id=?",
                (expires_at, run_id, dispatch_id),
            )
        )

    async def held_leases(self, leases: Collection[tuple[str, str]]) -> set[tuple[str, str]]:
        wanted = list(leases)
        if not wanted:
            return set()

        def read(conn: sqlite3.Connection) -> set[tuple[str, str]]:
            held: set[tuple[str, str]] = set()
            for start in range(0, len(wanted), _PAIRS_PER_READ):
                pairs = wanted[start : start + _PAIRS_PER_READ]
                rows = conn.execute(
                    "SELECT run_id, dispatch_id FROM flowkit_leases WHERE (run_id, dispatch_id)"
                    f" IN (VALUES {', '.join(['(?, ?)'] * len(pairs))})",
                    [value for pair in pairs for value in pair],
                ).fetchall()
                held.update((str(run_id), str(key)) for run_id, key in rows)
            return held

        return await self._locked(read)

    async def close(self) -> None:
        async with self._lock:
            if self._conn is not None:
                conn, self._conn = self._conn, None
                await anyio.to_thread.run_sync(conn.close)


def _migrate(conn: sqlite3.Connection, path: str) -> None:
    """Create the tables, or bring them up to :data:`SCHEMA_VERSION`, in one transaction
    (which the write lock serialises with other processes opening the file)."""
    conn.execute("BEGIN IMMEDIATE")
    try:
        conn.execute("CREATE TABLE IF NOT EXISTS flowkit_schema (version INTEGER NOT NULL)")
        row = conn.execute("SELECT version FROM flowkit_schema").fetchone()
        current = 0 if row is None else int(row[0])
        if current > SCHEMA_VERSION:
            raise StoreError(
                f"{path} has flowkit schema v{current}, newer than this flowkit "
                f"(v{SCHEMA_VERSION}); upgrade flowkit"
            )
        for steps in _MIGRATIONS[current:]:
            for step in steps:
                step(conn)
        if row is None:
            conn.execute("INSERT INTO flowkit_schema VALUES (?)", (SCHEMA_VERSION,))
        elif current < SCHEMA_VERSION:
            conn.execute("UPDATE flowkit_schema SET version = ?", (SCHEMA_VERSION,))
        conn.execute("COMMIT")
    except BaseException:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise


def _list_query(query: RunQuery) -> tuple[str, list[Any]]:
    """The SELECT of a ``list_runs`` page (one run more than the page, if there is one),
    and its parameters.

    SQLite keeps no statistics here (nothing runs ``ANALYZE``), so the statement's shape
    picks the index. A parent filter (the children of one run: few) reads them by
    ``flowkit_runs_parent``. Otherwise the first tag drives: its ``flowkit_run_tags_match``
    entries are in the page's order (a tag's ``created_at`` is its run's), so the page
    is read newest first and stops at the limit however common or rare the tag (an
    ``IN (SELECT ...)`` made SQLite collect and sort every run with the tag). Further
    tags, and every tag under a parent filter, are looked up per run by primary key.
    """
    tagged = list(query.tags.items())
    driving = tagged.pop(0) if tagged and query.parent is None else None
    where: list[str] = []
    params: list[Any] = []
    if driving is not None:
        source = "flowkit_run_tags t JOIN flowkit_runs r ON r.run_id = t.run_id"
        where.append("t.key = ? AND t.value = ?")
        params += driving
        key = "t"  # the page's order and the cursor on the tag's index
    else:
        source = "flowkit_runs r"
        key = "r"
    if query.flow is not None:
        where.append("r.blueprint_id = ?")
        params.append(query.flow)
    if query.statuses is not None:
        where.append(f"r.status IN ({', '.join('?' * len(query.statuses))})")
        params.extend(query.statuses)
    if query.parent is not None:
        where.append("r.parent = ?")
        params.append(query.parent)
    if query.created_after is not None:
        where.append(f"{key}.created_at >= ?")
        params.append(query.created_after)
    if query.created_before is not None:
        where.append(f"{key}.created_at < ?")
        params.append(query.created_before)
    if query.after is not None:
        where.append(f"({key}.created_at, {key}.run_id) < (?, ?)")
        params.extend(query.after)
    for tag in tagged:
        where.append(
            "EXISTS (SELECT 1 FROM flowkit_run_tags x"
            " WHERE x.run_id = r.run_id AND x.key = ? AND x.value = ?)"
        )
        params += tag
    conditions = " WHERE " + " AND ".join(where) if where else ""
    statement = (
        f"SELECT {_SUMMARY_R} FROM {source}{conditions}"
        f" ORDER BY {key}.created_at DESC, {key}.run_id DESC LIMIT ?"
    )
    return statement, [*params, query.limit + 1]


_Row = tuple[int, int, str, int]  # version, snapshot_version, snapshot, next_seq


def _begin(run_id: str, conn: sqlite3.Connection) -> _Row | None:
    conn.execute("BEGIN IMMEDIATE")
    row = conn.execute(
        "SELECT version, snapshot_version, snapshot, next_seq FROM flowkit_runs WHERE run_id=?",
        (run_id,),
    ).fetchone()
    return None if row is None else (int(row[0]), int(row[1]), str(row[2]), int(row[3]))


def _batch(
    run_id: str, first: int, entries: Sequence[HistoryEntry]
) -> tuple[str, int, int, str] | None:
    """The ``flowkit_history`` row of one commit's ``entries``, numbered from ``first``
    (None if there are none). Each entry's data is JSON already: it goes in as it is."""
    if not entries:
        return None
    texts = [
        f"[{at!r},{_text(kind)},{_text(node)},{'null' if attempt is None else int(attempt)},"
        f"{_text(worker)},{data}]"
        for at, kind, node, attempt, worker, data in entries
    ]
    return run_id, first, first + len(entries) - 1, "[" + ",".join(texts) + "]"


def _text(value: str | None) -> str:
    """``value`` as a JSON string (or null), by the json module's C escaper."""
    return "null" if value is None else _ESCAPE(value)


def _unbatch(events: str) -> list[tuple[Any, ...]]:
    """The ``(at, kind, node_id, attempt, worker, data)`` of a row's events."""
    try:
        decoded = json.loads(events)
    except (ValueError, RecursionError) as exc:
        raise StoreError(f"corrupt history row in SQLite store: {exc}") from exc
    if not isinstance(decoded, list) or not all(
        isinstance(e, list) and len(e) == 6 for e in decoded
    ):
        raise StoreError(f"corrupt history row in SQLite store: {events[:60]!r}")
    return [tuple(entry) for entry in decoded]


def _materialise(
    conn: sqlite3.Connection, run_id: str, snapshot: str, snapshot_version: int
) -> RunState:
    rows = conn.execute(
        "SELECT delta FROM flowkit_journal WHERE run_id=? AND version>? ORDER BY version",
        (run_id, snapshot_version),
    ).fetchall()
    return replay(decode_state(snapshot), [decode_delta(r[0]) for r in rows])


def _write_index(conn: sqlite3.Connection, run_id: str, index: IndexOps) -> None:
    if not index:
        return
    conn.executemany(
        "INSERT OR REPLACE INTO flowkit_timers VALUES (?, ?, ?)",
        [(run_id, t, due) for t, due in index.timers],
    )
    conn.executemany(
        "DELETE FROM flowkit_timers WHERE run_id=? AND timer_id=?",
        [(run_id, t) for t in index.timers_done],
    )
    conn.executemany(
        "INSERT OR REPLACE INTO flowkit_leases VALUES (?, ?, ?)",
        [(run_id, d, at) for d, at in index.leases],
    )
    conn.executemany(
        "DELETE FROM flowkit_leases WHERE run_id=? AND dispatch_id=?",
        [(run_id, d) for d in index.leases_done],
    )


class _SQLiteTransaction:
    def __init__(self, store: SQLiteStore, run_id: str, row: _Row | None) -> None:
        self._store = store
        self._run_id = run_id
        self._row = row
        self.version = row[0] if row else 0
        self._snapshot_version = row[1] if row else 0
        self._next_seq = row[3] if row else 1
        self.committed = False

    @property
    def wants_snapshot(self) -> bool:
        return self._row is not None and (
            self.version + 1 - self._snapshot_version >= self._store.snapshot_every
        )

    async def changes_since(self, version: int) -> list[Delta] | None:
        if self._row is None or version < self._snapshot_version:
            return None
        rows = await self._store._run(
            lambda c: c.execute(
                "SELECT delta FROM flowkit_journal WHERE run_id=? AND version>? ORDER BY version",
                (self._run_id, version),
            ).fetchall()
        )
        return [decode_delta(r[0]) for r in rows]

    async def load(self) -> RunState | None:
        row = self._row
        if row is None:
            return None
        return await self._store._run(lambda c: _materialise(c, self._run_id, row[2], row[1]))

    async def commit(
        self,
        delta: Delta,
        *,
        index: IndexOps = NO_INDEX,
        info: dict[str, Any] | None = None,
        state: RunState | None = None,
        history: Sequence[HistoryEntry] = (),
    ) -> int:
        if self._row is None:
            raise StoreError(f"cannot commit to run {self._run_id!r}: it does not exist")
        enabled = self._store.history_options.enabled
        events = _batch(self._run_id, self._next_seq, history) if enabled else None
        next_seq = self._next_seq + len(history) if events else self._next_seq
        encoded = encode_delta(delta)
        version = self.version + 1
        snapshot = encode_state(state) if state is not None and self.wants_snapshot else None
        columns, stamp = split_info(info)
        error_type, error_message = stamp.error or (None, None)
        header = (
            columns.get("status"),
            columns.get("blueprint_id"),
            columns.get("digest"),
            columns.get("parent"),
            stamp.at,
            int(stamp.finishing),
            stamp.at,
            int(stamp.reopening),
            int(stamp.reopening),
            error_type,
            int(stamp.reopening),
            error_message,
        )

        def write(conn: sqlite3.Connection) -> None:
            conn.execute(
                "INSERT INTO flowkit_journal VALUES (?, ?, ?)", (self._run_id, version, encoded)
            )
            if snapshot is not None:
                conn.execute(
                    "UPDATE flowkit_runs SET version=?, snapshot_version=?, snapshot=?,"
                    f" next_seq=?, {_HEADER} WHERE run_id=?",
                    (version, version, snapshot, next_seq, *header, self._run_id),
                )
                conn.execute(
                    "DELETE FROM flowkit_journal WHERE run_id=? AND version<=?",
                    (self._run_id, version),
                )
            else:
                conn.execute(
                    f"UPDATE flowkit_runs SET version=?, next_seq=?, {_HEADER} WHERE run_id=?",
                    (version, next_seq, *header, self._run_id),
                )
            _write_index(conn, self._run_id, index)
            if events:
                conn.execute(_INSERT_HISTORY, events)

        self.committed = False  # a failed write must not be committed at the block's end
        await self._store._run(write)
        self.version = version
        self._next_seq = next_seq
        if snapshot is not None:
            self._snapshot_version = version
            self._store.stats.snapshot_bytes += len(snapshot)
        self.committed = True
        self._store.stats.commits += 1
        self._store.stats.bytes_written += len(encoded)
        return version

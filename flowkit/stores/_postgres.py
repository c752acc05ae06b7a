"""``PostgresStore``: runs in PostgreSQL, on psycopg 3's asyncio driver.

A :meth:`~PostgresStore.transaction` is a database transaction that holds the
run's row (``SELECT ... FOR UPDATE``): transitions of one run queue on the row
lock while other runs proceed in parallel, in this process or any other.
:meth:`~PostgresStore.attempt` commits a transition at a known version in one
statement instead (see ``_postgres_attempt``). The tables live in ``schema``;
they are created or migrated on first use inside an advisory lock, so several
processes may start at once. Every psycopg error is
translated to :class:`~flowkit.StoreError` by :func:`translate_errors`.

psycopg's async connections run on asyncio only (not trio).
"""

from __future__ import annotations

import json
from contextlib import asynccontextmanager, contextmanager
from typing import TYPE_CHECKING, Any, LiteralString

import anyio
import structlog

from .._errors import MissingDependency, StoreError
from ..backends._options import HISTORY_URL_OPTIONS, check_positive
from ..backends._postgres import SchemaClient, failure, migrate, redact_dsn, split_dsn
from ._codec import decode_delta, decode_state, encode_delta, encode_state, replay
from ._history import DEFAULT_PAYLOAD, HistoryEntry, HistoryEvent, as_json, check_read, event
from ._history import history_options as checked_history
from ._index import created_fields, purge_query, run_query, split_info, summary
from ._notices import finishes
from ._postgres_attempt import PostgresAttempt
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

try:
    import psycopg
    from psycopg import sql
except ImportError:  # the "postgres" extra is not installed: PostgresStore() says so
    _HAVE_PSYCOPG = False
else:
    _HAVE_PSYCOPG = True

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Collection, Iterator, Mapping, Sequence
    from contextlib import AbstractAsyncContextManager

    from ..backends._options import Converter
    from ..core._state import Delta, RunState
    from ._index import RunQuery

    Conn = psycopg.AsyncConnection[tuple[Any, ...]]

_log = structlog.get_logger("flowkit.stores")
_NOW: LiteralString = "extract(epoch FROM statement_timestamp())::double precision"
# finished runs and every row of theirs (see purge); each table is keyed by run_id
_PURGE: LiteralString = (
    "WITH doomed AS (SELECT run_id FROM flowkit_runs WHERE status = ANY(%s)"
    " AND created_at < %s AND coalesce(finished_at, updated_at) < %s LIMIT %s"
    " FOR UPDATE SKIP LOCKED),"
    " journal AS (DELETE FROM flowkit_journal WHERE run_id IN (SELECT run_id FROM doomed)),"
    " timers AS (DELETE FROM flowkit_timers WHERE run_id IN (SELECT run_id FROM doomed)),"
    " leases AS (DELETE FROM flowkit_leases WHERE run_id IN (SELECT run_id FROM doomed)),"
    " tags AS (DELETE FROM flowkit_run_tags WHERE run_id IN (SELECT run_id FROM doomed)),"
    " history AS (DELETE FROM flowkit_history WHERE run_id IN (SELECT run_id FROM doomed))"
    " DELETE FROM flowkit_runs WHERE run_id IN (SELECT run_id FROM doomed) RETURNING run_id"
)
_MIGRATIONS: tuple[tuple[LiteralString, ...], ...] = (
    (  # v1: the same tables as SQLiteStore
        "CREATE TABLE flowkit_runs (run_id TEXT PRIMARY KEY, blueprint_id TEXT NOT NULL,"
        " digest TEXT NOT NULL, parent TEXT, status TEXT NOT NULL, version BIGINT NOT NULL,"
        " snapshot_version BIGINT NOT NULL, snapshot TEXT NOT NULL)",
        "CREATE TABLE flowkit_journal (run_id TEXT NOT NULL, version BIGINT NOT NULL,"
        " delta TEXT NOT NULL, PRIMARY KEY (run_id, version))",
        "CREATE TABLE flowkit_timers (run_id TEXT NOT NULL, timer_id TEXT NOT NULL,"
        " due_at DOUBLE PRECISION NOT NULL, PRIMARY KEY (run_id, timer_id))",
        "CREATE INDEX flowkit_timers_due ON flowkit_timers (due_at)",
        "CREATE TABLE flowkit_leases (run_id TEXT NOT NULL, dispatch_id TEXT NOT NULL,"
        " expires_at DOUBLE PRECISION NOT NULL, PRIMARY KEY (run_id, dispatch_id))",
        "CREATE INDEX flowkit_leases_expiry ON flowkit_leases (expires_at)",
    ),
    (  # v2: the run index (list_runs). Runs stored before it get the migration's time
        # (a stable default, evaluated once: no table rewrite), finished ones finish then
        # too, and a failed run's error is read from its journal, or else its snapshot.
        # The defaults stay for the rows of processes still running the previous version
        # (this version always writes the times).
        "ALTER TABLE flowkit_runs"
        " ADD COLUMN created_at DOUBLE PRECISION NOT NULL DEFAULT " + _NOW + ","
        " ADD COLUMN updated_at DOUBLE PRECISION NOT NULL DEFAULT " + _NOW + ","
        " ADD COLUMN finished_at DOUBLE PRECISION,"
        " ADD COLUMN error_type TEXT,"
        " ADD COLUMN error_message TEXT,"
        " ADD COLUMN tags TEXT NOT NULL DEFAULT '{}'",
        "UPDATE flowkit_runs SET finished_at = updated_at"
        " WHERE status IN ('completed', 'failed', 'cancelled')",
        "UPDATE flowkit_runs AS r SET error_type = e.error ->> 'type',"
        " error_message = e.error ->> 'message'"
        " FROM (SELECT f.run_id, coalesce("
        "   (SELECT entry -> 2 FROM flowkit_journal AS j,"
        "      jsonb_array_elements(j.delta::jsonb) AS entry"
        "    WHERE j.run_id = f.run_id AND j.version > f.snapshot_version"
        "      AND j.version <= f.version AND jsonb_array_length(entry) = 3"
        "      AND entry ->> 0 = 'header' AND entry ->> 1 = 'error'"
        "    ORDER BY j.version DESC LIMIT 1),"
        "   f.snapshot::jsonb #> '{sections,header,error}') AS error"
        "  FROM flowkit_runs AS f WHERE f.status = 'failed') AS e"
        " WHERE r.run_id = e.run_id AND jsonb_typeof(e.error) = 'object'",
        "CREATE TABLE flowkit_run_tags (run_id TEXT NOT NULL, key TEXT NOT NULL,"
        " value TEXT NOT NULL, created_at DOUBLE PRECISION NOT NULL, PRIMARY KEY (run_id, key))",
        # run ids order bytewise (COLLATE "C"), as in the other stores, whatever the
        # database's collation
        'CREATE INDEX flowkit_runs_created ON flowkit_runs (created_at, run_id COLLATE "C")',
        'CREATE INDEX flowkit_runs_status ON flowkit_runs (status, created_at, run_id COLLATE "C")',
        "CREATE INDEX flowkit_runs_flow ON flowkit_runs"
        ' (blueprint_id, created_at, run_id COLLATE "C")',
        'CREATE INDEX flowkit_runs_parent ON flowkit_runs (parent, created_at, run_id COLLATE "C")',
        "CREATE INDEX flowkit_run_tags_match ON flowkit_run_tags"
        ' (key, value, created_at, run_id COLLATE "C")',
    ),
    (  # v3: run history; next_seq numbers a run's events (the default serves the rows
        # of processes still running the previous version, which write no history)
        "ALTER TABLE flowkit_runs ADD COLUMN next_seq BIGINT NOT NULL DEFAULT 1",
        "CREATE TABLE flowkit_history (run_id TEXT NOT NULL, seq BIGINT NOT NULL,"
        " at DOUBLE PRECISION NOT NULL, kind TEXT NOT NULL, node_id TEXT, attempt INTEGER,"
        " worker TEXT, data TEXT NOT NULL, PRIMARY KEY (run_id, seq))",
    ),
    (  # v4: schedules
        "CREATE TABLE flowkit_schedules (schedule_id TEXT PRIMARY KEY,"
        " version BIGINT NOT NULL, data TEXT NOT NULL)",
    ),
    (  # v5: concurrency slots and rate-limit buckets
        "CREATE TABLE flowkit_slots (limit_id TEXT NOT NULL, key TEXT NOT NULL,"
        " holder TEXT NOT NULL, expires_at DOUBLE PRECISION NOT NULL,"
        " PRIMARY KEY (limit_id, key, holder))",
        "CREATE TABLE flowkit_buckets (limit_id TEXT NOT NULL, key TEXT NOT NULL,"
        " tokens DOUBLE PRECISION NOT NULL, updated_at DOUBLE PRECISION NOT NULL,"
        " taken BOOLEAN NOT NULL, PRIMARY KEY (limit_id, key))",
    ),
)
SCHEMA_VERSION = len(_MIGRATIONS)
# a bucket's tokens at now, refilled
_LEVEL = "LEAST(%(cap)s, b.tokens + GREATEST(0, %(now)s - b.updated_at) * %(rate)s)"
_TAKE_TOKEN: LiteralString = (
    "INSERT INTO flowkit_buckets AS b VALUES (%(limit_id)s, %(key)s, %(cap)s - 1, %(now)s, TRUE)"
    " ON CONFLICT (limit_id, key) DO UPDATE SET"
    f" tokens = CASE WHEN {_LEVEL} >= 1 THEN {_LEVEL} - 1 ELSE {_LEVEL} END,"
    f" taken = {_LEVEL} >= 1, updated_at = GREATEST(b.updated_at, %(now)s)"
    " RETURNING tokens, taken"
)
# the bucket's level before the take, which may leave it below zero (tokens owed);
# counted back from its last take if that was later (see _buckets.reserve)
_RESERVED = "LEAST(%(cap)s, b.tokens + (%(now)s - b.updated_at) * %(rate)s)"
_RESERVE_TOKENS: LiteralString = (
    "INSERT INTO flowkit_buckets AS b"
    " VALUES (%(limit_id)s, %(key)s, %(cap)s - %(count)s, %(now)s, TRUE)"
    f" ON CONFLICT (limit_id, key) DO UPDATE SET tokens = {_RESERVED} - %(count)s,"
    " taken = TRUE, updated_at = %(now)s"
    " RETURNING tokens + %(count)s"
)
_URL_OPTIONS: dict[str, Converter] = {
    "schema": str,
    "snapshot_every": int,
    "pool_size": int,
    **HISTORY_URL_OPTIONS,
}
_SUMMARY: LiteralString = (  # of flowkit_runs r
    "SELECT r.run_id, r.blueprint_id, r.digest, r.status, r.parent, r.created_at,"
    " r.updated_at, r.finished_at, r.error_type, r.error_message, r.tags FROM"
)
# NOTIFY channel of finished runs; the payload is JSON [schema, run_id]
FINISHED_CHANNEL = "flowkit_finished"
# NOTIFY channel of runs whose dispatches were cancelled; the same payload
CANCELLED_NODES_CHANNEL = "flowkit_cancelled_nodes"
_LOAD: LiteralString = (
    "SELECT r.version, r.snapshot, ARRAY(SELECT j.delta FROM flowkit_journal j"
    " WHERE j.run_id = r.run_id AND j.version > r.snapshot_version AND j.version <= r.version"
    " ORDER BY j.version) FROM flowkit_runs r WHERE r.run_id = %s"
)
_CHANGES: LiteralString = (
    "SELECT r.version, r.snapshot_version, ARRAY(SELECT j.delta FROM flowkit_journal j"
    " WHERE j.run_id = r.run_id AND j.version > %s AND j.version <= r.version"
    " ORDER BY j.version) FROM flowkit_runs r WHERE r.run_id = %s"
)
# the columns of a history event from an element ``u.e`` of stores._history.as_json (a
# json value, not jsonb: its data's text is kept exactly)
HISTORY_COLUMNS: LiteralString = (
    "(u.e->>0)::float8, u.e->>1, u.e->>2, (u.e->>3)::int, u.e->>4, (u.e->5)::text"
)
# a commit's history events (as_json), numbered from the second parameter on
INSERT_HISTORY: LiteralString = (
    "INSERT INTO flowkit_history SELECT %s, %s::bigint + u.n - 1, "
    + HISTORY_COLUMNS
    + " FROM json_array_elements(%s::json) WITH ORDINALITY AS u(e, n)"
)
_UPSERT_TIMER: LiteralString = (
    "INSERT INTO flowkit_timers VALUES (%s, %s, %s)"
    " ON CONFLICT (run_id, timer_id) DO UPDATE SET due_at = EXCLUDED.due_at"
)
_UPSERT_LEASE: LiteralString = (
    "INSERT INTO flowkit_leases VALUES (%s, %s, %s)"
    " ON CONFLICT (run_id, dispatch_id) DO UPDATE SET expires_at = EXCLUDED.expires_at"
)
_DROP_TIMERS: LiteralString = "DELETE FROM flowkit_timers WHERE run_id = %s AND timer_id = ANY(%s)"
_DROP_LEASES: LiteralString = (
    "DELETE FROM flowkit_leases WHERE run_id = %s AND dispatch_id = ANY(%s)"
)


@contextmanager
def translate_errors(operation: str, dsn: str) -> Iterator[None]:
    """Re-raise any psycopg error in the block as a StoreError naming ``operation``."""
    try:
        yield
    except psycopg.Error as exc:
        raise StoreError(failure("PostgreSQL store", operation, dsn, exc)) from exc


class PostgresStore(SchemaClient, OneHolderSlots):
    """Runs, timers and leases in PostgreSQL.

    Example::

        store = PostgresStore("postgresql://app@db/flowkit", schema="flowkit")
        async with store.transaction("order-A1") as txn:
            ...
    """

    def __init__(
        self,
        dsn: str,
        *,
        snapshot_every: int = 64,
        schema: str = "public",
        pool_size: int = 8,
        history: bool = True,
        history_payload: int = DEFAULT_PAYLOAD,
    ) -> None:
        if not _HAVE_PSYCOPG:
            raise MissingDependency("PostgresStore", "postgres")
        check_positive("PostgresStore", snapshot_every=snapshot_every, pool_size=pool_size)
        self.history_options = checked_history("PostgresStore", history, history_payload)
        super().__init__(
            dsn, schema=schema, pool_size=pool_size, migrate=_migrate, translate=translate_errors
        )
        self.snapshot_every = snapshot_every
        self.stats = StoreStats()

    @classmethod
    def from_url(cls, url: str, **options: Any) -> PostgresStore:
        """Build from a libpq URL, ``postgresql://user:password@host:port/db?schema=flowkit``.

        Query options: ``schema`` (str), ``snapshot_every`` (int), ``pool_size``
        (int), ``history`` (true/false), ``history_payload`` (int). Other parameters
        (``sslmode=``, ``connect_timeout=``, ``application_name=``...) stay in the DSN
        for libpq. Keyword ``options`` override the query.

        Example::

            store = PostgresStore.from_url("postgresql://app@db/shop?schema=flowkit&sslmode=require")
        """
        dsn, found = split_dsn(url, "store", _URL_OPTIONS)
        return cls(dsn, **(found | options))

    def __repr__(self) -> str:
        return f"PostgresStore({redact_dsn(self.dsn)!r}, schema={self.schema!r})"

    # -- plumbing (more in SchemaClient) ------------------------------------------
    @asynccontextmanager
    async def _connection(self, operation: str) -> AsyncIterator[Conn]:
        with translate_errors(operation, self.dsn):
            async with self._pool.connection() as conn:
                yield conn

    async def _query(self, operation: str, query: LiteralString, params: Any) -> list[Any]:
        async with self._connection(operation) as conn:
            cur = await conn.execute(query, params)
            return await cur.fetchall() if cur.description else []

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
        """Store a new run at version 1; False (and nothing written) if it exists."""
        if not self.history_options.enabled:
            history = ()
        new = created_fields(state, created_at, tags)
        snapshot = encode_state(state)
        error_type, error_message = new.error or (None, None)
        async with self._connection("create_run") as conn, conn.transaction():
            cur = await conn.execute(
                "INSERT INTO flowkit_runs (run_id, blueprint_id, digest, parent, status,"
                " version, snapshot_version, snapshot, created_at, updated_at, finished_at,"
                " error_type, error_message, tags, next_seq)"
                " VALUES (%s, %s, %s, %s, %s, 1, 1, %s, %s, %s, %s, %s, %s, %s, %s)"
                " ON CONFLICT (run_id) DO NOTHING",
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
                    1 + len(history),
                ),
            )
            created_now = cur.rowcount == 1
            if created_now:
                await _write_index(conn, run_id, index)
                if history:
                    await conn.execute(INSERT_HISTORY, (run_id, 1, as_json(history)))
                if new.tags:
                    await conn.execute(
                        "INSERT INTO flowkit_run_tags"
                        " SELECT %s, key, value, %s FROM unnest(%s::text[], %s::text[])"
                        " AS tag(key, value)",
                        (run_id, new.created_at, list(new.tags), list(new.tags.values())),
                    )
        if created_now:
            self.stats.commits += 1
            self.stats.snapshot_bytes += len(snapshot)
        return created_now

    @asynccontextmanager
    async def transaction(self, run_id: str) -> AsyncIterator[_PostgresTransaction]:
        """Hold ``run_id``'s row until the block ends; uncommitted work is rolled back."""
        async with self._connection("transaction") as conn:
            await conn.execute("BEGIN")
            txn = _PostgresTransaction(self, conn, run_id)
            try:
                await txn.begin()
                yield txn
            finally:
                with anyio.CancelScope(shield=True):
                    await txn.end()

    def attempt(self, run_id: str, version: int) -> PostgresAttempt:
        """A lock-free transaction at ``version``: its commit is one statement that writes
        only if the run is still there and not held, else raises :class:`Conflict`."""
        return PostgresAttempt(self, run_id, version)

    async def load(self, run_id: str) -> tuple[RunState, int] | None:
        """A consistent read (one statement) of the run's state and version."""
        rows = await self._query("load", _LOAD, (run_id,))
        return (_replay(rows[0]), int(rows[0][0])) if rows else None

    async def changes_since(self, run_id: str, version: int) -> tuple[list[Delta], int] | None:
        """The deltas after ``version`` and the run's version, in one statement; None if
        the run is gone or a snapshot pruned some of them."""
        rows = await self._query("changes_since", _CHANGES, (version, run_id))
        if not rows or version < int(rows[0][1]):
            return None
        now, deltas = int(rows[0][0]), rows[0][2]
        if len(deltas) != now - version:
            return None
        self.stats.catch_ups += 1
        return [decode_delta(delta) for delta in deltas], now

    async def info(self, run_id: str) -> RunInfo | None:
        """The run's header, or None."""
        rows = await self._query(
            "info",
            "SELECT run_id, blueprint_id, digest, status, version, parent FROM flowkit_runs"
            " WHERE run_id = %s",
            (run_id,),
        )
        return RunInfo(*rows[0]) if rows else None

    async def run_summary(self, run_id: str) -> RunSummary | None:
        """The run as ``list_runs`` lists it, or None."""
        rows = await self._query(
            "run_summary", _SUMMARY + " flowkit_runs r WHERE r.run_id = %s", (run_id,)
        )
        return summary(rows[0]) if rows else None

    async def history(
        self, run_id: str, *, after: int = 0, limit: int | None = None
    ) -> list[HistoryEvent]:
        """The run's history events after ``after``, in order (one indexed query)."""
        after, limit = check_read(after, limit)
        rows = await self._query(
            "history",
            "SELECT seq, at, kind, node_id, attempt, worker, data FROM flowkit_history"
            " WHERE run_id = %s AND seq > %s ORDER BY seq LIMIT %s",
            (run_id, after, limit),
        )
        return [event(row[0], row[1:]) for row in rows]

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
        async with self._connection("list_runs") as conn:
            # never prepared: a plan cached for some values (a rare tag) can be a disaster
            # for others (a common one), so each page is planned for its own
            cur = await conn.execute(statement, params, prepare=False)
            rows = await cur.fetchall()
        return query.page([summary(row) for row in rows])

    async def purge(
        self,
        *,
        finished_before: float,
        status: str | Collection[str] | None = None,
        limit: int = 500,
    ) -> list[str]:
        """Delete finished runs (see :meth:`flowkit.stores.Store.purge`) in one statement,
        found through the status index; rows a transaction holds are skipped."""
        query = purge_query(finished_before=finished_before, status=status, limit=limit)
        rows = await self._query(
            "purge", _PURGE, (list(query.statuses), query.before, query.before, query.limit)
        )
        return [row[0] for row in rows]

    # -- timers and leases ----------------------------------------------------
    async def due_timers(self, now: float, limit: int = 100) -> list[DueTimer]:
        """Timers due at ``now``, earliest first."""
        rows = await self._query(
            "due_timers",
            "SELECT run_id, timer_id, due_at FROM flowkit_timers WHERE due_at <= %s"
            " ORDER BY due_at, run_id, timer_id LIMIT %s",
            (now, limit),
        )
        return [DueTimer(*row) for row in rows]

    async def claim_timer(self, run_id: str, timer_id: str) -> bool:
        """Delete the timer; the row lock lets exactly one claimer see it deleted."""
        rows = await self._query(
            "claim_timer",
            "DELETE FROM flowkit_timers WHERE run_id = %s AND timer_id = %s RETURNING 1",
            (run_id, timer_id),
        )
        return bool(rows)

    # -- schedules ------------------------------------------------------------
    async def load_schedule(self, schedule_id: str) -> ScheduleRecord | None:
        rows = await self._query(
            "load_schedule",
            "SELECT version, data FROM flowkit_schedules WHERE schedule_id = %s",
            (schedule_id,),
        )
        return ScheduleRecord(schedule_id, rows[0][0], json.loads(rows[0][1])) if rows else None

    async def list_schedules(self) -> list[ScheduleRecord]:
        rows = await self._query(
            "list_schedules",
            "SELECT schedule_id, version, data FROM flowkit_schedules"
            ' ORDER BY schedule_id COLLATE "C"',
            (),
        )
        return [ScheduleRecord(i, v, json.loads(d)) for i, v, d in rows]

    async def write_schedule(self, schedule_id: str, data: dict[str, Any], *, version: int) -> bool:
        """One statement: an insert that yields to an existing row, or an update at
        ``version`` (the row lock serialises concurrent writers)."""
        text = json.dumps(data)
        if version == 0:
            rows = await self._query(
                "write_schedule",
                "INSERT INTO flowkit_schedules VALUES (%s, 1, %s)"
                " ON CONFLICT (schedule_id) DO NOTHING RETURNING 1",
                (schedule_id, text),
            )
        else:
            rows = await self._query(
                "write_schedule",
                "UPDATE flowkit_schedules SET version = version + 1, data = %s"
                " WHERE schedule_id = %s AND version = %s RETURNING 1",
                (text, schedule_id, version),
            )
        return bool(rows)

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
        """A transaction that takes the pool's advisory lock (so concurrent acquirers
        count one after another), then drops its expired slots and takes or renews as
        many of the first holders' as fit."""
        pool = (limit_id, key)
        # pipelined: the four statements and the commit go in one network round trip
        async with self._connection("acquire_slot") as conn, conn.pipeline(), conn.transaction():
            await conn.execute(
                "SELECT pg_advisory_xact_lock(hashtextextended(%s, 0))",
                (json.dumps(["flowkit-slot", self.schema, limit_id, key]),),
            )
            await conn.execute(
                "DELETE FROM flowkit_slots WHERE limit_id = %s AND key = %s AND expires_at <= %s",
                (*pool, now),
            )
            cur = await conn.execute(
                "INSERT INTO flowkit_slots SELECT %s, %s, h, %s"
                " FROM unnest(%s::text[]) WITH ORDINALITY AS u(h, i) WHERE i <= %s -"
                " (SELECT count(*) FROM flowkit_slots WHERE limit_id = %s AND key = %s"
                " AND holder <> ALL(%s::text[]))"
                " ON CONFLICT (limit_id, key, holder) DO UPDATE SET expires_at ="
                " EXCLUDED.expires_at RETURNING 1",
                (*pool, expires_at, list(holders), max, *pool, list(holders)),
            )
            return len(await cur.fetchall())

    async def extend_slot(self, limit_id: str, key: str, holder: str, expires_at: float) -> bool:
        rows = await self._query(
            "extend_slot",
            "UPDATE flowkit_slots SET expires_at = %s"
            " WHERE limit_id = %s AND key = %s AND holder = %s RETURNING 1",
            (expires_at, limit_id, key, holder),
        )
        return bool(rows)

    async def take_token(
        self, limit_id: str, key: str, *, rate: float, capacity: float, now: float
    ) -> float:
        """One statement: an insert of a full bucket less one token, or an update that
        refills the row (locked by the update) and takes a token if there is one."""
        rows = await self._query(
            "take_token",
            _TAKE_TOKEN,
            {"limit_id": limit_id, "key": key, "rate": rate, "cap": capacity, "now": now},
        )
        tokens, taken = rows[0]
        return 0.0 if taken else (1.0 - tokens) / rate

    async def reserve_tokens(
        self, limit_id: str, key: str, *, count: int, rate: float, capacity: float, now: float
    ) -> float:
        """One statement, like :meth:`take_token`'s, that takes all ``count`` tokens."""
        rows = await self._query(
            "reserve_tokens",
            _RESERVE_TOKENS,
            {
                "limit_id": limit_id,
                "key": key,
                "count": float(count),
                "rate": rate,
                "cap": capacity,
                "now": now,
            },
        )
        return float(rows[0][0])

    async def release_slots(self, limit_id: str, key: str, holders: Sequence[str]) -> None:
        await self._query(
            "release_slots",
            "DELETE FROM flowkit_slots WHERE limit_id = %s AND key = %s AND holder = ANY(%s)",
            (limit_id, key, list(holders)),
        )

    async def slot_holders(self, limit_id: str, key: str) -> list[str]:
        rows = await self._query(
            "slot_holders",
            "SELECT holder FROM flowkit_slots WHERE limit_id = %s AND key = %s"
            " ORDER BY expires_at, holder",
            (limit_id, key),
        )
        return [str(row[0]) for row in rows]

    async def slot_pools(self, prefix: str) -> list[tuple[str, str]]:
        rows = await self._query(
            "slot_pools",
            "SELECT DISTINCT limit_id, key FROM flowkit_slots"
            " WHERE left(limit_id, %s) = %s ORDER BY limit_id, key",
            (len(prefix), prefix),
        )
        return [(str(row[0]), str(row[1])) for row in rows]

    async def delete_schedule(self, schedule_id: str) -> bool:
        rows = await self._query(
            "delete_schedule",
            "DELETE FROM flowkit_schedules WHERE schedule_id = %s RETURNING 1",
            (schedule_id,),
        )
        return bool(rows)

    async def expired_leases(self, now: float, limit: int = 100) -> list[ExpiredLease]:
        """Dispatches whose lease ran out, earliest first."""
        rows = await self._query(
            "expired_leases",
            "SELECT run_id, dispatch_id, expires_at FROM flowkit_leases WHERE expires_at <= %s"
            " ORDER BY expires_at, run_id, dispatch_id LIMIT %s",
            (now, limit),
        )
        return [ExpiredLease(*row) for row in rows]

    async def extend_lease(self, run_id: str, dispatch_id: str, expires_at: float) -> None:
        """Push an existing lease out (a lease that is gone stays gone)."""
        await self._query(
            "extend_lease",
            "UPDATE flowkit_leases SET expires_at = %s WHERE run_id = %s AND dispatch_id = %s",
            (expires_at, run_id, dispatch_id),
        )

    async def close(self) -> None:
        """Close the pooled connections."""
        with translate_errors("close", self.dsn):
            await self._pool.close()

    async def held_leases(self, leases: Collection[tuple[str, str]]) -> set[tuple[str, str]]:
        """Which of ``leases`` still exist, in one statement."""
        wanted = list(leases)
        if not wanted:
            return set()
        rows = await self._query(
            "held_leases",
            "SELECT run_id, dispatch_id FROM flowkit_leases"
            " JOIN unnest(%s::text[], %s::text[]) AS wanted(run_id, dispatch_id)"
            " USING (run_id, dispatch_id)",
            ([run_id for run_id, _ in wanted], [key for _, key in wanted]),
        )
        return {(str(run_id), str(key)) for run_id, key in rows}

    # -- notices -----------------------------------------------------------------
    def watch_finished(self) -> AbstractAsyncContextManager[AsyncIterator[str]]:
        """While the block is open: the ids of runs that reach a final status.

        A connection of its own ``LISTEN``s; the committing transaction sends
        the ``NOTIFY``, which PostgreSQL delivers only once it committed.
        """
        return self._listen(FINISHED_CHANNEL, "watch_finished")

    def watch_cancelled_nodes(self) -> AbstractAsyncContextManager[AsyncIterator[str]]:
        """While the block is open: the ids of runs some of whose dispatches were cancelled
        (a connection of its own ``LISTEN``s)."""
        return self._listen(CANCELLED_NODES_CHANNEL, "watch_cancelled_nodes")

    async def announce_cancelled_nodes(self, run_id: str) -> None:
        """``NOTIFY`` the watchers; a failure only costs workers a check interval."""
        notice = json.dumps([self.schema, run_id])
        try:
            await self._query(
                "announce cancelled nodes",
                "SELECT pg_notify(%s, %s)",
                (CANCELLED_NODES_CHANNEL, notice),
            )
        except StoreError as exc:
            _log.warning("could not announce cancelled nodes", run_id=run_id, error=str(exc))

    @asynccontextmanager
    async def _listen(self, channel: str, operation: str) -> AsyncIterator[AsyncIterator[str]]:
        async with self._listening(channel, operation) as conn:
            yield self._notices(conn, operation)

    async def _notices(self, conn: Conn, operation: str) -> AsyncIterator[str]:
        with translate_errors(operation, self.dsn):
            async for notice in conn.notifies():
                try:
                    schema, run_id = json.loads(notice.payload)
                except (ValueError, TypeError):
                    continue  # not ours: someone else's NOTIFY on the channel
                if schema == self.schema:
                    yield str(run_id)


async def _migrate(conn: Conn, schema: str) -> None:
    """Create ``schema``'s tables or bring them up to :data:`SCHEMA_VERSION`."""
    await migrate(
        conn,
        schema,
        _MIGRATIONS,
        version_table="flowkit_schema",
        tables="flowkit tables",
        error=StoreError,
    )


async def _write_index(conn: Conn, run_id: str, index: IndexOps) -> None:
    if not index:
        return
    async with conn.cursor() as cur:
        for query, pairs in ((_UPSERT_TIMER, index.timers), (_UPSERT_LEASE, index.leases)):
            if pairs:
                await cur.executemany(query, [(run_id, key, at) for key, at in pairs])
        for query, keys in ((_DROP_TIMERS, index.timers_done), (_DROP_LEASES, index.leases_done)):
            if keys:
                await cur.execute(query, (run_id, list(keys)))


def _replay(row: Any) -> RunState:
    """The state of a ``_LOAD`` row: its snapshot with its journal replayed."""
    return replay(decode_state(row[1]), [decode_delta(delta) for delta in row[2]])


def _list_query(query: RunQuery) -> tuple[sql.Composed, list[Any]]:
    """The SELECT of a ``list_runs`` page (one run more than the page, if there is one).

    Shaped as SQLiteStore's (see its ``_list_query``): under a parent filter the runs
    are read by parent; otherwise the first tag drives, read newest first from
    ``flowkit_run_tags_match`` (a tag's ``created_at`` is its run's); further tags are
    looked up per run. One status is an equality, so that ``flowkit_runs_status``
    gives the page's order (``= ANY`` of an array does not, before PostgreSQL 17).
    """
    where: list[sql.Composable] = []
    params: list[Any] = []

    def add(condition: sql.Composable, *values: Any) -> None:
        where.append(condition)
        params.extend(values)

    tagged = list(query.tags.items())
    driving = tagged.pop(0) if tagged and query.parent is None else None
    if driving is not None:
        source = sql.SQL("flowkit_run_tags t JOIN flowkit_runs r ON r.run_id = t.run_id")
        add(sql.SQL("t.key = %s AND t.value = %s"), *driving)
        key = sql.Identifier("t")  # the page's order and the cursor on the tag's index
    else:
        source = sql.SQL("flowkit_runs r")
        key = sql.Identifier("r")
    if query.flow is not None:
        add(sql.SQL("r.blueprint_id = %s"), query.flow)
    if query.statuses is not None:
        if len(query.statuses) == 1:
            add(sql.SQL("r.status = %s"), query.statuses[0])
        else:
            add(sql.SQL("r.status = ANY(%s::text[])"), list(query.statuses))
    if query.parent is not None:
        add(sql.SQL("r.parent = %s"), query.parent)
    if query.created_after is not None:
        add(sql.SQL("{}.created_at >= %s::float8").format(key), query.created_after)
    if query.created_before is not None:
        add(sql.SQL("{}.created_at < %s::float8").format(key), query.created_before)
    if query.after is not None:
        add(
            sql.SQL('({0}.created_at, {0}.run_id COLLATE "C") < (%s::float8, %s::text)').format(
                key
            ),
            *query.after,
        )
    for tag in tagged:
        add(
            sql.SQL(
                "EXISTS (SELECT 1 FROM flowkit_run_tags x"
                " WHERE x.run_id = r.run_id AND x.key = %s AND x.value = %s)"
            ),
            *tag,
        )
    conditions = sql.SQL(" WHERE {}").format(sql.SQL(" AND ").join(where)) if where else sql.SQL("")
    statement = sql.SQL(
        '{} {}{} ORDER BY {key}.created_at DESC, {key}.run_id COLLATE "C" DESC LIMIT %s'
    ).format(sql.SQL(_SUMMARY), source, conditions, key=key)
    return statement, [*params, query.limit + 1]


def _update_run(
    run_id: str, version: int, snapshot: str | None, info: dict[str, Any] | None, next_seq: int
) -> tuple[sql.Composed, list[Any]]:
    """The UPDATE of the run's row for one commit (None values in ``info`` change nothing),
    its index fields and history counter included."""
    header, stamp = split_info(info)
    fields: dict[str, Any] = {"version": version, "next_seq": next_seq}
    if snapshot is not None:
        fields.update(snapshot_version=version, snapshot=snapshot)
    fields.update({key: value for key, value in header.items() if value is not None})
    fields["updated_at"] = stamp.at
    if stamp.error is not None:
        fields["error_type"], fields["error_message"] = stamp.error
    if stamp.reopening:
        fields.update(finished_at=None, error_type=None, error_message=None)
    sets: list[sql.Composable] = [
        sql.SQL("{} = %s").format(sql.Identifier(name)) for name in fields
    ]
    values = list(fields.values())
    if stamp.finishing:
        sets.append(sql.SQL("finished_at = coalesce(finished_at, %s::float8)"))
        values.append(stamp.at)
    query = sql.SQL("UPDATE flowkit_runs SET {} WHERE run_id = %s").format(sql.SQL(", ").join(sets))
    return query, [*values, run_id]


class _PostgresTransaction:
    """One run's row held by an open database transaction."""

    def __init__(self, store: PostgresStore, conn: Conn, run_id: str) -> None:
        self._store = store
        self._conn = conn
        self._run_id = run_id
        self._exists = False
        self._snapshot_version = 0
        self._next_seq = 1
        self._committed = False  # a commit() finished: the block's end makes it durable
        self._clean = True  # no commit() failed half-way (which rolls back the whole block)
        self.version = 0

    async def begin(self) -> None:
        cur = await self._conn.execute(
            "SELECT version, snapshot_version, next_seq FROM flowkit_runs WHERE run_id = %s"
            " FOR UPDATE",
            (self._run_id,),
        )
        row = await cur.fetchone()
        if row is not None:
            self._exists = True
            self.version, self._snapshot_version = int(row[0]), int(row[1])
            self._next_seq = int(row[2])

    async def end(self) -> None:
        """COMMIT if a commit() finished and none was left half-written, else ROLLBACK."""
        if self._committed and self._clean:
            cur = await self._conn.execute("COMMIT")
            if cur.statusmessage != "COMMIT":  # a failed statement aborted the transaction
                raise StoreError(f"run {self._run_id!r}: the transaction was rolled back")
        elif not self._conn.closed:
            try:
                await self._conn.execute("ROLLBACK")
            except psycopg.Error:
                await self._conn.close()  # the server rolls back a closed session

    @property
    def wants_snapshot(self) -> bool:
        """Whether the next commit should carry the full state."""
        return self._exists and (
            self.version + 1 - self._snapshot_version >= self._store.snapshot_every
        )

    async def changes_since(self, version: int) -> list[Delta] | None:
        """Deltas after ``version``, or None if a snapshot pruned them."""
        if not self._exists or version < self._snapshot_version:
            return None
        with translate_errors("changes_since", self._store.dsn):
            cur = await self._conn.execute(
                "SELECT delta FROM flowkit_journal WHERE run_id = %s AND version > %s"
                " ORDER BY version",
                (self._run_id, version),
            )
            return [decode_delta(row[0]) for row in await cur.fetchall()]

    async def load(self) -> RunState | None:
        """The run's full state at :attr:`version`."""
        if not self._exists:
            return None
        with translate_errors("load", self._store.dsn):
            cur = await self._conn.execute(_LOAD, (self._run_id,))
            row = await cur.fetchone()
        return None if row is None else _replay(row)

    async def commit(
        self,
        delta: Delta,
        *,
        index: IndexOps = NO_INDEX,
        info: dict[str, Any] | None = None,
        state: RunState | None = None,
        history: Sequence[HistoryEntry] = (),
    ) -> int:
        """Write ``delta`` as the next version, durable when the block ends.

        If a commit fails half-way the whole block is rolled back, earlier
        commits of the block included.
        """
        if not self._exists:
            raise StoreError(f"cannot commit to run {self._run_id!r}: it does not exist")
        if not self._store.history_options.enabled:
            history = ()
        encoded = encode_delta(delta)
        version = self.version + 1
        snapshot = encode_state(state) if state is not None and self.wants_snapshot else None
        next_seq = self._next_seq + len(history)
        update = _update_run(self._run_id, version, snapshot, info, next_seq)
        with translate_errors("commit", self._store.dsn):
            await self._write(version, encoded, snapshot, update, index, info)
            if history:
                self._clean = False
                await self._conn.execute(
                    INSERT_HISTORY, (self._run_id, self._next_seq, as_json(history))
                )
                self._clean = True
        self._next_seq = next_seq
        self._account(version, encoded, snapshot)
        return version

    async def _write(
        self,
        version: int,
        encoded: str,
        snapshot: str | None,
        update: tuple[sql.Composed, list[Any]],
        index: IndexOps,
        update_info: dict[str, Any] | None,
    ) -> None:
        self._clean = False  # until every statement is in: else the block ends in ROLLBACK
        if snapshot is None:
            await self._conn.execute(
                "INSERT INTO flowkit_journal VALUES (%s, %s, %s)", (self._run_id, version, encoded)
            )
        else:  # the snapshot replaces the journal
            await self._conn.execute(
                "DELETE FROM flowkit_journal WHERE run_id = %s", (self._run_id,)
            )
        await self._conn.execute(*update)
        await _write_index(self._conn, self._run_id, index)
        if finishes(update_info):
            notice = json.dumps([self._store.schema, self._run_id])
            await self._conn.execute("SELECT pg_notify(%s, %s)", (FINISHED_CHANNEL, notice))
        self._clean = True

    def _account(self, version: int, encoded: str, snapshot: str | None) -> None:
        self.version = version
        self._committed = True
        stats = self._store.stats
        if snapshot is not None:
            self._snapshot_version = version
            stats.snapshot_bytes += len(snapshot)
        stats.commits += 1
        stats.bytes_written += len(encoded)

"""``MemoryStore``: the reference store, in this process's memory.

It keeps encoded JSON like the persistent stores do, so values come back as
plain data exactly as they would from SQLite or PostgreSQL.
"""

from __future__ import annotations

import bisect
import heapq
from contextlib import asynccontextmanager
from json import dumps, loads
from typing import TYPE_CHECKING, Any

import anyio
import attrs

from .._errors import ConfigurationError
from ..backends._options import HISTORY_URL_OPTIONS, check_positive, redact, split_options
from ._buckets import refill, reserve
from ._codec import decode_delta, decode_state, encode_delta, encode_state, replay
from ._history import DEFAULT_PAYLOAD, HistoryEntry, HistoryEvent, check_read, event
from ._history import history_options as checked_history
from ._index import created_fields, purge_query, run_query, split_info
from ._notices import Announcer, finishes
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
    from collections.abc import AsyncIterator, Collection, Mapping, Sequence
    from contextlib import AbstractAsyncContextManager

    from ..core._state import Delta, RunState


@attrs.define
class _Stored:
    info: RunInfo
    snapshot: str
    snapshot_version: int
    summary: RunSummary
    journal: dict[int, str] = attrs.field(factory=dict)
    history: list[HistoryEntry] = attrs.field(factory=list)  # seq n is history[n - 1]
    lock: anyio.Lock = attrs.field(factory=anyio.Lock)

    def index(self, info: RunInfo, **changes: Any) -> None:
        """Set the run's header to ``info`` and its summary to match, with ``changes``."""
        self.info = info
        self.summary = attrs.evolve(
            self.summary,
            flow=info.blueprint_id,
            digest=info.digest,
            status=info.status,
            parent=info.parent,
            **changes,
        )


class MemoryStore(OneHolderSlots):
    """Runs, timers and leases in memory (lost when the process ends)."""

    def __init__(
        self,
        *,
        snapshot_every: int = 64,
        history: bool = True,
        history_payload: int = DEFAULT_PAYLOAD,
    ) -> None:
        check_positive("MemoryStore", snapshot_every=snapshot_every)
        self.history_options = checked_history("MemoryStore", history, history_payload)
        self.stats = StoreStats()
        self.snapshot_every = snapshot_every
        self._runs: dict[str, _Stored] = {}
        self._timers: dict[tuple[str, str], float] = {}
        self._leases: dict[tuple[str, str], float] = {}
        self._by_creation: list[tuple[float, str]] = []  # (created_at, run_id), sorted
        self._finished = Announcer()
        self._cancelled_nodes = Announcer()
        self._schedules: dict[str, tuple[int, str]] = {}  # id -> (version, JSON data)
        self._slots: dict[tuple[str, str], dict[str, float]] = {}
        self._buckets: dict[tuple[str, str], tuple[float, float]] = {}  # tokens, updated

    @classmethod
    def from_url(cls, url: str = "memory://", **options: Any) -> MemoryStore:
        """Build from ``memory://``, optionally ``memory://?snapshot_every=8``.

        Query options: ``snapshot_every`` (int), ``history`` (true/false) and
        ``history_payload`` (int); any other is refused. Keyword ``options`` override
        the query.

        >>> MemoryStore.from_url("memory://?snapshot_every=8").snapshot_every
        8
        """
        if not url.lower().startswith("memory://"):
            raise ConfigurationError(f"not a memory store URL: {redact(url)!r}; use memory://")
        _, found = split_options(url, {"snapshot_every": int, **HISTORY_URL_OPTIONS})
        return cls(**(found | options))

    def watch_finished(self) -> AbstractAsyncContextManager[AsyncIterator[str]]:
        """While the block is open: the ids of runs that reach a final status."""
        return self._finished.watch()

    def watch_cancelled_nodes(self) -> AbstractAsyncContextManager[AsyncIterator[str]]:
        """While the block is open: the ids of runs some of whose dispatches were cancelled."""
        return self._cancelled_nodes.watch()

    async def announce_cancelled_nodes(self, run_id: str) -> None:
        self._cancelled_nodes.announce(run_id)

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
        if run_id in self._runs:
            return False
        snapshot = encode_state(state)
        info = RunInfo(run_id, blueprint_id, digest, new.status, 1, parent)
        error_type, error_message = new.error or (None, None)
        summary = RunSummary(
            run_id,
            blueprint_id,
            digest,
            new.status,
            parent,
            new.created_at,
            new.created_at,
            new.finished_at,
            error_type,
            error_message,
            new.tags,
        )
        stored = self._runs[run_id] = _Stored(info, snapshot, 1, summary)
        if self.history_options.enabled:
            stored.history.extend(history)
        bisect.insort(self._by_creation, (new.created_at, run_id))
        self.stats.commits += 1
        self.stats.snapshot_bytes += len(snapshot)
        self._apply_index(run_id, index)
        return True

    @asynccontextmanager
    async def transaction(self, run_id: str) -> AsyncIterator[_MemoryTransaction]:
        stored = self._runs.get(run_id)
        if stored is None:
            yield _MemoryTransaction(self, run_id, None)
            return
        async with stored.lock:
            yield _MemoryTransaction(self, run_id, stored)

    async def load(self, run_id: str) -> tuple[RunState, int] | None:
        stored = self._runs.get(run_id)
        if stored is None:
            return None
        return _materialise(stored), stored.info.version

    async def info(self, run_id: str) -> RunInfo | None:
        stored = self._runs.get(run_id)
        return stored.info if stored else None

    async def run_summary(self, run_id: str) -> RunSummary | None:
        stored = self._runs.get(run_id)
        if stored is None:
            return None
        return attrs.evolve(stored.summary, tags=dict(stored.summary.tags))

    async def history(
        self, run_id: str, *, after: int = 0, limit: int | None = None
    ) -> list[HistoryEvent]:
        after, limit = check_read(after, limit)
        stored = self._runs.get(run_id)
        if stored is None:
            return []
        entries = stored.history[after : None if limit is None else after + limit]
        return [event(after + i, entry) for i, entry in enumerate(entries, 1)]

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
        """Runs newest first (see :meth:`flowkit.stores.Store.list_runs`): a walk down
        the runs sorted by creation, from the cursor or ``created_before``."""
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
        order = self._by_creation
        end = len(order)
        if query.after is not None:
            end = bisect.bisect_left(order, query.after)
        if query.created_before is not None:
            end = min(end, bisect.bisect_left(order, (query.created_before,)))
        rows: list[RunSummary] = []
        for position in range(end - 1, -1, -1):
            created_at, run_id = order[position]
            if query.created_after is not None and created_at < query.created_after:
                break
            summary = self._runs[run_id].summary
            if query.matches(summary):
                rows.append(attrs.evolve(summary, tags=dict(summary.tags)))
                if len(rows) > query.limit:
                    break
        return query.page(rows)

    async def purge(
        self,
        *,
        finished_before: float,
        status: str | Collection[str] | None = None,
        limit: int = 500,
    ) -> list[str]:
        """Delete finished runs (see :meth:`flowkit.stores.Store.purge`), oldest first."""
        query = purge_query(finished_before=finished_before, status=status, limit=limit)
        doomed: list[str] = []
        for created_at, run_id in self._by_creation:
            if created_at >= query.before or len(doomed) == query.limit:
                break
            stored = self._runs[run_id]
            if query.matches(stored.summary) and not stored.lock.locked():
                doomed.append(run_id)
        for run_id in doomed:
            stored = self._runs.pop(run_id)
            key = (stored.summary.created_at, run_id)
            del self._by_creation[bisect.bisect_left(self._by_creation, key)]
        gone = set(doomed)
        for held in (self._timers, self._leases):
            for stale in [key for key in held if key[0] in gone]:
                del held[stale]
        return doomed

    async def due_timers(self, now: float, limit: int = 100) -> list[DueTimer]:
        due = [(at, key) for key, at in self._timers.items() if at <= now]
        return [DueTimer(k[0], k[1], at) for at, k in heapq.nsmallest(limit, due)]

    async def claim_timer(self, run_id: str, timer_id: str) -> bool:
        return self._timers.pop((run_id, timer_id), None) is not None

    async def expired_leases(self, now: float, limit: int = 100) -> list[ExpiredLease]:
        expired = [(at, key) for key, at in self._leases.items() if at <= now]
        return [ExpiredLease(k[0], k[1], at) for at, k in heapq.nsmallest(limit, expired)]

    async def extend_lease(self, run_id: str, dispatch_id: str, expires_at: float) -> None:
        if (run_id, dispatch_id) in self._leases:
            self._leases[(run_id, dispatch_id)] = expires_at

    async def held_leases(self, leases: Collection[tuple[str, str]]) -> set[tuple[str, str]]:
        return {(run_id, key) for run_id, key in leases if (run_id, key) in self._leases}

    async def load_schedule(self, schedule_id: str) -> ScheduleRecord | None:
        found = self._schedules.get(schedule_id)
        return None if found is None else ScheduleRecord(schedule_id, found[0], loads(found[1]))

    async def list_schedules(self) -> list[ScheduleRecord]:
        return [ScheduleRecord(k, v, loads(d)) for k, (v, d) in sorted(self._schedules.items())]

    async def write_schedule(self, schedule_id: str, data: dict[str, Any], *, version: int) -> bool:
        current = self._schedules.get(schedule_id, (0, ""))[0]
        if current != version:
            return False
        self._schedules[schedule_id] = (version + 1, dumps(data))  # a copy, as stores keep
        return True

    async def delete_schedule(self, schedule_id: str) -> bool:
        return self._schedules.pop(schedule_id, None) is not None

    # -- concurrency slots: (limit id, key) -> holder -> expires at ---------------
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
        pool = self._slots.setdefault((limit_id, key), {})
        for expired in [h for h, until in pool.items() if until <= now]:
            del pool[expired]
        taken = 0
        for holder in holders:
            if holder not in pool and len(pool) >= max:
                break
            pool[holder] = expires_at
            taken += 1
        if not pool:
            del self._slots[(limit_id, key)]
        return taken

    async def extend_slot(self, limit_id: str, key: str, holder: str, expires_at: float) -> bool:
        pool = self._slots.get((limit_id, key), {})
        if holder not in pool:
            return False
        pool[holder] = expires_at
        return True

    async def take_token(
        self, limit_id: str, key: str, *, rate: float, capacity: float, now: float
    ) -> float:
        found = self._buckets.get((limit_id, key))
        tokens, updated = (None, now) if found is None else found
        left, wait = refill(tokens, updated, rate=rate, capacity=capacity, now=now)
        self._buckets[(limit_id, key)] = (left, max(now, updated))
        return wait

    async def reserve_tokens(
        self, limit_id: str, key: str, *, count: int, rate: float, capacity: float, now: float
    ) -> float:
        found = self._buckets.get((limit_id, key))
        tokens, updated = (None, now) if found is None else found
        before = reserve(tokens, updated, count=count, rate=rate, capacity=capacity, now=now)
        self._buckets[(limit_id, key)] = (before - count, now)
        return before

    async def release_slots(self, limit_id: str, key: str, holders: Sequence[str]) -> None:
        pool = self._slots.get((limit_id, key))
        if pool is not None:
            for holder in holders:
                pool.pop(holder, None)
            if not pool:
                del self._slots[(limit_id, key)]

    async def slot_holders(self, limit_id: str, key: str) -> list[str]:
        pool = self._slots.get((limit_id, key), {})
        return [holder for holder, _ in sorted(pool.items(), key=lambda h: (h[1], h[0]))]

    async def slot_pools(self, prefix: str) -> list[tuple[str, str]]:
        return sorted(p for p, held in self._slots.items() if held and p[0].startswith(prefix))

    async def close(self) -> None:
        pass

    def _apply_index(self, run_id: str, index: IndexOps) -> None:
        for timer_id, due in index.timers:
            self._timers[(run_id, timer_id)] = due
        for timer_id in index.timers_done:
            self._timers.pop((run_id, timer_id), None)
        for dispatch_id, expires in index.leases:
            self._leases[(run_id, dispatch_id)] = expires
        for dispatch_id in index.leases_done:
            self._leases.pop((run_id, dispatch_id), None)


def _materialise(stored: _Stored) -> RunState:
    deltas = [
        decode_delta(stored.journal[v])
        for v in range(stored.snapshot_version + 1, stored.info.version + 1)
    ]
    return replay(decode_state(stored.snapshot), deltas)


class _MemoryTransaction:
    def __init__(self, store: MemoryStore, run_id: str, stored: _Stored | None) -> None:
        self._store = store
        self._run_id = run_id
        self._stored = stored
        self.version = stored.info.version if stored else 0

    async def changes_since(self, version: int) -> list[Delta] | None:
        stored = self._stored
        if stored is None or version < stored.snapshot_version:
            return None
        return [decode_delta(stored.journal[v]) for v in range(version + 1, self.version + 1)]

    async def load(self) -> RunState | None:
        return _materialise(self._stored) if self._stored else None

    @property
    def wants_snapshot(self) -> bool:
        stored = self._stored
        return stored is not None and self.version + 1 - stored.snapshot_version >= (
            self._store.snapshot_every
        )

    async def commit(
        self,
        delta: Delta,
        *,
        index: IndexOps = NO_INDEX,
        info: dict[str, Any] | None = None,
        state: RunState | None = None,
        history: Sequence[HistoryEntry] = (),
    ) -> int:
        stored = self._stored
        if stored is None:
            from .._errors import StoreError

            raise StoreError(f"cannot commit to run {self._run_id!r}: it does not exist")
        columns, stamp = split_info(info)
        encoded = encode_delta(delta)
        take_snapshot = state is not None and self.wants_snapshot
        self.version += 1
        stored.journal[self.version] = encoded
        changes: dict[str, Any] = {"updated_at": stamp.at}
        if stamp.finishing and stored.summary.finished_at is None:
            changes["finished_at"] = stamp.at
        if stamp.reopening:
            changes.update(finished_at=None, error_type=None, error_message=None)
        if stamp.error is not None:
            changes["error_type"], changes["error_message"] = stamp.error
        stored.index(attrs.evolve(stored.info, version=self.version, **columns), **changes)
        if take_snapshot:
            assert state is not None
            stored.snapshot = encode_state(state)
            for old in range(stored.snapshot_version + 1, self.version + 1):
                stored.journal.pop(old, None)
            stored.snapshot_version = self.version
            self._store.stats.snapshot_bytes += len(stored.snapshot)
        self._store.stats.commits += 1
        self._store.stats.bytes_written += len(encoded)
        self._store._apply_index(self._run_id, index)
        if history and self._store.history_options.enabled:
            stored.history.extend(history)
        if finishes(info):
            self._store._finished.announce(self._run_id)
        return self.version

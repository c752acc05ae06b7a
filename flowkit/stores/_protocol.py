"""The ``Store`` protocol: where runs live between (and across) processes.

A run is stored event-sourcing style: a snapshot of its state at some version
plus a journal of deltas after it. Every transition of a run happens inside
``store.transaction(run_id)``, which holds the run exclusively (a row lock, a
SQLite write lock, a Redis lease...), so the pure core can be stepped on a
cached copy without races and each transition writes only its delta. Side
indexes (due timers, dispatch leases) are updated in the same commit.

A store whose commit checks the run's version by itself can also offer
``attempt(run_id, version)`` (:class:`CommitsOptimistically`): a transaction
that holds nothing and commits only if the run is still at ``version``, else
raises :class:`Conflict`. A process whose copy of the run is current then makes
one round trip per transition instead of taking the lock first; on a conflict
it catches up under the lock, so a 1 000-wide fan costs at most one failed
attempt per completion, never a chain of retries.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

import attrs

from .._errors import StoreError

if TYPE_CHECKING:
    from contextlib import AbstractAsyncContextManager

    from ..core._state import Delta, RunState
    from ._history import HistoryEntry, HistoryEvent, HistoryOptions


@attrs.frozen
class IndexOps:
    """Changes to a store's side indexes, committed with a delta."""

    timers: Sequence[tuple[str, float]] = ()  # (timer id, due at, epoch seconds)
    timers_done: Sequence[str] = ()
    leases: Sequence[tuple[str, float]] = ()  # (dispatch id, expires at)
    leases_done: Sequence[str] = ()

    def __bool__(self) -> bool:
        return bool(self.timers or self.timers_done or self.leases or self.leases_done)


NO_INDEX = IndexOps()


@attrs.frozen
class RunInfo:
    """The queryable header of a stored run."""

    run_id: str
    blueprint_id: str
    digest: str
    status: str
    version: int
    parent: str | None = None


@attrs.frozen
class RunSummary:
    """One run as :meth:`Store.list_runs` lists it: its header and index fields.

    Timestamps are unix seconds on the clock of the process that wrote them
    (``flowkit._clock.now()``: virtual time under the simulator).
    """

    run_id: str
    flow: str
    """The blueprint id of the flow that started the run."""
    digest: str
    status: str
    """A :class:`~flowkit.RunStatus` value: running, awaiting, completed, failed, cancelled."""
    parent: str | None
    created_at: float
    updated_at: float
    """When the run's last transition was committed (its creation, if none)."""
    finished_at: float | None
    """When the commit that gave the run its final status was made; None until then."""
    error_type: str | None
    """Of a failed run: its error's type, as the run records it (e.g.
    ``"flowkit._errors.NodeError"``); None otherwise."""
    error_message: str | None
    tags: dict[str, str]


@attrs.frozen
class RunPage:
    """A page of :meth:`Store.list_runs`: runs newest first, and where the next page starts."""

    runs: list[RunSummary]
    """Newest first: by ``created_at`` descending, then ``run_id`` descending."""
    cursor: str | None
    """Pass it back as ``list_runs(cursor=...)`` (with the same filters) for the next
    page; None when there is no next page. Opaque."""


@attrs.frozen
class DueTimer:
    run_id: str
    timer_id: str
    due_at: float


@attrs.frozen
class ExpiredLease:
    run_id: str
    dispatch_id: str
    expires_at: float


@attrs.define
class StoreStats:
    """Counters for benchmarks: transactions committed and delta bytes written."""

    commits: int = 0
    bytes_written: int = 0
    snapshot_bytes: int = 0
    conflicts: int = 0
    """Optimistic commits refused because another process changed or held the run."""
    catch_ups: int = 0
    """Copies of runs brought up to date by the deltas they missed (not loaded whole)."""


@attrs.frozen
class ScheduleRecord:
    """A schedule as the store keeps it: its definition and state as JSON data, and a
    version that every write moves on by one (see :meth:`Store.write_schedule`)."""

    schedule_id: str
    version: int
    data: dict[str, Any]


@runtime_checkable
class RunTransaction(Protocol):
    """A run held exclusively; see :meth:`Store.transaction`."""

    version: int
    """The run's version when the transaction began (0: no such run)."""

    async def changes_since(self, version: int) -> list[Delta] | None:
        """Deltas after ``version`` in order, or None if they are no longer kept."""

    async def load(self) -> RunState | None:
        """The run's full state at :attr:`version` (None if there is no such run)."""

    async def commit(
        self,
        delta: Delta,
        *,
        index: IndexOps = NO_INDEX,
        info: dict[str, Any] | None = None,
        state: RunState | None = None,
        history: Sequence[HistoryEntry] = (),
    ) -> int:
        """Append ``delta`` as the next version and apply ``index``; returns the new version.

        Durable once the transaction block exits (some stores sooner): publish
        messages that depend on it after the block.

        ``info`` updates the run's header and index in the same commit. Every store
        accepts ``"status"`` (the run's status), ``"at"`` (the commit's wall-clock
        time: the run's ``updated_at``, and its ``finished_at`` if ``status`` is final
        and the run had none; the store's clock if missing) and ``"error"`` (a
        ``(type, message)`` pair: a failed run's error). ``state``, the run's full
        state after the delta, lets the store write a snapshot when it wants one (see
        :attr:`wants_snapshot`).

        ``history`` are the run-history events the transition makes, appended to the
        run's history (numbered on from its last) in the same commit, unless the store
        keeps no history (``history_options.enabled`` false).
        """

    @property
    def wants_snapshot(self) -> bool:
        """Whether the next commit should carry the full state."""


class Conflict(StoreError):
    """A commit found the run changed (or held by another) since its transaction began;
    nothing was written."""


@runtime_checkable
class CommitsOptimistically(Protocol):
    """The optional store capability behind one-round-trip transitions."""

    def attempt(self, run_id: str, version: int) -> RunTransaction:
        """A transaction on ``run_id`` at ``version`` that holds nothing: its
        :meth:`~RunTransaction.commit` writes only if the run is still at ``version``
        and no other transaction holds it, and raises :class:`Conflict` otherwise."""


@runtime_checkable
class CatchesUp(Protocol):
    """The optional store capability behind refreshing a copy of a run by what it missed."""

    async def changes_since(self, run_id: str, version: int) -> tuple[list[Delta], int] | None:
        """The deltas committed to ``run_id`` after ``version`` and the version they lead
        to, in one consistent read that holds nothing; None if the run is gone or a
        snapshot pruned some of them (then load it whole)."""


@runtime_checkable
class ChecksLeases(Protocol):
    """The optional store capability behind a worker's checks of the nodes it runs."""

    async def held_leases(self, leases: Collection[tuple[str, str]]) -> set[tuple[str, str]]:
        """Which ``(run_id, dispatch_id)`` pairs of ``leases`` still hold a lease, in one read.

        A dispatch's lease goes in the commit that takes the dispatch out of its run
        (completed, failed, or cancelled): a node whose lease is gone is no longer wanted.
        """


class Store(Protocol):
    """Persistence for runs, timers and leases. See the module docstring."""

    stats: StoreStats
    history_options: HistoryOptions
    """Whether the store keeps run history, and the bound of an event's payload."""

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
        """Store a new run at version 1; False (and nothing written) if it exists.

        ``tags`` go into the run index with it (see :meth:`list_runs`), not into its
        state; ``created_at`` is the wall-clock time of the start (the store's clock
        if None); ``history`` its first history events (numbered from 1).
        """

    def transaction(self, run_id: str) -> AbstractAsyncContextManager[RunTransaction]:
        """Hold ``run_id`` exclusively until the block ends; uncommitted work is discarded."""

    async def load(self, run_id: str) -> tuple[RunState, int] | None:
        """A consistent read of the run's state and version, without holding it."""

    async def info(self, run_id: str) -> RunInfo | None:
        """The run's header, or None."""

    async def due_timers(self, now: float, limit: int = 100) -> list[DueTimer]:
        """Timers due at ``now``, earliest first."""

    async def claim_timer(self, run_id: str, timer_id: str) -> bool:
        """Remove a timer from the index; True for exactly one of several claimers."""

    async def expired_leases(self, now: float, limit: int = 100) -> list[ExpiredLease]:
        """Dispatches whose lease ran out (crashed worker, lost message)."""

    async def extend_lease(self, run_id: str, dispatch_id: str, expires_at: float) -> None:
        """Push a dispatch's lease out (heartbeat of a long node)."""

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
        """Runs newest first, at most ``limit`` (1 to 1000), from an index.

        Filters combine with AND: ``flow`` (blueprint id), ``status`` (one status or
        any of several), ``tags`` (every given key has the given value),
        ``created_after <= created_at < created_before``, ``parent`` (the children of a
        run). ``cursor``, from the previous page, continues after its last run
        (keyset pagination: runs created meanwhile never shift a page). Raises
        :class:`~flowkit.ConfigurationError` naming a bad argument.
        """

    async def purge(
        self,
        *,
        finished_before: float,
        status: str | Collection[str] | None = None,
        limit: int = 500,
    ) -> list[str]:
        """Delete up to ``limit`` (1 to 1000) runs that finished before ``finished_before``
        (unix seconds), with everything stored for them; the ids of those deleted.

        ``status`` narrows the final statuses purged (completed, failed, cancelled; all
        by default). A run that has not finished is never deleted (a status that is not
        final raises :class:`~flowkit.ConfigurationError`), nor one whose transaction is
        under way. Call again until it returns fewer than ``limit`` ids.
        """

    async def run_summary(self, run_id: str) -> RunSummary | None:
        """The run as :meth:`list_runs` lists it, or None if there is no such run."""

    async def history(
        self, run_id: str, *, after: int = 0, limit: int | None = None
    ) -> list[HistoryEvent]:
        """The run's history events with ``seq > after``, in order, at most ``limit``
        (all if None); empty for a run with none, or no such run."""

    async def load_schedule(self, schedule_id: str) -> ScheduleRecord | None:
        """The schedule's record, or None."""

    async def list_schedules(self) -> list[ScheduleRecord]:
        """Every schedule's record, by id."""

    async def write_schedule(self, schedule_id: str, data: dict[str, Any], *, version: int) -> bool:
        """Write ``data`` (JSON data) as the schedule's record at ``version + 1`` if the
        record is still at ``version`` (0: there is none yet); atomic, so of several
        writers from one version exactly one gets True. False: nothing written."""

    async def delete_schedule(self, schedule_id: str) -> bool:
        """Delete the schedule's record; False if there was none."""

    async def acquire_slot(
        self, limit_id: str, key: str, holder: str, *, max: int, now: float, expires_at: float
    ) -> bool:
        """Take a slot of the pool ``(limit_id, key)`` for ``holder`` until ``expires_at``,
        if fewer than ``max`` holders have unexpired slots there at ``now``; atomic across
        processes. True if ``holder`` holds a slot (already held: its expiry moves to
        ``expires_at``); False, and nothing written, if the pool is full."""

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
        """Take slots for ``holders`` in one call, in order, as :meth:`acquire_slot` would
        one by one: how many of the first of them hold one (the others got none)."""

    async def extend_slot(self, limit_id: str, key: str, holder: str, expires_at: float) -> bool:
        """Push ``holder``'s slot out to ``expires_at``; False if it holds none (expired
        and taken over, or released)."""

    async def release_slot(self, limit_id: str, key: str, holder: str) -> None:
        """Give ``holder``'s slot back (nothing if it holds none)."""

    async def release_slots(self, limit_id: str, key: str, holders: Sequence[str]) -> None:
        """Give back the slots of all ``holders`` of the pool (those that hold one) in one
        call."""

    async def slot_holders(self, limit_id: str, key: str) -> list[str]:
        """The holders of slots of the pool ``(limit_id, key)``, by expiry (earliest
        first), then by holder; expired slots included until a take drops them."""

    async def slot_pools(self, prefix: str) -> list[tuple[str, str]]:
        """The pools ``(limit_id, key)`` that have slots, of the limit ids that start
        with ``prefix``, in order."""

    async def take_token(
        self, limit_id: str, key: str, *, rate: float, capacity: float, now: float
    ) -> float:
        """Take a token from the bucket ``(limit_id, key)``, which holds up to ``capacity``
        tokens (full when first used) and gains ``rate`` a second; atomic across
        processes. 0.0: taken. Otherwise nothing is taken, and the result is the seconds
        until the bucket next has a token."""

    async def reserve_tokens(
        self, limit_id: str, key: str, *, count: int, rate: float, capacity: float, now: float
    ) -> float:
        """Take ``count`` tokens from the same bucket as :meth:`take_token`, ahead of time if
        it holds fewer: its level goes below zero, and it owes them as it refills. Returns
        its level at ``now`` before the take: the j-th token taken (from 1) is due
        ``max(0, (j - level) / rate)`` seconds after ``now``, so the tokens it grants never
        come faster than ``rate`` a second (after the ``capacity`` it starts with);
        atomic across processes."""

    async def close(self) -> None:
        """Release connections."""

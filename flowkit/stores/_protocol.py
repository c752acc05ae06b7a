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

from collections.abc import Collection, Sequence
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

import attrs

from .._errors import StoreError

if TYPE_CHECKING:
    from contextlib import AbstractAsyncContextManager

    from ..core._state import Delta, RunState


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
    ) -> int:
        """Append ``delta`` as the next version and apply ``index``; returns the new version.

        Durable once the transaction block exits (some stores sooner): publish
        messages that depend on it after the block.

        ``info`` updates the run's ``status`` column (the only key every store
        accepts). ``state``, the run's full state after the delta, lets the store
        write a snapshot when it wants one (see :attr:`wants_snapshot`).
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

    async def create_run(
        self,
        run_id: str,
        state: RunState,
        *,
        blueprint_id: str,
        digest: str,
        parent: str | None = None,
        index: IndexOps = NO_INDEX,
    ) -> bool:
        """Store a new run at version 1; False (and nothing written) if it exists."""

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

    async def close(self) -> None:
        """Release connections."""

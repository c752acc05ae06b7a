"""``PostgresStore.attempt``: a transition committed in one statement, without the lock.

The statement locks the run's row only if it is still at the expected version
(``FOR UPDATE NOWAIT``: a row another transaction holds is a conflict, not a
wait), then writes the version, the delta or snapshot, the index changes and
the run's history events (numbered from the ``next_seq`` the same UPDATE moves
on) and the finished-run notice in the same implicit transaction: one round trip where
a locked transaction makes about seven (BEGIN, SELECT ... FOR UPDATE, journal,
row, index, COMMIT).
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any, LiteralString

from .._errors import StoreError
from ._codec import encode_delta, encode_state
from ._history import as_json
from ._index import split_info
from ._notices import finishes
from ._protocol import NO_INDEX, Conflict

if TYPE_CHECKING:
    from collections.abc import Sequence

    from ..core._state import Delta, RunState
    from ._history import HistoryEntry
    from ._postgres import PostgresStore
    from ._protocol import IndexOps

_ATTEMPT: LiteralString = """
WITH locked AS (
  SELECT run_id FROM flowkit_runs
  WHERE run_id = %(run_id)s AND version = %(expected)s FOR UPDATE NOWAIT
), bumped AS (
  UPDATE flowkit_runs AS r SET
    version = %(version)s,
    snapshot_version = CASE WHEN %(snapshot)s::text IS NULL THEN r.snapshot_version
                            ELSE %(version)s END,
    snapshot = coalesce(%(snapshot)s::text, r.snapshot),
    status = coalesce(%(status)s::text, r.status),
    blueprint_id = coalesce(%(blueprint_id)s::text, r.blueprint_id),
    digest = coalesce(%(digest)s::text, r.digest),
    parent = coalesce(%(parent)s::text, r.parent),
    updated_at = %(at)s::float8,
    finished_at = CASE WHEN %(finishing)s::boolean THEN coalesce(r.finished_at, %(at)s::float8)
                       WHEN %(reopening)s::boolean THEN NULL ELSE r.finished_at END,
    error_type = CASE WHEN %(reopening)s::boolean THEN NULL
                      ELSE coalesce(%(error_type)s::text, r.error_type) END,
    error_message = CASE WHEN %(reopening)s::boolean THEN NULL
                         ELSE coalesce(%(error_message)s::text, r.error_message) END,
    next_seq = r.next_seq + %(events)s::int
  FROM locked WHERE r.run_id = locked.run_id
  RETURNING r.run_id, r.next_seq - %(events)s::int AS first_seq
), history AS (
  INSERT INTO flowkit_history
  SELECT b.run_id, b.first_seq + u.n - 1, (u.e->>0)::float8, u.e->>1, u.e->>2, (u.e->>3)::int,
    u.e->>4, (u.e->5)::text
  FROM bumped AS b, json_array_elements(%(history)s::json) WITH ORDINALITY AS u(e, n)
  WHERE %(events)s::int > 0
), journal AS (
  INSERT INTO flowkit_journal
  SELECT run_id, %(version)s, %(delta)s FROM bumped WHERE %(snapshot)s::text IS NULL
), pruned AS (
  DELETE FROM flowkit_journal
  WHERE %(snapshot)s::text IS NOT NULL AND run_id IN (SELECT run_id FROM bumped)
), timers AS (
  INSERT INTO flowkit_timers
  SELECT b.run_id, u.key, u.at
  FROM bumped AS b, unnest(%(timers)s::text[], %(timers_at)s::float8[]) AS u(key, at)
  WHERE u.key <> ALL(%(timers_done)s::text[])
  ON CONFLICT (run_id, timer_id) DO UPDATE SET due_at = EXCLUDED.due_at
), timers_done AS (
  DELETE FROM flowkit_timers
  WHERE run_id IN (SELECT run_id FROM bumped) AND timer_id = ANY(%(timers_done)s::text[])
), leases AS (
  INSERT INTO flowkit_leases
  SELECT b.run_id, u.key, u.at
  FROM bumped AS b, unnest(%(leases)s::text[], %(leases_at)s::float8[]) AS u(key, at)
  WHERE u.key <> ALL(%(leases_done)s::text[])
  ON CONFLICT (run_id, dispatch_id) DO UPDATE SET expires_at = EXCLUDED.expires_at
), leases_done AS (
  DELETE FROM flowkit_leases
  WHERE run_id IN (SELECT run_id FROM bumped) AND dispatch_id = ANY(%(leases_done)s::text[])
), notice AS (
  SELECT pg_notify(%(channel)s, %(notice)s) FROM bumped WHERE %(notice)s::text IS NOT NULL
)
SELECT (SELECT count(*) FROM bumped), (SELECT count(*) FROM notice)
"""
# (a key both added and removed by one transition ends removed, as in a locked commit,
# where the removal runs second: the statement's parts see one snapshot, so the insert
# skips such keys instead)


class PostgresAttempt:
    """A transaction on one run at a known version that holds nothing until it commits."""

    def __init__(self, store: PostgresStore, run_id: str, version: int) -> None:
        self._store = store
        self._run_id = run_id
        self.version = version

    @property
    def wants_snapshot(self) -> bool:
        """At multiples of ``snapshot_every`` (the snapshot version is not read: that
        would cost the round trip this saves); that bounds the journal too."""
        return (self.version + 1) % self._store.snapshot_every == 0

    async def changes_since(self, version: int) -> list[Delta] | None:
        """None: an attempt reads nothing (catch up in a locked transaction)."""
        return None

    async def load(self) -> RunState | None:
        """The run's current state (not necessarily at :attr:`version`)."""
        found = await self._store.load(self._run_id)
        return None if found is None else found[0]

    async def commit(
        self,
        delta: Delta,
        *,
        index: IndexOps = NO_INDEX,
        info: dict[str, Any] | None = None,
        state: RunState | None = None,
        history: Sequence[HistoryEntry] = (),
    ) -> int:
        """Write ``delta`` as the next version if the run is still at :attr:`version` and
        no one holds it, in one statement; else raise :class:`Conflict`, having written
        nothing."""
        from ._postgres import FINISHED_CHANNEL

        header, stamp = split_info(info)
        error_type, error_message = stamp.error or (None, None)
        if not self._store.history_options.enabled:
            history = ()
        encoded = encode_delta(delta)
        version = self.version + 1
        snapshot = encode_state(state) if state is not None and self.wants_snapshot else None
        params = {
            "run_id": self._run_id,
            "expected": self.version,
            "version": version,
            "delta": encoded,
            "snapshot": snapshot,
            **dict.fromkeys(("status", "blueprint_id", "digest", "parent")),
            **header,
            "at": stamp.at,
            "finishing": stamp.finishing,
            "reopening": stamp.reopening,
            "error_type": error_type,
            "error_message": error_message,
            **_index_params("timers", index.timers, index.timers_done),
            **_index_params("leases", index.leases, index.leases_done),
            "events": len(history),
            "history": as_json(history),
            "channel": FINISHED_CHANNEL,
            "notice": json.dumps([self._store.schema, self._run_id]) if finishes(info) else None,
        }
        try:
            rows = await self._store._query("commit", _ATTEMPT, params)
        except StoreError as exc:
            from psycopg.errors import LockNotAvailable  # the "postgres" extra is installed

            if isinstance(exc.__cause__, LockNotAvailable):
                raise self._conflict("another transaction holds it") from exc
            raise
        if not rows or rows[0][0] != 1:
            raise self._conflict("another transaction changed it")
        self.version = version
        stats = self._store.stats
        stats.commits += 1
        stats.bytes_written += len(encoded)
        stats.snapshot_bytes += len(snapshot or "")
        return version

    def _conflict(self, why: str) -> Conflict:
        self._store.stats.conflicts += 1
        return Conflict(
            f"cannot commit to run {self._run_id!r} at version {self.version} in "
            f"{self._store!r}: {why}; nothing was written"
        )


def _index_params(name: str, added: Any, removed: Any) -> dict[str, Any]:
    pairs = dict(added)  # one row per key: ON CONFLICT cannot touch a row twice
    return {name: list(pairs), f"{name}_at": list(pairs.values()), f"{name}_done": list(removed)}

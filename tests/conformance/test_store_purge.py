"""``purge`` in the ``Store`` conformance suite: deleting finished runs, on every store.

The same stores, servers and fixtures as ``test_store_index`` (MemoryStore and
SQLiteStore on asyncio and trio, PostgresStore and RedisStore against the real
servers on loopback). Times are passed explicitly; no test reads the wall clock.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest

from flowkit import ConfigurationError
from flowkit.stores import IndexOps
from flowkit.stores._history import HistoryEntry

from . import test_store_index as index
from .test_store_index import FINAL, commit, make

# the index suite's fixtures: its cases, databases and stores
anyio_backend, case, db, store = index.anyio_backend, index.case, index.db, index.store

if TYPE_CHECKING:
    from flowkit.stores import Store

pytestmark = pytest.mark.anyio


async def finished(store: Store, run_id: str, created: float, ended: float, status: str) -> None:
    await make(store, run_id, created, tags={"team": "a"})
    async with store.transaction(run_id) as txn:
        state = await txn.load()
        assert state is not None
        state.put("header", "status", status)
        entry = HistoryEntry(ended, f"run.{status}", None, None, None, "{}")
        info = {"status": status, "at": ended}
        await txn.commit(state.take_delta(), info=info, state=state, history=[entry])


async def ids(store: Store) -> set[str]:
    page = await store.list_runs(limit=1000)
    return {run.run_id for run in page.runs}


async def test_purges_runs_that_finished_before_the_cutoff_with_all_they_stored(
    store: Store,
) -> None:
    for n, status in enumerate(FINAL):
        await finished(store, f"old-{status}", 10.0 + n, 20.0 + n, status)
    await finished(store, "recent", 11.0, 200.0, "completed")  # created early, finished late
    await make(store, "running", 12.0)
    await commit(store, "running", 13.0, "running")
    await make(store, "awaiting", 14.0)
    async with store.transaction("awaiting") as txn:
        state = await txn.load()
        assert state is not None
        state.put("header", "status", "awaiting")
        await txn.commit(
            state.take_delta(),
            index=IndexOps(timers=[("t1", 50.0)]),
            info={"status": "awaiting", "at": 15.0},
            state=state,
        )

    purged = await store.purge(finished_before=100.0)

    assert {f"old-{status}" for status in FINAL} == set(purged)
    assert {"recent", "running", "awaiting"} == await ids(store)
    assert [] != await store.history("recent")
    for run_id in purged:
        assert await store.load(run_id) is None
        assert await store.info(run_id) is None
        assert [] == await store.history(run_id)
    assert [] == (await store.list_runs(tags={"team": "a"}, status="failed")).runs
    assert ["awaiting"] == [timer.run_id for timer in await store.due_timers(1e9)]
    assert [] == await store.purge(finished_before=100.0), "purging twice purges nothing"


async def test_status_narrows_what_is_purged(store: Store) -> None:
    for status in FINAL:
        await finished(store, status, 10.0, 20.0, status)
    assert ["failed"] == await store.purge(finished_before=100.0, status="failed")
    assert ["cancelled", "completed"] == sorted(
        await store.purge(finished_before=100.0, status=["completed", "cancelled"])
    )
    assert set() == await ids(store)


async def test_a_limit_bounds_each_call_and_repeated_calls_purge_the_rest(store: Store) -> None:
    for n in range(7):
        await finished(store, f"r{n}", 10.0 + n, 20.0 + n, "completed")
    await finished(store, "late", 9.0, 500.0, "completed")  # a candidate that stays
    first = await store.purge(finished_before=100.0, limit=3)
    second = await store.purge(finished_before=100.0, limit=3)
    third = await store.purge(finished_before=100.0, limit=3)
    assert (3, 3, 1) == (len(first), len(second), len(third))
    assert {f"r{n}" for n in range(7)} == {*first, *second, *third}
    assert {"late"} == await ids(store)


async def test_a_purged_run_id_can_be_used_again(store: Store) -> None:
    await finished(store, "again", 10.0, 20.0, "completed")
    assert ["again"] == await store.purge(finished_before=100.0)
    await make(store, "again", 300.0)
    (run,) = (await store.list_runs()).runs
    assert ("again", "running", 300.0) == (run.run_id, run.status, run.created_at)


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        ({"finished_before": 1.0, "status": "running"}, "status 'running' is not final"),
        ({"finished_before": 1.0, "status": "awaiting"}, "status 'awaiting' is not final"),
        ({"finished_before": 1.0, "status": "done"}, "status 'done' is not a run status"),
        ({"finished_before": 1.0, "status": []}, "empty collection"),
        ({"finished_before": float("nan")}, "finished_before must be unix seconds"),
        ({"finished_before": "yesterday"}, "finished_before must be unix seconds"),
        ({"finished_before": 1.0, "limit": 0}, "limit must be an int from 1 to 1000"),
        ({"finished_before": 1.0, "limit": 1001}, "limit must be an int from 1 to 1000"),
    ],
)
async def test_bad_arguments_are_refused(
    store: Store, arguments: dict[str, object], message: str
) -> None:
    await finished(store, "kept", 0.0, 0.5, "completed")
    with pytest.raises(ConfigurationError, match=message):
        await store.purge(**arguments)  # type: ignore[arg-type]
    assert {"kept"} == await ids(store)

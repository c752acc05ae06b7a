"""Schedule records in the ``Store`` conformance suite: load, list, compare-and-set
writes and delete, on every store.

The same stores, servers and fixtures as ``test_store_index`` (MemoryStore and
SQLiteStore on asyncio and trio, PostgresStore and RedisStore against the real
servers on loopback); two stores opened on one database stand for two processes.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import anyio
import pytest

from flowkit.stores import ScheduleRecord

from . import test_store_index as index

if TYPE_CHECKING:
    from flowkit.stores import Store

    from .test_store import Database

anyio_backend, case, db, store = index.anyio_backend, index.case, index.db, index.store

pytestmark = pytest.mark.anyio

DATA = {"spec": {"flow": "report", "cron": "0 9 * * MON-FRI"}, "state": {"cursor": 1.5}}


class TestScheduleRecords:
    """A schedule record is JSON data at a version that each write moves on by one."""

    async def test_missing(self, store: Store) -> None:
        assert await store.load_schedule("nightly") is None
        assert [] == await store.list_schedules()
        assert not await store.delete_schedule("nightly")

    async def test_create_then_update_at_the_version(self, store: Store) -> None:
        assert await store.write_schedule("nightly", DATA, version=0)
        assert ScheduleRecord("nightly", 1, DATA) == await store.load_schedule("nightly")
        changed = DATA | {"state": {"cursor": 2.0, "paused": True}}
        assert await store.write_schedule("nightly", changed, version=1)
        assert ScheduleRecord("nightly", 2, changed) == await store.load_schedule("nightly")

    async def test_a_stale_version_writes_nothing(self, store: Store) -> None:
        assert await store.write_schedule("nightly", DATA, version=0)
        assert not await store.write_schedule("nightly", {"other": 1}, version=0)
        assert not await store.write_schedule("nightly", {"other": 1}, version=2)
        assert ScheduleRecord("nightly", 1, DATA) == await store.load_schedule("nightly")

    async def test_an_update_of_a_missing_record_writes_nothing(self, store: Store) -> None:
        assert not await store.write_schedule("nightly", DATA, version=1)
        assert await store.load_schedule("nightly") is None

    async def test_list_by_id_and_delete(self, store: Store) -> None:
        for schedule_id in ("b", "a", "c"):
            assert await store.write_schedule(schedule_id, {"id": schedule_id}, version=0)
        assert ["a", "b", "c"] == [r.schedule_id for r in await store.list_schedules()]
        assert await store.delete_schedule("b")
        assert not await store.delete_schedule("b")
        assert ["a", "c"] == [r.schedule_id for r in await store.list_schedules()]
        assert await store.write_schedule("b", {"id": "again"}, version=0), "deleted: new again"

    async def test_exactly_one_of_several_writers_from_one_version_wins(
        self, db: Database, store: Store
    ) -> None:
        assert await store.write_schedule("nightly", DATA, version=0)
        stores = [store, db.open(), db.open(), db.open()]
        won: list[int] = []

        async def write(n: int) -> None:
            if await stores[n].write_schedule("nightly", {"writer": n}, version=1):
                won.append(n)

        async with anyio.create_task_group() as tg:
            for n in range(len(stores)):
                tg.start_soon(write, n)
        assert 1 == len(won)
        record = await stores[1].load_schedule("nightly")
        assert record == ScheduleRecord("nightly", 2, {"writer": won[0]})

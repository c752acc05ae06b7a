"""Schedules in the shells: Runtime and Worker start one run per tick, on a fake clock.

The clock is ``flowkit._clock.use_clock`` with a value the tests move; the shells'
scheduler steps are taken with ``Runtime.tick_schedules()`` and ``Worker.tick()``,
so nothing waits on the wall clock. PostgreSQL and Redis are the real servers on
loopback (``FLOWKIT_TEST_POSTGRES`` / ``FLOWKIT_TEST_REDIS`` override the addresses),
each test on a fresh schema or key prefix.
"""

from __future__ import annotations

import os
import uuid
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import pytest

import flowkit
from flowkit import ConfigurationError, InvalidInputs, RunStatus, Schedule, flow
from flowkit._clock import use_clock
from flowkit.stores import MemoryStore, SQLiteStore
from flowkit.transports import MemoryTransport

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Iterator
    from pathlib import Path

pytestmark = pytest.mark.anyio

PG_DSN = os.environ.get("FLOWKIT_TEST_POSTGRES", "postgresql://postgres@127.0.0.1:5432/test")
REDIS_URL = os.environ.get("FLOWKIT_TEST_REDIS", "redis://127.0.0.1:6379/0")
T0 = datetime(2026, 3, 2, 8, 0, tzinfo=UTC).timestamp()  # a Monday


class Clock:
    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> Iterator[Clock]:
    fake = Clock()
    with use_clock(fake):
        yield fake


@flow
async def report(team: str) -> str:
    return f"report for {team}"


@flow
async def approval(team: str) -> Any:
    return await flow.wait("approved")


def iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


class TestValidation:
    """A bad schedule is refused where it is written, with what to pass instead."""

    def test_bad_cron_on_the_decorator(self) -> None:
        with pytest.raises(ConfigurationError, match="invalid cron expression '0 25 \\* \\* \\*'"):

            @flow(schedule="0 25 * * *")
            async def nightly() -> None:
                return None

    def test_bad_timezone_on_the_decorator(self) -> None:
        with pytest.raises(ConfigurationError, match="unknown timezone 'Europe/Pariss'"):

            @flow(schedule="0 9 * * *", timezone="Europe/Pariss")
            async def nightly() -> None:
                return None

    def test_timezone_without_a_schedule(self) -> None:
        with pytest.raises(ConfigurationError, match="timezone= needs schedule="):

            @flow(timezone="Europe/Paris")
            async def nightly() -> None:
                return None

    def test_both_cron_and_every(self) -> None:
        with pytest.raises(ConfigurationError, match="exactly one of"):
            Schedule(report, cron="0 9 * * *", every="1h")

    def test_bad_policy(self) -> None:
        with pytest.raises(ConfigurationError, match="overlap='never' is not one of"):
            Schedule(report, every="1h", overlap="never")

    def test_two_schedules_with_one_id(self) -> None:
        with pytest.raises(ConfigurationError, match="several schedules with the id 'report'"):
            flowkit.Runtime(schedules=[Schedule(report, every="1h"), Schedule(report, every="2h")])

    def test_inputs_that_do_not_fit_the_flow(self) -> None:
        wrong = Schedule(report, every="1h", inputs={"teem": "a"})
        with pytest.raises(InvalidInputs, match="teem"):
            flowkit.Runtime(schedules=[wrong])
        with pytest.raises(InvalidInputs, match="teem"):
            flowkit.Worker(
                app=[report], transport=MemoryTransport(), store=MemoryStore(), schedules=[wrong]
            )

    def test_a_flow_name_the_runtime_does_not_know(self) -> None:
        with pytest.raises(ConfigurationError, match="no flow named 'nightly_report'"):
            flowkit.Runtime(schedules=[Schedule("nightly_report", every="1h")])

    def test_decorator_schedule(self) -> None:
        @flow(schedule="0 9 * * MON-FRI", timezone="Europe/Paris")
        async def standup() -> None:
            return None

        assert standup.schedule is not None
        assert ("standup", "cron 0 9 * * MON-FRI Europe/Paris") == (
            standup.schedule.id,
            standup.schedule.spec.describe(),
        )


class TestRuntime:
    """An open Runtime starts a run at each tick, with the tick's run id."""

    async def test_every_quarter_hour(self, clock: Clock) -> None:
        quarter = Schedule(report, every="15m", inputs={"team": "ops"})
        async with flowkit.Runtime(schedules=[quarter]) as rt:
            assert [] == await rt.tick_schedules()
            clock.now = T0 + 900
            started = await rt.tick_schedules()
            assert [f"report@{iso(T0 + 900)}"] == started
            assert [] == await rt.tick_schedules(), "one run per tick"
            result = await rt.handle(started[0]).result()
            assert "report for ops" == result.output

    async def test_decorated_flow_registered_on_a_runtime_is_listed(self, clock: Clock) -> None:
        @flow(schedule="0 9 * * MON-FRI", timezone="Europe/Paris")
        async def standup() -> str:
            return "ok"

        async with flowkit.Runtime(flows=[standup]) as rt:
            await rt.tick_schedules()
            (info,) = await rt.list_schedules()
            assert ("standup", False) == (info.schedule_id, info.paused)
            assert datetime(2026, 3, 3, 8, 0, tzinfo=UTC) == info.next_tick  # 09:00 Paris

    async def test_skip_while_the_last_run_waits(self, clock: Clock) -> None:
        hourly = Schedule(approval, every="1h", inputs={"team": "a"})
        async with flowkit.Runtime(schedules=[hourly]) as rt:
            await rt.tick_schedules()
            clock.now = T0 + 3600
            (first,) = await rt.tick_schedules()
            assert not (await rt.handle(first).status()).finished
            clock.now = T0 + 7200
            assert [] == await rt.tick_schedules(), "skipped: the last run has not finished"
            await rt.signal(first, "approved", True)
            assert RunStatus.COMPLETED == (await rt.handle(first).result()).status
            clock.now = T0 + 3 * 3600
            assert [f"approval@{iso(T0 + 3 * 3600)}"] == await rt.tick_schedules()

    async def test_pause_resume_trigger_delete(self, clock: Clock) -> None:
        hourly = Schedule(report, every="1h", inputs={"team": "a"}, id="hourly")
        async with flowkit.Runtime(schedules=[hourly]) as rt:
            await rt.tick_schedules()
            await rt.pause_schedule("hourly")
            assert [True] == [i.paused for i in await rt.list_schedules()]
            clock.now = T0 + 3600
            assert [] == await rt.tick_schedules()
            manual = await rt.trigger_schedule("hourly")
            assert f"hourly@{iso(T0 + 3600)}-manual" == manual
            assert "report for a" == (await rt.handle(manual).result()).output
            await rt.resume_schedule("hourly")
            clock.now = T0 + 7200
            assert [f"hourly@{iso(T0 + 7200)}"] == await rt.tick_schedules()
            await rt.delete_schedule("hourly")
            assert [] == await rt.list_schedules()
            with pytest.raises(ConfigurationError, match="unknown schedule 'hourly'"):
                await rt.pause_schedule("hourly")

    @pytest.mark.parametrize(("catchup", "expected"), [("all", 4), ("latest", 1), ("none", 0)])
    async def test_restart_after_downtime_applies_catch_up(
        self, clock: Clock, tmp_path: Path, catchup: str, expected: int
    ) -> None:
        path = tmp_path / "runs.db"
        quarter = Schedule(
            report, every="15m", inputs={"team": "a"}, catchup=catchup, overlap="allow"
        )
        quarter_all = Schedule(report, every="15m", inputs={"team": "a"}, catchup="all")
        async with flowkit.Runtime(store=SQLiteStore(path), schedules=[quarter_all]) as rt:
            await rt.tick_schedules()
        clock.now = T0 + 3600 + 120  # down for an hour: four ticks missed
        async with flowkit.Runtime(store=SQLiteStore(path), schedules=[quarter]) as rt:
            started = await rt.tick_schedules()
            assert expected == len(started)
            page = await rt.list_runs(tags={"schedule": "report"})
            assert sorted(started) == sorted(r.run_id for r in page.runs)


@pytest.fixture(
    params=[
        "sqlite",
        pytest.param("postgres", marks=pytest.mark.asyncio_only),
        pytest.param("redis", marks=pytest.mark.asyncio_only),
    ]
)
async def two_stores(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[list[Any]]:
    """Two stores on one database (two processes), on a fresh file, schema or prefix."""
    name = f"fk_sched_{uuid.uuid4().hex[:12]}"
    if request.param == "sqlite":
        stores: list[Any] = [SQLiteStore(tmp_path / "runs.db") for _ in range(2)]
        yield stores
        for store in stores:
            await store.close()
        return
    if request.param == "postgres":
        from flowkit.stores import PostgresStore

        stores = [PostgresStore(PG_DSN, schema=name) for _ in range(2)]
        yield stores
        for store in stores:
            await store.close()
        import psycopg
        from psycopg import sql

        async with await psycopg.AsyncConnection.connect(PG_DSN, autocommit=True) as conn:
            await conn.execute(
                sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(name))
            )
        return
    import redis.asyncio

    from flowkit.stores import RedisStore

    stores = [RedisStore(REDIS_URL, prefix=name) for _ in range(2)]
    yield stores
    for store in stores:
        await store.close()
    client = redis.asyncio.Redis.from_url(REDIS_URL)
    keys = [key async for key in client.scan_iter(f"{name}:*")]
    if keys:
        await client.delete(*keys)
    await client.aclose()


class TestWorkers:
    """Two workers on one store start exactly one run per tick between them."""

    @pytest.fixture
    def anyio_backend(self) -> str:
        return "asyncio"

    async def test_one_run_per_tick(self, clock: Clock, two_stores: list[Any]) -> None:
        transport = MemoryTransport()
        quarter = Schedule(report, every="15m", inputs={"team": "a"}, overlap="allow")
        workers = [
            flowkit.Worker(app=[report], transport=transport, store=store, schedules=[quarter])
            for store in two_stores
        ]
        for worker in workers:
            await worker.tick()
        for n in range(1, 9):
            clock.now = T0 + n * 900
            for worker in workers[:: (-1) ** n]:  # each goes first in turn
                await worker.tick()
        page = await two_stores[0].list_runs(tags={"schedule": "report"}, limit=100)
        expected = {f"report@{iso(T0 + n * 900)}" for n in range(1, 9)}
        assert expected == {run.run_id for run in page.runs}
        assert 8 == len(page.runs)
        client = flowkit.Client(transport=transport, store=two_stores[1], flows=[report])
        (info,) = await client.list_schedules()
        assert (f"report@{iso(T0 + 8 * 900)}", "every 900s") == (info.last_run, info.when)

    async def test_a_trigger_through_a_client_is_started_by_a_worker(
        self, clock: Clock, two_stores: list[Any]
    ) -> None:
        transport = MemoryTransport()
        daily = Schedule(report, cron="0 9 * * *", inputs={"team": "a"}, id="daily")
        worker = flowkit.Worker(
            app=[report], transport=transport, store=two_stores[0], schedules=[daily]
        )
        await worker.tick()
        client = flowkit.Client(transport=transport, store=two_stores[1], flows=[report])
        run_id = await client.trigger_schedule("daily")
        assert await two_stores[0].info(run_id) is None
        await worker.tick()
        info = await two_stores[0].info(run_id)
        assert info is not None
        assert "report" == info.blueprint_id


async def test_memory_store_runtime_keeps_schedules_with_its_runs(clock: Clock) -> None:
    store = MemoryStore()
    async with flowkit.Runtime(
        store=store, schedules=[Schedule(report, every="1h", inputs={"team": "a"})]
    ) as rt:
        await rt.tick_schedules()
    assert ["report"] == [r.schedule_id for r in await store.list_schedules()]

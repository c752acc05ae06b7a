"""``simulate(schedule, until=...)``: a schedule's ticks and policies on virtual time."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from flowkit import RunStatus, Schedule, flow
from flowkit.testing import SimulationError, simulate


@flow
async def tally(team: str) -> str:
    return team


@flow
async def slow(team: str) -> str:
    await flow.sleep("20m")
    return team


START = datetime(2026, 1, 1, tzinfo=UTC)


def minutes(sim_times: list[datetime]) -> list[int]:
    return [int((t - START).total_seconds() // 60) for t in sim_times]


class TestTicks:
    """Every tick starts a run, at the tick, with the tick's run id."""

    def test_a_month_of_quarter_hours(self) -> None:
        quarter = Schedule(tally, every="15m", inputs={"team": "ops"})
        sim = simulate(quarter, until="30d", start=START)
        assert 30 * 96 == len(sim.runs)
        assert "tally@2026-01-01T00:15:00Z" == sim.run_ids[0]
        assert "tally@2026-01-31T00:00:00Z" == sim.run_ids[-1]
        assert {"ops"} == {run.output for run in sim.runs}
        assert START + timedelta(days=30) == sim.started[-1]

    def test_cron_in_paris_across_spring_forward(self) -> None:
        @flow(schedule="30 2 * * *", timezone="Europe/Paris")
        async def backup() -> str:
            return "done"

        assert backup.schedule is not None
        sim = simulate(backup.schedule, until="3d", start="2026-03-27T12:00:00Z")
        assert [
            "backup@2026-03-28T01:30:00Z",  # 02:30 CET
            "backup@2026-03-29T01:00:00Z",  # 02:30 does not exist: 03:00 CEST
            "backup@2026-03-30T00:30:00Z",  # 02:30 CEST
        ] == sim.run_ids

    def test_until_is_needed(self) -> None:
        with pytest.raises(SimulationError, match="needs until="):
            simulate(Schedule(tally, every="1h", inputs={"team": "a"}))


class TestOverlap:
    """A 20-minute run every 15 minutes meets the overlap policy at every other tick."""

    def test_skip(self) -> None:
        sim = simulate(Schedule(slow, every="15m", inputs={"team": "a"}), until="2h", start=START)
        assert [15, 45, 75, 105] == minutes(sim.started)
        assert [30, 60, 90, 120] == minutes(sim.skipped)

    def test_buffer_one_starts_the_waiting_tick_when_the_run_ends(self) -> None:
        buffered = Schedule(slow, every="15m", inputs={"team": "a"}, overlap="buffer_one")
        sim = simulate(buffered, until="1h", start=START)
        assert [15, 35, 55] == minutes(sim.started)
        assert "slow@2026-01-01T00:30:00Z" == sim.run_ids[1], "the buffered tick's run id"

    def test_cancel_previous(self) -> None:
        cancelling = Schedule(slow, every="15m", inputs={"team": "a"}, overlap="cancel_previous")
        sim = simulate(cancelling, until="1h", start=START)
        assert [RunStatus.CANCELLED] * 3 + [RunStatus.COMPLETED] == [r.status for r in sim.runs]
        assert timedelta(minutes=15) == sim.runs[0].elapsed

    def test_allow(self) -> None:
        allowing = Schedule(slow, every="15m", inputs={"team": "a"}, overlap="allow")
        sim = simulate(allowing, until="1h", start=START)
        assert [15, 30, 45, 60] == minutes(sim.started)
        assert [] == sim.skipped

"""The pure schedule decisions (flowkit.shell._schedule_policy): ticks, DST, catch-up, overlap."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from flowkit import ConfigurationError
from flowkit.shell._schedule_policy import (
    ScheduleSpec,
    ScheduleState,
    decide,
    jitter_of,
    make_spec,
    run_id_of,
    ticks,
)

PARIS = ZoneInfo("Europe/Paris")


def spec(**options: Any) -> ScheduleSpec:
    defaults: dict[str, Any] = {
        "cron": None, "every": None, "timezone": None, "inputs": {},
        "overlap": "allow", "catchup": "all", "jitter": None,
    }  # fmt: skip
    return make_spec("s", "f", **(defaults | options))


def at(*fields: int, tz: ZoneInfo = PARIS) -> float:
    return datetime(*fields, tzinfo=tz).timestamp()  # type: ignore[misc]


def local(ts: float, tz: ZoneInfo = PARIS) -> str:
    return datetime.fromtimestamp(ts, tz).isoformat()


class TestDaylightSaving:
    """A daily cron time fires once on the days the clocks change, as cron users expect."""

    def test_spring_forward_skipped_time_fires_once_at_the_end_of_the_gap(self) -> None:
        # 2026-03-29: Paris clocks jump from 02:00 to 03:00; 02:30 does not exist
        daily = spec(cron="30 2 * * *", timezone="Europe/Paris")
        found = ticks(daily, at(2026, 3, 28, 12), at(2026, 3, 30, 12))
        assert ["2026-03-29T03:00:00+02:00", "2026-03-30T02:30:00+02:00"] == list(map(local, found))

    def test_fall_back_repeated_time_fires_once_at_its_first_occurrence(self) -> None:
        # 2026-10-25: Paris clocks go back from 03:00 to 02:00; 02:30 happens twice
        daily = spec(cron="30 2 * * *", timezone="Europe/Paris")
        found = ticks(daily, at(2026, 10, 24, 12), at(2026, 10, 26, 12))
        assert ["2026-10-25T02:30:00+02:00", "2026-10-26T02:30:00+01:00"] == list(map(local, found))

    def test_fall_back_day_0130_fires_once(self) -> None:
        daily = spec(cron="30 1 * * *", timezone="Europe/Paris")
        found = ticks(daily, at(2026, 10, 25, 0), at(2026, 10, 26, 0))
        assert ["2026-10-25T01:30:00+02:00"] == list(map(local, found))

    def test_fall_back_0130_in_new_york_fires_once(self) -> None:
        # 2026-11-01: New York repeats 01:00-02:00
        ny = ZoneInfo("America/New_York")
        daily = spec(cron="30 1 * * *", timezone="America/New_York")
        found = ticks(daily, at(2026, 11, 1, 0, tz=ny), at(2026, 11, 2, 0, tz=ny))
        assert [at(2026, 11, 1, 1, 30, tz=ny)] == found

    def test_spring_forward_day_is_23_hours_of_quarter_ticks(self) -> None:
        quarter = spec(cron="*/15 * * * *", timezone="Europe/Paris")
        found = ticks(quarter, at(2026, 3, 29, 0) - 1, at(2026, 3, 30, 0) - 1)
        assert 23 * 4 == len(found)

    def test_fall_back_day_is_25_hours_of_quarter_ticks(self) -> None:
        quarter = spec(cron="*/15 * * * *", timezone="Europe/Paris")
        found = ticks(quarter, at(2026, 10, 25, 0) - 1, at(2026, 10, 26, 0) - 1)
        assert 25 * 4 == len(found)

    def test_weekdays_at_nine_paris(self) -> None:
        weekdays = spec(cron="0 9 * * MON-FRI", timezone="Europe/Paris")
        found = ticks(weekdays, at(2026, 3, 27, 12), at(2026, 3, 31, 12))  # Fri .. Tue
        assert ["2026-03-30T09:00:00+02:00", "2026-03-31T09:00:00+02:00"] == list(map(local, found))


class TestIntervals:
    """every= ticks are multiples of the interval since the epoch (UTC)."""

    def test_quarter_hours(self) -> None:
        start = datetime(2026, 1, 1, tzinfo=UTC).timestamp()
        found = ticks(spec(every="15m"), start + 1, start + 3600)
        assert [start + 900, start + 1800, start + 2700, start + 3600] == found

    def test_limit_keeps_the_newest(self) -> None:
        assert [9000.0, 10000.0] == ticks(spec(every=1000), 0, 10_500, limit=2)


class TestValidation:
    """A bad schedule is a ConfigurationError saying what to pass."""

    @pytest.mark.parametrize(
        ("options", "words"),
        [
            ({"cron": "61 * * * *"}, "invalid cron expression"),
            ({"cron": "0 9 * * MON", "timezone": "Mars/Olympus"}, "unknown timezone"),
            ({"every": "15m", "overlap": "queue"}, "overlap='queue' is not one of"),
            ({"every": "15m", "catchup": "some"}, "catchup='some' is not one of"),
            ({"cron": "0 9 * * *", "every": "1h"}, "exactly one of"),
            ({}, "exactly one of"),
            ({"every": "10ms"}, "under a second"),
            ({"every": "tomorrow"}, "invalid duration"),
        ],
    )
    def test_refused(self, options: dict[str, Any], words: str) -> None:
        with pytest.raises(ConfigurationError, match=words) as caught:
            spec(**options)
        assert "schedule 's'" in str(caught.value) or "duration" in str(caught.value)


class TestDecide:
    """decide() picks the ticks to start under the catch-up and overlap policies."""

    def run(self, spec_: ScheduleSpec, cursor: float, now: float, **kw: Any) -> list[float]:
        decision = decide(spec_, ScheduleState(cursor), now, last_unfinished=kw.get("busy", False))
        return [tick for _, tick in decision.starts]

    def test_run_ids_are_the_schedule_and_tick(self) -> None:
        decision = decide(spec(every="1h"), ScheduleState(0), 3600, last_unfinished=False)
        assert (("s@1970-01-01T01:00:00Z", 3600.0),) == decision.starts
        assert "s@1970-01-01T01:00:00Z" == decision.state.last_run
        assert 3600.0 == decision.state.cursor

    def test_nothing_due_changes_nothing(self) -> None:
        state = ScheduleState(3600)
        decision = decide(spec(every="1h"), state, 7199, last_unfinished=False)
        assert (state, ()) == (decision.state, decision.starts)

    @pytest.mark.parametrize(
        ("catchup", "expected"),
        [("all", [3600.0, 7200.0, 10800.0]), ("latest", [10800.0]), ("none", [10800.0])],
    )
    def test_catch_up_after_downtime(self, catchup: str, expected: list[float]) -> None:
        assert expected == self.run(spec(every="1h", catchup=catchup), 0, 10800 + 30)

    def test_catch_up_none_skips_a_late_tick(self) -> None:
        decision = decide(
            spec(every="1h", catchup="none"), ScheduleState(0), 3600 + 61, last_unfinished=False
        )
        assert ((), (3600.0,), 3600.0) == (
            decision.starts,
            decision.skipped,
            decision.state.cursor,
        )

    def test_skip_while_the_last_run_runs(self) -> None:
        decision = decide(
            spec(every="1h", overlap="skip"), ScheduleState(0), 3600, last_unfinished=True
        )
        assert ((), (3600.0,), 3600.0) == (
            decision.starts,
            decision.skipped,
            decision.state.cursor,
        )

    def test_skip_with_catch_up_all_starts_one_at_a_time(self) -> None:
        first = decide(
            spec(every="1h", overlap="skip"), ScheduleState(0), 7200, last_unfinished=False
        )
        assert ([3600.0], 3600.0) == ([t for _, t in first.starts], first.state.cursor)
        second = decide(spec(every="1h", overlap="skip"), first.state, 7200, last_unfinished=False)
        assert [7200.0] == [t for _, t in second.starts]

    def test_buffer_one_keeps_the_newest_until_the_run_finishes(self) -> None:
        buffering = spec(every="1h", overlap="buffer_one")
        busy = decide(buffering, ScheduleState(0), 7200, last_unfinished=True)
        assert ((), 7200.0, (3600.0,)) == (busy.starts, busy.state.buffered, busy.skipped)
        done = decide(buffering, busy.state, 7300, last_unfinished=False)
        assert ([7200.0], None) == ([t for _, t in done.starts], done.state.buffered)

    def test_cancel_previous(self) -> None:
        state = ScheduleState(0, last_run="s@old")
        decision = decide(
            spec(every="1h", overlap="cancel_previous"), state, 3600, last_unfinished=True
        )
        assert ("s@old", [3600.0]) == (decision.cancel, [t for _, t in decision.starts])

    def test_allow_starts_while_the_last_run_runs(self) -> None:
        assert [3600.0] == self.run(spec(every="1h"), 0, 3600, busy=True)

    def test_paused_moves_on_without_starting(self) -> None:
        decision = decide(
            spec(every="1h"), ScheduleState(0, paused=True), 7200, last_unfinished=False
        )
        assert ((), 7200.0, (3600.0, 7200.0)) == (
            decision.starts,
            decision.state.cursor,
            decision.skipped,
        )

    def test_trigger_starts_even_when_paused(self) -> None:
        state = ScheduleState(0, paused=True, triggers=(100.0,))
        decision = decide(spec(every="1h"), state, 200, last_unfinished=True)
        assert ((run_id_of("s", 100.0) + "-manual", 100.0),) == decision.starts
        assert () == decision.state.triggers

    def test_jitter_delays_a_tick_by_a_fixed_amount(self) -> None:
        jittered = spec(every="1h", jitter="10m")
        delay = jitter_of(jittered, 3600.0)
        assert 0 <= delay < 600
        assert delay == jitter_of(jittered, 3600.0)
        assert [] == self.run(jittered, 0, 3600 + delay - 0.001)
        assert [3600.0] == self.run(jittered, 0, 3600 + delay)

    def test_state_round_trips_through_json(self) -> None:
        state = ScheduleState(5.0, True, "r", 3.0, (1.0,), (("r", 2.0),), "c")
        assert state == ScheduleState.from_json(state.to_json())
        one = spec(cron="0 9 * * MON-FRI", timezone="Europe/Paris", inputs={"a": 1})
        assert one == ScheduleSpec.from_json(one.to_json())

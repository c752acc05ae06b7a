"""``simulate(schedule, until=...)``: a schedule's ticks on virtual time.

The same decisions as the shells (``flowkit.shell._schedule_policy.decide``) on a
virtual clock that jumps from tick to tick. Each run a tick starts is simulated on its
own from its start instant (as :func:`~flowkit.testing.simulate` does), so the
schedule knows when it finishes: a later tick meets it unfinished if it started
before. ``overlap="cancel_previous"`` simulates the cancelled run again, cancelled
at the instant the next tick started.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import attrs

from .._durations import to_seconds
from ..shell._schedule_policy import ScheduleState, decide, jitter_of, next_tick
from ..shell._target import resolve
from ._model import Simulation
from ._script import parse_start

if TYPE_CHECKING:
    from .._durations import Duration
    from ..shell._schedules import Schedule


@attrs.frozen
class ScheduleSimulation:
    """The outcome of ``simulate(schedule, until=...)``: a simulation per run started."""

    runs: list[Simulation]
    """The runs the schedule started, in order (each a :class:`Simulation`; its
    ``run_id`` is the tick's run id)."""
    started: list[datetime]
    """When each run started (UTC), in the order of :attr:`runs`."""
    skipped: list[datetime]
    """Ticks that started nothing (they met an unfinished run, under ``overlap``)."""

    @property
    def run_ids(self) -> list[str]:
        return [run.run_id for run in self.runs]


@attrs.define
class _Started:
    at: float
    run_id: str
    ends: float
    index: int


async def simulate_schedule(
    schedule: Schedule, *, until: Duration, start: Any = None, **options: Any
) -> ScheduleSimulation:
    """Every tick of ``schedule`` from ``start`` for ``until`` (``"30d"``), on virtual time."""
    from ._simulate import _simulate_run

    spec = schedule.spec
    now = parse_start(start).timestamp()
    end = now + to_seconds(until)
    state = ScheduleState(now)
    runs: list[Simulation] = []
    started: list[datetime] = []
    skipped: list[float] = []
    last: _Started | None = None

    target = resolve(schedule.flow, options.get("registry"))
    target.check(dict(spec.inputs))  # once: every run has the same inputs

    async def run(run_id: str, at: float, cancel_at: float | None = None) -> Simulation:
        cancel = None if cancel_at is None else cancel_at - at
        return await _simulate_run(
            schedule.flow, start=_utc(at), run_id=run_id, cancel_at=cancel,
            resolved_target=target, **options, **spec.inputs,
        )  # fmt: skip

    while True:
        tick = next_tick(spec, state.cursor)
        moments = [tick + jitter_of(spec, tick)]
        if state.buffered is not None and last is not None:
            moments.append(last.ends)
        now = max(now, min(moments))
        if now > end:
            break
        busy = last is not None and last.ends > now
        decision = decide(spec, state, now, last_unfinished=busy)
        skipped += decision.skipped
        if decision.cancel is not None and last is not None:
            runs[last.index] = await run(last.run_id, last.at, cancel_at=now)
        for run_id, _ in decision.starts:
            simulated = await run(run_id, now)
            last = _Started(now, run_id, now + simulated.elapsed.total_seconds(), len(runs))
            runs.append(simulated)
            started.append(_utc(now))
        state = decision.state
    return ScheduleSimulation(runs, started, [_utc(t) for t in skipped])


def _utc(at: float) -> datetime:
    return datetime.fromtimestamp(at, UTC)

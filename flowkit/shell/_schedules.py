"""Schedules in a shell: ``flowkit.Schedule``, and carrying out the core's decisions.

A schedule's record in the store holds its definition (``spec``, for listing) and its
state (:class:`~flowkit.shell._schedule_policy.ScheduleState`). Every process that registered
the schedule steps it on its scheduler loop: it reads the record, asks
:func:`~flowkit.shell._schedule_policy.decide` what is due, writes the new state with the
starts it decided *before* starting them (a compare-and-set of the record's version:
of several processes one wins), then starts the runs and clears them from the record.
A process that dies in between leaves the starts in the record, and the next step (by
any process) starts them again; run ids are derived from the schedule and the tick,
and a store creates a run id once, so each tick starts exactly one run.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Protocol

import attrs
import structlog

from .. import _clock as clock
from .._errors import ConfigurationError, FlowkitError, StoreError
from ._schedule_policy import (
    ScheduleSpec,
    ScheduleState,
    decide,
    make_spec,
    next_tick,
    run_id_of,
)

if TYPE_CHECKING:
    from collections.abc import Callable, Iterable, Mapping

    from .._durations import Duration
    from ..stores._protocol import ScheduleRecord, Store

_log = structlog.get_logger("flowkit.schedules")
MAX_WRITE_TRIES = 20
"""A change of a schedule's state (pause, resume, trigger) re-reads and tries again
this many times when other processes write the record meanwhile."""


class Schedule:
    """Start runs of ``flow`` on a cron schedule or at a fixed interval.

    Register it on a shell: ``flowkit.Runtime(schedules=[...])``,
    ``flowkit.Worker(app=..., schedules=[...])``, or let ``@flow(schedule="0 9 * * *")``
    make one. Each tick starts one run, whatever the number of workers, with the run id
    ``"{id}@{tick in ISO UTC}"`` (e.g. ``nightly@2026-03-02T08:00:00Z``), tagged
    ``schedule={id}``.

    Args:
        flow: the flow to start (a ``@flow``, ``Flow`` builder or its id).
        cron: five-field cron expression, in ``timezone`` (``"0 9 * * MON-FRI"``).
        every: a fixed interval (``"15m"``); ticks are multiples of it since the epoch.
        id: the schedule's id (default: the flow's id); unique per store.
        timezone: IANA zone name for ``cron`` (default UTC).
        inputs: the flow's inputs for every run.
        overlap: while the last run is unfinished, ``"skip"`` (the default) skips a
            tick, ``"buffer_one"`` starts the newest waiting tick once it has finished,
            ``"allow"`` starts anyway, ``"cancel_previous"`` cancels it and starts.
        catchup: for ticks missed while no process ran the schedule, ``"latest"`` (the
            default) starts the newest, ``"all"`` starts each, ``"none"`` starts none.
        jitter: delay each tick by a fixed pseudo-random amount below this duration.

    Raises :class:`~flowkit.ConfigurationError` for a bad cron expression, time zone or
    policy name, or for both (or neither of) ``cron`` and ``every``.

    >>> import flowkit
    >>> @flowkit.flow
    ... async def report(team: str) -> str:
    ...     return team
    >>> nightly = flowkit.Schedule(report, cron="0 2 * * *", id="nightly", inputs={"team": "a"})
    >>> nightly.id, nightly.spec.describe()
    ('nightly', 'cron 0 2 * * * UTC')
    """

    def __init__(
        self,
        flow: Any,
        *,
        cron: str | None = None,
        every: Duration | None = None,
        id: str | None = None,
        timezone: str | None = None,
        inputs: Mapping[str, Any] | None = None,
        overlap: str = "skip",
        catchup: str = "latest",
        jitter: Duration | None = None,
    ) -> None:
        self.flow = flow
        flow_id = _flow_id(flow)
        self.id = id or flow_id
        if not self.id or "@" in self.id:
            raise ConfigurationError(f"schedule id {self.id!r}: pass a non-empty id without '@'")
        self.spec = make_spec(
            self.id, flow_id, cron=cron, every=every, timezone=timezone,
            inputs=dict(inputs or {}), overlap=overlap, catchup=catchup, jitter=jitter,
        )  # fmt: skip

    def __repr__(self) -> str:
        return f"<Schedule {self.id} of {self.spec.flow}: {self.spec.describe()}>"


def _flow_id(flow: Any) -> str:
    if isinstance(flow, str):
        return flow
    found = getattr(flow, "id", None)
    if isinstance(found, str):
        return found
    blueprint = getattr(flow, "blueprint", flow)
    found = getattr(blueprint, "id", None)
    if not isinstance(found, str):
        raise ConfigurationError(
            f"Schedule(flow={flow!r}): pass a @flow, a Flow builder, a Blueprint or a flow id"
        )
    return found


def schedules_of(flows: Iterable[Any], schedules: Iterable[Schedule]) -> list[Schedule]:
    """``schedules`` and those of ``@flow(schedule=...)`` flows; a ConfigurationError if
    two share an id."""
    found = [s for f in flows if (s := getattr(f, "schedule", None)) is not None]
    found += list(schedules)
    ids = [s.id for s in found]
    twice = sorted({i for i in ids if ids.count(i) > 1})
    if twice:
        raise ConfigurationError(
            f"several schedules with the id {twice[0]!r}: pass Schedule(..., id=...) to tell "
            "them apart"
        )
    return found


@attrs.frozen
class ScheduleInfo:
    """A schedule as :meth:`flowkit.Runtime.list_schedules` lists it."""

    schedule_id: str
    flow: str
    when: str
    """``"cron 0 9 * * MON-FRI Europe/Paris"`` or ``"every 900s"``."""
    paused: bool
    next_tick: datetime | None
    """The next tick (UTC), None while paused."""
    last_run: str | None
    """The run id of the last start."""
    overlap: str
    catchup: str

    @classmethod
    def of(cls, record: ScheduleRecord) -> ScheduleInfo:
        spec = ScheduleSpec.from_json(record.data["spec"])
        state = ScheduleState.from_json(record.data["state"])
        upcoming = None if state.paused else next_tick(spec, max(state.cursor, clock.now()))
        return cls(
            spec.schedule_id, spec.flow, spec.describe(), state.paused,
            None if upcoming is None else datetime.fromtimestamp(upcoming, UTC),
            state.last_run, spec.overlap, spec.catchup,
        )  # fmt: skip


class Starter(Protocol):
    """What a shell does for its schedules."""

    async def start_scheduled(self, schedule: Schedule, run_id: str) -> None:
        """Start a run of the schedule (nothing if ``run_id`` exists)."""

    async def cancel_scheduled(self, run_id: str) -> None:
        """Cancel a run (nothing if it has finished)."""

    async def unfinished(self, run_id: str) -> bool:
        """Whether the run exists and has not finished."""


def _data(spec: ScheduleSpec, state: ScheduleState) -> dict[str, Any]:
    return {"spec": spec.to_json(), "state": state.to_json()}


class Scheduler:
    """Steps the schedules one process registered (see the module docstring)."""

    def __init__(self, store: Store, schedules: Iterable[Schedule], starter: Starter) -> None:
        self.store = store
        self.schedules = {s.id: s for s in schedules}
        self.starter = starter
        self._registered = False

    async def register(self) -> None:
        """Write each schedule's definition; a new one starts counting ticks from now."""
        for schedule in self.schedules.values():
            await self._register(schedule.spec)
        self._registered = True

    async def _register(self, spec: ScheduleSpec) -> None:
        for _ in range(MAX_WRITE_TRIES):
            record = await self.store.load_schedule(spec.schedule_id)
            if record is None:
                data = _data(spec, ScheduleState(clock.now()))
                if await self.store.write_schedule(spec.schedule_id, data, version=0):
                    return
            elif record.data["spec"] == spec.to_json():
                return
            else:
                data = {"spec": spec.to_json(), "state": record.data["state"]}
                if await self.store.write_schedule(spec.schedule_id, data, version=record.version):
                    return
        raise _busy(spec.schedule_id)

    def next_due(self, now: float) -> float:
        """The earliest next tick of the registered schedules (jitter aside)."""
        return min((next_tick(s.spec, now) for s in self.schedules.values()), default=float("inf"))

    async def ensure_registered(self) -> None:
        if not self._registered:
            await self.register()

    async def tick(self) -> list[str]:
        """Step every registered schedule once; the run ids started here.

        A schedule whose step fails (other than by a :class:`~flowkit.StoreError`, which
        is raised: the caller waits for the store) is logged and tried again next tick;
        the others go on."""
        await self.ensure_registered()
        started: list[str] = []
        for schedule in self.schedules.values():
            try:
                started += await self.step(schedule)
            except StoreError:
                raise
            except FlowkitError as exc:
                _log.error("schedule step failed", schedule=schedule.id, error=str(exc))
        return started

    async def step(self, schedule: Schedule) -> list[str]:
        record = await self.store.load_schedule(schedule.id)
        if record is None:  # deleted
            return []
        state = ScheduleState.from_json(record.data["state"])
        if state.pending or state.cancel:  # a process stopped between writing and starting
            return await self._carry_out(schedule, state, record.version)
        last = state.last_run
        busy = last is not None and await self.starter.unfinished(last)
        decision = decide(schedule.spec, state, clock.now(), last_unfinished=busy)
        new = attrs.evolve(decision.state, pending=decision.starts, cancel=decision.cancel)
        if new == state:
            return []
        data = _data(schedule.spec, new)
        if not await self.store.write_schedule(schedule.id, data, version=record.version):
            return []  # another process decided this step
        return await self._carry_out(schedule, new, record.version + 1)

    async def _carry_out(self, schedule: Schedule, state: ScheduleState, version: int) -> list[str]:
        if state.cancel is not None:
            await self.starter.cancel_scheduled(state.cancel)
        for run_id, _ in state.pending:
            await self.starter.start_scheduled(schedule, run_id)
        done = attrs.evolve(state, pending=(), cancel=None)
        await self.store.write_schedule(schedule.id, _data(schedule.spec, done), version=version)
        return [run_id for run_id, _ in state.pending]


def _busy(schedule_id: str) -> ConfigurationError:
    return ConfigurationError(
        f"schedule {schedule_id!r}: its record kept changing under {MAX_WRITE_TRIES} tries; "
        "try again"
    )


def _unknown(schedule_id: str) -> ConfigurationError:
    return ConfigurationError(
        f"unknown schedule {schedule_id!r}: list the schedules with "
        "`flowkit schedules list --store URL`"
    )


async def change_state(
    store: Store, schedule_id: str, change: Callable[[ScheduleState], ScheduleState]
) -> None:
    """Apply ``change`` to the schedule's state (compare-and-set, tried again on a race)."""
    for _ in range(MAX_WRITE_TRIES):
        record = await store.load_schedule(schedule_id)
        if record is None:
            raise _unknown(schedule_id)
        state = change(ScheduleState.from_json(record.data["state"]))
        data = {"spec": record.data["spec"], "state": state.to_json()}
        if await store.write_schedule(schedule_id, data, version=record.version):
            return
    raise _busy(schedule_id)


async def pause(store: Store, schedule_id: str) -> None:
    await change_state(store, schedule_id, lambda s: attrs.evolve(s, paused=True))


async def resume(store: Store, schedule_id: str) -> None:
    now = clock.now()  # ticks while paused are not caught up
    await change_state(
        store, schedule_id, lambda s: attrs.evolve(s, paused=False, cursor=max(s.cursor, now))
    )


async def trigger(store: Store, schedule_id: str) -> str:
    """Ask for a run now; its id. The next step of a process that runs the schedule starts
    it."""
    now = clock.now()
    await change_state(store, schedule_id, lambda s: attrs.evolve(s, triggers=(*s.triggers, now)))
    return run_id_of(schedule_id, now) + "-manual"


async def delete(store: Store, schedule_id: str) -> None:
    if not await store.delete_schedule(schedule_id):
        raise _unknown(schedule_id)


async def list_infos(store: Store) -> list[ScheduleInfo]:
    return [ScheduleInfo.of(record) for record in await store.list_schedules()]


class ScheduleControls:
    """The schedule methods of :class:`~flowkit.Runtime` and :class:`~flowkit.Client`."""

    _scheduler: Scheduler | None = None

    def _schedule_store(self) -> Store:
        raise NotImplementedError

    async def _schedules_ready(self) -> Store:
        """The store, with this shell's schedules written to it."""
        if self._scheduler is not None:
            await self._scheduler.ensure_registered()
        return self._schedule_store()

    async def list_schedules(self) -> list[ScheduleInfo]:
        """Every schedule in the store, by id.

        >>> # for info in await rt.list_schedules(): print(info.schedule_id, info.next_tick)
        """
        return await list_infos(await self._schedules_ready())

    async def pause_schedule(self, schedule_id: str) -> None:
        """Stop starting runs; ticks until :meth:`resume_schedule` are skipped (a run
        that is going on goes on). Raises :class:`~flowkit.ConfigurationError` for an
        unknown id."""
        await pause(await self._schedules_ready(), schedule_id)

    async def resume_schedule(self, schedule_id: str) -> None:
        """Start runs again from the next tick on."""
        await resume(await self._schedules_ready(), schedule_id)

    async def trigger_schedule(self, schedule_id: str) -> str:
        """Start a run of the schedule now, whatever its policies and even if paused; its
        run id (``"{id}@{now in ISO UTC}Z-manual"``). A shell that runs the schedule starts
        it on its next scheduler step (this one at once, if it runs it)."""
        run_id = await trigger(await self._schedules_ready(), schedule_id)
        scheduler = self._scheduler
        if scheduler is not None and schedule_id in scheduler.schedules and self._can_start():
            await scheduler.step(scheduler.schedules[schedule_id])
        return run_id

    async def delete_schedule(self, schedule_id: str) -> None:
        """Delete the schedule from the store (a process that still registers it in its
        code writes it again when it starts)."""
        await delete(await self._schedules_ready(), schedule_id)

    def _can_start(self) -> bool:
        return False

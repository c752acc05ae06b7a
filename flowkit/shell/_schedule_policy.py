"""Schedules, pure: which ticks a schedule has, and what to start when some are due.

Nothing here reads a clock or does I/O (the time is an argument), so every policy is
tested with plain numbers; it lives beside the shells rather than in ``flowkit.core``
because turning cron times into instants needs ``datetime`` and ``zoneinfo``.

A :class:`ScheduleSpec` says when (a cron expression in a time zone, or a fixed
interval) and how (the overlap, catch-up and jitter policies). A
:class:`ScheduleState` is what the store keeps between decisions: up to which
instant ticks were handled, the run the last start made, a tick buffered for later,
pause, a manual trigger and starts decided but maybe not yet carried out.
:func:`decide` turns (spec, state, now, "is the last run unfinished") into a
:class:`Decision`; the shells carry it out (``flowkit.shell._schedules``).

Cron times are wall-clock times in the schedule's zone (``zoneinfo``), as cron users
expect around daylight-saving changes: a time the spring-forward gap skips (02:30 in
Europe/Paris on the last Sunday of March) fires once, at the end of the gap (03:00
local); a time the fall-back repeats (02:30 on the last Sunday of October) fires once,
at its first occurrence. Expressions that fire every hour or more often keep firing
through the repeated hour, since real time passes there too.
"""

from __future__ import annotations

import hashlib
import math
from datetime import UTC, datetime
from typing import Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import attrs

from .._durations import Duration, to_seconds
from .._errors import ConfigurationError

Overlap = Literal["skip", "buffer_one", "allow", "cancel_previous"]
Catchup = Literal["none", "all", "latest"]
OVERLAPS: tuple[str, ...] = ("skip", "buffer_one", "allow", "cancel_previous")
CATCHUPS: tuple[str, ...] = ("none", "all", "latest")
ON_TIME = 60.0
"""A tick found due at most this many seconds after its time is on time; an older one
was missed (the policy ``catchup`` says what happens to missed ticks)."""
MAX_CATCHUP = 1000
"""At most this many of the newest due ticks are considered at once."""


@attrs.frozen
class ScheduleSpec:
    """When a schedule fires and how; plain data (JSON through :meth:`to_json`)."""

    schedule_id: str
    flow: str
    cron: str | None = None
    every: float | None = None
    timezone: str = "UTC"
    inputs: dict[str, Any] = attrs.field(factory=dict)
    overlap: str = "skip"
    catchup: str = "latest"
    jitter: float = 0.0

    def to_json(self) -> dict[str, Any]:
        return attrs.asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> ScheduleSpec:
        return cls(**data)

    def describe(self) -> str:
        """``"cron 0 9 * * MON-FRI Europe/Paris"`` or ``"every 900s"``."""
        if self.cron is not None:
            return f"cron {self.cron} {self.timezone}"
        return f"every {self.every:g}s"


def make_spec(
    schedule_id: str,
    flow: str,
    *,
    cron: str | None,
    every: Duration | None,
    timezone: str | None,
    inputs: dict[str, Any],
    overlap: str,
    catchup: str,
    jitter: Duration | None,
) -> ScheduleSpec:
    """A checked spec; :class:`~flowkit.ConfigurationError` names what is wrong."""
    where = f"schedule {schedule_id!r}"
    if (cron is None) == (every is None):
        raise ConfigurationError(
            f"{where}: pass exactly one of cron='0 9 * * MON-FRI' or every='15m' "
            f"(got cron={cron!r}, every={every!r})"
        )
    _one_of(where, "overlap", overlap, OVERLAPS)
    _one_of(where, "catchup", catchup, CATCHUPS)
    zone = timezone or "UTC"
    _zone(where, zone)
    seconds = None
    if every is not None:
        seconds = to_seconds(every)
        if seconds < 1:
            raise ConfigurationError(
                f"{where}: every={every!r} is under a second; pass '1s' or more"
            )
        if timezone is not None:
            raise ConfigurationError(f"{where}: timezone= applies to cron=, not every=")
    if cron is not None:
        _check_cron(where, cron)
    return ScheduleSpec(
        schedule_id, flow, cron, seconds, zone, dict(inputs), overlap, catchup,
        0.0 if jitter is None else to_seconds(jitter),
    )  # fmt: skip


def _one_of(where: str, name: str, value: str, allowed: tuple[str, ...]) -> None:
    if value not in allowed:
        choices = ", ".join(repr(a) for a in allowed)
        raise ConfigurationError(f"{where}: {name}={value!r} is not one of {choices}")


def _zone(where: str, name: str) -> ZoneInfo:
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError) as exc:
        raise ConfigurationError(
            f"{where}: unknown timezone {name!r}; pass an IANA name like 'Europe/Paris' or 'UTC'"
        ) from exc


def _check_cron(where: str, expr: str) -> None:
    from cronsim import CronSim, CronSimError

    try:
        CronSim(expr, datetime(2026, 1, 1, tzinfo=UTC))
    except CronSimError as exc:
        raise ConfigurationError(
            f"{where}: invalid cron expression {expr!r} ({exc}); "
            "expected five fields: minute hour day-of-month month day-of-week"
        ) from exc


def ticks(spec: ScheduleSpec, after: float, until: float, limit: int = MAX_CATCHUP) -> list[float]:
    """The schedule's ticks in ``(after, until]`` (unix seconds), oldest first; the
    newest ``limit`` if there are more."""
    if until <= after:
        return []
    if spec.every is not None:
        return _interval_ticks(spec.every, after, until, limit)
    return _cron_ticks(spec, after, until, limit)


def next_tick(spec: ScheduleSpec, after: float) -> float:
    """The first tick after ``after``."""
    if spec.every is not None:
        return (math.floor(after / spec.every) + 1) * spec.every
    from cronsim import CronSim

    assert spec.cron is not None
    start = datetime.fromtimestamp(after, ZoneInfo(spec.timezone))
    found: datetime = next(CronSim(spec.cron, start))
    return found.timestamp()


def _interval_ticks(every: float, after: float, until: float, limit: int) -> list[float]:
    """Multiples of ``every`` since the epoch: ``every='15m'`` fires at :00, :15, :30, :45 UTC."""
    last = math.floor(until / every)
    first = max(math.floor(after / every) + 1, last - limit + 1)
    return [n * every for n in range(first, last + 1)]


def _cron_ticks(spec: ScheduleSpec, after: float, until: float, limit: int) -> list[float]:
    found: list[float] = []
    at = after
    while True:
        at = next_tick(spec, at)
        if at > until:
            return found[-limit:]
        found.append(at)
        if len(found) > 2 * limit:
            del found[:limit]


def jitter_of(spec: ScheduleSpec, tick: float) -> float:
    """A delay in ``[0, jitter)`` fixed by the schedule and the tick (every process agrees)."""
    if spec.jitter <= 0:
        return 0.0
    digest = hashlib.sha256(f"{spec.schedule_id}@{tick!r}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64 * spec.jitter


def run_id_of(schedule_id: str, tick: float) -> str:
    """The run a tick starts: ``nightly@2026-03-01T09:00:00Z``, the same in every process."""
    stamp = datetime.fromtimestamp(tick, UTC).isoformat(timespec="seconds")
    return f"{schedule_id}@{stamp.removesuffix('+00:00')}Z"


@attrs.frozen
class ScheduleState:
    """What the store keeps of a schedule between decisions (JSON through ``asdict``)."""

    cursor: float
    """Ticks at or before this instant are handled (started, skipped or buffered)."""
    paused: bool = False
    last_run: str | None = None
    """The run of the last start (its status decides ``overlap``)."""
    buffered: float | None = None
    """``overlap='buffer_one'``: the tick to start once the last run has finished."""
    triggers: tuple[float, ...] = ()
    """Manual triggers not yet started (the instants they were asked for)."""
    pending: tuple[tuple[str, float], ...] = ()
    """Starts decided and written, maybe not yet carried out: (run id, tick)."""
    cancel: str | None = None
    """``overlap='cancel_previous'``: a run to cancel, decided and written."""

    def to_json(self) -> dict[str, Any]:
        return attrs.asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> ScheduleState:
        return cls(
            cursor=data["cursor"],
            paused=data.get("paused", False),
            last_run=data.get("last_run"),
            buffered=data.get("buffered"),
            triggers=tuple(data.get("triggers", ())),
            pending=tuple((r, t) for r, t in data.get("pending", ())),
            cancel=data.get("cancel"),
        )


@attrs.frozen
class Decision:
    """What to do now: the state to write, the runs to start and one to cancel."""

    state: ScheduleState
    starts: tuple[tuple[str, float], ...] = ()
    """(run id, tick) of each run to start, oldest tick first; manual triggers last."""
    cancel: str | None = None
    skipped: tuple[float, ...] = ()
    """Due ticks that start nothing (missed, or overlapping the last run)."""


@attrs.frozen
class _Plan:
    cursor: float
    starts: tuple[float, ...] = ()
    skipped: tuple[float, ...] = ()
    buffered: float | None = None
    cancel: bool = False


def decide(
    spec: ScheduleSpec, state: ScheduleState, now: float, *, last_unfinished: bool
) -> Decision:
    """Which ticks are due at ``now`` and which of them to start (see the module doc).

    Due ticks lie in ``(state.cursor, now]`` (a tick with jitter falls due that much
    later). ``catchup`` picks among them: ``all`` every one, ``latest`` the newest,
    ``none`` those found on time (within :data:`ON_TIME`). ``overlap`` then says what
    happens while ``last_unfinished`` (the last run has not finished):
    ``allow`` starts every pick; ``cancel_previous`` cancels the last run and starts the
    newest pick; ``skip`` starts nothing (the picks are skipped) and otherwise the
    oldest pick, leaving later ones due; ``buffer_one`` keeps the newest pick buffered
    and starts it once the last run has finished. Manual triggers start whatever the
    policies, and a paused schedule moves its cursor on without starting anything.
    """
    due = [t for t in ticks(spec, state.cursor - spec.jitter, now) if t > state.cursor]
    due = [t for t in due if t + jitter_of(spec, t) <= now]
    if state.paused:
        plan = _Plan(max(due, default=state.cursor), skipped=tuple(due))
    else:
        picks = _catch_up(spec.catchup, due, now)
        plan = _overlap(spec.overlap, state, due, picks, last_unfinished)
    starts = tuple((run_id_of(spec.schedule_id, t), t) for t in plan.starts)
    starts += tuple((run_id_of(spec.schedule_id, t) + "-manual", t) for t in state.triggers)
    new = attrs.evolve(
        state,
        cursor=max(plan.cursor, state.cursor),
        buffered=None if state.paused else plan.buffered,
        triggers=(),
        last_run=starts[-1][0] if starts else state.last_run,
    )
    cancel = state.last_run if plan.cancel and last_unfinished and starts else None
    return Decision(new, starts, cancel, plan.skipped)


def _catch_up(catchup: str, due: list[float], now: float) -> list[float]:
    if catchup == "all":
        return due
    if catchup == "latest":
        return due[-1:]
    return [t for t in due if now - t <= ON_TIME]


def _overlap(
    overlap: str, state: ScheduleState, due: list[float], picks: list[float], running: bool
) -> _Plan:
    cursor = max(due, default=state.cursor)
    missed = tuple(t for t in due if t not in picks)
    if overlap == "allow":
        return _Plan(cursor, tuple(picks), missed)
    if overlap == "cancel_previous":
        return _Plan(cursor, tuple(picks[-1:]), missed + tuple(picks[:-1]), cancel=True)
    if overlap == "skip":
        if running:
            return _Plan(cursor, (), tuple(due))
        if len(picks) > 1:  # the rest stay due: started in turn, or skipped while one runs
            return _Plan(picks[0], (picks[0],), tuple(t for t in missed if t < picks[0]))
        return _Plan(cursor, tuple(picks), missed)
    waiting = ([state.buffered] if state.buffered is not None else []) + picks
    if running:  # buffer_one: the newest waits for the last run to finish
        return _Plan(cursor, (), missed + tuple(waiting[:-1]), waiting[-1] if waiting else None)
    later = waiting[-1] if len(waiting) > 1 else None
    return _Plan(cursor, tuple(waiting[:1]), missed + tuple(waiting[1:-1]), later)

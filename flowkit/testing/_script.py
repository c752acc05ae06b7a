"""What a simulation is told: its virtual clock, its scripted signals and their arrival.

Shared by both modes of ``simulate()``: one process (``_simulate``) and real
workers under injected faults (``_faults``).
"""

from __future__ import annotations

import heapq
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

import attrs

from .._durations import Duration, to_seconds
from ..core._program import wait_name
from ..shell._result import RunResult
from ._model import Arrival, SimulationError

if TYPE_CHECKING:
    from collections.abc import Iterable, Mapping

    from ..blueprint._model import NodeSpec
    from ..core._state import RunState
    from ..shell._target import Target

# what moves the virtual clock, in the order they go when due at the same instant
CANCEL, TIMER, ARRIVAL, UPDATE = range(4)


class VirtualClock:
    """Seconds since the epoch, advanced only by the simulator."""

    def __init__(self, start: datetime) -> None:
        self.start = start.timestamp()
        self.now = self.start

    def __call__(self) -> float:
        return self.now

    def datetime(self) -> datetime:
        return datetime.fromtimestamp(self.now, UTC)


def parse_start(start: str | datetime | None) -> datetime:
    if start is None:
        return datetime(2026, 1, 1, tzinfo=UTC)
    if isinstance(start, datetime):
        return start if start.tzinfo else start.replace(tzinfo=UTC)
    try:
        parsed = datetime.fromisoformat(start.replace("Z", "+00:00"))
    except ValueError as exc:
        raise SimulationError(f"start={start!r} is not an ISO 8601 timestamp") from exc
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def parse_cancel_at(cancel_at: Duration | None, clock: VirtualClock) -> float | None:
    """The virtual time at which ``cancel_at`` (a duration after the start) cancels the run."""
    if cancel_at is None:
        return None
    try:
        return clock.start + to_seconds(cancel_at)
    except ValueError as exc:
        raise SimulationError(
            f"cancel_at={cancel_at!r}: {exc}; pass how long after the start to cancel the run"
        ) from None


NO_ANSWER: Any = object()


class Script:
    """Scripted signals for one kind of wait, a cursor per key (wait name, node id or path).

    A single value, callable or ``never()`` answers every wait under its key; a
    single ``at()`` is one signal; a list is used up entry by entry.
    """

    def __init__(self, answers: Mapping[str, Any] | None) -> None:
        self._entries: dict[str, list[Any]] = {}
        self._repeated: set[str] = set()
        self._cursor: dict[str, int] = {}
        for key, answer in (answers or {}).items():
            self._entries[key] = list(answer) if isinstance(answer, list) else [answer]
            self._cursor[key] = 0
            if not isinstance(answer, list) and not _timed(answer):
                self._repeated.add(key)

    def scripted_keys(self) -> list[str]:
        return list(self._entries)

    def current(self, key: str) -> Any:
        """The entry next in line under ``key``, or ``NO_ANSWER`` when none is left."""
        entries = self._entries.get(key, ())
        index = self._cursor.get(key, 0)
        return entries[index] if index < len(entries) else NO_ANSWER

    def advance(self, key: str) -> None:
        if key not in self._repeated:
            self._cursor[key] += 1

    def key_for(self, keys: Iterable[str]) -> str | None:
        return next((k for k in keys if self.current(k) is not NO_ANSWER), None)


def _timed(entry: Any) -> bool:
    return isinstance(entry, Arrival) and not entry.never


@attrs.frozen
class OpenWait:
    """One activation of a wait, as the run's ``waits`` section records it."""

    run_id: str
    name: str
    node_id: str
    act: int

    def is_open(self, state: RunState) -> bool:
        wait = state.sections["waits"].get(self.name)
        return (
            wait is not None
            and not state.finished
            and (wait["node"], wait["act"]) == (self.node_id, self.act)
        )


class Signaller:
    """Which scripted signal goes where, and when; shared by both simulate modes.

    Plain answers and ``never()`` are taken by open waits one at a time, in the
    order the waits were reached, so a race between waits is decided by one
    signal, as when someone sends them one after the other. ``at()`` entries
    arrive on their own at their time (before their wait, the run buffers them).
    """

    def __init__(
        self,
        signals: Mapping[str, Any] | None,
        webhooks: Mapping[str, Any] | None,
        targets: Iterable[Target],
        clock: VirtualClock,
    ) -> None:
        self.clock = clock
        self.scripts = {"signal": Script(signals), "webhook": Script(webhooks)}
        self.names = _signal_names(targets)
        self.silenced: set[OpenWait] = set()
        self._arrivals: list[tuple[float, int, str, str]] = []  # (due, seq, kind, key)
        self._seq = 0
        for kind, script in self.scripts.items():
            for key in script.scripted_keys():
                self._schedule(kind, key)

    def answer(self, wait: OpenWait, spec: NodeSpec) -> Any:
        """What to send ``wait`` now (a value or a callable of the run's state), or NO_ANSWER."""
        kind = _kind(spec)
        script = self.scripts[kind]
        key = script.key_for(_keys(wait, spec))
        if wait in self.silenced or key is None or _timed(script.current(key)):
            return NO_ANSWER  # told never(), unscripted, or its signal arrives at its own time
        entry = script.current(key)
        script.advance(key)
        self._schedule(kind, key)
        if isinstance(entry, Arrival):  # never(): this wait gets nothing
            self.silenced.add(wait)
            return NO_ANSWER
        return entry

    def next_arrival(self) -> float | None:
        return self._arrivals[0][0] if self._arrivals else None

    def pop_arrival(self) -> tuple[str, Arrival]:
        """The signal name and entry of the next arrival (its cursor moves on)."""
        _, _, kind, key = heapq.heappop(self._arrivals)
        script = self.scripts[kind]
        entry = script.current(key)
        script.advance(key)
        self._schedule(kind, key)
        return self.names[kind].get(key, key), entry

    @staticmethod
    def nowhere_to_go(
        name: str, arrival: Arrival, run_id: str, declared: Iterable[str]
    ) -> SimulationError:
        """The error for an ``at()`` signal that no run waits for or declares."""
        when = timedelta(seconds=arrival.delay or 0.0)
        return SimulationError(
            f"signal {name!r} scripted to arrive at {when} after the start has no wait to go "
            f"to: run {run_id!r} has no wait named {name!r} and no child run of it is waiting "
            f"for one (its waits are {sorted(declared) or 'none'}); check the name, or let it "
            "arrive once the child run waits"
        )

    def unanswered(self, wait: OpenWait, spec: NodeSpec) -> SimulationError | None:
        """The error for a wait still open when nothing else can move (None for ``never()``)."""
        if wait in self.silenced:
            return None
        kind = _kind(spec)
        return SimulationError(
            f"no {kind} scripted for wait {wait.name!r} (node {wait.node_id!r}) and nothing "
            f"else can move the run (the wait has no timeout, no timer is pending); pass "
            f"{kind}s={{{wait.name!r}: ...}} to simulate(), or never() to leave it waiting"
        )

    def _schedule(self, kind: str, key: str) -> None:
        entry = self.scripts[kind].current(key)
        if _timed(entry):
            due = max(self.clock.start + float(entry.delay), self.clock.now)
            self._seq += 1
            heapq.heappush(self._arrivals, (due, self._seq, kind, key))


def payload(entry: Any, state: RunState) -> Any:
    """A scripted value, or what a scripted callable makes of the receiving run's state."""
    return entry(RunResult.of(state).state) if callable(entry) else entry


def _kind(spec: NodeSpec) -> str:
    return "webhook" if spec.kind == "webhook" else "signal"


def _keys(wait: OpenWait, spec: NodeSpec) -> list[str]:
    return [wait.name, wait.node_id, str(spec.params.get("path", ""))]


def _signal_names(targets: Iterable[Target]) -> dict[str, dict[str, str]]:
    """Per kind of script: a key naming a wait by node id or webhook path -> its signal name."""
    names: dict[str, dict[str, str]] = {"signal": {}, "webhook": {}}
    for target in targets:
        for spec in target.blueprint.nodes:
            if spec.kind in ("wait", "webhook"):
                by_key = names[_kind(spec)]
                by_key.setdefault(spec.id, wait_name(spec))
                if spec.params.get("path"):
                    by_key.setdefault(str(spec.params["path"]), wait_name(spec))
    return names

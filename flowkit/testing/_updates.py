"""Scripted updates in ``simulate()``: sent when their wait is open, validated, answered.

Each update goes as one client's ``update()`` would: it waits for the run to reach
``flow.wait(name)``, is validated on the run's variables then (a refusal records
nothing), and its reply is computed once the run has gone as far as it can.
"""

from __future__ import annotations

import heapq
import itertools
from datetime import timedelta
from typing import TYPE_CHECKING, Any

import attrs

from .._errors import FlowkitError, ResumeError, UpdateRejected
from ..shell._handlers import check_update, reply, update_event, update_handler
from ._model import Arrival, UpdateOutcome
from ._script import payload

if TYPE_CHECKING:
    from collections.abc import Mapping

    from ..core import _protocol as p
    from ..core._state import RunState
    from ..shell._handlers import Update
    from ..shell._target import Target
    from ._script import VirtualClock


class Updater:
    """The scripted updates of the top run, one in flight at a time."""

    def __init__(
        self, updates: Mapping[str, Any] | None, target: Target, run_id: str, clock: VirtualClock
    ) -> None:
        self.clock = clock
        self.handlers: dict[str, Update] = {
            name: update_handler(target, run_id, name) for name in updates or {}
        }
        self.due: list[tuple[str, Any]] = []  # in the order scripted, sent when their wait is open
        self.timed: list[tuple[float, int, str, Any]] = []  # at() entries not arrived yet
        self.in_flight: tuple[str, Any, float] | None = None
        self.outcomes: list[UpdateOutcome] = []
        self._seq = itertools.count()
        for name, entries in (updates or {}).items():
            for entry in entries if isinstance(entries, list) else [entries]:
                self._script(name, entry)

    def _script(self, name: str, entry: Any) -> None:
        if not isinstance(entry, Arrival):
            self.due.append((name, entry))
        elif not entry.never:
            due = self.clock.start + float(entry.delay or 0.0)
            heapq.heappush(self.timed, (due, next(self._seq), name, entry.value))

    def next_arrival(self) -> float | None:
        return self.timed[0][0] if self.timed else None

    def arrive(self) -> None:
        _, _, name, value = heapq.heappop(self.timed)
        self.due.append((name, value))

    def next_event(self, state: RunState) -> p.SignalReceived | None:
        """Settle the update in flight, then the signal of the next due update whose wait
        is open and that its validator accepts (a refused one is recorded as such)."""
        self.settle(state)
        for index, (name, value) in enumerate(self.due):
            if state.finished or name not in state.sections["waits"]:
                continue
            del self.due[index]
            data = payload(value, state)
            event = update_event(name, data)
            try:
                check_update(self.handlers[name], event, state)
            except UpdateRejected as exc:
                self.outcomes.append(UpdateOutcome(name, data, self._now(), error=exc))
                return self.next_event(state)
            self.in_flight = (name, data, self.clock.now)
            return event
        return None

    def settle(self, state: RunState) -> None:
        """Record the reply of the update in flight: the run has gone as far as it can."""
        if self.in_flight is None:
            return
        name, data, sent = self.in_flight
        self.in_flight = None
        outcome = UpdateOutcome(name, data, timedelta(seconds=sent - self.clock.start))
        try:
            outcome = attrs.evolve(outcome, reply=reply(self.handlers[name], state, data))
        except FlowkitError as exc:
            outcome = attrs.evolve(outcome, error=exc)
        self.outcomes.append(outcome)

    def finish(self, state: RunState) -> list[UpdateOutcome]:
        """Every outcome, with the updates the run never took refused (it finished, or
        stopped short of their wait)."""
        self.settle(state)
        for name, value in self.due:
            reason = (
                f"run {state.run_id!r} {'finished' if state.finished else 'stopped'} "
                f"({state.status.value}) before it waited for {name!r}"
            )
            self.outcomes.append(UpdateOutcome(name, value, self._now(), error=ResumeError(reason)))
        self.due.clear()
        return self.outcomes

    def _now(self) -> timedelta:
        return timedelta(seconds=self.clock.now - self.clock.start)

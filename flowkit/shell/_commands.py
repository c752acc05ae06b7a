"""One interpreter of the core's commands: each shell says what its primitives do.

The core answers every event with commands (see ``flowkit.core._protocol``).
:meth:`Interpreter.interpret` hands each to the shell's primitive for it, in
order, and returns the node executions, which every shell starts its own way:
the in-memory runtime runs them in the current task, the worker publishes them,
the simulator queues them for its seeded scheduler.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, Generic, TypeVar

from ..core import _protocol as p

if TYPE_CHECKING:
    from collections.abc import Callable, Iterable

R = TypeVar("R")
"""What a shell calls a run while it carries its commands out (a run id, a run object)."""


class Interpreter(ABC, Generic[R]):
    """Carries the core's commands out through the primitives a shell overrides.

    Timers, cancelled timers and reached waits need nothing from a shell whose
    store indexes the run's timers as it commits (the worker): those default to
    doing nothing. The rest every shell must say (they are abstract).
    """

    def __init__(self) -> None:
        self._primitives: dict[type, Callable[[R, Any], None]] = {
            p.CancelNode: self.cancel_node,
            p.StartTimer: self.start_timer,
            p.CancelTimer: self.cancel_timer,
            p.AwaitSignal: self.await_signal,
            p.StartChild: self.start_child,
            p.CancelChild: self.cancel_child,
            p.FinishRun: self.finish_run,
            p.ContinueAsNew: self.continue_as_new,
            p.TakeSlot: self.take_slot,
            p.ReleaseSlot: self.release_slot,
            p.Note: self.note,
        }

    def interpret(self, run: R, commands: Iterable[p.Command]) -> list[p.ExecuteNode]:
        """Do what ``commands`` ask (but execute nodes); the node executions, in order."""
        nodes: list[p.ExecuteNode] = []
        primitives = self._primitives
        for command in commands:
            if type(command) is p.ExecuteNode:
                nodes.append(command)
            else:
                primitives[type(command)](run, command)
        return nodes

    # -- primitives ---------------------------------------------------------------
    @abstractmethod
    def cancel_node(self, run: R, command: p.CancelNode) -> None:
        """Stop the node of a dispatch the run withdrew (a race lost, a run cancelled)."""

    def start_timer(self, run: R, command: p.StartTimer) -> None:
        """Fire ``TimerFired`` after ``command.delay`` seconds."""

    def cancel_timer(self, run: R, command: p.CancelTimer) -> None:
        """Forget a timer (its firing would be ignored by the core anyway)."""

    def await_signal(self, run: R, command: p.AwaitSignal) -> None:
        """The run reached a wait (it takes signals all along: this is news only)."""

    @abstractmethod
    def start_child(self, run: R, command: p.StartChild) -> None:
        """Start the child run (see :meth:`Flows.child`)."""

    @abstractmethod
    def cancel_child(self, run: R, command: p.CancelChild) -> None:
        """Cancel a child run its parent no longer needs."""

    @abstractmethod
    def finish_run(self, run: R, command: p.FinishRun) -> None:
        """The run finished: wake its waiters, tell its parent, say so."""

    @abstractmethod
    def continue_as_new(self, run: R, command: p.ContinueAsNew) -> None:
        """Create the run ``command.run_id`` continues as (with no parent; an existing one
        is left alone), then step this run with ``RunContinued``."""

    @abstractmethod
    def take_slot(self, run: R, command: p.TakeSlot) -> None:
        """Queue the run for a slot of its flow's limit; report ``SlotTaken`` once it has
        one (see ``_run_slots``)."""

    @abstractmethod
    def release_slot(self, run: R, command: p.ReleaseSlot) -> None:
        """Give the ended run's slot back (or take it out of the queue), then admit the
        queued runs that fit."""

    @abstractmethod
    def note(self, run: R, command: p.Note) -> None:
        """Emit the event the core notes (``node:retry``, ``batch:start``, ...)."""


def for_parent(run_id: str, finish: p.FinishRun | Mapping[str, Any]) -> p.ChildFinished:
    """The event that tells a parent its child run ``run_id`` finished: from the
    ``FinishRun`` command, or from the header of a run stored finished."""
    if isinstance(finish, Mapping):
        return p.ChildFinished(
            run_id, str(finish["status"]), finish.get("output"), finish.get("error")
        )
    return p.ChildFinished(run_id, finish.status, finish.output, finish.error)

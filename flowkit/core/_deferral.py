"""Deferred dispatches (async completion) and heartbeat details; mixed into ``Step``.

A node that hands out a completion token and returns pending reports
:class:`~flowkit.core._protocol.NodeDeferred`: its dispatch stays open, marked
``deferred`` (with the token's nonce), until whoever holds the token reports it
completed or failed. Heartbeat details ride on the dispatch record and are
carried into the record of the next attempt.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .._errors import CompletionTimeout, describe
from . import _protocol as p

if TYPE_CHECKING:
    from ._state import RunState

COMPLETION = "completion"  # the purpose of a deferral's timeout timer


class DeferralSteps:
    """Deferral behaviour of a core step (see ``_machine.Step`` for the rest)."""

    s: RunState
    commands: list[p.Command]

    if TYPE_CHECKING:

        def on_failed(self, event: p.NodeFailed) -> None: ...
        def note(
            self, type_: str, node_id: str | None, attempt: int | None = None, *, data: Any = None
        ) -> None: ...

    def on_deferred(self, event: p.NodeDeferred) -> None:
        """Keep the dispatch open, awaiting its completion (and its timeout, if any)."""
        dispatch = self.s.sections["dispatches"].get(event.dispatch_id)
        if dispatch is None or dispatch.get("deferred"):
            return  # completed already (a fast completer) or a duplicate report
        record = dict(dispatch, deferred=event.nonce)
        if event.heartbeat is not None:
            record["heartbeat"] = event.heartbeat
        node_id = dispatch["node"]
        if event.timeout is not None:
            timer_id = f"{COMPLETION}:{event.dispatch_id}"
            timer = {"node": node_id, "purpose": COMPLETION, "dispatch": event.dispatch_id}
            self.s.put("timers", timer_id, timer)
            self.commands.append(p.StartTimer(timer_id, node_id, event.timeout, COMPLETION))
            record["timer"] = timer_id
        self.s.put("dispatches", event.dispatch_id, record)
        data = {"dispatch_id": event.dispatch_id, "timeout": event.timeout}
        self.note("node:deferred", node_id, int(dispatch["attempt"]), data=data)

    def on_heartbeat(self, event: p.NodeHeartbeat) -> None:
        """Record the dispatch's latest heartbeat details."""
        dispatch = self.s.sections["dispatches"].get(event.dispatch_id)
        if dispatch is None:
            return
        self.s.put("dispatches", event.dispatch_id, dict(dispatch, heartbeat=event.details))
        self.note("node:heartbeat", dispatch["node"], int(dispatch["attempt"]))

    def settle_deferral(self, dispatch: dict[str, Any]) -> None:
        """A dispatch settled: its completion timeout, if it had one, is moot."""
        timer_id = dispatch.get("timer")
        if timer_id is not None and timer_id in self.s.sections["timers"]:
            self.s.drop("timers", timer_id)
            self.commands.append(p.CancelTimer(timer_id))

    def completion_timed_out(self, timer: dict[str, Any]) -> None:
        """Nobody completed a deferred dispatch in time: it fails (and may be retried)."""
        dispatch_id = timer["dispatch"]
        dispatch = self.s.sections["dispatches"].get(dispatch_id)
        if dispatch is None:
            return
        error = CompletionTimeout(timer["node"], dispatch_id, self.s.run_id)
        type_, mro, message = describe(error)
        attempt = int(dispatch["attempt"])
        info = {"type": type_, "mro": list(mro), "message": message, "attempt": attempt}
        self.on_failed(p.NodeFailed(dispatch_id, info))


def deferred(dispatches: dict[str, Any]) -> bool:
    """Whether every open dispatch awaits an external completion (none is running)."""
    # Newest first: a wide fan's dispatches finish oldest first, and the dict keeps a
    # hole for each one deleted until it is resized, which a scan from the front would
    # cross on every call. A loop, not all(): no generator per call.
    for record in reversed(dispatches.values()):  # noqa: SIM110
        if not record.get("deferred"):
            return False
    return True

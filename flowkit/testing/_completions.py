"""Scripted completions of deferred nodes (``simulate(completions=...)``)."""

from __future__ import annotations

import heapq
from typing import TYPE_CHECKING, Any

from ..shell._completion import CompletionToken, completion_event, failure_event
from ._model import Arrival, SimulationError, registry_name
from ._script import payload

if TYPE_CHECKING:
    from collections.abc import Mapping

    from ..core import _protocol as p
    from ..core._state import RunState
    from ..shell._target import Target


class Completer:
    """Answers each deferral of a scripted node: at once, or ``at(delay)`` after it deferred.

    An answer is a value (or a callable of the run's state), an exception (the node
    fails, and its retry policy decides), :func:`at` one of these, or a list of
    answers for successive deferrals (the last one repeats).
    """

    def __init__(self, completions: Mapping[Any, Any] | None) -> None:
        self.script: dict[str, list[Any]] = {}
        for key, answer in (completions or {}).items():
            name = key if isinstance(key, str) else registry_name(key)
            self.script[name] = list(answer) if isinstance(answer, list) else [answer]
        self.due: list[tuple[float, int, str, p.Event]] = []
        self._seq = 0

    def deferred(
        self, run_id: str, target: Target, state: RunState, event: p.NodeDeferred, now: float
    ) -> p.Event | None:
        """The completion due at once for this deferral (None: later, or never)."""
        record = state.sections["dispatches"].get(event.dispatch_id)
        if record is None or not record.get("deferred"):
            return None
        spec = target.program.specs[record["node"]]
        answers = self.script.get(spec.id) or self.script.get(spec.uses or "")
        if not answers:
            return None
        answer = answers.pop(0) if len(answers) > 1 else answers[0]
        delay = 0.0
        if isinstance(answer, Arrival):
            if answer.never:
                return None
            delay, answer = answer.delay or 0.0, answer.value
        token = CompletionToken(run_id, event.dispatch_id, int(record["attempt"]), event.nonce)
        settled = _event(token, answer, state)
        if delay <= 0:
            return settled
        self._seq += 1
        heapq.heappush(self.due, (now + delay, self._seq, run_id, settled))
        return None

    def next_due(self) -> float | None:
        return self.due[0][0] if self.due else None

    def pop(self) -> tuple[str, p.Event]:
        _, _, run_id, event = heapq.heappop(self.due)
        return run_id, event


def _event(token: CompletionToken, answer: Any, state: RunState) -> p.Event:
    if isinstance(answer, BaseException):
        if not isinstance(answer, Exception):
            raise SimulationError(f"completions: {answer!r} is not an Exception")
        return failure_event(token, answer)
    return completion_event(token, payload(answer, state), plain=False)

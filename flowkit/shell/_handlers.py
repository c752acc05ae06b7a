"""Queries and updates: read-only handlers of a run's variables, and signals that answer.

A query is a function of the run's flow variables as stored (``RunResult.state``).
An update is a signal with a reply: its validator (a function of the variables and
the payload) runs under the run's lock just before the signal is committed, and may
refuse it, so nothing is recorded; its reply function runs on the variables once
the flow has taken the signal and reached its next wait (or finished). Every shell
uses these functions; they read and write no store (``Patience`` only paces a
shell's reads of a run).
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import anyio
import attrs

from .._errors import ResultTimeout, ResumeError, UpdateRejected
from ..core import _protocol as p
from ..core._machine import wait_names
from ..core._state import RunStatus
from ._result import RunResult

if TYPE_CHECKING:
    from collections.abc import Mapping

    from ..core._state import RunState
    from ._target import Target

POLL_FIRST = 0.01  # seconds between the first reads of a run an update waits for
POLL_MOST = 0.5  # ... doubling up to this


@attrs.frozen
class Update:
    """An update a flow declares: ``reply(vars, data)`` computes the answer once the
    flow has taken the payload; ``validate(vars, data)`` (optional) raises to refuse it."""

    name: str
    reply: Callable[[dict[str, Any], Any], Any]
    validate: Callable[[dict[str, Any], Any], Any] | None = None


class NotWaiting(ResumeError):
    """The run does not wait for the update's signal right now (it may later)."""

    def __init__(self, run_id: str, name: str, status: str) -> None:
        self.run_id = run_id
        self.name = name
        self.status = status
        super().__init__(f"run {run_id!r} ({status}) is not waiting for {name!r} now")


def variables(state: RunState) -> dict[str, Any]:
    """The run's flow variables as stored: what ``RunResult.state`` holds (a copy)."""
    return RunResult.of(state).state


def query_handler(target: Target, run_id: str, name: str) -> Callable[[dict[str, Any]], Any]:
    """The query ``name`` of the run's flow (a ResumeError naming those it has)."""
    handler = _queries(target).get(name)
    if handler is None:
        raise ResumeError(
            f"run {run_id!r} (flow {target.blueprint.id!r}) has no query named {name!r}; "
            f"its queries are {sorted(_queries(target)) or 'none'} (declare one with "
            f"@{target.blueprint.id}.query under the flow)"
        )
    return handler


def run_query(target: Target, state: RunState, name: str) -> Any:
    """Query ``name`` on the run as ``state`` holds it."""
    return query_handler(target, state.run_id, name)(variables(state))


def update_handler(target: Target, run_id: str, name: str) -> Update:
    """The update ``name`` of the run's flow (a ResumeError naming those it has, or
    saying that the flow has no wait to deliver it to)."""
    update = _updates(target).get(name)
    if update is None:
        raise ResumeError(
            f"run {run_id!r} (flow {target.blueprint.id!r}) has no update named {name!r}; "
            f"its updates are {sorted(_updates(target)) or 'none'} (declare one with "
            f"@{target.blueprint.id}.update under the flow)"
        )
    if name not in wait_names(target.program):
        raise ResumeError(
            f"update {name!r} of flow {target.blueprint.id!r} has no flow.wait({name!r}) to "
            "deliver to; add that wait to the flow body"
        )
    return update


def update_event(name: str, data: Any) -> p.SignalReceived:
    """The signal that carries an update: delivered once, under an update id."""
    return p.SignalReceived(name, data, None, f"update:{uuid.uuid4().hex}")


def check_update(update: Update, event: p.SignalReceived, state: RunState) -> None:
    """Refuse the update's signal on the run as stored: a finished run (ResumeError), a
    run not waiting for it now (:class:`NotWaiting`), or the validator's refusal
    (:class:`~flowkit.UpdateRejected`)."""
    if state.finished:
        raise ResumeError(
            f"run {state.run_id!r} has already finished ({state.status.value}): update "
            f"{update.name!r} was not delivered; read the run's result instead"
        )
    if update.name not in state.sections["waits"]:
        raise NotWaiting(state.run_id, update.name, state.status.value)
    if update.validate is None:
        return
    try:
        update.validate(variables(state), event.data)
    except Exception as exc:  # the user's validator refused: any exception is a "no"
        raise UpdateRejected(state.run_id, update.name, str(exc) or type(exc).__name__) from exc


def settled(state: RunState) -> bool:
    """Whether the run has gone as far as it can: at a wait (or sleep, child) or finished."""
    return state.status is not RunStatus.RUNNING


def reply(update: Update, state: RunState, data: Any) -> Any:
    """The update's answer on the run as it settled after taking it; the run's error if
    it failed or was cancelled meanwhile."""
    result = RunResult.of(state)
    if result.status in (RunStatus.FAILED, RunStatus.CANCELLED) and result.error is not None:
        raise result.error
    return update.reply(variables(state), data)


class Patience:
    """How long an update still waits for its run: pauses between reads of the run, from
    :data:`POLL_FIRST` doubling up to :data:`POLL_MOST`, until ``timeout`` seconds."""

    def __init__(self, run_id: str, name: str, timeout: float | None) -> None:
        self.run_id = run_id
        self.name = name
        self.started = anyio.current_time()
        self.timeout = timeout
        self.pause = POLL_FIRST

    async def wait(
        self, state: RunState | None, waiting_for: str, woken_by: anyio.Event | None = None
    ) -> None:
        """Pause before the next read (cut short by ``woken_by``, if given); a
        ResultTimeout once the time is up."""
        left = None if self.timeout is None else self.timeout - self.waited()
        if left is not None and left <= 0:
            status = state.status.value if state is not None else None
            raise ResultTimeout(
                self.run_id,
                status,
                self.waited(),
                f"update {self.name!r} is still waiting for {waiting_for} (the run is "
                f"{status}); check that something runs the flow, or pass a longer timeout=",
            )
        with anyio.move_on_after(self.pause if left is None else min(self.pause, left)):
            await (woken_by.wait() if woken_by is not None else anyio.sleep_forever())
        self.pause = min(self.pause * 2, POLL_MOST)

    def waited(self) -> float:
        return anyio.current_time() - self.started


def _queries(target: Target) -> Mapping[str, Callable[[dict[str, Any]], Any]]:
    return target.queries if target.queries is not None else {}


def _updates(target: Target) -> Mapping[str, Update]:
    return target.updates if target.updates is not None else {}

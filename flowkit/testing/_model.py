"""What a simulation is told and reports: scripted arrivals, ``Simulation``, its trace and calls."""

from __future__ import annotations

import copy
from datetime import datetime, timedelta
from typing import Any

import attrs

from .._durations import Duration, to_seconds
from .._errors import FlowkitError
from ..blueprint._model import Blueprint
from ..core._state import RunStatus
from ..shell._events import Event
from ..shell._result import checked_blueprint, node_statuses


@attrs.frozen(repr=False)
class Arrival:
    """A scripted signal that arrives on its own: ``delay`` seconds after the start, or never."""

    delay: float | None
    value: Any = None
    written: str = ""

    @property
    def never(self) -> bool:
        return self.delay is None

    def __repr__(self) -> str:
        return "never()" if self.delay is None else f"at({self.written}, {self.value!r})"


def at(when: Duration, value: Any = None) -> Arrival:
    """A signal that arrives ``when`` after the simulation's start (``"3d"``, seconds, timedelta).

    A wait reached before then waits for it (its timeout or a racing sleep may
    win first); a wait reached later finds it buffered and gets it at once.
    ``value`` may be a callable of the run's state, called when it arrives.

    >>> at("3d", {"approved": True})
    at('3d', {'approved': True})
    """
    try:
        delay = to_seconds(when)
    except ValueError as exc:
        raise SimulationError(
            f"at({when!r}): {exc}; pass how long after the simulation's start the signal arrives"
        ) from None
    return Arrival(delay, value, repr(when))


def never() -> Arrival:
    """A signal that never arrives: the wait's timeout, or whatever it races, decides.

    >>> never()
    never()
    """
    return Arrival(None)


@attrs.frozen
class UpdateOutcome:
    """One scripted update: its ``name`` and ``data``, when (virtual time after the
    start) it was recorded or refused, and its ``reply`` or ``error``
    (:class:`~flowkit.UpdateRejected` for a validator's refusal)."""

    name: str
    data: Any
    at: timedelta
    reply: Any = None
    error: FlowkitError | None = None


@attrs.frozen
class TraceEntry:
    """One node execution: which attempt, and when in virtual time it ran."""

    node_id: str
    attempt: int
    started: datetime
    finished: datetime
    status: str  # "completed" | "failed"
    run_id: str = ""


@attrs.frozen
class Call:
    """The arguments one node execution received."""

    node_id: str
    attempt: int
    args: tuple[Any, ...]
    kwargs: dict[str, Any]


@attrs.define
class Simulation:
    """The outcome of :func:`simulate`: status, output, virtual time spent, path taken."""

    run_id: str
    status: RunStatus
    output: Any
    error: FlowkitError | None
    elapsed: timedelta
    visited: list[str]
    trace: list[TraceEntry]
    events: list[Event]
    state: dict[str, Any]
    seed: int = 0
    updates: list[UpdateOutcome] = attrs.field(factory=list)
    _queries: dict[str, Any] = attrs.field(factory=dict, alias="_queries", repr=False)
    _calls: list[Call] = attrs.field(factory=list, alias="_calls")
    _uses: dict[str, str] = attrs.field(factory=dict, alias="_uses")
    _snapshot: dict[str, Any] = attrs.field(factory=dict, alias="_snapshot", repr=False)
    _blueprint: Blueprint | None = attrs.field(default=None, alias="_blueprint", repr=False)

    def calls(self, node: Any) -> list[Call]:
        """Executions of ``node`` (a node id, or a node function / ``@node`` by reference)."""
        if isinstance(node, str):
            return [c for c in self._calls if c.node_id == node]
        name = registry_name(node)
        return [c for c in self._calls if self._uses.get(c.node_id) == name]

    def query(self, name: str) -> Any:
        """The flow's query ``name`` (``@flow_fn.query``) on the run's final variables."""
        handler = self._queries.get(name)
        if handler is None:
            raise SimulationError(
                f"the flow has no query named {name!r}; its queries are "
                f"{sorted(self._queries) or 'none'}"
            )
        return handler(copy.deepcopy(self.state))

    def path(self) -> dict[str, str]:
        """Node id -> what happened there, as :meth:`flowkit.RunResult.path` reports it."""
        return node_statuses(self._snapshot, self._blueprint)

    def mermaid(self, flow: Any = None) -> str:
        """The flow's graph as a Mermaid flowchart with the simulated path styled on it.

        ``flow`` is needed only when the simulation has no blueprint attached.
        """
        from ..blueprint._mermaid import run_mermaid

        bp = checked_blueprint(flow, self._blueprint, self._snapshot, self.run_id)
        return run_mermaid(bp, node_statuses(self._snapshot, bp))

    def _repr_mimebundle_(self, include: Any = None, exclude: Any = None) -> dict[str, str]:
        if self._blueprint is None:
            return {"text/plain": repr(self)}
        from ..blueprint._mermaid import run_mimebundle

        return run_mimebundle(self._blueprint, self.path(), repr(self))

    def __repr__(self) -> str:
        return (
            f"Simulation(status={self.status.value!r}, output={self.output!r}, "
            f"elapsed={self.elapsed}, visited={self.visited!r})"
        )


def registry_name(node: Any) -> str:
    """The registry name flows use for a node function, ``@node`` or class node."""
    from .._naming import implementation_name

    return str(getattr(node, "registry_name", None) or implementation_name(node))


class SimulationError(FlowkitError):
    """A simulation could not go on (no scripted signal, step limit, bad script)."""

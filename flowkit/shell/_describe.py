"""``describe(run_id)``: a run's header, a table of its nodes, and what it waits for.

Built from three reads of the store: the run's summary (its index row), its state
and its history. The node table comes from the history (attempts, first start, last
end, time spent, last error) and the state (each node's status); the waits, timers
and children from the state, with the due times their history recorded. A store
with history off still describes a run, without times or attempts.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import attrs

from .._errors import ConfigurationError, ResumeError
from ..core._priority import DEFAULT_PRIORITY, priority_of
from ..stores._protocol import RunSummary

if TYPE_CHECKING:
    from collections.abc import Sequence

    from ..core._state import RunState
    from ..stores._history import HistoryEvent

_STATUS = 4  # a node record's status (see flowkit.core._machine)
_STATUS_NAMES = {"done": "completed"}
_ENDS = ("node.completed", "node.failed", "node.timed_out")


@attrs.frozen
class NodeRow:
    """One node of a described run."""

    node_id: str
    status: str
    """``pending``, ``running`` (executing, sleeping, waiting or running a child),
    ``completed``, ``failed``, ``skipped``, ``cancelled`` or ``poisoned`` (never to run:
    a predecessor failed)."""
    attempts: int
    """Executions started (0 for nodes that execute nothing: waits, sleeps, branches)."""
    first_start: float | None
    """When its first execution started (unix seconds), if it executed."""
    last_end: float | None
    """When its last execution ended, if one did."""
    duration: float
    """Seconds spent executing, over every attempt."""
    error: str | None
    """The last error of an execution, ``"<type>: <message>"``."""


@attrs.frozen
class WaitRow:
    """A wait the run is in: the signal name it waits for."""

    name: str
    node_id: str
    timeout_at: float | None
    """When it times out (unix seconds); None if it has no timeout or it is unknown."""


@attrs.frozen
class TimerRow:
    """A durable timer the run has set."""

    timer_id: str
    node_id: str
    purpose: str
    """``sleep``, ``retry`` (a node's backoff) or ``timeout`` (a wait's)."""
    due_at: float | None


@attrs.frozen
class ChildRow:
    """A child run the run waits for."""

    run_id: str
    node_id: str
    flow: str


@attrs.frozen
class RunDescription:
    """What ``describe(run_id)`` returns: the run, its nodes and what it waits for."""

    run: RunSummary
    nodes: list[NodeRow]
    """In the order the run first reached them."""
    waits: list[WaitRow]
    timers: list[TimerRow]
    children: list[ChildRow]
    priority: int = DEFAULT_PRIORITY
    """The run's priority, 0 to 9 (higher is served sooner where the transport can)."""
    continued_from: str | None = None
    """The run this one continues (it called ``flow.continue_as_new``), if any."""
    continued_as: str | None = None
    """The run this one continued as (or is continuing as, while it ends), if any."""
    slot: RunSlot | None = None
    """The slot of its flow's concurrency limit the run holds, or (``queued``) waits
    for; None for a flow with no limit."""


@attrs.frozen
class RunSlot:
    """A run's slot of ``@flow(concurrency=Limit(...))``: the pool (the flow id, the
    value of the limit's key), its size, and whether the run has it or is queued.
    A child run of the same pool runs under its parent's slot (``lent``)."""

    flow: str
    key: str
    max: int
    status: str  # "queued" | "held" | "lent" | "released"

    @classmethod
    def of(cls, header: dict[str, Any]) -> RunSlot | None:
        slot = header.get("slot")
        if slot is None:
            return None
        if header.get("queued") is not None:
            status = "queued"
        elif not slot.get("own"):
            status = "lent"
        else:
            status = "held" if slot.get("taken") or slot.get("passed") else "released"
        flow = str(slot["limit"]).partition(":")[2]
        return cls(flow, str(slot["key"]), int(slot["max"]), status)


def describe_run(
    summary: RunSummary, state: RunState, history: Sequence[HistoryEvent]
) -> RunDescription:
    """The description of a run from its summary, state and history."""
    dues = timer_dues(history)
    sections = state.sections
    waits = [
        WaitRow(name, str(wait["node"]), dues.get(str(wait.get("timer"))))
        for name, wait in sections["waits"].items()
    ]
    timers = [
        TimerRow(timer_id, str(timer["node"]), str(timer.get("purpose", "")), dues.get(timer_id))
        for timer_id, timer in sections["timers"].items()
    ]
    children = [
        ChildRow(child_id, str(child["node"]), str(child.get("blueprint_id", "")))
        for child_id, child in sections["children"].items()
    ]
    header = state.header
    after = header.get("continued_as") or header.get("continuing")
    before = header.get("continued_from")
    return RunDescription(
        summary,
        _nodes(state, history),
        waits,
        timers,
        children,
        priority_of(header),
        None if before is None else str(before),
        None if after is None else str(after),
        RunSlot.of(header),
    )


async def describe_stored(store: Any, run_id: str) -> RunDescription:
    """Describe ``run_id`` from ``store``; a :class:`~flowkit.ResumeError` for an unknown
    run, a :class:`~flowkit.ConfigurationError` for a store that cannot describe."""
    reader = getattr(store, "run_summary", None)
    if reader is None:
        raise ConfigurationError(f"describe: the store {store!r} keeps no run index")
    summary = await reader(run_id)
    loaded = await store.load(run_id) if summary is not None else None
    if summary is None or loaded is None:
        raise unknown_run(run_id, store)
    return describe_run(summary, loaded[0], await read_history(store, run_id))


async def read_history(store: Any, run_id: str) -> list[HistoryEvent]:
    """The run's history from ``store`` (empty if it keeps none); a
    :class:`~flowkit.ResumeError` for an unknown run."""
    reader = getattr(store, "history", None)
    if reader is None:
        raise ConfigurationError(f"history: the store {store!r} keeps no run history")
    events: list[HistoryEvent] = await reader(run_id)
    if not events and await store.info(run_id) is None:
        raise unknown_run(run_id, store)
    return events


def unknown_run(run_id: str, store: Any) -> ResumeError:
    return ResumeError(
        f"unknown run {run_id!r}: it is not in the store {store!r}; check the run id, and "
        "that this process uses the store the run was started on"
    )


# -- the node table ------------------------------------------------------------------------
@attrs.define
class _Tally:
    attempts: int = 0
    first_start: float | None = None
    last_end: float | None = None
    duration: float = 0.0
    error: str | None = None


def _nodes(state: RunState, history: Sequence[HistoryEvent]) -> list[NodeRow]:
    tallies: dict[str, _Tally] = {}
    for event in history:
        if event.node_id is not None:
            _count(tallies.setdefault(event.node_id, _Tally()), event)
    records = state.sections["nodes"]
    dispatches = state.sections["dispatches"].values()
    running = {str(d["node"]) for d in dispatches if not d.get("deferred")}
    deferred = {str(d["node"]) for d in dispatches if d.get("deferred")}
    order = list(dict.fromkeys([*tallies, *records]))
    rows = []
    for node_id in order:
        tally = tallies.get(node_id) or _Tally()
        record = records.get(node_id)
        status = str(record[_STATUS]) if record else "pending"
        if node_id in running:
            status = "running"
        elif node_id in deferred:  # it ran and awaits its completion token
            status = "deferred"
        elif status == "running" and state.finished:  # ended with the run (a return, or
            status = "completed" if state.status == "completed" else "cancelled"  # cut off)
        rows.append(
            NodeRow(
                node_id,
                _STATUS_NAMES.get(status, status),
                tally.attempts,
                tally.first_start,
                tally.last_end,
                tally.duration,
                tally.error,
            )
        )
    return rows


def _count(tally: _Tally, event: HistoryEvent) -> None:
    kind = event.kind
    if kind == "node.started":
        tally.attempts += 1
        if tally.first_start is None:
            tally.first_start = event.at
    elif kind in _ENDS:
        tally.last_end = event.at
        duration = event.data.get("duration")
        if isinstance(duration, int | float):
            tally.duration += float(duration)
        if kind != "node.completed":
            tally.error = _error_text(event.data.get("error"))


def _error_text(error: Any) -> str | None:
    if not isinstance(error, dict):
        return None
    if error.get("truncated"):
        return f"(truncated error: {error.get('preview', '')})"
    return f"{error.get('type', '')}: {error.get('message', '')}"


def timer_dues(history: Sequence[HistoryEvent]) -> dict[str, float]:
    """Timer id -> due time, from the ``timer.set`` events (the latest of each id)."""
    dues: dict[str, float] = {}
    for event in history:
        if event.kind == "timer.set":
            due = event.data.get("due_at")
            if isinstance(due, int | float):
                dues[str(event.data.get("timer_id"))] = float(due)
    return dues

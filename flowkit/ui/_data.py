"""What each page shows, gathered from the store (and the operations API) in one place.

:func:`runs_page` and :func:`run_page` return plain attrs records that the
templates render; nothing here knows HTML but the SVG graph (``_graph``).

The run page is built from what every store keeps: the run's state (node
records and outputs, the waits, timers and child runs that hold it, its
inputs, output, error and variables), its index header, and its children in the
run index, and its history (the timeline, and the timers' due times) where the
store keeps one; a store made with ``history=False`` shows the nodes in the
order the run reached them instead, and says "history not recorded by this store".
"""

from __future__ import annotations

from collections import Counter
from typing import TYPE_CHECKING, Any

import attrs
from markupsafe import Markup

from .._durations import to_seconds
from .._errors import ConfigurationError
from ..core._state import FINISHED_VALUES, RunStatus
from ..shell._describe import timer_dues
from ..shell._result import node_statuses
from ..stores._protocol import RunSummary
from . import _graph
from ._payload import Payload, payload, short, span
from ._query import STATUSES

if TYPE_CHECKING:
    from ..blueprint import Blueprint
    from ..stores._history import HistoryEvent
    from ..stores._protocol import Store
    from ._catalogue import Catalogue
    from ._query import RunsQuery

PAGE_SIZE = 50
COUNT_SAMPLE = 1_000
"""A store without ``count_runs`` has its statuses counted among this many newest runs."""
_STATUS_AT = 4  # a node record is [activation, arrived, taken, fired, status]
_ACTIVATION_AT = 0


# -- the runs page -------------------------------------------------------------------------


@attrs.frozen
class RunsView:
    runs: list[RunSummary]
    cursor: str | None
    counts: dict[str, int]
    counted_all: bool  # False: the counts are of the newest COUNT_SAMPLE matching runs
    problems: tuple[str, ...]


async def runs_page(store: Store, query: RunsQuery, *, now: float, limit: int) -> RunsView:
    """One page of runs, newest first, and how many runs each status has under the
    same filters (but the status filter)."""
    args = query.list_args(now)
    problems = list(query.problems)
    try:
        page = await store.list_runs(
            **args, status=list(query.statuses) or None, limit=limit, cursor=query.cursor or None
        )
    except ConfigurationError as exc:  # a cursor or tag the store refuses
        return RunsView([], None, {}, True, (*problems, str(exc)))
    tally, counted_all = await counts(store, args)
    return RunsView(page.runs, page.cursor, tally, counted_all, tuple(problems))


async def counts(store: Store, args: dict[str, Any]) -> tuple[dict[str, int], bool]:
    """Status -> number of runs matching ``args``, and whether that is all of them.

    The store's own count if it has one (``count_runs(**args) -> {status: n}``);
    else the statuses of the newest :data:`COUNT_SAMPLE` matching runs, one page of
    ``list_runs`` (bounded time whatever the filters; exact when fewer runs match).
    """
    count_runs = getattr(store, "count_runs", None)
    if count_runs is not None:
        return dict(await count_runs(**args)), True
    page = await store.list_runs(**args, limit=COUNT_SAMPLE)
    found = Counter(run.status for run in page.runs)
    return {status: found.get(status, 0) for status in STATUSES}, page.cursor is None


# -- the run page --------------------------------------------------------------------------


@attrs.frozen
class NodeRow:
    """A node of the run's flow and what happened there."""

    id: str
    kind: str
    status: str  # done, running, waiting, failed, skipped, cancelled, unreached
    activations: int
    output: str  # one line, cut; "" if none
    error: str


@attrs.frozen
class WaitRow:
    name: str
    node: str
    timeout: str  # as the flow declares it; "" for none
    timer: str


@attrs.frozen
class TimerRow:
    id: str
    node: str
    purpose: str  # sleep, timeout, retry
    due_at: float | None  # None when the store keeps no history (it tells)


@attrs.frozen
class ChildRow:
    run_id: str
    node: str
    status: str
    flow: str


@attrs.frozen
class ErrorView:
    type: str
    message: str
    node: str
    attempt: str
    traceback: str


@attrs.frozen
class HistoryEntry:
    """One event of a run's history, as the page lists it."""

    at: float | None
    kind: str
    node: str
    detail: str


@attrs.frozen
class RunView:
    run_id: str
    flow: str
    digest: str
    status: str
    parent: str | None
    version: int
    graph: Markup | None
    graph_note: str  # why there is no graph, or that it is another version's
    nodes: list[NodeRow]
    inputs: Payload
    output: Payload | None
    error: ErrorView | None
    variables: Payload
    waits: list[WaitRow]
    timers: list[TimerRow]
    children: list[ChildRow]
    history: list[HistoryEntry] | None  # None: the store records none

    @property
    def finished(self) -> bool:
        return self.status in FINISHED_VALUES


async def run_page(
    store: Store, run_id: str, catalogue: Catalogue, *, full: str = "", operations: Any = None
) -> RunView | None:
    """Everything the run page shows about ``run_id``; None if the store has no such run.

    ``full`` names the payload to show whole (``inputs``, ``output``, ``variables``).
    """
    loaded = await store.load(run_id)
    if loaded is None:
        return None
    state, version = loaded
    sections = state.sections
    header = sections["header"]
    flow_id, digest = str(header.get("blueprint", "")), str(header.get("digest", ""))
    bp, exact = catalogue.blueprint(digest, flow_id)
    statuses = node_statuses({"sections": sections}, bp)
    graph, note = _graph_of(bp, exact, statuses, flow_id)
    events = await events_of(store, run_id)
    due = timer_dues(events or [])
    return RunView(
        run_id=run_id,
        flow=flow_id,
        digest=digest,
        status=state.status.value,
        parent=header.get("parent"),
        version=version,
        graph=graph,
        graph_note=note,
        nodes=_nodes(sections, bp, statuses),
        inputs=payload(header.get("inputs", {}), full=full == "inputs"),
        output=_output(header, full == "output") if state.status is RunStatus.COMPLETED else None,
        error=_error(header.get("error")),
        variables=payload(_variables(sections), full=full == "variables"),
        waits=_waits(sections, bp),
        timers=[
            TimerRow(tid, str(t.get("node", "")), str(t.get("purpose", "")), due.get(tid))
            for tid, t in sections["timers"].items()
        ],
        children=await _children(store, run_id, sections),
        history=history(events),
    )


async def events_of(source: Any, run_id: str) -> list[HistoryEvent] | None:
    """The run's history events, oldest first, from ``source`` (the operations API or
    the store); None if it keeps no history."""
    reader = getattr(source, "history", None)
    options = getattr(source, "history_options", None)
    if reader is None or (options is not None and not options.enabled):
        return None
    events: list[HistoryEvent] = await reader(run_id)
    return events


def history(events: list[HistoryEvent] | None) -> list[HistoryEntry] | None:
    """The events as the page lists them (None: the store records none)."""
    if events is None:
        return None
    return [
        HistoryEntry(event.at, event.kind, event.node_id or "", _detail(event)) for event in events
    ]


def _detail(event: HistoryEvent) -> str:
    parts = [] if event.attempt is None else [f"attempt {event.attempt}"]
    if event.worker:
        parts.append(f"on {event.worker}")
    if event.data:
        parts.append(short(event.data))
    return ", ".join(parts)


def _graph_of(
    bp: Blueprint | None, exact: bool, statuses: dict[str, str], flow_id: str
) -> tuple[Markup | None, str]:
    if bp is None:
        return None, (
            f"no graph: the console does not know flow {flow_id!r} (pass its module with "
            "--app, or flows= to flowkit.ui.app)"
        )
    note = (
        ""
        if exact
        else (
            f"the run follows another version of {flow_id!r} than the one the console "
            "knows: the graph below is the current version's"
        )
    )
    return _graph.svg(bp, statuses if exact else {}), note


def _nodes(
    sections: dict[str, dict[str, Any]], bp: Blueprint | None, statuses: dict[str, str]
) -> list[NodeRow]:
    """The flow's nodes in blueprint order (the run's own, in the order it reached them,
    when the graph is unknown), then any the run has that the blueprint lacks."""
    records = sections["nodes"]
    outputs = sections["outputs"]
    error = sections["header"].get("error") or {}
    kinds = {spec.id: spec.kind for spec in bp.nodes} if bp else {}
    order = list(kinds) + [n for n in records if n not in kinds]
    rows = []
    for node_id in order:
        record = records.get(node_id)
        rows.append(
            NodeRow(
                id=node_id,
                kind=kinds.get(node_id, ""),
                status=_graph.STATUS_CLASSES.get(statuses.get(node_id, ""), "unreached"),
                activations=int(record[_ACTIVATION_AT]) if record else 0,
                output=short(outputs[node_id]) if node_id in outputs else "",
                error=str(error.get("message", "")) if error.get("node") == node_id else "",
            )
        )
    return rows


def timeline(view: RunView) -> list[NodeRow]:
    """The nodes the run reached, in the order it first reached them (from its state)."""
    return [row for row in view.nodes if row.status != "unreached"]


def _output(header: dict[str, Any], full: bool) -> Payload:
    return payload(header.get("output"), full=full)


def _variables(sections: dict[str, dict[str, Any]]) -> dict[str, Any]:
    return {k: v for k, v in sections["context"].items() if not k.startswith("__")}


def _error(info: Any) -> ErrorView | None:
    if not info:
        return None
    return ErrorView(
        type=str(info.get("type", "")),
        message=str(info.get("message", "")),
        node=str(info.get("node") or ""),
        attempt=str(info.get("attempt") or ""),
        traceback=str(info.get("traceback") or ""),
    )


def _waits(sections: dict[str, dict[str, Any]], bp: Blueprint | None) -> list[WaitRow]:
    specs = {spec.id: spec for spec in bp.nodes} if bp else {}
    rows = []
    for name, wait in sections["waits"].items():
        node_id = str(wait.get("node", ""))
        spec = specs.get(node_id)
        timeout = spec.params.get("timeout") if spec else None
        shown = "" if timeout is None else _declared(timeout)
        rows.append(WaitRow(name, node_id, shown, str(wait.get("timer") or "")))
    return rows


def _declared(timeout: Any) -> str:
    try:
        return span(to_seconds(timeout))
    except (ConfigurationError, TypeError, ValueError):  # computed as the flow runs
        return str(timeout)


async def _children(
    store: Store, run_id: str, sections: dict[str, dict[str, Any]]
) -> list[ChildRow]:
    """The run's child runs from the run index (up to 1 000), with the node that started
    each one the run still waits for."""
    waiting = sections["children"]
    page = await store.list_runs(parent=run_id, limit=1000)
    rows = [
        ChildRow(run.run_id, str(waiting.get(run.run_id, {}).get("node", "")), run.status, run.flow)
        for run in page.runs
    ]
    listed = {row.run_id for row in rows}
    rows += [
        ChildRow(child_id, str(child.get("node", "")), "", "")
        for child_id, child in waiting.items()
        if child_id not in listed
    ]
    return rows

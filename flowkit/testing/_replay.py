"""``replay()``: run a recorded run's history again against the current code.

The history of a run (``store.history(run_id)``) holds every event its core was
fed (its start, node completions and failures with their outputs, signals,
timers, children finishing, cancellation) and what the core did in answer (the
nodes it scheduled with their arguments, the waits it entered, the sleeps and
children it started, how the run ended). Replay feeds the same events, in the
recorded order, to the core stepping the *current* blueprint, with every node's
recorded output standing in for the node (no node code runs), and compares each
answer with the recorded one. The first difference is the run's
:class:`Divergence`.

Events are fed in the recorded order rather than by the simulator's scheduler:
the order decides which racer won, whether a signal came before its wait, and
which timer fired first, so only that order reproduces the run.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any, NoReturn

import anyio
import attrs

from .._errors import ConfigurationError, FlowkitError
from ..core import _protocol as p
from ..core._machine import handle_event, start_run
from ..core._state import RunState
from ..shell._history import _payload_json
from ..shell._target import Target, resolve

if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence

    from ..stores._history import HistoryEvent

_EFFECTS = frozenset(
    {"node.scheduled", "wait.entered", "timer.set", "child.started"}
    | {"run.completed", "run.failed", "run.cancelled"}
)
_UNRECORDED = (
    "node {node!r} ran before flowkit recorded node outputs in the history: only runs "
    "recorded since can be replayed"
)
_END = {"run.completed": "completed", "run.failed": "failed", "run.cancelled": "cancelled"}


@attrs.frozen
class Divergence:
    """Where the current code first does something else than the recorded run.

    ``node_id`` is the node the current code went to (or, when it does nothing
    there, the node the recorded run went to; ``None`` for the run's output);
    ``recorded`` and ``new`` say what each did: ``"node 'charge'"``,
    ``"wait 'approval'"``, ``"sleep 'nap'"``, ``"subflow 'ship'"``, ``"end
    (completed)"``, ``"nothing"``, or the arguments or outputs that differ.
    """

    run_id: str
    node_id: str | None
    what: str  # "next step", "arguments" or "output"
    recorded: Any
    new: Any

    def __str__(self) -> str:
        where = f" at {self.node_id!r}" if self.node_id else ""
        return (
            f"run {self.run_id!r} diverges{where} ({self.what}): recorded {self.recorded!r}, "
            f"current code {self.new!r}"
        )


@attrs.frozen
class ReplayResult:
    """The outcome of replaying one run: ``ok``, a ``divergence``, or ``incomplete``
    (why its history cannot be replayed: a payload cut at the store's bound, a run
    retried, a child run whose result is not recorded...). ``steps`` counts the
    recorded events compared."""

    run_id: str
    divergence: Divergence | None = None
    incomplete: str | None = None
    steps: int = 0

    @property
    def ok(self) -> bool:
        """Whether the current code does exactly what the recorded run did."""
        return self.divergence is None and self.incomplete is None


class _Incomplete(Exception):
    """The history lacks what replay needs (the message says what)."""


class _Diverged(Exception):
    def __init__(self, divergence: Divergence) -> None:
        super().__init__(str(divergence))
        self.divergence = divergence


class Replayer:
    """Replays one run's history against ``target``; children's results come from
    ``children`` (child run id -> its history)."""

    def __init__(
        self,
        target: Target,
        events: Sequence[HistoryEvent],
        children: Mapping[str, Sequence[HistoryEvent]],
        run_id: str,
    ) -> None:
        self.target = target
        self.events = events
        self.children = children
        self.state = RunState(run_id)
        self.produced: list[tuple[str, str | None, Any]] = []  # (step, node, detail)
        self.steps = 0

    def run(self) -> ReplayResult:
        run_id = self.state.run_id
        try:
            for event in self.events:
                self.take(event)
            if self.produced:
                step, node_id, detail = self.produced[0]
                self.diverge(node_id, "next step", "nothing", _describe(step, node_id, detail))
        except _Incomplete as exc:
            return ReplayResult(run_id, incomplete=str(exc), steps=self.steps)
        except _Diverged as exc:
            return ReplayResult(run_id, divergence=exc.divergence, steps=self.steps)
        return ReplayResult(run_id, steps=self.steps)

    # -- the recorded events -------------------------------------------------------------
    def take(self, event: HistoryEvent) -> None:
        if event.kind == "run.started":
            self.start(event)
        elif event.kind == "run.retried":
            raise _Incomplete("the run was retried: replay covers runs that ran once")
        elif event.kind in _EFFECTS:
            self.expect(event)
        else:
            fed = self.fed(event)
            if fed is not None:
                self.feed(fed)

    def start(self, event: HistoryEvent) -> None:
        data = event.data
        inputs = data.get("inputs")
        if _cut(inputs):
            raise _Incomplete("the run's inputs were cut at the store's history_payload")
        patches = data.get("patches") or []
        program = self.target.program
        commands = start_run(program, self.state, dict(inputs or {}), patches=patches)
        self.produce(commands)

    def fed(self, event: HistoryEvent) -> p.Event | None:
        """The event the recorded core was fed, if ``event`` records one."""
        data = event.data
        if event.kind == "node.completed":
            output = data.get("output")
            if "dispatch_id" not in data:
                raise _Incomplete(_UNRECORDED.format(node=event.node_id))
            if _cut(output):
                raise _Incomplete(f"the output of node {event.node_id!r} was cut")
            fallback = bool(data.get("fallback"))
            return p.NodeCompleted(
                data["dispatch_id"], output, data.get("action"), fallback=fallback
            )
        if event.kind in ("node.failed", "node.timed_out"):
            if "dispatch_id" not in data:
                raise _Incomplete(_UNRECORDED.format(node=event.node_id))
            if _cut(data.get("error")):
                raise _Incomplete(f"the error of node {event.node_id!r} was cut")
            return p.NodeFailed(data["dispatch_id"], data["error"], data.get("retryable", True))
        if event.kind == "signal.received":
            if _cut(data.get("data")):
                raise _Incomplete(f"signal {data.get('name')!r} is not recorded whole")
            return p.SignalReceived(
                data["name"], data.get("data"), data.get("action"), data.get("delivery_id")
            )
        if event.kind == "node.deferred":  # (the token's nonce decides nothing)
            return p.NodeDeferred(data["dispatch_id"], "replayed", data.get("timeout"))
        if event.kind == "node.heartbeat":  # details decide nothing: cut ones go as None
            details = data.get("details")
            return p.NodeHeartbeat(data["dispatch_id"], None if _cut(details) else details)
        if event.kind == "timer.fired":
            return p.TimerFired(data["timer_id"])
        if event.kind == "child.finished":
            return self.child_finished(data["child_run_id"], data["status"])
        if event.kind == "run.cancel_requested":
            return p.CancelRequested(data.get("reason") or "cancelled")
        return None

    def child_finished(self, child_run_id: str, status: str) -> p.ChildFinished:
        history = self.children.get(child_run_id)
        end = next((e for e in reversed(history or ()) if e.kind in _END), None)
        if end is None:
            raise _Incomplete(f"the result of child run {child_run_id!r} is not recorded")
        value = end.data.get("output" if status == "completed" else "error")
        if _cut(value):
            raise _Incomplete(f"the result of child run {child_run_id!r} was cut")
        if status == "completed":
            return p.ChildFinished(child_run_id, status, value, None)
        return p.ChildFinished(child_run_id, status, None, value)

    def feed(self, event: p.Event) -> None:
        try:
            commands = handle_event(self.target.program, self.state, event)
        except FlowkitError as exc:
            self.diverge(None, "next step", f"{type(event).__name__}", f"refused: {exc}")
        self.produce(commands)

    # -- comparing ---------------------------------------------------------------------
    def produce(self, commands: list[p.Command]) -> None:
        for command in commands:
            effect = _effect(command)
            if effect is not None:
                self.produced.append(effect)

    def expect(self, event: HistoryEvent) -> None:
        recorded = _recorded(event)
        if recorded is None:
            return  # a retry or timeout timer: derived from the steps compared
        self.steps += 1
        step, node_id, detail = recorded
        if not self.produced:
            self.diverge(node_id, "next step", _describe(step, node_id, detail), "nothing")
        new_step, new_node, new_detail = self.produced.pop(0)
        if (step, node_id) != (new_step, new_node) or (step == "end" and detail != new_detail):
            self.diverge(
                new_node,
                "next step",
                _describe(step, node_id, detail),
                _describe(new_step, new_node, new_detail),
            )
        self.compare_detail(step, node_id, detail, new_detail)

    def compare_detail(self, step: str, node_id: str | None, detail: Any, new: Any) -> None:
        if step == "node" and not _cut(detail) and _plain(new) != detail:
            self.diverge(node_id, "arguments", detail, _plain(new))
        if step == "output" and not _cut(detail) and _plain(new) != detail:
            self.diverge(None, "output", detail, _plain(new))

    def diverge(self, node_id: str | None, what: str, recorded: Any, new: Any) -> NoReturn:
        raise _Diverged(Divergence(self.state.run_id, node_id, what, recorded, new))


def _effect(command: p.Command) -> tuple[str, str | None, Any] | None:
    """What a command of the current code did, as replay compares it."""
    kind = type(command)
    if kind is p.ExecuteNode:
        assert isinstance(command, p.ExecuteNode)
        return "node", command.node_id, {"args": command.args, "kwargs": command.kwargs}
    if kind is p.AwaitSignal:
        assert isinstance(command, p.AwaitSignal)
        return "wait", command.node_id, command.name
    if kind is p.StartTimer:
        assert isinstance(command, p.StartTimer)
        return ("sleep", command.node_id, None) if command.purpose == "sleep" else None
    if kind is p.StartChild:
        assert isinstance(command, p.StartChild)
        return "subflow", command.node_id, command.blueprint_id
    if kind is p.FinishRun:
        assert isinstance(command, p.FinishRun)
        if command.status == "completed":
            return "output", None, command.output
        return "end", None, command.status
    return None


def _recorded(event: HistoryEvent) -> tuple[str, str | None, Any] | None:
    """What the recorded core did, as :func:`_effect` says it."""
    data = event.data
    if event.kind == "node.scheduled":
        return "node", event.node_id, data.get("input")
    if event.kind == "wait.entered":
        return "wait", event.node_id, data.get("name")
    if event.kind == "timer.set":
        return ("sleep", event.node_id, None) if data.get("purpose") == "sleep" else None
    if event.kind == "child.started":
        return "subflow", event.node_id, data.get("flow")
    if event.kind == "run.completed":
        return "output", None, data.get("output")
    return "end", None, _END[event.kind]


def _describe(step: str, node_id: str | None, detail: Any) -> str:
    if step == "output":
        return "end (completed)"
    if step == "end":
        return f"end ({detail})"
    return f"{step} {node_id!r}"


def _plain(value: Any) -> Any:
    """``value`` as the history keeps it (JSON data)."""
    return json.loads(_payload_json(value))


def _cut(value: Any) -> bool:
    """Whether a recorded payload was cut at the store's bound."""
    return isinstance(value, dict) and value.get("truncated") is True and "preview" in value


# -- the public functions ---------------------------------------------------------------
async def replay_async(
    history_or_run_id: str | Sequence[HistoryEvent],
    flow: Any,
    *,
    store: Any = None,
    registry: Mapping[str, Any] | None = None,
) -> ReplayResult:
    """:func:`replay` for async code."""
    target = flow if isinstance(flow, Target) else resolve(flow, registry)
    if isinstance(history_or_run_id, str):
        if store is None:
            raise ConfigurationError(
                f"replay({history_or_run_id!r}, ...) needs store=...: the store that holds "
                "the run's history (or pass the history itself)"
            )
        events = await store.history(history_or_run_id)
    else:
        events = list(history_or_run_id)
    run_id = _run_id(history_or_run_id, events)
    _check_flow(events, target, run_id)
    children: dict[str, Sequence[HistoryEvent]] = {}
    if store is not None:
        for event in events:
            if event.kind == "child.started":
                child = str(event.data.get("child_run_id"))
                children[child] = await store.history(child)
    return Replayer(target, events, children, run_id).run()


def replay(
    history_or_run_id: str | Sequence[HistoryEvent],
    flow: Any,
    *,
    store: Any = None,
    registry: Mapping[str, Any] | None = None,
) -> ReplayResult:
    """Replay a recorded run against ``flow`` as the code defines it now.

    ``history_or_run_id`` is the run's history (``await store.history(run_id)``)
    or its id, read from ``store``. Every node's recorded output stands in for
    the node, signals and timers arrive in the recorded order, and each step of
    the current code is compared with the recorded one: the first difference (a
    different next node, other arguments to a node, a wait that no longer
    exists, another output) is the result's ``divergence``.

    >>> # result = replay(run_id, checkout, store=SQLiteStore("runs.db"))
    >>> # result.ok or print(result.divergence)
    """
    return anyio.run(lambda: replay_async(history_or_run_id, flow, store=store, registry=registry))


def _run_id(history_or_run_id: str | Sequence[HistoryEvent], events: Sequence[Any]) -> str:
    if isinstance(history_or_run_id, str):
        if not events:
            raise ConfigurationError(
                f"run {history_or_run_id!r} has no history in the store: it does not exist, "
                "was purged, or the store keeps no history (history=False)"
            )
        return history_or_run_id
    if not events:
        raise ConfigurationError("replay() was given an empty history: pass store.history(run_id)")
    return str(getattr(events[0], "run_id", "") or "replayed")


def _check_flow(events: Sequence[HistoryEvent], target: Target, run_id: str) -> None:
    started = next((e for e in events if e.kind == "run.started"), None)
    flow_id = started.data.get("flow") if started is not None else None
    if flow_id is not None and flow_id != target.blueprint.id:
        raise ConfigurationError(
            f"run {run_id!r} is a run of flow {flow_id!r}, not of {target.blueprint.id!r}: "
            "pass the flow that started it"
        )

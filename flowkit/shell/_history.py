"""Run history: the events a transition writes, derived in one place for every shell.

A shell commits each transition of a run (see ``_durable``): the event it fed the
core and the commands the core answered. :func:`transition_events` turns those
into history entries; :func:`start_events` does the same for a run's creation. The
shell takes the time (``flowkit._clock``: virtual under the simulator) and says
who ran a node (:class:`Origin`); the core stays free of clocks. The store writes
the entries in the same commit as the transition (see ``flowkit.stores._history``).

Payloads (inputs, node arguments and outputs, signal data, errors) are bounded: an event whose JSON
would be longer than the store's ``history_payload`` keeps, instead of the payload,
``{"truncated": true, "size": <characters>, "preview": <the JSON's start>}``.
"""

from __future__ import annotations

import json
from contextlib import contextmanager
from contextvars import ContextVar
from typing import TYPE_CHECKING, Any

import attrs

from .._serde import SerializationError, to_data
from ..core import _protocol as p
from ..stores._history import HistoryEntry

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator, Sequence

    from ..core._state import RunState
    from ..stores._history import HistoryOptions

_SIGNAL_SOURCE: ContextVar[str] = ContextVar("flowkit_signal_source", default="api")
_FINISHED = {"completed": "run.completed", "failed": "run.failed", "cancelled": "run.cancelled"}
_MARKER_ROOM = 64  # what a truncation marker takes besides its preview


@attrs.frozen
class Origin:
    """Where and when a node execution ran, for the events of the transition it causes."""

    worker: str | None = None
    started_at: float | None = None
    finished_at: float | None = None


@contextmanager
def signal_source(source: str) -> Iterator[None]:
    """Signals delivered in the block are recorded as coming from ``source`` (the
    webhook app says ``"webhook"``; the default is ``"api"``)."""
    token = _SIGNAL_SOURCE.set(source)
    try:
        yield
    finally:
        _SIGNAL_SOURCE.reset(token)


def options_of(store: Any) -> HistoryOptions | None:
    """The store's history options if it keeps history, else None (a store that
    predates history, or has it off, is given no events)."""
    options: HistoryOptions | None = getattr(store, "history_options", None)
    return options if options is not None and options.enabled else None


def start_history(
    store: Any, state: RunState, commands: Sequence[p.Command], at: float
) -> dict[str, Any]:
    """The ``history=`` keyword of a ``create_run`` on ``store`` (none if it keeps none)."""
    options = options_of(store)
    if options is None:
        return {}
    return {"history": start_events(state, commands, at, options.max_payload)}


def commit_history(
    store: Any, state: RunState, commands: Sequence[p.Command], at: float
) -> dict[str, Any]:
    """The ``history=`` keyword of a commit on ``store`` made without an event (a run
    failed in the store directly): what ``commands`` did."""
    options = options_of(store)
    if options is None:
        return {}
    return {"history": transition_events(None, commands, state, at, None, options.max_payload)}


def start_events(
    state: RunState, commands: Sequence[p.Command], at: float, max_payload: int
) -> list[HistoryEntry]:
    """The events of a run's creation: ``run.started`` (its flow, inputs and parent),
    then what its first commands did."""
    header = state.header
    fields: dict[str, Any] = {"flow": header.get("blueprint")}
    if header.get("parent") is not None:
        fields["parent"] = header["parent"]
    if header.get("patches"):
        fields["patches"] = header["patches"]
    started = _entry(
        at, "run.started", None, None, None, fields, max_payload, "inputs", header.get("inputs")
    )
    return [started, *transition_events(None, commands, state, at, None, max_payload)]


def transition_events(
    event: p.Event | None,
    commands: Sequence[p.Command],
    state: RunState,
    at: float,
    origin: Origin | None,
    max_payload: int,
) -> list[HistoryEntry]:
    """The events of one committed transition: what ``event`` settled, then what each
    command did, in order. ``state`` is the run after the transition."""
    recorder = _Recorder(at, origin, max_payload, state)
    if event is not None:
        recorder.on_event(event, commands)
    for command in commands:
        recorder.command(command, event)
    return recorder.entries


class _Recorder:
    """Builds the entries of one transition."""

    __slots__ = ("at", "dues", "entries", "max_payload", "origin", "state")

    def __init__(self, at: float, origin: Origin | None, max_payload: int, state: RunState) -> None:
        self.at = at
        self.origin = origin
        self.max_payload = max_payload
        self.state = state
        self.entries: list[HistoryEntry] = []
        self.dues: dict[str, float] = {}  # timer id -> due time, of timers set here

    def add(
        self,
        kind: str,
        node_id: str | None = None,
        attempt: int | None = None,
        fields: dict[str, Any] | None = None,
        payload: tuple[str, Any] | None = None,
        *,
        at: float | None = None,
        worker: str | None = None,
    ) -> None:
        key, value = payload or ("", None)
        self.entries.append(
            _entry(
                self.at if at is None else at,
                kind,
                node_id,
                attempt,
                worker,
                fields or {},
                self.max_payload,
                key,
                value,
            )
        )

    # -- the event ---------------------------------------------------------------------
    def on_event(self, event: p.Event, commands: Sequence[p.Command]) -> None:
        kind = type(event)
        if kind is p.NodeCompleted or kind is p.NodeFailed:
            self.node_settled(event, commands)  # type: ignore[arg-type]
        elif kind is p.NodeDeferred:
            assert isinstance(event, p.NodeDeferred)
            self.node_deferred(event, commands)
        elif kind is p.NodeHeartbeat:
            assert isinstance(event, p.NodeHeartbeat)
            beat_node, attempt = _node_of_dispatch(event.dispatch_id)
            beat = {"dispatch_id": event.dispatch_id}
            self.add("node.heartbeat", beat_node, attempt, beat, ("details", event.details))
        elif kind is p.ChildFinished:
            assert isinstance(event, p.ChildFinished)
            node_id = _node_of_child(event.child_run_id)
            fields = {"child_run_id": event.child_run_id, "status": event.status}
            self.add("child.finished", node_id, fields=fields)
        elif kind is p.CancelRequested:
            assert isinstance(event, p.CancelRequested)
            self.add("run.cancel_requested", fields={"reason": event.reason})
        elif kind is p.RetryRequested:
            retried = [c for c in commands if type(c) is p.Note and c.type == "workflow:retry"]
            for note in retried:  # none when the core refused it
                assert isinstance(note, p.Note)
                self.add("run.retried", note.node_id, fields=dict(note.data or {}))

    def node_settled(
        self, event: p.NodeCompleted | p.NodeFailed, commands: Sequence[p.Command]
    ) -> None:
        node_id, attempt = _node_of_dispatch(event.dispatch_id)
        origin = self.origin
        worker = origin.worker if origin is not None else None
        started = origin.started_at if origin is not None else None
        ended = origin.finished_at if origin is not None and origin.finished_at else self.at
        entries = self.entries
        if started is not None:  # the common events are written out by hand: every commit
            data = f'{{"dispatch_id":{_STRING(event.dispatch_id)}}}'
            entries.append(HistoryEntry(started, "node.started", node_id, attempt, worker, data))
        duration = None if started is None else max(0.0, ended - started)
        if isinstance(event, p.NodeCompleted):
            fields: dict[str, Any] = {"dispatch_id": event.dispatch_id, "duration": duration}
            if event.fallback:
                fields["fallback"] = True
            if event.action is not None:
                fields["action"] = event.action
            output = _json_of(event.output)
            entries.append(
                _entry_json(
                    ended, "node.completed", node_id, attempt, worker, fields,
                    self.max_payload, "output", output,
                )
            )  # fmt: skip
            return
        retry = any(
            type(c) is p.Note and c.type == "node:retry" and c.node_id == node_id for c in commands
        )
        failed: dict[str, Any] = {
            "dispatch_id": event.dispatch_id,
            "duration": duration,
            "retry": retry,
            "retryable": event.retryable,
        }
        kind = "node.timed_out" if _timed_out(node_id, event.error) else "node.failed"
        self.add(kind, node_id, attempt, failed, ("error", event.error), at=ended, worker=worker)

    def node_deferred(self, event: p.NodeDeferred, commands: Sequence[p.Command]) -> None:
        """A node ran and returned pending (recorded only if the core kept it deferred)."""
        if not any(type(c) is p.Note and c.type == "node:deferred" for c in commands):
            return  # completed before it reported, or a duplicate
        node_id, attempt = _node_of_dispatch(event.dispatch_id)
        origin = self.origin
        worker = origin.worker if origin is not None else None
        if origin is not None:
            data = {"dispatch_id": event.dispatch_id}
            self.add("node.started", node_id, attempt, data, at=origin.started_at, worker=worker)
        fields = {"dispatch_id": event.dispatch_id, "timeout": event.timeout}
        self.add("node.deferred", node_id, attempt, fields, worker=worker)

    # -- the commands ------------------------------------------------------------------
    def command(self, command: p.Command, event: p.Event | None) -> None:
        handler = _COMMANDS.get(type(command))
        if handler is not None:
            handler(self, command, event)

    def execute(self, command: p.ExecuteNode, event: p.Event | None) -> None:
        fields: dict[str, Any] = {"dispatch_id": command.dispatch_id}
        if command.fallback:
            fields["fallback"] = True
        arguments = _arguments_json(command.args, command.kwargs)
        self.entries.append(
            _entry_json(
                self.at, "node.scheduled", command.node_id, command.attempt, None, fields,
                self.max_payload, "input", arguments,
            )
        )  # fmt: skip

    def cancel_node(self, command: p.CancelNode, event: p.Event | None) -> None:
        node_id, attempt = _node_of_dispatch(command.dispatch_id)
        self.add("node.cancelled", node_id, attempt, {"dispatch_id": command.dispatch_id})

    def start_timer(self, command: p.StartTimer, event: p.Event | None) -> None:
        due = self.at + command.delay
        self.dues[command.timer_id] = due
        fields = {"timer_id": command.timer_id, "purpose": command.purpose, "due_at": due}
        self.add("timer.set", command.node_id or None, fields=fields)

    def cancel_timer(self, command: p.CancelTimer, event: p.Event | None) -> None:
        self.add(
            "timer.cancelled",
            _node_of_timer(command.timer_id),
            fields={"timer_id": command.timer_id},
        )

    def await_signal(self, command: p.AwaitSignal, event: p.Event | None) -> None:
        wait = self.state.sections["waits"].get(command.name) or {}
        timer = wait.get("timer")
        fields = {"name": command.name, "timeout_at": self.dues.get(timer) if timer else None}
        self.add("wait.entered", command.node_id, fields=fields)

    def start_child(self, command: p.StartChild, event: p.Event | None) -> None:
        fields = {"child_run_id": command.child_run_id, "flow": command.blueprint_id}
        self.add("child.started", command.node_id, fields=fields)

    def cancel_child(self, command: p.CancelChild, event: p.Event | None) -> None:
        node_id = _node_of_child(command.child_run_id)
        self.add("child.cancelled", node_id, fields={"child_run_id": command.child_run_id})

    def continue_as_new(self, command: p.ContinueAsNew, event: p.Event | None) -> None:
        fields = {"run_id": command.run_id, "flow": command.blueprint_id}
        self.add("run.continued", None, None, fields, ("inputs", command.inputs))

    def finish_run(self, command: p.FinishRun, event: p.Event | None) -> None:
        kind = _FINISHED.get(command.status, f"run.{command.status}")
        if command.status == "failed":
            self.add(kind, None, None, {}, ("error", command.error))
        elif command.status == "completed":
            self.add(kind, None, None, {}, ("output", command.output))
        else:
            self.add(kind, None, None, {"reason": (command.error or {}).get("message")})

    def note(self, command: p.Note, event: p.Event | None) -> None:
        if command.type == "node:retry":
            self.add("node.retried", command.node_id, command.attempt, dict(command.data or {}))
        elif command.type == "timer:fire":
            self.add("timer.fired", command.node_id, fields=dict(command.data or {}))
        elif command.type == "node:fallback":
            self.add("node.fallback", command.node_id, command.attempt)
        elif command.type == "signal:receive" and isinstance(event, p.SignalReceived):
            self.signal(command, event)

    def signal(self, command: p.Note, event: p.SignalReceived) -> None:
        fields: dict[str, Any] = {"name": event.name, "source": _SIGNAL_SOURCE.get()}
        if event.delivery_id is not None:
            fields["delivery_id"] = event.delivery_id
        if event.action is not None:
            fields["action"] = event.action
        if (command.data or {}).get("buffered"):
            fields["buffered"] = True
        self.add("signal.received", command.node_id, fields=fields, payload=("data", event.data))


_COMMANDS: dict[type, Callable[[_Recorder, Any, p.Event | None], None]] = {
    p.ExecuteNode: _Recorder.execute,
    p.CancelNode: _Recorder.cancel_node,
    p.StartTimer: _Recorder.start_timer,
    p.CancelTimer: _Recorder.cancel_timer,
    p.AwaitSignal: _Recorder.await_signal,
    p.StartChild: _Recorder.start_child,
    p.CancelChild: _Recorder.cancel_child,
    p.FinishRun: _Recorder.finish_run,
    p.ContinueAsNew: _Recorder.continue_as_new,
    p.Note: _Recorder.note,
}


# -- encoding ------------------------------------------------------------------------------
def _entry(
    at: float,
    kind: str,
    node_id: str | None,
    attempt: int | None,
    worker: str | None,
    fields: dict[str, Any],
    max_payload: int,
    key: str,
    value: Any,
) -> HistoryEntry:
    """One entry; ``fields`` are small, ``value`` (under ``key``, if any) is bounded."""
    if not key:
        return HistoryEntry(at, kind, node_id, attempt, worker, _dumps(fields))
    return _entry_json(
        at, kind, node_id, attempt, worker, fields, max_payload, key, _payload_json(value)
    )


def _entry_json(
    at: float,
    kind: str,
    node_id: str | None,
    attempt: int | None,
    worker: str | None,
    fields: dict[str, Any],
    max_payload: int,
    key: str,
    payload: str,
) -> HistoryEntry:
    """:func:`_entry` with the payload's JSON given."""
    if len(payload) > max_payload:
        marker = {
            "truncated": True,
            "size": len(payload),
            "preview": _preview(payload, max_payload),
        }
        fields = {**fields, key: marker}
        return HistoryEntry(at, kind, node_id, attempt, worker, _dumps(fields))
    text = _dumps(fields)
    joined = f"{text[:-1]}{',' if fields else ''}{_dumps(key)}:{payload}}}"
    return HistoryEntry(at, kind, node_id, attempt, worker, joined)


def _preview(payload: str, max_payload: int) -> str:
    """The start of ``payload`` whose JSON string (quotes escaped) fits the bound."""
    budget = max(16, max_payload - _MARKER_ROOM)
    preview = payload[:budget]
    while len(_dumps(preview)) > budget and preview:
        preview = preview[: len(preview) * budget // len(_dumps(preview)) - 1]
    return preview


_ENCODER = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False)
_STRING: Callable[[str], str] = getattr(json.encoder, "c_encode_basestring", None) or (
    json.encoder.py_encode_basestring
)
_LITERALS = {True: "true", False: "false"}


def _dumps(value: Any) -> str:
    """JSON text of ``value``: a flat dict of strings and numbers (every event's small
    fields) by hand, as this runs for every event of every commit; the rest by json."""
    if type(value) is not dict:
        return _ENCODER.encode(value)
    parts = []
    for key, item in value.items():
        kind = type(item)
        if kind is str:
            text = _STRING(item)
        elif kind is int or (kind is float and item - item == 0):  # finite
            text = repr(item)
        elif kind is bool:
            text = _LITERALS[item]
        elif item is None:
            text = "null"
        else:
            text = _ENCODER.encode(item)
        parts.append(f"{_STRING(key)}:{text}")
    return "{" + ",".join(parts) + "}"


_PLAIN = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False, allow_nan=False)


def _scalar_json(value: Any) -> str | None:
    """JSON of a string, finite number, bool or None, by hand; None for anything else."""
    kind = type(value)
    if kind is str:
        return _STRING(value)
    if kind is int or (kind is float and value - value == 0):
        return repr(value)
    if kind is bool:
        return _LITERALS[value]
    return "null" if value is None else None


def _json_of(value: Any) -> str:
    """A payload's JSON: the common scalar by hand (every node's output), else encoded."""
    text = _scalar_json(value)
    return _payload_json(value) if text is None else text


def _arguments_json(args: tuple[Any, ...], kwargs: dict[str, Any]) -> str:
    """A node's arguments as ``{"args": [...], "kwargs": {...}}`` (one scalar by hand)."""
    if not kwargs and len(args) == 1:
        one = _scalar_json(args[0])
        if one is not None:
            return f'{{"args":[{one}],"kwargs":{{}}}}'
    return _payload_json({"args": args, "kwargs": kwargs})


def _payload_json(value: Any) -> str:
    """``value`` as JSON (its ``repr`` as a JSON string if it is not serialisable).

    Plain data, what node outputs and arguments are in a shell with a store, is
    encoded as it is (by the C encoder: this runs for every node of every run);
    anything else is converted first."""
    try:
        return _PLAIN.encode(value)
    except (ValueError, TypeError, RecursionError):
        pass
    try:
        return _dumps(to_data(value))
    except (SerializationError, ValueError, TypeError, RecursionError):
        return _dumps(repr(value))


# -- ids the core makes --------------------------------------------------------------------
def _node_of_dispatch(dispatch_id: str) -> tuple[str, int | None]:
    """The node and attempt of a dispatch id ``{node}@{activation}[item].{attempt}``
    (``~{round}`` after it in a retried run)."""
    node_id, _, rest = dispatch_id.rpartition("@")
    attempt = rest.partition("~")[0].rpartition(".")[2]
    return (node_id or dispatch_id), (int(attempt) if attempt.isdigit() else None)


def _node_of_timer(timer_id: str) -> str | None:
    """The node of a timer id ``{purpose}:{node}@{activation}...``."""
    _, colon, rest = timer_id.partition(":")
    node_id = rest.rpartition("@")[0]
    return node_id if colon and node_id else None


def _node_of_child(child_run_id: str) -> str | None:
    """The node of a child run id ``{parent run}/{node}@{activation}`` (None if the
    id is not of that shape)."""
    tail = child_run_id.rpartition("/")[2]
    node_id = tail.rpartition("@")[0]
    return node_id or None


def _timed_out(node_id: str, error: dict[str, Any]) -> bool:
    """Whether a node failed by running past its own timeout (see ``_execute``)."""
    return error.get("type") == "builtins.TimeoutError" and str(
        error.get("message", "")
    ).startswith(f"node {node_id!r} timed out after")

"""The deterministic core: (run state, event) -> commands.

Sans-IO, like h11: nothing here awaits, sleeps, reads a clock or touches I/O.
Every shell (in-memory runtime, distributed worker, simulator) feeds events in
and carries the returned commands out, so joins, routing, loops, batches,
retries, fallbacks and poison pills are decided once, here.

Join semantics: a node with ``join="all"`` runs once every forward predecessor
has settled (completed or been skipped) and at least one edge into it was
taken; if none was, it is skipped and the skip flows on. ``join="any"`` runs on
the first taken edge (once: later arrivals are ignored, and in-flight
predecessors that exist only for decided races are cancelled; a predecessor
another node needs runs on). ``join="pass"`` (compiled flows) runs on every
taken arrival.
Back edges (into loops) always re-enter directly.
"""

from __future__ import annotations

from collections import deque
from typing import TYPE_CHECKING, Any

from .._errors import ChildFailed, DuplicateDelivery, FlowkitError, WaitTimeout, describe
from . import _protocol as p
from ._action import Action, split_action
from ._admission import QUEUED, AdmissionSteps
from ._continue import CONTINUING, ContinueSteps
from ._deferral import COMPLETION, DeferralSteps, deferred
from ._policy import Policy
from ._priority import DEFAULT_PRIORITY, check_priority
from ._program import Program, wait_name
from ._retry import RetrySteps
from ._state import RunState, RunStatus
from ._step_nodes import NodeSteps

if TYPE_CHECKING:
    from collections.abc import Iterable, Mapping

CANCELLED = "flowkit._errors.Cancelled"
_VALUES = {status: status.value for status in RunStatus}
WORKFLOW_FAILED = "flowkit._errors.WorkflowFailed"
DEBOUNCE = "debounce"  # the timer (and header key) of a start that waits out its debounce

# node record layout: [activation, arrived, taken, fired, status]; an ``any`` join's
# ``fired`` holds the id of the predecessor that won its race (0 while undecided)
_ACT, _ARRIVED, _TAKEN, _FIRED, _STATUS = range(5)


def start_run(
    program: Program,
    state: RunState,
    inputs: dict[str, Any],
    *,
    parent: str | None = None,
    traceparent: str | None = None,
    note_completions: bool = False,
    signal: p.SignalReceived | None = None,
    priority: int = DEFAULT_PRIORITY,
    debounce: float | None = None,
    patches: Iterable[str] | None = None,
    extra: Mapping[str, Any] | None = None,
) -> list[p.Command]:
    """Initialise ``state`` for a new run and return the first commands.

    ``traceparent`` (W3C trace context, supplied by the shell) is kept in the
    run's header so every node, on any worker, continues the same trace. With
    ``note_completions`` every completed node is noted (``node:complete``).
    ``signal`` is received before the first node fires (signal-with-start): it is
    buffered, with its delivery id, so the first wait of its name takes it. With
    ``debounce`` (seconds) the run begins only once a timer of that delay fires; a
    :class:`~flowkit.core._protocol.StartDebounced` before then sets it again.
    The run records the patch ids its blueprint knows (``patches`` overrides
    them: a run as of before some patch): ``flow.patched`` branches read them.
    ``priority`` (0-9) is kept in the header when it is not the default. ``extra``
    entries go into the header as they are (a continued run's link to the one before).
    """
    header = state.header
    state.put("header", "status", RunStatus.RUNNING.value)
    state.put("header", "blueprint", program.blueprint.id)
    state.put("header", "digest", program.blueprint.digest)
    state.put("header", "inputs", dict(inputs))
    known = list(program.patches) if patches is None else sorted(patches)
    if known:
        state.put("header", "patches", known)
    if parent is not None:
        state.put("header", "parent", parent)
    if traceparent is not None:
        state.put("header", "traceparent", traceparent)
    if check_priority(priority) != DEFAULT_PRIORITY:
        state.put("header", "priority", priority)
    for key, value in (extra or {}).items():
        state.put("header", key, value)
    if program.blueprint.metadata.get("compiled"):
        for name, value in inputs.items():  # a compiled flow's parameters are its variables
            state.put("context", name, value)
    step = Step(program, state, note_completions)
    if signal is not None:
        step.on_signal(signal)  # no wait exists yet: buffered
    if debounce is not None:
        step.debounce(debounce)
    elif step.admitted("begin"):  # a limited flow's run may queue for a slot first
        step.begin()
    step.drain()
    step.settle()
    del header
    return step.commands


def handle_event(
    program: Program, state: RunState, event: p.Event, *, note_completions: bool = False
) -> list[p.Command]:
    """Apply one event to ``state`` and return the commands it calls for.

    Stale or duplicate events (a dispatch already recorded, a timer already
    fired, anything after the run finished but a retry) change nothing.
    """
    if state.finished and type(event) is not p.RetryRequested:
        return []
    if type(event) is p.NodeCompleted and not note_completions:
        commands = completion_shortcut(program, state, event)
        if commands is not None:
            return commands
    return full_step(program, state, event, note_completions=note_completions)


def full_step(
    program: Program, state: RunState, event: p.Event, *, note_completions: bool = False
) -> list[p.Command]:
    """:func:`handle_event` of an unfinished run, every event through the whole ``Step``."""
    step = Step(program, state, note_completions)
    step.on_event(event)
    step.drain()
    step.settle()
    return step.commands


def completion_shortcut(
    program: Program, state: RunState, event: p.NodeCompleted
) -> list[p.Command] | None:
    """What :func:`full_step` does for the completion of a call node that leads straight
    to its next call nodes (``Program.chained``) or into an ``all`` join still waiting for
    others (``Program.joining``), in a few lines; None for any other case.

    Taken only when the step can do nothing else: the dispatch is open and running (no
    completion timeout), nothing written, no action, no batch item, the run running and
    not queued. The state changes (in the same order) and the commands are the same.
    """
    sections = state.sections
    dispatches = sections["dispatches"]
    dispatch = dispatches.get(event.dispatch_id)
    if dispatch is None or event.writes or event.deletes or event.action is not None:
        return None
    node_id = dispatch["node"]
    successors = program.chained.get(node_id)
    join = program.joining.get(node_id) if successors is None else None
    header = sections["header"]
    if (
        (successors is None and (join is None or _last_arrival(program, sections, join)))
        or dispatch.get("item") is not None
        or dispatch.get("timer") is not None
        or isinstance(event.output, Action)
        or header.get("status") != "running"
        or header.get(QUEUED) is not None
    ):
        return None
    value = event.output
    journal = state.journal
    del dispatches[event.dispatch_id]
    journal.add(("dispatches", event.dispatch_id))
    nodes = sections["nodes"]
    _node_record(nodes, journal, node_id)[_STATUS] = "done"
    sections["outputs"][node_id] = value
    journal.add(("outputs", node_id))
    if successors is not None:
        return [_fire_next(state, successor, value) for successor in successors]
    assert join is not None
    record = _node_record(nodes, journal, join)
    record[_ARRIVED] += 1
    record[_TAKEN] += 1
    if dispatches and not deferred(dispatches):
        return []  # still running
    step = Step(program, state)
    step.settle()
    return step.commands


def _last_arrival(program: Program, sections: dict[str, dict[str, Any]], join: str) -> bool:
    """Whether one more arrival at ``join`` is the one it waits for."""
    record = sections["nodes"].get(join)
    return (0 if record is None else record[_ARRIVED]) + 1 >= program.n_preds[join]


def _fire_next(state: RunState, node_id: str, value: Any) -> p.ExecuteNode:
    """``Step.fire`` of a chained call node, taking ``value`` (see ``NodeSteps.dispatch``)."""
    record = _node_record(state.sections["nodes"], state.journal, node_id)
    record[_ACT] = act = record[_ACT] + 1
    record[_STATUS] = "running"
    args = (value,)
    kwargs: dict[str, Any] = {}
    dispatch_id = f"{node_id}@{act}.1"
    state.sections["dispatches"][dispatch_id] = {
        "node": node_id,
        "act": act,
        "attempt": 1,
        "args": args,
        "kwargs": kwargs,
        "item": None,
        "fallback": False,
    }
    state.journal.add(("dispatches", dispatch_id))
    key = f"{state.run_id}:{node_id}@{act}"
    return p.ExecuteNode(dispatch_id, node_id, 1, key, args, kwargs, False, None, None)


def _node_record(nodes: dict[str, Any], journal: set[tuple[str, str]], node_id: str) -> list[Any]:
    """``Step.record`` for the shortcut."""
    record = nodes.get(node_id)
    if record is None:
        record = nodes[node_id] = [0, 0, 0, 0, "pending"]
    journal.add(("nodes", node_id))
    return record


class Step(NodeSteps, RetrySteps, DeferralSteps, ContinueSteps, AdmissionSteps):
    """One transition of one run."""

    def __init__(self, program: Program, state: RunState, note_completions: bool = False) -> None:
        self.p = program
        self.s = state
        self.note_completions = note_completions
        self.commands: list[p.Command] = []
        # (node id, taken, via back edge, source node)
        self.queue: deque[tuple[str, bool, bool, str | None]] = deque()
        # (signal name, wait record) of waits that found a signal buffered
        self.buffered_waits: list[tuple[str, dict[str, Any]]] = []
        self.failing: list[tuple[str, str, Any]] = []

    # -- events -------------------------------------------------------------
    def on_event(self, event: p.Event) -> None:
        if isinstance(event, p.NodeCompleted):
            self.on_completed(event)
        elif isinstance(event, p.NodeFailed):
            self.on_failed(event)
        elif isinstance(event, p.TimerFired):
            self.on_timer(event.timer_id)
        elif isinstance(event, p.SignalReceived):
            self.on_signal(event)
        elif isinstance(event, p.ChildFinished):
            self.on_child(event)
        elif isinstance(event, p.CancelRequested):
            self.on_cancel(event.reason)
        elif isinstance(event, p.RetryRequested):
            self.on_retry()
        elif isinstance(event, p.StartDebounced):
            self.on_start_debounced(event)
        elif isinstance(event, p.NodeDeferred):
            self.on_deferred(event)
        elif isinstance(event, p.NodeHeartbeat):
            self.on_heartbeat(event)
        elif isinstance(event, p.RunContinued):
            self.on_continued(event)
        elif isinstance(event, p.SlotTaken):
            self.on_slot_taken()

    # -- debounced starts -----------------------------------------------------
    def begin(self) -> None:
        """Start the flow at its roots."""
        for root in self.p.roots:
            self.queue.append((root, True, False, None))

    def debounce(self, delay: float) -> None:
        """Begin the run once ``delay`` seconds pass with no other start of it."""
        count = int(self.s.header.get("debounces", 0)) + 1
        timer_id = f"{DEBOUNCE}:@{count}"
        self.s.put("header", "debounces", count)
        self.s.put("header", DEBOUNCE, timer_id)
        self.s.put("timers", timer_id, {"node": "", "purpose": DEBOUNCE})
        self.commands.append(p.StartTimer(timer_id, "", delay, DEBOUNCE))
        self.note("timer:set", None, data={"timer_id": timer_id, "delay": delay})

    def on_start_debounced(self, event: p.StartDebounced) -> None:
        """Another start within the debounce: its inputs, and the delay from now."""
        timer_id = self.s.header.get(DEBOUNCE)
        if timer_id is None:
            return  # begun already: the start joins the run as it is
        self.s.drop("timers", timer_id)
        self.commands.append(p.CancelTimer(timer_id))
        self.s.put("header", "inputs", dict(event.inputs))
        if self.p.blueprint.metadata.get("compiled"):
            for name, value in event.inputs.items():
                self.s.put("context", name, value)
        self.debounce(event.delay)

    def on_cancel(self, reason: str) -> None:
        """Cancel the run: unwind through the ``finally`` (and ``except``) blocks around it.

        Cancellation reaches the flow as :class:`flowkit.Cancelled` raised where
        the run stands, like ``asyncio.CancelledError``: not an ``Exception``, so
        ``except Exception`` lets it through, while ``except flowkit.Cancelled``
        and ``finally`` see it. With no handler around, or on a second cancel
        while cleaning up, the run ends ``cancelled`` at once.
        """
        if self.s.header.get(CONTINUING):
            return  # it is ending already: cancel the run it continues as instead
        error = _error(CANCELLED, reason, mro=(CANCELLED, "builtins.BaseException"))
        handlers = self.cleanup_handlers()
        if not handlers or self.s.header.get("cancelling"):
            self.finish(RunStatus.CANCELLED, error=error)
            return
        self.s.put("header", "cancelling", reason)
        self.cancel_nodes(None, skip=False)
        for node_id, handler in handlers.items():
            self.record(node_id)[_STATUS] = "cancelled"
            self.abandon_joins(node_id)
            self.s.put("context", "__error__", dict(error, node=node_id))
            self.queue.append((handler, True, True, node_id))

    def cleanup_handlers(self) -> dict[str, str]:
        """Where the run stands (node -> its error handler), one node per handler."""
        sections = self.s.sections
        standing = [
            key if section == "batches" else value["node"]
            for section in ("dispatches", "timers", "waits", "children", "batches")
            for key, value in sections[section].items()
            if section != "timers" or value["purpose"] != DEBOUNCE  # not begun: no node stands
            if section != "children" or not value.get("started")  # its node went on
        ]
        handlers: dict[str, str] = {}
        for node_id in dict.fromkeys(standing):
            handler = self.p.specs[node_id].params.get("on_error")
            if handler is not None and handler not in handlers.values():
                handlers[node_id] = handler
        return handlers

    def on_completed(self, event: p.NodeCompleted) -> None:
        dispatch = self.s.sections["dispatches"].get(event.dispatch_id)
        if dispatch is None:
            return  # duplicate delivery or cancelled: already settled
        self.s.drop("dispatches", event.dispatch_id)
        self.settle_deferral(dispatch)
        if event.writes or event.deletes:
            self.apply_writes(dispatch["node"], event)
        if dispatch.get("item") is not None:
            self.batch_item_done(dispatch, event.output)
        else:
            self.complete(dispatch["node"], event.output, event.action)

    def apply_writes(self, node_id: str, event: p.NodeCompleted) -> None:
        for key, value in (event.writes or {}).items():
            self.s.put("context", key, value)
        for key in event.deletes:
            self.s.drop("context", key)
        keys = sorted([*(event.writes or {}), *event.deletes])
        self.note("context:change", node_id, data={"keys": keys})

    def on_failed(self, event: p.NodeFailed) -> None:
        dispatch = self.s.sections["dispatches"].get(event.dispatch_id)
        if dispatch is None:
            return
        self.s.drop("dispatches", event.dispatch_id)
        self.settle_deferral(dispatch)
        if event.heartbeat is not None:  # the failed attempt's last details, for the next
            dispatch = dict(dispatch, heartbeat=event.heartbeat)
        self.failing.append(("dispatches", event.dispatch_id, dispatch))
        node_id = dispatch["node"]
        spec = self.p.specs[node_id]
        attempt = int(dispatch["attempt"])
        self.note("node:error", node_id, attempt, data=dict(event.error))
        if event.retryable and not dispatch.get("fallback") and self.retried(dispatch, event):
            return
        if spec.config.fallback and not dispatch.get("fallback"):
            self.note("node:fallback", node_id, attempt)
            self.redispatch(dispatch, attempt + 1, fallback=True, error=event.error)
        elif dispatch.get("item") is not None:
            self.batch_failed(dispatch, event.error)
        else:
            self.fail_node(node_id, event.error)

    def retried(self, dispatch: dict[str, Any], event: p.NodeFailed) -> bool:
        """Schedule the next attempt if the node's retry policy allows one (see ``_policy``)."""
        node_id = dispatch["node"]
        attempt = int(dispatch["attempt"])
        policy = Policy.of(self.p.specs[node_id].config, dispatch.get("options"))
        if policy.refusal(attempt, event.error) is not None:
            return False
        delay = (
            policy.backoff.delay(attempt, f"{self.s.run_id}:{node_id}") if policy.backoff else 0.0
        )
        first = dispatch.get("first_started", event.started_at)
        due = None if event.failed_at is None else event.failed_at + delay
        if policy.late(first, due) is not None:
            return False
        self.retry(dispatch, attempt, delay, first)
        return True

    def retry(
        self, dispatch: dict[str, Any], attempt: int, delay: float, first: float | None
    ) -> None:
        node_id = dispatch["node"]
        self.note("node:retry", node_id, attempt + 1, data={"delay": delay})
        if delay <= 0:
            self.redispatch(dispatch, attempt + 1, first_started=first)
            return
        timer_id = f"retry:{node_id}@{dispatch['act']}:{attempt + 1}"
        if dispatch.get("item") is not None:
            timer_id += f"[{dispatch['item']}]"
        if dispatch.get("round"):
            timer_id += f"~{dispatch['round']}"
        record = {
            "node": node_id,
            "purpose": "retry",
            "dispatch": dict(dispatch, attempt=attempt + 1),
        }
        if first is not None:
            record["dispatch"]["first_started"] = first
        self.s.put("timers", timer_id, record)
        self.commands.append(p.StartTimer(timer_id, node_id, delay, "retry"))

    def on_timer(self, timer_id: str) -> None:
        timer = self.s.sections["timers"].get(timer_id)
        if timer is None:
            return  # fired already (several schedulers are safe)
        self.s.drop("timers", timer_id)
        node_id = timer["node"]
        purpose = timer["purpose"]
        self.note("timer:fire", node_id or None, data={"timer_id": timer_id, "purpose": purpose})
        if purpose == DEBOUNCE:
            self.s.drop("header", DEBOUNCE)
            if self.admitted("begin"):
                self.begin()
        elif timer["purpose"] == "retry":
            d = timer["dispatch"]
            self.redispatch(
                d,
                int(d["attempt"]),
                fallback=bool(d.get("fallback")),
                first_started=d.get("first_started"),
            )
        elif timer["purpose"] == "sleep":
            self.complete(node_id, None, None)
        elif timer["purpose"] == "timeout":
            self.wait_timed_out(timer)
        elif purpose == COMPLETION:
            self.completion_timed_out(timer)

    def wait_timed_out(self, timer: dict[str, Any]) -> None:
        name = timer["wait"]
        wait = self.s.sections["waits"].get(name)
        if wait is None:
            return
        self.s.drop("waits", name)
        self.failing.append(("waits", name, wait))
        info = _from_exception(WaitTimeout(name, self.s.run_id))
        info["wait"] = name
        self.fail_node(timer["node"], info)

    def on_signal(self, event: p.SignalReceived) -> None:
        if event.delivery_id is not None:
            if event.delivery_id in self.s.sections["deliveries"]:
                raise DuplicateDelivery(self.s.run_id, event.delivery_id)
            self.s.put("deliveries", event.delivery_id, True)
        waits = self.s.sections["waits"]
        wait = waits.get(event.name)
        if wait is None:
            buffered = list(self.s.sections["signals"].get(event.name, []))
            buffered.append({"data": event.data, "action": event.action})
            self.s.put("signals", event.name, buffered)
            self.note("signal:receive", None, data={"name": event.name, "buffered": True})
            return
        self.s.drop("waits", event.name)
        if wait.get("timer"):
            self.s.drop("timers", wait["timer"])
            self.commands.append(p.CancelTimer(wait["timer"]))
        self.note("signal:receive", wait["node"], data={"name": event.name})
        self.complete(wait["node"], event.data, event.action)

    def on_child(self, event: p.ChildFinished) -> None:
        child = self.s.sections["children"].get(event.child_run_id)
        if child is None:
            return
        self.s.drop("children", event.child_run_id)
        if child.get("started"):
            return  # started without waiting: the flow went on long ago
        self.failing.append(("children", event.child_run_id, child))
        if event.status == RunStatus.COMPLETED:
            self.complete(child["node"], event.output, None)
            return
        message = (event.error or {}).get("message", event.status)
        info = _from_exception(ChildFailed(event.child_run_id, f"{event.status}: {message}"))
        info["child_run_id"] = event.child_run_id
        self.fail_node(child["node"], info)

    # -- routing ------------------------------------------------------------
    def complete(self, node_id: str, value: Any, action: str | None) -> None:
        """Record a node's result and route along its outgoing edges."""
        value, action = split_action(value, action)
        record = self.record(node_id)
        record[_STATUS] = "done"
        spec = self.p.specs[node_id]
        if self.note_completions:
            self.note("node:complete", node_id, record[_ACT])
        target = spec.params.get("assign")
        if target is not None:
            try:
                self.assign(target, value)
            except (TypeError, ValueError) as exc:  # e.g. `a, b = <3 values>`
                self.fail_node(node_id, _from_exception(exc))
                return
        if target is None or node_id in self.p.terminals:
            self.s.put("outputs", node_id, value)
        if spec.kind == "loop":
            return  # loops route themselves
        self.route(node_id, value, action)

    def route(self, node_id: str, value: Any, action: str | None, *, exclude: str = "") -> None:
        scope: dict[str, Any] | None = None
        for edge in self.p.out[node_id]:
            if edge.target == exclude:
                continue
            taken = edge.action is None or edge.action == action
            if taken and edge.when is not None:
                if scope is None:
                    scope = {
                        "result": value,
                        "state": self.s.context,
                        "input": self.s.header.get("inputs", {}),
                    }
                taken = self.evaluate_condition(node_id, edge.when, scope)
            self.queue.append((edge.target, taken, edge.back, node_id))

    def evaluate_condition(self, node_id: str, fn: Any, scope: dict[str, Any]) -> bool:
        try:
            return bool(fn(scope))
        except FlowkitError as exc:
            self.fail_node(node_id, _from_exception(exc))
            return False

    def drain(self) -> None:
        """Route until nothing moves; waits take buffered signals only once the rest has fired.

        A buffered signal is taken last so that a race decided meanwhile (another
        racer won) leaves it buffered for the next wait of that name, not lost.
        """
        queue = self.queue
        while True:
            while queue:
                target, taken, back, source = queue.popleft()
                if self.s.finished:
                    queue.clear()
                    return
                self.arrive(target, taken, back, source)
            if not self.take_buffered_signal():
                return

    def take_buffered_signal(self) -> bool:
        """Complete the first wait still open that found a signal buffered; False if none."""
        while self.buffered_waits and not self.s.finished:
            name, wait = self.buffered_waits.pop(0)
            if self.s.sections["waits"].get(name) is not wait:
                continue  # cancelled by a decided race: the signal stays buffered
            self.s.drop("waits", name)
            self.complete(wait["node"], *self.unbuffer(name))
            return True
        return False

    def unbuffer(self, name: str) -> tuple[Any, str | None]:
        """Remove and return the oldest buffered signal ``name``: (data, action)."""
        first, *rest = self.s.sections["signals"][name]
        if rest:
            self.s.put("signals", name, rest)
        else:
            self.s.drop("signals", name)
        return first["data"], first.get("action")

    def arrive(self, target: str, taken: bool, back: bool, source: str | None) -> None:
        mode = self.p.join[target]
        count = self.p.n_preds[target]
        if back or mode == "pass" or count <= 1 or source is None:
            if taken:
                self.fire(target, back, source)
            elif not back and mode != "pass":
                self.skip(target)
            return
        record = self.record(target)
        record[_ARRIVED] += 1
        record[_TAKEN] += taken
        self.s.touch("nodes", target)
        if mode == "any":
            self.arrive_any(target, record, taken, source, count)
        elif record[_ARRIVED] >= count:
            fire = record[_TAKEN] > 0
            record[_ARRIVED] = record[_TAKEN] = 0
            if fire:
                self.fire(target, back, source)
            else:
                self.skip(target)

    def arrive_any(
        self, target: str, record: list[Any], taken: bool, source: str, count: int
    ) -> None:
        if taken and not record[_FIRED]:
            record[_FIRED] = source  # the winner, for whoever inspects the run
            self.cancel_nodes(self.racers_only(target), skip=True)
            self.fire(target, False, source)
        elif record[_ARRIVED] >= count and not record[_FIRED]:
            record[_FIRED] = 1
            lost = self.s.context.get(f"__race_error__:{target}")
            if lost is not None and all(
                self.record(n)[_STATUS] == "failed" for n in self.p.preds[target]
            ):
                self.fail_node(lost["node"], lost)
            else:
                self.skip(target)

    def racers_only(self, join: str) -> tuple[str, ...]:
        """The predecessors of a decided race that exist for races alone.

        A racer may be cancelled only when every node it leads to is a race
        that has been decided; work that another path still needs runs on.
        """
        return tuple(n for n in self.p.preds[join] if self.only_races(n, decided=True))

    def only_races(self, node_id: str, *, decided: bool) -> bool:
        """Whether every forward successor of ``node_id`` is an ``any`` join (decided)."""
        targets = [e.target for e in self.p.out[node_id] if not e.back]
        nodes = self.s.sections["nodes"]
        return bool(targets) and all(
            self.p.join[t] == "any"
            and self.p.n_preds[t] > 1
            and (not decided or (t in nodes and nodes[t][_FIRED]))
            for t in targets
        )

    def skip(self, node_id: str) -> None:
        record = self.record(node_id)
        record[_STATUS] = "skipped"
        self.s.touch("nodes", node_id)
        for edge in self.p.out[node_id]:
            if not edge.back:
                self.queue.append((edge.target, False, False, node_id))

    def record(self, node_id: str) -> list[Any]:
        nodes = self.s.sections["nodes"]
        record = nodes.get(node_id)
        if record is None:
            record = nodes[node_id] = [0, 0, 0, 0, "pending"]
        self.s.journal.add(("nodes", node_id))
        return record

    # -- ending ---------------------------------------------------------------
    def fail_node(self, node_id: str, error: dict[str, Any]) -> None:
        """A node failed for good: hand it to its ``except`` handler or fail the run."""
        record = self.record(node_id)
        record[_STATUS] = "failed"
        if self.losing_racer(node_id, error):
            return
        handler = self.p.specs[node_id].params.get("on_error")
        if handler is not None:
            self.abandon_joins(node_id)
            self.s.put("context", "__error__", dict(error, node=node_id))
            self.queue.append((handler, True, True, node_id))
            return
        self.poison(node_id)
        self.finish(RunStatus.FAILED, error=dict(error, node=node_id))

    def losing_racer(self, node_id: str, error: dict[str, Any]) -> bool:
        """A failed predecessor of an ``any`` join others may still win: just a skip.

        The error is kept; if every racer fails, the join fails with the last one.
        """
        if not self.only_races(node_id, decided=False):
            return False  # another path needs this node: its failure is the run's
        joins = [e.target for e in self.p.out[node_id] if not e.back]
        open_races = [j for j in joins if not self.record(j)[_FIRED]]
        for join in open_races:
            if self.record(join)[_ARRIVED] + 1 >= self.p.n_preds[join]:
                return False  # the last racer, and nobody won
        for join in open_races:  # a decided race ignores its losers' failures
            self.s.put("context", f"__race_error__:{join}", dict(error, node=node_id))
        for edge in self.p.out[node_id]:
            if not edge.back:
                self.queue.append((edge.target, False, False, node_id))
        return True

    def abandon_joins(self, node_id: str) -> None:
        """Before an ``except`` handler runs: stop the failed node's join partners."""
        for edge in self.p.out[node_id]:
            join = edge.target
            if edge.back or self.p.join[join] not in ("all", "any") or self.p.n_preds[join] < 2:
                continue
            partners = tuple(n for n in self.p.preds[join] if n != node_id)
            self.cancel_nodes(partners, skip=False)
            record = self.record(join)
            record[_ARRIVED] = record[_TAKEN] = record[_FIRED] = 0

    def poison(self, node_id: str) -> None:
        """Mark every successor so that no join waits for a node that will never come."""
        for edge in self.p.out[node_id]:
            if not edge.back:
                record = self.record(edge.target)
                if record[_STATUS] == "pending":
                    record[_STATUS] = "poisoned"

    def finish(self, status: RunStatus, *, output: Any = None, error: Any = None) -> None:
        if status is RunStatus.FAILED:
            self.suspend()
        self.cancel_nodes(None, skip=False)
        self.release_slot()
        self.s.put("header", "status", status.value)
        self.s.put("header", "output", output)
        if error is not None:
            self.s.put("header", "error", error)
        self.queue.clear()
        self.commands.append(p.FinishRun(status.value, output, error))

    def cancel_nodes(self, nodes: tuple[str, ...] | None, *, skip: bool) -> None:
        """Cancel what ``nodes`` (or, with None, every node) have in progress.

        Dispatches, timers, waits, child runs and batches all go; with ``skip``
        each cancelled node is skipped once, so joins after it still settle.
        """
        sections = self.s.sections
        cancelled: dict[str, None] = {}

        def chosen(node_id: str) -> bool:
            return nodes is None or node_id in nodes

        for section, cancel in (
            ("dispatches", p.CancelNode),
            ("timers", p.CancelTimer),
            ("waits", None),
            ("children", p.CancelChild),
            ("batches", None),
        ):
            for key, value in list(sections[section].items()):
                node_id = key if section == "batches" else value["node"]
                if section == "children" and value.get("started"):
                    if nodes is None:  # the run ends: its started children per their policy
                        self.s.drop(section, key)
                        if not value.get("detach"):
                            self.commands.append(p.CancelChild(key))
                    continue
                if chosen(node_id):
                    self.s.drop(section, key)
                    if cancel is not None:
                        self.commands.append(cancel(key))
                    cancelled[node_id] = None
        if skip:
            for node_id in cancelled:
                self.skip(node_id)

    def settle(self) -> None:
        """After an event: finish the run if nothing is pending, or note a pause."""
        if self.s.finished:
            return
        sections = self.s.sections
        if self.s.header.get(QUEUED) is not None:
            self.set_status(RunStatus.QUEUED)  # nothing begun: it waits for a slot
        elif sections["dispatches"] and not deferred(sections["dispatches"]):
            self.set_status(RunStatus.RUNNING)
        elif (
            sections["dispatches"]
            or sections["timers"]
            or sections["waits"]
            or self.awaited_children()
        ):
            self.set_status(RunStatus.AWAITING)
        else:
            stalled = self.stalled_joins()
            if stalled:
                self.note("workflow:stall", None, data={"joins": stalled})
                message = f"run stalled: join(s) {', '.join(stalled)} can never fire"
                self.finish(RunStatus.FAILED, error=_error(WORKFLOW_FAILED, message))
            else:
                self.finish(RunStatus.COMPLETED, output=self.terminal_output())

    def awaited_children(self) -> bool:
        """Whether a child run holds the run (one started without waiting does not)."""
        return any(not c.get("started") for c in self.s.sections["children"].values())

    def set_status(self, status: RunStatus) -> None:
        before = self.s.sections["header"].get("status")
        value = _VALUES[status]
        if before != value:
            self.s.put("header", "status", value)
            if status is RunStatus.AWAITING:
                self.note("workflow:pause", None)
            elif before == RunStatus.AWAITING.value:
                self.note("workflow:resume", None)

    def stalled_joins(self) -> list[str]:
        return [
            node_id
            for node_id, record in self.s.sections["nodes"].items()
            if record[_ARRIVED] and not record[_FIRED] and self.p.join.get(node_id) == "all"
        ]

    def terminal_output(self) -> Any:
        nodes = self.s.sections["nodes"]
        outputs = self.s.sections["outputs"]
        ran = [
            n
            for n in self.p.blueprint_order
            if n in self.p.terminals and nodes.get(n, (0, 0, 0, 0, ""))[_STATUS] == "done"
        ]
        if len(ran) == 1:
            return outputs.get(ran[0])
        if not ran:
            return None
        return {n: outputs.get(n) for n in ran}

    def note(
        self, type_: str, node_id: str | None, attempt: int | None = None, *, data: Any = None
    ) -> None:
        self.commands.append(p.Note(type_, node_id, attempt, data))


def _error(type_: str, message: str, *, mro: tuple[str, ...] = ()) -> dict[str, Any]:
    return {"type": type_, "mro": list(mro or (type_,)), "message": message}


def _from_exception(exc: BaseException) -> dict[str, Any]:
    type_, mro, message = describe(exc)
    return {"type": type_, "mro": list(mro), "message": message}


def wait_names(program: Program) -> frozenset[str]:
    """Every signal name the blueprint can wait for."""
    return frozenset(wait_name(s) for s in program.blueprint.nodes if s.kind in ("wait", "webhook"))

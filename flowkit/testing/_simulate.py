"""``simulate()``: run a flow on virtual time, with mocks and scripted signals.

The simulator is another shell around the same deterministic core: it
executes ready nodes one at a time (real node code, or mocks), answers waits
from the script, and when nothing is ready jumps the virtual clock to the next
timer, scripted signal arrival or ``cancel_at``. A flow that sleeps for a year
simulates in milliseconds.
"""

from __future__ import annotations

import heapq
import random
from collections import deque
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any, overload

import anyio

from .. import _clock
from .._errors import ConfigurationError, FlowkitError, ResumeError
from ..core import _protocol as p
from ..core._admission import PARENT_SLOT
from ..core._machine import handle_event, start_run, wait_names
from ..core._state import RunState, RunStatus
from ..shell._commands import Interpreter, for_parent
from ..shell._events import Event, EventBus
from ..shell._execute import Executor
from ..shell._flows import Flows, route_signal
from ..shell._invoke import make_invoker
from ..shell._result import RunResult
from ..shell._target import Target, resolve
from ._completions import Completer
from ._model import Call, Simulation, SimulationError, TraceEntry, registry_name
from ._script import (
    ARRIVAL,
    CANCEL,
    NO_ANSWER,
    TIMER,
    UPDATE,
    OpenWait,
    Signaller,
    VirtualClock,
    parse_cancel_at,
    parse_start,
    payload,
)
from ._slots import SimulatedSlots
from ._updates import Updater

if TYPE_CHECKING:
    from collections.abc import Iterable, Mapping

    from .._durations import Duration
    from ..shell._schedules import Schedule
    from ._schedule_sim import ScheduleSimulation


_VISIBLE = frozenset({"call", "sleep", "wait", "webhook", "subflow"})
_STATUS: dict[type, str] = {p.NodeCompleted: "completed", p.NodeDeferred: "deferred"}
COMPLETION = UPDATE + 1  # a scripted completion of a deferred node is due (after updates)


class _Run:
    __slots__ = ("parent", "state", "target")

    def __init__(self, target: Target, state: RunState, parent: str | None) -> None:
        self.target = target
        self.state = state
        self.parent = parent


class Simulator(Interpreter[str]):
    """Drives one simulated run (and its child runs) to the end."""

    def __init__(
        self,
        target: Target,
        *,
        mocks: Mapping[Any, Any] | None,
        signals: Mapping[str, Any] | None,
        webhooks: Mapping[str, Any] | None,
        clock: VirtualClock,
        seed: int,
        max_steps: int,
        flows: list[Any],
        reorder: bool = False,
        cancel_at: float | None = None,
        updates: Mapping[str, Any] | None = None,
        before_patches: frozenset[str] = frozenset(),
        completions: Mapping[Any, Any] | None = None,
    ) -> None:
        super().__init__()
        self.completer = Completer(completions)
        self.target = target
        self.clock = clock
        self.seed = seed
        self.max_steps = max_steps
        self.random = random.Random(seed)
        self.reorder = reorder
        self.bus = EventBus()
        self.events: list[Event] = []
        self.bus.subscribe(self.events.append)
        self.executor = Executor(events=self.bus)
        self.executor.overrides = {_mock_key(k): make_invoker(v) for k, v in (mocks or {}).items()}
        self.flows = Flows([target, *flows])
        self.signaller = Signaller(signals, webhooks, self.flows.by_blueprint_id.values(), clock)
        self.reached: list[OpenWait] = []  # waits in the order they were reached
        self.cancel_due = cancel_at
        self.before_patches = before_patches  # runs start as if these patches did not exist
        self.top = ""
        self.runs: dict[str, _Run] = {}
        self.ready: deque[tuple[str, p.ExecuteNode]] = deque()
        self.pending: deque[tuple[str, p.Event]] = deque()
        self.timers: list[tuple[float, int, str, str]] = []
        self.visited: list[str] = []
        self.trace: list[TraceEntry] = []
        self.calls: list[Call] = []
        self.failure: FlowkitError | None = None
        self._seq = 0
        self.updates = updates
        self.updater: Updater | None = None
        self.slots = SimulatedSlots(self.admit)

    async def run(self, run_id: str, inputs: dict[str, Any]) -> Simulation:
        self.top = run_id
        self.updater = Updater(self.updates, self.target, run_id, self.clock)
        with _clock.use_clock(self.clock):
            self.start(self.target, run_id, inputs, None)
            await self.loop()
        while self.failure is None and RunResult.of(self.runs[run_id].state).continued_as:
            run_id = str(self.runs[run_id].state.header["continued_as"])  # the chain's last
        return self.result(run_id)

    def start(
        self,
        target: Target,
        run_id: str,
        inputs: dict[str, Any],
        parent: str | None,
        extra: Mapping[str, Any] | None = None,
    ) -> None:
        state = RunState(run_id)
        self.runs[run_id] = _Run(target, state, parent)
        self.emit(run_id, "workflow:start")
        inputs = target.bind(inputs)
        patches = [x for x in target.program.patches if x not in self.before_patches]
        commands = start_run(
            target.program,
            state,
            inputs,
            parent=parent,
            note_completions=True,
            patches=patches,
            extra=extra,
        )
        self.process(run_id, commands)

    async def loop(self) -> None:
        for _ in range(self.max_steps):
            if self.failure is not None:
                return
            if self.pending:
                self.apply(*self.pending.popleft())
            elif self.answer_open_wait():
                continue
            elif self.ready:
                await self.execute_next()
            elif self.send_update():
                continue
            elif not await self.advance_clock():
                self.failure = self.unanswered()
                return
        raise SimulationError(
            f"simulation did not finish within max_steps={self.max_steps} (seed {self.seed}); "
            "an endless loop? raise max_steps if the flow is just long"
        )

    async def execute_next(self) -> None:
        index = self.random.randrange(len(self.ready)) if self.reorder else 0
        self.ready.rotate(-index)
        run_id, command = self.ready.popleft()
        self.ready.rotate(index)
        run = self.runs[run_id]
        if command.dispatch_id not in run.state.sections["dispatches"]:
            return  # cancelled before it ran
        started = self.clock.datetime()
        self.calls.append(Call(command.node_id, command.attempt, command.args, command.kwargs))
        event = await self.executor.execute(run_id, run.target, run.state, command)
        status = _STATUS.get(type(event), "failed")
        self.trace.append(
            TraceEntry(
                command.node_id, command.attempt, started, self.clock.datetime(), status, run_id
            )
        )
        self.apply(run_id, event)
        if isinstance(event, p.NodeDeferred):
            now = self.clock.now
            completion = self.completer.deferred(run_id, run.target, run.state, event, now)
            if completion is not None:
                self.pending.append((run_id, completion))

    def answer_open_wait(self) -> bool:
        """Send the first open wait (in the order reached) its scripted answer, if it has one."""
        if not self.reached:
            return False
        self.reached = [w for w in self.reached if w.is_open(self.runs[w.run_id].state)]
        for wait in self.reached:
            run = self.runs[wait.run_id]
            answer = self.signaller.answer(wait, run.target.program.specs[wait.node_id])
            if answer is not NO_ANSWER:
                event = p.SignalReceived(wait.name, payload(answer, run.state))
                self.pending.append((wait.run_id, event))
                return True
        return False

    def send_update(self) -> bool:
        """The run has gone as far as it can: answer the update in flight, and send the
        next one whose wait is open (whether one was sent)."""
        assert self.updater is not None
        event = self.updater.next_event(self.runs[self.top].state)
        if event is not None:
            self.pending.append((self.top, event))
        return event is not None

    async def advance_clock(self) -> bool:
        """Jump to the next ``cancel_at``, timer or signal arrival (that order at one instant)."""
        if self.runs[self.top].state.finished:
            return False
        while self.timers and not self.timer_is_set(self.timers[0]):
            heapq.heappop(self.timers)
        moves = []
        if self.cancel_due is not None:
            moves.append((self.cancel_due, CANCEL))
        if self.timers:
            moves.append((self.timers[0][0], TIMER))
        arrival = self.signaller.next_arrival()
        if arrival is not None:
            moves.append((arrival, ARRIVAL))
        assert self.updater is not None
        update = self.updater.next_arrival()
        if update is not None:
            moves.append((update, UPDATE))
        completion = self.completer.next_due()
        if completion is not None:
            moves.append((completion, COMPLETION))
        if not moves:
            return False
        due, move = min(moves)
        self.clock.now = max(self.clock.now, due)
        if move == CANCEL:
            self.cancel_due = None
            self.apply(self.top, p.CancelRequested())
        elif move == TIMER:
            _, _, run_id, timer_id = heapq.heappop(self.timers)
            self.apply(run_id, p.TimerFired(timer_id))
        elif move == UPDATE:
            self.updater.arrive()
        elif move == COMPLETION:
            self.apply(*self.completer.pop())
        else:
            await self.deliver_arrival()
        return True

    def timer_is_set(self, entry: tuple[float, int, str, str]) -> bool:
        _, _, run_id, timer_id = entry
        return timer_id in self.runs[run_id].state.sections["timers"]

    async def deliver_arrival(self) -> None:
        """A scripted ``at()`` signal arrives: its wait gets it, or the run buffers it."""
        name, arrival = self.signaller.pop_arrival()
        run_id = await self.signal_target(self.top, name)
        if run_id is None:
            declared = wait_names(self.runs[self.top].target.program)
            self.failure = self.signaller.nowhere_to_go(name, arrival, self.top, declared)
            return
        state = self.runs[run_id].state
        self.apply(run_id, p.SignalReceived(name, payload(arrival.value, state)))

    async def signal_target(self, run_id: str, name: str) -> str | None:
        """The run a signal sent to ``run_id`` goes to, as every shell routes it."""

        async def state_of(run_id: str) -> tuple[RunState, Target]:
            run = self.runs.get(run_id)
            if run is None:
                raise ResumeError(f"child run {run_id!r} was never started")
            return run.state, run.target

        try:
            return await route_signal(run_id, name, state_of)
        except ResumeError:
            return None

    def unanswered(self) -> SimulationError | None:
        """Why the run is stuck at a wait nobody will answer (None if it was told never())."""
        for wait in self.reached:
            run = self.runs[wait.run_id]
            if wait.is_open(run.state):
                error = self.signaller.unanswered(wait, run.target.program.specs[wait.node_id])
                if error is not None:
                    return error
        return None

    def admit(self, run_id: str) -> bool:
        """Tell a queued run it has its slot (False: it has ended)."""
        if self.runs[run_id].state.finished:
            return False
        self.pending.append((run_id, p.SlotTaken()))
        return True

    def apply(self, run_id: str, event: p.Event) -> None:
        run = self.runs[run_id]
        commands = handle_event(run.target.program, run.state, event, note_completions=True)
        self.process(run_id, commands)

    def process(self, run_id: str, commands: list[p.Command]) -> None:
        self.ready.extend((run_id, command) for command in self.interpret(run_id, commands))

    # -- primitives -------------------------------------------------------------
    def cancel_node(self, run_id: str, command: p.CancelNode) -> None:
        """Nothing to stop: a node runs only when picked, and one withdrawn is skipped."""

    def start_timer(self, run_id: str, command: p.StartTimer) -> None:
        self._seq += 1
        due = self.clock.now + command.delay
        heapq.heappush(self.timers, (due, self._seq, run_id, command.timer_id))

    def await_signal(self, run_id: str, command: p.AwaitSignal) -> None:
        self.reached_wait(run_id, command)

    def cancel_child(self, run_id: str, command: p.CancelChild) -> None:
        self.pending.append((command.child_run_id, p.CancelRequested("parent finished")))

    def finish_run(self, run_id: str, command: p.FinishRun) -> None:
        self.finished(run_id, command)

    def continue_as_new(self, run_id: str, command: p.ContinueAsNew) -> None:
        if command.run_id not in self.runs:
            target = self.runs[run_id].target
            self.start(target, command.run_id, dict(command.inputs), None, command.header)
        if run_id == self.top:  # cancel_at= cancels the chain's newest run
            self.top = command.run_id
        self.pending.append((run_id, p.RunContinued(command.run_id)))

    def take_slot(self, run_id: str, command: p.TakeSlot) -> None:
        self.slots.take(command)

    def release_slot(self, run_id: str, command: p.ReleaseSlot) -> None:
        self.slots.release(command)

    def note(self, run_id: str, note: p.Note) -> None:
        if note.type != "node:complete":
            self.emit(run_id, note.type, note.node_id, note.attempt, note.data)
            return
        specs = self.runs[run_id].target.program.specs
        if note.node_id is not None and specs[note.node_id].kind in _VISIBLE:
            self.visited.append(note.node_id)

    def reached_wait(self, run_id: str, command: p.AwaitSignal) -> None:
        wait = self.runs[run_id].state.sections["waits"].get(command.name)
        if wait is not None and wait["node"] == command.node_id:
            self.reached.append(OpenWait(run_id, command.name, command.node_id, wait["act"]))

    def start_child(self, run_id: str, command: p.StartChild) -> None:
        child = self.flows.child(command, "pass it in flows=[...]")
        if isinstance(child, p.ChildFinished):
            self.pending.append((run_id, child))
            return
        extra = None if command.slot is None else {PARENT_SLOT: command.slot}
        self.start(child, command.child_run_id, dict(command.inputs), run_id, extra)

    def finished(self, run_id: str, command: p.FinishRun) -> None:
        self.emit(run_id, "workflow:finish", data={"status": command.status})
        parent = self.runs[run_id].parent
        if parent is not None:
            self.pending.append((parent, for_parent(run_id, command)))

    def emit(
        self,
        run_id: str,
        type_: str,
        node_id: str | None = None,
        attempt: int | None = None,
        data: Any = None,
    ) -> None:
        self.bus.emit(Event(type_, run_id, self.clock.now, node_id, attempt, None, data))

    def result(self, run_id: str) -> Simulation:
        state = self.runs[run_id].state
        outcome = RunResult.of(state)
        status, error = outcome.status, outcome.error
        if self.failure is not None:
            status, error = RunStatus.FAILED, self.failure
        uses = {n.id: n.uses or "" for r in self.runs.values() for n in r.target.blueprint.nodes}
        return Simulation(
            run_id=run_id,
            status=status,
            output=outcome.output,
            error=error,
            elapsed=timedelta(seconds=self.clock.now - self.clock.start),
            visited=self.visited,
            trace=self.trace,
            events=self.events,
            state=outcome.state,
            seed=self.seed,
            updates=self.updater.finish(state) if self.updater is not None else [],
            _queries=dict(self.runs[run_id].target.queries or {}),
            _calls=self.calls,
            _uses=uses,
            _snapshot=state.to_dict(),
            _blueprint=self.runs[run_id].target.blueprint,
        )


def _mock_key(node: Any) -> str:
    return node if isinstance(node, str) else registry_name(node)


@overload
async def simulate_async(target: Schedule, **options: Any) -> ScheduleSimulation: ...


@overload
async def simulate_async(target: Any, **options: Any) -> Simulation: ...


async def simulate_async(target: Any, **options: Any) -> Simulation | ScheduleSimulation:
    """:func:`simulate` for async tests."""
    from ..shell._schedules import Schedule

    if isinstance(target, Schedule):
        until = options.pop("until", None)
        if until is None:
            raise SimulationError(
                f"simulate({target!r}) needs until=, how long to run the schedule (e.g. '30d')"
            )
        from ._schedule_sim import simulate_schedule

        return await simulate_schedule(target, until=until, **options)
    return await _simulate_run(target, **options)


async def _simulate_run(
    target: Any,
    *,
    mocks: Mapping[Any, Any] | None = None,
    signals: Mapping[str, Any] | None = None,
    webhooks: Mapping[str, Any] | None = None,
    start: str | datetime | None = None,
    workers: int | None = None,
    faults: Any = None,
    seed: int = 0,
    max_steps: int = 100_000,
    registry: Mapping[str, Any] | None = None,
    flows: list[Any] | None = None,
    run_id: str = "sim",
    store: Any = None,
    cancel_at: Duration | None = None,
    updates: Mapping[str, Any] | None = None,
    before_patches: Iterable[str] = (),
    completions: Mapping[Any, Any] | None = None,
    resolved_target: Target | None = None,
    **inputs: Any,
) -> Simulation:
    """A run of ``target`` (``resolved_target``: resolved and its inputs checked already)."""
    clock = VirtualClock(parse_start(start))
    cancel_due = parse_cancel_at(cancel_at, clock)
    resolved = resolved_target
    if resolved is None:
        resolved = resolve(target, registry)
        resolved.check(inputs)
    before = _check_patches(frozenset(before_patches), [resolved, *(flows or ())], workers, faults)
    if workers is not None or faults is not None:
        if updates:
            raise SimulationError(
                "updates= is simulated in one process: leave out workers= and faults= "
                "(or script the updates' waits with signals=)"
            )
        if completions:
            raise SimulationError(
                "completions= is simulated in one process: leave out workers= and faults="
            )
        from ._faults import simulate_distributed

        return await simulate_distributed(
            resolved,
            target,
            mocks=mocks,
            signals=signals,
            webhooks=webhooks,
            clock=clock,
            workers=workers or 1,
            faults=faults,
            seed=seed,
            max_steps=max_steps,
            flows=list(flows or ()),
            run_id=run_id,
            inputs=inputs,
            store=store,
            cancel_at=cancel_due,
        )
    simulator = Simulator(
        resolved,
        mocks=mocks,
        signals=signals,
        webhooks=webhooks,
        clock=clock,
        seed=seed,
        max_steps=max_steps,
        flows=list(flows or ()),
        cancel_at=cancel_due,
        updates=updates,
        before_patches=before,
        completions=completions,
    )
    return await simulator.run(run_id, inputs)


def _check_patches(
    before: frozenset[str], flows: list[Any], workers: int | None, faults: Any
) -> frozenset[str]:
    """``before_patches``, checked: patch ids the flows know, in the one-process simulator."""
    if not before:
        return before
    if workers is not None or faults is not None:
        raise ConfigurationError(
            "simulate(before_patches=...) runs in the one-process simulator: drop workers= "
            "and faults=, or simulate the patched run without before_patches"
        )
    known = {x for f in Flows(flows).by_digest.values() for x in f.program.patches}
    unknown = sorted(before - known)
    if unknown:
        raise ConfigurationError(
            f"simulate(before_patches=...) names patches the flow does not know: {unknown} "
            f"(its patches: {sorted(known) or 'none'}); check the ids of flow.patched(...)"
        )
    return before


@overload
def simulate(target: Schedule, **options: Any) -> ScheduleSimulation: ...


@overload
def simulate(target: Any, **options: Any) -> Simulation: ...


def simulate(target: Any, **options: Any) -> Simulation | ScheduleSimulation:
    """Run ``target`` (a ``@flow``, ``Flow`` or ``Blueprint``) on virtual time; synchronous.

    A :class:`flowkit.Schedule` (``my_flow.schedule`` of ``@flow(schedule=...)``, too)
    with ``until="30d"`` simulates that long of its ticks from ``start``: each tick's
    run is simulated (with the other options), and a :class:`ScheduleSimulation` lists
    them and the ticks the overlap policy skipped.

    ``signals={name: answer}`` scripts the waits: a value or callable of the
    run's state (answered when the wait is reached), :func:`at` (arrives at a
    virtual time), :func:`never`, or a list of these for successive waits.
    ``cancel_at="2h"`` cancels the run that long after the start.
    ``updates={name: [data, at("1h", data), ...]}`` sends updates (declared with
    ``@flow_fn.update``) to the run, one at a time, each once its wait is open;
    ``sim.updates`` lists their replies and refusals, ``sim.query(name)`` asks a query
    on the final variables.
    ``before_patches=["fraud-check-v2"]`` starts the run as one started before
    those ``flow.patched`` ids existed: it takes their ``else`` blocks.
    ``completions={node: answer}`` completes a node that returned
    ``flowkit.PENDING`` (keyed by node id or ``@node`` function): a value (or a
    callable of the run's state), an exception (the node fails), ``at("1h", value)``
    (that long after the node deferred) or a list for successive deferrals. A
    deferred node nobody completes leaves the run ``awaiting``.

    >>> from flowkit import Flow
    >>> async def hello(name: str) -> str: return f"hi {name}"
    >>> sim = simulate(Flow("hi").sleep("nap", duration="365d")
    ...                .node("hello", hello, inputs={"name": "$input.name"})
    ...                .edge("nap", "hello"), name="ada")
    >>> sim.output, sim.elapsed.days, sim.visited
    ('hi ada', 365, ['nap', 'hello'])
    """
    try:
        outcome: Simulation | ScheduleSimulation = anyio.run(
            lambda: simulate_async(target, **options)
        )
        return outcome
    except FlowkitError:
        raise

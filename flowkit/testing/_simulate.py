"""``simulate()``: run a flow on virtual time, with mocks and scripted signals.

The simulator is another shell around the same deterministic core: it
executes ready nodes one at a time (real node code, or mocks), answers waits
from the script, and when nothing is ready jumps the virtual clock to the next
timer. A flow that sleeps for a year simulates in milliseconds.
"""

from __future__ import annotations

import heapq
import random
from collections import deque
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

import anyio

from .. import _clock
from .._errors import FlowkitError
from ..engine import _protocol as p
from ..engine._core import handle_event, start_run
from ..engine._events import Event, EventBus
from ..engine._execute import Executor
from ..engine._invoke import make_invoker
from ..engine._program import wait_name
from ..engine._result import RunResult
from ..engine._state import RunState, RunStatus
from ..engine._target import Target, resolve
from ._model import Call, Simulation, SimulationError, TraceEntry, registry_name

if TYPE_CHECKING:
    from collections.abc import Mapping

_VISIBLE = frozenset({"call", "sleep", "wait", "webhook", "subflow"})


class VirtualClock:
    """Seconds since the epoch, advanced only by the simulator."""

    def __init__(self, start: datetime) -> None:
        self.start = start.timestamp()
        self.now = self.start

    def __call__(self) -> float:
        return self.now

    def datetime(self) -> datetime:
        return datetime.fromtimestamp(self.now, UTC)


def parse_start(start: str | datetime | None) -> datetime:
    if start is None:
        return datetime(2026, 1, 1, tzinfo=UTC)
    if isinstance(start, datetime):
        return start if start.tzinfo else start.replace(tzinfo=UTC)
    try:
        parsed = datetime.fromisoformat(start.replace("Z", "+00:00"))
    except ValueError as exc:
        raise SimulationError(f"start={start!r} is not an ISO 8601 timestamp") from exc
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


class Script:
    """Scripted answers for waits: a value, a callable of the run's state, or a list."""

    def __init__(self, answers: Mapping[str, Any] | None) -> None:
        self._answers = dict(answers or {})
        self._used: dict[str, int] = {}

    def has(self, name: str) -> bool:
        answer = self._answers.get(name, _MISSING)
        if isinstance(answer, list):
            return self._used.get(name, 0) < len(answer)
        return answer is not _MISSING

    def take(self, name: str, state: dict[str, Any]) -> Any:
        answer = self._answers[name]
        if isinstance(answer, list):
            index = self._used.get(name, 0)
            self._used[name] = index + 1
            answer = answer[index]
        return answer(state) if callable(answer) else answer


_MISSING: Any = object()


class _Run:
    __slots__ = ("parent", "state", "target")

    def __init__(self, target: Target, state: RunState, parent: str | None) -> None:
        self.target = target
        self.state = state
        self.parent = parent


class Simulator:
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
    ) -> None:
        self.target = target
        self.clock = clock
        self.seed = seed
        self.max_steps = max_steps
        self.random = random.Random(seed)
        self.reorder = reorder
        self.signals = Script(signals)
        self.webhooks = Script(webhooks)
        self.bus = EventBus()
        self.events: list[Event] = []
        self.bus.subscribe(self.events.append)
        self.executor = Executor(events=self.bus)
        self.executor.overrides = {_mock_key(k): make_invoker(v) for k, v in (mocks or {}).items()}
        self.by_blueprint_id = {t.blueprint.id: t for t in _targets(target, flows)}
        self.runs: dict[str, _Run] = {}
        self.ready: deque[tuple[str, p.ExecuteNode]] = deque()
        self.pending: deque[tuple[str, p.Event]] = deque()
        self.timers: list[tuple[float, int, str, str]] = []
        self.visited: list[str] = []
        self.trace: list[TraceEntry] = []
        self.calls: list[Call] = []
        self.failure: FlowkitError | None = None
        self._seq = 0

    async def run(self, run_id: str, inputs: dict[str, Any]) -> Simulation:
        with _clock.use_clock(self.clock):
            self.start(self.target, run_id, inputs, None)
            await self.loop()
        return self.result(run_id)

    def start(
        self, target: Target, run_id: str, inputs: dict[str, Any], parent: str | None
    ) -> None:
        state = RunState(run_id)
        target.program.note_completions = True
        self.runs[run_id] = _Run(target, state, parent)
        self.emit(run_id, "workflow:start")
        commands = start_run(target.program, state, target.bind(inputs), parent=parent)
        self.process(run_id, commands)

    async def loop(self) -> None:
        for _ in range(self.max_steps):
            if self.failure is not None:
                return
            if self.pending:
                self.apply(*self.pending.popleft())
            elif self.ready:
                await self.execute_next()
            elif not self.fire_next_timer():
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
        status = "completed" if isinstance(event, p.NodeCompleted) else "failed"
        self.trace.append(
            TraceEntry(
                command.node_id, command.attempt, started, self.clock.datetime(), status, run_id
            )
        )
        self.apply(run_id, event)

    def fire_next_timer(self) -> bool:
        while self.timers:
            due, _, run_id, timer_id = heapq.heappop(self.timers)
            if timer_id in self.runs[run_id].state.sections["timers"]:
                self.clock.now = max(self.clock.now, due)
                self.apply(run_id, p.TimerFired(timer_id))
                return True
        return False

    def apply(self, run_id: str, event: p.Event) -> None:
        run = self.runs[run_id]
        self.process(run_id, handle_event(run.target.program, run.state, event))

    def process(self, run_id: str, commands: list[p.Command]) -> None:
        for command in commands:
            if isinstance(command, p.ExecuteNode):
                self.ready.append((run_id, command))
            elif isinstance(command, p.StartTimer):
                self._seq += 1
                heapq.heappush(
                    self.timers,
                    (self.clock.now + command.delay, self._seq, run_id, command.timer_id),
                )
            elif isinstance(command, p.AwaitSignal):
                self.answer(run_id, command)
            elif isinstance(command, p.StartChild):
                self.start_child(run_id, command)
            elif isinstance(command, p.CancelChild):
                self.pending.append((command.child_run_id, p.CancelRequested("parent finished")))
            elif isinstance(command, p.FinishRun):
                self.finished(run_id, command)
            elif isinstance(command, p.Note):
                self.note(run_id, command)

    def note(self, run_id: str, note: p.Note) -> None:
        if note.type != "node:complete":
            self.emit(run_id, note.type, note.node_id, note.attempt, note.data)
            return
        specs = self.runs[run_id].target.program.specs
        if note.node_id is not None and specs[note.node_id].kind in _VISIBLE:
            self.visited.append(note.node_id)

    def answer(self, run_id: str, command: p.AwaitSignal) -> None:
        run = self.runs[run_id]
        spec = run.target.program.specs[command.node_id]
        script = self.webhooks if spec.kind == "webhook" else self.signals
        keys = [command.name, command.node_id, str(spec.params.get("path", ""))]
        key = next((k for k in keys if script.has(k)), None)
        if key is not None:
            payload = script.take(key, RunResult.of(run.state).state)
            self.pending.append((run_id, p.SignalReceived(wait_name(spec), payload)))
        elif spec.params.get("timeout") is None:
            kind = "webhook" if spec.kind == "webhook" else "signal"
            self.failure = SimulationError(
                f"no {kind} scripted for wait {command.name!r} (node {command.node_id!r}) "
                f"and it has no timeout; pass {kind}s={{{command.name!r}: ...}} to simulate()"
            )

    def start_child(self, run_id: str, command: p.StartChild) -> None:
        child = self.by_blueprint_id.get(command.blueprint_id)
        if child is None:
            error = {
                "type": "flowkit._errors.ResumeError",
                "mro": [],
                "message": f"no flow with blueprint id {command.blueprint_id!r}; "
                "pass it in flows=[...]",
            }
            self.pending.append(
                (run_id, p.ChildFinished(command.child_run_id, "failed", None, error))
            )
            return
        self.start(child, command.child_run_id, dict(command.inputs), run_id)

    def finished(self, run_id: str, command: p.FinishRun) -> None:
        self.emit(run_id, "workflow:finish", data={"status": command.status})
        parent = self.runs[run_id].parent
        if parent is not None:
            event = p.ChildFinished(run_id, command.status, command.output, command.error)
            self.pending.append((parent, event))

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
            _calls=self.calls,
            _uses=uses,
            _snapshot=state.to_dict(),
            _blueprint=self.runs[run_id].target.blueprint,
        )


def _mock_key(node: Any) -> str:
    return node if isinstance(node, str) else registry_name(node)


def _targets(target: Target, flows: list[Any]) -> list[Target]:
    found = [target]
    todo = [*target.children, *flows]
    while todo:
        resolved = resolve(todo.pop())
        found.append(resolved)
        todo.extend(resolved.children)
    return found


async def simulate_async(
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
    **inputs: Any,
) -> Simulation:
    """:func:`simulate` for async tests."""
    clock = VirtualClock(parse_start(start))
    resolved = resolve(target, registry)
    if workers is not None or faults is not None:
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
    )
    return await simulator.run(run_id, inputs)


def simulate(target: Any, **options: Any) -> Simulation:
    """Run ``target`` (a ``@flow``, ``Flow`` or ``Blueprint``) on virtual time; synchronous.

    >>> from flowkit import Flow
    >>> async def hello(name: str) -> str: return f"hi {name}"
    >>> sim = simulate(Flow("hi").sleep("nap", duration="365d").node("hello", hello)
    ...                .edge("nap", "hello"), name="ada")
    >>> sim.output, sim.elapsed.days, sim.visited
    ('hi ada', 365, ['nap', 'hello'])
    """
    try:
        return anyio.run(lambda: simulate_async(target, **options))
    except FlowkitError:
        raise

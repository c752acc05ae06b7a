"""``simulate(..., workers=N, faults=Faults(...))``: the distributed protocol under faults.

The simulator plays the broker: it holds the messages workers publish and
hands them, one at a time and in a seeded order, to real :class:`Worker`
objects sharing an in-memory store. Faults are injected between and inside
steps: crashed workers (before or after their commit), duplicated, redelivered,
reordered and delayed messages. Afterwards the invariants are checked: no
dispatch is created or completed twice, the run finished, and its output
equals the fault-free run's. A violation raises ``AssertionError`` naming the
seed, so a failing seed reproduces exactly.
"""

from __future__ import annotations

import random
from contextlib import asynccontextmanager
from datetime import timedelta
from typing import TYPE_CHECKING, Any

import attrs

from .. import _clock
from .._errors import FlowkitError, ResumeError
from .._serde import to_data
from ..core._machine import wait_names
from ..core._state import DELETED, FINISHED_VALUES, RunStatus
from ..shell._invoke import make_invoker
from ..shell._result import RunResult
from ..stores._memory import MemoryStore
from ..worker import Client, NodeMessage, Worker
from ._model import Call, Simulation, SimulationError, TraceEntry, registry_name
from ._script import (
    ARRIVAL,
    CANCEL,
    NO_ANSWER,
    TIMER,
    OpenWait,
    Signaller,
    VirtualClock,
    payload,
)

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Mapping

    from ..shell._target import Target


@attrs.frozen
class Faults:
    """Probabilities (0..1) of each fault per message, and whether to reorder deliveries."""

    crash: float = 0.0
    redeliver: float = 0.0
    duplicate: float = 0.0
    reorder: bool = False
    delay: float = 0.0


class _Crash(BaseException):
    """A simulated process death (not an Exception: nothing may catch it)."""


@attrs.define
class _Message:
    body: bytes
    key: str | None
    attempt: int = 1


class SimTransport:
    """A broker the simulator controls: sends append; deliveries are handed out by hand."""

    in_process = True  # every worker and client on it shares this process

    def __init__(self, rng: random.Random, faults: Faults) -> None:
        self.queue: list[_Message] = []
        self.rng = rng
        self.faults = faults
        self.crash_on_send = False
        self.dead_letters: list[tuple[bytes, str]] = []

    async def send(
        self,
        queue: str,
        body: bytes,
        *,
        key: str | None = None,
        headers: Any = None,
        delay: float | None = None,
        priority: int | None = None,
    ) -> None:
        if self.crash_on_send:
            raise _Crash
        self.queue.append(_Message(body, key))
        if self.rng.random() < self.faults.duplicate:
            self.queue.append(_Message(body, key))

    def receive(self, queue: str) -> Any:
        raise SimulationError("the simulator hands out deliveries itself")

    async def close(self) -> None:
        pass


class SimDelivery:
    def __init__(self, transport: SimTransport, message: _Message) -> None:
        self._transport = transport
        self._message = message
        self.body = message.body
        self.headers: Mapping[str, str] = {}
        self.key = message.key
        self.attempt = message.attempt
        self.settled = ""

    async def ack(self) -> None:
        self.settled = "ack"

    async def nack(self, requeue_after: float | None = None) -> None:
        self.settled = "nack"
        self._transport.queue.append(attrs.evolve(self._message, attempt=self.attempt + 1))

    async def extend(self, seconds: float) -> None:
        pass

    async def dead_letter(self, reason: str) -> None:
        self.settled = "dead"
        self._transport.dead_letters.append((self.body, reason))


Winners = dict[tuple[str, str, int], str]
"""(run id, ``any`` join, activation) -> the predecessor that won that race."""


class _Ledger:
    """What the store committed: each dispatch must be created and settled at most once.

    It also notes who won each race, so that the fault-free reference run can be
    steered to the same winners: a race's outcome is an input of the run, like a
    signal, and only runs with the same outcomes must agree.
    """

    def __init__(self, seed: int) -> None:
        self.seed = seed
        self.step = 0
        self.created: set[tuple[str, str]] = set()
        self.settled: set[tuple[str, str]] = set()
        self.winners: Winners = {}

    def record(self, run_id: str, delta: Any) -> None:
        for section, key, value in delta:
            if section == "nodes" and value is not DELETED and isinstance(value[3], str):
                self.winners.setdefault((run_id, key, int(value[0])), value[3])
            if section != "dispatches":
                continue
            seen = self.settled if value is DELETED else self.created
            if (run_id, key) in seen:
                verb = "settled" if value is DELETED else "created"
                raise AssertionError(
                    f"seed {self.seed}, step {self.step}: dispatch {key!r} of run {run_id!r} "
                    f"was {verb} twice (a completion applied twice)"
                )
            seen.add((run_id, key))


class RecordingStore:
    """Wraps a store; every committed delta goes through the ledger.

    A store that commits optimistically (``attempt``, see
    :class:`~flowkit.stores._protocol.CommitsOptimistically`) commits through its
    attempts too: they are recorded as well. A delta is recorded once its commit
    returned, so a commit that raised (an attempt's :class:`Conflict`) wrote
    nothing and records nothing.
    """

    def __init__(self, inner: Any, ledger: _Ledger) -> None:
        self._inner = inner
        self._ledger = ledger

    def __getattr__(self, name: str) -> Any:
        found = getattr(self._inner, name)
        if name == "attempt":  # only if the inner store has it: it stays optional
            return self._attempt
        return found

    @asynccontextmanager
    async def transaction(self, run_id: str) -> AsyncIterator[Any]:
        async with self._inner.transaction(run_id) as txn:
            yield self._recording(run_id, txn)

    def _attempt(self, run_id: str, version: int) -> Any:
        return self._recording(run_id, self._inner.attempt(run_id, version))

    def _recording(self, run_id: str, txn: Any) -> Any:
        """``txn``, its commits recorded in the ledger."""
        commit = txn.commit

        async def recorded(delta: Any, **options: Any) -> int:
            version = int(await commit(delta, **options))
            self._ledger.record(run_id, delta)
            return version

        txn.commit = recorded
        return txn


async def simulate_distributed(
    resolved: Target,
    target: Any,
    *,
    mocks: Mapping[Any, Any] | None,
    signals: Mapping[str, Any] | None,
    webhooks: Mapping[str, Any] | None,
    clock: VirtualClock,
    workers: int,
    faults: Faults | None,
    seed: int,
    max_steps: int,
    flows: list[Any],
    run_id: str,
    inputs: dict[str, Any],
    store: Any = None,
    winners: Winners | None = None,
    cancel_at: float | None = None,
) -> Simulation:
    """Run the real Worker/Client protocol under faults, then check the invariants.

    ``winners`` steers a fault-free run: a racer that did not win its race in
    the run being checked is delivered only when nothing else can be.
    """
    world = _World(
        resolved, flows, mocks, signals, webhooks, clock, workers, faults or Faults(), seed, store
    )
    world.winners = winners or {}
    world.cancel_due = cancel_at
    with _clock.use_clock(clock):
        sim = await world.run(run_id, inputs, max_steps)
    if faults is not None and (faults != Faults() or workers > 1):
        reference = await simulate_distributed(
            resolved,
            target,
            mocks=mocks,
            signals=signals,
            webhooks=webhooks,
            clock=VirtualClock(datetime_of(clock.start)),
            workers=1,
            faults=None,
            seed=seed,
            max_steps=max_steps,
            flows=flows,
            run_id=run_id,
            inputs=inputs,
            winners=world.ledger.winners,
            cancel_at=cancel_at,
        )
        _check_same_outcome(sim, reference, seed)
    return sim


def datetime_of(timestamp: float) -> Any:
    from datetime import UTC, datetime

    return datetime.fromtimestamp(timestamp, UTC)


def _check_same_outcome(sim: Simulation, reference: Simulation, seed: int) -> None:
    if (sim.status, to_data(sim.output)) != (reference.status, to_data(reference.output)):
        raise AssertionError(
            f"seed {seed}: under faults the run ended {sim.status.value} with "
            f"{sim.output!r}, but without faults {reference.status.value} with "
            f"{reference.output!r}"
        )


class _World:
    def __init__(
        self,
        target: Any,
        flows: list[Any],
        mocks: Mapping[Any, Any] | None,
        signals: Mapping[str, Any] | None,
        webhooks: Mapping[str, Any] | None,
        clock: VirtualClock,
        workers: int,
        faults: Faults,
        seed: int,
        store: Any,
    ) -> None:
        self.rng = random.Random(seed)
        self.seed = seed
        self.faults = faults
        self.clock = clock
        self.ledger = _Ledger(seed)
        self.store = RecordingStore(store if store is not None else MemoryStore(), self.ledger)
        self.transport = SimTransport(self.rng, faults)
        self.flows = [target, *flows]
        self.overrides = {
            (k if isinstance(k, str) else registry_name(k)): make_invoker(v)
            for k, v in (mocks or {}).items()
        }
        self.workers = [self._worker() for _ in range(workers)]
        self.client = Client(self.transport, self.store, flows=self.flows, lease=30.0)
        known = self.client.shell.flows.by_blueprint_id.values()
        self.signaller = Signaller(signals, webhooks, known, clock)
        self.reached: list[OpenWait] = []  # waits in the order they were first seen open
        self.cancel_due: float | None = None
        self.failure: FlowkitError | None = None
        self.trace: list[TraceEntry] = []
        self.calls: list[Call] = []
        self.visited: list[str] = []
        self.winners: Winners = {}

    def _worker(self) -> Worker:
        worker = Worker(self.flows, self.transport, self.store, lease=30.0)
        worker.executor.overrides = dict(self.overrides)
        execute = worker.executor.execute

        async def traced(run_id: str, target: Any, state: Any, command: Any, **options: Any) -> Any:
            started = self.clock.datetime()
            self.calls.append(Call(command.node_id, command.attempt, command.args, command.kwargs))
            event = await execute(run_id, target, state, command, **options)
            ok = type(event).__name__ == "NodeCompleted"
            self.trace.append(
                TraceEntry(
                    command.node_id,
                    command.attempt,
                    started,
                    self.clock.datetime(),
                    "completed" if ok else "failed",
                    run_id,
                )
            )
            return event

        worker.executor.execute = traced  # type: ignore[method-assign]
        return worker

    async def run(self, run_id: str, inputs: dict[str, Any], max_steps: int) -> Simulation:
        await self.client.start(self.flows[0], run_id=run_id, **inputs)
        for step in range(max_steps):
            self.ledger.step = step
            run_id = await self._newest(run_id)
            if self.failure is not None or await self._finished(run_id):
                return await self._result(run_id)
            if self.transport.queue:
                await self._deliver_one()
            elif not await self._answer_waits(run_id) and not await self._advance_time(run_id):
                return await self._result(run_id)  # nothing can move
        raise SimulationError(f"seed {self.seed}: no end within max_steps={max_steps}")

    async def _newest(self, run_id: str) -> str:
        """The run ``run_id`` continued as (``flow.continue_as_new``), along its chain."""
        while True:
            loaded = await self.store.load(run_id)
            following = loaded[0].header.get("continued_as") if loaded is not None else None
            if following is None:
                return run_id
            run_id = str(following)

    async def _finished(self, run_id: str) -> bool:
        info = await self.store.info(run_id)
        return info is not None and info.status in FINISHED_VALUES and not self.transport.queue

    async def _deliver_one(self) -> None:
        queue = self.transport.queue
        index = self.rng.randrange(len(queue)) if self.faults.reorder else await self._next_index()
        message = queue.pop(index)
        if self.rng.random() < self.faults.delay:
            queue.append(message)
            return
        slot = self.rng.randrange(len(self.workers))
        delivery = SimDelivery(self.transport, message)
        crash = self.rng.random() < self.faults.crash
        try:
            if crash:
                self.transport.crash_on_send = self.rng.random() < 0.5
                if not self.transport.crash_on_send:
                    raise _Crash  # died before doing anything
            await self.workers[slot].handle(delivery)
        except _Crash:
            self.workers[slot] = self._worker()  # a fresh process: empty caches
            queue.append(attrs.evolve(message, attempt=message.attempt + 1))
        finally:
            self.transport.crash_on_send = False
        if delivery.settled == "ack" and self.rng.random() < self.faults.redeliver:
            queue.append(attrs.evolve(message, attempt=message.attempt + 1))

    async def _next_index(self) -> int:
        """The first message that is not a racer bound to lose (0 when all are)."""
        if self.winners:
            for index, message in enumerate(self.transport.queue):
                if not await self._loses_race(message):
                    return index
        return 0

    async def _loses_race(self, message: _Message) -> bool:
        node = NodeMessage.decode(message.body)
        loaded = await self.store.load(node.run_id)
        target = self.client.shell.flows.by_digest.get(node.blueprint_digest)
        if loaded is None or target is None:
            return False
        program, records = target.program, loaded[0].sections["nodes"]
        for edge in program.out[node.node_id]:
            join = edge.target
            if edge.back or program.join[join] != "any" or program.n_preds[join] < 2:
                continue
            record = records.get(join) or [0, 0, 0, 0, "pending"]
            winner = self.winners.get((node.run_id, join, int(record[0]) + 1))
            if not record[3] and winner not in (None, node.node_id):
                return True
        return False

    async def _answer_waits(self, run_id: str) -> bool:
        """Send the first open wait (in the order first seen) its scripted answer, if it has one."""
        for wait in await self._open_waits(run_id):
            state = await self._state(wait.run_id)
            answer = self.signaller.answer(wait, self._spec(state, wait))
            if answer is not NO_ANSWER:
                await self.client.signal(wait.run_id, wait.name, payload(answer, state))
                return True
        return False

    async def _open_waits(self, run_id: str) -> list[OpenWait]:
        """The waits open in the run and its descendants, oldest first.

        Waits first seen together are ordered as their nodes are in the
        blueprint, the order in which one transition reaches them.
        """
        seen: list[OpenWait] = []
        for candidate in await self._run_ids(run_id):
            state = await self._state(candidate)
            order = self.client.shell.target_of(state).program.blueprint_order
            waits = state.sections["waits"].items()
            found = [OpenWait(candidate, name, w["node"], w["act"]) for name, w in waits]
            seen.extend(sorted(found, key=lambda w: order.index(w.node_id)))
        still_open = set(seen)
        self.reached = [w for w in self.reached if w in still_open]
        self.reached.extend(w for w in seen if w not in self.reached)
        return list(self.reached)

    async def _state(self, run_id: str) -> Any:
        loaded = await self.store.load(run_id)
        if loaded is None:
            raise SimulationError(f"run {run_id!r} vanished from the store")
        return loaded[0]

    def _spec(self, state: Any, wait: OpenWait) -> Any:
        return self.client.shell.target_of(state).program.specs[wait.node_id]

    async def _run_ids(self, run_id: str) -> list[str]:
        found, todo = [], [run_id]
        while todo:
            current = todo.pop()
            found.append(current)
            loaded = await self.store.load(current)
            if loaded is not None:
                todo.extend(loaded[0].sections["children"])
        return found

    async def _advance_time(self, run_id: str) -> bool:
        """Jump to the next ``cancel_at``, due timer or expired lease, or signal arrival.

        At one instant they go in that order, as in the single-process simulator.
        """
        timers = await self.store.due_timers(float("inf"), limit=1)
        leases = await self.store.expired_leases(float("inf"), limit=1)
        moves = [(t.due_at, TIMER) for t in timers]
        moves += [(lease.expires_at, TIMER) for lease in leases]
        if self.cancel_due is not None:
            moves.append((self.cancel_due, CANCEL))
        arrival = self.signaller.next_arrival()
        if arrival is not None:
            moves.append((arrival, ARRIVAL))
        if not moves:
            return False
        due, move = min(moves)
        self.clock.now = max(self.clock.now, due)
        if move == CANCEL:
            self.cancel_due = None
            await self.client.cancel(run_id)
        elif move == TIMER:
            worker = self.workers[self.rng.randrange(len(self.workers))]
            await worker.tick()
        else:
            await self._deliver_arrival(run_id)
        return True

    async def _deliver_arrival(self, run_id: str) -> None:
        """A scripted ``at()`` signal arrives: its wait gets it, or the run buffers it."""
        name, arrival = self.signaller.pop_arrival()
        try:
            target = await self.client.shell.signal_target(run_id, name)
        except ResumeError:
            state = await self._state(run_id)
            declared = wait_names(self.client.shell.target_of(state).program)
            self.failure = self.signaller.nowhere_to_go(name, arrival, run_id, declared)
            return
        state = await self._state(target)
        await self.client.signal(target, name, payload(arrival.value, state))

    async def _unanswered(self, run_id: str) -> SimulationError | None:
        """Why the run is stuck at a wait nobody will answer (None if it was told never())."""
        for wait in await self._open_waits(run_id):
            state = await self._state(wait.run_id)
            error = self.signaller.unanswered(wait, self._spec(state, wait))
            if error is not None:
                return error
        return None

    async def _result(self, run_id: str) -> Simulation:
        loaded = await self.store.load(run_id)
        if loaded is None:
            raise SimulationError(f"run {run_id!r} vanished from the store")
        outcome = RunResult.of(loaded[0])
        status, error = outcome.status, outcome.error
        if self.failure is None and not status.finished:
            self.failure = await self._unanswered(run_id)
        if self.failure is not None:
            status, error = RunStatus.FAILED, self.failure
        elif (
            not status.finished
            and not await self._open_waits(run_id)
            and not _deferred(loaded[0].sections["dispatches"])
        ):
            raise AssertionError(
                f"seed {self.seed}: the run stalled ({outcome.status.value}) with nothing "
                "left to deliver, fire or signal"
            )
        uses = {
            n.id: n.uses or ""
            for f in self.client.shell.flows.by_digest.values()
            for n in f.blueprint.nodes
        }
        visited = [t.node_id for t in self.trace if t.status == "completed"]
        return Simulation(
            run_id=run_id,
            status=status,
            output=outcome.output,
            error=error,
            elapsed=timedelta(seconds=self.clock.now - self.clock.start),
            visited=visited,
            trace=self.trace,
            events=[],
            state=outcome.state,
            seed=self.seed,
            _queries=dict(self.client.shell.target_of(loaded[0]).queries or {}),
            _calls=self.calls,
            _uses=uses,
            _snapshot=outcome.snapshot(),
            _blueprint=self.client.shell.target_of(loaded[0]).blueprint,
        )


def _deferred(dispatches: dict[str, Any]) -> bool:
    """Whether a node awaits its completion token (the run is rightly awaiting)."""
    return bool(dispatches) and all(d.get("deferred") for d in dispatches.values())

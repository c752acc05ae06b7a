"""How the Runtime drives runs: task groups, eager node execution, timers, persistence."""

from __future__ import annotations

import heapq
import math
import os
import socket
from abc import abstractmethod
from collections import deque
from functools import partial
from typing import TYPE_CHECKING, Any

import anyio
import anyio.abc
import anyio.lowlevel

from .. import _clock as clock
from ..core import _protocol as p
from ..core._continue import continuation_command
from ..core._deferral import deferred
from ..core._machine import handle_event
from ..core._state import RunState, RunStatus
from ..shell._commands import Interpreter
from ..shell._durable import Replica, RunMigrated, dispatch_command
from ..shell._events import EventBus
from ..shell._execute import Executor
from ..shell._history import Origin
from ._eager import NoticeBlocking, Resume

if TYPE_CHECKING:
    from collections.abc import Callable, Sequence

    from ..core._program import Program
    from ..shell._middleware import Middleware
    from ..shell._target import Target


class Run(Replica):
    """A run known to this runtime, with the task group driving it (if any).

    Its events and lock are made when first needed: most runs never wait on them,
    and a run that is created, driven and finished at once should cost no more
    than its state.
    """

    __slots__ = (
        "_idle",
        "_stepping",
        "active",
        "parent",
        "quiet",
        "recover",
        "scopes",
        "target",
        "tg",
    )

    def __init__(
        self,
        program: Program,
        target: Target,
        state: RunState,
        version: int,
        parent: str | None = None,
    ) -> None:
        super().__init__(program, state, version)
        self.target = target
        self.parent = parent
        self.tg: anyio.abc.TaskGroup | None = None
        self.active = 0  # tasks running in tg; the drive ends when it drops to zero
        # set when active drops to zero; made by a drive that has tasks to wait for
        self.quiet: anyio.Event | None = None
        # set when the drive in progress ends; None while no drive is (or is about to be)
        self._idle: anyio.Event | None = None
        self.scopes: dict[str, anyio.CancelScope] = {}
        self.recover = False  # set for runs loaded with dispatches another process left
        self._stepping: anyio.Lock | None = None

    @property
    def stepping(self) -> anyio.Lock:
        """One step of the run at a time here: a step applied to this copy while another
        one's commit is in flight would commit a decision made on uncommitted state."""
        if self._stepping is None:
            self._stepping = anyio.Lock()
        return self._stepping

    def busy(self) -> anyio.Event:
        """Mark the run as being driven; the event its drive sets when it ends."""
        if self._idle is None or self._idle.is_set():
            self._idle = anyio.Event()
        return self._idle

    def driving(self) -> anyio.Event | None:
        """The event the drive in progress sets when it ends; None if none is."""
        idle = self._idle
        return None if idle is None or idle.is_set() else idle

    def idle_now(self, idle: anyio.Event) -> None:
        """The drive that ``busy()`` returned ``idle`` to has ended: wake whoever waits,
        and keep no event while the run is not driven (a finished run costs its state)."""
        idle.set()
        if self._idle is idle:
            self._idle = None

    async def wait_idle(self) -> None:
        """Wait until no drive of the run is in progress here (a checkpoint, at least)."""
        idle = self._idle
        if idle is None:
            await anyio.lowlevel.checkpoint()
        else:
            await idle.wait()


HEARTBEAT_EVERY = 5.0
"""Seconds between two commits of one node's heartbeat details (Runtime with a store)."""


class Driver(Interpreter[Run]):
    """The machinery behind :class:`flowkit.Runtime`: drives runs in task groups and
    carries out the core's commands; the Runtime says how child runs start and how a
    parent hears of its child's finish."""

    def __init__(
        self,
        *,
        middleware: Sequence[Middleware],
        store: Any,
        max_concurrency: int | None,
        poll_interval: float,
    ) -> None:
        super().__init__()
        self.poll_interval = poll_interval
        self.worker_id = f"runtime@{socket.gethostname()}:{os.getpid()}"
        """Who runs nodes here, as run history records it."""
        self.events = EventBus()
        self.store = store
        self._executor = Executor(
            middleware=middleware,
            max_concurrency=max_concurrency,
            events=self.events,
            plain_data=store is not None,
            local_limits=True,
        )
        self._runs: dict[str, Run] = {}
        # (run id, dispatch id) -> when its heartbeat details were last committed (or
        # first recorded): a stored run's long nodes commit theirs every HEARTBEAT_EVERY
        self._beat_at: dict[tuple[str, str], float] = {}
        if store is not None:
            self._executor.on_heartbeat = self._heartbeat
        self._timers: list[tuple[float, str, str]] = []
        self._wakeups: set[anyio.Event] = set()  # one per scheduler loop asleep
        self._tg: anyio.abc.TaskGroup | None = None
        self._finish_events: dict[str, anyio.Event] = {}

    @abstractmethod
    async def _start_child(self, parent: Run, command: p.StartChild) -> None:
        """Create and drive the child run ``command`` asks for."""

    @abstractmethod
    async def _continue(self, run: Run, command: p.ContinueAsNew) -> None:
        """Create the run ``run`` continues as, report it to ``run``, and have it driven."""

    @abstractmethod
    async def _notify_parent(self, run: Run) -> None:
        """If ``run`` is a child that finished, tell its parent."""

    # -- stepping -------------------------------------------------------------
    async def _step(
        self,
        run: Run,
        event: p.Event,
        origin: Origin | None = None,
        check: Callable[[RunState], None] | None = None,
    ) -> list[p.Command]:
        """Apply ``event``; ``check(state)`` may refuse it (by raising) on the run as stored."""
        if self.store is None:
            if check is not None:
                check(run.state)
            commands = handle_event(run.program, run.state, event)
            run.state.journal.clear()
            return commands
        async with run.stepping:
            try:
                return await run.step(self.store, event, origin=origin, check=check)
            except RunMigrated:  # by another process: drop this copy, it has the old program
                if self._runs.get(run.run_id) is run:
                    del self._runs[run.run_id]
                raise

    async def _advance(
        self, run: Run, event: p.Event, check: Callable[[RunState], None] | None = None
    ) -> None:
        """Feed an event from outside the run's task group; wait until it settles."""
        await self._drive(run, await self._step(run, event, check=check))

    async def _deliver(self, run: Run, event: p.Event) -> None:
        """Feed an event from anywhere, without waiting for the run to settle."""
        commands = await self._step(run, event)
        if run.tg is not None:
            self._spawn(run, self._carry_out(run, commands))
        else:
            await self._drive(run, commands)

    # -- driving --------------------------------------------------------------
    async def _drive(self, run: Run, commands: list[p.Command]) -> None:
        if run.recover:
            run.recover = False
            commands = _recovery(run) + commands
        if run.tg is not None:
            self._spawn(run, self._carry_out(run, commands))
            await run.wait_idle()
            return
        idle = run.busy()
        run.quiet = None
        group: anyio.abc.TaskGroup | None = None
        try:
            async with anyio.create_task_group() as group:
                run.tg = group
                ready = self._carry_out(run, commands)
                if ready:  # the first nodes run in this task: no task of their own
                    run.active += 1
                    await self._counted(run, self._worker, (run, deque(ready)))
                while run.active:
                    # Keep the group open while tasks run: trio refuses new tasks once
                    # the body has exited, and signals may add work until then, even
                    # after the run went quiet but before this task saw it.
                    run.quiet = anyio.Event()
                    await run.quiet.wait()
                run.tg = None  # closed to new work from here on
                run.quiet = None
        finally:
            if run.tg is group:  # another drive may own the run by now
                run.tg = None
            run.idle_now(idle)
            self._evict(run)
        await self._notify_parent(run)

    def _evict(self, run: Run) -> None:
        """With a store, a run that holds no task is dropped from memory (it costs nothing)."""
        idle = run.tg is None and deferred(run.state.sections["dispatches"])
        if self.store is not None and idle and self._runs.get(run.run_id) is run:
            del self._runs[run.run_id]

    def _spawn(self, run: Run, ready: list[p.ExecuteNode]) -> None:
        if ready:
            self._start_task(run, self._worker, run, deque(ready))

    def _start_task(self, run: Run, fn: Any, *args: Any) -> None:
        """Start ``fn(*args)`` in the run's task group, counted so the drive waits for it."""
        assert run.tg is not None
        run.active += 1
        run.tg.start_soon(self._counted, run, fn, args)

    async def _counted(self, run: Run, fn: Any, args: tuple[Any, ...]) -> None:
        try:
            await fn(*args)
        finally:
            run.active -= 1
            if not run.active and run.quiet is not None:
                run.quiet.set()

    def _carry_out(self, run: Run, commands: list[p.Command]) -> list[p.ExecuteNode]:
        """Do what the core asked; returns the node executions to start."""
        assert run.tg is not None
        return self.interpret(run, commands)

    # -- primitives -------------------------------------------------------------
    def cancel_node(self, run: Run, command: p.CancelNode) -> None:
        self._cancel_scope(run, command.dispatch_id)

    def cancel_timer(self, run: Run, command: p.CancelTimer) -> None:
        self._cancel_scope(run, command.timer_id)

    def _cancel_scope(self, run: Run, key: str) -> None:
        scope = run.scopes.pop(key, None)
        if scope is not None:
            scope.cancel()

    def start_child(self, run: Run, command: p.StartChild) -> None:
        self._start_task(run, self._start_child, run, command)

    def cancel_child(self, run: Run, command: p.CancelChild) -> None:
        child = self._runs.get(command.child_run_id)
        if child is not None:
            self._start_task(run, self._advance, child, p.CancelRequested("parent finished"))

    def continue_as_new(self, run: Run, command: p.ContinueAsNew) -> None:
        self._start_task(run, self._continue, run, command)

    def finish_run(self, run: Run, command: p.FinishRun) -> None:
        waiting = self._finish_events.pop(run.run_id, None)
        if waiting is not None:
            waiting.set()
        if command.status == RunStatus.CANCELLED:
            self._emit(run.run_id, "workflow:cancel")
        self._emit(run.run_id, "workflow:finish", data={"status": command.status})

    def note(self, run: Run, command: p.Note) -> None:
        if self.events.active:
            self._emit(
                run.run_id, command.type, command.node_id, command.attempt, data=command.data
            )

    # -- nodes ----------------------------------------------------------------
    async def _worker(self, run: Run, ready: deque[p.ExecuteNode]) -> None:
        """Execute ready nodes one by one in this task (see ``_eager``).

        When a node blocks, the nodes still waiting are handed to a new worker,
        so at any cancellation point this worker holds nothing but that node.
        ``CancelNode`` cancels the worker running the dispatch.
        """
        scopes = run.scopes
        with anyio.CancelScope() as scope:
            while ready:
                command = ready.popleft()
                record = run.state.sections["dispatches"].get(command.dispatch_id)
                if record is None or record.get("deferred"):
                    continue  # cancelled before it started, or it ran and awaits completion
                scopes[command.dispatch_id] = scope
                started = clock.now() if self.store is not None else 0.0  # for its history
                coro = self._executor.execute(run.run_id, run.target, run.state, command)
                try:  # most nodes finish without ever blocking: no wrapper for them
                    yielded = coro.send(None)
                except StopIteration as done:
                    event = done.value
                else:  # it blocked: hand the other ready nodes to a new worker
                    hand_off = partial(self._hand_off, run, ready)
                    event = await NoticeBlocking(Resume(coro, yielded), hand_off)
                scopes.pop(command.dispatch_id, None)
                if self._beat_at:
                    self._beat_at.pop((run.run_id, command.dispatch_id), None)
                if self.store is None:
                    commands = handle_event(run.program, run.state, event)
                    run.state.journal.clear()
                else:
                    origin = Origin(self.worker_id, started, clock.now())
                    stepped = self._step(run, event, origin)
                    commands = await NoticeBlocking(stepped, partial(self._hand_off, run, ready))
                ready.extend(self._carry_out(run, commands))

    def _hand_off(self, run: Run, ready: deque[p.ExecuteNode]) -> None:
        """A worker's node blocks: a new worker takes the nodes still waiting."""
        if ready:
            self._spawn(run, list(ready))
            ready.clear()

    # -- heartbeat details ------------------------------------------------------
    def _heartbeat(self, run_id: str, dispatch_id: str, details: Any) -> None:
        """Commit a long node's details once it has heartbeat for HEARTBEAT_EVERY seconds,
        then at most that often (a failing attempt's last details go with its failure)."""
        run = self._runs.get(run_id)
        if run is None or run.tg is None:
            return
        key = (run_id, dispatch_id)
        now = clock.now()
        since = self._beat_at.setdefault(key, now)
        if now - since >= HEARTBEAT_EVERY:
            self._beat_at[key] = now
            self._start_task(run, self._commit_heartbeat, run, dispatch_id, details)

    async def _commit_heartbeat(self, run: Run, dispatch_id: str, details: Any) -> None:
        commands = await self._step(run, p.NodeHeartbeat(dispatch_id, details))
        self._spawn(run, self._carry_out(run, commands))

    # -- timers ---------------------------------------------------------------
    def start_timer(self, run: Run, command: p.StartTimer) -> None:
        if command.purpose == "retry":
            scope = anyio.CancelScope()
            run.scopes[command.timer_id] = scope
            self._start_task(run, self._retry_timer, run, command, scope)
            return
        due = clock.now() + command.delay
        if self.store is not None:  # the store indexes every timer: remember only the earliest
            if not self._timers or due < self._timers[0][0]:
                heapq.heappush(self._timers, (due, "", ""))
                self._wake_schedulers()
            return
        heapq.heappush(self._timers, (due, run.run_id, command.timer_id))
        self._wake_schedulers()

    def _wake_schedulers(self) -> None:
        for wakeup in self._wakeups:
            wakeup.set()

    async def _retry_timer(self, run: Run, command: p.StartTimer, scope: anyio.CancelScope) -> None:
        with scope:
            await anyio.sleep(command.delay)
            run.scopes.pop(command.timer_id, None)
            self._spawn(
                run, self._carry_out(run, await self._step(run, p.TimerFired(command.timer_id)))
            )

    def _pop_due_local(self, now: float) -> list[tuple[str, str]]:
        due = []
        while self._timers and self._timers[0][0] <= now:
            _, run_id, timer_id = heapq.heappop(self._timers)
            due.append((run_id, timer_id))
        return due

    async def _sleep_until_next_timer(self) -> None:
        """Sleep until the earliest timer is due, or a new timer may be earlier.

        Several scheduler loops may sleep at once (each ``rt.scheduler()``
        block runs one): a new timer wakes them all.
        """
        wakeup = anyio.Event()
        self._wakeups.add(wakeup)
        try:
            delay = self._timers[0][0] - clock.now() if self._timers else math.inf
            # at most a poll apart: other processes set timers in a store, and the clock
            # may jump (or be replaced: ``flowkit.testing`` runs on virtual time)
            delay = min(delay, self.poll_interval)
            with anyio.move_on_after(max(0.0, delay)):
                await wakeup.wait()
        finally:
            self._wakeups.discard(wakeup)

    def _emit(
        self,
        run_id: str,
        type_: str,
        node_id: str | None = None,
        attempt: int | None = None,
        *,
        duration: float | None = None,
        data: Any = None,
    ) -> None:
        if self.events.active:
            run = self._runs.get(run_id)
            header = run.state.header if run is not None else None
            self.events.emit_for(run_id, type_, header, node_id, attempt, duration, data)


def _recovery(run: Run) -> list[p.Command]:
    """ExecuteNode commands for dispatches a previous process left in flight (not those
    that await their completion token), and the ContinueAsNew of a continuation it left
    unreported."""
    sections = run.state.sections
    commands: list[p.Command] = [
        dispatch_command(run.run_id, d, record)
        for d, record in sections["dispatches"].items()
        if not record.get("deferred")  # ran: it awaits its completion token
    ]
    for record in sections["children"].values():
        if record.get("continuation"):
            commands.append(continuation_command(run.run_id, run.state.header, record))
    return commands

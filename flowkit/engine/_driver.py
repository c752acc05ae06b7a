"""How the Runtime drives runs: task groups, eager node execution, timers, persistence."""

from __future__ import annotations

import heapq
import math
import time
from collections import deque
from typing import TYPE_CHECKING, Any

import anyio
import anyio.abc

from .._errors import describe
from .._serde import SerializationError, to_data
from . import _protocol as p
from ._context import Context, NodeContext, reset_current, set_current
from ._core import handle_event
from ._durable import Replica
from ._eager import NoticeBlocking
from ._events import Event, EventBus
from ._middleware import Middleware, Pipeline
from ._state import RunState, RunStatus

if TYPE_CHECKING:
    from collections.abc import Sequence

    from ._program import Program
    from ._target import Target


class Run(Replica):
    """A run known to this runtime, with the task group driving it (if any)."""

    __slots__ = (
        "active",
        "finished",
        "idle",
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
        self.quiet = anyio.Event()
        self.idle = anyio.Event()
        self.idle.set()
        self.finished = anyio.Event()
        if state.finished:
            self.finished.set()
        self.scopes: dict[str, anyio.CancelScope] = {}
        self.recover = False  # set for runs loaded with dispatches another process left


class Driver:
    """The machinery behind :class:`flowkit.Runtime`."""

    def __init__(
        self, *, middleware: Sequence[Middleware], store: Any, max_concurrency: int | None
    ) -> None:
        self.events = EventBus()
        self.store = store
        self._pipeline = Pipeline(middleware)
        self._limiter = anyio.CapacityLimiter(max_concurrency) if max_concurrency else None
        self._runs: dict[str, Run] = {}
        self._timers: list[tuple[float, str, str]] = []
        self._wakeup = anyio.Event()
        self._tg: anyio.abc.TaskGroup | None = None
        self._finish_events: dict[str, anyio.Event] = {}

    async def _start_child(self, parent: Run, command: p.StartChild) -> None:
        raise NotImplementedError

    async def _notify_parent(self, run: Run) -> None:
        raise NotImplementedError

    # -- stepping -------------------------------------------------------------
    async def _step(self, run: Run, event: p.Event) -> list[p.Command]:
        if self.store is None:
            commands = handle_event(run.program, run.state, event)
            run.state.journal.clear()
            return commands
        return await run.step(self.store, event)

    async def _advance(self, run: Run, event: p.Event) -> None:
        """Feed an event from outside the run's task group; wait until it settles."""
        await self._drive(run, await self._step(run, event))

    async def _deliver(self, run: Run, event: p.Event) -> None:
        """Feed an event from anywhere, without waiting for the run to settle."""
        if run.tg is not None:
            self._spawn(run, self._carry_out(run, await self._step(run, event)))
        else:
            await self._advance(run, event)

    # -- driving --------------------------------------------------------------
    async def _drive(self, run: Run, commands: list[p.Command]) -> None:
        if run.recover:
            run.recover = False
            commands = _recovery(run) + commands
        if run.tg is not None:
            self._spawn(run, self._carry_out(run, commands))
            await run.idle.wait()
            return
        idle = run.idle = anyio.Event()
        run.quiet = anyio.Event()
        try:
            async with anyio.create_task_group() as tg:
                run.tg = tg
                self._spawn(run, self._carry_out(run, commands))
                if run.active:
                    # Keep the group open while tasks run: trio refuses new tasks once
                    # the body has exited, and signals may add work until then.
                    await run.quiet.wait()
                run.tg = None  # closed to new work from here on
        finally:
            run.tg = None
            idle.set()
            self._evict(run)
        await self._notify_parent(run)

    def _evict(self, run: Run) -> None:
        """With a store, a run that holds no task is dropped from memory (it costs nothing)."""
        if self.store is not None and run.tg is None and not run.state.sections["dispatches"]:
            if self._runs.get(run.run_id) is run:
                del self._runs[run.run_id]

    def _spawn(self, run: Run, ready: deque[p.ExecuteNode]) -> None:
        if ready:
            self._start_task(run, self._worker, run, ready)

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
            if not run.active:
                run.quiet.set()

    def _carry_out(self, run: Run, commands: list[p.Command]) -> deque[p.ExecuteNode]:
        """Do what the core asked; returns the node executions to start."""
        ready: deque[p.ExecuteNode] = deque()
        tg = run.tg
        assert tg is not None
        for command in commands:
            if type(command) is p.ExecuteNode:
                ready.append(command)
            else:
                self._other_command(run, tg, command)
        return ready

    def _other_command(self, run: Run, tg: anyio.abc.TaskGroup, command: p.Command) -> None:
        if isinstance(command, p.Note):
            if self.events.active:
                self._emit(
                    run.run_id, command.type, command.node_id, command.attempt, data=command.data
                )
        elif isinstance(command, p.CancelNode | p.CancelTimer):
            key = command.dispatch_id if isinstance(command, p.CancelNode) else command.timer_id
            scope = run.scopes.pop(key, None)
            if scope is not None:
                scope.cancel()
        elif isinstance(command, p.StartTimer):
            self._start_timer(run, tg, command)
        elif isinstance(command, p.StartChild):
            self._start_task(run, self._start_child, run, command)
        elif isinstance(command, p.CancelChild):
            child = self._runs.get(command.child_run_id)
            if child is not None:
                self._start_task(run, self._advance, child, p.CancelRequested("parent finished"))
        elif isinstance(command, p.FinishRun):
            run.finished.set()
            waiting = self._finish_events.pop(run.run_id, None)
            if waiting is not None:
                waiting.set()
            if command.status == RunStatus.CANCELLED:
                self._emit(run.run_id, "workflow:cancel")
            self._emit(run.run_id, "workflow:finish", data={"status": command.status})

    # -- nodes ----------------------------------------------------------------
    async def _worker(self, run: Run, ready: deque[p.ExecuteNode]) -> None:
        """Execute ready nodes one by one in this task (see ``_eager``).

        When a node blocks, the nodes still waiting are handed to a new worker,
        so at any cancellation point this worker holds nothing but that node.
        ``CancelNode`` cancels the worker running the dispatch.
        """

        def hand_off() -> None:
            if ready:
                self._spawn(run, deque(ready))
                ready.clear()

        scopes = run.scopes
        with anyio.CancelScope() as scope:
            while ready:
                command = ready.popleft()
                if command.dispatch_id not in run.state.sections["dispatches"]:
                    continue  # cancelled before it started
                scopes[command.dispatch_id] = scope
                event = await NoticeBlocking(self._call(run, command), hand_off)
                scopes.pop(command.dispatch_id, None)
                if self.store is None:
                    commands = handle_event(run.program, run.state, event)
                    run.state.journal.clear()
                else:
                    commands = await NoticeBlocking(self._step(run, event), hand_off)
                ready.extend(self._carry_out(run, commands))

    async def _call(self, run: Run, command: p.ExecuteNode) -> p.Event:
        if self._limiter is not None:
            async with self._limiter:
                return await self._call_node(run, command)
        return await self._call_node(run, command)

    async def _call_node(self, run: Run, command: p.ExecuteNode) -> p.Event:
        target = run.target
        spec = run.program.specs[command.node_id]
        uses = spec.uses or ""
        invoke = target.fallbacks[uses] if command.fallback else target.invokers[uses]
        ctx = NodeContext(
            run.run_id,
            command.node_id,
            command.attempt,
            command.idempotency_key,
            Context(run.state.context),
        )
        if command.fallback:
            ctx.error = _last_error(run, command)
        timeout = spec.config.timeout
        observed = self.events.active
        started = time.perf_counter() if observed else 0.0
        if observed:
            self._emit(run.run_id, "node:start", command.node_id, command.attempt)
        token = set_current(ctx)
        try:
            if timeout is not None:
                ctx.deadline = time.time() + timeout
                with anyio.fail_after(timeout):
                    output = await self._invoke(invoke, command, ctx)
            else:
                output = await self._invoke(invoke, command, ctx)
            return self._completed(command, output, ctx, started if observed else None)
        except Exception as exc:
            return p.NodeFailed(
                command.dispatch_id,
                _failure(exc, command, timeout),
                retryable=not isinstance(exc, SerializationError),
            )
        finally:
            reset_current(token)

    def _completed(
        self, command: p.ExecuteNode, output: Any, ctx: NodeContext, started: float | None
    ) -> p.NodeCompleted:
        if started is not None:
            self._emit(
                ctx.run_id,
                "node:finish",
                command.node_id,
                command.attempt,
                duration=time.perf_counter() - started,
            )
        action = None
        if type(output).__name__ == "Action" and hasattr(output, "name"):
            action, output = output.name, output.value
        writes = ctx.state.writes
        if self.store is not None:  # what crosses a process boundary is plain data
            output = to_data(output)
            writes = to_data(writes)
        if writes or ctx.state.deletes:
            return p.NodeCompleted(
                command.dispatch_id,
                output,
                action,
                dict(writes),
                tuple(sorted(ctx.state.deletes)),
                command.fallback,
            )
        return p.NodeCompleted(command.dispatch_id, output, action, None, (), command.fallback)

    async def _invoke(self, invoke: Any, command: p.ExecuteNode, ctx: NodeContext) -> Any:
        if self._pipeline.empty:
            return await invoke(command.args, command.kwargs, ctx)
        return await self._pipeline.run(ctx, lambda: invoke(command.args, command.kwargs, ctx))

    # -- timers ---------------------------------------------------------------
    def _start_timer(self, run: Run, tg: anyio.abc.TaskGroup, command: p.StartTimer) -> None:
        if command.purpose == "retry":
            scope = anyio.CancelScope()
            run.scopes[command.timer_id] = scope
            self._start_task(run, self._retry_timer, run, command, scope)
            return
        due = time.time() + command.delay
        heapq.heappush(self._timers, (due, run.run_id, command.timer_id))
        self._wakeup.set()

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
        self._wakeup = anyio.Event()
        delay = self._timers[0][0] - time.time() if self._timers else math.inf
        if self.store is not None:
            delay = min(delay, getattr(self, "poll_interval", 1.0))
        with anyio.move_on_after(max(0.0, delay)):
            await self._wakeup.wait()

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
            self.events.emit(Event(type_, run_id, time.time(), node_id, attempt, duration, data))


def _recovery(run: Run) -> list[p.Command]:
    """ExecuteNode commands for dispatches a previous process left in flight."""
    commands: list[p.Command] = []
    for dispatch_id, d in run.state.sections["dispatches"].items():
        suffix = f"@{d['act']}" if d.get("item") is None else f"@{d['act']}[{d['item']}]"
        commands.append(
            p.ExecuteNode(
                dispatch_id,
                d["node"],
                int(d["attempt"]),
                f"{run.run_id}:{d['node']}{suffix}",
                tuple(d.get("args") or ()),
                dict(d.get("kwargs") or {}),
                bool(d.get("fallback")),
            )
        )
    return commands


def _last_error(run: Run, command: p.ExecuteNode) -> BaseException | None:
    from ._result import error_from_info

    record = run.state.sections["dispatches"].get(command.dispatch_id) or {}
    info = record.get("error")
    return error_from_info(run.run_id, dict(info, node=command.node_id)) if info else None


def _failure(exc: Exception, command: p.ExecuteNode, timeout: float | None) -> dict[str, Any]:
    type_, mro, message = describe(exc)
    if isinstance(exc, TimeoutError) and timeout is not None and type_ == "builtins.TimeoutError":
        message = f"node {command.node_id!r} timed out after {timeout:g}s"
    return {"type": type_, "mro": list(mro), "message": message, "attempt": command.attempt}

"""The in-memory shell: runs blueprints as tasks in an anyio task group."""

from __future__ import annotations

import heapq
import math
import time
import uuid
from collections import deque
from contextlib import asynccontextmanager
from functools import partial
from typing import TYPE_CHECKING, Any, Literal

import anyio
import anyio.abc

from .._errors import ResumeError, describe
from . import _protocol as p
from ._context import Context, NodeContext, reset_current, set_current
from ._core import handle_event, start_run, wait_names
from ._eager import NoticeBlocking
from ._events import Event, EventBus
from ._middleware import Middleware, Pipeline
from ._result import RunHandle, RunResult
from ._state import RunState, RunStatus
from ._target import Target, resolve

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Mapping, Sequence


class _Run:
    """A run known to this runtime, with the task group driving it (if any)."""

    __slots__ = ("finished", "idle", "parent", "scopes", "state", "target", "tg")

    def __init__(self, target: Target, state: RunState, parent: str | None = None) -> None:
        self.target = target
        self.state = state
        self.parent = parent
        self.tg: anyio.abc.TaskGroup | None = None
        self.idle = anyio.Event()
        self.idle.set()
        self.finished = anyio.Event()
        self.scopes: dict[str, anyio.CancelScope] = {}


class Runtime:
    """Runs flows in this process: ``await rt.run(flow, **inputs)``.

    ``async with Runtime() as rt:`` owns a task group in which started runs and
    the timer scheduler live; nothing outlives the block.

    >>> import flowkit
    >>> rt = flowkit.Runtime(max_concurrency=8)
    """

    def __init__(
        self,
        *,
        middleware: Sequence[Middleware] = (),
        store: Any = None,
        max_concurrency: int | None = None,
        flows: Sequence[Any] = (),
    ) -> None:
        self.events = EventBus()
        self.store = store
        self._pipeline = Pipeline(middleware)
        self._limiter = anyio.CapacityLimiter(max_concurrency) if max_concurrency else None
        self._runs: dict[str, _Run] = {}
        self._targets: dict[int, Target] = {}
        self._by_blueprint_id: dict[str, Any] = {}
        self._timers: list[tuple[float, str, str]] = []
        self._wakeup = anyio.Event()
        self._tg: anyio.abc.TaskGroup | None = None
        for flow in flows:
            self._target(flow)

    # -- public API -----------------------------------------------------------
    async def run(
        self,
        target: Any,
        *,
        run_id: str | None = None,
        registry: Mapping[str, Any] | None = None,
        **inputs: Any,
    ) -> RunResult:
        """Run until the run completes, fails, is cancelled or pauses (``awaiting``)."""
        run = self._runs.get(run_id) if run_id else None
        if run is None:
            run, commands = self._create(self._target(target, registry), run_id, inputs)
            await self._drive(run, commands)
        else:
            await run.idle.wait()
        return RunResult.of(run.state)

    async def start(
        self,
        target: Any,
        *,
        run_id: str | None = None,
        registry: Mapping[str, Any] | None = None,
        **inputs: Any,
    ) -> RunHandle:
        """Start a run in the background of the open runtime; idempotent per ``run_id``."""
        if self._tg is None:
            raise RuntimeError(
                "Runtime.start() needs an open runtime to own the run: "
                "use `async with flowkit.Runtime() as rt: handle = await rt.start(...)`"
            )
        if run_id is None or run_id not in self._runs:
            run, commands = self._create(self._target(target, registry), run_id, inputs)
            self._tg.start_soon(self._drive, run, commands)
            run_id = run.state.run_id
        return RunHandle(self, run_id)

    async def signal(
        self, run_id: str, name: str, data: Any = None, *, action: str | None = None
    ) -> RunResult:
        """Deliver a signal; returns the run's result once it has advanced as far as it can.

        A signal for a wait inside a child run (or grandchild) is routed there.
        Raises :class:`ResumeError` for an unknown run or a name no wait uses.
        """
        top = self._get(run_id)
        run = self._signal_target(top, name)
        await self._advance(run, p.SignalReceived(name, data, action))
        await top.idle.wait()
        return RunResult.of(top.state)

    async def result(self, run_id: str) -> RunResult:
        """The run's current result (any status)."""
        return RunResult.of(self._get(run_id).state)

    async def cancel(self, run_id: str) -> RunResult:
        run = self._get(run_id)
        await self._advance(run, p.CancelRequested())
        return RunResult.of(run.state)

    def handle(self, run_id: str) -> RunHandle:
        """A handle on a run this runtime knows."""
        self._get(run_id)
        return RunHandle(self, run_id)

    def run_sync(
        self, target: Any, *, backend: Literal["asyncio", "trio"] = "asyncio", **inputs: Any
    ) -> RunResult:
        """Run to a result from synchronous code (starts an event loop)."""
        return anyio.run(partial(self.run, target, **inputs), backend=backend)

    async def __aenter__(self) -> Runtime:
        self._cm = self._open()
        await self._cm.__aenter__()
        return self

    async def __aexit__(self, *exc: Any) -> bool | None:
        return await self._cm.__aexit__(*exc)

    @asynccontextmanager
    async def _open(self) -> AsyncIterator[None]:
        async with anyio.create_task_group() as tg:
            self._tg = tg
            tg.start_soon(self._scheduler_loop)
            try:
                yield
            finally:
                self._tg = None
                tg.cancel_scope.cancel()

    @asynccontextmanager
    async def scheduler(self) -> AsyncIterator[Runtime]:
        """Fire due durable timers while the block runs."""
        async with anyio.create_task_group() as tg:
            tg.start_soon(self._scheduler_loop)
            try:
                yield self
            finally:
                tg.cancel_scope.cancel()

    # -- runs -----------------------------------------------------------------
    def _target(self, target: Any, registry: Mapping[str, Any] | None = None) -> Target:
        key = id(target)
        resolved = self._targets.get(key) if registry is None else None
        if resolved is None:
            resolved = resolve(target, registry)
            self._targets[key] = resolved
            self._by_blueprint_id.setdefault(resolved.blueprint.id, target)
            for child in resolved.children:
                self._target(child)
        return resolved

    def _create(
        self,
        target: Target,
        run_id: str | None,
        inputs: dict[str, Any],
        parent: str | None = None,
    ) -> tuple[_Run, list[p.Command]]:
        run_id = run_id or uuid.uuid4().hex
        state = RunState(run_id)
        run = _Run(target, state, parent)
        self._runs[run_id] = run
        commands = start_run(target.program, state, inputs, parent=parent)
        self._emit(run_id, "workflow:start", data={"blueprint": target.blueprint.id})
        return run, commands

    def _get(self, run_id: str) -> _Run:
        run = self._runs.get(run_id)
        if run is None:
            raise ResumeError(f"unknown run {run_id!r}: it was never started in this runtime")
        return run

    def _signal_target(self, run: _Run, name: str) -> _Run:
        """The run (this one or a descendant) that should receive signal ``name``."""
        if name in run.state.sections["waits"]:
            return run
        for child_id in run.state.sections["children"]:
            child = self._runs.get(child_id)
            if child is not None:
                found = self._signal_target(child, name)
                if name in found.state.sections["waits"]:
                    return found
        if name in wait_names(run.target.program):
            return run
        raise ResumeError(
            f"run {run.state.run_id!r} has no wait named {name!r}; "
            f"its waits are {sorted(wait_names(run.target.program)) or 'none'}"
        )

    async def _wait_finished(self, run_id: str) -> RunResult:
        run = self._get(run_id)
        await run.finished.wait()
        await run.idle.wait()
        return RunResult.of(run.state)

    # -- driving --------------------------------------------------------------
    async def _advance(self, run: _Run, event: p.Event) -> None:
        """Feed an event from outside the run's task group and wait until it settles."""
        commands = handle_event(run.target.program, run.state, event)
        await self._drive(run, commands)

    async def _drive(self, run: _Run, commands: list[p.Command]) -> None:
        if run.tg is not None:
            self._spawn(run, self._carry_out(run, commands))
            await run.idle.wait()
            return
        run.idle = anyio.Event()
        try:
            async with anyio.create_task_group() as tg:
                run.tg = tg
                self._spawn(run, self._carry_out(run, commands))
        finally:
            run.tg = None
            run.idle.set()
        await self._notify_parent(run)

    def _spawn(self, run: _Run, ready: deque[p.ExecuteNode]) -> None:
        if ready:
            assert run.tg is not None
            run.tg.start_soon(self._worker, run, ready)

    def _carry_out(self, run: _Run, commands: list[p.Command]) -> deque[p.ExecuteNode]:
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

    def _other_command(self, run: _Run, tg: anyio.abc.TaskGroup, command: p.Command) -> None:
        run_id = run.state.run_id
        if isinstance(command, p.Note):
            if self.events.active:
                self._emit(
                    run_id, command.type, command.node_id, command.attempt, data=command.data
                )
        elif isinstance(command, p.CancelNode):
            scope = run.scopes.pop(command.dispatch_id, None)
            if scope is not None:
                scope.cancel()
        elif isinstance(command, p.StartTimer):
            self._start_timer(run, tg, command)
        elif isinstance(command, p.CancelTimer):
            scope = run.scopes.pop(command.timer_id, None)
            if scope is not None:
                scope.cancel()
        elif isinstance(command, p.StartChild):
            tg.start_soon(self._child_task, run, command)
        elif isinstance(command, p.CancelChild):
            child = self._runs.get(command.child_run_id)
            if child is not None:
                tg.start_soon(self._advance, child, p.CancelRequested("parent finished"))
        elif isinstance(command, p.FinishRun):
            run.finished.set()
            if command.status == RunStatus.CANCELLED:
                self._emit(run_id, "workflow:cancel")
            self._emit(run_id, "workflow:finish", data={"status": command.status})

    def _start_timer(self, run: _Run, tg: anyio.abc.TaskGroup, command: p.StartTimer) -> None:
        if command.purpose == "retry":
            scope = anyio.CancelScope()
            run.scopes[command.timer_id] = scope
            tg.start_soon(self._retry_timer, run, command, scope)
            return
        due = time.time() + command.delay
        heapq.heappush(self._timers, (due, run.state.run_id, command.timer_id))
        self._wakeup.set()

    async def _retry_timer(
        self, run: _Run, command: p.StartTimer, scope: anyio.CancelScope
    ) -> None:
        with scope:
            await anyio.sleep(command.delay)
            run.scopes.pop(command.timer_id, None)
            self._spawn(run, self._feed(run, p.TimerFired(command.timer_id)))

    def _feed(self, run: _Run, event: p.Event) -> deque[p.ExecuteNode]:
        """Feed an event from inside the run's task group."""
        return self._carry_out(run, handle_event(run.target.program, run.state, event))

    async def _worker(self, run: _Run, ready: deque[p.ExecuteNode]) -> None:
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
        in_flight = run.state.sections["dispatches"]
        with anyio.CancelScope() as scope:
            while ready:
                command = ready.popleft()
                if command.dispatch_id not in in_flight:
                    continue  # cancelled before it started
                scopes[command.dispatch_id] = scope
                event = await NoticeBlocking(self._call(run, command), hand_off)
                scopes.pop(command.dispatch_id, None)
                ready.extend(self._feed(run, event))

    async def _call(self, run: _Run, command: p.ExecuteNode) -> p.Event:
        if self._limiter is not None:
            async with self._limiter:
                return await self._call_node(run, command)
        return await self._call_node(run, command)

    async def _call_node(self, run: _Run, command: p.ExecuteNode) -> p.Event:
        target = run.target
        spec = target.program.specs[command.node_id]
        uses = spec.uses or ""
        invoke = target.fallbacks[uses] if command.fallback else target.invokers[uses]
        ctx = NodeContext(
            run.state.run_id,
            command.node_id,
            command.attempt,
            command.idempotency_key,
            Context(run.state.context),
        )
        if command.fallback:
            ctx.error = self._last_error(run, command)
        timeout = spec.config.timeout
        observed = self.events.active
        started = time.perf_counter() if observed else 0.0
        if observed:
            self._emit(run.state.run_id, "node:start", command.node_id, command.attempt)
        token = set_current(ctx)
        try:
            if timeout is not None:
                ctx.deadline = time.time() + timeout
                with anyio.fail_after(timeout):
                    output = await self._invoke(invoke, command, ctx)
            else:
                output = await self._invoke(invoke, command, ctx)
        except Exception as exc:
            return p.NodeFailed(command.dispatch_id, _failure(exc, command, timeout))
        finally:
            reset_current(token)
        if observed:
            self._emit(
                run.state.run_id,
                "node:finish",
                command.node_id,
                command.attempt,
                duration=time.perf_counter() - started,
            )
        state = ctx.state
        action = None
        if type(output).__name__ == "Action" and hasattr(output, "name"):
            action, output = output.name, output.value
        if state.writes or state.deletes:
            return p.NodeCompleted(
                command.dispatch_id,
                output,
                action,
                dict(state.writes),
                tuple(sorted(state.deletes)),
                command.fallback,
            )
        return p.NodeCompleted(command.dispatch_id, output, action, None, (), command.fallback)

    async def _invoke(self, invoke: Any, command: p.ExecuteNode, ctx: NodeContext) -> Any:
        if self._pipeline.empty:
            return await invoke(command.args, command.kwargs, ctx)
        return await self._pipeline.run(ctx, lambda: invoke(command.args, command.kwargs, ctx))

    def _last_error(self, run: _Run, command: p.ExecuteNode) -> BaseException | None:
        from ._result import error_from_info

        record = run.state.sections["dispatches"].get(command.dispatch_id) or {}
        info = record.get("error")
        return error_from_info(run.state.run_id, dict(info, node=command.node_id)) if info else None

    # -- children -------------------------------------------------------------
    async def _child_task(self, parent: _Run, command: p.StartChild) -> None:
        flow = self._by_blueprint_id.get(command.blueprint_id)
        if flow is None:
            known = sorted(self._by_blueprint_id)
            error = {
                "type": "flowkit._errors.ResumeError",
                "mro": ["flowkit._errors.ResumeError"],
                "message": f"no flow with blueprint id {command.blueprint_id!r} is known "
                f"to this runtime (known: {known}); pass it in Runtime(flows=[...])",
            }
            event = p.ChildFinished(command.child_run_id, "failed", None, error)
            self._spawn(parent, self._feed(parent, event))
            return
        child = self._runs.get(command.child_run_id)
        if child is None:
            child, commands = self._create(
                self._target(flow),
                command.child_run_id,
                command.inputs,
                parent=parent.state.run_id,
            )
            await self._drive(child, commands)

    async def _notify_parent(self, run: _Run) -> None:
        """When a child run has finished, tell its parent (once)."""
        header = run.state.header
        if run.parent is None or not run.state.status.finished or header.get("notified"):
            return
        header["notified"] = True
        parent = self._runs.get(run.parent)
        if parent is None:
            return
        event = p.ChildFinished(
            run.state.run_id, run.state.status.value, header.get("output"), header.get("error")
        )
        if parent.tg is not None:
            self._spawn(parent, self._feed(parent, event))
        else:
            await self._advance(parent, event)

    # -- timers ---------------------------------------------------------------
    async def _scheduler_loop(self) -> None:
        async with anyio.create_task_group() as tg:
            while True:
                now = time.time()
                while self._timers and self._timers[0][0] <= now:
                    _, run_id, timer_id = heapq.heappop(self._timers)
                    run = self._runs.get(run_id)
                    if run is not None and timer_id in run.state.sections["timers"]:
                        tg.start_soon(self._advance, run, p.TimerFired(timer_id))
                self._wakeup = anyio.Event()
                delay = self._timers[0][0] - now if self._timers else math.inf
                with anyio.move_on_after(delay):
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


def _failure(exc: Exception, command: p.ExecuteNode, timeout: float | None) -> dict[str, Any]:
    type_, mro, message = describe(exc)
    if isinstance(exc, TimeoutError) and timeout is not None and type_ == "builtins.TimeoutError":
        message = f"node {command.node_id!r} timed out after {timeout:g}s"
    return {"type": type_, "mro": list(mro), "message": message, "attempt": command.attempt}

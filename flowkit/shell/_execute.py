"""Executing one node: context, middleware, timeout, and the event that reports it.

Shared by every shell (the in-memory Runtime, the Worker, the simulator).
"""

from __future__ import annotations

import time
from functools import partial
from typing import TYPE_CHECKING, Any

import anyio
import sniffio

from .. import _clock as clock
from .._errors import PendingWithoutToken, describe
from .._serde import SerializationError, to_data
from ..core import _protocol as p
from ..core._action import split_action
from ._completion import PENDING
from ._context import Context, NodeContext, enter_node, leave_node
from ._events import Event, EventBus
from ._limits import LocalBuckets, LocalSlots, bucket_of, limited, slot_of
from ._middleware import Middleware, Pipeline

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable, Coroutine, Sequence

    from ..core._state import RunState
    from ._target import Target


class Executor:
    """Runs node implementations for ExecuteNode commands.

    With ``plain_data`` outputs and state writes are converted to JSON data at
    completion, as they must be wherever state crosses a process boundary. With
    ``local_limits`` the nodes' concurrency and rate limits (``@node(concurrency=...)``,
    ``@node(rate=...)``) are enforced here, in process; the Worker enforces them
    through the store instead.
    """

    def __init__(
        self,
        *,
        middleware: Sequence[Middleware] = (),
        max_concurrency: int | None = None,
        events: EventBus | None = None,
        plain_data: bool = False,
        local_limits: bool = False,
    ) -> None:
        self.events = events or EventBus()
        self.plain_data = plain_data
        self.overrides: dict[str, Any] = {}  # node id or registry name -> invoker (mocks)
        # (run id, dispatch id, details) of each context().heartbeat(), for shells that
        # persist heartbeat details while the node runs
        self.on_heartbeat: Callable[[str, str, Any], None] | None = None
        self._pipeline = Pipeline(middleware)
        self._max_concurrency = max_concurrency
        self._limiters: dict[str, anyio.CapacityLimiter] = {}
        self._slots = LocalSlots() if local_limits else None
        self._buckets = LocalBuckets() if local_limits else None

    def execute(
        self,
        run_id: str,
        target: Target,
        state: RunState,
        command: p.ExecuteNode,
        *,
        enqueued_at: float | None = None,
    ) -> Coroutine[Any, Any, p.Event]:
        """The coroutine that runs the node (bounded by ``max_concurrency``); it never
        raises for node errors.

        ``enqueued_at`` is when the execution was queued (epoch seconds; default: now).
        """
        if enqueued_at is None and not self._pipeline.empty:  # only middleware reads it
            enqueued_at = clock.now()
        if self._slots is None or not limited(target):
            if self._max_concurrency is None:  # most nodes: no coroutine in between
                return self._execute(run_id, target, state, command, enqueued_at)
            return self._bounded(run_id, target, state, command, enqueued_at)
        return self._limited(run_id, target, state, command, enqueued_at)

    async def _limited(
        self,
        run_id: str,
        target: Target,
        state: RunState,
        command: p.ExecuteNode,
        enqueued_at: float | None,
    ) -> p.Event:
        assert self._slots is not None
        bucket = bucket_of(target, command) if self._buckets is not None else None
        if self._buckets is not None and bucket is not None:
            await self._buckets.take(bucket)  # the rate first: no slot held while delayed
        slot = slot_of(target, command)
        if slot is not None:
            async with self._slots.hold(slot):
                return await self._bounded(run_id, target, state, command, enqueued_at)
        return await self._bounded(run_id, target, state, command, enqueued_at)

    async def _bounded(
        self,
        run_id: str,
        target: Target,
        state: RunState,
        command: p.ExecuteNode,
        enqueued_at: float | None,
    ) -> p.Event:
        if self._max_concurrency is None:
            return await self._execute(run_id, target, state, command, enqueued_at)
        async with self._limiter():
            return await self._execute(run_id, target, state, command, enqueued_at)

    def run_traceparent(
        self, run_id: str, flow: str, traceparent: str | None, parent: str | None = None
    ) -> str | None:
        """The traceparent to store with a new run (see ``Middleware.on_run_start``)."""
        return self._pipeline.run_traceparent(run_id, flow, traceparent, parent)

    def _limiter(self) -> anyio.CapacityLimiter:
        """One limiter per event-loop library (a limiter is bound to the loop that made it)."""
        backend = sniffio.current_async_library()
        limiter = self._limiters.get(backend)
        if limiter is None:
            assert self._max_concurrency is not None
            limiter = self._limiters[backend] = anyio.CapacityLimiter(self._max_concurrency)
        return limiter

    async def _execute(
        self,
        run_id: str,
        target: Target,
        state: RunState,
        command: p.ExecuteNode,
        enqueued_at: float | None,
    ) -> p.Event:
        spec = target.program.specs[command.node_id]
        uses = spec.uses or ""
        if command.fallback:
            invoke = target.fallbacks[spec.config.fallback or ""]
        else:
            invoke = target.invokers[uses]
        if self.overrides and not command.fallback:
            invoke = self.overrides.get(command.node_id) or self.overrides.get(uses) or invoke
        record = state.sections["dispatches"].get(command.dispatch_id)
        ctx = NodeContext(
            run_id,
            command.node_id,
            command.attempt,
            command.idempotency_key,
            Context(state.context),
            traceparent=state.header.get("traceparent"),
            flow=target.blueprint.id,
            enqueued_at=enqueued_at,
            dispatch_id=command.dispatch_id,
            last_heartbeat=None if record is None else record.get("heartbeat"),
        )
        if self.on_heartbeat is not None:
            ctx._sink = partial(self.on_heartbeat, run_id, command.dispatch_id)
        if command.fallback:
            ctx.error = _last_error(run_id, state, command)
        timeout = spec.config.timeout if command.timeout is None else command.timeout
        started_at = clock.now()
        observed = self.events.active
        started = time.perf_counter() if observed else None
        if observed:
            self._emit(ctx, "node:start", command)
        bound = enter_node(ctx)
        try:
            call = self._invoke(invoke, command, ctx)
            if timeout is not None:
                ctx.deadline = started_at + timeout
                with anyio.fail_after(timeout):
                    output = await call
            else:
                output = await call
            if output is PENDING:
                return _deferred(command, ctx)
            return self._completed(command, output, ctx, started)
        except Exception as exc:
            return p.NodeFailed(
                command.dispatch_id,
                _failure(exc, command, timeout),
                retryable=not isinstance(exc, (SerializationError, PendingWithoutToken)),
                started_at=started_at,
                failed_at=clock.now(),
                heartbeat=ctx.heartbeat_details,
            )
        finally:
            leave_node(bound)

    def _completed(
        self, command: p.ExecuteNode, output: Any, ctx: NodeContext, started: float | None
    ) -> p.NodeCompleted:
        if started is not None:
            self._emit(ctx, "node:finish", command, time.perf_counter() - started)
        output, action = split_action(output)
        ctx.state.settle()
        writes: dict[str, Any] = ctx.state.writes
        if self.plain_data:
            output = _plain(output, "its return value")
            writes = _plain(writes, "what it wrote to the run's state")
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

    def _invoke(self, invoke: Any, command: p.ExecuteNode, ctx: NodeContext) -> Awaitable[Any]:
        """The node's call, through the middleware if any (a coroutine, not started)."""
        if self._pipeline.empty:
            call: Awaitable[Any] = invoke(command.args, command.kwargs, ctx)
            return call
        return self._pipeline.run(ctx, lambda: invoke(command.args, command.kwargs, ctx))

    def _emit(
        self, ctx: NodeContext, type_: str, command: p.ExecuteNode, duration: float | None = None
    ) -> None:
        self.events.emit(
            Event(
                type_,
                ctx.run_id,
                clock.now(),
                command.node_id,
                command.attempt,
                duration,
                None,
                ctx.flow,
                ctx.traceparent,
            )
        )


def _deferred(command: p.ExecuteNode, ctx: NodeContext) -> p.NodeDeferred:
    """The event of a node that returned pending: its completion comes from outside."""
    deferral = ctx.deferral()
    if deferral is None:
        raise PendingWithoutToken(command.node_id)
    nonce, timeout = deferral
    return p.NodeDeferred(command.dispatch_id, nonce, timeout, ctx.heartbeat_details)


def _plain(value: Any, what: str) -> Any:
    """``value`` as plain data; a :class:`SerializationError` naming ``what`` if it cannot be."""
    try:
        return to_data(value)
    except SerializationError as exc:
        raise SerializationError(f"{what} cannot be stored: {exc}") from exc


def _last_error(run_id: str, state: RunState, command: p.ExecuteNode) -> BaseException | None:
    from ._result import error_from_info

    record = state.sections["dispatches"].get(command.dispatch_id) or {}
    info = record.get("error")
    return error_from_info(run_id, dict(info, node=command.node_id)) if info else None


def _failure(exc: Exception, command: p.ExecuteNode, timeout: float | None) -> dict[str, Any]:
    type_, mro, message = describe(exc)
    if isinstance(exc, TimeoutError) and timeout is not None and type_ == "builtins.TimeoutError":
        message = f"node {command.node_id!r} timed out after {timeout:g}s"
    return {"type": type_, "mro": list(mro), "message": message, "attempt": command.attempt}

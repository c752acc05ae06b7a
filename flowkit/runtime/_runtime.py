"""The in-memory shell: runs blueprints as tasks in an anyio task group.

With ``store=`` every transition is also committed to the store (only its
delta), so runs survive the process: a sleeping or waiting run holds no task
and no memory, and any runtime with the flow's code can resume it.
"""

from __future__ import annotations

from collections import OrderedDict
from contextlib import asynccontextmanager
from functools import partial
from typing import TYPE_CHECKING, Any, Literal

import anyio
import structlog
from anyio.lowlevel import RunVar

from .. import _clock as clock
from .._errors import CompletionTokenError, ConfigurationError, ResumeError, StoreError
from .._ids import new_run_id
from ..core import _protocol as p
from ..core._action import split_action
from ..core._admission import PARENT_SLOT, SLOT
from ..core._deferral import deferred
from ..core._machine import start_run
from ..core._priority import DEFAULT_PRIORITY, priority_of
from ..core._program import wait_name
from ..core._state import NULL_JOURNAL, RunState, RunStatus
from ..observability._propagation import current_traceparent
from ..shell._commands import for_parent
from ..shell._completion import CompletionToken, check_open, completion_event, failure_event
from ..shell._describe import describe_stored, read_history
from ..shell._durable import (
    continuing,
    debounce_seconds,
    index_ops,
    newest_run,
    refuse_if_finished,
    refuse_retry,
    split_priority,
    split_tags,
    unknown_digest,
    with_tags,
)
from ..shell._flows import Flows, refuse_unknown_wait, route_signal
from ..shell._history import start_history
from ..shell._migrate import check_map
from ..shell._purge import purge_runs
from ..shell._result import RunHandle, RunResult, detached
from ..shell._schedules import Schedule, ScheduleControls, Scheduler, schedules_of
from ..stores._memory import MemoryStore
from . import _handlers
from ._driver import Driver, Run
from ._schedules import RuntimeStarter
from ._slots import SlotDriving

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Collection, Mapping, Sequence

    from .._durations import Duration
    from ..shell._describe import RunDescription
    from ..shell._middleware import Middleware
    from ..shell._target import Target
    from ..stores._history import HistoryEvent
    from ..stores._protocol import RunPage

_log = structlog.get_logger("flowkit.schedules")
REGISTER_HINT = "pass the flow itself, or register it: flowkit.Runtime(flows=[...])"
"""What to do about a flow name a runtime does not know."""


class Runtime(SlotDriving, Driver, ScheduleControls):
    """Runs flows in this process: ``await rt.run(flow, **inputs)``.

    ``async with Runtime() as rt:`` owns a task group in which started runs and
    the timer scheduler live; nothing outlives the block. ``store=`` makes runs
    durable (``flowkit.stores.SQLiteStore("runs.db")``, ...). ``schedules=``
    (:class:`~flowkit.Schedule`, and those of ``@flow(schedule=...)`` flows in
    ``flows=``) start runs at their ticks while the runtime is open.

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
        poll_interval: float = 1.0,
        schedules: Sequence[Schedule] = (),
    ) -> None:
        super().__init__(
            middleware=middleware,
            store=store,
            max_concurrency=max_concurrency,
            poll_interval=poll_interval,
        )
        self.flows = Flows(flows)
        self._init_slots(store)
        schedules = schedules_of(flows, schedules)
        self._schedules_here = MemoryStore() if store is None else None
        for schedule in schedules:  # a schedule that cannot start its flow fails here
            flow = self.flows.registered(schedule.flow, hint=REGISTER_HINT)
            self._target(flow).check(dict(schedule.spec.inputs))
        if schedules:
            self._scheduler = Scheduler(self._schedule_store(), schedules, RuntimeStarter(self))
        # run id -> (run, commands): runs continued as new that no one drives yet
        self._continued: dict[str, tuple[Run, list[p.Command]]] = {}
        # run id -> (lock, users): signal_with_start of one run id, one at a time here
        self._starting: dict[str, tuple[anyio.Lock, list[int]]] = {}

    # -- starting -------------------------------------------------------------
    async def run(
        self,
        target: Any,
        /,
        *,
        run_id: str | None = None,
        registry: Mapping[str, Any] | None = None,
        tags: Mapping[str, str] | None = None,
        priority: int | None = None,
        **inputs: Any,
    ) -> RunResult:
        """Run until the run completes, fails, is cancelled or pauses (``awaiting``).

        ``target`` is a ``@flow``, a ``Flow`` builder or a ``Blueprint`` (with
        ``registry=``), or the id of a flow this runtime knows (passed in
        ``Runtime(flows=[...])`` or run here before; its newest version): an unknown
        name raises :class:`~flowkit.ConfigurationError` listing the known flows. An
        existing ``run_id`` returns that run's result instead.
        ``tags`` (str keys and values, at most 64, each up to 256 characters) are
        stored with the run in the store's index, for :meth:`list_runs` (without a
        store they are checked, then kept nowhere); a child run inherits none. The
        flow's inputs are the other keyword arguments:
        ``run_id=``, ``registry=`` and ``tags=`` are this method's, so a builder or
        blueprint input of those names cannot be passed (a ``@flow`` parameter named
        ``tags`` still receives ``tags=``, and its runs are not tagged).
        ``priority`` (0 to 9, default 0) is checked and kept in the run's header, and
        its child runs inherit it, as with a :class:`~flowkit.Client`; in a runtime it
        orders nothing (node executions start as they become ready, with no queue).
        """
        target = self.flows.registered(target, hint=REGISTER_HINT)
        resolved = self._target(target, registry)
        run_tags, inputs = split_tags(target, tags, inputs)
        level, inputs = split_priority(target, priority, inputs)
        run, commands = await self._create(resolved, run_id, inputs, tags=run_tags, priority=level)
        while True:
            with self._admissions_to(run.run_id) as handed:
                if commands:
                    await self._drive(run, commands)
                else:  # an existing run: wait for whoever drives it to let go
                    await run.wait_idle()
                if handed:  # admitted to its flow's pool meanwhile: this call drives it
                    commands = handed.pop(0)
                    continue
                if run.state.header.get("status") == RunStatus.QUEUED:  # the pool is full
                    admitted = await self._until_admitted(run)
                    if admitted is None:  # by another process, which drives it
                        return await self.finished(run.run_id)
                    commands = admitted
                    continue
            result = self._result_of(run)
            if result.continued_as is None:
                return result
            run, commands = await self._next_in_chain(result.continued_as)

    async def _next_in_chain(self, run_id: str) -> tuple[Run, list[p.Command]]:
        """The run a run continued as, and the commands to drive it with (none if it is
        driven already, in the open runtime's background)."""
        pending = self._continued.pop(run_id, None)
        if pending is not None:
            return pending
        return await self._get(run_id), []

    async def start(
        self,
        target: Any,
        /,
        *,
        run_id: str | None = None,
        registry: Mapping[str, Any] | None = None,
        tags: Mapping[str, str] | None = None,
        priority: int | None = None,
        debounce: Duration | None = None,
        **inputs: Any,
    ) -> RunHandle:
        """Start a run in the open runtime's background; idempotent per ``run_id``.

        ``target`` (a flow, or its id), ``tags``, ``priority`` and the inputs as for
        :meth:`run`.

        With ``debounce`` (``"5s"``, seconds or a ``timedelta``; needs ``run_id``) the run
        begins only once that long has passed without another start of the same
        ``run_id``: a burst of starts makes one run, with the inputs of the last one.
        A start once the run has begun returns the run as it is.
        """
        self._owner("start")
        delay = debounce_seconds(debounce, run_id, "Runtime.start")
        target = self.flows.registered(target, hint=REGISTER_HINT)
        resolved = self._target(target, registry)
        run_tags, inputs = split_tags(target, tags, inputs)
        level, inputs = split_priority(target, priority, inputs)
        if delay is None:
            run, commands = await self._create(
                resolved, run_id, inputs, tags=run_tags, priority=level
            )
        else:
            assert run_id is not None
            async with self._one_start(run_id):
                run, commands = await self._create(
                    resolved, run_id, inputs, tags=run_tags, debounce=delay, priority=level
                )
                if not commands and not run.state.finished:  # it exists: push its start back
                    resolved.check(inputs)
                    again = p.StartDebounced(resolved.bind(inputs), delay)
                    commands = await self._step(run, again)
        if commands or run.recover:
            self._drive_soon(run, commands)
        return RunHandle(self, run.run_id)

    async def signal_with_start(
        self,
        target: Any,
        /,
        *,
        run_id: str,
        signal: str,
        data: Any = None,
        delivery_id: str | None = None,
        registry: Mapping[str, Any] | None = None,
        tags: Mapping[str, str] | None = None,
        priority: int | None = None,
        **inputs: Any,
    ) -> RunHandle:
        """Deliver signal ``signal`` to run ``run_id``, starting the run first if it does
        not exist; returns its handle at once, as :meth:`start` does.

        Atomic: a new run is created with the signal already received (buffered for its
        wait ``signal``), so however many callers race, one run is started and each
        signal is delivered once. For a run that exists the signal is delivered as
        :meth:`signal` delivers it (a child waiting under that name gets it). ``data``
        may be an ``Action(name, value)``. ``target`` (a flow, or its id), ``tags``,
        ``priority`` and the inputs as for :meth:`run`; they are used only if the run is
        started.

        Raises :class:`ResumeError` if the flow has no wait named ``signal`` or the run
        has already finished, and :class:`DuplicateDelivery` for a ``delivery_id`` the
        run already received (a retried call is not delivered twice).

        >>> # async with flowkit.Runtime(store=store) as rt:
        >>> #     handle = await rt.signal_with_start(
        >>> #         cart, run_id="cart-c1", signal="add", data="lamp", customer="c1")
        """
        self._owner("signal_with_start")
        target = self.flows.registered(target, hint=REGISTER_HINT)
        resolved = self._target(target, registry)
        refuse_unknown_wait(resolved, signal)
        run_tags, inputs = split_tags(target, tags, inputs)
        level, inputs = split_priority(target, priority, inputs)
        data, action = split_action(data, None)
        event = p.SignalReceived(signal, data, action, delivery_id)
        async with self._one_start(run_id):
            run, commands = await self._create(
                resolved, run_id, inputs, tags=run_tags, signal=event, priority=level
            )
            if not commands:  # the run exists: signal it
                refuse_if_finished(run.state, signal, delivery_id)
                run = await self._signal_target(run, signal)
                commands = await self._step(run, event)
        self._drive_soon(run, commands)
        return RunHandle(self, run_id)

    def _owner(self, method: str) -> None:
        """Raise unless the runtime is open (it owns the runs that go on in the background)."""
        if self._tg is None:
            raise RuntimeError(
                f"Runtime.{method}() needs an open runtime to own the run: "
                f"use `async with flowkit.Runtime() as rt: handle = await rt.{method}(...)`"
            )

    @asynccontextmanager
    async def _one_start(self, run_id: str) -> AsyncIterator[None]:
        """One signal-with-start of ``run_id`` at a time here: the next finds the run the
        first created (and signals it), rather than a copy of its own loaded meanwhile."""
        lock, users = self._starting.setdefault(run_id, (anyio.Lock(), [0]))
        users[0] += 1
        try:
            async with lock:
                yield
        finally:
            users[0] -= 1
            if not users[0]:
                del self._starting[run_id]

    def _drive_soon(self, run: Run, commands: list[p.Command]) -> None:
        """Carry ``commands`` out in the open runtime's background."""
        assert self._tg is not None
        if run.tg is None:
            run.busy()  # busy from now, not from when the task starts
        self._tg.start_soon(self._drive, run, commands)

    async def resume(
        self,
        target: Any,
        snapshot: Mapping[str, Any],
        node_id: str,
        data: Any = None,
        *,
        action: str | None = None,
        registry: Mapping[str, Any] | None = None,
    ) -> RunResult:
        """Resume a run from ``RunResult.snapshot()`` without a store (Flowcraft parity).

        ``data`` (or an ``Action(name, value)``) is delivered to the wait or
        webhook node ``node_id``; the action routes like a node's would.
        """
        resolved = self._target(target, registry)
        state = RunState.from_dict(detached(dict(snapshot)))  # the run must not alter the caller's
        self._check_digest(state, resolved)
        spec = resolved.program.specs.get(node_id)
        if spec is None or spec.kind not in ("wait", "webhook"):
            raise ResumeError(f"node {node_id!r} is not a wait or webhook node of {state.run_id!r}")
        data, action = split_action(data, action)
        run = Run(resolved.program, resolved, state, 0)
        self._runs[state.run_id] = run
        await self._advance(run, p.SignalReceived(wait_name(spec), data, action))
        return self._result_of(run)

    # -- talking to runs ------------------------------------------------------
    async def signal(
        self,
        run_id: str,
        name: str,
        data: Any = None,
        *,
        action: str | None = None,
        delivery_id: str | None = None,
    ) -> RunResult:
        """Deliver a signal; returns the run's result once it has advanced as far as it can.

        A signal for a wait inside a child run (or grandchild) is routed there.
        A signal that arrives before its wait is buffered. Raises
        :class:`ResumeError` for an unknown run, a run that has finished or a
        name no wait uses, and :class:`DuplicateDelivery` for a ``delivery_id``
        the run already received. A run that continued as new (``flow.continue_as_new``)
        passes the signal on to the newest run of its chain.
        """
        top = await self._get(await newest_run(run_id, self._state_of))
        refuse_if_finished(top.state, name, delivery_id)
        run = await self._signal_target(top, name)
        await self._advance(run, p.SignalReceived(name, data, action, delivery_id))
        await top.wait_idle()
        if self.store is None:
            return self._result_of(top)
        return await self.result(top.run_id)

    async def _state_of(self, run_id: str) -> RunState:
        return (await self._get(run_id)).state

    async def query(self, run_id: str, name: str) -> Any:
        """The answer of the run's query ``name`` (declared with ``@flow_fn.query``),
        computed here from the run's flow variables as they stand (running, awaiting or
        finished).

        Raises :class:`ResumeError` for an unknown run, a name the flow declares no query
        for, or a run whose flow is not registered here.

        >>> # await rt.query(run_id, "contents")   # ['lamp', 'rug']
        """
        return await _handlers.query(self, run_id, name)

    async def update(
        self, run_id: str, name: str, data: Any = None, *, timeout: float | None = None
    ) -> Any:
        """Deliver update ``name`` (declared with ``@flow_fn.update``) and return its reply.

        Waits (up to ``timeout`` seconds, then :class:`~flowkit.ResultTimeout`) until the
        run waits in ``flow.wait(name)``; runs the update's validator on the run's
        variables then, under the run's lock, and records the signal only if it passes
        (else :class:`~flowkit.UpdateRejected`, nothing recorded); drives the run as
        far as it can go, like :meth:`signal`; returns the update's reply computed from
        the variables at that point. Raises :class:`ResumeError` for an unknown run or
        update, or a run that has finished, and the run's error if it failed meanwhile.

        >>> # await rt.update(run_id, "add_item", "lamp")   # 1
        """
        return await _handlers.update(self, run_id, name, data, timeout)

    async def migrate(
        self,
        run_id: str,
        *,
        to: Any,
        map: Mapping[str, str] | None = None,
    ) -> RunResult:
        """Move a run that has not finished to another version of its flow, ``to`` (a
        flow, registered here if it is not yet); its result as of now.

        ``map`` renames node ids (``{"old_node": "new_node"}``). The run moves only if
        the new version has every position the run stands at (its waits, with the same
        signal name; nodes in flight, calling the same function; timers, children, loops,
        batches), after ``map``, and knows the patches the run recorded; otherwise a
        :class:`~flowkit.MigrationRefused` lists the problems and nothing changes. With a
        store, the run is checked and rewritten in one transaction under its lock, and
        its history records a ``run.migrated`` event. A run this runtime is driving
        right now (a node running) is refused: migrate runs while they wait.

        >>> # await rt.migrate("order-7", to=checkout_v2, map={"check": "basic_check"})
        """
        await _handlers.migrate(self, run_id, to, check_map(map))
        return await self.result(run_id)

    async def result(self, run_id: str) -> RunResult:
        """The run's current result (any status)."""
        run = self._runs.get(run_id)
        if run is not None:
            return self._result_of(run)
        if self.store is not None:
            loaded = await self.store.load(run_id)
            if loaded is not None:
                target = self.flows.find(loaded[0])
                return RunResult.of(loaded[0], target.blueprint if target else None)
        raise ResumeError(f"unknown run {run_id!r}: it was never started here or in the store")

    async def cancel(self, run_id: str) -> RunResult:
        """Cancel a run: in-flight nodes are cancelled and it ends ``cancelled``."""
        run = await self._get(run_id)
        await self._advance(run, p.CancelRequested())
        return self._result_of(run)

    async def complete(self, token: str, value: Any = None) -> RunResult:
        """Complete the deferred node execution ``token`` names with ``value``; returns
        its run's result once the run has advanced as far as it can (like :meth:`signal`).

        Raises :class:`~flowkit.CompletionTokenError` for a malformed token, an unknown
        run, or a node execution that is no longer open (completed already, timed out,
        retried, or its run finished).

        >>> # await rt.complete(token, {"charged": 42})
        """
        parsed = CompletionToken.parse(token)
        event = completion_event(parsed, value, plain=self.store is not None)
        return await self._settle_token(token, parsed, event)

    async def fail(self, token: str, error: BaseException | str) -> RunResult:
        """Fail the deferred node execution ``token`` names with ``error`` (an exception,
        or a message); the node's retry policy decides whether it runs again. Raises
        as :meth:`complete` does."""
        parsed = CompletionToken.parse(token)
        return await self._settle_token(token, parsed, failure_event(parsed, error))

    async def _settle_token(
        self, token: str, parsed: CompletionToken, event: p.NodeCompleted | p.NodeFailed
    ) -> RunResult:
        try:
            run = await self._get(parsed.run_id)
        except ResumeError as exc:
            raise CompletionTokenError(token, str(exc)) from None
        await self._advance(run, event, check=partial(check_open, token, parsed))
        await run.wait_idle()
        if self.store is None:
            return self._result_of(run)
        return await self.result(parsed.run_id)

    async def retry(self, run_id: str) -> RunResult:
        """Resume a failed run where it failed; its result once it has advanced as far as
        it can (like :meth:`signal`).

        The failed node runs again with fresh attempts (and a full retry budget) under
        its idempotency key; so does whatever else was under way when the run failed
        (sleeps and wait timeouts start again from their full duration, a child run
        starts again as a new child run). Completed nodes are not run again. Raises
        :class:`ResumeError` for a run that did not fail, or failed in a way a retry
        cannot change (a stalled join), and for a child run (retry its parent).
        """
        run = await self._get(run_id)
        refuse_retry(run.state)
        await self._advance(run, p.RetryRequested())
        await run.wait_idle()
        return self._result_of(run)

    async def purge(
        self,
        older_than: Duration,
        *,
        status: str | Collection[str] | None = None,
        batch: int = 500,
    ) -> int:
        """Delete the runs that finished more than ``older_than`` ago (``"30d"``, seconds or
        a ``timedelta``), with everything the store keeps for them; how many.

        ``status`` narrows it to some final statuses (``"completed"``, ``"failed"``,
        ``"cancelled"``; all by default). Runs that have not finished are never deleted.
        Deletes ``batch`` runs per store call. Raises
        :class:`~flowkit.ConfigurationError` for a bad argument or when the runtime has no store.
        """
        return await purge_runs(self.store, older_than, status=status, batch=batch)

    async def list_runs(
        self,
        *,
        flow: str | None = None,
        status: str | Collection[str] | None = None,
        tags: Mapping[str, str] | None = None,
        created_after: float | None = None,
        created_before: float | None = None,
        parent: str | None = None,
        limit: int = 50,
        cursor: str | None = None,
    ) -> RunPage:
        """The runs in this runtime's store, newest first, filtered; a page at a time.

        Filters combine with AND: ``flow`` (the flow's id), ``status`` (a
        :class:`~flowkit.RunStatus` value, or several: any of them), ``tags`` (every
        key given has the value given), ``created_after <= created_at <
        created_before`` (unix seconds), ``parent`` (the children of that run). At most
        ``limit`` runs (1 to 1000); pass the page's ``cursor`` back for the next page
        (None when there is none). Raises :class:`~flowkit.ConfigurationError` naming a
        bad argument, or when the runtime has no store.

        >>> # page = await rt.list_runs(flow="checkout", status="failed", created_after=t)
        >>> # more = await rt.list_runs(flow="checkout", status="failed",
        >>> #                           created_after=t, cursor=page.cursor)
        """
        store = self.store
        lister = getattr(store, "list_runs", None)
        if store is None or lister is None:
            raise ConfigurationError(
                "list_runs needs Runtime(store=...): runs are listed from the store's index"
                if store is None
                else f"list_runs: the store {store!r} keeps no run index (no list_runs method)"
            )
        page: RunPage = await lister(
            flow=flow,
            status=status,
            tags=tags,
            created_after=created_after,
            created_before=created_before,
            parent=parent,
            limit=limit,
            cursor=cursor,
        )
        return page

    async def history(self, run_id: str) -> list[HistoryEvent]:
        """The run's history: its events in order (``seq`` from 1), read from the store.

        Raises :class:`~flowkit.ResumeError` for a run not in the store, and
        :class:`~flowkit.ConfigurationError` when the runtime has no store. A store made
        with ``history=False`` keeps none: the list is empty.
        """
        return await read_history(self._store_for("history"), run_id)

    async def describe(self, run_id: str) -> RunDescription:
        """The run's header (as :meth:`list_runs` lists it), a table of its nodes
        (status, attempts, first start, last end, time spent, last error) and what it
        waits for (waits with their timeout, timers with their due time, children).

        Raises :class:`~flowkit.ResumeError` for a run not in the store, and
        :class:`~flowkit.ConfigurationError` when the runtime has no store.
        """
        return await describe_stored(self._store_for("describe"), run_id)

    def _store_for(self, operation: str) -> Any:
        if self.store is None:
            raise ConfigurationError(
                f"{operation} needs Runtime(store=...): run history is kept in the store"
            )
        return self.store

    def known_blueprints(self) -> list[Any]:
        """Every blueprint this runtime can run (its webhook routes come from these)."""
        return [t.blueprint for t in self.flows.by_digest.values()]

    def handle(self, run_id: str) -> RunHandle:
        """A handle on a run this runtime knows."""
        return RunHandle(self, run_id)

    def run_sync(
        self, target: Any, *, backend: Literal["asyncio", "trio"] = "asyncio", **inputs: Any
    ) -> RunResult:
        """Run to a result from synchronous code (starts an event loop)."""
        return anyio.run(partial(self.run, target, **inputs), backend=backend)

    # -- schedules ----------------------------------------------------------
    def _schedule_store(self) -> Any:
        return self.store if self._schedules_here is None else self._schedules_here

    def _can_start(self) -> bool:
        return self._tg is not None

    async def tick_schedules(self) -> list[str]:
        """Once, what the open runtime does on its scheduler loop: start the runs of the
        ticks that are due (see :class:`flowkit.Schedule`); their run ids."""
        self._owner("tick_schedules")
        return [] if self._scheduler is None else await self._scheduler.tick()

    async def _schedule_loop(self) -> None:
        scheduler = self._scheduler
        assert scheduler is not None
        while True:
            try:
                await scheduler.tick()
            except StoreError as exc:  # the store is down: try again next poll
                _log.warning("schedule step failed; retrying", error=str(exc))
            now = clock.now()
            await anyio.sleep(min(max(0.0, scheduler.next_due(now) - now), self.poll_interval))

    # -- lifetime -------------------------------------------------------------
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
            if self.store is not None:  # other processes share its flow slots
                tg.start_soon(self._sweep_loop)
            if self._scheduler is not None:
                await self._scheduler.ensure_registered()
                tg.start_soon(self._schedule_loop)
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
            if self._scheduler is not None and self._tg is not None:
                tg.start_soon(self._schedule_loop)
            try:
                yield self
            finally:
                tg.cancel_scope.cancel()

    # -- runs -----------------------------------------------------------------
    def _target(self, target: Any, registry: Mapping[str, Any] | None = None) -> Target:
        return self.flows.add(target, registry)

    async def _create(
        self,
        target: Target,
        run_id: str | None,
        inputs: dict[str, Any],
        parent: str | None = None,
        *,
        tags: Mapping[str, str] | None = None,
        signal: p.SignalReceived | None = None,
        priority: int = DEFAULT_PRIORITY,
        debounce: float | None = None,
        extra: Mapping[str, Any] | None = None,
    ) -> tuple[Run, list[p.Command]]:
        """A new run (or, for a ``run_id`` that exists, that run and no commands); a new
        one has ``signal`` (if given) received, buffered for its wait, and begins
        ``debounce`` seconds from now (if given); ``extra`` goes into its header."""
        if run_id is not None:
            existing = await self._find(run_id)
            if existing is not None:
                return existing, []
        if parent is None:  # a child's inputs come from its parent run, not a caller
            target.check(inputs)
        run_id = run_id or new_run_id()
        state = RunState(run_id)
        if self.store is None:  # nothing to commit: record no deltas
            state.journal = NULL_JOURNAL
        traceparent = self._executor.run_traceparent(
            run_id, target.blueprint.id, self._traceparent(parent), parent
        )
        bound = target.bind(inputs)
        slot = (
            None
            if debounce is not None
            else await self._slot_at_start(target, run_id, bound, extra)
        )
        commands = start_run(
            target.program,
            state,
            bound,
            parent=parent,
            traceparent=traceparent,
            signal=signal,
            priority=priority,
            debounce=debounce,
            extra=with_tags(extra if slot is None else {**(extra or {}), SLOT: slot}, tags),
        )
        joined = await self.run_slots.join_new(commands)  # it arrives now, not when driven
        if self.store is not None:
            delta = state.take_delta()
            now = clock.now()
            created = await self.store.create_run(
                run_id,
                state,
                blueprint_id=target.blueprint.id,
                digest=target.blueprint.digest,
                parent=parent,
                index=index_ops(delta, commands, now=now),
                tags=tags,
                created_at=now,
                **start_history(self.store, state, commands, now),
            )
            if not created:  # another process won the race for this id
                await self.run_slots.not_created(joined, slot)
                return await self._get(run_id), []
        run = Run(target.program, target, state, 1, parent)
        self._runs[run_id] = run
        self._emit(run_id, "workflow:start", data={"blueprint": target.blueprint.id})
        return run, commands

    def _traceparent(self, parent: str | None) -> str | None:
        """A child run continues its parent's trace; a new run joins the caller's span."""
        if parent is not None and parent in self._runs:
            inherited = self._runs[parent].state.header.get("traceparent")
            if inherited:
                return str(inherited)
        return current_traceparent()

    async def _find(self, run_id: str) -> Run | None:
        run = self._runs.get(run_id)
        if run is None and self.store is not None and await self.store.info(run_id):
            run = await self._get(run_id)
        return run

    async def _get(self, run_id: str) -> Run:
        run = self._runs.get(run_id)
        if run is not None:
            return run
        loaded = await self.store.load(run_id) if self.store is not None else None
        if loaded is None:
            raise ResumeError(f"unknown run {run_id!r}: it was never started here or in the store")
        state, version = loaded
        target = self.flows.of_state(state)
        run = Run(target.program, target, state, version, state.header.get("parent"))
        run.recover = not deferred(state.sections["dispatches"]) or continuing(state)
        self._runs[run_id] = run
        return run

    def _check_digest(self, state: RunState, target: Target) -> None:
        if target.blueprint.digest != state.header.get("digest"):
            raise unknown_digest(state, self.flows.known())

    async def _signal_target(self, run: Run, name: str) -> Run:
        """The run (this one or a descendant) that should receive signal ``name``."""

        async def state_of(run_id: str) -> tuple[RunState, Target]:
            found = await self._get(run_id)
            return found.state, found.target

        return await self._get(await route_signal(run.run_id, name, state_of))

    def _result_of(self, run: Run) -> RunResult:
        """The run's result as of now."""
        return RunResult.of(run.state, run.program.blueprint)

    async def finished(self, run_id: str) -> RunResult:
        """Wait until the run has completed, failed or been cancelled; its result."""
        if self.store is None:
            return await self._wait_finished_here(await self._get(run_id))
        while True:
            run = await self._get(run_id)
            if run.state.finished:
                await run.wait_idle()
                return await self.result(run_id)
            event = self._finish_events.setdefault(run_id, anyio.Event())
            if run.tg is None:
                self._evict(run)
            # Another process (or a copy evicted meanwhile) may finish the run: re-read
            # the store every poll interval rather than rely on this process's event alone.
            with anyio.move_on_after(self.poll_interval):
                await event.wait()
            loaded = await self.store.load(run_id)
            if loaded is not None and loaded[0].finished:
                return RunResult.of(loaded[0], blueprint=run.target.blueprint)

    async def _wait_finished_here(self, run: Run) -> RunResult:
        """Without a store only this runtime advances the run: its finish event says when."""
        run_id = run.run_id
        while True:
            run = self._runs.get(run_id, run)
            if run.state.finished:
                await run.wait_idle()
                return self._result_of(run)
            await self._finish_events.setdefault(run_id, anyio.Event()).wait()

    # -- children -------------------------------------------------------------
    async def _start_child(self, parent: Run, command: p.StartChild) -> None:
        child = self.flows.child(command, "pass it in Runtime(flows=[...])")
        if isinstance(child, p.ChildFinished):
            await self._deliver(parent, child)
            return
        run, commands = await self._create(
            child,
            command.child_run_id,
            command.inputs,
            parent=parent.run_id,
            priority=priority_of(parent.state.header),  # a child inherits its parent's
            extra=None if command.slot is None else {PARENT_SLOT: command.slot},
        )
        await self._drive(run, commands)

    async def _continue(self, run: Run, command: p.ContinueAsNew) -> None:
        """Create the run ``run`` continues as (``flow.continue_as_new``), then finish
        ``run``; the new run is driven in the open runtime's background, else by the
        :meth:`run` that drove ``run``."""
        tags = run.state.header.get("tags")
        new, commands = await self._create(
            run.target,
            command.run_id,
            dict(command.inputs),
            tags=tags,
            priority=priority_of(run.state.header),
            extra=command.header,
        )
        if commands or new.recover:  # a new run, or one a process died before driving
            if self._tg is not None:
                self._drive_soon(new, commands)
            else:
                self._continued[new.run_id] = (new, commands)
        await self._deliver(run, p.RunContinued(command.run_id))

    async def _notify_parent(self, run: Run) -> None:
        """When a child run has finished, tell its parent (idempotent in the core)."""
        if run.parent is None or not run.state.finished:
            return
        try:
            parent = await self._get(run.parent)
        except ResumeError:
            return  # a parent that started it without waiting, and finished (and was let go)
        await self._deliver(parent, for_parent(run.run_id, run.state.header))

    # -- timers ---------------------------------------------------------------
    async def _scheduler_loop(self) -> None:
        firing: set[tuple[str, str]] = set()
        async with anyio.create_task_group() as tg:
            while True:
                for run_id, timer_id in await self._due(clock.now()):
                    if (run_id, timer_id) not in firing:
                        firing.add((run_id, timer_id))
                        tg.start_soon(self._fire, run_id, timer_id, firing)
                await self._sleep_until_next_timer()

    async def _fire(self, run_id: str, timer_id: str, firing: set[tuple[str, str]]) -> None:
        try:
            run = await self._get(run_id)
            if timer_id in run.state.sections["timers"] or self.store is not None:
                await self._advance(run, p.TimerFired(timer_id))
        finally:
            firing.discard((run_id, timer_id))

    async def _due(self, now: float) -> list[tuple[str, str]]:
        due = self._pop_due_local(now)
        if self.store is not None:
            due = [(t.run_id, t.timer_id) for t in await self.store.due_timers(now)]
        return due


FINISHED_KEPT = 1000
"""How many finished runs the default runtime remembers (those a caller saw paused)."""


class ProcessRuns:
    """What ``FlowDef.run()`` keeps between calls: plain data, no task, no event.

    Each ``run()`` call runs on the event loop of the moment (``run_sync()``
    starts its own), so all a later call needs to resume a run is kept here:
    the states of the runs not finished, their timers, the flows they follow,
    and the last finished runs a caller had seen paused.
    """

    def __init__(self) -> None:
        self.states: dict[str, RunState] = {}
        self.finished: OrderedDict[str, RunState] = OrderedDict()
        self.seen_paused: set[str] = set()
        # (due, run id, timer id), a heap; entries of finished runs or cancelled
        # timers stay until due, and are skipped then
        self.timers: list[tuple[float, str, str]] = []
        self.flows = Flows()

    def state(self, run_id: str) -> RunState | None:
        return self.states.get(run_id) or self.finished.get(run_id)

    def finish(self, run_id: str) -> None:
        """Forget a run that just finished, unless a caller saw it paused."""
        state = self.states.pop(run_id, None)
        if state is None or run_id not in self.seen_paused:
            return
        self.seen_paused.discard(run_id)
        self.finished[run_id] = state
        while len(self.finished) > FINISHED_KEPT:
            self.finished.popitem(last=False)


class DefaultRuntime(Runtime):
    """The runtime behind ``FlowDef.run()``: one per event loop, over the process's runs.

    Runs live in :class:`ProcessRuns` while they are not finished, so a run
    one call left paused can be resumed by a later call on another event loop
    (``checkout.signal(...)``); this runtime only wraps them in what the loop
    needs to drive them, and lets go of a wrapper once its run has finished.
    """

    def __init__(self, process: ProcessRuns) -> None:
        super().__init__()
        self.process = process
        self.flows = process.flows
        self._timers = process.timers

    async def wait(self, run_id: str, timeout: float | None = None) -> RunResult:
        """Fire due timers until the run is completed, failed or cancelled."""
        with anyio.fail_after(timeout):
            async with self.scheduler():
                result = await self.finished(run_id)
        run = self._runs.get(run_id)
        if run is not None:
            self._evict(run)
        return result

    async def result(self, run_id: str) -> RunResult:
        run = self._runs.get(run_id)
        return self._result_of(run if run is not None else self._wrap(run_id))

    def check_run_of(self, run_id: str, flow_id: str) -> None:
        """Raise :class:`ResumeError` unless ``run_id`` is a run of flow ``flow_id`` kept here."""
        state = self._state(run_id)
        if state is None:
            raise _unknown_run(run_id)
        started_by = state.header.get("blueprint")
        if started_by != flow_id:
            raise ResumeError(
                f"run {run_id!r} is a run of flow {started_by!r}, not of {flow_id!r}: "
                "resume it through the flow that started it"
            )

    def _result_of(self, run: Run) -> RunResult:
        if not run.state.finished:
            self.process.seen_paused.add(run.run_id)
        flow = self.flows.source(run.target.blueprint.id)
        resumed_by = getattr(flow, "__name__", "") if run.parent is None else ""
        return RunResult.of(run.state, run.program.blueprint, resumed_by=resumed_by)

    async def _create(
        self,
        target: Target,
        run_id: str | None,
        inputs: dict[str, Any],
        parent: str | None = None,
        *,
        tags: Mapping[str, str] | None = None,
        signal: p.SignalReceived | None = None,
        priority: int = DEFAULT_PRIORITY,
        debounce: float | None = None,
        extra: Mapping[str, Any] | None = None,
    ) -> tuple[Run, list[p.Command]]:
        run, commands = await super()._create(
            target,
            run_id,
            inputs,
            parent,
            tags=tags,
            signal=signal,
            priority=priority,
            debounce=debounce,
            extra=extra,
        )
        if commands:  # a new run, not one found under that id
            self.process.states[run.run_id] = run.state
        return run, commands

    async def _find(self, run_id: str) -> Run | None:
        return await self._get(run_id) if self._state(run_id) is not None else None

    async def _get(self, run_id: str) -> Run:
        run = self._runs.get(run_id)
        if run is None:
            run = self._runs[run_id] = self._wrap(run_id)
        return run

    def _state(self, run_id: str) -> RunState | None:
        run = self._runs.get(run_id)
        return run.state if run is not None else self.process.state(run_id)

    def _wrap(self, run_id: str) -> Run:
        """A run kept in the process, wrapped for this event loop."""
        state = self.process.state(run_id)
        if state is None:
            raise _unknown_run(run_id)
        target = self.flows.of_state(state)
        return Run(target.program, target, state, 0, state.header.get("parent"))

    def _evict(self, run: Run) -> None:
        """A finished run leaves this loop's runtime and, unless seen paused, the process."""
        if run.tg is not None or not run.state.finished:
            return
        if self._runs.get(run.run_id) is run:
            del self._runs[run.run_id]
        self.process.finish(run.run_id)

    async def _fire(self, run_id: str, timer_id: str, firing: set[tuple[str, str]]) -> None:
        state = self._state(run_id)
        if state is None or state.finished or timer_id not in state.sections["timers"]:
            firing.discard((run_id, timer_id))  # cancelled, or its run finished meanwhile
            return
        await super()._fire(run_id, timer_id, firing)


def _unknown_run(run_id: str) -> ResumeError:
    return ResumeError(
        f"unknown run {run_id!r}: flow.run() keeps a run in this process until it finishes, "
        f"and after that only if it was returned paused (the last {FINISHED_KEPT} such); "
        "keep the RunResult, or use flowkit.Runtime(store=...) for runs that outlive the process"
    )


_PROCESS_RUNS = ProcessRuns()
_LOOP_RUNTIME: RunVar[DefaultRuntime] = RunVar("flowkit_default_runtime")


def default_runtime() -> DefaultRuntime:
    """The runtime ``FlowDef.run()`` uses on the running event loop (made on first use)."""
    runtime = _LOOP_RUNTIME.get(None)
    if runtime is None:
        runtime = DefaultRuntime(_PROCESS_RUNS)
        _LOOP_RUNTIME.set(runtime)
    return runtime

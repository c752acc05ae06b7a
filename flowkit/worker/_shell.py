"""The distributed shell: core transitions committed to a store, nodes sent as messages.

Shared by :class:`~flowkit.Worker` and :class:`~flowkit.Client`. A transition
is one store transaction (the delta, timer and lease index changes); the node
executions it calls for are then published. If the process dies between the
two, the dispatches' leases expire and a reconciler publishes them again:
delivery is at least once, and the core applies each completion once.
"""

from __future__ import annotations

import uuid
from collections import OrderedDict
from contextlib import asynccontextmanager
from functools import partial
from typing import TYPE_CHECKING, Any

import anyio

from .. import _clock as clock
from .._errors import BlueprintError, ResumeError, Undeliverable, describe
from ..blueprint._lint import LintIssue
from ..core import _protocol as p
from ..core._admission import PARENT_SLOT, SLOT
from ..core._machine import start_run
from ..core._priority import DEFAULT_PRIORITY, priority_of
from ..core._state import RunState, RunStatus
from ..observability._propagation import current_traceparent
from ..shell._commands import Interpreter, for_parent
from ..shell._durable import (
    Replica,
    RunMigrated,
    commit_info,
    index_ops,
    routes_nodes,
    with_tags,
)
from ..shell._events import EventBus
from ..shell._flows import Flows, route_signal
from ..shell._history import Origin, commit_history, start_history
from ..shell._middleware import Pipeline
from ..shell._migrate import migrate_stored
from ..shell._run_slots import RunSlots
from ..stores._notices import WatchesCancelledNodes
from ..stores._protocol import CatchesUp
from ..transports._protocol import Outgoing, SendsMany
from ._messages import ENQUEUED_AT_HEADER, PRIORITY_HEADER, NodeMessage, readable_fields
from ._shell_slots import SlotSteps

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Mapping, Sequence

    from ..core._protocol import ErrorInfo
    from ..shell._middleware import Middleware
    from ..shell._target import Target
    from ..stores._protocol import Store
    from ..transports._protocol import Delivery, Transport


PUBLISHES_AT_ONCE = 16
"""Messages one transition publishes concurrently (the nodes of a fan)."""

IDLE_REPLICA_SECONDS = 60.0
"""A copy of a run unused here for that long is dropped: another process may have
finished the run (only the process that finishes it drops its copy at once)."""


class _Turn:
    """One transition's commands being carried out: what is left to do once they are
    interpreted, in order (cancelled nodes are reached before any of it)."""

    __slots__ = ("cancelled", "header", "later", "run_id", "target")

    def __init__(self, run_id: str, target: Target, header: Mapping[str, Any]) -> None:
        self.run_id = run_id
        self.target = target
        self.header = header  # the run's, as of the transition: its cached copy may be gone
        self.cancelled: list[str] = []
        self.later: list[Callable[[], Awaitable[Any]]] = []


class Acking:
    """The delivery whose node a step settles: the step's publishes ack it in the same
    round trip where the transport can (:class:`~flowkit.transports._protocol.SendsMany`);
    ``done`` once they did, else the caller acks it. ``sending()`` is called first."""

    __slots__ = ("delivery", "done", "sending")

    def __init__(self, delivery: Delivery, sending: Callable[[], None] = lambda: None) -> None:
        self.delivery = delivery
        self.sending = sending
        self.done = False


class Shell(SlotSteps, Interpreter[_Turn]):
    """Starts runs, applies events and publishes what the core asks for."""

    def __init__(
        self,
        transport: Transport,
        store: Store,
        *,
        queue: str,
        lease: float,
        flows: Iterable[Any] = (),
        events: EventBus | None = None,
        cache_size: int = 10_000,
        middleware: Sequence[Middleware] = (),
    ) -> None:
        super().__init__()
        self.transport = transport
        self.store = store
        self.run_slots = RunSlots(store)
        self.queue = queue
        self.lease = lease
        self.events = events or EventBus()
        self.flows = Flows(on_add=None if _in_process(transport) else _check_importable)
        self._replicas: OrderedDict[str, Replica] = OrderedDict()
        self._cache_size = cache_size
        self._used_at: dict[str, float] = {}  # run id -> when its copy was last used
        self._pipeline = Pipeline(middleware)
        self._stepping: dict[str, _Turns] = {}  # run id -> its steps in this process
        # told (run id, dispatch ids) when a transition here cancels dispatches
        self.on_cancel_nodes: Callable[[str, list[str]], None] | None = None
        for flow in flows:
            self.flows.add(flow)

    def target_for(self, flow: Any) -> Target:
        digest = getattr(getattr(flow, "blueprint", None), "digest", None)
        if digest is None and hasattr(flow, "digest"):
            digest = flow.digest
        known = self.flows.by_digest.get(digest) if digest else None
        return known or self.flows.add(flow)

    # -- runs -----------------------------------------------------------------
    async def start(
        self,
        target: Target,
        run_id: str | None,
        inputs: dict[str, Any],
        parent: str | None = None,
        tags: Mapping[str, str] | None = None,
        signal: p.SignalReceived | None = None,
        on_created: Callable[[], None] | None = None,
        creator: str | None = None,
        priority: int = DEFAULT_PRIORITY,
        debounce: float | None = None,
        extra: Mapping[str, Any] | None = None,
    ) -> str:
        """Create the run and publish its first nodes; an existing ``run_id`` is left alone.

        ``tags`` go into the store's run index with it. ``signal`` is received in its
        first state, buffered for its wait (signal-with-start): it comes with the run or
        not at all. ``on_created()`` is called when this call has created the run, before
        its first nodes are published. ``creator`` is kept in the run's header: a caller
        whose try's answer was lost can tell whether that try created the run. With
        ``debounce`` (seconds) the run begins that long from now, and a start of a run
        that exists and has not begun yet pushes its beginning back (with these inputs).
        ``priority`` (0-9) is kept in the header and sent with every node message; ``extra``
        goes into the header (a continued run's link to the run before)."""
        run_id = run_id or uuid.uuid4().hex
        state = RunState(run_id)
        traceparent = self._pipeline.run_traceparent(
            run_id, target.blueprint.id, self._traceparent(parent), parent
        )
        bound = target.bind(inputs)
        slot = None
        if debounce is None:  # a free slot and nobody queued: it begins at once
            slot = await self.run_slots.take_at_start(target.program, run_id, bound, extra or {})
            extra = extra if slot is None else {**(extra or {}), SLOT: slot}
        commands = start_run(
            target.program,
            state,
            bound,
            parent=parent,
            traceparent=traceparent,
            signal=signal,
            priority=priority,
            debounce=debounce,
            extra=with_tags(extra, tags),
        )
        if creator is not None:
            state.put("header", "creator", creator)
        home = self._home_queue(target, parent)
        if home is not None:
            state.put("header", "queue", home)
        joined = await self.run_slots.join_new(commands)
        delta = state.take_delta()
        now = clock.now()
        created = await self.store.create_run(
            run_id,
            state,
            blueprint_id=target.blueprint.id,
            digest=target.blueprint.digest,
            parent=parent,
            index=index_ops(delta, commands, now=now, lease_seconds=self.lease),
            tags=tags,
            created_at=now,
            **start_history(self.store, state, commands, now),
        )
        if not created:
            await self.run_slots.not_created(joined, slot)
        if created:
            if on_created is not None:
                on_created()
            self._remember(Replica(target.program, state, 1))
            self._emit(run_id, "workflow:start", data={"blueprint": target.blueprint.id})
            try:
                await self.carry_out(run_id, target, commands, state.header)
            finally:
                if state.finished:
                    self._forget(run_id)
        elif debounce is not None:
            await self.step(run_id, p.StartDebounced(bound, debounce))
        return run_id

    def _home_queue(self, target: Target, parent: str | None) -> str | None:
        """The queue a run's nodes without a ``queue`` of their own go to, kept in its
        header when it matters: the flow (or its parent) sends some nodes elsewhere, and
        a worker of another queue must send the rest back here. A child run has its
        parent's."""
        replica = self._replicas.get(parent) if parent is not None else None
        inherited = replica.state.header.get("queue") if replica is not None else None
        if inherited is not None:
            return str(inherited)
        return self.queue if routes_nodes(target.blueprint) else None

    def _traceparent(self, parent: str | None) -> str | None:
        """A child run continues its parent's trace; a new run joins the caller's span."""
        replica = self._replicas.get(parent) if parent is not None else None
        inherited = replica.state.header.get("traceparent") if replica is not None else None
        return str(inherited) if inherited else current_traceparent()

    async def replica(self, run_id: str, *, fresh: bool = False) -> Replica:
        """This process's copy of the run (loaded, or refreshed with ``fresh``)."""
        replica = self._replicas.get(run_id)
        if replica is not None and not fresh:
            self._replicas.move_to_end(run_id)
            self._used_at[run_id] = clock.now()
            return replica
        if replica is not None and await self._caught_up(replica):
            self._used_at[run_id] = clock.now()
            if replica.state.finished:
                self._forget(run_id)  # a finished run is not stepped again
            else:
                self._replicas.move_to_end(run_id)
            return replica
        return await self._load(run_id)

    async def _load(self, run_id: str) -> Replica:
        """A new copy of the run, loaded whole."""
        loaded = await self.store.load(run_id)
        if loaded is None:
            raise ResumeError(f"unknown run {run_id!r}: it is not in {self.store!r}")
        state, version = loaded
        target = self.target_of(state)
        replica = Replica(target.program, state, version)
        if state.finished:
            self._forget(run_id)  # and a stale copy: a finished run is not stepped again
        else:
            self._remember(replica)
        return replica

    async def _caught_up(self, replica: Replica) -> bool:
        """Whether the copy is now the stored run, by the deltas it missed (else the caller
        loads it whole: it was migrated, or cannot be caught up). Between this process's
        steps of the run: a step's changes are in the copy before its commit is."""
        if replica.version <= 0 or not isinstance(self.store, CatchesUp):
            return False
        async with self._one_step_at_a_time(replica.run_id):
            if self._replicas.get(replica.run_id) is not replica:
                return False  # dropped or replaced meanwhile
            try:
                return await replica.catch_up(self.store)
            except RunMigrated:
                return False

    def target_of(self, state: RunState) -> Target:
        return self.flows.of_state(state)

    def _remember(self, replica: Replica) -> None:
        self._replicas[replica.run_id] = replica
        self._replicas.move_to_end(replica.run_id)
        self._used_at[replica.run_id] = clock.now()
        while len(self._replicas) > self._cache_size:
            self._forget(next(iter(self._replicas)))
        self.drop_idle()

    def _forget(self, run_id: str) -> None:
        self._replicas.pop(run_id, None)
        self._used_at.pop(run_id, None)

    def drop_idle(self) -> None:
        """Drop the copies of runs unused here for :data:`IDLE_REPLICA_SECONDS`."""
        cutoff = clock.now() - IDLE_REPLICA_SECONDS
        while self._replicas:
            oldest = next(iter(self._replicas))  # the least recently used comes first
            if self._used_at.get(oldest, cutoff) > cutoff:
                return
            self._forget(oldest)

    async def step(
        self,
        run_id: str,
        event: p.Event,
        origin: Origin | None = None,
        check: Callable[[RunState], None] | None = None,
        *,
        acking: Acking | None = None,
    ) -> Replica:
        """Apply ``event`` (one store transaction) and publish what follows; ``origin``
        says who ran the node the event settles (for the run's history), ``check`` may
        refuse it on the run as stored (see :meth:`Replica.step`); ``acking``: the
        delivery the publishes may ack.

        Steps of one run in this process take turns; a step without ``check`` that
        waits for its turn may be committed by the step before it, with it, in one
        transaction (see :meth:`_take_turn`): each step carries out its own commands."""
        replica, commands = await self._take_turn(run_id, event, origin, check)
        try:
            target = self.target_of(replica.state)
            await self.carry_out(run_id, target, commands, replica.state.header, acking)
        finally:
            if replica.state.finished:  # its finish is carried out: keep no copy
                self._forget(run_id)
        return replica

    async def _take_turn(
        self,
        run_id: str,
        event: p.Event,
        origin: Origin | None,
        check: Callable[[RunState], None] | None,
    ) -> tuple[Replica, list[p.Command]]:
        """Commit ``event`` in this step's turn (``check``: see :meth:`step`): with the
        other steps without ``check`` waiting for theirs, in one transaction, unless an
        earlier turn committed it already. A group that fails leaves the others' events
        to their own turns, and this step tries its own alone: what it raises is about
        its event (or the store)."""
        mine = None if check is not None else _Waiting(event, origin)
        async with self._one_step_at_a_time(run_id, mine) as turns:
            if mine is not None and mine.done is not None:
                return mine.done  # committed in an earlier step's turn
            replica = await self.replica(run_id)
            group = [] if mine is None else [mine, *turns.waiting_besides(mine)]
            if len(group) <= 1:
                return await self._step_alone(replica, event, origin, check)
            try:
                replica, done = await self._step_together(replica, group)
            except Exception:  # whoever's event it was: each of them raises its own
                return await self._step_alone(await self.replica(run_id), event, origin, check)
            for waiting, commands in zip(group, done, strict=False):
                waiting.done = (replica, commands)
            return replica, done[0]

    async def _step_alone(
        self,
        replica: Replica,
        event: p.Event,
        origin: Origin | None,
        check: Callable[[RunState], None] | None,
    ) -> tuple[Replica, list[p.Command]]:
        step = partial(Replica.step, lease_seconds=self.lease, origin=origin, check=check)
        try:
            return replica, await step(replica, self.store, event)
        except RunMigrated:  # by another process: step the new version's program
            replica = await self._load(replica.run_id)
            return replica, await step(replica, self.store, event)

    async def _step_together(
        self, replica: Replica, group: list[_Waiting]
    ) -> tuple[Replica, list[list[p.Command]]]:
        events = [(waiting.event, waiting.origin) for waiting in group]
        step = partial(Replica.step_together, lease_seconds=self.lease)
        try:
            return replica, await step(replica, self.store, events)
        except RunMigrated:  # by another process: step the new version's program
            replica = await self._load(replica.run_id)
            return replica, await step(replica, self.store, events)

    async def migrate(self, run_id: str, to: Target, mapping: dict[str, str]) -> None:
        """Migrate the stored run to ``to`` (see :meth:`flowkit.Client.migrate`); this
        process's copy of it is dropped."""
        async with self._one_step_at_a_time(run_id):
            try:
                await migrate_stored(self.store, run_id, to, mapping, self.flows)
            finally:
                self._forget(run_id)

    @asynccontextmanager
    async def _one_step_at_a_time(
        self, run_id: str, waiting: _Waiting | None = None
    ) -> AsyncIterator[_Turns]:
        """Serialise this process's steps of one run before they reach the store's lock:
        the completions of a fan would otherwise spin on it (2.5-5 tries per commit).
        ``waiting`` is listed among the run's steps waiting for their turn meanwhile."""
        turns = self._stepping.get(run_id)
        if turns is None:
            turns = self._stepping[run_id] = _Turns()
        turns.users += 1
        if waiting is not None:
            turns.waiting.append(waiting)
        try:
            async with turns.lock:
                yield turns
        finally:
            if waiting is not None:
                turns.waiting.remove(waiting)
            turns.users -= 1
            if not turns.users:
                del self._stepping[run_id]

    async def signal_target(self, run_id: str, name: str) -> str:
        """The run (this one or a descendant) whose wait ``name`` should get a signal."""

        async def state_of(run_id: str) -> tuple[RunState, Target]:
            replica = await self.replica(run_id, fresh=True)
            return replica.state, self.target_of(replica.state)

        return await route_signal(run_id, name, state_of)

    # -- dead letters -----------------------------------------------------------
    async def continued(self, run_id: str, digest: str) -> None:
        """Check that a message of a flow version this worker lacks is for a run that a
        patched version here continues, or that was migrated to a version here since (a
        :class:`~flowkit.ResumeError` if not)."""
        loaded = await self.store.load(run_id)
        state = loaded[0] if loaded is not None else None
        current = str(state.header.get("digest", "")) if state is not None else ""
        if current != digest and current in self.flows.by_digest:
            return  # the run was migrated since, to a version this worker has
        if state is not None and current == digest:
            if self.flows.find(state) is not None:
                return
            refused = self.flows.why_not_patched(state)
            if refused:
                why = " | ".join(refused)
                reason = self.unknown_digest_reason(run_id, digest)
                raise ResumeError(f"{reason}; patched versions cannot continue it: {why}")
        raise ResumeError(self.unknown_digest_reason(run_id, digest))

    def unknown_digest_reason(self, run_id: str, digest: str) -> str:
        """Why a message for ``digest`` cannot be processed here, and what to do."""
        known = self.flows.known()
        return (
            f"unknown blueprint digest {digest[:12]} for run {run_id!r}: this worker does not "
            f"have that flow version (it has: {', '.join(known) or 'no flows'}); deploy the "
            "code that started the run to the workers (keep old versions registered with "
            "@flow(version=...))"
        )

    async def fail_undeliverable(self, body: bytes, reason: str) -> bool:
        """Fail the run of a dead-lettered message with ``reason``; whether one was failed.

        The node fails with an :class:`~flowkit.Undeliverable` error through the core
        when this process has the run's flow and the message names a dispatch of the
        run; when it does not have the flow (or the dispatch cannot be read), the run
        is finished FAILED in the store directly. Nothing happens for a message that
        names no stored unfinished run, or a dispatch the run no longer waits for.
        """
        fields = readable_fields(body)
        run_id = fields.get("run_id")
        if not isinstance(run_id, str) or not run_id:
            return False
        loaded = await self.store.load(run_id)
        if loaded is None or loaded[0].finished:
            return False
        state = loaded[0]
        dispatch_id = fields.get("dispatch_id")
        record = (
            state.sections["dispatches"].get(dispatch_id) if isinstance(dispatch_id, str) else None
        )
        error = _undeliverable(reason, record, fields)
        if self.flows.find(state) is None or not isinstance(dispatch_id, str):
            return await self._fail_in_store(run_id, dict(error))
        if record is None:
            return False  # a stale message: its dispatch is done or was cancelled
        await self.step(run_id, p.NodeFailed(dispatch_id, error, retryable=False))
        return True

    async def _fail_in_store(self, run_id: str, error: dict[str, Any]) -> bool:
        """Finish a run FAILED without its flow: drop what it has in progress (and their
        leases and timers) as the core's own finish would; cancel its children, tell its
        parent. False if it had finished meanwhile."""
        async with self.store.transaction(run_id) as txn:
            state = await txn.load()
            if state is None or state.finished:
                return False
            state.journal.clear()
            children = list(state.sections["children"])
            dropped: list[p.Command] = [p.CancelNode(d) for d in state.sections["dispatches"]]
            dropped += [p.CancelChild(child_id) for child_id in children]
            for section in ("dispatches", "timers", "waits", "children", "batches"):
                for key in list(state.sections[section]):
                    state.drop(section, key)
            state.put("header", "status", RunStatus.FAILED.value)
            state.put("header", "output", None)
            state.put("header", "error", error)
            delta = state.take_delta()
            now = clock.now()
            index = index_ops(delta, [], now=now, lease_seconds=self.lease)
            finish = [*dropped, p.FinishRun(RunStatus.FAILED.value, None, error)]
            await txn.commit(
                delta,
                index=index,
                info=commit_info(state, now),
                state=state,
                **commit_history(self.store, state, finish, now),
            )
        self._forget(run_id)
        self._emit(run_id, "workflow:finish", data={"status": RunStatus.FAILED.value})
        for child_id in children:
            await self._stop_child(child_id)
        parent = state.header.get("parent")
        if parent:
            await self._tell_parent(str(parent), run_id, error)
        return True

    async def _stop_child(self, child_id: str) -> None:
        try:
            await self.step(child_id, p.CancelRequested("parent failed"))
        except ResumeError:  # its flow is unknown here too
            await self._fail_in_store(child_id, _error(Undeliverable("its parent run failed")))

    async def _tell_parent(self, parent: str, run_id: str, error: dict[str, Any]) -> None:
        try:
            await self.step(parent, p.ChildFinished(run_id, RunStatus.FAILED.value, None, error))
        except ResumeError:  # its flow is unknown here too
            failed = {
                "type": "flowkit._errors.ChildFailed",
                "mro": ["flowkit._errors.ChildFailed"],
                "child_run_id": run_id,
                "message": str(error.get("message", "")),
            }
            await self._fail_in_store(parent, failed)

    # -- commands -------------------------------------------------------------
    async def carry_out(
        self,
        run_id: str,
        target: Target,
        commands: list[p.Command],
        header: Mapping[str, Any],
        acking: Acking | None = None,
    ) -> None:
        """Reach the nodes the transition cancelled, publish the nodes it dispatched (at
        once, and ack ``acking`` with them where the transport can), then start or cancel
        child runs and report a finish, in order.

        ``header`` is the run's header after the transition: a concurrent step of the
        same run may drop this process's copy of a run that finished before this
        transition's finish is reported (and its parent told).
        """
        turn = _Turn(run_id, target, header)
        nodes = self.interpret(turn, commands)
        if turn.cancelled:
            await self._cancel_nodes(run_id, turn.cancelled)
        await self._publish_all(run_id, target, nodes, header, acking)
        for then in turn.later:
            await then()

    def cancel_node(self, run: _Turn, command: p.CancelNode) -> None:
        run.cancelled.append(command.dispatch_id)

    def start_child(self, run: _Turn, command: p.StartChild) -> None:
        priority = priority_of(run.header)  # a child is served as its parent is
        run.later.append(partial(self._start_child, run.run_id, command, priority))

    def cancel_child(self, run: _Turn, command: p.CancelChild) -> None:
        cancel = p.CancelRequested("parent finished")
        run.later.append(partial(self.step, command.child_run_id, cancel))

    def finish_run(self, run: _Turn, command: p.FinishRun) -> None:
        run.later.append(partial(self._finished, run, command))

    def continue_as_new(self, run: _Turn, command: p.ContinueAsNew) -> None:
        run.later.append(partial(self._continue, run, command))

    def note(self, run: _Turn, command: p.Note) -> None:
        self._emit(
            run.run_id, command.type, command.node_id, command.attempt, command.data, run.header
        )

    async def _cancel_nodes(self, run_id: str, dispatch_ids: list[str]) -> None:
        """Reach the nodes of dispatches the core just took out of the run (durably):
        a worker of this process cancels its own at once, the store tells the others."""
        if self.on_cancel_nodes is not None:
            self.on_cancel_nodes(run_id, dispatch_ids)
        if isinstance(self.store, WatchesCancelledNodes):
            await self.store.announce_cancelled_nodes(run_id)

    async def _publish_all(
        self,
        run_id: str,
        target: Target,
        commands: Sequence[p.ExecuteNode],
        header: Mapping[str, Any],
        acking: Acking | None = None,
    ) -> None:
        """Publish the nodes: all in one call (with the ack of ``acking``) where the
        transport sends several at once, else up to :data:`PUBLISHES_AT_ONCE` at a time (a
        fan's source would otherwise wait for a hundred confirmed publishes one after
        another); the first failure is raised once all were tried. A node without a
        ``queue`` of its own goes to the run's (its header's ``queue``)."""
        home = header.get("queue")
        if acking is not None and acking.done:
            acking = None  # acked by an earlier try of this step
        if isinstance(self.transport, SendsMany) and (len(commands) > 1 or (acking and commands)):
            await self._send_many(run_id, target, commands, header, acking)
            return
        if len(commands) <= 1:
            for command in commands:
                await self.publish(
                    run_id,
                    target,
                    command.node_id,
                    command.attempt,
                    command.dispatch_id,
                    header,
                    command.queue or home,
                )
            return
        limiter = anyio.CapacityLimiter(PUBLISHES_AT_ONCE)
        failures: list[Exception] = []

        async def publish(command: p.ExecuteNode) -> None:
            async with limiter:
                try:
                    await self.publish(
                        run_id,
                        target,
                        command.node_id,
                        command.attempt,
                        command.dispatch_id,
                        header,
                        command.queue or home,
                    )
                except Exception as exc:  # raised below, once the others were tried
                    failures.append(exc)

        try:
            async with anyio.create_task_group() as tg:
                for command in commands:
                    tg.start_soon(publish, command)
        except BaseExceptionGroup as group:  # only what publish() lets through: a process
            raise group.exceptions[0] from None  # death (KeyboardInterrupt, a simulated crash)
        if failures:
            raise failures[0]

    async def _send_many(
        self,
        run_id: str,
        target: Target,
        commands: Sequence[p.ExecuteNode],
        header: Mapping[str, Any],
        acking: Acking | None,
    ) -> None:
        assert isinstance(self.transport, SendsMany)
        home = header.get("queue")
        messages = [
            self._outgoing(
                run_id, target, c.node_id, c.attempt, c.dispatch_id, header, c.queue or home
            )
            for c in commands
        ]
        if acking is None:
            await self.transport.send_many(messages)
            return
        acking.sending()
        await self.transport.send_many(messages, then_ack=acking.delivery)
        acking.done = True

    async def publish(
        self,
        run_id: str,
        target: Target,
        node_id: str,
        attempt: int,
        dispatch_id: str,
        header: Mapping[str, Any] | None = None,
        queue: str | None = None,
    ) -> None:
        """Send the node message to ``queue`` (default: this process's queue), with the
        run's trace context and priority (from ``header``, the run's, else this
        process's copy's).

        The priority goes to the transport only when it is not the default, so a
        transport written before priorities (without ``priority=``) still runs the
        runs started without one."""
        message = self._outgoing(run_id, target, node_id, attempt, dispatch_id, header, queue)
        extra: dict[str, Any] = {} if message.priority is None else {"priority": message.priority}
        await self.transport.send(
            message.queue, message.body, key=message.key, headers=message.headers, **extra
        )

    def _outgoing(
        self,
        run_id: str,
        target: Target,
        node_id: str,
        attempt: int,
        dispatch_id: str,
        header: Mapping[str, Any] | None,
        queue: str | None,
    ) -> Outgoing:
        """The node's message, as :meth:`publish` describes it (``priority`` None when
        it is the default)."""
        if header is None:
            replica = self._replicas.get(run_id)
            header = replica.state.header if replica is not None else {}
        traceparent = header.get("traceparent")
        message = NodeMessage(
            run_id, node_id, attempt, dispatch_id, target.blueprint.digest, traceparent
        )
        headers = {ENQUEUED_AT_HEADER: repr(clock.now())}
        if traceparent:
            headers["traceparent"] = traceparent
        priority = priority_of(header)
        if priority != DEFAULT_PRIORITY:
            headers[PRIORITY_HEADER] = str(priority)
        return Outgoing(
            queue or self.queue,
            message.encode(),
            f"{run_id}/{node_id}",
            headers,
            None if priority == DEFAULT_PRIORITY else priority,
        )

    async def _start_child(
        self, run_id: str, command: p.StartChild, priority: int = DEFAULT_PRIORITY
    ) -> None:
        child = self.flows.child(command, "register it with the workers (--app) and clients")
        if isinstance(child, p.ChildFinished):
            await self.step(run_id, child)
            return
        await self.start(
            child,
            command.child_run_id,
            dict(command.inputs),
            parent=run_id,
            priority=priority,
            extra=None if command.slot is None else {PARENT_SLOT: command.slot},
        )

    async def _continue(self, run: _Turn, command: p.ContinueAsNew) -> None:
        """Create the run this one continues as (once: its id is fixed), then finish this
        one. A crash in between leaves the continuation's lease to run out: the
        reconciler carries the command out again (see ``Worker._redo_child``)."""
        header = run.header
        tags = header.get("tags")
        await self.start(
            run.target,
            command.run_id,
            dict(command.inputs),
            tags=tags,
            priority=priority_of(header),
            extra=command.header,
        )
        await self.step(run.run_id, p.RunContinued(command.run_id))

    async def _finished(self, run: _Turn, command: p.FinishRun) -> None:
        self._emit(
            run.run_id, "workflow:finish", data={"status": command.status}, header=run.header
        )
        parent = run.header.get("parent")
        if parent:
            await self.step(str(parent), for_parent(run.run_id, command))

    def _emit(
        self,
        run_id: str,
        type_: str,
        node_id: str | None = None,
        attempt: int | None = None,
        data: Any = None,
        header: Mapping[str, Any] | None = None,
    ) -> None:
        """Emit an event of the run; ``header`` is the run's (else this process's copy's)."""
        if self.events.active:
            if header is None:
                replica = self._replicas.get(run_id)
                header = replica.state.header if replica is not None else None
            self.events.emit_for(run_id, type_, header, node_id, attempt, None, data)


def _in_process(transport: Transport) -> bool:
    """Whether every worker and client on ``transport`` shares this process."""
    return bool(getattr(transport, "in_process", False))


def _check_importable(target: Target) -> None:
    """Refuse a flow whose nodes only ``__main__`` can name: workers in other processes
    name them by the module they import, so they would not know the flow."""
    issues = [
        LintIssue(
            "node-in-main",
            spec.id,
            f"its implementation {spec.uses!r} is defined in __main__ with no importable "
            "module name (a REPL, a notebook or python -c); move the flow and its nodes "
            "into a module the workers import too (their --app) and import it here",
        )
        for spec in target.blueprint.nodes
        if spec.uses and spec.uses.startswith("__main__.")
    ]
    if issues:
        raise BlueprintError(target.blueprint.id, issues)


def _undeliverable(reason: str, record: dict[str, Any] | None, fields: dict[str, Any]) -> ErrorInfo:
    """The error a dead-lettered dispatch fails with: the node (if known) and why."""
    error: dict[str, Any] = _error(Undeliverable(f"its message was dead-lettered: {reason}"))
    node = record["node"] if record is not None else fields.get("node_id")
    attempt = record["attempt"] if record is not None else fields.get("attempt")
    if isinstance(node, str) and node:
        error["node"] = node
        if isinstance(attempt, int) and not isinstance(attempt, bool):
            error["attempt"] = attempt
    return error


def _error(exc: BaseException) -> dict[str, Any]:
    type_, mro, message = describe(exc)
    return {"type": type_, "mro": list(mro), "message": message}


STEPS_TOGETHER = 64
"""At most this many steps of one run are committed in one transaction."""


class _Waiting:
    """A step (without ``check``) waiting for its turn; ``done`` once committed, in its
    turn or in an earlier one: the copy it was applied to and its commands."""

    __slots__ = ("done", "event", "origin")

    def __init__(self, event: p.Event, origin: Origin | None) -> None:
        self.event = event
        self.origin = origin
        self.done: tuple[Replica, list[p.Command]] | None = None


class _Turns:
    """The steps of one run in this process: a lock, how many hold or wait for it, and
    those of them that may be committed together, in the order they came."""

    def __init__(self) -> None:
        self.lock = anyio.Lock()
        self.users = 0
        self.waiting: list[_Waiting] = []

    def waiting_besides(self, mine: _Waiting) -> list[_Waiting]:
        """The steps not committed yet, but ``mine``, in order (up to the group's size)."""
        others = [w for w in self.waiting if w is not mine and w.done is None]
        return others[: STEPS_TOGETHER - 1]

"""``Worker``: executes node messages from a transport against a shared store."""

from __future__ import annotations

import os
import secrets
import socket
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Any, TypeVar

import anyio
import structlog

from .. import _clock as clock
from .._durations import to_seconds
from .._errors import FlowkitError, ResumeError, StoreError, TransportError
from ..backends._options import check_positive
from ..core import _protocol as p
from ..core._admission import lent_slot
from ..core._continue import continuation_command
from ..shell._durable import CHILD_LEASE, dispatch_command, dispatch_queue
from ..shell._events import Event, EventBus
from ..shell._execute import Executor
from ..shell._history import Origin
from ..shell._limits import bucket_of, slot_of
from ..shell._purge import cutoff, purger
from ..shell._schedules import Scheduler, schedules_of
from ._heartbeat import Heartbeats
from ._messages import ENQUEUED_AT_HEADER, MalformedMessage, NodeMessage, names_a_run
from ._outage import Dependency, despite_store_outages, store_dependency
from ._schedules import WorkerStarter
from ._shell import Acking, Shell
from ._slots import Slots

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Awaitable, Callable, Sequence

    from anyio.abc import TaskGroup

    from .._durations import Duration
    from ..shell._durable import Replica
    from ..shell._middleware import Middleware
    from ..shell._schedules import Schedule
    from ..shell._target import Target
    from ..stores._protocol import Store
    from ..transports._protocol import Delivery, Transport
    from ._heartbeat import Beat

log = structlog.get_logger("flowkit.worker")
RETENTION_BATCH = 100  # runs one store call of the retention deletes
T = TypeVar("T")


class Worker:
    """Runs the nodes of the given flows, as messages arrive, until cancelled.

    Any number of workers share one transport queue and one store: each node
    completion is applied once (by ``dispatch_id``), joins fire once, due
    timers fire once, and a reconciler republishes dispatches whose lease ran
    out (a crashed worker, a lost message).

    A node whose dispatch leaves its run while it runs here (the run was
    cancelled or ended, a race was decided) is cancelled: its ``finally`` blocks
    run and its delivery is acked, with no failure recorded. Stores that push
    (MemoryStore, PostgresStore, RedisStore) announce it at once; every
    ``cancel_check_interval`` seconds the worker also asks the store about all
    the nodes it runs, which bounds the delay with SQLite or a missed notice.

    When the store is unreachable (a failed call that a probe confirms) the
    worker takes no new delivery and starts no node: the nodes in flight keep
    their results and deliveries and commit once it is back; the timer and
    lease loops wait too. It probes the store with a capped, jittered backoff
    and resumes by itself, logging one line when the store goes and one when it
    comes back. A broker it cannot receive from is retried the same way.

    A node with a rate (``@node(rate=...)``) or a concurrency limit
    (``@node(concurrency=Limit(...))``) first takes a token and a slot from the store,
    shared by every worker; while it waits for them it holds its delivery (kept by
    the heartbeat). The worker keeps its slots a moment after they are used, for its
    next execution of the pool, and gives the idle ones back together. Draining ends
    those waits and hands their deliveries back. A run of a flow with a limit
    (``@flow(concurrency=Limit(...))``) that ends here gives its slot back and admits
    the next queued runs; every ``lease`` seconds the worker also admits queued runs
    that a process died before admitting.

    ``schedules`` (:class:`~flowkit.Schedule`, and those of the ``@flow(schedule=...)``
    flows in ``app``) start their runs from the worker's scheduler loop: one run per tick
    however many workers run them.

    With ``retention`` (``"30d"``, seconds or a ``timedelta``) the worker also deletes
    the runs that finished longer ago than that, every ``retention_interval`` seconds,
    in small batches (any number of workers may do it at once).

    >>> import flowkit
    >>> from flowkit.stores import MemoryStore
    >>> from flowkit.transports import MemoryTransport
    >>> worker = flowkit.Worker(app=[], transport=MemoryTransport(), store=MemoryStore())
    """

    def __init__(
        self,
        app: Sequence[Any],
        transport: Transport,
        store: Store,
        *,
        concurrency: int = 32,
        queue: str = "flowkit",
        lease: float = 30.0,
        middleware: Sequence[Middleware] = (),
        poll_interval: float = 1.0,
        cancel_check_interval: float = 2.0,
        retention: Duration | None = None,
        retention_interval: float = 60.0,
        schedules: Sequence[Schedule] = (),
    ) -> None:
        if concurrency < 1:
            raise ValueError(f"concurrency must be 1 or more, got {concurrency}")
        check_positive(
            "Worker",
            cancel_check_interval=cancel_check_interval,
            retention_interval=retention_interval,
        )
        self.retention = None if retention is None else to_seconds(retention)
        if retention is not None:
            purger(store, "Worker(retention=...)")  # a store that cannot purge: say so now
        self.retention_interval = retention_interval
        self.events = EventBus()
        self.worker_id = f"worker@{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(3)}"
        """Who runs nodes here, as run history records it."""
        self.transport = transport
        self.store = store
        self.concurrency = concurrency
        self.lease = lease
        self.poll_interval = poll_interval
        self.shell = Shell(
            transport,
            store,
            queue=queue,
            lease=lease,
            flows=app,
            events=self.events,
            middleware=middleware,
        )
        self.executor = Executor(middleware=middleware, events=self.events, plain_data=True)
        visibility = getattr(transport, "visibility_timeout", None) or lease
        self.heartbeats = Heartbeats(
            store,
            lease=lease,
            visibility=float(visibility),
            check_interval=cancel_check_interval,
        )
        self.shell.on_cancel_nodes = self.heartbeats.withdraw
        self.heartbeats.commit_details = self._commit_heartbeat
        self.executor.on_heartbeat = self.heartbeats.record
        found = schedules_of(app, schedules)
        for schedule in found:  # a schedule that cannot start its flow fails here
            WorkerStarter(self.shell).check(schedule)
        # starts the runs of the schedules given, and of ``@flow(schedule=...)`` flows
        self._schedules = Scheduler(store, found, WorkerStarter(self.shell)) if found else None
        self.store_health = store_dependency(
            store, pausing="pausing intake", resuming="resuming intake"
        )
        self.broker_health = Dependency(
            "broker", None, pausing="retrying", resuming="receiving again"
        )
        self.heartbeats.store_health = self.store_health
        self.slots = Slots(store, lease=lease, owner=self.worker_id)
        self._limit_waits: set[anyio.CancelScope] = set()  # nodes waiting for a token or slot
        self.processed = 0
        self.cancelled = 0  # nodes cancelled while running here: their run withdrew them
        self.dead_lettered = 0
        self._draining = False
        self._drained: anyio.Event | None = None  # set by stop(), or when receiving ends
        self._waiting_for_slot: anyio.CancelScope | None = None
        self.fail_fast = False  # the CLI sets it: an unreachable broker at start is an error

    async def run(self, *, task_status: Any = anyio.TASK_STATUS_IGNORED) -> None:
        """Consume, fire timers and reconcile until cancelled or :meth:`stop` drains it."""
        async with anyio.create_task_group() as tg:
            tg.start_soon(self._loop, self._fire_due_timers)
            if self._schedules is not None:
                tg.start_soon(self._loop, self._start_due_schedules)
            # the nodes held through a store outage extend their leases before the
            # reconciler counts them as lost: republishing them would only run them twice
            tg.start_soon(self._loop, self._reconcile, self.lease)
            # queued runs of limited flows that a process died before admitting
            tg.start_soon(self._loop, self.shell.sweep_slots, 0.0, self.lease)
            if self.retention is not None:
                tg.start_soon(self._loop, self._purge_old_runs, 0.0, self.retention_interval)
            await tg.start(self.heartbeats.run)
            await tg.start(self.slots.run)
            task_status.started()
            await self._consume()
            tg.cancel_scope.cancel()

    def stop(self) -> None:
        """Drain: stop taking deliveries; :meth:`run` returns once in-flight nodes finish.

        Deliveries not yet taken stay in the broker for other workers.
        """
        self._draining = True
        if self._drained is not None:
            self._drained.set()
        if self._waiting_for_slot is not None:
            self._waiting_for_slot.cancel()
        for waiting in self._limit_waits:  # their deliveries go back to the broker
            waiting.cancel()

    # -- consuming ------------------------------------------------------------
    async def _consume(self) -> None:
        """Take deliveries until drained, then wait for the nodes in flight to finish.

        Only then is the receive loop left: its channel, consumer or lease
        table settles their deliveries, and leaving it first would hand the
        work back (RabbitMQ requeues what a closed channel held).
        """
        slots = anyio.Semaphore(self.concurrency)
        self._drained = anyio.Event()
        if self._draining:
            self._drained.set()
        async with anyio.create_task_group() as taking:
            async with anyio.create_task_group() as handlers:
                taking.start_soon(self._take, handlers, slots)
                await self._drained.wait()
            taking.cancel_scope.cancel()  # no node in flight: now leave receive()

    async def _take(self, handlers: TaskGroup, slots: anyio.Semaphore) -> None:
        """Start a handler per delivery while there is a free slot; retry a broker outage
        with backoff. Once draining, hand back what arrives and take nothing more."""
        assert self._drained is not None
        try:
            while not self._draining:
                try:
                    async with _closing(self.transport.receive(self.shell.queue)) as deliveries:
                        async for delivery in deliveries:
                            self.broker_health.mark_up()
                            if not await self._free_slot(slots):
                                await _settle(delivery.nack())  # draining: back to the broker
                                await anyio.sleep_forever()  # _consume cancels this when idle
                            handlers.start_soon(self._handle, delivery, slots)
                            await self._store_back()  # no next delivery while it is down
                    return  # the transport was closed
                except TransportError as exc:
                    if self.processed == 0 and self.fail_fast:
                        raise
                    self.broker_health.mark_down(str(exc))
                    with anyio.move_on_after(self.broker_health.next_delay()):
                        await self._drained.wait()
        finally:
            self._drained.set()

    async def _free_slot(self, slots: anyio.Semaphore) -> bool:
        """Take a slot, waiting for one; False (and no slot) if the worker drains first."""
        with anyio.CancelScope() as self._waiting_for_slot:
            if not self._draining:
                await slots.acquire()
                if not self._draining:
                    return True
                slots.release()
        return False

    async def _store_back(self) -> bool:
        """Return once the store is reachable (at once if it is not known to be down);
        False if the worker drains first."""
        if not self.store_health.down:
            return True
        assert self._drained is not None
        drained = self._drained
        async with anyio.create_task_group() as tg:

            async def until_up() -> None:
                await self.store_health.until_up()
                tg.cancel_scope.cancel()

            tg.start_soon(until_up)
            await drained.wait()
            tg.cancel_scope.cancel()
        return not self.store_health.down

    async def _despite_store_outages(self, operation: Callable[[], Awaitable[T]]) -> T:
        """``operation()``, as :func:`despite_store_outages` does it, but given up (the store's
        error raised) if the worker drains while the store is down."""

        async def until_back() -> None:
            if not await self._store_back():
                raise StoreError(f"the worker drains: {self.store_health.reason}")

        return await despite_store_outages(self.store_health, operation, until_back)

    async def _handle(self, delivery: Delivery, slots: anyio.Semaphore) -> None:
        try:
            await self.handle(delivery)
        except Exception:  # never let one delivery take the worker down; it will come back
            log.exception("unexpected error handling a delivery; left unsettled")
        finally:
            slots.release()

    async def handle(self, delivery: Delivery) -> None:
        """Process one delivery: execute its node, commit, publish successors, ack."""
        try:
            message = NodeMessage.decode(delivery.body)
        except MalformedMessage as exc:
            await self._dead_letter(delivery, str(exc))
            return
        try:
            await self._process(delivery, message)
        except (MalformedMessage, ResumeError) as exc:
            await self._dead_letter(delivery, str(exc), run_id=message.run_id)
        except (StoreError, TransportError) as exc:
            log.warning(
                "transient failure; message requeued",
                run_id=message.run_id,
                node_id=message.node_id,
                error=str(exc),
            )
            await _settle(delivery.nack(requeue_after=1.0))

    async def _process(self, delivery: Delivery, message: NodeMessage) -> None:
        if message.blueprint_digest not in self.shell.flows.by_digest:
            await self.shell.continued(message.run_id, message.blueprint_digest)
        # beating from the start: a cancellation announced while the run loads counts
        with self.heartbeats.beating(delivery, message) as beat:
            replica, record = await self._despite_store_outages(lambda: self._dispatch(message))
            if record is None:  # already completed or cancelled: a duplicate delivery
                await delivery.ack()
                return
            if not await self._store_back():  # never run a node its result cannot be told
                raise StoreError("the store is unreachable and the worker drains")
            try:
                started = clock.now()
                event = await self._execute(beat, delivery, replica, record)
            except _Drained:
                await _settle(delivery.nack())  # waited for a slot until draining: give back
                return
            finally:
                if beat.slot is not None:
                    await self.slots.give_back(*beat.slot)
                    beat.slot = None
            # the successors' publishes ack the delivery where the transport can (one
            # round trip), once the store took the event
            acking = Acking(delivery, lambda: self.heartbeats.settling(beat))
            if event is not None:  # kept (and the delivery held) until the store takes it
                origin = Origin(self.worker_id, started, clock.now())
                await self._despite_store_outages(
                    lambda: self.shell.step(message.run_id, event, origin, acking=acking)
                )
        if event is None:
            await self._withdrawn(delivery, message)
            return
        if not acking.done:
            await delivery.ack()
        self.processed += 1

    async def _commit_heartbeat(self, run_id: str, dispatch_id: str, details: Any) -> None:
        """Commit a running node's heartbeat details (throttled by the lease heartbeats)."""
        try:
            await self.shell.step(run_id, p.NodeHeartbeat(dispatch_id, details))
        except ResumeError as exc:  # the run is gone (purged): its node's details with it
            log.info("heartbeat details of a run that is gone", run_id=run_id, error=str(exc))

    async def _dispatch(self, message: NodeMessage) -> tuple[Replica, dict[str, Any] | None]:
        """The run and the record of the message's dispatch (None: no longer dispatched)."""
        replica = await self.shell.replica(message.run_id)
        record = replica.state.sections["dispatches"].get(message.dispatch_id)
        if record is None:
            replica = await self.shell.replica(message.run_id, fresh=True)
            record = replica.state.sections["dispatches"].get(message.dispatch_id)
        if record is not None and record.get("deferred"):
            return replica, None  # it ran and awaits its completion token: not again
        return replica, record

    async def _take_limits(self, beat: Beat, target: Target, command: p.ExecuteNode) -> None:
        """Take a token if the node has a rate limit (waiting for one), then a concurrency
        slot if it has a limit (waiting in line for one); the heartbeat keeps the delivery
        meanwhile. :class:`_Drained` if the worker drains first. Called in the beat's
        scope: a run that withdraws the node ends the wait."""
        slot, bucket = slot_of(target, command), bucket_of(target, command)
        if slot is None and bucket is None:
            return
        ready = False
        with anyio.CancelScope() as waiting:
            self._limit_waits.add(waiting)
            try:
                if not self._draining:
                    if bucket is not None:  # the rate first: no slot held while delayed
                        await self.slots.take_token(bucket)
                    if slot is not None:
                        beat.slot = (slot, await self.slots.take(slot))
                    ready = True
            finally:
                self._limit_waits.discard(waiting)
        if not ready:
            raise _Drained

    async def _execute(
        self, beat: Beat, delivery: Delivery, replica: Replica, record: dict[str, Any]
    ) -> p.Event | None:
        """Run the node in the beat's cancel scope; None if its run withdrew it (then the
        node was cancelled, or never started)."""
        message = beat.message
        command = dispatch_command(message.run_id, message.dispatch_id, record)
        target = self.shell.target_of(replica.state)
        if beat.withdrawn:
            return None
        event: p.Event | None = None
        with beat.scope:
            await self._take_limits(beat, target, command)
            event = await self.executor.execute(
                message.run_id, target, replica.state, command, enqueued_at=_enqueued_at(delivery)
            )
        return None if beat.withdrawn else event

    async def _withdrawn(self, delivery: Delivery, message: NodeMessage) -> None:
        """Settle a node cancelled because its run no longer wants it: nothing to record
        (the dispatch is gone from the run), so nothing to retry; ack."""
        log.info(
            "node cancelled: its run no longer wants it",
            run_id=message.run_id,
            node_id=message.node_id,
            dispatch_id=message.dispatch_id,
        )
        await delivery.ack()
        self.cancelled += 1

    async def _dead_letter(self, delivery: Delivery, reason: str, *, run_id: str = "") -> None:
        """Park the message with ``reason``, failing its run first (its client learns why)."""
        try:  # a body that names no run (not JSON, nested too deeply, ...) fails none
            run_failed = names_a_run(delivery.body) and await self.shell.fail_undeliverable(
                delivery.body, reason
            )
        except (StoreError, TransportError) as exc:  # redelivered: failed then, or dead-lettered
            log.warning(
                "could not fail the run of an undeliverable message; requeued", error=str(exc)
            )
            await _settle(delivery.nack(requeue_after=1.0))
            return
        log.error(
            "message dead-lettered", reason=reason, run_id=run_id or None, run_failed=run_failed
        )
        self.dead_lettered += 1
        if self.events.active:
            self.events.emit(
                Event("message:dead_letter", run_id, clock.now(), data={"reason": reason})
            )
        await _settle(delivery.dead_letter(reason))

    # -- timers and leases ----------------------------------------------------
    async def _loop(
        self, step: Any, grace_after_outage: float = 0.0, interval: float | None = None
    ) -> None:
        """``step()`` every ``interval`` (default ``poll_interval``); after a store outage,
        ``grace_after_outage`` seconds after the store is back."""
        while True:
            try:
                await step()
            except StoreError as exc:
                if not await self.store_health.outage(exc):
                    log.warning("background step failed", step=step.__name__, error=str(exc))
            except FlowkitError as exc:
                log.warning("background step failed; retrying", step=step.__name__, error=str(exc))
            if self.store_health.down:
                await self.store_health.until_up()
                await anyio.sleep(grace_after_outage)
            await anyio.sleep(self.poll_interval if interval is None else interval)

    async def tick(self) -> None:
        """Once, what the scheduler does every ``poll_interval``: fire the timers that are
        due, start the runs of schedule ticks that are due, publish again the
        dispatches whose leases ran out, and admit the queued runs of limited flows that
        a slot freed for (the worker does that every ``lease`` seconds)."""
        await self._fire_due_timers()
        await self._start_due_schedules()
        await self._reconcile()
        await self.shell.sweep_slots()

    async def _start_due_schedules(self) -> None:
        if self._schedules is not None:
            await self._schedules.tick()

    async def _purge_old_runs(self) -> None:
        """The retention: delete the runs that finished over ``retention`` ago, a small
        batch per store call (each a short transaction), until none is left."""
        assert self.retention is not None
        before = cutoff(self.retention)
        purge = purger(self.store, "Worker(retention=...)")
        while not self._draining:
            purged = await purge(finished_before=before, limit=RETENTION_BATCH)
            if purged:
                log.info("purged finished runs", count=len(purged), retention=self.retention)
            if len(purged) < RETENTION_BATCH:
                return

    async def _fire_due_timers(self) -> None:
        for timer in await self.store.due_timers(clock.now()):
            try:
                await self.shell.step(timer.run_id, p.TimerFired(timer.timer_id))
            except ResumeError as exc:
                log.error("timer of an unknown run or flow", run_id=timer.run_id, error=str(exc))

    async def _reconcile(self) -> None:
        self.shell.drop_idle()  # also when idle: the copies of runs other workers finished
        now = clock.now()
        expired = await self.store.expired_leases(now)
        # extended before any is republished, so that the other workers' reconcilers skip
        # them: republishing first had every worker publish each again (after a broker
        # stalled, a backlog of duplicates that kept its leases running out)
        for lease in expired:
            await self.store.extend_lease(lease.run_id, lease.dispatch_id, now + self.lease)
        for lease in expired:
            try:
                await self._redo(lease.run_id, lease.dispatch_id)
            except ResumeError as exc:
                log.error(
                    "expired lease of an unknown run or flow", run_id=lease.run_id, error=str(exc)
                )

    async def _redo(self, run_id: str, lease_id: str) -> None:
        replica = await self.shell.replica(run_id, fresh=True)
        sections = replica.state.sections
        if lease_id.startswith(CHILD_LEASE):
            await self._redo_child(run_id, lease_id[len(CHILD_LEASE) :], replica)
            return
        record = sections["dispatches"].get(lease_id)
        if record is not None and not record.get("deferred"):
            log.info(
                "republishing a dispatch whose lease ran out", run_id=run_id, dispatch_id=lease_id
            )
            target = self.shell.target_of(replica.state)
            queue = dispatch_queue(record, replica.state.header)
            await self.shell.publish(
                run_id,
                target,
                record["node"],
                int(record["attempt"]),
                lease_id,
                replica.state.header,  # a republished node keeps the run's priority
                queue,
            )

    async def _redo_child(self, run_id: str, child_id: str, parent: Replica) -> None:
        child = parent.state.sections["children"].get(child_id)
        if child is None:
            return
        info = await self.store.info(child_id)
        if child.get("continuation"):
            await self._redo_continuation(run_id, child_id, child, parent, created=info is not None)
            return
        if info is None:
            command = p.StartChild(
                child_id,
                child["node"],
                str(child.get("blueprint_id", "")),
                dict(child.get("inputs") or {}),
                lent_slot(parent.state.header),
            )
            target = self.shell.target_of(parent.state)
            await self.shell.carry_out(run_id, target, [command], parent.state.header)
        elif info.status in ("completed", "failed", "cancelled"):
            state = (await self.shell.replica(child_id, fresh=True)).state
            header = state.header
            event = p.ChildFinished(
                child_id, info.status, header.get("output"), header.get("error")
            )
            await self.shell.step(run_id, event)

    async def _redo_continuation(
        self, run_id: str, new_id: str, record: dict[str, Any], run: Replica, *, created: bool
    ) -> None:
        """A run continued as new (``flow.continue_as_new``) but its process died before it
        was told the new run exists: create that run (unless it was), then finish this one."""
        log.info("redoing a continuation whose lease ran out", run_id=run_id, new_run_id=new_id)
        if created:
            await self.shell.step(run_id, p.RunContinued(new_id))
            return
        command = continuation_command(run_id, run.state.header, record)
        target = self.shell.target_of(run.state)
        await self.shell.carry_out(run_id, target, [command], run.state.header)


class _Drained(Exception):
    """The worker began draining while a node waited for a concurrency slot."""


@asynccontextmanager
async def _closing(deliveries: AsyncIterator[Delivery]) -> AsyncIterator[AsyncIterator[Delivery]]:
    """Close the transport's receive loop on leaving it, rather than leave it to the garbage
    collector (which trio refuses, and which would settle its deliveries late)."""
    try:
        yield deliveries
    finally:
        aclose = getattr(deliveries, "aclose", None)
        if aclose is not None:
            await aclose()


def _enqueued_at(delivery: Delivery) -> float | None:
    """When the shell published the message (its header), if the transport kept it."""
    try:
        return float(delivery.headers[ENQUEUED_AT_HEADER])
    except (KeyError, TypeError, ValueError):
        return None


async def _settle(settling: Any) -> None:
    try:
        await settling
    except TransportError as exc:
        log.warning("could not settle a delivery; it will be redelivered", error=str(exc))

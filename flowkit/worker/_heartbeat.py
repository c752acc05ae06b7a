"""One heartbeat loop per worker: it keeps every node in flight leased, and stops
the ones their run no longer wants.

Leases: a node that runs longer than a third of its lease has its dispatch lease
(in the store, which the reconciler reads) and its delivery's visibility (in the
broker) pushed out, every third of a lease, until it finishes (its concurrency
slot, if it holds one, is the worker's, extended with the worker's other slots).
One loop for all of a worker's deliveries costs less than a task per delivery.

Cancellation: cancelling a run, deciding a race or ending a run takes dispatches
out of the run's state while their nodes may still run here. Such a node's task
is cancelled (its ``finally`` blocks run) as soon as this worker learns it: at
once when the transition that withdrew it was this worker's own, or when the
store announces the run (stores that push), and at the latest at the next check,
every ``check_interval``: one store read for all the nodes in flight.
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

import anyio
import structlog

from .. import _clock as clock
from .._durations import Backoff
from .._errors import StoreError, TransportError
from ..stores._notices import WatchesCancelledNodes
from ..stores._protocol import ChecksLeases
from ..transports._protocol import DeliveryError

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable, Collection, Iterator

    from ..shell._limits import Slot
    from ..stores._protocol import Store
    from ..transports._protocol import Delivery
    from ._messages import NodeMessage
    from ._outage import Dependency

log = structlog.get_logger("flowkit.worker")

RESUBSCRIBE_BACKOFF = Backoff(initial=1.0, factor=2.0, max=30.0, jitter=True)
"""Delay between attempts to watch a store's notices again after it failed."""

_NOTHING: Any = object()


class Beat:
    """A node in flight: its delivery, its message, when to extend them next, and the
    cancel scope its execution runs in."""

    __slots__ = ("delivery", "details", "due", "message", "scope", "slot")

    def __init__(self, delivery: Delivery, message: NodeMessage, due: float) -> None:
        self.delivery = delivery
        self.message = message
        self.due = due
        self.scope = anyio.CancelScope()
        self.details: Any = _NOTHING  # heartbeat details not yet committed
        self.slot: tuple[Slot, str] | None = None  # the concurrency slot held, and as whom

    @property
    def key(self) -> tuple[str, str]:
        return self.message.run_id, self.message.dispatch_id

    @property
    def withdrawn(self) -> bool:
        """Whether its run no longer wants this node (its execution is cancelled)."""
        return self.scope.cancel_called


class Heartbeats:
    """The nodes a worker runs, kept leased (and cancelled once withdrawn from their run)
    by :meth:`run` while :meth:`beating`."""

    def __init__(
        self, store: Store, *, lease: float, visibility: float, check_interval: float
    ) -> None:
        self.store = store
        self.lease = lease
        self.extension = max(lease, visibility)
        self.interval = min(lease, visibility) / 3
        self.check_interval = check_interval
        self._beating: set[Beat] = set()
        self._suspects: set[str] = set()  # runs announced since the last check
        self._announced: anyio.Event | None = None  # set by an announcement; made by run()
        # while it is down, leases in the store are not extended (nor nodes checked), but
        # deliveries are: a node held until the store is back keeps its message
        self.store_health: Dependency | None = None
        # commits a node's heartbeat details: (run id, dispatch id, details)
        self.commit_details: Callable[[str, str, Any], Awaitable[None]] | None = None
        self._by_key: dict[tuple[str, str], Beat] = {}

    @contextmanager
    def beating(self, delivery: Delivery, message: NodeMessage) -> Iterator[Beat]:
        """Keep ``delivery`` and its dispatch leased while the block runs; run the node
        in the beat's ``scope``, which is cancelled if the run withdraws the dispatch."""
        beat = Beat(delivery, message, anyio.current_time() + self.interval)
        self._beating.add(beat)
        self._by_key[beat.key] = beat
        try:
            yield beat
        finally:
            self._beating.discard(beat)
            if self._by_key.get(beat.key) is beat:
                del self._by_key[beat.key]

    def settling(self, beat: Beat) -> None:
        """``beat``'s delivery is being settled: extend it no more (a beat in flight then
        takes a refused extension for the settlement, as after the block)."""
        self._beating.discard(beat)

    def record(self, run_id: str, dispatch_id: str, details: Any) -> None:
        """Keep a running node's latest heartbeat details, committed with its next beat."""
        beat = self._by_key.get((run_id, dispatch_id))
        if beat is not None:
            beat.details = details

    def withdraw(self, run_id: str, dispatch_ids: Collection[str]) -> None:
        """Cancel the nodes of these dispatches running here (a transition made in this
        process took them out of their run: no need to ask the store)."""
        for beat in list(self._beating):
            if beat.message.run_id == run_id and beat.message.dispatch_id in dispatch_ids:
                beat.scope.cancel()

    async def run(self, *, task_status: Any = anyio.TASK_STATUS_IGNORED) -> None:
        """Extend leases and cancel withdrawn nodes until cancelled; started once the
        store's announcements (if it makes any) are being watched."""
        self._announced = anyio.Event()
        async with anyio.create_task_group() as tg:
            tg.start_soon(self._keep_leased)
            tg.start_soon(self._keep_checking)
            if isinstance(self.store, WatchesCancelledNodes):
                await tg.start(self._watch, self.store)
            task_status.started()

    # -- leases ---------------------------------------------------------------------
    async def _keep_leased(self) -> None:
        """Extend whatever is due, every half interval (so at most 1.5 intervals apart)."""
        while True:
            await anyio.sleep(self.interval / 2)
            now = anyio.current_time()
            due = [beat for beat in self._beating if beat.due <= now and not beat.withdrawn]
            for beat in due:
                beat.due = now + self.interval
            if len(due) == 1:
                await self._extend(due[0])
            elif due:
                async with anyio.create_task_group() as tg:
                    for beat in due:
                        tg.start_soon(self._extend, beat)

    async def _extend(self, beat: Beat) -> None:
        message = beat.message
        try:
            try:
                if not self._store_down():
                    await self.store.extend_lease(
                        message.run_id, message.dispatch_id, clock.now() + self.lease
                    )
                    await self._commit_details(beat)
            finally:  # the delivery too, even if the store failed
                if beat in self._beating:  # else its node finished meanwhile: it is settled
                    await beat.delivery.extend(self.extension)
        except DeliveryError as exc:  # the broker gave the message to someone else
            if beat not in self._beating:
                return  # not lost: its node finished and settled it while this extended
            self._beating.discard(beat)
            log.warning(
                "lost a delivery while running its node",
                run_id=message.run_id,
                node_id=message.node_id,
                error=str(exc),
            )
        except (StoreError, TransportError) as exc:  # the next beat tries again
            log.warning(
                "heartbeat failed; retrying",
                run_id=message.run_id,
                node_id=message.node_id,
                error=str(exc),
            )

    async def _commit_details(self, beat: Beat) -> None:
        """Commit the heartbeat details the node recorded since its last beat, if any."""
        details = beat.details
        if details is _NOTHING or self.commit_details is None or beat not in self._beating:
            return
        beat.details = _NOTHING
        try:
            await self.commit_details(beat.message.run_id, beat.message.dispatch_id, details)
        except StoreError:
            if beat.details is _NOTHING:  # none newer meanwhile: the next beat tries again
                beat.details = details
            raise

    # -- withdrawn nodes ------------------------------------------------------------
    async def _keep_checking(self) -> None:
        """Check the announced runs when announced, and every node every ``check_interval``
        (however many announcements come in between)."""
        next_check = anyio.current_time() + self.check_interval
        while True:
            assert self._announced is not None
            with anyio.move_on_after(max(0.0, next_check - anyio.current_time())):
                await self._announced.wait()
            self._announced = anyio.Event()
            announced, self._suspects = self._suspects, set()
            if anyio.current_time() >= next_check:
                next_check = anyio.current_time() + self.check_interval
                await self.check()
            else:
                await self.check(announced)

    async def check(self, runs: Collection[str] | None = None) -> None:
        """Cancel the nodes in flight (of ``runs``; default: all) whose dispatch left its run."""
        beats = [
            beat
            for beat in self._beating
            if not beat.withdrawn and (runs is None or beat.message.run_id in runs)
        ]
        if not beats or self._store_down():
            return
        try:
            gone = await self._gone({beat.key for beat in beats})
        except StoreError as exc:  # the next check tries again
            log.warning("checking for cancelled nodes failed", error=str(exc))
            return
        for beat in beats:
            if beat.key in gone:
                beat.scope.cancel()

    async def _gone(self, keys: set[tuple[str, str]]) -> set[tuple[str, str]]:
        """Which ``(run_id, dispatch_id)`` of ``keys`` are no longer dispatches of their runs.

        The lease index (one read for all, where the store offers it) clears the
        dispatches still wanted; the runs' states decide the rest.
        """
        if isinstance(self.store, ChecksLeases):
            keys = keys - await self.store.held_leases(keys)
        gone: set[tuple[str, str]] = set()
        for run_id in {run_id for run_id, _ in keys}:
            loaded = await self.store.load(run_id)
            dispatches = loaded[0].sections["dispatches"] if loaded is not None else {}
            gone.update(key for key in keys if key[0] == run_id and key[1] not in dispatches)
        return gone

    async def _watch(self, store: WatchesCancelledNodes, *, task_status: Any) -> None:
        """Turn the store's announcements into checks of the runs announced; subscribe
        again (with backoff) if the subscription fails, checking what it may have missed."""
        started = False
        failures = 0
        seed = str(id(self))  # spreads the resubscriptions of many workers apart
        while True:
            try:
                async with store.watch_cancelled_nodes() as announcements:
                    if started:
                        self._suspect(*(beat.message.run_id for beat in list(self._beating)))
                    else:
                        task_status.started()
                        started = True
                    failures = 0
                    async for run_id in announcements:
                        self._suspect(run_id)
            except StoreError as exc:
                failures += 1
                if failures == 1:  # once per outage: the store's own outage line says more
                    log.warning(
                        "cannot watch the store for cancelled nodes; checking them every "
                        f"{self.check_interval:g}s until it works again",
                        error=str(exc),
                    )
            if not started:
                task_status.started()
                started = True
            await anyio.sleep(RESUBSCRIBE_BACKOFF.delay(max(1, failures), seed))

    def _store_down(self) -> bool:
        return self.store_health is not None and self.store_health.down

    def _suspect(self, *run_ids: str) -> None:
        """Have the runs checked now, if any of their nodes run here."""
        running = {beat.message.run_id for beat in self._beating}
        suspects = running.intersection(run_ids)
        if suspects and self._announced is not None:
            self._suspects |= suspects
            self._announced.set()

"""One Kafka consumer-group member: fetching, settling, committing, rebalancing.

See ``_kafka.py`` for the design: out-of-order settlement, redelivery, rebalances.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import re
import time
from collections import deque
from functools import partial
from typing import TYPE_CHECKING, Any

import structlog

from ..._errors import TransportError
from .._protocol import DeliveryError
from ._delivery import _BUSY, _DONE, _HELD, ATTEMPT, REASON, KafkaDelivery
from ._errors import translate_errors
from ._group import _StickyAssignor
from ._offsets import _Offsets

try:
    from aiokafka.abc import ConsumerRebalanceListener  # type: ignore[import-untyped,unused-ignore]
except ImportError:  # the "kafka" extra is not installed: KafkaTransport() says so
    _HAVE_KAFKA = False
else:
    _HAVE_KAFKA = True

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable

    from ._transport import KafkaTransport

log = structlog.get_logger("flowkit.transports.kafka")

_RETRY = 1.0  # seconds before retrying a failed redelivery, forward or commit
_HAND_BACK_TIMEOUT = 10.0  # close() gives up handing deliveries back after this
_FETCH_WAIT_MS = 500


def _topic_safe(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]", "_", name)


def _retrieve_abandoned_commits(consumer: Any) -> None:
    """Have the outcome of ``consumer``'s commit requests retrieved when they end.

    aiokafka sends a commit under ``asyncio.shield``; cancelling the commit (a bound ran
    out) leaves the shielded request running with nobody to retrieve its outcome, and
    when it fails (the broker is gone, the consumer stopped) asyncio reports "Task
    exception was never retrieved".
    """
    coordinator = getattr(consumer, "_coordinator", None)
    for task in asyncio.all_tasks():
        frame = getattr(task.get_coro(), "cr_frame", None)
        if (
            frame is not None
            and frame.f_code.co_name == "_do_commit_offsets"
            and frame.f_locals.get("self") is coordinator
        ):
            task.add_done_callback(_retrieve)


def _retrieve(task: asyncio.Task[Any]) -> None:
    if not task.cancelled():
        task.exception()


class _Rebalance:
    """aiokafka's rebalance callbacks, forwarded to the member."""

    def __init__(self, member: _Member) -> None:
        self.member = member

    async def on_partitions_revoked(self, revoked: set[Any]) -> None:
        await self.member.on_revoked(revoked)

    async def on_partitions_assigned(self, assigned: set[Any]) -> None:
        await self.member.on_assigned(assigned)


if _HAVE_KAFKA:
    ConsumerRebalanceListener.register(_Rebalance)


class _Member:
    """One consumer-group member on one topic: fetches, tracks, settles and commits.

    Two background tasks (owned here, cancelled and awaited by :meth:`stop`): the
    fetch loop keeps polling (so the member stays in the group while handlers
    run) and pauses at ``limit`` unsettled records; the watch loop acts on
    deadlines (visibility timeouts here, due times in :class:`_Forwarder`).
    """

    def __init__(self, transport: KafkaTransport, topic: str, group: str, limit: int) -> None:
        self.transport = transport
        self.topic = topic
        self.acks_topic = f"{topic}.acks.{_topic_safe(group)}"
        self.limit = limit
        self.kafka = transport._consumer(group, _StickyAssignor(self))
        self.offsets: dict[Any, _Offsets] = {}
        self.limbo: dict[Any, _Offsets] = {}  # revoked, maybe coming back
        self.restoring: set[Any] = set()
        self.ready: deque[KafkaDelivery] = deque()
        self.held: set[KafkaDelivery] = set()
        self.forwarder: _Member | None = None  # stopped with this member
        self.failure: Exception | None = None
        self.retiring = False
        self.stopped = False
        self._finished = False
        self._changed = asyncio.Event()
        self._commit_lock = asyncio.Lock()
        self._commits_asked = 0  # commit() calls so far
        self._commits_covered = 0  # calls whose settlements a finished commit included
        self._commit_due = math.inf  # when the watch loop retries a failed commit
        self._callback_ends = 0.0  # when the rebalance callback under way must be done
        self._topics_due = math.inf  # when to check that the broker still has the topics
        self._tasks: list[asyncio.Task[None]] = []

    async def start(self) -> None:
        with translate_errors(f"joining a consumer group on {self.topic!r}", self.transport.where):
            self.kafka.subscribe([self.topic], listener=_Rebalance(self))
            await self.kafka.start()
        if self._topics_needed():
            self._topics_due = time.monotonic() + self.transport.session_timeout
        self._tasks = [
            asyncio.create_task(self._guard(self._fetch_loop())),
            asyncio.create_task(self._guard(self._watch_loop())),
        ]

    def wake(self) -> None:
        self._changed.set()
        self._changed = asyncio.Event()

    async def _wait(self, timeout: float = math.inf) -> None:
        changed = self._changed
        if timeout > 0:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(None if math.isinf(timeout) else timeout):
                    await changed.wait()

    async def _guard(self, loop: Awaitable[None]) -> None:
        try:
            await loop
        except Exception as exc:  # surfaced to the reader by next()
            self.failure = exc
            self.wake()

    # -- fetching -----------------------------------------------------------
    async def _fetch_loop(self) -> None:
        while True:
            room = self.limit - len(self.ready) - len(self.held)
            with translate_errors(f"fetching from {self.topic!r}", self.transport.where):
                self._set_paused(full=room <= 0)
                batch = await self.kafka.getmany(
                    timeout_ms=_FETCH_WAIT_MS if room > 0 else 0, max_records=max(room, 1)
                )
            for tp, records in batch.items():
                for record in records:
                    self._accept(tp, record)
            if room <= 0:
                await self._wait(_FETCH_WAIT_MS / 1000)

    def _set_paused(self, *, full: bool) -> None:
        assigned = set(self.kafka.assignment())
        pause = assigned if full else assigned & self.restoring
        resume = (assigned - pause) & set(self.kafka.paused())
        if pause:
            self.kafka.pause(*pause)
        if resume:
            self.kafka.resume(*resume)

    def _accept(self, tp: Any, record: Any) -> None:
        offsets = self.offsets.setdefault(tp, _Offsets())
        if record.offset < offsets.fetched:
            offsets = self._restarted(tp, offsets, record.offset)
        if offsets.receive(record.offset):
            self._take(KafkaDelivery(self, tp, offsets, record))

    def _restarted(self, tp: Any, stale: _Offsets, offset: int) -> _Offsets:
        """The partition's log went back (a broker that lost its data reset the fetch
        position): its offsets now name other records, so start a new tracker. The
        deliveries of the lost records are withdrawn; their work is done again when
        what published them publishes it again (flowkit's reconciler)."""
        log.warning(
            "partition restarted below what was fetched; tracking it anew",
            topic=self.topic,
            partition=tp.partition,
            fetched=stale.fetched,
            offset=offset,
        )
        stale.revoked = True
        self.ready = deque(d for d in self.ready if not d.offsets.revoked)
        self.held = {d for d in self.held if not d.offsets.revoked}
        fresh = self.offsets[tp] = _Offsets()
        return fresh

    def _take(self, delivery: KafkaDelivery) -> None:
        self.ready.append(delivery)
        self.wake()

    def claims(self) -> dict[str, Any]:
        """What this member asks to keep at the next rebalance (see :func:`balance`)."""
        owned = {tp.partition for tp in (*self.offsets, *self.limbo)}
        return {"topic": self.topic, "owned": sorted(owned), "busy": sorted(self._busy())}

    def _busy(self) -> set[int]:
        return {d.partition for d in self.held if d.state != _DONE and not d.offsets.revoked}

    async def next(self) -> KafkaDelivery | None:
        """The next delivery (its visibility clock starts now), or None once stopped."""
        while True:
            failure = self.failure or (self.forwarder.failure if self.forwarder else None)
            if failure is not None:
                raise failure
            if self.retiring or self.stopped:
                return None
            while self.ready:
                delivery = self.ready.popleft()
                if not delivery.offsets.revoked:
                    delivery.deadline = time.monotonic() + self.transport.visibility_timeout
                    self.held.add(delivery)
                    self.wake()
                    return delivery
            await self._wait()

    # -- deadlines ----------------------------------------------------------
    async def _watch_loop(self) -> None:
        while not (self.stopped or (self.retiring and self._drained())):
            now = time.monotonic()
            for delivery in [d for d in self.held if d.state == _HELD and d.deadline <= now]:
                await self._expire(delivery)
            if self._commit_due <= now:
                await self._commit_settled()
            if self._topics_due <= now:
                await self._check_topics()
            deadlines = [d.deadline for d in self.held if d.state == _HELD]
            due = min([*deadlines, self._commit_due, self._topics_due])
            await self._wait(due - time.monotonic())
        await self._finish()

    def _drained(self) -> bool:
        return not self.held

    async def _expire(self, delivery: KafkaDelivery) -> None:
        log.warning(
            "visibility timeout ran out; redelivering",
            topic=self.topic,
            partition=delivery.partition,
            offset=delivery.offset,
        )
        await self._retrying(delivery, partial(self.requeue, delivery, None))

    async def _retrying(
        self, delivery: KafkaDelivery, action: Callable[[], Awaitable[None]]
    ) -> None:
        try:
            await self.settle(delivery, action)
        except TransportError as exc:
            log.warning("could not move a record; retrying", topic=self.topic, error=str(exc))
            delivery.deadline = time.monotonic() + _RETRY

    # -- a broker that lost its data -------------------------------------------
    def _topics_needed(self) -> dict[str, int]:
        """The topics of this member's queue, each with the partitions it is made with."""
        acks = [self.acks_topic] + ([self.forwarder.acks_topic] if self.forwarder else [])
        topics = [self.topic, f"{self.topic}.delay", f"{self.topic}.dlq", *acks]
        return dict.fromkeys(topics, self.transport.partitions)

    async def _check_topics(self) -> None:
        """Every session timeout, make again any topic the broker lost (it restarted
        empty). If it lost any, this member fails so that its reader joins anew: its
        offsets, assignment and metadata describe what is gone."""
        self._topics_due = time.monotonic() + self.transport.session_timeout
        try:
            created = await self._bounded(
                self.transport._create(self._topics_needed()), "checking the topics"
            )
        except TransportError as exc:  # unreachable now: the next check tries again
            log.debug("could not check the topics", topic=self.topic, error=str(exc))
            return
        if created:
            log.warning("the broker had lost topics; made them again", topics=created)
            self.failure = TransportError(
                f"Kafka {self.transport.where!r}: the broker had lost topics {created} "
                "(made again); receive again to join the group anew"
            )
            self.wake()

    # -- settling -----------------------------------------------------------
    def check(self, delivery: KafkaDelivery) -> None:
        """Raise DeliveryError unless ``delivery`` is still held by this member."""
        where = f"delivery {delivery.offset} of {self.topic!r}[{delivery.partition}]"
        if self.stopped:
            raise DeliveryError(f"{where}: the transport was closed; it will be delivered again")
        if delivery.offsets.revoked:
            raise DeliveryError(
                f"{where}: its partition went to another consumer in a rebalance; "
                "it will be delivered again there"
            )
        if delivery.state != _HELD:
            raise DeliveryError(
                f"{where} is no longer held (settled, or its visibility timeout ran out and it "
                "was redelivered); extend() long handlers"
            )

    async def settle(
        self, delivery: KafkaDelivery, action: Callable[[], Awaitable[None]] | None
    ) -> None:
        """Run ``action`` (produce a copy somewhere), then mark ``delivery`` settled and commit."""
        self.check(delivery)
        delivery.state = _BUSY
        done = False
        try:
            if action is not None:
                await action()
            done = True
        finally:
            delivery.state = _DONE if done else _HELD
        self.held.discard(delivery)
        delivery.offsets.pending.discard(delivery.offset)
        self.wake()
        await self._commit_settled()

    async def _commit_settled(self) -> None:
        """Commit; if that fails the settlements stand (a redelivery would be a duplicate,
        never a loss) and the watch loop tries again shortly."""
        try:
            await self.commit()
        except TransportError as exc:
            log.warning("commit failed; retrying", topic=self.topic, error=str(exc))
            self._commit_due = time.monotonic() + _RETRY
            self.wake()
        else:
            self._commit_due = math.inf

    async def requeue(self, delivery: KafkaDelivery, after: float | None) -> None:
        headers = {**delivery.headers, ATTEMPT: str(delivery.attempt + 1)}
        await self.transport._put(self.topic, delivery.body, delivery.raw_key, headers, after)

    async def dead_letter(self, delivery: KafkaDelivery, reason: str) -> None:
        headers = {**delivery.headers, ATTEMPT: str(delivery.attempt), REASON: reason}
        await self.transport._produce(f"{self.topic}.dlq", delivery.body, delivery.raw_key, headers)

    async def commit(self) -> None:
        """Commit every partition's lowest unsettled offset, snapshot first if needed.

        Calls made while a commit is under way share the next one. Taking turns, each
        would make a round trip of its own as long as settlements keep coming (each
        finds new ones): commits, not handlers, set a worker's pace, and a rebalance,
        holding commits up for seconds, stalled every settlement queued behind.

        Bounded: aiokafka retries a commit for ever while the broker answers that it
        does not know the topic (one that restarted empty).
        """
        self._commits_asked += 1
        asked = self._commits_asked
        async with self._commit_lock:
            if self._commits_covered >= asked:
                return  # a commit planned after this call included its settlements
            covering = self._commits_asked
            await self._bounded(self._commit_now(), "committing offsets")
            self._commits_covered = covering

    async def _bounded(self, step: Awaitable[Any], what: str, timeout: float | None = None) -> Any:
        """``step`` within ``timeout`` (default: the session timeout), else TransportError."""
        timeout = self.transport.session_timeout if timeout is None else timeout
        try:
            async with asyncio.timeout(timeout):
                return await step
        except TimeoutError:
            raise TransportError(
                f"Kafka {self.transport.where!r}: {what} of {self.topic!r} took over "
                f"{timeout:g}s; the broker may be restarting"
            ) from None

    async def _commit_now(self) -> None:
        plan = [
            (tp, o, wanted)
            for tp, o in list(self.offsets.items())
            if tp not in self.restoring and (wanted := o.wanted()) is not None
        ]
        commits: dict[Any, int] = {}
        written: list[tuple[_Offsets, int, bytes | None]] = []
        for tp, offsets, (position, snapshot) in plan:
            if snapshot is not None and not await self._snapshot(tp.partition, snapshot):
                snapshot = None  # committing without it is safe: more is redelivered
            if position != offsets.committed:
                commits[tp] = position
            written.append((offsets, position, snapshot))
        if commits:
            with translate_errors(f"committing offsets of {self.topic!r}", self.transport.where):
                try:
                    await self.kafka.commit(commits)
                except asyncio.CancelledError:
                    _retrieve_abandoned_commits(self.kafka)
                    raise
        for offsets, position, snapshot in written:
            offsets.wrote(position, snapshot)

    async def _snapshot(self, partition: int, snapshot: bytes) -> bool:
        """Produce a settlement snapshot; False if the acks topic cannot take it (a broker
        that lost its topics may have made it again with fewer partitions)."""
        try:
            if partition >= await self.transport._partition_count(self.acks_topic):
                return False
            await self.transport._produce(self.acks_topic, snapshot, None, {}, partition)
        except TransportError as exc:
            log.warning("could not write a settlement snapshot", topic=self.topic, error=str(exc))
            return False
        return True

    # -- rebalancing ---------------------------------------------------------
    async def on_revoked(self, revoked: set[Any]) -> None:
        """Commit what can be committed; keep the trackers in case the partitions come back.

        Briefly: this member rejoins only once it returns, and a commit the broker holds
        (or retries forever, for a topic it lost) would keep it out of the group.
        """
        try:
            brief = self.transport.session_timeout / 4
            await self._bounded(self.commit(), "committing before a rebalance", brief)
        except TransportError as exc:
            log.warning("commit before a rebalance failed", topic=self.topic, error=str(exc))
        for tp in revoked:
            offsets = self.offsets.pop(tp, None)
            if offsets is not None:
                self.limbo[tp] = offsets

    async def on_assigned(self, assigned: set[Any]) -> None:
        """Resume partitions that came back where they were; restore new ones from snapshots.

        Within half a session timeout in all: the member sends no heartbeats meanwhile.
        """
        self.restoring |= assigned
        if assigned:
            self.kafka.pause(*assigned)  # no records before their tracker is ready
        self._callback_ends = time.monotonic() + self.transport.session_timeout / 2
        try:
            for tp in assigned:
                self.offsets[tp] = await self._resume(tp)
        finally:
            self.restoring -= assigned
        for tp, offsets in self.limbo.items():
            offsets.revoked = self.offsets.get(tp) is not offsets
        self.limbo.clear()
        self.ready = deque(d for d in self.ready if not d.offsets.revoked)
        self.held = {d for d in self.held if not d.offsets.revoked}
        self.wake()
        await self._commit_settled()  # what was settled while the partitions were in limbo

    def _brief(self) -> float:
        """Seconds left for the broker calls of the rebalance callback under way."""
        return max(0.0, self._callback_ends - time.monotonic())

    async def _resume(self, tp: Any) -> _Offsets:
        old = self.limbo.get(tp)
        try:
            with translate_errors(f"resuming {tp}", self.transport.where):
                committed = await self._bounded(
                    self.kafka.committed(tp), "reading the committed offset", self._brief()
                )
                if old is not None and old.committed == committed:
                    if old.fetched >= 0:
                        self.kafka.seek(tp, old.fetched)  # hand out nothing twice
                    return old
        except TransportError as exc:
            log.warning("could not resume a partition", topic=self.topic, error=str(exc))
            return _Offsets()
        fresh = _Offsets(committed=committed)
        if committed is not None:
            snapshot = await self._last_snapshot(tp.partition)
            if snapshot is not None:
                fresh.restore(snapshot)
        return fresh

    async def _last_snapshot(self, partition: int) -> bytes | None:
        """The partition's last settlement snapshot, if it can be read in time (without
        it, what the last owner settled above the committed offset comes again)."""
        try:
            snapshot: bytes | None = await self._bounded(
                self.transport._last_record(self.acks_topic, partition),
                "reading a settlement snapshot",
                self._brief(),
            )
        except TransportError as exc:
            log.warning("could not read a settlement snapshot", topic=self.topic, error=str(exc))
            return None
        return snapshot

    # -- stopping -------------------------------------------------------------
    def retire(self) -> None:
        """Stop fetching; leave the group once every handed-out delivery is settled."""
        if self.forwarder is not None:
            self.forwarder.retire()
        if not self.retiring and self._tasks:
            self.retiring = True
            self._tasks[0].cancel()
            self.wake()

    async def _finish(self) -> None:
        """Commit what is settled and leave the group (once)."""
        if self._finished:
            return
        self._finished = True
        try:
            await self.commit()
        except TransportError as exc:
            log.warning("final commit failed", topic=self.topic, error=str(exc))
        self._commit_due = math.inf
        with contextlib.suppress(TransportError), translate_errors("leaving", self.transport.where):
            await self.kafka.stop()

    async def stop(self) -> None:
        """Hand held deliveries back (re-produce them, attempt + 1), then leave the group.

        Whatever cannot be handed back stays uncommitted: the group redelivers it.
        """
        if self.stopped:
            return
        self.retiring = True
        if self._tasks:
            self._tasks[0].cancel()
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(_HAND_BACK_TIMEOUT):
                await self._hand_back()
        self.stopped = True
        self.wake()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self._finish()

    async def _hand_back(self) -> None:
        for delivery in [d for d in self.held if d.state == _HELD and not d.offsets.revoked]:
            await self._retrying(delivery, partial(self.requeue, delivery, None))

"""Concurrency slots and rate limits on workers: the store's slot leases, taken before a
limited node runs and given back when it ends, and its token buckets.

A worker holds slots, not its executions: a slot given back goes straight to the
worker's next waiter of the pool, or stays idle for :data:`KEEP` seconds for its next
execution there, and is then given back to the store with the other idle slots of
its pool, in one call. So an execution that follows another of its pool costs no
store call. The worker's slots are extended together every third of the lease; a
worker that dies leaves them to expire with their lease.

A node whose pool is full waits here, holding its delivery (the heartbeat keeps the
delivery and its dispatch leased): it is not nacked, so a broker's redelivery count
(SQS's ``maxReceiveCount``, Pub/Sub's dead-letter policy) never sends waiting work
to a dead-letter queue. Waiters of one pool in one worker form a queue: a slot given
back in this worker goes to the first of them at once. Slots given back by other
workers are found by the first waiter asking the store again, after a backoff that
starts at :data:`WAIT_BACKOFF`'s initial delay and grows to its maximum: no tight
polling.

A node with a rate limit reserves its token: the bucket grants tokens in order, ahead
of time when it is empty (it owes them), and says when each is due; the node sleeps
until then. The nodes of one worker that ask while a reservation of their bucket is
under way reserve together in the next: one store call for all of them. Tokens are
only ever taken from the store's bucket, so the rate holds across workers.

A worker whose nodes of a bucket keep coming reserves a few tokens more than they
ask for, and hands them to its next nodes of the bucket without a store call: at
most twice as many as its nodes took since its previous reservation, at most
:data:`AHEAD`, and only as many as the bucket's rate grants in :data:`AHEAD_WITHIN`
seconds (so none at a low rate). It does so only while its previous reservation
found the bucket full: never from a bucket that is throttling (empty, or owing
tokens), which prefetching would drain faster. A token nobody here took within
:data:`KEEP` seconds of when it is due is dropped: the worker then uses less than
the rate, never more. A node cancelled while it waits for its token leaves the
token to the next node here.
"""

from __future__ import annotations

import bisect
import secrets
from collections import deque
from typing import TYPE_CHECKING, Any

import anyio
import structlog

from .. import _clock as clock
from .._durations import Backoff
from .._errors import StoreError

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable

    from ..shell._limits import Bucket, Slot
    from ..stores._protocol import Store

log = structlog.get_logger("flowkit.worker")

KEEP = 0.1
"""How long a worker keeps a slot nobody here uses, for its next execution of the pool."""
WAIT_BACKOFF = Backoff(initial=0.05, factor=2.0, max=1.0, jitter=True)
"""Between two attempts of a waiting node to take a slot another worker may have freed."""
AHEAD = 16
"""The most tokens a worker reserves ahead of its nodes, for its next ones of the bucket."""
AHEAD_WITHIN = 0.01
"""Tokens are reserved ahead only as many as the bucket's rate grants in this many seconds."""


class _Waiter:
    """A node waiting for a slot: woken to ask the store, or handed a slot."""

    __slots__ = ("event", "holder")

    def __init__(self) -> None:
        self.event = anyio.Event()
        self.holder: str | None = None


class _Pool:
    """This worker's slots of one pool: in use, idle (since when), and its waiters."""

    __slots__ = ("busy", "full_until", "idle", "line", "slot")

    def __init__(self, slot: Slot) -> None:
        self.slot = slot
        self.busy: set[str] = set()
        self.idle: dict[str, float] = {}  # holder -> anyio time it became idle
        self.line: deque[_Waiter] = deque()
        self.full_until = 0.0  # the store just said the pool is full: no use asking again

    def empty(self) -> bool:
        return not (self.busy or self.idle or self.line)


class _Call:
    """One store call made for several callers: how many, and its answer."""

    __slots__ = ("answer", "count", "done", "error")

    def __init__(self) -> None:
        self.count = 0
        self.done = anyio.Event()
        self.answer: Any = None
        self.error: Exception | None = None


class _Stock:
    """The tokens of one bucket this worker reserved ahead, when each is due (first due
    first, in :func:`clock.now` seconds); and what sizes its next reservation ahead."""

    __slots__ = ("due", "full", "reserved_at", "taken")

    def __init__(self) -> None:
        self.due: deque[float] = deque()
        self.full = False  # its last reservation found the bucket full (not throttling)
        self.reserved_at = float("-inf")  # clock.now() of its last reservation
        self.taken = 0  # tokens its nodes took since then

    def take(self, now: float) -> float | None:
        """When the next token here is due (it is the caller's); None if none is left
        (those unused for :data:`KEEP` seconds after they were due are dropped)."""
        due = self.due
        while due:
            first = due.popleft()
            if first + KEEP >= now:
                self.taken += 1
                return first
        return None

    def put_back(self, due: float) -> None:
        """A token taken here that its node did not use (it was cancelled first)."""
        self.taken = max(0, self.taken - 1)
        bisect.insort(self.due, due)

    def ahead(self, bucket: Bucket, now: float) -> int:
        """How many tokens to reserve ahead now: none unless the bucket was full and
        this worker's nodes kept taking its tokens; twice as many as they took since the
        last reservation (so a steady stream soon needs few store calls)."""
        if not self.full or now - self.reserved_at > KEEP:
            return 0
        return min(AHEAD, int(bucket.rate * AHEAD_WITHIN), 2 * self.taken)

    def reserved(self, now: float, *, full: bool, taken: int, ahead: list[float]) -> None:
        self.reserved_at, self.full, self.taken = now, full, taken
        self.due.extend(ahead)

    def stale(self, now: float) -> bool:
        """Whether it holds nothing to keep and says nothing about the next reservation."""
        return now - self.reserved_at > KEEP and not any(d + KEEP >= now for d in self.due)


class _Batches:
    """Callers that ask about one key while a store call about it is under way go
    together in the next call: at most one call per key at a time, for all of them."""

    def __init__(self) -> None:
        self._open: dict[tuple[str, str], _Call] = {}  # collecting callers
        self._under_way: dict[tuple[str, str], anyio.Event] = {}  # set when it returns

    async def join(
        self, key: tuple[str, str], ask: Callable[[int], Awaitable[Any]]
    ) -> tuple[Any, int]:
        """The answer of ``ask(count)`` for the call the caller is in, and which of the
        ``count`` callers it is (from 1)."""
        call = self._open.get(key)
        leads = call is None
        if call is None:
            call = self._open[key] = _Call()
        call.count += 1
        nth = call.count
        if leads:  # the others wait on this call: it is not abandoned halfway
            with anyio.CancelScope(shield=True):
                await self._make(key, call, ask)
        else:
            await call.done.wait()
        if isinstance(call.error, StoreError):
            raise StoreError(str(call.error)) from call.error
        if call.error is not None:
            raise RuntimeError("a store call for several nodes failed") from call.error
        return call.answer, nth

    async def _make(
        self, key: tuple[str, str], call: _Call, ask: Callable[[int], Awaitable[Any]]
    ) -> None:
        previous = self._under_way.get(key)
        if previous is not None:
            await previous.wait()
        del self._open[key]  # closed: those asking from now on go in the next call
        under_way = self._under_way[key] = anyio.Event()
        try:
            call.answer = await ask(call.count)
        except Exception as exc:  # raised in every caller
            call.error = exc
        finally:
            call.done.set()
            if self._under_way.get(key) is under_way:
                del self._under_way[key]
            under_way.set()


class Slots:
    """The slot leases and token reservations of one worker's nodes."""

    def __init__(self, store: Store, *, lease: float, owner: str = "worker") -> None:
        self.store = store
        self.lease = lease
        self.owner = owner
        self.round_trips = 0  # store calls made for slots and tokens (for benchmarks)
        self._pools: dict[tuple[str, str], _Pool] = {}
        self._keeping = False  # whether run() gives idle slots back (else at once)
        self._idled: anyio.Event | None = None
        self._tokens = _Batches()
        self._stocks: dict[tuple[str, str], _Stock] = {}
        self._prune_stocks_at = 64  # forget stale stocks when there are this many
        self._new_slots = _Batches()

    # -- slots ----------------------------------------------------------------------
    async def take(self, slot: Slot) -> str:
        """Return a holder of a slot of ``slot``'s pool once this worker has one for the
        caller (cancel to stop waiting); give it back with :meth:`give_back`."""
        key = (slot.limit_id, slot.key)
        while True:
            pool = self._pools.setdefault(key, _Pool(slot))
            if pool.idle and not pool.line:
                idle, _ = pool.idle.popitem()  # the most recently used
                pool.busy.add(idle)
                return idle
            if pool.line or pool.full_until > anyio.current_time():
                return await self._wait(pool)
            if not self._keeping:  # nothing would give back spare slots: one at a time
                if (new := await self._acquire(slot)) is None:
                    return await self._wait(self._pools.setdefault(key, pool))
                self._pools.setdefault(key, pool).busy.add(new)  # (forgotten meanwhile?)
                return new
            if not await self._more(slot):  # full: wait, unless one came back meanwhile
                pool = self._pools.setdefault(key, pool)
                if not pool.idle or pool.line:
                    return await self._wait(pool)

    async def _more(self, slot: Slot) -> bool:
        """Take new slots from the store for the callers here that need one now (one call
        for all of them), idle until they take them; False if none was left for the
        caller."""
        key = (slot.limit_id, slot.key)

        async def acquire(count: int) -> int:
            holders = [f"{self.owner}/{secrets.token_hex(6)}" for _ in range(count)]
            now = clock.now()
            self.round_trips += 1
            taken = await self.store.acquire_slots(
                slot.limit_id, slot.key, holders, max=slot.max, now=now,
                expires_at=now + self.lease,
            )  # fmt: skip
            pool = self._pools.setdefault(key, _Pool(slot))
            for holder in holders[:taken]:
                self._free(pool, holder)
            if taken < count:
                pool.full_until = anyio.current_time() + WAIT_BACKOFF.initial
            return taken

        taken, nth = await self._new_slots.join(key, acquire)
        return bool(nth <= taken)

    async def _wait(self, pool: _Pool) -> str:
        """Wait in line for a slot; the first in line asks the store, with backoff."""
        waiter = _Waiter()
        pool.line.append(waiter)
        delays = WAIT_BACKOFF.delays(secrets.token_hex(4))
        try:
            while waiter.holder is None:
                with anyio.move_on_after(next(delays)):
                    await waiter.event.wait()
                if waiter.holder is not None:
                    break
                if waiter.event.is_set():  # now first in line: ask at once, then back off
                    waiter.event = anyio.Event()
                    delays = WAIT_BACKOFF.delays(secrets.token_hex(4))
                if pool.line and pool.line[0] is waiter:
                    holder = await self._acquire(pool.slot)
                    if holder is not None and waiter.holder is None:
                        pool.busy.add(holder)
                        waiter.holder = holder
                    elif holder is not None:  # handed one meanwhile: this one is spare
                        pool.busy.add(holder)
                        await self.give_back(pool.slot, holder)
            return waiter.holder
        except BaseException:
            if waiter.holder is not None:  # handed a slot as it was cancelled: pass it on
                with anyio.CancelScope(shield=True):
                    await self.give_back(pool.slot, waiter.holder)
            raise
        finally:
            first = bool(pool.line) and pool.line[0] is waiter
            if waiter in pool.line:
                pool.line.remove(waiter)
            if first and pool.line:
                pool.line[0].event.set()  # the next asks the store now
            self._forget_if_empty(pool)

    async def _acquire(self, slot: Slot) -> str | None:
        """A new holder of a slot of the pool, from the store; None if it is full. Not
        abandoned halfway when cancelled: the caller gets the slot, to give back."""
        holder = f"{self.owner}/{secrets.token_hex(6)}"
        now = clock.now()
        self.round_trips += 1
        with anyio.CancelScope(shield=True):
            taken = await self.store.acquire_slot(
                slot.limit_id, slot.key, holder, max=slot.max, now=now,
                expires_at=now + self.lease,
            )  # fmt: skip
        return holder if taken else None

    async def give_back(self, slot: Slot, holder: str) -> None:
        """Hand ``holder``'s slot to this worker's first waiter of the pool; else keep it
        idle a moment (given back to the store later, with others) or, when nothing gives
        idle slots back, give it back now. A store that fails leaves it to its lease."""
        pool = self._pools.get((slot.limit_id, slot.key))
        if pool is None or holder not in pool.busy:
            return  # lost with its lease meanwhile
        pool.busy.discard(holder)
        if self._keeping or pool.line:
            self._free(pool, holder)
            return
        self._forget_if_empty(pool)
        await self._release(slot, [holder])

    def _free(self, pool: _Pool, holder: str) -> None:
        """Hand a slot nobody here uses to the first waiter, else keep it idle."""
        if pool.line:
            waiter = pool.line.popleft()
            waiter.holder = holder
            waiter.event.set()
            pool.busy.add(holder)
            if pool.line:
                pool.line[0].event.set()  # the new first asks the store at once
            return
        pool.idle[holder] = anyio.current_time()
        if self._idled is not None:
            self._idled.set()

    async def _release(self, slot: Slot, holders: list[str]) -> None:
        """Give slots back to the store; even while cancelled (they are forgotten here)."""
        try:
            self.round_trips += 1
            with anyio.CancelScope(shield=True):
                await self.store.release_slots(slot.limit_id, slot.key, holders)
        except StoreError as exc:
            log.warning(
                "could not release concurrency slots; they free when their lease expires",
                limit=slot.limit_id,
                key=slot.key,
                slots=len(holders),
                error=str(exc),
            )

    def _forget_if_empty(self, pool: _Pool) -> None:
        key = (pool.slot.limit_id, pool.slot.key)
        if pool.empty() and self._pools.get(key) is pool:
            del self._pools[key]

    # -- in the background: giving back idle slots, extending held ones ---------------
    async def run(self, *, task_status: Any = anyio.TASK_STATUS_IGNORED) -> None:
        """Give back the slots idle for :data:`KEEP` seconds, and extend the slots held,
        until cancelled; then give back every idle slot."""
        self._idled = anyio.Event()
        self._keeping = True
        try:
            async with anyio.create_task_group() as tg:
                tg.start_soon(self._keep_extended)
                task_status.started()
                await self._give_back_idle()
        finally:
            self._keeping = False
            with anyio.CancelScope(shield=True), anyio.move_on_after(self.lease):
                await self._release_idle(float("inf"))

    async def _give_back_idle(self) -> None:
        while True:
            if not any(pool.idle for pool in self._pools.values()):
                assert self._idled is not None
                await self._idled.wait()
                self._idled = anyio.Event()
            await anyio.sleep(KEEP / 2)  # the idle slots of this while, together
            await self._release_idle(anyio.current_time() - KEEP)

    async def _release_idle(self, before: float) -> None:
        """Give back, one call per pool, the slots idle since ``before`` or longer."""
        for pool in list(self._pools.values()):
            stale = [holder for holder, since in pool.idle.items() if since <= before]
            for holder in stale:
                del pool.idle[holder]
            self._forget_if_empty(pool)
            if stale:
                await self._release(pool.slot, stale)

    async def _keep_extended(self) -> None:
        """Every third of the lease, extend the slots held, in use or idle (a slot used
        over and over may be idle whenever this looks)."""
        while True:
            await anyio.sleep(self.lease / 3)
            for pool in list(self._pools.values()):
                for holder in [*pool.busy, *pool.idle]:
                    await self._extend(pool, holder)

    async def _extend(self, pool: _Pool, holder: str) -> None:
        slot = pool.slot
        try:
            self.round_trips += 1
            kept = await self.store.extend_slot(
                slot.limit_id, slot.key, holder, clock.now() + self.lease
            )
            if not kept and pool.idle.pop(holder, None) is not None:
                return  # expired (or taken over) while idle: forget it
            if not kept and holder in pool.busy:
                log.warning(
                    "a running node's concurrency slot had expired; taking it again",
                    limit=slot.limit_id,
                    key=slot.key,
                )
                now = clock.now()
                self.round_trips += 1
                await self.store.acquire_slot(
                    slot.limit_id, slot.key, holder, max=slot.max, now=now,
                    expires_at=now + self.lease,
                )  # fmt: skip
        except StoreError as exc:  # the next round tries again
            log.warning("could not extend a concurrency slot", key=slot.key, error=str(exc))

    # -- rate limits ----------------------------------------------------------------
    async def take_token(self, bucket: Bucket) -> None:
        """Return once a token of ``bucket`` is due to the caller: one this worker holds,
        else reserved (with those of other callers here, in one store call), then slept
        for until it is due."""
        key = (bucket.limit_id, bucket.key)
        stock = self._stocks.get(key)
        due = stock.take(clock.now()) if stock is not None else None
        if due is None:
            answer, nth = await self._tokens.join(key, lambda count: self._reserve(bucket, count))
            due = answer[nth - 1]
        delay = due - clock.now()
        if delay <= 0:
            return
        try:
            await anyio.sleep(delay)
        except BaseException:  # not used: the next node here may have it
            if (stock := self._stocks.get(key)) is not None:
                stock.put_back(due)
            raise

    async def _reserve(self, bucket: Bucket, count: int) -> list[float]:
        """When the tokens of ``count`` callers are due: held here, else reserved in one
        store call with the tokens to hold ahead."""
        key = (bucket.limit_id, bucket.key)
        stock = self._stocks.get(key)
        if stock is None:
            stock = self._stocks[key] = _Stock()
        now = clock.now()
        due: list[float] = []
        while len(due) < count and (held := stock.take(now)) is not None:
            due.append(held)  # held since callers joined this call: theirs
        need = count - len(due)
        if need == 0:
            return due
        ahead = stock.ahead(bucket, now)
        self.round_trips += 1
        level = await self.store.reserve_tokens(
            bucket.limit_id,
            bucket.key,
            count=need + ahead,
            rate=bucket.rate,
            capacity=bucket.capacity,
            now=now,
        )
        reserved = [now + max(0.0, (j - level) / bucket.rate) for j in range(1, need + ahead + 1)]
        stock.reserved(now, full=level >= bucket.capacity, taken=count, ahead=reserved[need:])
        self._prune_stocks(now)
        return due + reserved[:need]

    def _prune_stocks(self, now: float) -> None:
        """Forget the stocks of buckets not used lately, once there are many."""
        if len(self._stocks) < self._prune_stocks_at:
            return
        for key in [k for k, stock in self._stocks.items() if stock.stale(now)]:
            del self._stocks[key]
        self._prune_stocks_at = max(64, 2 * len(self._stocks))

"""The flow slots of ``@flow(concurrency=Limit(...))`` on a store: what the shells do
with the core's :class:`~flowkit.core._protocol.TakeSlot` and ``ReleaseSlot`` (the
decisions are the core's, see ``flowkit/core/_admission.py``).

A pool's slots are the store's slot pool ``(flow:<flow id>, key value)``, held by run
ids with an expiry that never comes (a run may wait for days: it gives its slot back
when it ends). Its queue is the store pool ``queue:flow:<flow id>`` of the same key,
whose entries expire "at" their arrival time, so that listing them gives the order of
arrival. Admitting takes slots for the first queued runs while there are free ones,
tells each run (which begins), and only then takes it out of the queue: a process
that dies in between leaves the run first in the queue with its slot, and the next
admission of the pool tells it again.

Every process that runs flows sweeps now and then (:meth:`RunSlots.sweep`): it admits
the queued runs of every pool with a queue (a process may have died between giving a
slot back and admitting the next run), after giving back the slots of runs that ended
without giving theirs back (a process died in between). A run that queues after it was
stored (its debounce ended, it was retried) joins its queue after the commit that made
it queued; the sweep puts back in line a stored queued run that no queue holds (its
process died in between). Nothing polls a run.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .. import _clock as clock
from ..core import _protocol as p
from ..core._admission import PARENT_SLOT, POOL_PREFIX, QUEUED, SLOT, flow_pool, taken_slot

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable, Mapping

    from ..core._program import Program
    from ..core._state import RunState
    from ..stores._protocol import Store
    from ._flows import Flows

QUEUE = "queue:"
"""Prefix of the store pool that holds a flow pool's queue."""
TERM = 10 * 365 * 86400.0
"""Seconds a run's slot is taken for: never in practice (the run gives it back)."""
_UNBOUNDED = 2**31 - 1
_TICK = 1e-6  # seconds between two arrivals stamped by one process at one instant
_CHAIN_STEPS = 100  # runs followed along a continue-as-new chain to find its holder


class RunSlots:
    """The flow slots and queues of one store (see the module)."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self._arrived = 0.0  # the last arrival stamped here: two never tie in one process

    async def join(self, limit_id: str, key: str, holder: str) -> bool:
        """Queue ``holder`` at the end of the pool's queue; False if it is in it."""
        line = QUEUE + limit_id
        if holder in await self.store.slot_holders(line, key):
            return False
        self._arrived = max(clock.now(), self._arrived + _TICK)
        await self.store.acquire_slot(
            line, key, holder, max=_UNBOUNDED, now=0.0, expires_at=self._arrived
        )
        return True

    async def join_new(self, commands: list[p.Command]) -> list[p.TakeSlot]:
        """A new run that needs a slot joins its pool's queue before it is stored (no
        run is ever stored queued but out of the queue); what it joined."""
        joined = []
        for command in commands:
            take = command if isinstance(command, p.TakeSlot) else None
            if take is not None and await self.join(take.limit_id, take.key, take.holder):
                joined.append(take)
        return joined

    async def not_created(self, joined: list[p.TakeSlot], slot: dict[str, Any] | None) -> None:
        """Undo :meth:`join_new` and :meth:`take_at_start` for a run that was not created
        (one of its id existed)."""
        for command in joined:
            await self.store.release_slot(QUEUE + command.limit_id, command.key, command.holder)
        if slot is not None:
            await self.store.release_slot(slot["limit"], slot["key"], slot["holder"])

    async def take_at_start(
        self, program: Program, run_id: str, inputs: dict[str, Any], extra: Mapping[str, Any]
    ) -> dict[str, Any] | None:
        """Before a new run is created: take it a slot if its pool has a free one and
        nobody is queued (the run then begins at once: no queue, no second transaction);
        the header entry that says so, or None (the run queues as usual). A run that
        comes with a slot (continued, or a child under its parent's) takes none."""
        pool = flow_pool(program, inputs)
        if pool is None or SLOT in extra or PARENT_SLOT in extra:
            return None
        limit_id, key, size = pool
        if await self.store.slot_holders(QUEUE + limit_id, key):
            return None  # others came first
        if run_id in await self.store.slot_holders(limit_id, key):
            return None  # a run of this id holds it: the start finds that run
        now = clock.now()
        if not await self.store.acquire_slot(
            limit_id, key, run_id, max=size, now=now, expires_at=now + TERM
        ):
            return None
        return taken_slot(pool, run_id)

    async def leave(self, limit_id: str, key: str, holder: str) -> None:
        """Give ``holder``'s slot back and take it out of the queue."""
        await self.store.release_slot(QUEUE + limit_id, key, holder)
        await self.store.release_slot(limit_id, key, holder)

    async def take(self, command: p.TakeSlot, tell: Callable[[str], Awaitable[bool]]) -> None:
        """Carry out the core's ``TakeSlot``: :meth:`join` the pool's queue, then
        :meth:`serve` the pool."""
        await self.join(command.limit_id, command.key, command.holder)
        await self.serve(command.limit_id, command.key, command.max, tell)

    async def release(self, command: p.ReleaseSlot, tell: Callable[[str], Awaitable[bool]]) -> None:
        """Carry out the core's ``ReleaseSlot``: :meth:`leave` the pool, then
        :meth:`serve` it (the slot given back goes to the next queued run)."""
        await self.leave(command.limit_id, command.key, command.holder)
        await self.serve(command.limit_id, command.key, command.max, tell)

    async def serve(
        self, limit_id: str, key: str, size: int, tell: Callable[[str], Awaitable[bool]]
    ) -> None:
        """Admit the queued runs that fit, in order of arrival: take each a slot, then
        ``tell(run_id)`` it; False (the run ended meanwhile, or is unknown) gives its
        slot back and serves the next one."""
        while True:
            again = False
            for holder in await self._admit(limit_id, key, size):
                if await tell(holder):
                    await self.store.release_slot(QUEUE + limit_id, key, holder)
                else:
                    await self.leave(limit_id, key, holder)
                    again = True
            if not again:
                return

    async def _admit(self, limit_id: str, key: str, size: int) -> list[str]:
        """Take slots for the first queued runs while the pool has free ones."""
        now = clock.now()
        admitted = []
        for holder in await self.store.slot_holders(QUEUE + limit_id, key):
            taken = await self.store.acquire_slot(
                limit_id, key, holder, max=size, now=now, expires_at=now + TERM
            )
            if not taken:
                break
            admitted.append(holder)
        return admitted

    async def ended(self, holder: str) -> bool:
        """Whether the run ``holder`` has ended, and the runs it continued as too (one
        that continues as new in its pool passes its slot on)."""
        run_id: Any = holder
        for _ in range(_CHAIN_STEPS):
            loaded = await self.store.load(str(run_id))
            if loaded is None:
                return True
            state = loaded[0]
            if not state.finished:
                return False
            run_id = state.header.get("continued_as")
            if run_id is None:
                return True
        return False

    async def sweep(
        self, size_of: Callable[[str], int | None], tell: Callable[[str], Awaitable[bool]]
    ) -> None:
        """Serve every pool that has a queue; in a full one first give back the slots of
        holders that have :meth:`ended` (their process died before giving them back).
        ``size_of(limit_id)`` is the pool's ``max`` (None: a flow unknown here)."""
        await self._line_up_strays(size_of)
        for line, key in await self.store.slot_pools(QUEUE + POOL_PREFIX):
            limit_id = line[len(QUEUE) :]
            size = size_of(limit_id)
            if size is None:
                continue
            holders = await self.store.slot_holders(limit_id, key)
            if len(holders) >= size:
                for holder in holders:
                    if await self.ended(holder):
                        await self.store.release_slot(limit_id, key, holder)
            await self.serve(limit_id, key, size, tell)

    async def _line_up_strays(self, size_of: Callable[[str], int | None]) -> None:
        """Queue again the runs stored ``queued`` that no queue holds.

        Read in this order, a run admitted meanwhile is never queued again: it leaves
        its queue only after the commit that made it run, so a run listed queued and
        then missing from every queue is loaded after that commit (and skipped)."""
        stored = await self._stored_queued()
        if not stored:
            return
        lined = {
            holder
            for line, key in await self.store.slot_pools(QUEUE + POOL_PREFIX)
            for holder in await self.store.slot_holders(line, key)
        }
        for run_id in sorted(stored - lined):
            loaded = await self.store.load(run_id)
            header = {} if loaded is None else loaded[0].header
            slot = header.get(SLOT)
            if header.get(QUEUED) is None or slot is None or not slot["own"]:
                continue  # admitted, ended or gone meanwhile
            if size_of(slot["limit"]) is not None:  # else: left to a process that knows it
                await self.join(slot["limit"], slot["key"], run_id)

    async def _stored_queued(self) -> set[str]:
        """The ids of every run the store lists as queued."""
        found: set[str] = set()
        cursor = None
        while True:
            page = await self.store.list_runs(status="queued", limit=1000, cursor=cursor)
            found.update(run.run_id for run in page.runs)
            cursor = page.cursor
            if cursor is None:
                return found


def pool_size(flows: Flows, limit_id: str) -> int | None:
    """The ``max`` of the flow pool ``limit_id`` (None: a flow unknown to ``flows``)."""
    target = flows.by_blueprint_id.get(limit_id[len(POOL_PREFIX) :])
    return None if target is None else size_of(target.blueprint.metadata)


def size_of(blueprint_metadata: dict[str, object] | None) -> int | None:
    """The ``max`` of a flow's limit, from its blueprint's metadata (None: no limit)."""
    limit = (blueprint_metadata or {}).get("concurrency")
    if not isinstance(limit, dict):
        return None
    return int(limit["max"])


def holds_slot(state: RunState) -> bool:
    """Whether a run told it has its slot goes on under it (False: it has ended)."""
    slot = state.header.get("slot")
    return not state.finished and slot is not None and bool(slot.get("taken"))

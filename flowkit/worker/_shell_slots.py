"""The worker shell's part in flow concurrency limits: carrying out the core's
``TakeSlot`` and ``ReleaseSlot`` on the store's slots (see ``shell/_run_slots``), and
the sweep the reconciler runs."""

from __future__ import annotations

from functools import partial
from typing import TYPE_CHECKING, Any

from .._errors import ResumeError
from ..core import _protocol as p
from ..shell._run_slots import RunSlots, holds_slot, pool_size, size_of

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable

    from ..shell._durable import Replica
    from ..shell._flows import Flows


class SlotSteps:
    """Mixed into the worker's ``Shell``: flow slots taken, given back and swept."""

    run_slots: RunSlots
    flows: Flows

    if TYPE_CHECKING:

        async def step(self, run_id: str, event: p.Event) -> Replica: ...

    def take_slot(self, run: Any, command: p.TakeSlot) -> None:
        later: list[Callable[[], Awaitable[Any]]] = run.later
        later.append(partial(self.run_slots.take, command, self._admit))

    def release_slot(self, run: Any, command: p.ReleaseSlot) -> None:
        later: list[Callable[[], Awaitable[Any]]] = run.later
        later.append(partial(self.run_slots.release, command, self._admit))

    async def _admit(self, run_id: str) -> bool:
        """Tell a queued run that it has its slot: it begins (its first nodes are
        published); False if it has ended meanwhile, or is unknown."""
        try:
            replica = await self.step(run_id, p.SlotTaken())
        except ResumeError:
            return False
        return holds_slot(replica.state)

    async def sweep_slots(self) -> None:
        """Admit the queued runs nobody admitted (see :meth:`RunSlots.sweep`), if a flow
        here has a limit (the others' runs are left to the processes that have theirs)."""
        known = self.flows.by_blueprint_id.values()
        if any(size_of(target.blueprint.metadata) is not None for target in known):
            await self.run_slots.sweep(partial(pool_size, self.flows), self._admit)

"""What a worker does for its schedules (see flowkit.shell._schedules)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..core import _protocol as p
from ..core._state import FINISHED_VALUES
from ..shell._durable import split_tags

if TYPE_CHECKING:
    from ..shell._schedules import Schedule
    from ..shell._target import Target
    from ._shell import Shell


_HINT = "pass the flow in Worker(app=[...])"


class WorkerStarter:
    """Starts, cancels and checks the runs of a worker's schedules, through its shell."""

    def __init__(self, shell: Shell) -> None:
        self.shell = shell

    def check(self, schedule: Schedule) -> Target:
        """The schedule's flow, its inputs checked; a ConfigurationError for a flow that is
        not registered, InvalidInputs for inputs that do not fit it."""
        flow = self.shell.flows.registered(schedule.flow, hint=_HINT)
        target = self.shell.target_for(flow)
        target.check(dict(schedule.spec.inputs))
        return target

    async def start_scheduled(self, schedule: Schedule, run_id: str) -> None:
        target = self.check(schedule)
        flow = self.shell.flows.registered(schedule.flow, hint=_HINT)
        tags, inputs = split_tags(flow, {"schedule": schedule.id}, dict(schedule.spec.inputs))
        await self.shell.start(target, run_id, inputs, tags=tags)

    async def cancel_scheduled(self, run_id: str) -> None:
        await self.shell.replica(run_id, fresh=True)
        await self.shell.step(run_id, p.CancelRequested())

    async def unfinished(self, run_id: str) -> bool:
        info = await self.shell.store.info(run_id)
        return info is not None and info.status not in FINISHED_VALUES

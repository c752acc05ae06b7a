"""What the in-memory runtime does for its schedules (see flowkit.shell._schedules)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from .._errors import ResumeError
from ..core._state import RunStatus

if TYPE_CHECKING:
    from ..shell._schedules import Schedule
    from ._runtime import Runtime


class RuntimeStarter:
    """Starts, cancels and checks the runs of a runtime's schedules."""

    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime

    async def start_scheduled(self, schedule: Schedule, run_id: str) -> None:
        await self.runtime.start(
            schedule.flow, run_id=run_id, tags={"schedule": schedule.id}, **schedule.spec.inputs
        )

    async def cancel_scheduled(self, run_id: str) -> None:
        try:
            await self.runtime.cancel(run_id)
        except ResumeError:  # gone, or finished meanwhile: nothing to cancel
            return

    async def unfinished(self, run_id: str) -> bool:
        store = self.runtime.store
        if store is not None:
            info = await store.info(run_id)
            return info is not None and not RunStatus(info.status).finished
        run = self.runtime._runs.get(run_id)
        return run is not None and not run.state.finished

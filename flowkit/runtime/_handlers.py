"""Queries and updates on the Runtime's runs (see ``flowkit.shell._handlers``)."""

from __future__ import annotations

from functools import partial
from typing import TYPE_CHECKING, Any

from .._errors import MigrationRefused, ResumeError
from ..shell._handlers import (
    NotWaiting,
    Patience,
    check_update,
    reply,
    run_query,
    update_event,
    update_handler,
)
from ..shell._migrate import migrate_stored, refuse_or_rewrite

if TYPE_CHECKING:
    from ..core._state import RunState
    from ..shell._target import Target
    from ._driver import Run
    from ._runtime import Runtime


async def query(rt: Runtime, run_id: str, name: str) -> Any:
    """Query ``name`` on the run as this runtime holds it, or else as the store does."""
    state, target = await _current(rt, run_id)
    return run_query(target, state, name)


async def _current(rt: Runtime, run_id: str) -> tuple[RunState, Target]:
    run = rt._runs.get(run_id)
    if run is not None:
        return run.state, run.target
    loaded = await rt.store.load(run_id) if rt.store is not None else None
    if loaded is None:
        raise ResumeError(f"unknown run {run_id!r}: it was never started here or in the store")
    return loaded[0], rt.flows.of_state(loaded[0])


async def update(rt: Runtime, run_id: str, name: str, data: Any, timeout: float | None) -> Any:
    """Deliver update ``name`` once the run waits for it; its reply once the run has taken
    it and gone as far as it can (driven here, like a signal)."""
    run = await rt._get(run_id)
    handler = update_handler(run.target, run_id, name)
    event = update_event(name, data)
    check = partial(check_update, handler, event)
    patience = Patience(run_id, name, timeout)
    while True:
        run = await rt._get(run_id)
        try:
            await rt._advance(run, event, check)
            break
        except NotWaiting:
            rt._evict(run)  # with a store, read the run afresh next time
            await _until_moved(run, patience, name)
    await run.wait_idle()
    return reply(handler, run.state, data)


async def _until_moved(run: Run, patience: Patience, name: str) -> None:
    """A pause, cut short when a drive of the run in progress here ends (else a timer or
    another process may move it)."""
    drive = run.driving()
    await patience.wait(run.state, f"the run to reach flow.wait({name!r})", drive)


async def migrate(rt: Runtime, run_id: str, to: Any, mapping: dict[str, str]) -> None:
    """Move the run to flow ``to`` (see :meth:`Runtime.migrate`)."""
    target = rt.flows.add(rt.flows.registered(to, hint="pass the flow itself"))
    run = rt._runs.get(run_id)
    if run is not None and run.tg is not None:
        version = f"{target.blueprint.id} v{target.blueprint.version}"
        raise MigrationRefused(
            run_id, version, ["this runtime is driving it right now: migrate it while it waits"]
        )
    if rt.store is None:
        if run is None:
            raise ResumeError(f"unknown run {run_id!r}: it was never started here")
        refuse_or_rewrite(run.state, target, mapping, rt.flows)
        run.state.journal.clear()
        run.program, run.target = target.program, target
        return
    if run is None:
        await migrate_stored(rt.store, run_id, target, mapping, rt.flows)
        return
    async with run.stepping:
        await migrate_stored(rt.store, run_id, target, mapping, rt.flows)
        if rt._runs.get(run_id) is run:
            del rt._runs[run_id]  # loaded again, with the new version, when next needed

"""Queries and updates on a fleet's runs, from a Client (see ``flowkit.shell._handlers``)."""

from __future__ import annotations

from functools import partial
from typing import TYPE_CHECKING, Any

from ..shell._handlers import (
    NotWaiting,
    Patience,
    check_update,
    reply,
    run_query,
    settled,
    update_event,
    update_handler,
)

if TYPE_CHECKING:
    from ._shell import Shell


async def query(shell: Shell, run_id: str, name: str) -> Any:
    """Query ``name`` on the run as the store holds it."""
    replica = await shell.replica(run_id, fresh=True)
    return run_query(shell.target_of(replica.state), replica.state, name)


async def update(shell: Shell, run_id: str, name: str, data: Any, timeout: float | None) -> Any:
    """Deliver update ``name`` once the run waits for it; its reply once the workers have
    taken the run to its next wait, or to its end."""
    replica = await shell.replica(run_id, fresh=True)
    handler = update_handler(shell.target_of(replica.state), run_id, name)
    event = update_event(name, data)
    check = partial(check_update, handler, event)
    patience = Patience(run_id, name, timeout)
    while True:
        try:
            replica = await shell.step(run_id, event, check=check)
            break
        except NotWaiting:
            await patience.wait(replica.state, f"the run to reach flow.wait({name!r})")
            replica = await shell.replica(run_id, fresh=True)
    state = replica.state
    while not settled(state):
        await patience.wait(state, "the workers to take the run to its next wait")
        state = (await shell.replica(run_id, fresh=True)).state
    return reply(handler, state, data)

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
    from collections.abc import Awaitable, Callable

    from ..shell._durable import Replica
    from ._shell import Shell

    Despite = Callable[[str, Callable[[], Awaitable[None]]], Awaitable[None]]


async def query(shell: Shell, run_id: str, name: str) -> Any:
    """Query ``name`` on the run as the store holds it."""
    replica = await shell.replica(run_id, fresh=True)
    return run_query(shell.target_of(replica.state), replica.state, name)


async def _at_once(what: str, operation: Callable[[], Awaitable[None]]) -> None:
    """Do ``operation`` once (``what`` it does names it in the callers' errors)."""
    await operation()


async def update(
    shell: Shell,
    run_id: str,
    name: str,
    data: Any,
    timeout: float | None,
    despite: Despite = _at_once,
) -> Any:
    """Deliver update ``name`` once the run waits for it; its reply once the workers have
    taken the run to its next wait, or to its end. Every store call goes through
    ``despite(what, operation)`` (the client's: tried again while the store is
    unreachable); a try whose commit went through before an outage hid the answer is
    found by the update's delivery id, and not delivered again."""
    found: list[Replica] = []

    async def read() -> None:
        found.append(await shell.replica(run_id, fresh=True))

    await despite(f"read run {run_id!r}", read)
    handler = update_handler(shell.target_of(found[-1].state), run_id, name)
    event = update_event(name, data)
    check = partial(check_update, handler, event)
    patience = Patience(run_id, name, timeout)
    tries = 0

    async def deliver() -> None:
        nonlocal tries
        tries += 1
        if tries > 1:  # an earlier try may have committed: its answer was lost
            await read()
            if event.delivery_id in found[-1].state.sections["deliveries"]:
                return
        found.append(await shell.step(run_id, event, check=check))

    while True:
        try:
            await despite(f"update run {run_id!r}", deliver)
            break
        except NotWaiting:
            await patience.wait(found[-1].state, f"the run to reach flow.wait({name!r})")
    while not settled(found[-1].state):
        await patience.wait(found[-1].state, "the workers to take the run to its next wait")
        await despite(f"read run {run_id!r}", read)
    return reply(handler, found[-1].state, data)

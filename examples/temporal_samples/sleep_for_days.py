"""Sleep for days: send an email every 30 days until a ``complete`` signal arrives.

Mirrors Temporal's ``sleep_for_days`` sample, whose workflow sends an email, sleeps
(``asyncio.sleep``) and checks a flag its ``complete`` signal handler sets.
Here ``flow.first(flow.sleep(period), flow.wait("complete"))`` races a durable timer
against the signal, so the signal ends the sleep at once rather than at its end.
While it sleeps the run is a row in the store and a timer, held by no process, and
any worker fires the timer when it falls due. Under ``simulate()`` the months pass
on virtual time in milliseconds (Temporal: the time-skipping test environment).
The mailer is a stand-in that returns the message.
"""

from __future__ import annotations

from typing import Any

from flowkit import flow, node
from flowkit.testing import at, simulate

from ._support import RESULT_TIMEOUT, Api, output, until, waiting_for

THIRTY_DAYS = 30 * 24 * 3600.0


@node
async def send_email(to: str, number: int) -> str:
    return f"email {number} to {to}: still sleeping"


@flow
async def sleep_for_days(to: str, period: float = THIRTY_DAYS) -> dict[str, Any]:
    sent: list[str] = []
    while True:
        sent.append(await send_email(to, len(sent) + 1))
        done = await flow.first(flow.sleep(period), flow.wait("complete"))
        if done:  # the signal carries True; the sleep finishes with None
            break
    return {"emails": len(sent), "last": sent[-1]}


FLOWS = [sleep_for_days]


async def demo(api: Api) -> dict[str, Any]:
    """Start it (real days), see the first email go, then complete it with the signal."""
    handle = await api.start(sleep_for_days, run_id="sleep_for_days-1", to="ada@example.com")
    await until(api, handle.run_id, waiting_for("complete"))
    await api.signal(handle.run_id, "complete", True)
    return {"result": output(await handle.result(timeout=RESULT_TIMEOUT))}


def simulated() -> dict[str, Any]:
    """95 days on virtual time: emails on days 0, 30, 60 and 90, then the signal."""
    sim = simulate(
        sleep_for_days,
        to="ada@example.com",
        signals={"complete": at("95d", True)},
        start="2026-01-01T00:00:00Z",
    )
    return {"result": sim.output, "days": sim.elapsed.days}


EXPECTED = {"result": {"emails": 1, "last": "email 1 to ada@example.com: still sleeping"}}
EXPECTED_SIMULATED = {
    "result": {"emails": 4, "last": "email 4 to ada@example.com: still sleeping"},
    "days": 95,
}

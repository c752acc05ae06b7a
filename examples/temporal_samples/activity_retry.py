"""Activity retry: a node that fails three times, then succeeds, with exponential backoff.

Mirrors Temporal's ``hello_activity_retry``. The retry policy is declared on the
``@node`` (Temporal passes a ``RetryPolicy`` to ``execute_activity``); one call can
override it with ``compose_greeting.options(retries=...)``, here from the run's
input ``patience``. ``never_retry`` plays
Temporal's ``non_retryable_error_types``: a blank name fails at once. The attempt
number is ``flowkit.context().attempt`` (Temporal: ``activity.info().attempt``).
The flaky service is a stand-in that fails by attempt number, so every shell sees
the same attempts.
"""

from __future__ import annotations

from typing import Any

import flowkit
from flowkit import Backoff, flow, node
from flowkit.testing import simulate

from ._support import RESULT_TIMEOUT, Api, output


class InvalidName(ValueError):
    """A blank name: no number of attempts will make it valid."""


@node(
    retries=5,
    backoff=Backoff(initial="50ms", factor=2.0, max="1m"),
    never_retry=(InvalidName,),
)
async def compose_greeting(greeting: str, name: str) -> str:
    if not name.strip():
        raise InvalidName("the name is blank")
    ctx = flowkit.context()
    ctx.state["attempts"] = ctx.attempt  # committed with the node's result
    if ctx.attempt < 4:
        raise ConnectionError(f"attempt {ctx.attempt}: the greeting service is flaky")
    return f"{greeting}, {name}!"


@flow
async def greeting_with_retries(name: str, patience: int = 5) -> str:
    return await compose_greeting.options(retries=patience)("Hello", name)


FLOWS = [greeting_with_retries]


async def demo(api: Api) -> dict[str, Any]:
    """Greet World (the fourth attempt succeeds); with only two retries (fails on the
    third attempt); a blank name (fails on the first: never retried)."""
    world = await api.start(greeting_with_retries, run_id="activity_retry-world", name="World")
    hasty = await api.start(
        greeting_with_retries, run_id="activity_retry-hasty", name="World", patience=2
    )
    blank = await api.start(greeting_with_retries, run_id="activity_retry-blank", name=" ")
    done = await world.result(timeout=RESULT_TIMEOUT)
    return {
        "greeting": output(done),
        "attempts": done.state["attempts"],
        "two retries": str((await hasty.result(timeout=RESULT_TIMEOUT)).error),
        "blank name": str((await blank.result(timeout=RESULT_TIMEOUT)).error),
    }


def simulated() -> dict[str, Any]:
    """The same on virtual time: the backoff (50 + 100 + 200 ms) passes at once."""
    sim = simulate(greeting_with_retries, name="World")
    hasty = simulate(greeting_with_retries, name="World", patience=2)
    blank = simulate(greeting_with_retries, name=" ")
    return {
        "greeting": sim.output,
        "attempts": len(sim.calls(compose_greeting)),
        "two retries": str(hasty.error),
        "blank name": str(blank.error),
        "backoff": sim.elapsed.total_seconds(),
    }


EXPECTED = {
    "greeting": "Hello, World!",
    "attempts": 4,
    "two retries": "node 'compose_greeting' failed on attempt 3: "
    "attempt 3: the greeting service is flaky",
    "blank name": "node 'compose_greeting' failed on attempt 1: the name is blank",
}
EXPECTED_SIMULATED = {**EXPECTED, "backoff": 0.35}

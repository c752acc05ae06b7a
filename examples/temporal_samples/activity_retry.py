"""Activity retry: a node that fails three times, then succeeds, with exponential backoff.

Mirrors Temporal's ``hello_activity_retry``. The retry policy is declared on the
``@node`` (Temporal passes a ``RetryPolicy`` to ``execute_activity``); one call can
override it with ``compose_greeting.options(retries=...)``. ``never_retry`` plays
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
async def greeting_with_retries(name: str) -> str:
    return await compose_greeting("Hello", name)


FLOWS = [greeting_with_retries]


async def demo(api: Api) -> dict[str, Any]:
    """Greet World (fourth attempt succeeds), then a blank name (fails, no retry)."""
    handle = await api.start(greeting_with_retries, run_id="activity_retry-world", name="World")
    done = await handle.result(timeout=RESULT_TIMEOUT)
    blank = await api.start(greeting_with_retries, run_id="activity_retry-blank", name=" ")
    failed = await blank.result(timeout=RESULT_TIMEOUT)
    return {
        "greeting": output(done),
        "attempts": done.state["attempts"],
        "blank name": (failed.status.value, "attempts" in failed.state),
    }


def simulated() -> dict[str, Any]:
    """The same on virtual time: the backoff (50 + 100 + 200 ms) passes at once."""
    sim = simulate(greeting_with_retries, name="World")
    blank = simulate(greeting_with_retries, name=" ")
    return {
        "greeting": sim.output,
        "attempts": len(sim.calls(compose_greeting)),
        "blank name": (blank.status.value, len(blank.calls(compose_greeting)) > 1),
        "backoff": sim.elapsed.total_seconds(),
    }


EXPECTED = {"greeting": "Hello, World!", "attempts": 4, "blank name": ("failed", False)}
EXPECTED_SIMULATED = {**EXPECTED, "backoff": 0.35}

"""Temporal's continue-as-new sample, in flowkit: a looping flow that ends each run
with ``flow.continue_as_new(...)`` so that no run's history grows without bound.

Temporal's ``LoopingWorkflow`` sleeps a second per iteration and continues as new
with ``iteration + 1`` until the fifth. Here the loop is an entity-like poller: each
run polls a few times (``POLLS_PER_RUN``, ``pause`` apart), then hands its running
total to a fresh run; the run of iteration ``iterations`` returns the total. The runs
are ``continue_as_new-1``, ``continue_as_new-1:1`` ... ``:5``, and ``result()`` on the
first waits for the last.

``python -m examples.temporal_samples`` runs it with the other samples.
"""

from __future__ import annotations

from typing import Any

from flowkit import flow, node
from flowkit.testing import simulate

from ._support import RESULT_TIMEOUT, Api, output

POLLS_PER_RUN = 3
"""Polls per run before it continues as new (a real poller would make it a few hundred)."""


@node
async def poll(iteration: int, attempt: int) -> int:
    """One poll of whatever the entity watches: here, a number of new items."""
    return iteration + attempt


@flow
async def looping(iteration: int = 0, iterations: int = 5, seen: int = 0, pause: str = "1s") -> int:
    """Poll ``POLLS_PER_RUN`` times, then continue as new with the next iteration."""
    if iteration == iterations:
        return seen
    for attempt in range(POLLS_PER_RUN):
        seen += await poll(iteration, attempt)
        await flow.sleep(pause)
    return flow.continue_as_new(
        iteration=iteration + 1, iterations=iterations, seen=seen, pause=pause
    )


FLOWS = [looping]
ITERATIONS = 5
SEEN = sum(i + a for i in range(ITERATIONS) for a in range(POLLS_PER_RUN))


async def demo(api: Api) -> dict[str, Any]:
    """Start the loop; ``result()`` on its first run follows the chain to the last."""
    handle = await api.start(
        looping, run_id="continue_as_new-1", iterations=ITERATIONS, pause="10ms"
    )
    last = await handle.result(timeout=RESULT_TIMEOUT)
    first = await api.result("continue_as_new-1")
    return {"continued_as": first.continued_as, "last": last.run_id, "seen": output(last)}


def simulated() -> dict[str, Any]:
    """Five runs of three one-second sleeps each, on virtual time."""
    sim = simulate(looping, iterations=ITERATIONS)
    return {"last": sim.run_id, "seen": sim.output, "slept": sim.elapsed.total_seconds()}


EXPECTED = {"continued_as": "continue_as_new-1:1", "last": "continue_as_new-1:5", "seen": SEEN}
EXPECTED_SIMULATED = {"last": "sim:5", "seen": SEEN, "slept": float(ITERATIONS * POLLS_PER_RUN)}

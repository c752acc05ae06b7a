"""Temporal's continue-as-new sample, in flowkit: a looping flow that ends each run
with ``flow.continue_as_new(...)`` so that no run's history grows without bound.

Temporal's ``LoopingWorkflow`` sleeps a second per iteration and continues as new
with ``iteration + 1`` until the fifth. Here the loop is an entity-like poller: each
run polls a few times (``POLLS_PER_RUN``, ``pause`` apart), then hands its running
total to a fresh run; the run of iteration ``iterations`` returns the total. The runs
are ``loop``, ``loop:1`` ... ``loop:5``, and ``result()`` on ``loop`` waits for the last.

Run it: ``python -m examples.temporal_samples.continue_as_new``.
"""

from __future__ import annotations

import anyio

import flowkit
from flowkit import flow, node

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


async def main(pause: str = "1s") -> None:
    async with flowkit.Runtime(poll_interval=0.01) as rt:
        handle = await rt.start(looping, run_id="loop", iterations=5, pause=pause)
        last = await handle.result()
        first = await rt.result("loop")
    print(f"run 'loop' continued as {first.continued_as!r}")
    print(f"last run {last.run_id!r} is {last.status.value}: seen {last.output}")


if __name__ == "__main__":
    anyio.run(main)

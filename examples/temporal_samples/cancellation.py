"""Cancellation with cleanup: cancel a long job; its ``finally`` block cleans up.

Mirrors Temporal's ``hello_cancellation``, where a never-ending activity heartbeats
(heartbeats are how the server tells it it is cancelled) until the workflow is
cancelled, and the workflow's ``finally`` runs a cleanup activity. In flowkit a job
that never ends is a loop of short nodes and durable sleeps, and
``handle.cancel()`` / ``client.cancel(run_id)`` lands wherever the run stands: a
node in flight is cancelled where it runs (on workers too, without heartbeats in
the node's code), a sleep is dropped. Then the run's ``finally`` blocks run, as
nodes, and the run ends ``cancelled``. ``except flowkit.Cancelled`` sees the
cancellation too; ``except Exception`` does not, as with
``asyncio.CancelledError``. Unlike Temporal, a flow cannot refuse or outlive a
cancellation: its ``finally`` blocks run, then the run ends.
"""

from __future__ import annotations

from typing import Any

from flowkit import flow, node
from flowkit.testing import simulate

from ._support import RESULT_TIMEOUT, Api, until


@node
async def process_batch(job: str, number: int) -> int:
    return number  # a stand-in for a batch of real work


@node
async def cleanup(job: str, batches: int) -> str:
    return f"cleaned up {job} after {batches} batches"


@flow
async def cancellable_job(job: str, every: float = 600.0) -> str:
    batches = 0
    note = ""
    try:
        while True:  # runs until it is cancelled
            batches = await process_batch(job, batches + 1)
            await flow.sleep(every)
    finally:
        note = await cleanup(job, batches)  # noqa: F841 - a run variable, in its state


FLOWS = [cancellable_job]


async def demo(api: Api) -> dict[str, Any]:
    """Start the job, cancel it once it has done two batches, read how it ended."""
    handle = await api.start(cancellable_job, run_id="cancellation-1", job="report", every=0.05)
    await until(api, handle.run_id, lambda result: result.state.get("batches", 0) >= 2)
    await api.cancel(handle.run_id)
    done = await handle.result(timeout=RESULT_TIMEOUT)
    batches = done.state["batches"]
    return {
        "status": done.status.value,
        "cleanup": done.state["note"] == f"cleaned up report after {batches} batches",
    }


def simulated() -> dict[str, Any]:
    """A batch every ten minutes, cancelled an hour in, on virtual time."""
    sim = simulate(cancellable_job, job="report", cancel_at="1h")
    return {"status": sim.status.value, "cleanup": sim.state["note"]}


EXPECTED = {"status": "cancelled", "cleanup": True}
EXPECTED_SIMULATED = {"status": "cancelled", "cleanup": "cleaned up report after 6 batches"}

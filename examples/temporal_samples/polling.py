"""Polling: ask an external service for a status until it is ready, with backoff.

Mirrors Temporal's ``polling/infrequent`` sample: the activity raises while the
service is not ready and the retry policy's backoff is the polling interval, so no
task, thread or worker slot is held between polls. In flowkit the node raises, and
``retries=None`` with ``retry_timeout`` bounds the polling by time (Temporal: the
activity's ``start_to_close_timeout`` and retry policy; its ``frequent`` variant,
a loop with heartbeats inside the activity, is a loop inside the node here). For a
schedule that must read the run's data, poll in the flow instead: a loop with
``await flow.sleep(interval)``, whose interval may be computed.
The service is a stand-in that answers "ready" on the third poll.
"""

from __future__ import annotations

from typing import Any

import flowkit
from flowkit import Backoff, flow, node
from flowkit.testing import simulate

from ._support import RESULT_TIMEOUT, Api, output


class NotReady(Exception):
    """The service is still working on it: poll again."""


def service_status(job: str, poll: int) -> str:
    """The external service's stand-in: deterministic, ready on the third poll."""
    return "ready" if poll >= 3 else "running"


@node(
    retries=None,
    retry_on=(NotReady,),
    retry_timeout="1h",
    backoff=Backoff(initial="200ms", factor=1.0),  # the polling interval
)
async def poll_status(job: str) -> str:
    polls = flowkit.context().attempt
    if service_status(job, polls) != "ready":
        raise NotReady(f"{job} is still running after {polls} polls")
    return f"{job} ready after {polls} polls"


@flow
async def wait_for_job(job: str) -> str:
    return await poll_status(job)


FLOWS = [wait_for_job]


async def demo(api: Api) -> dict[str, Any]:
    handle = await api.start(wait_for_job, run_id="polling-1", job="export-7")
    return {"output": output(await handle.result(timeout=RESULT_TIMEOUT))}


def simulated() -> dict[str, Any]:
    """Three polls, two intervals of virtual time between them."""
    sim = simulate(wait_for_job, job="export-7")
    return {"output": sim.output, "waited": sim.elapsed.total_seconds()}


EXPECTED = {"output": "export-7 ready after 3 polls"}
EXPECTED_SIMULATED = {**EXPECTED, "waited": 0.4}

"""Query: read a run's greeting while it sleeps, and after it has finished.

Mirrors Temporal's ``hello_query``: the flow says hello, sleeps, then says goodbye;
a query reads the current greeting. A flowkit query is a plain function of the
run's variables declared next to the flow (``@flow_fn.query``), run by the process
that asks (Temporal: a ``@workflow.query`` method run by a worker). So it needs no
worker, answers for finished runs too, and cannot change the run.
"""

from __future__ import annotations

from typing import Any

from flowkit import flow
from flowkit.testing import simulate

from ._support import RESULT_TIMEOUT, Api, has, output, until


@flow
async def greeting_with_query(name: str, pause: float = 2.0) -> str:
    greeting = f"Hello, {name}!"
    await flow.sleep(pause)  # durable: on workers, no task holds the run meanwhile
    greeting = f"Goodbye, {name}!"
    return greeting


@greeting_with_query.query
def current_greeting(vars: dict[str, Any]) -> str:
    """The greeting as the run stands."""
    return str(vars["greeting"])


FLOWS = [greeting_with_query]


async def demo(api: Api) -> dict[str, Any]:
    """Query while the run sleeps, then once it has finished."""
    handle = await api.start(greeting_with_query, run_id="query-1", name="World", pause=0.3)
    await until(api, handle.run_id, has("greeting"))
    during = await api.query(handle.run_id, "current_greeting")
    done = await handle.result(timeout=RESULT_TIMEOUT)
    after = await api.query(handle.run_id, "current_greeting")
    return {"during": during, "after": after, "output": output(done)}


def simulated() -> dict[str, Any]:
    """The two-second sleep passes on virtual time; the query reads the final variables."""
    sim = simulate(greeting_with_query, name="World")
    return {"after": sim.query("current_greeting"), "slept": sim.elapsed.total_seconds()}


EXPECTED = {"during": "Hello, World!", "after": "Goodbye, World!", "output": "Goodbye, World!"}
EXPECTED_SIMULATED = {"after": "Goodbye, World!", "slept": 2.0}

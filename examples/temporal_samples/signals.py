"""Signals: a run collects greetings sent as signals until an ``exit`` signal ends it.

Mirrors Temporal's ``hello_signal``. Temporal declares ``@workflow.signal`` handler
methods that append to a list while the workflow ``wait_condition``s on an exit
flag; in flowkit the flow body itself waits, ``flow.first(flow.wait("submit_greeting"),
flow.wait("exit"))``, and appends what arrives: the flow's variables are its state.
Signals sent before the run reaches its wait are buffered, in order, as Temporal
buffers them; a signal to a run that has finished is refused (Temporal: an error
too).
"""

from __future__ import annotations

from typing import Any

from flowkit import flow, node
from flowkit.testing import at, simulate

from ._support import RESULT_TIMEOUT, Api, output


@node
async def greet_all(greetings: list[str]) -> str:
    return " / ".join(greetings)


@flow
async def greeting_collector() -> str:
    greetings: list[str] = []
    while True:
        greeting = await flow.first(flow.wait("submit_greeting"), flow.wait("exit"))
        if greeting is None:  # exit carries no greeting
            break
        greetings.append(greeting)
    return await greet_all(greetings)


FLOWS = [greeting_collector]
NAMES = ["Hello, user1", "Hello, user2", "Hello, user3"]


async def demo(api: Api) -> dict[str, Any]:
    """Start the run, send three greetings and an exit, back to back; read the result."""
    handle = await api.start(greeting_collector, run_id="signals-1")
    for greeting in NAMES:
        await api.signal(handle.run_id, "submit_greeting", greeting)
    await api.signal(handle.run_id, "exit")
    return {"output": output(await handle.result(timeout=RESULT_TIMEOUT))}


def simulated() -> dict[str, Any]:
    """The greetings arrive at once; the exit an hour later, on virtual time."""
    sim = simulate(greeting_collector, signals={"submit_greeting": NAMES, "exit": at("1h", None)})
    return {"output": sim.output}


EXPECTED = {"output": "Hello, user1 / Hello, user2 / Hello, user3"}

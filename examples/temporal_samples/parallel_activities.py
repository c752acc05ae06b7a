"""Parallel activities: several nodes at once, results in call order.

Mirrors Temporal's ``hello_parallel_activity`` (``asyncio.gather`` over
``execute_activity`` calls). ``flow.gather(a(...), b(...))`` runs a fixed set of
calls concurrently and returns a tuple in call order; ``flow.map(node, items,
concurrency=n)`` runs one call per item, at most ``n`` at once, results in input
order. On workers the calls are separate messages, taken by whichever workers are
free. The first failure cancels the calls still running, as ``asyncio.gather`` in a
task group would.
"""

from __future__ import annotations

from typing import Any

from flowkit import flow, node
from flowkit.testing import simulate

from ._support import RESULT_TIMEOUT, Api, output


@node
async def say_hello(name: str) -> str:
    return f"Hello, {name}!"


@node
async def count_letters(name: str) -> int:
    return len(name)


@flow
async def say_hello_to_all(names: list[str]) -> dict[str, Any]:
    first, second = await flow.gather(say_hello(names[0]), say_hello(names[1]))
    letters = await flow.map(count_letters, names, concurrency=3)
    return {"greetings": [first, second], "letters": letters}


FLOWS = [say_hello_to_all]
NAMES = ["user1", "ada", "grace", "linus", "barbara"]


async def demo(api: Api) -> dict[str, Any]:
    handle = await api.start(say_hello_to_all, run_id="parallel_activities-1", names=NAMES)
    return {"output": output(await handle.result(timeout=RESULT_TIMEOUT))}


def simulated() -> dict[str, Any]:
    sim = simulate(say_hello_to_all, names=NAMES)
    return {"output": sim.output, "calls": len(sim.calls(count_letters))}


EXPECTED = {"output": {"greetings": ["Hello, user1!", "Hello, ada!"], "letters": [5, 3, 5, 5, 7]}}
EXPECTED_SIMULATED = {**EXPECTED, "calls": 5}

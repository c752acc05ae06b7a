"""Child workflow: a parent flow awaits a child flow as it would await a function.

Mirrors Temporal's ``hello_child_workflow``. Awaiting another ``@flow`` inside a flow
starts it as a run of its own (Temporal: ``workflow.execute_child_workflow``); its run
id is derived from the parent's, the parent waits durably, and a failed child raises
``flowkit.ChildFailed`` at the call site, which the parent can catch. Arguments are
checked against the child's signature when the parent is compiled. There is no
parent-close policy to choose: a child is part of its parent's run (cancelling the
parent cancels it).
"""

from __future__ import annotations

from typing import Any

import flowkit
from flowkit import flow, node
from flowkit.testing import simulate

from ._support import RESULT_TIMEOUT, Api, output


@node
async def compose_greeting(greeting: str, name: str) -> str:
    if not name:
        raise ValueError("nobody to greet")
    return f"{greeting}, {name}!"


@flow
async def greeting_child(greeting: str, name: str) -> str:
    return await compose_greeting(greeting, name)


@flow
async def greeting_parent(name: str) -> str:
    try:
        return await greeting_child("Hello", name)
    except flowkit.ChildFailed:
        return "the child could not greet"


FLOWS = [greeting_parent, greeting_child]


async def demo(api: Api) -> dict[str, Any]:
    """A child that greets, and one that fails (the parent catches it)."""
    world = await api.start(greeting_parent, run_id="child_workflow-world", name="World")
    nobody = await api.start(greeting_parent, run_id="child_workflow-nobody", name="")
    return {
        "world": output(await world.result(timeout=RESULT_TIMEOUT)),
        "nobody": output(await nobody.result(timeout=RESULT_TIMEOUT)),
    }


def simulated() -> dict[str, Any]:
    return {
        "world": simulate(greeting_parent, name="World").output,
        "nobody": simulate(greeting_parent, name="").output,
    }


EXPECTED = {"world": "Hello, World!", "nobody": "the child could not greet"}

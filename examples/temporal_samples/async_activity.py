"""Async activity completion: a node hands its work to another system, which completes it.

Mirrors Temporal's ``hello_async_activity_completion``: the activity hands its task
token to another system and calls ``activity.raise_complete_async()``; that system
later completes the activity through the client. Here the node takes a completion
token (``flowkit.context().completion_token()``), writes the request to the greeter
service's inbox (a file: the service may live in another process, as on workers) and
returns ``flowkit.PENDING``; the service composes the greeting on its own time and
completes the node with ``complete(token, greeting)`` on the Runtime or the Client.
The run awaits meanwhile, holding no worker; the token's timeout fails the node if
nobody answers (and its retry policy applies).
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path
from typing import Any

import anyio

import flowkit
from flowkit import flow, node
from flowkit.testing import simulate

from ._support import POLL, RESULT_TIMEOUT, STATE_TIMEOUT, Api, output


@node(timeout="10s")
async def compose_greeting(greeting: str, name: str, inbox: str) -> str:
    token = flowkit.context().completion_token(timeout="1m")  # fail if nobody answers
    request = {"token": token, "greeting": greeting, "name": name}
    async with await anyio.Path(inbox).open("a", encoding="utf-8") as requests:
        await requests.write(json.dumps(request) + "\n")
    return flowkit.PENDING  # type: ignore[return-value]


@flow
async def greeting_workflow(name: str, inbox: str) -> str:
    return await compose_greeting("Hello", name, inbox)


FLOWS = [greeting_workflow]


async def serve_one(api: Api, inbox: Path) -> None:
    """The greeter service: take the next request from its inbox and complete its node."""
    path = anyio.Path(inbox)
    with anyio.fail_after(STATE_TIMEOUT):
        while True:
            text = await path.read_text(encoding="utf-8") if await path.exists() else ""
            if text.strip():
                break
            await anyio.sleep(POLL)  # a file has no event to await: read it again, bounded
    request = json.loads(text.splitlines()[0])
    await api.complete(request["token"], f"{request['greeting']}, {request['name']}!")


async def demo(api: Api) -> dict[str, Any]:
    """Start the run; the greeter service completes its node from the inbox."""
    with tempfile.TemporaryDirectory() as folder:
        inbox = Path(folder) / "greeter-inbox.jsonl"
        handle = await api.start(
            greeting_workflow, run_id="async_activity-1", name="World", inbox=str(inbox)
        )
        await serve_one(api, inbox)
        done = await handle.result(timeout=RESULT_TIMEOUT)
    return {"output": output(done)}


def simulated() -> dict[str, Any]:
    """The service answers half a minute after the node deferred, on virtual time (within
    the token's one-minute timeout)."""
    with tempfile.TemporaryDirectory() as folder:
        inbox = str(Path(folder) / "greeter-inbox.jsonl")
        answer = flowkit.testing.at("30s", "Hello, World!")
        sim = simulate(
            greeting_workflow,
            name="World",
            inbox=inbox,
            completions={"compose_greeting": answer},
        )
    return {"output": sim.output, "waited": sim.elapsed.total_seconds()}


EXPECTED = {"output": "Hello, World!"}
EXPECTED_SIMULATED = {"output": "Hello, World!", "waited": 30.0}

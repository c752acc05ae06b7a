"""Temporal's async activity completion sample, in flowkit.

In Temporal's ``hello_async_activity_completion`` the activity hands its task
token to another system and calls ``activity.raise_complete_async()``; that
system later completes the activity through the client's async activity handle.
Here the node takes a completion token (``flowkit.context().completion_token()``),
hands it to the greeter service and returns ``flowkit.PENDING``; the greeter
composes the greeting on its own time and completes the node with
``complete(token, greeting)`` on the Runtime or Client. The run awaits in the
meantime, holding no worker.

Run it with ``python examples/temporal_samples/async_activity.py``.
"""

from __future__ import annotations

from typing import Any

import anyio

import flowkit
from flowkit import flow, node

Request = tuple[str, str, str]  # (completion token, greeting, name)


class Greeter:
    """The other system: it takes requests and completes their nodes when done."""

    def __init__(self) -> None:
        self._send, self._receive = anyio.create_memory_object_stream[Request](100)

    def submit(self, token: str, greeting: str, name: str) -> None:
        self._send.send_nowait((token, greeting, name))

    async def serve(self, completer: Any) -> None:
        """Complete each request's node through ``completer`` (a Runtime or a Client)."""
        async with self._receive:
            async for token, greeting, name in self._receive:
                await anyio.sleep(0.01)  # the work, done elsewhere and later
                await completer.complete(token, f"{greeting}, {name}!")


GREETERS: list[Greeter] = []
"""The greeter the nodes of this process hand their requests to (set by ``running``)."""


@node(timeout="10s")
async def compose_greeting(greeting: str, name: str) -> str:
    token = flowkit.context().completion_token(timeout="1m")  # fail if nobody answers
    GREETERS[-1].submit(token, greeting, name)
    return flowkit.PENDING  # type: ignore[return-value]


@flow
async def greeting_workflow(name: str) -> str:
    return await compose_greeting("Hello", name)


async def run_in_memory(name: str = "World") -> str:
    """The sample on the in-memory Runtime."""
    greeter = Greeter()
    GREETERS.append(greeter)
    async with flowkit.Runtime() as rt, anyio.create_task_group() as tg:
        tg.start_soon(greeter.serve, rt)
        started = await rt.run(greeting_workflow, name=name)
        result = await rt.finished(started.run_id)
        tg.cancel_scope.cancel()
    return str(result.output)


async def run_on_worker(client: flowkit.Client, name: str = "World") -> str:
    """The sample with a Worker running elsewhere: the greeter completes through the
    Client (the worker's process must hold a greeter too: ``GREETERS``)."""
    greeter = Greeter()
    GREETERS.append(greeter)
    async with anyio.create_task_group() as tg:
        tg.start_soon(greeter.serve, client)
        result = await client.run(greeting_workflow, name=name)
        tg.cancel_scope.cancel()
    return str(result.output)


if __name__ == "__main__":
    print(anyio.run(run_in_memory))

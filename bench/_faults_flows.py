"""The five flow shapes of ``bench/faults_kafka.py``, served by its worker processes.

``python -m flowkit.worker --app bench._faults_flows`` (run from the repository root):
a 20-node chain, a 50-way gather, a sleep then a wait for a signal, a map over
100 items and a 10-step loop. Each output is a pure function of the input
(:func:`expected`), so the bench checks every completed run.
"""

from __future__ import annotations

from typing import Any

import anyio

from flowkit import flow, node

from .shapes import build

NODE_SECONDS = 0.005  # each node's "work"
WAIT_NAME = "go"

chain20 = build("chain", 20)  # output 20
gather50 = build("fan", 50)  # output "done"


@node
async def plus(n: int, v: int) -> int:
    await anyio.sleep(NODE_SECONDS)
    return n + v


@node
async def square(item: int) -> int:
    await anyio.sleep(NODE_SECONDS)
    return item * item


@node
async def add_up(values: list[int]) -> int:
    return sum(values)


@node
async def items(n: int) -> list[int]:
    return [n + i for i in range(100)]


@flow
async def sleep_wait(n: int) -> int:
    await flow.sleep(1.0)
    decision = await flow.wait("go", timeout="1h")
    return await plus(n, decision["v"])


@flow
async def map100(n: int) -> int:
    values = await items(n)
    squares = await flow.map(square, values, concurrency=20)
    return await add_up(squares)


@flow
async def loop10(n: int) -> int:
    total = n
    for i in range(10):
        total = await plus(total, i)
    return total


SHAPES: dict[str, Any] = {
    "chain20": chain20,
    "gather50": gather50,
    "sleep_wait": sleep_wait,
    "map100": map100,
    "loop10": loop10,
}


def expected(shape: str, n: int) -> Any:
    """The output of a run of ``shape`` with input ``n`` (``sleep_wait`` signalled ``v=n``)."""
    if shape == "chain20":
        return 20
    if shape == "gather50":
        return "done"
    if shape == "sleep_wait":
        return 2 * n
    if shape == "map100":
        return sum((n + i) ** 2 for i in range(100))
    return n + sum(range(10))


def inputs(shape: str, n: int) -> dict[str, Any]:
    """The keyword inputs of a run (the builder shapes take none)."""
    return {} if shape in ("chain20", "gather50") else {"n": n}

"""The reference workload shapes of bench/flowcraft_bench.mjs (chain, fan, diamond) for flowkit."""

from __future__ import annotations

from typing import Any

from flowkit import Flow


async def inc(x: Any = 0) -> int:
    return (x or 0) + 1


async def one() -> int:
    return 1


async def done(_: Any = None) -> str:
    return "done"


def build(shape: str, n: int) -> Flow:
    """A builder graph of ``n`` nodes in ``shape`` (each node adds 1 to its input)."""
    flow = Flow(f"{shape}-{n}")
    if shape == "chain":
        for i in range(n):
            flow.node(f"n{i}", inc)
        for i in range(n - 1):
            flow.edge(f"n{i}", f"n{i + 1}")
    elif shape == "fan":
        flow.node("src", one)
        for i in range(n):
            flow.node(f"w{i}", inc).edge("src", f"w{i}")
        flow.node("sink", done, join="all")
        for i in range(n):
            flow.edge(f"w{i}", "sink")
    elif shape == "diamond":
        for i in range(max(1, n // 4)):
            for part in "abc":
                flow.node(f"{part}{i}", inc)
            flow.node(f"d{i}", _first_value, join="all")
            flow.edge(f"a{i}", f"b{i}").edge(f"a{i}", f"c{i}")
            flow.edge(f"b{i}", f"d{i}").edge(f"c{i}", f"d{i}")
            if i:
                flow.edge(f"d{i - 1}", f"a{i}")
    else:
        raise ValueError(f"unknown shape {shape!r}; expected chain, fan or diamond")
    return flow


async def _first_value(values: dict[str, int]) -> int:
    return max(values.values()) + 1


async def plain(shape: str, n: int) -> Any:
    """The floor: the same functions awaited directly, no engine."""
    if shape == "chain":
        x = 0
        for _ in range(n):
            x = await inc(x)
        return x
    if shape == "fan":
        src = await one()
        values = [await inc(src) for _ in range(n)]
        return await done(values)
    x = 0
    for _ in range(max(1, n // 4)):
        a = await inc(x)
        b, c = await inc(a), await inc(a)
        x = await _first_value({"b": b, "c": c})
    return x

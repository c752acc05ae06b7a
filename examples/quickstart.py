"""The README demo: a durable checkout on the embedded defaults (SQLite store).

It waits for a human approval, sleeps durably, fans out and joins, and maps a
node over a list; every step is committed to a SQLite file (in a temporary
directory of its own, removed at the end), so the run would survive a restart.
Run it with ``python examples/quickstart.py``.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import anyio
import attrs

import flowkit
from flowkit import flow, node
from flowkit.stores import SQLiteStore


@attrs.define
class Order:
    id: str
    total: int
    items: list[str]


@node
async def fetch_order(order_id: str) -> Order:
    return Order(order_id, 1500, ["book", "lamp"])


@node(retries=2, timeout="10s")
async def charge(order: Order) -> str:
    return f"charged {order.total} for {order.id}"


@node
async def notify(order: Order) -> str:
    return f"mailed {order.id}"


@node
async def reserve(item: str) -> str:
    return f"reserved {item}"


@flow
async def checkout(order_id: str) -> dict[str, object]:
    order = await fetch_order(order_id)
    if order.total > 1000:
        decision = await flow.wait("approval", timeout="2d")
        if not decision["approved"]:
            return {"status": "rejected"}
    await flow.sleep("1s")  # durable: no task, thread or memory held while it sleeps
    receipt, mail = await flow.gather(charge(order), notify(order))
    reserved = await flow.map(reserve, order.items)
    return {"status": "done", "receipt": receipt, "mail": mail, "reserved": reserved}


async def main(db: Path) -> None:
    rt = flowkit.Runtime(store=SQLiteStore(db), poll_interval=0.1)
    rt.events.subscribe(
        lambda e: print(f"  {e.type:<16} {e.node_id or ''}"),
        types={
            "workflow:start",
            "node:finish",
            "workflow:pause",
            "signal:receive",
            "timer:fire",
            "workflow:finish",
        },
    )
    result = await rt.run(checkout, order_id="A7")
    print(f"run {result.run_id} is {result.status}, waiting for 'approval'\n")
    async with rt:  # an open runtime fires the durable timer when it is due
        await rt.signal(result.run_id, "approval", {"approved": True})
        final = await rt.handle(result.run_id).result(timeout=30)
    print(f"\nrun {final.run_id} is {final.status}: {final.output}")


if __name__ == "__main__":
    # a directory of its own: demos run side by side (or by another flowkit version,
    # whose schema may differ) never share a file
    with tempfile.TemporaryDirectory(prefix="flowkit-demo-") as folder:
        anyio.run(main, Path(folder) / "runs.db")

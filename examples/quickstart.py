"""The README demo: a builder flow with a join, routing, a durable wait and a signal.

Run it with ``python examples/quickstart.py``.
"""

from __future__ import annotations

import anyio

import flowkit
from flowkit import Action, Flow


async def extract(order_id: str) -> dict[str, int]:
    return {"order": int(order_id[1:]), "items": 3}


async def price(order: dict[str, int]) -> int:
    return order["items"] * 400


async def tax(order: dict[str, int]) -> int:
    return order["items"] * 40


async def total(price: int, tax: int) -> Action:
    amount = price + tax
    return Action("review" if amount > 1000 else "auto", amount)


async def publish(amount: int) -> str:
    return f"charged {amount}"


checkout = (
    Flow("checkout")
    .node("extract", extract)
    .node("price", price)
    .node("tax", tax)
    .node("total", total, join="all", inputs={"price": "price", "tax": "tax"})
    .wait("approval")
    .node("publish", publish, join="any")
    .edge("extract", "price").edge("extract", "tax")
    .edge("price", "total").edge("tax", "total")
    .edge("total", "approval", action="review")
    .edge("total", "publish", action="auto")
    .edge("approval", "publish")
)


async def main() -> None:
    rt = flowkit.Runtime()
    rt.events.subscribe(lambda e: print(f"  {e.type:<16} {e.node_id or ''}"))
    result = await rt.run(checkout, order_id="A7")
    print(f"run {result.run_id[:8]} is {result.status}: waiting for 'approval'")
    result = await rt.signal(result.run_id, "approval", 1320)
    print(f"run {result.run_id[:8]} is {result.status}: {result.output}")


if __name__ == "__main__":
    anyio.run(main)

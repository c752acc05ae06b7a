"""The DESIGN §3.2 checkout flow, verbatim, with the nodes it needs (shared by tests)."""

from __future__ import annotations

import attrs

from flowkit import flow, node


class ShippingError(Exception):
    pass


@attrs.define
class Order:
    id: str
    total: int
    items: list[str]


@attrs.define
class Receipt:
    order_id: str
    amount: int


@node
async def fetch_order(order_id: str) -> Order:
    return Order(order_id, 1500, ["book", "pen"])


@node
async def refund(order: Order) -> Receipt:
    return Receipt(order.id, -order.total)


@node(retries=2)
async def charge(order: Order) -> Receipt:
    return Receipt(order.id, order.total)


@node
async def notify(order: Order) -> str:
    return f"notified {order.id}"


@node
async def reserve(item: str) -> str:
    return f"reserved {item}"


@node
async def ship(order: Order) -> str:
    if order.id.startswith("X"):
        raise ShippingError(f"no courier for {order.id}")
    return "shipped"


@node
async def flag(order: Order, reason: str) -> str:
    return f"flagged {order.id}: {reason}"


@flow
async def checkout(order_id: str) -> Receipt:
    order = await fetch_order(order_id)
    if order.total > 1000:
        decision = await flow.wait("approval", timeout="2d")
        if not decision["approved"]:
            return await refund(order)
    await flow.sleep("10m")
    receipt, _ = await flow.gather(charge(order), notify(order))
    for item in order.items:
        await reserve(item)
    try:
        await ship(order)
    except ShippingError as exc:
        await flag(order, str(exc))
    return receipt

"""The flow of ``python -m bench --only soak``, served by ``--app bench._soak_flows``.

A small, realistic order flow: a fetch, a short durable sleep, a gather of
two nodes (a fan-out and an all-join), a last node. Seven node executions
and one timer per run.
"""

from __future__ import annotations

from typing import Any

from flowkit import flow, node

SLEEP = "300ms"


@node
async def fetch_order(order_id: str) -> dict[str, Any]:
    return {"id": order_id, "total": 120, "items": ["book", "pen", "lamp"]}


@node
async def charge(order: dict[str, Any]) -> str:
    return f"charged {order['total']} for {order['id']}"


@node
async def reserve(items: list[str]) -> int:
    return len(items)


@node
async def receipt(charged: str, reserved: int) -> dict[str, Any]:
    return {"charged": charged, "reserved": reserved}


@flow(id="soak-order")
async def order(order_id: str) -> dict[str, Any]:
    placed = await fetch_order(order_id)
    await flow.sleep(SLEEP)
    charged, reserved = await flow.gather(charge(placed), reserve(placed["items"]))
    return await receipt(charged, reserved)

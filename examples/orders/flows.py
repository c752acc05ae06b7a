"""A checkout that can take days: approval, payment webhook, cooling-off sleep, compensation.

``checkout(order_id)`` fetches the order; orders over 1 000 wait (durably) for
a human ``approval`` signal. It reserves stock, then waits for the payment
provider's signed webhook ``POST /hooks/payment/{run_id}``. After a durable
cooling-off sleep it ships. If the payment was declined or the parcel cannot
ship, the ``except`` blocks compensate: the stock is released and a captured
payment refunded, so no order is left half-done.

Serve it with ``python -m flowkit.worker --app examples.orders.flows``.
"""

from __future__ import annotations

from typing import Any

from flowkit import flow, node

# Demo secret. In production read it from the environment:
# `secret=os.environ["PAYMENT_WEBHOOK_SECRET"]` (the flow stores only the variable's name).
PAYMENT_SECRET = "whsec_orders_demo"

ORDERS: dict[str, dict[str, Any]] = {
    "A-100": {"id": "A-100", "total": 250, "country": "NL", "items": ["book"]},
    "B-200": {"id": "B-200", "total": 1800, "country": "FR", "items": ["bike", "helmet"]},
    "C-300": {"id": "C-300", "total": 90, "country": "AQ", "items": ["scarf"]},
}


class PaymentDeclined(Exception):
    """The payment provider did not authorise the payment."""


class ShippingError(Exception):
    """No courier can take the parcel."""


@node
async def fetch_order(order_id: str) -> dict[str, Any]:
    return dict(ORDERS[order_id])


@node
async def reserve_stock(order: dict[str, Any]) -> str:
    return f"reservation-{order['id']}"


@node
async def release_stock(reservation: str) -> str:
    return f"released {reservation}"


@node(retries=2, timeout="30s")
async def capture_payment(order: dict[str, Any], payment: dict[str, Any]) -> str:
    if payment.get("status") != "authorized":
        raise PaymentDeclined(f"payment {payment.get('status', 'missing')} for {order['id']}")
    return f"charge-{order['id']}-{order['total']}"


@node
async def refund_payment(charge: str) -> str:
    return f"refunded {charge}"


@node
async def ship(order: dict[str, Any]) -> str:
    if order["country"] == "AQ":
        raise ShippingError(f"no courier delivers to {order['country']}")
    return f"track-{order['id']}"


@node
async def notify(order: dict[str, Any], message: str) -> str:
    return f"to customer of {order['id']}: {message}"


@flow
async def checkout(order_id: str, cooling_off: float = 1.0) -> dict[str, Any]:
    order = await fetch_order(order_id)
    if order["total"] > 1000:
        decision = await flow.wait("approval", timeout="2d")
        if not decision["approved"]:
            await notify(order, "order rejected")
            return {"order": order_id, "status": "rejected"}
    reservation = await reserve_stock(order)
    payment = await flow.webhook("/hooks/payment", secret=PAYMENT_SECRET, name="payment")
    charge = None
    try:
        charge = await capture_payment(order, payment)
        await flow.sleep(cooling_off)  # durable: the run holds no task while it waits
        tracking = await ship(order)
    except PaymentDeclined as exc:
        await release_stock(reservation)
        await notify(order, "payment declined")
        return {"order": order_id, "status": "payment-declined", "reason": str(exc)}
    except ShippingError as exc:
        await refund_payment(charge)
        await release_stock(reservation)
        await notify(order, "refunded: cannot ship")
        return {"order": order_id, "status": "refunded", "reason": str(exc)}
    await notify(order, f"shipped, tracking {tracking}")
    return {"order": order_id, "status": "shipped", "charge": charge, "tracking": tracking}


# What each demo order should end as, given the answers `__main__` (and the tests) give.
SCENARIOS: dict[str, dict[str, Any]] = {
    "A-100": {"approval": None, "payment": {"status": "authorized"}, "status": "shipped"},
    "B-200": {
        "approval": {"approved": True},
        "payment": {"status": "declined"},
        "status": "payment-declined",
    },
    "C-300": {"approval": None, "payment": {"status": "authorized"}, "status": "refunded"},
}

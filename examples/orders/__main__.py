"""``python -m examples.orders``: three checkouts in-memory, waits answered by this script.

A-100 ships; B-200 is approved but its payment is declined (stock released);
C-300 is paid but cannot ship (payment refunded, stock released).
"""

from __future__ import annotations

import anyio

import flowkit

from .flows import SCENARIOS, checkout


async def run_order(rt: flowkit.Runtime, order_id: str) -> flowkit.RunResult:
    answers = SCENARIOS[order_id]
    result = await rt.run(checkout, order_id=order_id, cooling_off=0.2)
    if "approval" in result.waiting_for:
        print(f"{order_id}: waiting for approval -> approving")
        result = await rt.signal(result.run_id, "approval", answers["approval"])
    print(f"{order_id}: waiting for {', '.join(result.waiting_for)} -> {answers['payment']}")
    # In production the payment provider POSTs to /hooks/payment/{run_id}
    # (python -m flowkit.worker --webhooks HOST:PORT); a signal is what it turns into.
    await rt.signal(result.run_id, "payment", answers["payment"])
    return await rt.handle(result.run_id).result(timeout=30)


async def main() -> dict[str, flowkit.RunResult]:
    results = {}
    async with flowkit.Runtime() as rt:  # an open runtime fires the durable sleep when due
        for order_id in SCENARIOS:
            results[order_id] = final = await run_order(rt, order_id)
            print(f"{order_id}: {final.status}: {final.output}\n")
    return results


if __name__ == "__main__":
    anyio.run(main)

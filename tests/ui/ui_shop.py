"""A shop's flows, and a SQLite store holding runs of them in every status.

The web console's tests (HTTP and browser) and its screenshots read this store:
:func:`populate` makes, in-process with the real SQLiteStore, a completed run, a
failed one (its node's error), one awaiting a signal, one running (started by a
client whose nodes no worker takes), a cancelled one, a parent awaiting its
child run, one whose output is a ``<script>`` element, and one with an output
too large to show whole.
"""

from __future__ import annotations

import attrs

import flowkit
from flowkit import flow, node
from flowkit.stores import SQLiteStore
from flowkit.transports import MemoryTransport

XSS = '<script>document.title = "pwned"</script><img src=x onerror=alert(1)>'
BIG_LINES = 400  # the big run's output, a line each: far over a page's preview


@node
async def reserve(order_id: str, items: int) -> dict[str, object]:
    return {"order": order_id, "items": items, "warehouse": "north"}


@node
async def charge(order_id: str, total: int) -> str:
    if total < 0:
        raise ValueError(f"card declined for {order_id}: total {total} is below zero")
    return f"receipt-{order_id}"


@node
async def ship(order_id: str) -> str:
    return f"parcel-{order_id}"


@node
async def shout(text: str) -> str:
    return text


@node
async def inventory(count: int) -> list[str]:
    return [f"sku-{i:05d}: {'widget ' * 8}" for i in range(count)]


@flow
async def checkout(order_id: str, total: int) -> str:
    stock = await reserve(order_id, 2)
    if total > 1000:
        approved = await flow.wait("approval", timeout="1h")
        if not approved:
            return f"rejected {stock['order']}"
    receipt = await charge(order_id, total)
    await ship(order_id)
    return receipt


@flow
async def echo(text: str) -> str:
    return await shout(text)


@flow
async def report(count: int) -> list[str]:
    return await inventory(count)


@flow
async def bulk_order(order_id: str) -> str:
    return await checkout(order_id=order_id, total=5000)


FLOWS = [checkout, echo, report, bulk_order]


@attrs.frozen
class Runs:
    """The run ids :func:`populate` made, by what they show."""

    completed: str
    failed: str
    awaiting: str
    running: str
    cancelled: str
    parent: str
    xss: str
    big: str


async def populate(path: str) -> Runs:
    """Runs in every status in the SQLite file ``path``."""
    store = SQLiteStore(path)
    try:
        async with flowkit.Runtime(store=store) as rt:
            completed = await rt.run(checkout, order_id="A-100", total=120, tags={"customer": "c1"})
            failed = await rt.start(checkout, order_id="A-101", total=-5, tags={"customer": "c2"})
            await failed.result()  # the failed run does not raise from result()
            awaiting = await rt.start(
                checkout, order_id="A-102", total=2500, tags={"customer": "c1"}
            )
            cancelled = await rt.start(checkout, order_id="A-103", total=9000)
            await rt.cancel(cancelled.run_id)
            parent = await rt.start(bulk_order, order_id="B-7", tags={"channel": "b2b"})
            xss = await rt.run(echo, text=XSS, tags={"note": XSS})
            big = await rt.run(report, count=BIG_LINES)
        client = flowkit.Client(MemoryTransport(), store, flows=FLOWS)
        running = await client.start(checkout, order_id="A-104", total=80)
    finally:
        await store.close()
    return Runs(
        completed=completed.run_id,
        failed=failed.run_id,
        awaiting=awaiting.run_id,
        running=running.run_id,
        cancelled=cancelled.run_id,
        parent=parent.run_id,
        xss=xss.run_id,
        big=big.run_id,
    )

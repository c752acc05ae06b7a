"""Versions of two flows as a deploy changes them, for tests/test_patching.py and
tests/test_replay.py (module level: a worker and ``--app`` import flows from a module).

``fraud_old`` is the code before a deploy, ``fraud_new`` the same flow with a patch
after its wait, ``fraud_done`` after the patch is deprecated. ``orders`` is recorded,
then replayed against ``orders_audit`` (a node added in the middle), ``orders_cond``
(a condition changed) and ``orders_renamed`` (a wait renamed).
"""

from __future__ import annotations

from flowkit import flow, node


@node
async def old_check(order: str) -> str:
    return f"old:{order}"


@node
async def new_check(order: str) -> str:
    return f"new:{order}"


@flow(id="fraud")
async def fraud_old(order: str) -> str:
    decision = await flow.wait("approval")
    return await old_check(f"{order}/{decision}")


@flow(id="fraud")
async def fraud_new(order: str) -> str:
    decision = await flow.wait("approval")
    if flow.patched("fraud-check-v2"):
        return await new_check(f"{order}/{decision}")
    else:
        return await old_check(f"{order}/{decision}")


@flow(id="fraud")
async def fraud_done(order: str) -> str:
    flow.deprecate_patch("fraud-check-v2")
    decision = await flow.wait("approval")
    return await new_check(f"{order}/{decision}")


@node
async def fetch(n: int) -> int:
    return n + 1


@node
async def charge(x: int) -> int:
    return x * 10


@node
async def audit(x: int) -> int:
    return x


@node
async def ship(x: int) -> str:
    return f"shipped {x}"


@flow(id="orders")
async def orders(n: int) -> str:
    x = await fetch(n)
    if x % 2 == 0:
        x = await charge(x)
    if n % 3 == 0:
        await flow.wait("approval")
    return await ship(x)


@flow(id="orders")
async def orders_audit(n: int) -> str:
    x = await fetch(n)
    if x % 2 == 0:
        x = await charge(x)
        x = await audit(x)
    if n % 3 == 0:
        await flow.wait("approval")
    return await ship(x)


@flow(id="orders")
async def orders_cond(n: int) -> str:
    x = await fetch(n)
    if x % 4 == 0:
        x = await charge(x)
    if n % 3 == 0:
        await flow.wait("approval")
    return await ship(x)


@flow(id="orders")
async def orders_renamed(n: int) -> str:
    x = await fetch(n)
    if x % 2 == 0:
        x = await charge(x)
    if n % 3 == 0:
        await flow.wait("approval-v2")
    return await ship(x)


@node
async def price(x: int) -> int:
    return x + 100


@node
async def discount(x: int) -> int:
    return x - 1


@flow(id="pricing")
async def pricing_old(x: int) -> int:
    return await price(x)


@flow(id="pricing")
async def pricing_new(x: int) -> int:
    if flow.patched("discount"):
        x = await discount(x)
    return await price(x)

"""Versions of one flow as deploys change it, for tests/test_diff.py, test_migrate.py and
test_cli_diff.py (module level: workers and ``--app`` import flows from a module).

``orders_v1`` is in production; each other version makes one realistic change to it:
``orders_added`` adds a node in the middle (after the wait), ``orders_removed`` removes
the audit branch, ``orders_cond`` changes the branch's condition, ``orders_renamed``
renames the wait, ``orders_patched`` adds a patch, ``orders_reviewed`` adds a wait for
the same signal before the old one (whose node id becomes ``approval#2``). ``naps`` parks
its runs in a sleep (gone in ``naps_v2``), ``batch`` in a child run of ``orders_v1`` (gone
in ``batch_v2``).
"""

from __future__ import annotations

from flowkit import flow, node


@node
async def fetch(n: int) -> int:
    return n + 1


@node
async def audit(x: int) -> int:
    return x * 10


@node
async def reserve(x: int) -> int:
    return x + 1000


@node
async def charge(x: int) -> str:
    return f"charged {x}"


@flow(id="orders", version=1)
async def orders_v1(n: int) -> str:
    x = await fetch(n)
    if n > 10:
        x = await audit(x)
    approval = await flow.wait("approval")
    return await charge(x) + f" by {approval}"


@flow(id="orders", version=2)
async def orders_added(n: int) -> str:
    x = await fetch(n)
    if n > 10:
        x = await audit(x)
    approval = await flow.wait("approval")
    x = await reserve(x)
    return await charge(x) + f" by {approval}"


@flow(id="orders", version=3)
async def orders_removed(n: int) -> str:
    x = await fetch(n)
    approval = await flow.wait("approval")
    return await charge(x) + f" by {approval}"


@flow(id="orders", version=4)
async def orders_cond(n: int) -> str:
    x = await fetch(n)
    if n > 100:
        x = await audit(x)
    approval = await flow.wait("approval")
    return await charge(x) + f" by {approval}"


@flow(id="orders", version=5)
async def orders_renamed(n: int) -> str:
    x = await fetch(n)
    if n > 10:
        x = await audit(x)
    approval = await flow.wait("manager-approval")
    return await charge(x) + f" by {approval}"


@flow(id="orders", version=6)
async def orders_patched(n: int) -> str:
    x = await fetch(n)
    if n > 10:
        x = await audit(x)
    approval = await flow.wait("approval")
    if flow.patched("reserve-first"):
        x = await reserve(x)
    return await charge(x) + f" by {approval}"


@flow(id="orders", version=7)
async def orders_reviewed(n: int) -> str:
    x = await fetch(n)
    await flow.wait("approval")  # new: the amount is approved first (this wait is "approval")
    if n > 10:
        x = await audit(x)
    approval = await flow.wait("approval")  # the old wait: now node "approval#2"
    return await charge(x) + f" by {approval}"


@flow(id="naps", version=1)
async def naps_v1(n: int) -> int:
    await flow.sleep(3600)
    return await fetch(n)


@flow(id="naps", version=2)
async def naps_v2(n: int) -> int:  # the sleep is gone
    return await fetch(n)


@flow(id="batch", version=1)
async def batch_v1(n: int) -> str:
    return await orders_v1(n)


@flow(id="batch", version=2)
async def batch_v2(n: int) -> str:  # the approval is asked here, no child run
    approval = await flow.wait("approval")
    return f"{n} by {approval}"

"""Saga: transfer money in steps; when a step fails, undo the steps done, newest first.

Mirrors Temporal's ``saga`` sample (in its Go samples: a money transfer whose
compensations run in reverse when a later step fails). In flowkit the flow records
which steps are done in a flow variable and an ``except`` block walks it backwards.
The variable is part of the run's state, so the compensation runs on whichever
worker carries the run on after a crash. Node calls are written out (no list of
callables): the flow's code stays plain, compiled Python. The bank is a stand-in:
deposits to ``closed`` accounts fail, and so does telling the holder of an
``unreachable`` one (after the deposit).
"""

from __future__ import annotations

from typing import Any

from flowkit import flow, node
from flowkit.testing import simulate

from ._support import RESULT_TIMEOUT, Api, output


class AccountClosed(Exception):
    """The bank refuses to credit a closed account."""


@node
async def withdraw(account: str, amount: int) -> str:
    return f"withdrew {amount} from {account}"


@node
async def undo_withdraw(account: str, amount: int) -> str:
    return f"returned {amount} to {account}"


@node(never_retry=(AccountClosed,))
async def deposit(account: str, amount: int) -> str:
    if account.startswith("closed"):
        raise AccountClosed(f"account {account} is closed")
    return f"deposited {amount} to {account}"


@node
async def undo_deposit(account: str, amount: int) -> str:
    return f"took back {amount} from {account}"


class Unreachable(Exception):
    """The account holder cannot be told: the bank's rule is to undo the transfer."""


@node(never_retry=(Unreachable,))
async def notify(account: str, message: str) -> str:
    if account.startswith("unreachable"):
        raise Unreachable(f"cannot reach the holder of {account}")
    return f"told {account}: {message}"


@flow
async def transfer(source: str, recipient: str, amount: int) -> dict[str, Any]:
    done: list[str] = []
    undone: list[str] = []
    try:
        await withdraw(source, amount)
        done.append("withdraw")
        await deposit(recipient, amount)
        done.append("deposit")
        await notify(recipient, f"you received {amount}")
    except Exception as exc:
        for step in reversed(done):
            if step == "deposit":
                undone.append(await undo_deposit(recipient, amount))
            else:
                undone.append(await undo_withdraw(source, amount))
        return {"status": "rolled back", "reason": str(exc), "undone": undone}
    return {"status": "transferred", "undone": undone}


FLOWS = [transfer]
RECIPIENTS = {"ok": "bob", "closed": "closed-1", "unreachable": "unreachable-2"}


async def demo(api: Api) -> dict[str, Any]:
    """A transfer that goes through; one whose deposit fails (the withdrawal is undone);
    one that fails after the deposit (both are undone, the deposit first)."""
    handles = {
        case: await api.start(
            transfer, run_id=f"saga-{case}", source="alice", recipient=recipient, amount=10
        )
        for case, recipient in RECIPIENTS.items()
    }
    return {case: output(await h.result(timeout=RESULT_TIMEOUT)) for case, h in handles.items()}


def simulated() -> dict[str, Any]:
    return {
        case: simulate(transfer, source="alice", recipient=recipient, amount=10).output
        for case, recipient in RECIPIENTS.items()
    }


EXPECTED = {
    "ok": {"status": "transferred", "undone": []},
    "closed": {
        "status": "rolled back",
        "reason": "account closed-1 is closed",
        "undone": ["returned 10 to alice"],
    },
    "unreachable": {
        "status": "rolled back",
        "reason": "cannot reach the holder of unreachable-2",
        "undone": ["took back 10 from unreachable-2", "returned 10 to alice"],
    },
}

"""Claiming from a table-backed queue (SQLite, PostgreSQL) without losing the claim."""

from __future__ import annotations

from contextlib import suppress
from typing import TYPE_CHECKING, TypeVar

import anyio
import anyio.lowlevel

from .._errors import TransportError

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable

    from ._protocol import Delivery

D = TypeVar("D", bound="Delivery")


async def claim_or_hand_back(claim: Callable[[], Awaitable[D | None]]) -> D | None:
    """``claim()``, shielded from cancellation; if the receiver was cancelled meanwhile
    (a draining worker leaves ``receive()``), the claimed delivery is handed back at once.

    A claim is a committed write: cancelled mid-way it would hold the message, unseen
    by every other consumer, until its visibility timeout ran out.
    """
    with anyio.CancelScope(shield=True):
        delivery = await claim()
    if delivery is not None:
        try:
            await anyio.lowlevel.checkpoint_if_cancelled()
        except BaseException:
            # closed meanwhile (TransportError): its visibility timeout hands it back
            with anyio.CancelScope(shield=True), suppress(TransportError):
                await delivery.nack()
            raise
    return delivery

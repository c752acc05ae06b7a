"""The single-holder slot calls of a store, as its many-holder calls with one holder."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ._protocol import Store


class OneHolderSlots:
    """Mixed into a store whose ``acquire_slots`` and ``release_slots`` do the work:
    its ``acquire_slot`` and ``release_slot`` are those with ``[holder]``."""

    async def acquire_slot(
        self: Store,
        limit_id: str,
        key: str,
        holder: str,
        *,
        max: int,
        now: float,
        expires_at: float,
    ) -> bool:
        taken = await self.acquire_slots(
            limit_id, key, [holder], max=max, now=now, expires_at=expires_at
        )
        return taken == 1

    async def release_slot(self: Store, limit_id: str, key: str, holder: str) -> None:
        await self.release_slots(limit_id, key, [holder])

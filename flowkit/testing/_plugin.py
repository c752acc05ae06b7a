"""pytest plugin (registered by entry point): flowkit fixtures."""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest

from ..engine._runtime import Runtime

if TYPE_CHECKING:
    from collections.abc import AsyncIterator


@pytest.fixture
async def flowkit_runtime() -> AsyncIterator[Runtime]:
    """An open :class:`flowkit.Runtime` (timers fire while the test runs)."""
    async with Runtime() as rt:
        yield rt

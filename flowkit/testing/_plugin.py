"""pytest plugin (registered by entry point): flowkit fixtures."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from ..engine._runtime import Runtime


@pytest.fixture
async def flowkit_runtime() -> AsyncIterator[Runtime]:
    """An open :class:`flowkit.Runtime` (timers fire while the test runs)."""
    async with Runtime() as rt:
        yield rt

"""pytest plugin (registered by entry point): flowkit fixtures and ``--flowkit-seed``."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import pytest

from ..runtime._runtime import Runtime

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Callable

    from ._model import Simulation


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("flowkit")
    group.addoption(
        "--flowkit-seed",
        type=int,
        default=None,
        help="replay simulations with this seed (as printed by a failing fault simulation)",
    )


@pytest.fixture
async def flowkit_runtime() -> AsyncIterator[Runtime]:
    """An open :class:`flowkit.Runtime` (durable timers fire while the test runs)."""
    async with Runtime() as rt:
        yield rt


@pytest.fixture
def simulator(request: pytest.FixtureRequest) -> Callable[..., Simulation]:
    """``simulator(flow, **options)``: :func:`flowkit.testing.simulate`, honouring
    ``--flowkit-seed`` (which overrides the ``seed`` a test passes)."""
    from ._simulate import simulate

    forced = request.config.getoption("--flowkit-seed")

    def run(target: Any, **options: Any) -> Simulation:
        if forced is not None:
            options["seed"] = forced
        outcome: Simulation = simulate(target, **options)
        return outcome

    return run

"""Shared fixtures: every async test runs on asyncio and on trio.

Property tests that take their example count from the profile run 300
examples; ``pytest --flowkit-long`` runs 5 000 of each.
"""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, settings

settings.register_profile(
    "flowkit-ci", max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)
settings.register_profile("flowkit-long", settings.get_profile("flowkit-ci"), max_examples=5000)


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--flowkit-long",
        action="store_true",
        help="run the property tests that use the flowkit profiles with 5 000 examples",
    )


def pytest_configure(config: pytest.Config) -> None:
    settings.load_profile("flowkit-long" if config.getoption("--flowkit-long") else "flowkit-ci")


@pytest.fixture(params=["asyncio", "trio"])
def anyio_backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)

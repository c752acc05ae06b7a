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


PROPERTY_TEST_TIMEOUT = 600
"""Seconds before a property test counts as hung: it runs hundreds of examples, where
the default timeout (60 s) is one test's. A simulation property test took 40-75 s on a
machine busy with two other test runs."""


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        test = getattr(item, "obj", None)
        if (
            getattr(test, "is_hypothesis_test", False)
            and item.get_closest_marker("timeout") is None
        ):
            item.add_marker(pytest.mark.timeout(PROPERTY_TEST_TIMEOUT))


@pytest.fixture(params=["asyncio", "trio"])
def anyio_backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)

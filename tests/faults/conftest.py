"""Fixtures of the fault tests: a private broker per module, a PostgreSQL schema per test,
worker processes killed when the test ends (their logs attached to a failure report).

The fault tests run on asyncio: aiokafka and psycopg's async connections are asyncio-only.
"""

from __future__ import annotations

import uuid
from typing import TYPE_CHECKING, Any

import pytest

from .broker import RestartableTansu, restartable_tansu
from .flows_faults import DSN, create_executions
from .workers import WorkerPool

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator
    from pathlib import Path

_POOLS = pytest.StashKey[list[WorkerPool]]()


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture(scope="module")
def tansu_broker() -> Iterator[RestartableTansu]:
    """This module's own tansu: tests may kill and restart it."""
    with restartable_tansu() as broker:
        yield broker


@pytest.fixture
def running_tansu(tansu_broker: RestartableTansu) -> RestartableTansu:
    """The module's broker, started again if an earlier test left it dead."""
    if tansu_broker.process is None or tansu_broker.process.poll() is not None:
        tansu_broker.start()
    return tansu_broker


@pytest.fixture
def pg_schema() -> Iterator[str]:
    """A PostgreSQL schema of this test's own (store tables, executions), dropped after."""
    import psycopg

    schema = f"fk_faults_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(DSN, autocommit=True) as conn:
        conn.execute(f"CREATE SCHEMA {schema}")
    create_executions(schema)
    try:
        yield schema
    finally:
        with psycopg.connect(DSN, autocommit=True) as conn:
            conn.execute(f"DROP SCHEMA IF EXISTS {schema} CASCADE")


@pytest.fixture
def worker_pool(
    request: pytest.FixtureRequest, tmp_path: Path
) -> Iterator[Callable[[list[str], dict[str, str]], WorkerPool]]:
    """``worker_pool(args, env)``: a :class:`WorkerPool`, its processes killed after the test."""
    pools: list[WorkerPool] = []
    request.node.stash[_POOLS] = pools

    def make(args: list[str], env: dict[str, str]) -> WorkerPool:
        pools.append(WorkerPool(tmp_path, args, env))
        return pools[-1]

    try:
        yield make
    finally:
        for pool in pools:
            pool.kill_all()


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[Any]) -> Any:
    outcome = yield
    report = outcome.get_result()
    pools = item.stash.get(_POOLS, None)
    if pools and report.failed:
        report.sections.append(("worker logs", "\n".join(pool.report() for pool in pools)))

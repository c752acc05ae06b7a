"""Starting a run by its flow's id: ``start("checkout", ...)``, ``run("checkout", ...)``.

The name is the flow's id (as ``flowkit flows list`` shows it), looked up among
the flows the runtime or client knows; its newest version is started. An
unknown name is a ``ConfigurationError`` that lists the known flows. On the
runtime (no store, MemoryStore, SQLiteStore) and through a client with an
in-process worker (memory and SQLite queues with their stores), asyncio and trio.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import anyio
import pytest

import flowkit
from flowkit import ConfigurationError, InvalidInputs, RunStatus, flow, node
from flowkit.stores import MemoryStore, SQLiteStore
from flowkit.stores import from_url as store_from_url
from flowkit.transports import MemoryTransport
from flowkit.transports import from_url as transport_from_url

if TYPE_CHECKING:
    from collections.abc import AsyncIterator
    from pathlib import Path

pytestmark = pytest.mark.anyio

BOUND = 30  # seconds a test waits for its runs (pytest's own timeout is 60)


@node
async def add_one(x: int) -> int:
    return x + 1


@flow
async def checkout(x: int) -> int:
    return await add_one(x)


@flow
async def gated() -> Any:
    return await flow.wait("go")


@flow(id="greet", version=1)
async def greet_v1(who: str) -> str:
    return f"hello {who}"


@flow(id="greet", version=2)
async def greet_v2(who: str) -> str:
    return f"hi {who}"


FLOWS = [checkout, gated, greet_v2, greet_v1]


@pytest.fixture(params=["none", "memory", "sqlite"])
async def runtime(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Any]:
    store: Any = None
    if request.param == "memory":
        store = MemoryStore()
    elif request.param == "sqlite":
        store = SQLiteStore(tmp_path / "runs.db")
    try:
        async with flowkit.Runtime(store=store, flows=FLOWS) as rt:
            yield rt
    finally:
        if store is not None:
            await store.close()


class TestOnTheRuntime:
    """Runtime.run and Runtime.start take the id of a flow the runtime knows."""

    async def test_run_and_start_by_name(self, runtime: Any) -> None:
        done = await runtime.run("checkout", x=1)
        assert (RunStatus.COMPLETED, 2, "checkout") == (done.status, done.output, done.blueprint_id)
        handle = await runtime.start("checkout", run_id="n1", x=2)
        assert 3 == (await handle.result(timeout=BOUND)).output

    async def test_the_newest_version_is_started(self, runtime: Any) -> None:
        assert "hi ann" == (await runtime.run("greet", who="ann")).output

    async def test_an_unknown_name_lists_the_known_flows(self, runtime: Any) -> None:
        with pytest.raises(ConfigurationError, match=r"'chekout'.*checkout v1, gated v1, greet v1"):
            await runtime.run("chekout", x=1)
        with pytest.raises(ConfigurationError, match="Runtime\\(flows="):
            await runtime.start("chekout", x=1)

    async def test_inputs_are_checked_as_for_the_flow_itself(self, runtime: Any) -> None:
        with pytest.raises(InvalidInputs, match="x"):
            await runtime.start("checkout", y=1)


async def test_a_flow_run_before_is_known_by_name() -> None:
    rt = flowkit.Runtime()
    paused = await rt.run(gated)
    again = await rt.run("gated")
    assert (RunStatus.AWAITING, RunStatus.AWAITING) == (paused.status, again.status)
    with pytest.raises(ConfigurationError, match="known flows: gated v1"):
        await rt.run("checkout", x=1)


@pytest.fixture(params=["memory", "sqlite"])
async def client(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Any]:
    if request.param == "memory":
        transport: Any = MemoryTransport()
        store: Any = MemoryStore()
    else:
        transport = transport_from_url(f"sqlite:///{tmp_path / 'queue.db'}")
        store = store_from_url(f"sqlite:///{tmp_path / 'runs.db'}")
    worker = flowkit.Worker(FLOWS, transport, store, poll_interval=0.05)
    client = flowkit.Client(transport, store, flows=FLOWS, max_poll_interval=0.2)
    try:
        with anyio.fail_after(BOUND):
            async with anyio.create_task_group() as tg:
                await tg.start(worker.run)
                yield client
                tg.cancel_scope.cancel()
    finally:
        await transport.close()
        await store.close()


class TestThroughAClient:
    """Client.run and Client.start take the id of a flow the client knows."""

    async def test_run_and_start_by_name(self, client: Any) -> None:
        done = await client.run("checkout", x=1, timeout=BOUND)
        assert (RunStatus.COMPLETED, 2) == (done.status, done.output)
        handle = await client.start("greet", run_id="n2", who="bo", tags={"via": "name"})
        assert "hi bo" == (await handle.result(timeout=BOUND)).output
        assert ["n2"] == [run.run_id for run in (await client.list_runs(tags={"via": "name"})).runs]

    async def test_an_unknown_name_lists_the_known_flows(self, client: Any) -> None:
        with pytest.raises(ConfigurationError, match=r"known flows: checkout v1.*flows=\[\.\.\.\]"):
            await client.start("workflow")
        with pytest.raises(ConfigurationError, match="'workflow'"):
            await client.run("workflow", timeout=BOUND)

    async def test_inputs_are_checked_as_for_the_flow_itself(self, client: Any) -> None:
        with pytest.raises(InvalidInputs, match="x"):
            await client.start("checkout")


async def test_a_client_without_the_flow_says_how_to_register_it() -> None:
    client = flowkit.Client(MemoryTransport(), MemoryStore())
    with pytest.raises(ConfigurationError, match=r"known flows: none.*--app"):
        await client.start("checkout", x=1)

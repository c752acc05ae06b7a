"""A process asked about a stored run of a flow it was not given says how to give it one.

A second process (a Runtime or a Client made without ``flows=``) that signals a
stored run is told which flow started it and the exact constructor argument
that registers it, not only that it knows nothing.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import pytest

import flowkit
from flowkit import Flow, ResumeError
from flowkit.stores import SQLiteStore
from flowkit.stores import from_url as store_from_url
from flowkit.transports import from_url as transport_from_url

if TYPE_CHECKING:
    from pathlib import Path

pytestmark = pytest.mark.anyio


@flowkit.node
async def ship(answer: Any) -> Any:
    return answer


@flowkit.flow
async def checkout(order: str) -> Any:
    answer = await flowkit.flow.wait("approval")
    return await ship(answer)


async def test_a_runtime_without_the_flow_says_how_to_register_it(tmp_path: Path) -> None:
    path = str(tmp_path / "runs.db")
    first = SQLiteStore(path)
    run_id = (await flowkit.Runtime(store=first).run(checkout, order="A1")).run_id
    await first.close()
    second = SQLiteStore(path)
    try:
        with pytest.raises(ResumeError) as raised:
            await flowkit.Runtime(store=second).signal(run_id, "approval", True)
    finally:
        await second.close()
    message = str(raised.value)
    assert f"run {run_id!r} was started by flow 'checkout'" in message
    assert "(it knows: nothing)" in message
    assert "Runtime(store=..., flows=[checkout])" in message
    assert "Client(transport, store, flows=[checkout])" in message


async def test_a_client_without_the_flow_says_how_to_register_it(tmp_path: Path) -> None:
    transport = transport_from_url(f"sqlite:///{tmp_path / 'queue.db'}")
    store = store_from_url(f"sqlite:///{tmp_path / 'runs.db'}")
    try:
        handle = await flowkit.Client(transport, store, flows=[checkout]).start(
            checkout, order="A1"
        )
        with pytest.raises(ResumeError) as raised:
            await flowkit.Client(transport, store).signal(handle.run_id, "approval", True)
    finally:
        await transport.close()
        await store.close()
    assert "Client(transport, store, flows=[checkout])" in str(raised.value)
    assert "Worker([checkout], transport, store)" in str(raised.value)


async def test_a_flow_named_unlike_a_variable_gets_a_placeholder(tmp_path: Path) -> None:
    path = str(tmp_path / "runs.db")
    flow = Flow("hand-off").wait("approval").node("ship", ship).edge("approval", "ship")
    first = SQLiteStore(path)
    run_id = (await flowkit.Runtime(store=first).run(flow)).run_id
    await first.close()
    second = SQLiteStore(path)
    try:
        with pytest.raises(ResumeError, match=r"flows=\[your_flow\]") as raised:
            await flowkit.Runtime(store=second, flows=[checkout]).signal(run_id, "approval", 1)
    finally:
        await second.close()
    assert "started by flow 'hand-off'" in str(raised.value)
    assert "(it knows: checkout v1)" in str(raised.value)


async def test_another_definition_of_the_flow_says_to_keep_the_old_one(tmp_path: Path) -> None:
    path = str(tmp_path / "runs.db")
    old = Flow("review").wait("approval").node("ship", ship).edge("approval", "ship")
    first = SQLiteStore(path)
    run_id = (await flowkit.Runtime(store=first).run(old)).run_id
    await first.close()
    new = Flow("review").wait("approval").node("ship", ship, retries=2).edge("approval", "ship")
    second = SQLiteStore(path)
    try:
        with pytest.raises(ResumeError, match="a different definition of 'review'") as raised:
            await flowkit.Runtime(store=second, flows=[new]).signal(run_id, "approval", 1)
    finally:
        await second.close()
    assert "@flow(version=...)" in str(raised.value)

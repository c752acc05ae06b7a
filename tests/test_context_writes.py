"""A node that changes a value of the run's state in place writes it like any other write.

``ctx.state["progress"]["step"] = 2`` used to change the in-memory copy only:
with a store the write was lost, and a failed node left it half-applied.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import pytest

import flowkit
from flowkit import Flow, RunStatus, Runtime
from flowkit.stores import MemoryStore, SQLiteStore

if TYPE_CHECKING:
    from pathlib import Path

pytestmark = pytest.mark.anyio


async def begin() -> None:
    flowkit.context().state["progress"] = {"step": 1, "seen": ["begin"]}


async def advance(_: Any) -> None:
    progress = flowkit.context().state["progress"]
    progress["step"] = 2
    progress["seen"].append("advance")


async def advance_then_fail(_: Any) -> None:
    await advance(None)
    raise ValueError("after changing progress")


async def report(_: Any) -> dict[str, Any]:
    return dict(flowkit.context().state["progress"])


def _flow(middle: Any) -> Flow:
    return (
        Flow("progress")
        .node("begin", begin)
        .node("advance", middle)
        .node("report", report)
        .edge("begin", "advance")
        .edge("advance", "report")
    )


@pytest.fixture(params=["none", "memory", "sqlite"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Any:
    return {"none": None, "memory": MemoryStore(), "sqlite": SQLiteStore(tmp_path / "r.db")}[
        request.param
    ]


class TestInPlaceChanges:
    """In-place changes reach the run (and its store) when the node completes, and only then."""

    async def test_an_in_place_change_is_written(self, store: Any) -> None:
        flow = _flow(advance)
        result = await Runtime(store=store, flows=[flow]).run(flow)
        expected = {"step": 2, "seen": ["begin", "advance"]}
        assert (RunStatus.COMPLETED, expected) == (result.status, result.output)
        if store is not None:
            loaded = await store.load(result.run_id)
            assert expected == loaded[0].context["progress"]

    async def test_a_failed_node_leaves_no_in_place_change(self, store: Any) -> None:
        flow = _flow(advance_then_fail)
        rt = Runtime(store=store, flows=[flow])
        result = await rt.run(flow)
        assert RunStatus.FAILED == result.status
        assert {"step": 1, "seen": ["begin"]} == result.state["progress"]

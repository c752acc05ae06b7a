"""Run ids: time-ordered UUIDv7 hex, made where the caller chose none."""

from __future__ import annotations

import time
import uuid

import pytest

import flowkit
from flowkit._ids import new_run_id
from flowkit.core._state import RunState

pytestmark = pytest.mark.anyio


async def one() -> int:
    return 1


def test_a_new_run_id_is_uuid7_hex_stamped_with_the_time() -> None:
    before = time.time_ns() // 1_000_000
    ids = [new_run_id() for _ in range(1000)]
    after = time.time_ns() // 1_000_000
    assert len(set(ids)) == len(ids)
    for run_id in ids:
        parsed = uuid.UUID(run_id)
        assert run_id == parsed.hex  # 32 lowercase hex digits
        assert parsed.version == 7
        assert parsed.variant == uuid.RFC_4122
        assert before <= int(run_id[:12], 16) <= after


def test_run_ids_sort_by_their_time() -> None:
    earlier, later = new_run_id(), new_run_id()
    assert earlier[:12] <= later[:12]


async def test_a_runtime_names_runs_with_new_ids_and_keeps_chosen_ones() -> None:
    flow = flowkit.Flow("ids").node("one", one)
    rt = flowkit.Runtime()
    made = await rt.run(flow)
    assert uuid.UUID(made.run_id).version == 7
    chosen = await rt.run(flow, run_id="order-42")
    assert chosen.run_id == "order-42"
    assert (await rt.result("order-42")).output == 1


def test_a_state_makes_its_sections_when_used_and_snapshots_only_those_in_use() -> None:
    state = RunState("r")
    assert state.sections["timers"] == {}  # made on first use
    state.put("outputs", "a", 1)
    state.put("header", "status", "running")
    assert state.to_dict() == {
        "run_id": "r",
        "sections": {"header": {"status": "running"}, "outputs": {"a": 1}},
    }
    assert list(state.to_dict()["sections"]) == ["header", "outputs"]  # in the usual order
    assert RunState.from_dict(state.to_dict()).to_dict() == state.to_dict()

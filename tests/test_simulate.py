"""flowkit.testing.simulate: virtual time, mocks, scripted signals, seeded faults."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

import flowkit
from flowkit import Flow, RunStatus
from flowkit.stores import MemoryStore
from flowkit.testing import Faults, SimulationError, capture_events, simulate, strategies


async def start(n: int) -> int:
    return n


async def inc(x: int) -> int:
    return x + 1


async def double(x: int) -> int:
    return x * 2


async def add(values: dict[str, int]) -> int:
    return sum(values.values())


async def total(values: list[int]) -> int:
    return sum(values)


def pipeline() -> Flow:
    """start -> (a, b) -> join -> sleep a year -> wait a day -> batch -> total."""
    return (
        Flow("pipeline")
        .node("start", start)
        .node("a", inc)
        .node("b", double)
        .node("join", add, join="all")
        .sleep("nap", duration="365d")
        .wait("approval", timeout="1d")
        .batch("each", double, items="$input.items", concurrency=2)
        .node("total", total)
        .edge("start", "a")
        .edge("start", "b")
        .edge("a", "join")
        .edge("b", "join")
        .edge("join", "nap")
        .edge("nap", "approval")
        .edge("approval", "each")
        .edge("each", "total")
    )


class TestVirtualTime:
    """Sleeps and wait timeouts advance a virtual clock instantly."""

    def test_year_long_sleep_and_day_long_wait(self) -> None:
        flow = Flow("slow").sleep("year", duration="365d").wait("day", timeout="1d")
        flow.node("after", start).edge("year", "day").edge("day", "after")
        sim = simulate(flow, n=1)
        assert RunStatus.FAILED == sim.status
        assert isinstance(sim.error, flowkit.WaitTimeout)
        assert timedelta(days=366) <= sim.elapsed

    def test_outputs_and_path(self) -> None:
        sim = simulate(pipeline(), n=3, items=[1, 2, 3], signals={"approval": "ok"})
        assert (RunStatus.COMPLETED, 12) == (sim.status, sim.output)
        assert ["start", "a", "b", "join", "nap", "approval", "each", "total"] == sim.visited
        assert timedelta(days=365) == sim.elapsed

    def test_trace_has_virtual_timestamps(self) -> None:
        sim = simulate(
            pipeline(), n=3, items=[1], signals={"approval": "ok"}, start="2030-01-01T00:00:00Z"
        )
        first, last = sim.trace[0], sim.trace[-1]
        assert 2030 == first.started.year
        assert timedelta(days=365) == last.started - first.started


class TestScript:
    """Mocks replace nodes; signals answer waits; a missing answer is a clear failure."""

    def test_mock_by_reference_and_calls(self) -> None:
        sim = simulate(
            pipeline(), n=3, items=[5], signals={"approval": "ok"}, mocks={double: lambda x: -x}
        )
        assert -5 == sim.output  # the batch item went through the mock
        assert 2 == len(sim.calls(double))  # node b and one batch item
        assert (3,) == sim.calls("a")[0].args

    def test_mock_by_node_id(self) -> None:
        flow = Flow("ab").node("start", start).node("a", inc).node("b", inc)
        flow.edge("start", "a").edge("a", "b")
        sim = simulate(flow, n=3, mocks={"a": lambda x: 100})
        assert 101 == sim.output  # a mocked, b (same function) not

    def test_signal_callable_and_list(self) -> None:
        flow = Flow("twice").wait("w1", name="go").wait("w2", name="go").node("t", start)
        flow.edge("w1", "w2").edge("w2", "t")
        seen: list[dict[str, Any]] = []

        def answer(state: dict[str, Any]) -> int:
            seen.append(state)
            return 5

        sim = simulate(flow.node("echo", inc).edge("t", "echo"), n=1, signals={"go": [1, answer]})
        assert RunStatus.COMPLETED == sim.status
        assert 1 == len(seen)

    def test_missing_signal_without_timeout_fails_clearly(self) -> None:
        flow = Flow("w").wait("approval").node("t", start).edge("approval", "t")
        sim = simulate(flow, n=1)
        assert RunStatus.FAILED == sim.status
        assert isinstance(sim.error, SimulationError)
        assert "no signal scripted for wait 'approval'" in str(sim.error)

    def test_same_seed_same_trace(self) -> None:
        runs = [
            simulate(pipeline(), n=2, items=[1, 2], signals={"approval": 1}, seed=3)
            for _ in range(2)
        ]
        assert runs[0].visited == runs[1].visited
        assert [(t.node_id, t.attempt, t.started) for t in runs[0].trace] == [
            (t.node_id, t.attempt, t.started) for t in runs[1].trace
        ]


class TestFaults:
    """The distributed protocol keeps its invariants under seeded faults."""

    FAULTS = Faults(crash=0.3, redeliver=0.3, duplicate=0.3, reorder=True, delay=0.2)

    @pytest.mark.parametrize("seed", range(40))
    def test_invariants_hold(self, seed: int) -> None:
        sim = simulate(
            pipeline(),
            n=3,
            items=[1, 2, 3],
            signals={"approval": "ok"},
            workers=3,
            faults=self.FAULTS,
            seed=seed,
        )
        assert (RunStatus.COMPLETED, 12) == (sim.status, sim.output)

    def test_same_seed_same_visits(self) -> None:
        runs = [
            simulate(
                pipeline(),
                n=3,
                items=[1, 2],
                signals={"approval": "ok"},
                workers=2,
                faults=self.FAULTS,
                seed=11,
            )
            for _ in range(2)
        ]
        assert runs[0].visited == runs[1].visited

    def test_broken_store_is_caught_with_its_seed(self) -> None:
        class StaleStore(MemoryStore):
            """Drops the catch-up that makes a worker see others' commits."""

            def transaction(self, run_id: str) -> Any:
                inner = super().transaction(run_id)

                class Stale:
                    async def __aenter__(self) -> Any:
                        txn = await inner.__aenter__()

                        async def nothing(version: int) -> list[Any]:
                            return []

                        txn.changes_since = nothing
                        return txn

                    async def __aexit__(self, *exc: Any) -> Any:
                        return await inner.__aexit__(*exc)

                return Stale()

        failures = []
        for seed in range(20):
            try:
                simulate(
                    pipeline(),
                    n=3,
                    items=[1, 2, 3],
                    signals={"approval": "ok"},
                    workers=3,
                    faults=self.FAULTS,
                    seed=seed,
                    store=StaleStore(),
                )
            except AssertionError as exc:
                failures.append(str(exc))
        assert failures
        assert all("seed " in f for f in failures)


class TestCapture:
    """capture_events collects events from a runtime while the block runs."""

    async def test_capture(self) -> None:
        rt = flowkit.Runtime()
        with capture_events(rt, types={"node:finish"}) as events:
            await rt.run(Flow("one").node("start", start), n=1)
        assert ["start"] == [e.node_id for e in events]


pytestmark = pytest.mark.anyio


class TestProperties:
    """Generated blueprints keep every invariant under generated fault plans.

    Example counts come from the hypothesis profile (see conftest.py).
    """

    @staticmethod
    def _registry() -> dict[str, Any]:
        async def inc(value: Any = 0) -> int:
            if isinstance(value, dict):  # a join: the sum of what arrived
                return sum(v for v in value.values() if isinstance(v, int)) + 1
            return (value if isinstance(value, int) else 0) + 1

        return {"inc": inc}

    @given(
        bp=strategies.blueprints(max_nodes=8),
        plan=strategies.fault_plans(),
        seed=st.integers(0, 2**16),
        workers=st.integers(1, 3),
    )
    def test_invariants_under_faults(self, bp: Any, plan: Faults, seed: int, workers: int) -> None:
        sim = simulate(bp, registry=self._registry(), workers=workers, faults=plan, seed=seed)
        assert sim.status in (RunStatus.COMPLETED, RunStatus.FAILED)

    @given(bp=strategies.blueprints(max_nodes=8), seed=st.integers(0, 2**16))
    def test_same_seed_same_run(self, bp: Any, seed: int) -> None:
        plan = Faults(crash=0.3, duplicate=0.3, reorder=True)
        first, second = (
            simulate(bp, registry=self._registry(), workers=2, faults=plan, seed=seed)
            for _ in range(2)
        )
        assert first.visited == second.visited
        assert first.output == second.output

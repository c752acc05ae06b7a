"""The DESIGN document's examples, verbatim, in every shell."""

from __future__ import annotations

from datetime import timedelta
from typing import TYPE_CHECKING

import anyio
import pytest
from design_flows import Order, Receipt, checkout, fetch_order

import flowkit
from flowkit import RunStatus
from flowkit.stores import SQLiteStore
from flowkit.testing import Faults, simulate
from flowkit.transports import MemoryTransport

if TYPE_CHECKING:
    from pathlib import Path


class TestSimulateExample:
    """DESIGN §8: simulate() with mocks, scripted signals and virtual time."""

    def test_verbatim(self) -> None:
        sim = simulate(
            checkout,
            order_id="A1",
            mocks={fetch_order: lambda order_id: Order("A1", 2000, ["x"])},
            signals={"approval": {"approved": True}},
            start="2026-01-01T00:00:00Z",
        )
        assert sim.status == "completed"
        assert sim.output == Receipt("A1", 2000)
        assert sim.visited[:5] == ["fetch_order", "approval", "sleep", "charge", "notify"]
        assert sim.elapsed == timedelta(minutes=10)

    def test_rejected_approval_refunds(self) -> None:
        sim = checkout.simulate(order_id="A1", signals={"approval": {"approved": False}})
        assert Receipt("A1", -1500) == sim.output
        assert ["fetch_order", "approval", "refund"] == sim.visited

    def test_except_catches_the_shipping_error(self) -> None:
        sim = simulate(checkout, order_id="X9", signals={"approval": {"approved": True}})
        assert "flag" in sim.visited
        assert [("X9", "no courier for X9")] == [
            (c.args[0].id, c.args[1]) for c in sim.calls("flag")
        ]

    @pytest.mark.parametrize("seed", range(10))
    def test_under_faults(self, seed: int) -> None:
        sim = simulate(
            checkout,
            order_id="A1",
            signals={"approval": {"approved": True}},
            workers=3,
            faults=Faults(crash=0.2, redeliver=0.2, duplicate=0.2, reorder=True),
            seed=seed,
        )
        assert (RunStatus.COMPLETED, {"order_id": "A1", "amount": 1500}) == (sim.status, sim.output)


@pytest.mark.anyio
class TestRunningExample:
    """DESIGN §5: the same flow in-memory, durably, and across workers."""

    async def test_in_memory(self) -> None:
        async with flowkit.Runtime() as rt:
            result = await rt.run(checkout, order_id="A1")
            assert RunStatus.AWAITING == result.status
            result = await rt.signal(result.run_id, "approval", {"approved": True})
            assert RunStatus.AWAITING == result.status  # now sleeping ten minutes
        assert "sleep" in {t["node"] for t in result.snapshot()["sections"]["timers"].values()}

    async def test_across_workers_with_typed_values(self, tmp_path: Path) -> None:
        store = SQLiteStore(tmp_path / "runs.db")
        transport = MemoryTransport()
        workers = [
            flowkit.Worker([checkout], transport, store, poll_interval=0.01) for _ in range(2)
        ]
        client = flowkit.Client(transport, store, flows=[checkout])
        with flowkit._clock.use_clock(_FastClock()):
            async with anyio.create_task_group() as tg:
                for worker in workers:
                    await tg.start(worker.run)
                waiting = anyio.Event()
                for worker in workers:
                    worker.events.subscribe(lambda _: waiting.set(), types={"workflow:pause"})
                handle = await client.start(checkout, order_id="A1")
                with anyio.fail_after(20):
                    await waiting.wait()
                await client.signal(handle.run_id, "approval", {"approved": True})
                result = await handle.result(timeout=20)
                tg.cancel_scope.cancel()
        assert (RunStatus.COMPLETED, {"order_id": "A1", "amount": 1500}) == (
            result.status,
            result.output,
        )


class _FastClock:
    """Wall time running 10 000x faster, so the flow's ten-minute sleep passes quickly."""

    def __init__(self) -> None:
        import time

        self._time = time
        self._start = time.time()

    def __call__(self) -> float:
        return self._start + (self._time.time() - self._start) * 10_000

"""``examples/temporal_samples/continue_as_new.py`` runs in memory and under simulate()."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

import flowkit
from flowkit import RunStatus
from flowkit.testing import simulate

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from examples.temporal_samples.continue_as_new import POLLS_PER_RUN, looping, main  # noqa: E402

pytestmark = pytest.mark.anyio

ITERATIONS = 5
SEEN = sum(i + a for i in range(ITERATIONS) for a in range(POLLS_PER_RUN))


async def test_in_memory_the_chain_ends_with_the_total() -> None:
    async with flowkit.Runtime(poll_interval=0.01) as rt:
        handle = await rt.start(looping, run_id="loop", iterations=ITERATIONS, pause="10ms")
        last = await handle.result(timeout=30)
        firsts = [await rt.result(f"loop:{n}" if n else "loop") for n in range(ITERATIONS)]
    assert (RunStatus.COMPLETED, SEEN, "loop:5") == (last.status, last.output, last.run_id)
    assert [r.continued_as for r in firsts] == [f"loop:{n}" for n in range(1, ITERATIONS + 1)]
    assert [r.state["seen"] for r in firsts[1:]] == [
        sum(i + a for i in range(n + 1) for a in range(POLLS_PER_RUN)) for n in range(1, ITERATIONS)
    ]


async def test_main_prints_the_chain(capsys: pytest.CaptureFixture[str]) -> None:
    await main(pause="1ms")
    printed = capsys.readouterr().out
    assert "run 'loop' continued as 'loop:1'" in printed
    assert f"last run 'loop:5' is completed: seen {SEEN}" in printed


def test_under_simulate_the_sleeps_are_virtual() -> None:
    sim = simulate(looping, iterations=ITERATIONS)
    assert (RunStatus.COMPLETED, SEEN, "sim:5") == (sim.status, sim.output, sim.run_id)
    assert ITERATIONS * POLLS_PER_RUN == sim.elapsed.total_seconds()
    assert ITERATIONS * POLLS_PER_RUN == len(sim.calls("poll"))

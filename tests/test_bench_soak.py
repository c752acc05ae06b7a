"""The soak harness still runs: ``python -m bench --only soak`` for a few seconds.

No memory or latency figure is asserted (benchmarks never run inside the test
suite); this only checks that the worker process serves the soak's runs and
that a row comes out per interval.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.timeout(120)
def test_a_short_soak_runs(tmp_path: Path) -> None:
    out = tmp_path / "bench.json"
    argv = ["--only", "soak", "--minutes", "0.05", "--rate", "5", "--plain", "--json", str(out)]
    done = subprocess.run(
        [sys.executable, "-m", "bench", *argv],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=110,
    )
    report = f"stdout:\n{done.stdout[-4000:]}\nstderr:\n{done.stderr[-4000:]}"
    assert done.returncode == 0, report
    [table] = json.loads(out.read_text())["sections"]["soak"]
    warm_up, loaded = table["rows"]
    assert (0, 1, 0) == (warm_up["minute"], warm_up["runs_completed"], warm_up["failed"])
    assert loaded["runs_started"] == 15, report
    assert loaded["failed"] == 0, report
    assert loaded["worker_rss_mb"] > 0

"""The benchmark harness still runs: ``python -m bench --quick --only smoke``.

No timing is asserted (benchmarks never run inside the test suite); this only
checks that every section runs at tiny sizes, without Flowcraft or npm.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SECTIONS = ("engine", "compile", "simulation", "persistence", "scale", "distributed")


@pytest.mark.timeout(180)
def test_bench_smoke_runs_every_section(tmp_path: Path) -> None:
    out = tmp_path / "bench.json"
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "bench",
            "--quick",
            "--only",
            "smoke",
            "--plain",
            "--json",
            str(out),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=170,
    )
    report = f"stdout:\n{done.stdout[-4000:]}\nstderr:\n{done.stderr[-4000:]}"
    assert done.returncode == 0, report
    for section in SECTIONS:
        assert f"== {section} ==" in done.stdout, report
    assert "FAILED" not in done.stdout, report
    data = json.loads(out.read_text())
    assert data["mode"] == "smoke"
    assert set(SECTIONS) <= set(data["sections"])
    assert not data["failed"]

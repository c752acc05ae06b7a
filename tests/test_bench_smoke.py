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
SECTIONS = (
    "engine",
    "compile",
    "simulation",
    "persistence",
    "limits",
    "scale",
    "scaling",
    "distributed",
)


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
    goals = data["goals"]["rows"]  # every row of the performance table, measured or not
    assert len(goals) == 21, goals
    assert all(row["met"] is not None or row["why"] for row in goals), goals


@pytest.mark.timeout(180)
def test_bench_runs_index_at_500_runs(tmp_path: Path) -> None:
    """``python -m bench runs_index`` over 500 runs: it fills each store, lists its pages,
    and SQLite's plans read indexes (PostgreSQL rightly reads tables this small whole,
    so only its status page is held to an index)."""
    out = tmp_path / "bench.json"
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "bench",
            "runs_index",
            "--runs",
            "500",
            "--quick",
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
    assert "== runs_index ==" in done.stdout, report
    data = json.loads(out.read_text())
    assert not data["failed"]
    pages, fills, plans = data["sections"]["runs_index"]
    stores = [row["store"] for row in fills["rows"]]
    assert [500] * len(stores) == [row["runs"] for row in fills["rows"]]
    skipped = [note for note in pages["notes"] if note.startswith("skipped")]
    if stores == ["sqlite", "postgres"]:
        assert not skipped, report
    else:  # no PostgreSQL here
        assert stores == ["sqlite"], report
        assert len(skipped) == 1, report
        assert "postgres: not reachable" in skipped[0], report
    names = ["status", "flow+status", "tag", "rare tag", "status page 2"]
    for store in stores:
        rows = {row["query"]: row for row in pages["rows"] if row["store"] == store}
        assert names == list(rows), report
        assert all(row["median_ms"] > 0 for row in rows.values()), report
        assert all(rows[q]["rows"] > 0 for q in ("status", "flow+status", "tag")), report
        plan = {row["query"]: row["plan"] for row in plans["rows"] if row["store"] == store}
        assert "flowkit_runs_status" in plan["status"], plan
        if store == "sqlite":
            assert all(row["plan"] == "index" for row in rows.values()), plan
            assert "flowkit_run_tags_match" in plan["tag"], plan
            assert not any("TEMP B-TREE" in p for p in plan.values()), plan

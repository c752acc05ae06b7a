"""The notebooks in notebooks/ run top to bottom, and are kept in git without outputs.

Each notebook is executed with nbclient on the ``python3`` kernel (ipykernel in
this environment: jupyter_client starts it with this interpreter), in a fresh
temp directory that is also the kernel's ``TMPDIR``, with a per-cell timeout.
The kernel is shut down at once after the run, which SIGKILLs its process
group — so worker processes a failed ``03-distributed`` left behind go with it.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import nbclient  # dev dependencies: nbclient, ipykernel, nbformat
import nbformat
import pytest

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.ipynb"))
CELL_TIMEOUT = 90  # seconds for any one cell


def execute(path: Path, cwd: Path) -> Any:
    notebook = nbformat.read(path, as_version=4)
    client = nbclient.NotebookClient(
        notebook,
        timeout=CELL_TIMEOUT,
        kernel_name="python3",
        resources={"metadata": {"path": str(cwd)}},
        shutdown_kernel="immediate",
    )
    client.execute()
    return notebook


def outputs(notebook: Any) -> str:
    """Every text an executed notebook showed (streams, results, displays, Markdown)."""
    texts = []
    for cell in notebook.cells:
        for output in cell.get("outputs", []):
            texts.append(output.get("text", ""))
            data = output.get("data", {})
            texts += [data.get("text/plain", ""), data.get("text/markdown", "")]
    return "\n".join(texts)


EXPECTED = {
    "01-quickstart.ipynb": [
        "completed {'receipt': 'charged 120', 'mail': 'mailed A1'",
        "node:finish      charge",
        "class n0,",  # a run's path, styled
        "failed - node 'validate' failed on attempt 1: 3 rows, expected at most 2",
        "classDef failed ",
    ],
    "02-durable.ipynb": [
        "completed | charged 1500 for B7 | virtual time: 3 days, 0:00:00",
        "2026-01-04 00:00  charge",
        "escalated B8 to a manager after 2 days, 0:00:00",
        "classDef failed ",  # the wait that timed out
        "awaiting - waiting for ('confirm',)",
        "classDef awaiting ",
        "completed - ada@example.com activated",
    ],
    "03-distributed.ipynb": [
        "'o3': 'awaiting'",
        "o4 completed {'order': 'o4', 'total': 292, 'parcel': 'parcel of 3'}",
        "o5 completed {'order': 'o5', 'total': 10, 'parcel': 'parcel of 2'}",
        "exit codes [0, 0]",
        "worker stopped",
    ],
}


class TestNotebooks:
    """Each notebook executes without error and shows what its text promises."""

    def test_every_notebook_is_checked(self) -> None:
        assert sorted(EXPECTED) == [path.name for path in NOTEBOOKS]

    @pytest.mark.timeout(300)
    @pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.name for p in NOTEBOOKS])
    def test_runs(self, path: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
        monkeypatch.setenv("TMPDIR", str(tmp_path))  # the kernel's temp files land here
        shown = outputs(execute(path, tmp_path))
        missing = [text for text in EXPECTED[path.name] if text not in shown]
        assert [] == missing, shown[-4000:]


class TestStripped:
    """Notebooks are committed without outputs or execution counts."""

    @pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.name for p in NOTEBOOKS])
    def test_no_outputs(self, path: Path) -> None:
        notebook = nbformat.read(path, as_version=4)
        nbformat.validate(notebook)
        dirty = [
            index
            for index, cell in enumerate(notebook.cells)
            if cell.cell_type == "code" and (cell.outputs or cell.execution_count is not None)
        ]
        assert [] == dirty

    def test_the_kernel_is_this_interpreter(self) -> None:
        from jupyter_client.kernelspec import KernelSpecManager

        argv = KernelSpecManager().get_kernel_spec("python3").argv
        # jupyter_client runs "python" (and pythonX, pythonX.Y) as sys.executable
        assert argv[0] in ("python", "python3", f"python3.{sys.version_info[1]}", sys.executable)

"""Runs bench/flowcraft_bench.mjs (Flowcraft, TypeScript) for side-by-side ratios."""

from __future__ import annotations

import json
import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import Any

SCRIPT = Path(__file__).resolve().parent / "flowcraft_bench.mjs"
PACKAGE = "flowcraft@2.10.1"


class Flowcraft:
    """Installs Flowcraft into a temporary directory once and runs its reference script."""

    def __init__(self) -> None:
        self.error: str | None = None
        self._dir: Path | None = None

    def _install(self) -> Path | None:
        if self._dir is not None or self.error is not None:
            return self._dir
        if not SCRIPT.exists():
            self.error = f"{SCRIPT} not found"
            return None
        if shutil.which("npm") is None or shutil.which("node") is None:
            self.error = "node/npm not installed"
            return None
        directory = Path(tempfile.mkdtemp(prefix="flowcraft-bench-"))
        shutil.copy(SCRIPT, directory)
        steps = [["npm", "init", "-y"], ["npm", "install", "--silent", PACKAGE]]
        for step in steps:
            done = subprocess.run(step, cwd=directory, capture_output=True, text=True, timeout=600)
            if done.returncode != 0:
                self.error = f"{' '.join(step)} failed: {done.stderr.strip()[-300:]}"
                return None
        self._dir = directory
        return directory

    def run(self, shape: str, n: int, runs: int) -> dict[str, Any] | None:
        directory = self._install()
        if directory is None:
            return None
        done = subprocess.run(
            ["node", SCRIPT.name, shape, str(n), str(runs)],
            cwd=directory,
            capture_output=True,
            text=True,
            timeout=600,
        )
        if done.returncode != 0:
            self.error = done.stderr.strip()[-300:]
            return None
        result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
        return result

    def close(self) -> None:
        if self._dir is not None:
            shutil.rmtree(self._dir, ignore_errors=True)

"""The examples the README points to run as documented."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


class TestQuickstart:
    """The README's demo command finishes a durable run."""

    def test_runs(self) -> None:
        done = subprocess.run(
            [sys.executable, str(ROOT / "examples" / "quickstart.py")],
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        assert 0 == done.returncode, done.stderr
        assert "is awaiting, waiting for 'approval'" in done.stdout
        assert "is completed: {'status': 'done'" in done.stdout

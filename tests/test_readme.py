"""The README's Python example runs as written (saved to a module, as a user would)."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def python_blocks(path: Path) -> list[str]:
    return re.findall(r"```python\n(.*?)```", path.read_text(), re.S)


class TestReadme:
    """Every Python block of README.md runs (flows need real files: the compiler reads source)."""

    def test_blocks_run(self, tmp_path: Path) -> None:
        blocks = python_blocks(ROOT / "README.md")
        assert blocks
        for index, block in enumerate(blocks):
            script = tmp_path / f"readme_{index}.py"
            script.write_text(block)
            done = subprocess.run(
                [sys.executable, str(script)],
                capture_output=True,
                text=True,
                timeout=60,
                check=False,
                cwd=tmp_path,
            )
            assert 0 == done.returncode, f"README block {index} failed:\n{done.stderr}"

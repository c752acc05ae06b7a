"""Every Python block in docs/*.md runs as written (blocks marked ``no-run`` are skipped).

Each block is saved as a module and run in a fresh interpreter, because
``@flow`` reads its function's source. A block preceded by the HTML comment
``<!-- no-run: reason -->`` needs a cloud account or a long-running service.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
BLOCK = re.compile(r"(<!--\s*no-run[^>]*-->\s*)?```python\n(.*?)```", re.S)


def _blocks() -> list[tuple[str, int, str]]:
    found = []
    for page in sorted((ROOT / "docs").glob("*.md")):
        for index, match in enumerate(BLOCK.finditer(page.read_text())):
            if match.group(1) is None:
                found.append((page.name, index, match.group(2)))
    return found


@pytest.mark.parametrize(
    ("page", "index", "code"), _blocks(), ids=[f"{p}#{i}" for p, i, _ in _blocks()]
)
def test_block_runs(page: str, index: int, code: str, tmp_path: Path) -> None:
    script = tmp_path / f"doc_block_{index}.py"
    script.write_text(code)
    done = subprocess.run(
        [sys.executable, str(script)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        cwd=tmp_path,
    )
    assert 0 == done.returncode, f"{page} block {index} failed:\n{done.stderr[-2000:]}"

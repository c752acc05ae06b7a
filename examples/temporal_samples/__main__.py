"""``python -m examples.temporal_samples``: every sample's ``demo`` on an in-memory runtime.

Prints each sample's observations and whether they are the ones it expects.
"""

from __future__ import annotations

import importlib
import pkgutil
from pathlib import Path
from typing import TYPE_CHECKING, Any

import anyio

import flowkit

if TYPE_CHECKING:
    from types import ModuleType


def samples() -> dict[str, ModuleType]:
    """The sample modules of this package, by name: every module not starting with ``_``."""
    names = [m.name for m in pkgutil.iter_modules([str(Path(__file__).parent)])]
    return {
        name: importlib.import_module(f"{__package__}.{name}")
        for name in sorted(names)
        if not name.startswith("_")
    }


async def main() -> dict[str, Any]:
    seen = {}
    for name, sample in samples().items():
        async with flowkit.Runtime(flows=sample.FLOWS) as rt:
            seen[name] = observed = await sample.demo(rt)
        verdict = "as expected" if observed == sample.EXPECTED else f"EXPECTED {sample.EXPECTED}"
        print(f"{name}: {observed} ({verdict})")
    return seen


if __name__ == "__main__":
    anyio.run(main)

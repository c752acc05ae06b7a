"""Make the terminal pictures of docs/operating.md: ``python docs/screenshots.py``.

Runs a few flows into a throwaway SQLite store, then records what ``flowkit runs
list`` and ``flowkit flows list`` print (through rich's recording console) as SVG.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

import anyio

import flowkit
from flowkit import flow, node
from flowkit.cli import _flows, _main, _runs
from flowkit.stores import SQLiteStore

HERE = Path(__file__).parent


@node
async def charge(total: int) -> str:
    if total > 1000:
        raise ValueError(f"card declined for {total}")
    return f"charged {total}"


@flow
async def checkout(total: int) -> str:
    return await charge(total)


@flow
async def approval() -> Any:
    return await flow.wait("approve", timeout="2d")


async def fill(path: Path) -> None:
    async with flowkit.Runtime(store=SQLiteStore(path)) as rt:
        for total, customer in ((120, "c1"), (2500, "c2"), (80, "c1")):
            await rt.run(checkout, total=total, tags={"customer": customer})
        await rt.run(approval, tags={"team": "ops"})


def record(argv: list[str], picture: str) -> None:
    from rich.console import Console

    recording = Console(record=True, width=150, markup=False, highlight=False)
    saved = _flows.console, _runs.console
    _flows.console = _runs.console = lambda: recording  # type: ignore[assignment]
    try:
        _main.main(argv)
    finally:
        _flows.console, _runs.console = saved  # type: ignore[assignment]
    recording.save_svg(str(HERE / "img" / picture), title=f"flowkit {' '.join(argv[:2])}")


def main() -> None:
    with tempfile.TemporaryDirectory() as folder:
        db = Path(folder) / "runs.db"
        anyio.run(fill, db)
        record(["runs", "list", "--store", f"sqlite:///{db}"], "runs-list.svg")
    record(["flows", "list", "--app", "screenshots"], "flows-list.svg")


if __name__ == "__main__":
    main()

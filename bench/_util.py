"""Shared helpers: timing with medians, process memory, tables, section results."""

from __future__ import annotations

import gc
import os
import socket
import statistics
import time
from typing import TYPE_CHECKING, Any, TypeVar
from urllib.parse import urlsplit

import attrs

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable

T = TypeVar("T")


@attrs.define
class Config:
    """What one invocation runs: ``quick`` trims sizes and repeats, ``smoke`` runs tiny ones."""

    quick: bool = False
    smoke: bool = False
    flowcraft: bool = True

    def pick(self, full: T, quick: T, smoke: T) -> T:
        """The value for this mode."""
        if self.smoke:
            return smoke
        return quick if self.quick else full


@attrs.define
class Table:
    """One table of a section: rows of plain values, plus notes printed under it."""

    title: str
    rows: list[dict[str, Any]] = attrs.field(factory=list)
    notes: list[str] = attrs.field(factory=list)

    def to_json(self) -> dict[str, Any]:
        return {"title": self.title, "rows": self.rows, "notes": self.notes}


# -- timing -----------------------------------------------------------------------------------


async def median_async(fn: Callable[[], Awaitable[Any]], runs: int) -> float:
    """Median wall seconds of ``runs`` calls of ``fn`` (a full GC before each, not timed)."""
    times = []
    for _ in range(max(1, runs)):
        gc.collect()
        start = time.perf_counter()
        await fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


async def interleaved_stats(
    fns: dict[str, Callable[[], Awaitable[Any]]], runs: int, *, cpu: bool = False
) -> dict[str, dict[str, float]]:
    """Median and best seconds of each function, timed in turns (a, b, a, b, ...).

    Interleaving makes a slow phase of a noisy machine hit every system alike,
    so the ratios between them hold even when the absolute figures wander.
    With ``cpu``, the seconds are this process's CPU time instead of wall time:
    for work that never waits on I/O they are the same on an idle machine, and on
    a busy one CPU time does not count the moments another process held the core.
    """
    clock = time.process_time if cpu else time.perf_counter
    times: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(max(1, runs)):
        for name, fn in fns.items():
            gc.collect()
            start = clock()
            await fn()
            times[name].append(clock() - start)
    return {name: {"median": statistics.median(ts), "best": min(ts)} for name, ts in times.items()}


async def interleaved_async(
    fns: dict[str, Callable[[], Awaitable[Any]]], runs: int
) -> dict[str, float]:
    """Median seconds of each function, timed in turns (see :func:`interleaved_stats`)."""
    stats = await interleaved_stats(fns, runs)
    return {name: s["median"] for name, s in stats.items()}


def median_sync(fn: Callable[[], Any], runs: int) -> float:
    """Median wall seconds of ``runs`` calls of a synchronous ``fn``."""
    times = []
    for _ in range(max(1, runs)):
        gc.collect()
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


# -- the process --------------------------------------------------------------------------------

PAGE_SIZE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096


def rss_bytes() -> int:
    """Resident set size of this process, from ``/proc/self/statm`` (0 where there is none)."""
    try:
        with open("/proc/self/statm") as statm:
            return int(statm.read().split()[1]) * PAGE_SIZE
    except (OSError, IndexError, ValueError):
        return 0


def reachable(url: str, timeout: float = 0.5) -> bool:
    """Whether something listens at the URL's host and port (no protocol spoken)."""
    parts = urlsplit(url)
    try:
        with socket.create_connection((parts.hostname or "127.0.0.1", parts.port or 0), timeout):
            return True
    except OSError:
        return False


# -- numbers ------------------------------------------------------------------------------------


def ratio(a: float | None, b: float | None, digits: int = 2) -> float | None:
    """``a / b`` rounded, or None when either is missing or ``b`` is zero."""
    if a is None or b is None or b == 0:
        return None
    return round(a / b, digits)


def sig(value: float, digits: int = 3) -> float:
    """``value`` rounded to ``digits`` significant digits (ints stay ints when large)."""
    if value == 0:
        return 0
    from math import floor, log10

    places = digits - 1 - floor(log10(abs(value)))
    rounded = round(value, places)
    return int(rounded) if places <= 0 else rounded


# -- tables -------------------------------------------------------------------------------------


def _cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int):
        return f"{value:,}".replace(",", " ") if abs(value) >= 10_000 else str(value)
    if isinstance(value, float):
        return f"{value:g}" if abs(value) < 1e6 else f"{value:.3g}"
    return str(value)


def plain_table(table: Table) -> str:
    """The table as aligned plain text (what ``docs/performance.md`` pastes)."""
    columns = list(dict.fromkeys(key for row in table.rows for key in row))
    if not columns:
        return f"{table.title}\n(no rows)"
    cells = [[_cell(row.get(c)) for c in columns] for row in table.rows]
    widths = [max(len(c), *(len(r[i]) for r in cells)) for i, c in enumerate(columns)]
    numeric = [
        all(isinstance(row.get(c), int | float) or row.get(c) is None for row in table.rows)
        for c in columns
    ]

    def line(values: list[str]) -> str:
        out = [
            v.rjust(w) if num else v.ljust(w)
            for v, w, num in zip(values, widths, numeric, strict=True)
        ]
        return "  ".join(out).rstrip()

    lines = [table.title, line(columns), "  ".join("-" * w for w in widths)]
    lines += [line(r) for r in cells]
    lines += [f"  * {note}" for note in table.notes]
    return "\n".join(lines)


def print_tables(section: str, tables: list[Table], *, use_rich: bool = True) -> None:
    """Print a section's header and tables, with ``rich`` when it is installed."""
    console = None
    if use_rich:
        try:
            from rich.console import Console  # type: ignore[import-not-found, unused-ignore]
        except ImportError:
            console = None
        else:
            console = Console()
            if not console.is_terminal:  # a pipe or file: do not squeeze tables into 80 columns
                console = Console(width=220)
    print(f"\n== {section} ==", flush=True)
    for table in tables:
        if console is None:
            print()
            print(plain_table(table), flush=True)
            continue
        from rich.table import Table as RichTable  # type: ignore[import-not-found, unused-ignore]

        columns = list(dict.fromkeys(key for row in table.rows for key in row))
        rich_table = RichTable(title=table.title, title_justify="left")
        for column in columns:
            numeric = all(isinstance(r.get(column), int | float | None) for r in table.rows)
            rich_table.add_column(column, justify="right" if numeric else "left")
        for row in table.rows:
            rich_table.add_row(*(_cell(row.get(c)) for c in columns))
        console.print(rich_table)
        for note in table.notes:
            console.print(f"  * {note}", highlight=False, markup=False, soft_wrap=True)

"""``flowkit runs purge``: delete the runs that finished long ago."""

from __future__ import annotations

import sys
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import anyio

from .. import _clock as clock
from ..core._state import FINISHED_VALUES
from ..shell._apps import UsageError
from ..shell._purge import purge_runs
from ._base import console, example, open_url, print_json

if TYPE_CHECKING:
    import argparse
    from collections.abc import Callable

    from ._base import Commands

FINAL = sorted(FINISHED_VALUES)


def register(
    subcommands: Commands,
    *,
    store: Callable[[argparse.ArgumentParser], None],
    age: Callable[[str], float],
) -> None:
    """Add ``runs purge`` (with the ``--store`` flag and the age parser of ``runs``)."""
    purge = subcommands.add_parser(
        "purge",
        help="delete the runs that finished longer ago than an age",
        description="Delete the runs that finished longer ago than AGE, with everything "
        "the store keeps for them. Runs that have not finished are never deleted. Asks "
        "first unless --yes is given (and refuses to run unasked when not on a terminal).",
        **example("flowkit runs purge --older-than 30d --status completed --yes"),
    )
    store(purge)
    purge.add_argument(
        "--older-than", type=age, required=True, metavar="AGE", help="e.g. 30d, 12h or 3600"
    )
    purge.add_argument(
        "--status",
        action="append",
        choices=FINAL,
        help="only runs that ended so (repeatable; default: every final status)",
    )
    purge.add_argument("--yes", action="store_true", help="do not ask for confirmation")
    purge.add_argument("--json", action="store_true", help='print {"purged": N} as JSON')
    purge.set_defaults(run=purge_old_runs)


def purge_old_runs(args: argparse.Namespace) -> int:
    statuses = args.status or FINAL
    before = datetime.fromtimestamp(clock.now() - args.older_than, UTC)
    what = f"runs {', '.join(statuses)} before {before:%Y-%m-%d %H:%M:%S} UTC from {args.store}"
    if not args.yes and not _confirmed(what):
        return 1
    purged = anyio.run(_purge, args, not args.json)
    if args.json:
        print_json({"purged": purged})
    else:
        console().print(f"purged {purged} runs")
    return 0


def _confirmed(what: str) -> bool:
    if not sys.stdin.isatty():
        raise UsageError(f"would delete the {what}; pass --yes to do it without a terminal")
    answer = input(f"Delete the {what}? [y/N] ")
    return answer.strip().lower() in ("y", "yes")


async def _purge(args: argparse.Namespace, show_progress: bool) -> int:
    from rich.progress import Progress, SpinnerColumn, TextColumn

    from ..stores import from_url

    store = open_url(from_url, args.store)
    try:
        with Progress(
            SpinnerColumn(),
            TextColumn("purged {task.completed} runs"),
            console=console(),
            transient=True,
            disable=not show_progress,
        ) as progress:
            task = progress.add_task("purge", total=None)

            def advance(count: int) -> Any:
                progress.advance(task, count)

            return await purge_runs(store, args.older_than, status=args.status, progress=advance)
    finally:
        await store.close()

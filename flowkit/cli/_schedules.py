"""``flowkit schedules list | pause | resume | trigger | delete``: the schedules a store
holds. They need no flow code: a trigger is written to the store and a worker that runs
the schedule starts the run on its next scheduler step."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import anyio

from ..shell import _schedules as schedules
from ._base import console, example, open_url, print_json

if TYPE_CHECKING:
    import argparse

    from ..shell._schedules import ScheduleInfo
    from ..stores._protocol import Store
    from ._base import Commands

DEFAULT_URL = "sqlite:///flowkit.db"  # what `flowkit worker` uses when given no --store


def register(commands: Commands) -> None:
    """Add ``schedules`` and its subcommands to the ``flowkit`` parser."""
    parser = commands.add_parser(
        "schedules",
        help="list the schedules a store holds; pause, resume, trigger or delete one",
        description="The schedules a store holds (Schedule and @flow(schedule=...) write "
        "them when a worker or runtime starts): list them, pause or resume one, start a run "
        "of one now, or delete one.",
        **example("flowkit schedules list --store postgresql://db/app"),
    )
    subcommands = parser.add_subparsers(
        dest="subcommand", metavar="SUBCOMMAND", required=True, title="subcommands"
    )
    listing = subcommands.add_parser(
        "list",
        help="one row per schedule",
        description="List schedules: id, flow, when, paused, next tick, last run.",
        **example("flowkit schedules list --json --store sqlite:///flowkit.db"),
    )
    _store(listing)
    listing.add_argument("--json", action="store_true", help="print JSON instead of a table")
    listing.set_defaults(run=list_schedules)
    actions = {
        "pause": ("stop starting runs until resumed (ticks meanwhile are skipped)", pause),
        "resume": ("start runs again from the next tick", resume),
        "trigger": ("start a run now (a worker that runs the schedule starts it)", trigger),
        "delete": ("delete the schedule from the store", delete),
    }
    for name, (text, run) in actions.items():
        action = subcommands.add_parser(
            name,
            help=text,
            description=f"{text[0].upper()}{text[1:]}.",
            **example(f"flowkit schedules {name} nightly --store sqlite:///flowkit.db"),
        )
        action.add_argument("schedule_id", metavar="SCHEDULE_ID")
        _store(action)
        action.set_defaults(run=run)


def _store(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--store",
        default=DEFAULT_URL,
        metavar="URL",
        help=f"the store the schedules are in (default {DEFAULT_URL}, as flowkit worker)",
    )


def _on_store(args: argparse.Namespace, act: Any) -> Any:
    from ..stores import from_url

    async def main() -> Any:
        store: Store = open_url(from_url, args.store)
        try:
            return await act(store)
        finally:
            await store.close()

    return anyio.run(main)


def list_schedules(args: argparse.Namespace) -> int:
    found: list[ScheduleInfo] = _on_store(args, schedules.list_infos)
    if args.json:
        print_json([_row(info) for info in found])
        return 0
    from rich.table import Table

    table = Table("schedule", "flow", "when", "paused", "next tick", "last run")
    for info in found:
        row = _row(info)
        table.add_row(
            info.schedule_id, info.flow, info.when, "yes" if info.paused else "",
            row["next_tick"] or "", info.last_run or "",
        )  # fmt: skip
    console().print(table)
    return 0


def _row(info: ScheduleInfo) -> dict[str, Any]:
    return {
        "schedule_id": info.schedule_id,
        "flow": info.flow,
        "when": info.when,
        "paused": info.paused,
        "next_tick": None if info.next_tick is None else info.next_tick.isoformat(),
        "last_run": info.last_run,
        "overlap": info.overlap,
        "catchup": info.catchup,
    }


def pause(args: argparse.Namespace) -> int:
    _on_store(args, lambda store: schedules.pause(store, args.schedule_id))
    print(f"paused {args.schedule_id}")
    return 0


def resume(args: argparse.Namespace) -> int:
    _on_store(args, lambda store: schedules.resume(store, args.schedule_id))
    print(f"resumed {args.schedule_id}")
    return 0


def trigger(args: argparse.Namespace) -> int:
    print(_on_store(args, lambda store: schedules.trigger(store, args.schedule_id)))
    return 0


def delete(args: argparse.Namespace) -> int:
    _on_store(args, lambda store: schedules.delete(store, args.schedule_id))
    print(f"deleted {args.schedule_id}")
    return 0

"""``flowkit runs show`` and ``flowkit runs history``: one run, from its store."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import anyio
import attrs

from .._errors import ResumeError
from ..shell._apps import app_spec, load_flows
from ..shell._describe import describe_stored, read_history
from ..shell._result import node_statuses
from ._base import console, example, open_url, print_json

if TYPE_CHECKING:
    import argparse
    from collections.abc import Callable

    from rich.console import RenderableType

    from ..blueprint import Blueprint
    from ..shell._describe import RunDescription
    from ..stores._history import HistoryEvent
    from ._base import Commands

STYLES = {
    "completed": "green",
    "failed": "bold red",
    "cancelled": "magenta",
    "running": "yellow",
    "awaiting": "cyan",
    "queued": "blue",
}
DATA_WIDTH = 80  # characters of an event's data in the history table


def register(subcommands: Commands, *, store: Callable[[argparse.ArgumentParser], None]) -> None:
    """Add ``runs show`` and ``runs history`` (with the ``--store`` flag of ``runs``)."""
    show = subcommands.add_parser(
        "show",
        help="one run: its header, the path it took, its nodes, what it waits for",
        description="Show one run: its header, the path it took through its flow (drawn "
        "when --app gives the flow's code), a table of its nodes (status, attempts, "
        "times, errors) and what it waits for.",
        **example("flowkit runs show 5f2c... --app myapp.flows --store sqlite:///flowkit.db"),
    )
    show.add_argument("run_id", metavar="RUN_ID")
    store(show)
    show.add_argument(
        "--app",
        action="append",
        default=[],
        type=app_spec,
        metavar="MODULE[:ATTR]",
        help="module defining the run's flow, to draw its path (repeatable)",
    )
    show.add_argument("--json", action="store_true", help="print the description as JSON")
    show.set_defaults(run=show_run)

    history = subcommands.add_parser(
        "history",
        help="one run's history: every event, in order",
        description="Print a run's history: each event with its number, time, kind, node, "
        "attempt, worker and data (cut to fit a table; --json prints it whole).",
        **example("flowkit runs history 5f2c... --store postgresql://db/app --json"),
    )
    history.add_argument("run_id", metavar="RUN_ID")
    store(history)
    history.add_argument("--json", action="store_true", help="print the events as JSON")
    history.set_defaults(run=show_history)


# -- runs show -------------------------------------------------------------------------------


def show_run(args: argparse.Namespace) -> int:
    flows = load_flows(args.app) if args.app else []
    described, state = anyio.run(_describe, args.store, args.run_id)
    if args.json:
        print_json(_plain(described))
        return 0
    blueprint = _blueprint(flows, state)
    out = console()
    for part in _show(described, blueprint, state, bool(args.app)):
        out.print(part)
    return 0


async def _describe(url: str, run_id: str) -> tuple[RunDescription, dict[str, Any]]:
    from ..stores import from_url

    store = open_url(from_url, url)
    try:
        described = await describe_stored(store, run_id)
        loaded = await store.load(run_id)
        if loaded is None:  # purged between the two reads
            raise ResumeError(f"unknown run {run_id!r}: it is no longer in the store")
        return described, loaded[0].to_dict()
    finally:
        await store.close()


def _blueprint(flows: list[Any], state: dict[str, Any]) -> Blueprint | None:
    from ..shell._flows import Flows

    digest = state.get("sections", {}).get("header", {}).get("digest")
    target = Flows(flows).by_digest.get(str(digest)) if flows else None
    return None if target is None else target.blueprint


def _show(
    described: RunDescription, blueprint: Blueprint | None, state: dict[str, Any], app: bool
) -> list[RenderableType]:
    from rich.text import Text

    from ._path import LEGEND, path_tree

    parts: list[RenderableType] = [_header(described)]
    if blueprint is not None:
        parts += [path_tree(blueprint, node_statuses(state, blueprint)), Text(LEGEND, "dim")]
    elif app:
        parts.append(Text("(--app has no flow with this run's blueprint digest: no path)"))
    else:
        parts.append(Text("(pass --app with the flow's module to draw the path it took)", "dim"))
    parts.append(_nodes(described))
    parts += _waiting(described)
    return parts


def _header(described: RunDescription) -> RenderableType:
    from rich.text import Text

    run = described.run
    text = Text()
    text.append(run.run_id, style="bold")
    text.append("  ")
    text.append(run.status, style=STYLES.get(run.status, ""))
    text.append(f"\nflow {run.flow}  digest {run.digest[:12]}")
    if run.parent:
        text.append(f"  child of {run.parent}")
    if described.continued_from:
        text.append(f"\ncontinues {described.continued_from}")
    if described.continued_as:
        text.append(f"\ncontinued as {described.continued_as}")
    slot = described.slot
    if slot is not None and slot.status in ("queued", "held"):
        word = "queued for" if slot.status == "queued" else "holds"
        text.append(f"\n{word} a slot of {slot.flow} (key {slot.key!r}, max {slot.max})")
    text.append(f"\nstarted {_when(run.created_at)}")
    if run.finished_at is not None:
        text.append(
            f", finished {_when(run.finished_at)} ({_span(run.finished_at - run.created_at)})"
        )
    else:
        text.append(f", last change {_when(run.updated_at)}")
    if run.tags:
        text.append("\ntags " + ", ".join(f"{k}={v}" for k, v in sorted(run.tags.items())))
    if described.priority:
        text.append(f"\npriority {described.priority}")
    if run.error_type:
        text.append(f"\n{run.error_type}: {run.error_message or ''}", style="red")
    return text


def _nodes(described: RunDescription) -> RenderableType:
    from rich.table import Table

    table = Table("node", "status", "attempts", "first start", "last end", "time", "error")
    for row in described.nodes:
        table.add_row(
            row.node_id,
            row.status,
            str(row.attempts) if row.attempts else "",
            _when(row.first_start),
            _when(row.last_end),
            _span(row.duration) if row.attempts else "",
            row.error or "",
            style=STYLES.get(row.status, ""),
        )
    return table


def _waiting(described: RunDescription) -> list[RenderableType]:
    from rich.text import Text

    lines = [
        f"waits for signal {w.name!r} at {w.node_id}"
        + (f", times out {_when(w.timeout_at)}" if w.timeout_at else "")
        for w in described.waits
    ]
    lines += [
        f"{t.purpose} timer {t.timer_id} at {t.node_id}, due {_when(t.due_at) or '?'}"
        for t in described.timers
        if t.purpose != "timeout"  # said with its wait
    ]
    lines += [f"child run {c.run_id} ({c.flow}) at {c.node_id}" for c in described.children]
    return [Text("\n".join(lines), "cyan")] if lines else []


# -- runs history ----------------------------------------------------------------------------


def show_history(args: argparse.Namespace) -> int:
    events = anyio.run(_history, args.store, args.run_id)
    if args.json:
        print_json([attrs.asdict(event) | {"at": _iso(event.at)} for event in events])
        return 0
    from rich.table import Table

    table = Table("seq", "time (UTC)", "kind", "node", "attempt", "worker", "data")
    for event in events:
        data = json.dumps(event.data, ensure_ascii=False) if event.data else ""
        table.add_row(
            str(event.seq),
            _when(event.at, millis=True),
            event.kind,
            event.node_id or "",
            "" if event.attempt is None else str(event.attempt),
            event.worker or "",
            data if len(data) <= DATA_WIDTH else data[: DATA_WIDTH - 1] + "…",
            style=_kind_style(event.kind),
        )
    out = console()
    out.print(table if events else "no history: the store keeps none for this run")
    return 0


async def _history(url: str, run_id: str) -> list[HistoryEvent]:
    from ..stores import from_url

    store = open_url(from_url, url)
    try:
        return await read_history(store, run_id)
    finally:
        await store.close()


def _kind_style(kind: str) -> str:
    if kind.endswith(("failed", "timed_out")):
        return "red"
    if kind.endswith(("completed", "fired", "received")):
        return "green"
    return ""


# -- shared ----------------------------------------------------------------------------------


def _plain(described: RunDescription) -> dict[str, Any]:
    data = attrs.asdict(described)
    run = data["run"]
    for key in ("created_at", "updated_at", "finished_at"):
        run[key] = _iso(run[key])
    return data


def _iso(at: float | None) -> str | None:
    return None if at is None else datetime.fromtimestamp(at, UTC).isoformat()


def _when(at: float | None, *, millis: bool = False) -> str:
    if at is None:
        return ""
    moment = datetime.fromtimestamp(at, UTC)
    return moment.strftime("%Y-%m-%d %H:%M:%S.%f")[:-3] if millis else f"{moment:%Y-%m-%d %H:%M:%S}"


def _span(seconds: float) -> str:
    if seconds < 1:
        return f"{seconds * 1000:.0f}ms"
    return f"{seconds:.1f}s" if seconds < 120 else f"{seconds / 60:.1f}m"

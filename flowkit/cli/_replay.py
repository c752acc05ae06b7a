"""``flowkit replay``: replay the finished runs a store recorded against the current code."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import anyio
import attrs

from .. import _clock as clock
from ..core._state import FINISHED_VALUES
from ..shell._apps import app_spec, load_flows
from ..shell._flows import Flows
from ..testing import ReplayResult, replay_async
from ._base import example, open_url, print_json
from ._runs import DEFAULT_URL, _age

if TYPE_CHECKING:
    import argparse

    from ..stores._protocol import RunSummary
    from ._base import Commands

WEEK = 7 * 24 * 3600.0
PAGE = 500


def register(commands: Commands) -> None:
    """Add ``replay`` to the ``flowkit`` parser."""
    parser = commands.add_parser(
        "replay",
        help="replay finished runs against the current code; exit 1 if any diverges",
        description="Replay every finished run the store recorded (of the last 7 days by "
        "default) against the flows --app defines now: each node's recorded output stands "
        "in for the node, and each step is compared with the recorded one. Prints each run "
        "that diverges (where, recorded, now) and a summary; exits 1 if any run diverges.",
        **example("flowkit replay --store postgresql://db/app --app myapp.flows --since 7d"),
    )
    parser.add_argument(
        "--store", default=DEFAULT_URL, metavar="URL", help=f"default {DEFAULT_URL}"
    )
    parser.add_argument(
        "--app",
        action="append",
        required=True,
        type=app_spec,
        metavar="MODULE[:ATTR]",
        help="module defining the flows as they are now (repeatable)",
    )
    parser.add_argument("--flow", help="only runs of this flow (its blueprint id)")
    parser.add_argument(
        "--since", type=_age, default=WEEK, metavar="AGE", help="runs started within AGE (7d)"
    )
    parser.add_argument("--json", action="store_true", help="print JSON instead of lines")
    parser.set_defaults(run=run)


@attrs.define
class Tally:
    """What replaying the runs found."""

    results: list[ReplayResult] = attrs.field(factory=list)
    skipped: int = 0  # runs of flows --app does not define

    def count(self, what: str) -> int:
        if what == "ok":
            return sum(r.ok for r in self.results)
        if what == "diverged":
            return sum(r.divergence is not None for r in self.results)
        return sum(r.incomplete is not None for r in self.results)


def run(args: argparse.Namespace) -> int:
    flows = Flows(load_flows(args.app))
    tally = anyio.run(_replay_all, args, flows)
    if args.json:
        print_json({"runs": [_row(r) for r in tally.results], "skipped": tally.skipped})
    else:
        for result in tally.results:
            if result.divergence is not None:
                print(f"DIVERGED {result.divergence}")
            elif result.incomplete is not None:
                print(f"SKIPPED  run {result.run_id!r}: {result.incomplete}")
        print(
            f"replayed {len(tally.results)} runs: {tally.count('ok')} ok, "
            f"{tally.count('diverged')} diverged, {tally.count('incomplete')} not replayable; "
            f"{tally.skipped} of flows --app does not define"
        )
    return 1 if tally.count("diverged") else 0


async def _replay_all(args: argparse.Namespace, flows: Flows) -> Tally:
    from ..stores import from_url

    store = open_url(from_url, args.store)
    tally = Tally()
    try:
        async for summary in _finished(store, args.flow, clock.now() - args.since):
            if summary.flow not in flows.by_blueprint_id:
                tally.skipped += 1
                continue
            newest = flows.add(flows.registered(summary.flow, hint=""))  # resolved once
            tally.results.append(await replay_async(summary.run_id, newest, store=store))
    finally:
        await store.close()
    return tally


async def _finished(store: Any, flow: str | None, since: float) -> Any:
    """Every finished run started since ``since``, newest first, page by page."""
    cursor = None
    while True:
        page = await store.list_runs(
            flow=flow,
            status=sorted(FINISHED_VALUES),
            created_after=since,
            limit=PAGE,
            cursor=cursor,
        )
        summary: RunSummary
        for summary in page.runs:
            yield summary
        cursor = page.cursor
        if cursor is None:
            return


def _row(result: ReplayResult) -> dict[str, Any]:
    divergence = result.divergence
    row: dict[str, Any] = {"run_id": result.run_id, "ok": result.ok}
    if divergence is not None:
        row["divergence"] = {
            "node_id": divergence.node_id,
            "what": divergence.what,
            "recorded": divergence.recorded,
            "new": divergence.new,
        }
    if result.incomplete is not None:
        row["incomplete"] = result.incomplete
    return row

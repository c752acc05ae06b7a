"""``flowkit diff OLD NEW``: what changed between two versions of a flow, and, with
``--store``, which unfinished runs the new version could not continue."""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any

import anyio
import attrs

from .._errors import FlowkitError
from ..blueprint import Blueprint
from ..blueprint._diff import BlueprintDiff, PositionCheck, diff
from ..core._migrate import migration_checks
from ..core._patches import patch_problems
from ..core._state import RunStatus
from ..shell._apps import UsageError, app_spec, load_flows
from ..shell._flows import Flows
from ._base import console, example, open_url, print_json
from ._flows import _blueprint, _one_flow
from ._runs import DEFAULT_URL

if TYPE_CHECKING:
    import argparse

    from ..core._state import RunState
    from ._base import Commands

UNFINISHED = [s.value for s in RunStatus if not s.finished]
PAGE = 500


def register(commands: Commands) -> None:
    """Add ``diff`` to the ``flowkit`` parser."""
    parser = commands.add_parser(
        "diff",
        help="compare two versions of a flow; with --store, exit 1 if a run would be stranded",
        description="Compare two versions of a flow: nodes added, removed and renamed (a "
        "rename is guessed from a node's kind, function and neighbours), edges and "
        "conditions, node configs (retries, timeouts), call signatures, patches. OLD and NEW "
        "are blueprint JSON files ('flowkit flows show --json' writes them), MODULE:FLOW "
        "specs, or, with --app, a flow's id or a digest (a prefix will do) of a version the "
        "app defines. With --store, every unfinished run of OLD's flow is checked against "
        "NEW: does NEW still have each position the run stands at (wait, node in flight, "
        "timer, child, loop, batch), as the same kind of node? Exits 1 if any run would be "
        "stranded.",
        **example("flowkit diff old.json myapp.flows:checkout --store postgresql://db/app"),
    )
    parser.add_argument("old", metavar="OLD", help="blueprint JSON file, MODULE:FLOW or digest")
    parser.add_argument("new", metavar="NEW", help="blueprint JSON file, MODULE:FLOW or digest")
    parser.add_argument(
        "--app",
        action="append",
        default=[],
        type=app_spec,
        metavar="MODULE[:ATTR]",
        help="module defining the versions OLD and NEW name (repeatable)",
    )
    parser.add_argument(
        "--store", metavar="URL", help=f"check the store's unfinished runs (e.g. {DEFAULT_URL})"
    )
    parser.add_argument(
        "--map",
        action="append",
        default=[],
        type=_pair,
        metavar="OLD_NODE=NEW_NODE",
        help="a node renamed in NEW, as Client.migrate(map=...) would rename it (repeatable)",
    )
    parser.add_argument("--json", action="store_true", help="print JSON instead of tables")
    parser.set_defaults(run=run)


@attrs.frozen
class RunCheck:
    """One unfinished run, checked against NEW."""

    run_id: str
    status: str
    digest: str
    positions: list[PositionCheck]
    problems: list[str]  # patches NEW cannot take

    @property
    def stranded(self) -> bool:
        return bool(self.problems) or not all(check.ok for check in self.positions)

    def to_dict(self) -> dict[str, Any]:
        return {
            "run_id": self.run_id,
            "status": self.status,
            "digest": self.digest,
            "stranded": self.stranded,
            "positions": [check.to_dict() for check in self.positions],
            "problems": self.problems,
        }


def run(args: argparse.Namespace) -> int:
    flows = Flows(load_flows(args.app)) if args.app else None
    old, new = _version(args.old, flows), _version(args.new, flows)
    changes = diff(old, new)
    runs = (
        anyio.run(_check_store, args.store, old, new, dict(args.map), flows) if args.store else []
    )
    stranded = sum(check.stranded for check in runs)
    if args.json:
        print_json(
            {
                "diff": changes.to_dict(),
                "runs": [check.to_dict() for check in runs] if args.store else None,
                "stranded": stranded,
            }
        )
    else:
        _print(changes, runs, args.store is not None)
    return 1 if stranded else 0


# -- OLD and NEW --------------------------------------------------------------------------
def _version(spec: str, flows: Flows | None) -> Blueprint:
    """The blueprint ``spec`` names: a JSON file, a version ``--app`` defines, MODULE:FLOW."""
    if os.path.isfile(spec):
        return _read_json(spec)
    if flows is not None:
        found = _from_app(spec, flows)
        if found is not None:
            return found
    if ":" in spec:
        app_spec_checked = _app_spec(spec)
        return _blueprint([app_spec_checked], _one_flow(app_spec_checked))
    where = " or a flow id or digest of --app" if flows is not None else ""
    raise UsageError(
        f"{spec!r} is no blueprint JSON file, MODULE:FLOW spec{where}; 'flowkit flows show "
        "--app MODULE:FLOW --json > old.json' writes a version's blueprint"
    )


def _read_json(path: str) -> Blueprint:
    with open(path, "rb") as file:
        text = file.read()
    try:
        return Blueprint.from_json(text)
    except FlowkitError as exc:
        raise UsageError(f"{path}: not a blueprint: {exc}") from exc


def _from_app(spec: str, flows: Flows) -> Blueprint | None:
    """The version ``spec`` names among the app's flows: its id (newest version) or a
    digest (a prefix of at least 6 characters, naming one version)."""
    if spec in flows.by_blueprint_id:
        return flows.add(flows.registered(spec, hint="")).blueprint
    if len(spec) < 6:
        return None
    digests = [d for d in flows.by_digest if d.startswith(spec)]
    if len(digests) > 1:
        raise UsageError(f"digest {spec!r} is ambiguous: {', '.join(sorted(digests))}")
    return flows.by_digest[digests[0]].blueprint if digests else None


def _app_spec(spec: str) -> str:
    try:
        return app_spec(spec)
    except ValueError as exc:  # argparse.ArgumentTypeError
        raise UsageError(str(exc)) from exc


def _pair(text: str) -> tuple[str, str]:
    import argparse

    old, equals, new = text.partition("=")
    if not (old and equals and new):
        raise argparse.ArgumentTypeError(f"expected OLD_NODE=NEW_NODE, got {text!r}")
    return old, new


# -- the store ----------------------------------------------------------------------------
async def _check_store(
    url: str, old: Blueprint, new: Blueprint, mapping: dict[str, str], flows: Flows | None
) -> list[RunCheck]:
    """Every unfinished run of OLD's flow, checked against NEW (runs on NEW already pass)."""
    from ..stores import from_url

    store = open_url(from_url, url)
    checks = []
    try:
        cursor = None
        while True:
            page = await store.list_runs(flow=old.id, status=UNFINISHED, limit=PAGE, cursor=cursor)
            for summary in page.runs:
                loaded = await store.load(summary.run_id)
                if loaded is not None and summary.digest != new.digest:
                    checks.append(_check_run(loaded[0], old, new, mapping, flows))
            cursor = page.cursor
            if cursor is None:
                return checks
    finally:
        await store.close()


def _check_run(
    state: RunState, old: Blueprint, new: Blueprint, mapping: dict[str, str], flows: Flows | None
) -> RunCheck:
    digest = str(state.header.get("digest", ""))
    started = old if digest == old.digest else None
    if started is None and flows is not None and digest in flows.by_digest:
        started = flows.by_digest[digest].blueprint
    return RunCheck(
        state.run_id,
        state.status.value,
        digest,
        migration_checks(state, new, mapping, started),
        patch_problems(new.metadata, state),
    )


# -- printing -----------------------------------------------------------------------------
def _print(changes: BlueprintDiff, runs: list[RunCheck], checked: bool) -> None:
    from rich.table import Table

    out = console()
    out.print(
        f"{changes.old_id} {changes.old_digest[:12]} -> {changes.new_id} {changes.new_digest[:12]}"
    )
    rows = _change_rows(changes)
    if rows:
        table = Table("change", "node / edge", "old", "new")
        for row in rows:
            table.add_row(*row)
        out.print(table)
    else:
        out.print("no changes")
    if not checked:
        return
    if runs:
        positions = Table("run", "status", "position", "node in NEW", "verdict")
        for check in runs:
            for run_row in _run_rows(check):
                positions.add_row(*run_row)
        out.print(positions)
    stranded = sum(check.stranded for check in runs)
    out.print(
        f"{len(runs)} unfinished runs of {changes.old_id!r} checked: "
        f"{len(runs) - stranded} can continue on NEW, {stranded} would be stranded"
    )


def _change_rows(changes: BlueprintDiff) -> list[tuple[str, str, str, str]]:
    rows = [("node added", node, "", "") for node in changes.added]
    rows += [("node removed", node, "", "") for node in changes.removed]
    rows += [("node renamed (guess)", n, o, n) for o, n in changes.renamed]
    rows += [("edge added", edge, "", "") for edge in changes.edges_added]
    rows += [("edge removed", edge, "", "") for edge in changes.edges_removed]
    for label, group in (
        ("condition", changes.conditions),
        ("config", changes.configs),
        ("signature", changes.signatures),
        ("params", changes.params),
    ):
        rows += [(f"{label}: {c.what}", c.node, _text(c.old), _text(c.new)) for c in group]
    rows += [("patch added", patch, "", "") for patch in changes.patches_added]
    rows += [("patch removed", patch, "", "") for patch in changes.patches_removed]
    return rows


def _run_rows(check: RunCheck) -> list[tuple[str, str, str, str, str]]:
    rows = [
        (
            check.run_id,
            check.status,
            f"{c.position.kind} {c.position.node}",
            c.new_node,
            "ok" if c.ok else f"STRANDED: {c.problem}",
        )
        for c in check.positions
    ]
    rows += [(check.run_id, check.status, "patches", "", f"STRANDED: {p}") for p in check.problems]
    return rows or [(check.run_id, check.status, "-", "", "ok")]


def _text(value: Any) -> str:
    return "" if value is None else str(value)

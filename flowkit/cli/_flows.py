"""``flowkit flows list | show | lint``: the flows an app module defines."""

from __future__ import annotations

from collections import Counter
from typing import TYPE_CHECKING, Any

from .._errors import BlueprintError, CompileError, FlowkitError
from ..blueprint import LintIssue, analyze, lint
from ..core._program import wait_name
from ..shell._apps import UsageError, app_spec, import_app, load_flows
from ._base import console, example, print_json

if TYPE_CHECKING:
    import argparse

    from rich.table import Table

    from ..blueprint import Blueprint, NodeSpec
    from ._base import Commands

APP_HELP = "module whose flows to read, or module:attr naming a flow or a list of flows"


def register(commands: Commands) -> None:
    """Add ``flows`` and its subcommands to the ``flowkit`` parser."""
    flows = commands.add_parser(
        "flows",
        help="list, show and lint the flows an app defines",
        description="Read the flows an app module defines: list them, show one "
        "(its nodes and edges, Mermaid or JSON), or lint them all.",
        **example("flowkit flows list --app myapp.flows"),
    )
    subcommands = flows.add_subparsers(
        dest="subcommand", metavar="SUBCOMMAND", required=True, title="subcommands"
    )

    listing = subcommands.add_parser(
        "list",
        help="one row per flow: id, version, digest, nodes, waits, subflows",
        description="List the flows an app defines: blueprint id, version, digest prefix, "
        "number and kinds of nodes, the waits, webhooks and sleeps it pauses in, and the "
        "subflows it starts.",
        **example("flowkit flows list --app myapp.flows --json"),
    )
    _app(listing, repeatable=True)
    listing.add_argument("--json", action="store_true", help="print JSON instead of a table")
    listing.set_defaults(run=list_flows)

    show = subcommands.add_parser(
        "show",
        help="one flow: its nodes and edges, or its Mermaid graph or JSON blueprint",
        description="Show one flow: a header, its nodes (kind, implementation, join, "
        "retries, timeout) and its edges.",
        **example("flowkit flows show --app myapp.flows:checkout --mermaid"),
    )
    show.add_argument(
        "--app",
        required=True,
        type=app_spec,
        metavar="MODULE:FLOW",
        help="module and the flow in it (its attribute name or blueprint id); MODULE "
        "alone if it defines one flow",
    )
    output = show.add_mutually_exclusive_group()
    output.add_argument("--mermaid", action="store_true", help="print the Mermaid flowchart")
    output.add_argument("--json", action="store_true", help="print the blueprint's JSON")
    show.set_defaults(run=show_flow)

    check = subcommands.add_parser(
        "lint",
        help="lint every flow; exit 1 if any has an error",
        description="Run the blueprint linter over every flow the app defines and print "
        "each issue (severity, code, node, what to do). Exits 1 if any issue is an "
        "error, 0 if there are only warnings or none.",
        **example("flowkit flows lint --app myapp.flows"),
    )
    _app(check, repeatable=True)
    check.set_defaults(run=lint_flows)


def _app(parser: argparse.ArgumentParser, *, repeatable: bool) -> None:
    parser.add_argument(
        "--app",
        action="append" if repeatable else "store",
        required=True,
        type=app_spec,
        metavar="MODULE[:ATTR]",
        help=f"{APP_HELP}{' (repeatable)' if repeatable else ''}",
    )


# -- flows list ------------------------------------------------------------------------------


def list_flows(args: argparse.Namespace) -> int:
    summaries = [summary(_blueprint(args.app, flow)) for flow in _load(args.app)]
    if args.json:
        print_json(summaries)
        return 0
    table = _table("flow", "version", "digest", "nodes", "kinds", "pauses", "subflows")
    for row in summaries:
        table.add_row(
            row["id"],
            str(row["version"]),
            row["digest"][:12],
            str(row["nodes"]),
            ", ".join(f"{kind} {count}" for kind, count in row["kinds"].items()),
            "\n".join(_pauses(row)),
            ", ".join(row["subflows"]),
        )
    _print(table)
    return 0


def summary(bp: Blueprint) -> dict[str, Any]:
    """What ``flows list`` says about a flow, as JSON data."""
    kinds = Counter(spec.kind for spec in bp.nodes)
    of_kind = {kind: [spec for spec in bp.nodes if spec.kind == kind] for kind in kinds}
    return {
        "id": bp.id,
        "version": bp.version,
        "digest": bp.digest,
        "nodes": len(bp.nodes),
        "kinds": dict(sorted(kinds.items())),
        "waits": [
            {"node": s.id, "signal": wait_name(s), "timeout": s.params.get("timeout")}
            for s in of_kind.get("wait", [])
        ],
        "webhooks": [
            {
                "node": s.id,
                "path": s.params.get("path"),
                "signal": wait_name(s),
                "timeout": s.params.get("timeout"),
            }
            for s in of_kind.get("webhook", [])
        ],
        "sleeps": [  # seconds is None when the flow computes the duration as it runs
            {"node": s.id, "seconds": s.params.get("duration")} for s in of_kind.get("sleep", [])
        ],
        "subflows": list(dict.fromkeys(_child(s) for s in of_kind.get("subflow", []))),
    }


def _pauses(row: dict[str, Any]) -> list[str]:
    waits = [f"wait {w['signal']}{_within(w['timeout'])}" for w in row["waits"]]
    hooks = [f"webhook {h['path']}{_within(h['timeout'])}" for h in row["webhooks"]]
    sleeps = [f"sleep {_sleep(s['seconds'])}" for s in row["sleeps"]]
    return [*waits, *hooks, *sleeps]


# -- flows show ------------------------------------------------------------------------------


def show_flow(args: argparse.Namespace) -> int:
    flow = _one_flow(args.app)
    bp = _blueprint([args.app], flow)
    if args.json:
        print(bp.to_json(indent=2))
        return 0
    if args.mermaid:
        print(bp.mermaid())
        return 0
    from rich.text import Text

    shape = analyze(bp)
    header = Text()
    header.append(bp.id, style="bold")
    header.append(f"  version {bp.version}  digest {bp.digest}\n")
    header.append(
        f"{_count(len(bp.nodes), 'node')}, {_count(len(bp.edges), 'edge')}; starts at "
        f"{', '.join(shape.start_nodes) or '-'}, ends at {', '.join(shape.terminal_nodes) or '-'}"
        f"; depth {shape.depth}, width {shape.width}"
    )
    nodes = _table("node", "kind", "uses", "join", "retries", "timeout", "details")
    for spec in bp.nodes:
        config = spec.config
        nodes.add_row(
            spec.id,
            spec.kind,
            spec.uses or "",
            config.join or "",
            _retries(spec),
            _seconds(config.timeout),
            _details(spec),
        )
    edges = _table("from", "to", "action", "when")
    for edge in bp.edges:
        edges.add_row(edge.source, edge.target, edge.action or "", edge.when or "")
    _print(header, nodes, edges if bp.edges else Text("no edges"))
    return 0


def _one_flow(spec: str) -> Any:
    """The one flow ``MODULE:FLOW`` names: by attribute, else by blueprint id; ``MODULE``
    alone if it defines just one."""
    module_name, colon, name = spec.partition(":")
    if colon and hasattr(import_app(spec, module_name), name):
        flows = _load([spec])  # says so if it is not a flow
    else:
        flows = _load([module_name])
        if colon:
            flows = [flow for flow in flows if _flow_id(flow) == name]
            if not flows:
                raise UsageError(
                    f"--app {spec}: module {module_name!r} has no flow {name!r}; "
                    f"name one of {_ids(_load([module_name]))} (attribute or blueprint id)"
                )
    if len(flows) > 1:
        what = f"{name!r} holds" if colon else f"module {module_name!r} defines"
        raise UsageError(
            f"--app {spec}: {what} {len(flows)} flows; name one of them, e.g. "
            f"--app {module_name}:{_flow_id(flows[0])} (flows: {_ids(flows)})"
        )
    return flows[0]


def _details(spec: NodeSpec) -> str:
    """What a node's kind and params say about it, in a few words."""
    params = spec.params
    if spec.kind == "wait":
        return f"signal {wait_name(spec)}{_within(params.get('timeout'))}"
    if spec.kind == "webhook":
        return (
            f"path {params.get('path')}, signal {wait_name(spec)}{_within(params.get('timeout'))}"
        )
    if spec.kind == "sleep":
        return _sleep(params.get("duration"))
    if spec.kind == "subflow":
        return f"flow {_child(spec)}"
    if spec.kind == "loop" and "start" in params:
        return f"repeats from {params['start']}"
    parts = []
    if params.get("map"):
        parts.append("for each item")
    if spec.config.fallback:
        parts.append(f"fallback {spec.config.fallback}")
    parts.extend(_retry_policy(spec))
    return ", ".join(parts)


def _retries(spec: NodeSpec) -> str:
    """The retries column: a count, ``forever``, or ``=expr`` when the call computes it."""
    computed = (spec.params.get("options") or {}).get("retries")
    if computed is not None:
        return f"={computed}"
    retries = spec.config.retries
    return "forever" if retries is None else str(retries) if retries else ""


def _retry_policy(spec: NodeSpec) -> list[str]:
    config = spec.config
    parts = [f"retry on {', '.join(config.retry_on)}"] if config.retry_on else []
    if config.never_retry:
        parts.append(f"never retry {', '.join(config.never_retry)}")
    if config.retry_timeout is not None:
        parts.append(f"retry for {_seconds(config.retry_timeout)}")
    if config.queue is not None:
        parts.append(f"queue {config.queue}")
    for name, source in (spec.params.get("options") or {}).items():
        if name != "retries":
            parts.append(f"{name}={source}")
    return parts


# -- flows lint ------------------------------------------------------------------------------


def lint_flows(args: argparse.Namespace) -> int:
    from rich.text import Text

    flows = _load(args.app)
    found = [(_flow_id(flow), issue) for flow in flows for issue in _issues(flow)]
    errors = sum(issue.severity == "error" for _, issue in found)
    warnings = len(found) - errors
    checked = _count(len(flows), "flow")
    if not found:
        _print(Text(f"no issues in {checked}", style="green"))
        return 0
    table = _table("flow", "severity", "code", "node", "message")
    for flow_id, issue in found:
        style = "bold red" if issue.severity == "error" else "yellow"
        table.add_row(
            flow_id,
            Text(issue.severity, style=style),
            issue.code,
            issue.node_id or "-",
            issue.message,
        )
    tally = f"{_count(errors, 'error')}, {_count(warnings, 'warning')} in {checked}"
    _print(table, Text(tally, style="bold red" if errors else "yellow"))
    return 1 if errors else 0


def _issues(flow: Any) -> list[LintIssue]:
    """Every lint issue of ``flow``; a flow that does not build reports why as errors."""
    try:
        bp = flow.blueprint
    except BlueprintError as exc:  # the builder validates: its errors, without warnings
        return list(exc.issues)
    except CompileError as exc:
        return [LintIssue("compile-error", None, " ".join(str(exc).split()))]
    return lint(bp, flow.registry)


# -- shared ----------------------------------------------------------------------------------


def _load(specs: list[str]) -> list[Any]:
    """The flows ``--app`` names, also those that do not build (lint says why; the other
    commands say so when they read the blueprint)."""
    return load_flows(specs, include_broken=True)


def _blueprint(specs: list[str], flow: Any) -> Blueprint:
    """The flow's blueprint; a flow that does not build is a UsageError pointing at lint."""
    try:
        return flow.blueprint  # type: ignore[no-any-return]
    except FlowkitError as exc:
        modules = " ".join(f"--app {spec.partition(':')[0]}" for spec in specs)
        raise UsageError(
            f"--app {' '.join(specs)}: flow {_flow_id(flow)!r} does not build: {exc}; "
            f"'flowkit flows lint {modules}' lists every problem"
        ) from exc


def _flow_id(flow: Any) -> str:
    return str(getattr(flow, "id", None) or flow.blueprint.id)


def _ids(flows: list[Any]) -> str:
    return ", ".join(_flow_id(flow) for flow in flows)


def _child(spec: NodeSpec) -> str:
    return str(spec.params.get("blueprint_id") or "?")


def _count(number: int, noun: str) -> str:
    return f"{number} {noun}{'' if number == 1 else 's'}"


def _within(timeout: Any) -> str:
    return f" (timeout {_seconds(timeout)})" if timeout is not None else ""


def _sleep(seconds: Any) -> str:
    return _seconds(seconds) if seconds is not None else "computed at run time"


def _seconds(value: Any) -> str:
    """``90`` -> ``"90s"``, ``3600`` -> ``"1h"``; ``""`` for None."""
    if value is None:
        return ""
    seconds = float(value)
    for unit, size in (("d", 86400.0), ("h", 3600.0), ("m", 60.0)):
        if seconds >= size and seconds % size == 0:
            return f"{seconds / size:g}{unit}"
    return f"{seconds:g}s"


def _table(*columns: str) -> Table:
    from rich import box
    from rich.table import Table

    table = Table(box=box.SIMPLE_HEAD, show_edge=False, pad_edge=False)
    for column in columns:
        table.add_column(column, overflow="fold")
    return table


def _print(*renderables: Any) -> None:
    """Print each of ``renderables``, a blank line between them."""
    out = console()
    for index, renderable in enumerate(renderables):
        if index:
            out.print()
        out.print(renderable)

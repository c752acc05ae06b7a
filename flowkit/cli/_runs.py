"""``flowkit runs list | start | cancel | signal | query | update | retry``: the runs a
store holds (``purge`` is in ``_purge``)."""

from __future__ import annotations

import argparse
import json
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import anyio

from .. import _clock as clock
from .._durations import to_seconds
from .._errors import ConfigurationError
from ..core._state import RunStatus
from ..shell._apps import app_spec, load_flows
from . import _purge as purge
from . import _show as show
from ._base import console, example, open_url, print_json

if TYPE_CHECKING:
    from ..stores._protocol import RunSummary
    from ._base import Commands

DEFAULT_URL = "sqlite:///flowkit.db"  # what `flowkit worker` uses when given no --store
VERSION_CHARS = 12  # digest characters `runs list` shows: the version that started the run
STATUSES = [status.value for status in RunStatus]


def register(commands: Commands) -> None:
    """Add ``runs`` and its subcommands to the ``flowkit`` parser."""
    runs = commands.add_parser(
        "runs",
        help="list the runs a store holds; start, cancel, signal or retry one; purge old ones",
        description="The runs a store holds: list them (newest first, filtered), start "
        "one, cancel one, send one a signal, retry a failed one, or purge the old ones.",
        **example("flowkit runs list --status failed --since 12h --store postgresql://db/app"),
    )
    subcommands = runs.add_subparsers(
        dest="subcommand", metavar="SUBCOMMAND", required=True, title="subcommands"
    )

    listing = subcommands.add_parser(
        "list",
        help="one row per run, newest first",
        description="List runs, newest first: id, flow, version (the digest prefix of the "
        "version that started the run, as 'flows list' shows it), status, when it started, "
        "how long it ran, its error and tags. Filters combine.",
        **example("flowkit runs list --flow checkout --status failed --tag customer=c1 --json"),
    )
    _store(listing)
    listing.add_argument("--flow", help="only runs of this flow (its blueprint id)")
    listing.add_argument(
        "--status", action="append", choices=STATUSES, help="only runs in this status (repeatable)"
    )
    listing.add_argument(
        "--tag",
        action="append",
        type=_tag,
        default=[],
        metavar="KEY=VALUE",
        help="only runs tagged so (repeatable: every tag must match)",
    )
    listing.add_argument(
        "--since", type=_age, metavar="AGE", help="only runs started within AGE, e.g. 2h or 7d"
    )
    listing.add_argument(
        "--limit", type=_limit, default=50, help="at most this many runs (1-1000; default 50)"
    )
    listing.add_argument("--json", action="store_true", help="print JSON instead of a table")
    listing.set_defaults(run=list_runs)

    start = subcommands.add_parser(
        "start",
        help="start a run of a flow, by its id; print the run id",
        description="Start a run of flow FLOW (its id, as flowkit flows list shows it) with "
        "the inputs --input gives, and print the run id; the workers on --transport run it. "
        "An existing --run-id is left as it is (a start is idempotent per run id).",
        **example('flowkit runs start checkout --input \'{"order_id": "A1"}\' --app myapp.flows'),
    )
    start.add_argument("flow", metavar="FLOW", help="the flow's id (flowkit flows list)")
    start.add_argument(
        "--input",
        type=_inputs,
        default={},
        metavar="JSON",
        help="the flow's inputs, a JSON object (default {})",
    )
    start.add_argument("--run-id", metavar="ID", help="the run's id (default: a new one)")
    start.add_argument(
        "--tag",
        action="append",
        type=_tag,
        default=[],
        metavar="KEY=VALUE",
        help="tag the run so, for runs list --tag (repeatable)",
    )
    _client_flags(start, json_help="print the run id, flow and status as JSON")
    start.set_defaults(run=start_run)

    cancel = subcommands.add_parser(
        "cancel",
        help="cancel a run (its nodes' finally blocks run on their workers)",
        description="Cancel a run; needs the flow's code (--app) and the workers' --transport.",
        **example("flowkit runs cancel 5f2c... --app myapp.flows --store sqlite:///flowkit.db"),
    )
    cancel.add_argument("run_id", metavar="RUN_ID")
    _client_flags(cancel)
    cancel.set_defaults(run=cancel_run)

    signal = subcommands.add_parser(
        "signal",
        help="send a run's wait a signal",
        description="Deliver signal NAME to the run (or to the child run waiting for it); "
        "needs the flow's code (--app) and the workers' --transport.",
        **example("flowkit runs signal 5f2c... approval --data '{\"ok\": true}' --app myapp.flows"),
    )
    signal.add_argument("run_id", metavar="RUN_ID")
    signal.add_argument("name", metavar="NAME", help="the signal name the wait listens for")
    signal.add_argument(
        "--data", type=_json, default=None, metavar="JSON", help="the signal's payload, as JSON"
    )
    _client_flags(signal)
    signal.set_defaults(run=signal_run)

    _register_handlers(subcommands)

    retry = subcommands.add_parser(
        "retry",
        help="resume a failed run where it failed",
        description="Resume a failed run: the failed node, and whatever else was under way "
        "when the run failed, runs again with fresh attempts; completed nodes do not run "
        "again. Needs the flow's code (--app) and the workers' --transport.",
        **example("flowkit runs retry 5f2c... --app myapp.flows --store sqlite:///flowkit.db"),
    )
    retry.add_argument("run_id", metavar="RUN_ID")
    _client_flags(retry)
    retry.set_defaults(run=retry_run)

    purge.register(subcommands, store=_store, age=_age)
    show.register(subcommands, store=_store)


def _store(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--store",
        default=DEFAULT_URL,
        metavar="URL",
        help=f"the store the runs are in (default {DEFAULT_URL}, as flowkit worker)",
    )


def _register_handlers(subcommands: Any) -> None:
    """``runs query`` and ``runs update``."""
    query = subcommands.add_parser(
        "query",
        help="ask a run's query (declared with @flow_fn.query); prints its answer as JSON",
        description="Compute query NAME of the run from its flow variables as stored "
        "(running, awaiting or finished) and print the answer as JSON; needs the flow's "
        "code (--app).",
        **example("flowkit runs query 5f2c... contents --app shop.flows --store sqlite:///x.db"),
    )
    query.add_argument("run_id", metavar="RUN_ID")
    query.add_argument("name", metavar="NAME", help="the query's name")
    _store(query)
    query.add_argument(
        "--app",
        action="append",
        default=[],
        type=app_spec,
        metavar="MODULE[:ATTR]",
        help="module defining the run's flow and its queries (repeatable)",
    )
    query.set_defaults(run=query_run)

    update = subcommands.add_parser(
        "update",
        help="send a run an update (declared with @flow_fn.update); prints its reply as JSON",
        description="Deliver update NAME once the run waits for it, validated first "
        "(a rejected update records nothing), and print the reply as JSON once the run "
        "reached its next wait or finished; needs the flow's code (--app) and the "
        "workers' --transport.",
        **example("flowkit runs update 5f2c... add_item --data '\"lamp\"' --app shop.flows"),
    )
    update.add_argument("run_id", metavar="RUN_ID")
    update.add_argument("name", metavar="NAME", help="the update's name")
    update.add_argument(
        "--data", type=_json, default=None, metavar="JSON", help="the update's payload, as JSON"
    )
    update.add_argument(
        "--timeout", type=float, default=60.0, metavar="SECONDS", help="give up after (60)"
    )
    _client_flags(update, json_help="(the reply is always JSON)")
    update.set_defaults(run=update_run)


def _client_flags(
    parser: argparse.ArgumentParser, *, json_help: str = "print the run's result as JSON"
) -> None:
    _store(parser)
    parser.add_argument(
        "--transport",
        default=DEFAULT_URL,
        metavar="URL",
        help=f"the workers' transport, for the nodes that follow (default {DEFAULT_URL})",
    )
    parser.add_argument(
        "--app",
        action="append",
        required=True,
        type=app_spec,
        metavar="MODULE[:ATTR]",
        help="module defining the run's flow (repeatable)",
    )
    parser.add_argument("--json", action="store_true", help=json_help)


def _tag(text: str) -> tuple[str, str]:
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE, e.g. customer=c1; got {text!r}")
    return key, value


def _age(text: str) -> float:
    try:
        seconds = to_seconds(text)
    except (ConfigurationError, TypeError, ValueError):
        raise argparse.ArgumentTypeError(
            f"expected an age such as 30m, 2h or 7d; got {text!r}"
        ) from None
    if seconds <= 0:
        raise argparse.ArgumentTypeError(f"expected an age above zero, such as 2h; got {text!r}")
    return seconds


def _limit(text: str) -> int:
    if not text.isdigit() or not 1 <= int(text) <= 1000:
        raise argparse.ArgumentTypeError(f"expected a whole number from 1 to 1000; got {text!r}")
    return int(text)


def _json(text: str) -> Any:
    try:
        return json.loads(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(
            f"not JSON ({exc}); quote it, e.g. --data '{{\"ok\": true}}'"
        ) from None


def _inputs(text: str) -> dict[str, Any]:
    value = _json(text)
    if not isinstance(value, dict):
        raise argparse.ArgumentTypeError(
            f'expected a JSON object of the flow\'s inputs, e.g. \'{{"order_id": "A1"}}\'; '
            f"got {text!r}"
        )
    return value


# -- runs list ------------------------------------------------------------------------------


def list_runs(args: argparse.Namespace) -> int:
    page = anyio.run(_list, args)
    if args.json:
        print_json([_summary(run) for run in page])
        return 0
    from rich.table import Column, Table

    run_column = Column("run", no_wrap=True, min_width=32)  # whole: people copy it
    table = Table(run_column, "flow", "version", "status", "started (UTC)", "ran", "error", "tags")
    for run in page:
        table.add_row(
            run.run_id,
            run.flow,
            run.digest[:VERSION_CHARS],
            run.status,
            _when(run.created_at),
            _ran(run),
            f"{run.error_type or ''}: {run.error_message or ''}" if run.error_type else "",
            ", ".join(f"{k}={v}" for k, v in sorted(run.tags.items())),
        )
    console().print(table)
    return 0


async def _list(args: argparse.Namespace) -> list[RunSummary]:
    from ..stores import from_url

    store = open_url(from_url, args.store)
    try:
        since = clock.now() - args.since if args.since is not None else None
        page = await store.list_runs(
            flow=args.flow,
            status=args.status,
            tags=dict(args.tag) or None,
            created_after=since,
            limit=args.limit,
        )
        return list(page.runs)
    finally:
        await store.close()


def _summary(run: RunSummary) -> dict[str, Any]:
    return {
        "run_id": run.run_id,
        "flow": run.flow,
        "digest": run.digest,
        "status": run.status,
        "parent": run.parent,
        "created_at": _iso(run.created_at),
        "updated_at": _iso(run.updated_at),
        "finished_at": _iso(run.finished_at),
        "error_type": run.error_type,
        "error_message": run.error_message,
        "tags": run.tags,
    }


def _iso(at: float | None) -> str | None:
    return None if at is None else datetime.fromtimestamp(at, UTC).isoformat()


def _when(at: float) -> str:
    return datetime.fromtimestamp(at, UTC).strftime("%Y-%m-%d %H:%M:%S")


def _ran(run: RunSummary) -> str:
    end = run.finished_at if run.finished_at is not None else clock.now()
    seconds = max(0.0, end - run.created_at)
    return f"{seconds:.1f}s" if seconds < 120 else f"{seconds / 60:.1f}m"


# -- runs start / cancel / signal / retry --------------------------------------------------


def start_run(args: argparse.Namespace) -> int:
    async def start(client: Any) -> Any:
        handle = await client.start(
            args.flow, run_id=args.run_id, tags=dict(args.tag) or None, **args.input
        )
        return await client.result(handle.run_id)

    result = _client_call(args, start)
    if args.json:
        print_json({"run_id": result.run_id, "flow": args.flow, "status": result.status.value})
    else:
        console().print(result.run_id)  # alone, for RUN=$(flowkit runs start ...)
    return 0


def cancel_run(args: argparse.Namespace) -> int:
    return _with_client(args, lambda client: client.cancel(args.run_id))


def signal_run(args: argparse.Namespace) -> int:
    return _with_client(args, lambda client: client.signal(args.run_id, args.name, args.data))


def query_run(args: argparse.Namespace) -> int:
    async def main() -> Any:
        from ..runtime._runtime import Runtime
        from ..stores import from_url as store_from_url

        store = open_url(store_from_url, args.store)
        try:
            flows = load_flows(args.app) if args.app else []
            return await Runtime(store=store, flows=flows).query(args.run_id, args.name)
        finally:
            await store.close()

    print_json(anyio.run(main))
    return 0


def update_run(args: argparse.Namespace) -> int:
    reply = _client_call(
        args, lambda client: client.update(args.run_id, args.name, args.data, timeout=args.timeout)
    )
    print_json(reply)
    return 0


def retry_run(args: argparse.Namespace) -> int:
    return _with_client(args, lambda client: client.retry(args.run_id))


def _with_client(args: argparse.Namespace, act: Any) -> int:
    result = _client_call(args, act)
    if args.json:
        print_json(
            {"run_id": result.run_id, "status": result.status.value, "output": result.output}
        )
    else:
        console().print(f"{result.run_id}: {result.status.value}")
    return 0


def _client_call(args: argparse.Namespace, act: Any) -> Any:
    """``act(client)`` with a client on the flags' store, transport and flows."""

    async def main() -> Any:
        from ..stores import from_url as store_from_url
        from ..transports import from_url as transport_from_url
        from ..worker import Client

        flows = load_flows(args.app)
        store = open_url(store_from_url, args.store)
        transport = open_url(transport_from_url, args.transport)
        try:
            return await act(Client(transport, store, flows=flows))
        finally:
            await transport.close()
            await store.close()

    return anyio.run(main)

"""``flowkit ui``: serve the web console (``flowkit.ui.app``) with hypercorn.

Bound to a loopback address (the default, 127.0.0.1:8080) it serves this machine
only; bound elsewhere it refuses to start without ``--token`` (or
``FLOWKIT_UI_TOKEN``), unless ``--insecure`` says that is meant. With ``--app``
the console draws the flows' graphs and, unless ``--read-only``, cancels and
signals runs through a ``flowkit.Client`` on ``--transport``.
"""

from __future__ import annotations

import ipaddress
import os
import sys
from typing import TYPE_CHECKING, Any

from .._errors import MissingDependency
from ..shell._apps import UsageError, app_spec, load_flows
from ._base import example, open_url
from ._runs import DEFAULT_URL

if TYPE_CHECKING:
    import argparse

    from ._base import Commands

DEFAULT_BIND = "127.0.0.1:8080"
TOKEN_VARIABLE = "FLOWKIT_UI_TOKEN"


def register(commands: Commands) -> None:
    """Add ``ui`` to the ``flowkit`` parser."""
    ui = commands.add_parser(
        "ui",
        help="serve the web console: runs, their paths, the flows, actions",
        description="Serve the web console over a store: the runs (filtered, live), each "
        "run's path on its flow's graph, its waits, payloads and error, the flows and "
        "their lint findings, and (with --app) cancel, signal and retry. Serves "
        f"{DEFAULT_BIND} by default; bound elsewhere it needs --token.",
        **example("flowkit ui --store sqlite:///flowkit.db --app myapp.flows"),
    )
    ui.add_argument(
        "--store",
        default=DEFAULT_URL,
        metavar="URL",
        help=f"the runs' store (default {DEFAULT_URL})",
    )
    ui.add_argument(
        "--app",
        action="append",
        default=[],
        type=app_spec,
        metavar="MODULE[:ATTR]",
        help="module defining the flows: their graphs, and the actions (repeatable)",
    )
    ui.add_argument(
        "--transport",
        default=DEFAULT_URL,
        metavar="URL",
        help=f"the workers' transport, for the actions (default {DEFAULT_URL})",
    )
    ui.add_argument(
        "--bind",
        default=DEFAULT_BIND,
        type=_bind,
        metavar="HOST:PORT",
        help=f"default {DEFAULT_BIND}",
    )
    ui.add_argument(
        "--token",
        default=os.environ.get(TOKEN_VARIABLE) or None,
        metavar="T",
        help="every request needs it (login form, or Authorization: Bearer T); "
        f"default ${TOKEN_VARIABLE}",
    )
    ui.add_argument("--read-only", action="store_true", help="no actions: only read the store")
    ui.add_argument(
        "--insecure",
        action="store_true",
        help="serve a non-loopback address without a token (anyone who reaches it may act)",
    )
    ui.set_defaults(run=serve_ui)


def _bind(text: str) -> tuple[str, int]:
    import argparse

    host, colon, port = text.rpartition(":")
    host = host.strip("[]")
    if not colon or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise argparse.ArgumentTypeError(f"expected HOST:PORT, e.g. {DEFAULT_BIND}; got {text!r}")
    return host, int(port)


def loopback(host: str) -> bool:
    """Whether ``host`` serves this machine only."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:  # a host name: it may resolve to anything
        return False


def check_exposure(host: str, port: int, token: str | None, insecure: bool) -> None:
    """Refuse to serve a non-loopback address without a token, unless ``insecure``."""
    if token is None and not insecure and not loopback(host):
        raise UsageError(
            f"--bind {host}:{port} serves other machines: give --token T (or set "
            f"{TOKEN_VARIABLE}) so every request needs it, or --insecure to serve without one"
        )


def serve_ui(args: argparse.Namespace) -> int:
    host, port = args.bind
    check_exposure(host, port, args.token, args.insecure)
    try:
        from hypercorn.asyncio import serve
        from hypercorn.config import Config
    except ImportError as exc:
        raise MissingDependency("flowkit ui", "ui") from exc
    import asyncio

    config = Config()
    config.bind = [f"fd://{_listen(host, port)}"]  # listening before it is announced
    config.accesslog = None

    async def main() -> None:
        console, closers = _console(args)
        try:
            _announce(host, port, args, console)
            await serve(console, config)
        finally:
            for close in closers:
                await close()

    asyncio.run(main())  # Starlette, and so the console, runs on asyncio
    return 0


def _listen(host: str, port: int) -> int:
    """A socket listening on ``host:port``, as a file descriptor hypercorn takes over."""
    import socket

    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    listener = socket.socket(family, socket.SOCK_STREAM)
    try:
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind((host, port))
        listener.listen(128)
    except OSError as exc:
        listener.close()
        raise UsageError(f"--bind {host}:{port}: cannot listen there: {exc.strerror}") from exc
    return listener.detach()


def _console(args: argparse.Namespace) -> tuple[Any, list[Any]]:
    from ..stores import from_url as store_from_url
    from ..ui import app

    flows = load_flows(args.app) if args.app else []
    store = open_url(store_from_url, args.store)
    closers = [store.close]
    client = None
    if flows and not args.read_only:
        from ..transports import from_url as transport_from_url
        from ..worker import Client

        transport = open_url(transport_from_url, args.transport)
        closers.insert(0, transport.close)
        client = Client(transport, store, flows=flows)
    console = app(
        store=store, flows=flows, client=client, token=args.token, read_only=args.read_only
    )
    return console, closers


def _announce(host: str, port: int, args: argparse.Namespace, console: Any) -> None:
    shown = f"[{host}]" if ":" in host else host
    mode = (
        "read-only"
        if args.read_only
        else "actions on"
        if console.operations
        else ("read-only: give --app to cancel, signal and retry runs")
    )
    guard = "token required" if args.token else "no token"
    print(f"flowkit ui: serving http://{shown}:{port}/ ({mode}; {guard})", file=sys.stderr)
    sys.stderr.flush()

"""The worker command line: parse flags, build transport and store, run until SIGTERM."""

from __future__ import annotations

import argparse
import functools
import math
import os
import signal
import sys
import threading
from typing import TYPE_CHECKING, Any, NoReturn
from urllib.parse import urlsplit

import anyio
import structlog

from .._durations import to_seconds
from .._errors import ConfigurationError, FlowkitError
from .._version import __version__
from ..shell._apps import UsageError as UsageError
from ..shell._apps import app_spec, load_flows, load_schedules

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable

DEFAULT_URL = "sqlite:///flowkit.db"
PROG = "python -m flowkit.worker"
ERROR = "flowkit.worker: error: "  # how every bad flag and start-up failure begins
MAX_LEASE = 7 * 86400.0  # seconds; heartbeats extend a lease, so a long node needs no more
CLOSE_TIMEOUT = 10.0  # seconds closing the transport, then the store, may take once drained
SHUTDOWN_TIMEOUT = 30.0  # seconds from the end of the drain to the process's exit, at most
log = structlog.get_logger("flowkit.worker")


class _Parser(argparse.ArgumentParser):
    """argparse, but a bad flag is reported in one line, without the usage block."""

    error_prefix = ERROR

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.error_prefix}{message} (see --help)\n")


EPILOG = (
    "A --transport or --store URL may set the implementation's options in its query "
    "string, e.g. 'postgresql://db/app?schema=flowkit&sslmode=require' (docs/workers.md, "
    "'URL options', lists them)."
)


class _Formatter(argparse.HelpFormatter):
    """argparse's help, with each paragraph of a description or epilog filled on its own
    and an ``example:`` line printed as it is."""

    def _fill_text(self, text: str, width: int, indent: str) -> str:
        paragraphs = []
        for paragraph in text.split("\n\n"):
            if paragraph.startswith("example: "):
                paragraphs.append(indent + paragraph)
            else:
                paragraphs.append(super()._fill_text(paragraph, width, indent))
        return "\n\n".join(paragraphs)


def parser(
    prog: str = PROG, error: str = ERROR, example: str | None = None
) -> argparse.ArgumentParser:
    """The worker's flags. ``prog``, ``error`` (how an error line begins) and ``example``
    (a command line shown first in the epilog) let another command line (``flowkit
    worker``) offer them under its own name."""
    cli = _Parser(
        prog=prog,
        description="Run a flowkit worker: execute the nodes of the given flows from a "
        "transport, with run state in a store. SIGTERM or SIGINT drains in-flight nodes "
        "and exits 0.",
        epilog=EPILOG if example is None else f"example: {example}\n\n{EPILOG}",
        formatter_class=_Formatter,
    )
    cli.add_argument(
        "--app",
        action="append",
        required=True,
        type=app_spec,
        metavar="MODULE[:ATTR]",
        help="module whose flows to serve (and whose module-level flowkit.Schedule "
        "objects to run), or module:attr naming a flow or a list of flows (repeatable)",
    )
    cli.add_argument(
        "--transport",
        default=DEFAULT_URL,
        type=_url,
        metavar="URL",
        help="memory://, sqlite:///path.db, postgresql://..., amqp://..., "
        "kafka://host:port, redis://..., pubsub://project, servicebus://..., "
        "sqs://region/prefix, nats://host:port (default: %(default)s)",
    )
    cli.add_argument(
        "--store",
        default=DEFAULT_URL,
        type=_url,
        metavar="URL",
        help="memory://, sqlite:///path.db, postgresql://..., redis://... (default: %(default)s)",
    )
    cli.add_argument(
        "--concurrency",
        type=_concurrency,
        default=32,
        help="node executions at once, 1 or more (default: %(default)s)",
    )
    cli.add_argument(
        "--queue", type=_queue, default="flowkit", help="queue name (default: %(default)s)"
    )
    cli.add_argument(
        "--lease",
        type=_lease,
        default=30.0,
        help="seconds before an unfinished dispatch is republished, above 0 and at most "
        f"{MAX_LEASE:g} (a week) (default: %(default)s)",
    )
    cli.add_argument(
        "--retention",
        type=_retention,
        metavar="AGE",
        help="delete runs that finished longer ago than AGE (e.g. 30d, 12h), in the "
        "background in small batches (default: keep every run)",
    )
    cli.add_argument(
        "--webhooks",
        type=_host_port,
        metavar="HOST:PORT",
        help="also serve the webhook endpoints on HOST:PORT (needs hypercorn)",
    )
    cli.add_argument(
        "--log-format",
        choices=["json", "console"],
        default="console",
        help="log line format (default: %(default)s)",
    )
    cli.add_argument(
        "--log-level",
        default="INFO",
        type=str.upper,
        choices=["DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"],
        help="log level (default: %(default)s)",
    )
    cli.add_argument("--version", action="version", version=f"flowkit {__version__}")
    cli.error_prefix = error
    return cli


# -- flag values: each raises ArgumentTypeError saying what to pass instead -------------------


def _concurrency(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(
            f"expected a whole number of 1 or more, e.g. 32; got {text!r}"
        )
    return value


def _lease(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not 0 < value <= MAX_LEASE:  # NaN and infinity too
        raise argparse.ArgumentTypeError(
            f"expected seconds above 0 and at most {MAX_LEASE:g} (a week), e.g. 30; got {text!r}"
        )
    return value


def _retention(text: str) -> float:
    try:
        value = to_seconds(text)
    except ConfigurationError:
        value = math.nan
    if not 0 < value < math.inf:
        raise argparse.ArgumentTypeError(
            f"expected an age above 0 such as 30d, 12h or 3600 (seconds); got {text!r}"
        )
    return value


def _queue(text: str) -> str:
    if not text.strip() or text != text.strip() or not text.isprintable():
        raise argparse.ArgumentTypeError(
            "expected a queue name, not empty, without spaces around it or control "
            f"characters, e.g. flowkit; got {text!r}"
        )
    return text


def _url(text: str) -> str:
    """A URL that can be read; which transports or stores it names is checked later."""
    example = f"e.g. {DEFAULT_URL} or redis://127.0.0.1:6379/0"
    if not text.strip():
        raise argparse.ArgumentTypeError(f"expected a URL, {example}; got {text!r}")
    try:
        parts = urlsplit(text)
        _ = parts.port  # reading it checks it
    except ValueError as exc:  # the URL is not echoed: it may hold a password
        raise argparse.ArgumentTypeError(
            f"cannot read the URL ({exc}); pass one {example}"
        ) from None
    if not parts.scheme:
        raise argparse.ArgumentTypeError(f"the URL has no scheme; pass one {example}")
    return text


def _host_port(text: str) -> tuple[str, int]:
    host, _, port = text.rpartition(":")
    if not host or not host.isprintable() or " " in host or not _is_port(port):
        raise argparse.ArgumentTypeError(
            f"expected HOST:PORT with a port from 1 to 65535, e.g. 127.0.0.1:8080; got {text!r}"
        )
    return host, int(port)


def _is_port(text: str) -> bool:
    return text.isascii() and text.isdigit() and 1 <= int(text) <= 65535


async def serve(args: argparse.Namespace, *, bounded_exit: bool = False) -> None:
    """Serve until a signal drains the worker; with ``bounded_exit`` (the process is the
    worker's alone) the process also ends at most SHUTDOWN_TIMEOUT after the drain."""
    from ..stores import from_url as store_from_url
    from ..transports import from_url as transport_from_url
    from ._worker import Worker

    flows = load_flows(args.app)
    store = _build("--store", store_from_url, args.store)
    transport = _build("--transport", transport_from_url, args.transport)
    worker = Worker(
        flows,
        transport,
        store,
        concurrency=args.concurrency,
        queue=args.queue,
        lease=args.lease,
        retention=args.retention,
        schedules=load_schedules(args.app),
    )
    worker.fail_fast = True  # a broker unreachable at start exits 2
    failed = True
    try:
        await store.info("flowkit-startup-check")  # fails fast on an unreachable store
        await _serve_until_stopped(args, flows, worker)
        failed = False
    finally:
        if bounded_exit:
            _exit_within(SHUTDOWN_TIMEOUT, code=2 if failed else 0)
        await _close_bounded("transport", transport)
        await _close_bounded("store", store)
    log.info("worker stopped", processed=worker.processed)


def _build(flag: str, from_url: Callable[[str], Any], url: str) -> Any:
    """The transport or store ``url`` names. flowkit's own errors say which URL is wrong
    (masking its password); anything else the URL's parsing raises is a UsageError."""
    try:
        return from_url(url)
    except FlowkitError:
        raise
    except ValueError as exc:
        raise UsageError(f"{flag}: cannot use the URL: {exc}") from exc


async def _serve_until_stopped(args: argparse.Namespace, flows: list[Any], worker: Any) -> None:
    """Run the worker (and the webhook server) until a signal has drained it."""
    from ._client import Client

    stopping = anyio.Event()
    async with anyio.create_task_group() as tg:
        await tg.start(_stop_on_signal, worker, stopping)
        async with anyio.create_task_group() as serving:
            if args.webhooks:
                client = Client(worker.transport, worker.store, queue=args.queue, flows=flows)
                host, port = args.webhooks
                serving.start_soon(_serve_webhooks, client, host, port, stopping.wait)
            if await _connect(worker.transport, args.queue, stopping):
                # a broker reached by connect(): losing it later is an outage to wait out
                worker.fail_fast = not hasattr(worker.transport, "connect")
                log.info(
                    "worker started",
                    flows=[_name(f) for f in flows],
                    queue=args.queue,
                    concurrency=args.concurrency,
                )
                await worker.run()
            stopping.set()  # the webhook server shuts down gracefully, then `serving` ends
        tg.cancel_scope.cancel()


async def _connect(transport: Any, queue: str, stopping: anyio.Event) -> bool:
    """Reach the broker and declare ``queue`` (the transport's optional ``connect``): an
    unreachable broker raises its TransportError before the worker says it started. False
    if a signal stops the worker first (the handshake is cancelled: nothing was taken)."""
    connect = getattr(transport, "connect", None)
    if connect is None:
        return not stopping.is_set()
    async with anyio.create_task_group() as tg:

        async def cancel_when_stopping() -> None:
            await stopping.wait()
            tg.cancel_scope.cancel()

        tg.start_soon(cancel_when_stopping)
        await connect(queue)
        tg.cancel_scope.cancel()
    return not stopping.is_set()


async def _close_bounded(what: str, resource: Any) -> None:
    """Close the transport or store, giving up (with a warning) after CLOSE_TIMEOUT."""
    with anyio.move_on_after(CLOSE_TIMEOUT, shield=True) as scope:
        try:
            await resource.close()
        except Exception as exc:  # the work is drained: a failed close loses nothing
            log.warning(f"closing the {what} failed", error=f"{type(exc).__name__}: {exc}")
    if scope.cancelled_caught:
        log.warning(f"closing the {what} took over {CLOSE_TIMEOUT:g}s; left open", of=resource)


def _exit_within(seconds: float, *, code: int) -> None:
    """End the process ``seconds`` from now if it has not ended by then.

    A drained worker has nothing left to do, but a broker library may leave a
    task that ignores cancellation or a non-daemon thread behind, and either
    keeps the interpreter from exiting: this is the bound on that.
    """
    timer = threading.Timer(seconds, _force_exit, args=(seconds, code))
    timer.daemon = True
    timer.start()


def _force_exit(seconds: float, code: int) -> None:
    this = (threading.current_thread(), threading.main_thread())
    others = [t.name for t in threading.enumerate() if t not in this]
    log.error(
        "the worker stopped but the process did not exit; exiting now (a library left "
        "a task that ignores cancellation or a thread running)",
        waited=f"{seconds:g}s",
        threads=others,
    )
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


def _name(flow: Any) -> str:
    return str(getattr(flow, "id", None) or flow.blueprint.id)


async def _stop_on_signal(
    worker: Any, stopping: anyio.Event, *, task_status: Any = anyio.TASK_STATUS_IGNORED
) -> None:
    with anyio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
        task_status.started()
        async for signum in signals:
            log.info("draining", signal=signal.Signals(signum).name)
            stopping.set()
            worker.stop()
            return


async def _serve_webhooks(
    client: Any, host: str, port: int, shutdown: Callable[[], Awaitable[None]]
) -> None:
    try:
        from hypercorn.asyncio import serve as hypercorn_serve
        from hypercorn.config import Config
    except ImportError as exc:
        from .._errors import MissingDependency

        raise MissingDependency("--webhooks", "webhooks") from exc
    from ..webhooks import app

    config = Config()
    config.bind = [f"{host}:{port}"]
    config.accesslog = None
    # With a shutdown_trigger hypercorn leaves SIGTERM/SIGINT to the worker (which drains);
    # without one it installs its own handlers and only the webhook server would stop.
    await hypercorn_serve(app(client), config, shutdown_trigger=shutdown)  # type: ignore[arg-type]


def main(
    argv: list[str] | None = None,
    *,
    prog: str = PROG,
    error: str = ERROR,
    example: str | None = None,
) -> int:
    """Run the worker command line; ``prog``, ``error`` and ``example`` as for
    :func:`parser`."""
    args = parser(prog, error, example).parse_args(argv)
    from ..observability import configure_logging

    configure_logging(args.log_format, args.log_level)
    try:
        anyio.run(functools.partial(serve, args, bounded_exit=True))
    except (FlowkitError, OSError, BaseExceptionGroup) as exc:
        reason = _first_reason(exc)
        if reason is None:
            raise
        print(f"{error}{' '.join(str(reason).split())}", file=sys.stderr)
        return 2
    return 0


def _first_reason(exc: BaseException) -> BaseException | None:
    """The FlowkitError or OSError behind ``exc`` (task groups wrap errors in groups)."""
    if isinstance(exc, FlowkitError | OSError):
        return exc
    if isinstance(exc, BaseExceptionGroup):
        for inner in exc.exceptions:
            found = _first_reason(inner)
            if found is not None:
                return found
    return None

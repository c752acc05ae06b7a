"""The worker command line: parse flags, build transport and store, run until SIGTERM."""

from __future__ import annotations

import argparse
import functools
import importlib
import os
import signal
import sys
import threading
from typing import TYPE_CHECKING, Any

import anyio
import structlog

from .._errors import FlowkitError
from .._version import __version__

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable

DEFAULT_URL = "sqlite:///flowkit.db"
CLOSE_TIMEOUT = 10.0  # seconds closing the transport, then the store, may take once drained
SHUTDOWN_TIMEOUT = 30.0  # seconds from the end of the drain to the process's exit, at most
log = structlog.get_logger("flowkit.worker")


class UsageError(FlowkitError):
    """A flag is wrong; the message says which and how to fix it."""


def parser() -> argparse.ArgumentParser:
    cli = argparse.ArgumentParser(
        prog="python -m flowkit.worker",
        description="Run a flowkit worker: execute the nodes of the given flows from a "
        "transport, with run state in a store. SIGTERM or SIGINT drains in-flight nodes "
        "and exits 0.",
        epilog="A --transport or --store URL may set the implementation's options in its "
        "query string, e.g. 'postgresql://db/app?schema=flowkit&sslmode=require' "
        "(docs/workers.md, 'URL options', lists them).",
    )
    cli.add_argument(
        "--app",
        action="append",
        required=True,
        metavar="MODULE[:ATTR]",
        help="module whose flows to serve, or module:attr naming a flow or a list "
        "of flows (repeatable)",
    )
    cli.add_argument(
        "--transport",
        default=DEFAULT_URL,
        metavar="URL",
        help="memory://, sqlite:///path.db, postgresql://..., amqp://..., "
        "kafka://host:port, redis://..., pubsub://project, servicebus://..., "
        "sqs://region/prefix, nats://host:port (default: %(default)s)",
    )
    cli.add_argument(
        "--store",
        default=DEFAULT_URL,
        metavar="URL",
        help="memory://, sqlite:///path.db, postgresql://..., redis://... (default: %(default)s)",
    )
    cli.add_argument(
        "--concurrency",
        type=_positive(int),
        default=32,
        help="node executions at once (default: %(default)s)",
    )
    cli.add_argument("--queue", default="flowkit", help="queue name (default: %(default)s)")
    cli.add_argument(
        "--lease",
        type=_positive(float),
        default=30.0,
        help="seconds before an unfinished dispatch is republished (default: %(default)s)",
    )
    cli.add_argument(
        "--webhooks",
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
    return cli


def _positive(kind: Any) -> Any:
    """An argparse type accepting only numbers above zero."""

    def parse(text: str) -> Any:
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
        if value <= 0:
            raise argparse.ArgumentTypeError(f"must be above 0, got {text}")
        return value

    return parse


def load_flows(specs: list[str]) -> list[Any]:
    """Import ``module`` or ``module:attr`` and collect the flows they define."""
    flows: list[Any] = []
    for spec in specs:
        module_name, _, attr = spec.partition(":")
        try:
            module = importlib.import_module(module_name)
        except ImportError as exc:
            raise UsageError(f"--app {spec}: cannot import {module_name!r}: {exc}") from exc
        except Exception as exc:  # the module itself is broken: say so in one line
            raise UsageError(
                f"--app {spec}: importing {module_name!r} failed: {type(exc).__name__}: {exc}"
            ) from exc
        if attr:
            if not hasattr(module, attr):
                raise UsageError(f"--app {spec}: module {module_name!r} has no {attr!r}")
            found = getattr(module, attr)
            flows.extend(found if isinstance(found, list | tuple) else [found])
        else:
            flows.extend(v for v in vars(module).values() if _is_flow(v))
    if not flows:
        raise UsageError(
            f"--app {' '.join(specs)}: no flows found (define @flow functions "
            "or flowkit.Flow builders at module level)"
        )
    return flows


def _is_flow(value: Any) -> bool:
    from ..dsl._builder import Flow

    return isinstance(value, Flow) or (
        hasattr(value, "blueprint") and hasattr(value, "registry") and hasattr(value, "fn")
    )


def _host_port(value: str) -> tuple[str, int]:
    host, _, port = value.rpartition(":")
    if not host or not port.isdigit():
        raise UsageError(f"--webhooks {value!r}: expected HOST:PORT, e.g. 127.0.0.1:8080")
    return host, int(port)


async def serve(args: argparse.Namespace, *, bounded_exit: bool = False) -> None:
    """Serve until a signal drains the worker; with ``bounded_exit`` (the process is the
    worker's alone) the process also ends at most SHUTDOWN_TIMEOUT after the drain."""
    from ..stores import from_url as store_from_url
    from ..transports import from_url as transport_from_url
    from ._worker import Worker

    flows = load_flows(args.app)
    store = store_from_url(args.store)
    transport = transport_from_url(args.transport)
    worker = Worker(
        flows, transport, store, concurrency=args.concurrency, queue=args.queue, lease=args.lease
    )
    worker.fail_fast = True  # an unreachable broker at start exits 2
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


async def _serve_until_stopped(args: argparse.Namespace, flows: list[Any], worker: Any) -> None:
    """Run the worker (and the webhook server) until a signal has drained it."""
    from ._client import Client

    stopping = anyio.Event()
    async with anyio.create_task_group() as tg:
        await tg.start(_stop_on_signal, worker, stopping)
        async with anyio.create_task_group() as serving:
            if args.webhooks:
                client = Client(worker.transport, worker.store, queue=args.queue, flows=flows)
                host, port = _host_port(args.webhooks)
                serving.start_soon(_serve_webhooks, client, host, port, stopping.wait)
            log.info(
                "worker started",
                flows=[_name(f) for f in flows],
                queue=args.queue,
                concurrency=args.concurrency,
            )
            await worker.run()
            stopping.set()  # the webhook server shuts down gracefully, then `serving` ends
        tg.cancel_scope.cancel()


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


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    from ..observability import configure_logging

    configure_logging(args.log_format, args.log_level)
    try:
        anyio.run(functools.partial(serve, args, bounded_exit=True))
    except (FlowkitError, OSError, BaseExceptionGroup) as exc:
        reason = _first_reason(exc)
        if reason is None:
            raise
        print(f"flowkit.worker: error: {' '.join(str(reason).split())}", file=sys.stderr)
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

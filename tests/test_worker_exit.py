"""A stopped worker exits, and a transport's close leaves no connection behind.

* Worker processes (``python -m flowkit.worker``) whose broker accepts the TCP
  connection but never answers are SIGTERMed while they connect: each drains,
  logs ``worker stopped`` and exits 0 on its own. (A RabbitMQ worker used to
  leave aio-pika's robust-connection task behind, which shrugged off the event
  loop's cancellation at exit and reconnected every 5 s forever.)
* A worker whose app leaves a non-daemon thread running still exits, with an
  error naming the thread, once the shutdown bound has passed.
* In process: a transport whose connect is cancelled halfway, or that is
  closed while another task connects, leaves no SDK task or connection behind.

The brokers that never answer are TCP listeners of this test; the races use a
proxy that holds the connection until the test has closed the transport, then
forwards it to the real broker on loopback. Every SDK here is asyncio-only.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import os
import signal
import subprocess
import sys
import uuid
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Any

import anyio
import anyio.abc
import pytest
from conformance import tansu

from flowkit import TransportError
from flowkit.transports import from_url

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Iterator
    from pathlib import Path

pytestmark = [pytest.mark.anyio, pytest.mark.asyncio_only]

STOP_TIMEOUT = 30.0  # a SIGTERMed worker exits within this
BOUND = 20.0  # a broker connection is accepted, a transport call returns, within this
RABBITMQ = os.environ.get("FLOWKIT_TEST_RABBITMQ", "amqp://guest:guest@127.0.0.1:5672/")
NATS = os.environ.get("FLOWKIT_TEST_NATS", "nats://127.0.0.1:4222")
FORCED_EXIT = "did not exit"  # what the worker logs when its shutdown bound forces the exit

# the transport URL of a broker listening on {port}, and the SDK package its tasks live in
BROKERS = {
    "rabbitmq": ("amqp://guest:guest@127.0.0.1:{port}/", ("aio_pika", "aiormq")),
    "redis": ("redis://127.0.0.1:{port}/0", ("redis",)),
    "nats": ("nats://127.0.0.1:{port}", ("nats",)),
    "kafka": ("kafka://127.0.0.1:{port}", ("aiokafka",)),
}

APP = """
import flowkit

@flowkit.node
async def hello(name: str) -> str:
    return f"hello {name}"

@flowkit.flow
async def greet(name: str) -> str:
    return await hello(name)
"""

# the app above, plus a thread nobody stops; the shutdown bound is cut short for the test
APP_LEAVING_A_THREAD = (
    APP
    + """
import threading
import flowkit.worker._cli

flowkit.worker._cli.SHUTDOWN_TIMEOUT = 0.5
threading.Thread(target=threading.Event().wait, name="left-behind").start()
"""
)


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


# -- brokers of the test's own --------------------------------------------------------------------


class Listener:
    """A TCP listener on loopback; ``accepted`` is set by its first connection."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.accepted = anyio.Event()
        self.released = anyio.Event()


@asynccontextmanager
async def silent_broker() -> AsyncIterator[Listener]:
    """Accepts connections and never answers: a client stays in its handshake."""

    async def hold(listener: Listener, stream: anyio.abc.SocketStream) -> None:
        async with stream:
            listener.accepted.set()
            await anyio.sleep_forever()

    async with listening(hold) as listener:
        yield listener


@asynccontextmanager
async def holding_proxy(upstream: str) -> AsyncIterator[Listener]:
    """Accepts connections, holds them until ``released`` is set, then forwards them
    to ``upstream`` (host:port)."""
    host, _, port = upstream.rpartition(":")

    async def forward(listener: Listener, client: anyio.abc.SocketStream) -> None:
        listener.accepted.set()
        await listener.released.wait()
        server = await anyio.connect_tcp(host, int(port))
        async with client, server, anyio.create_task_group() as tg:
            tg.start_soon(pump, client, server, tg.cancel_scope)
            tg.start_soon(pump, server, client, tg.cancel_scope)

    async with listening(forward) as listener:
        yield listener


async def pump(
    source: anyio.abc.SocketStream, sink: anyio.abc.SocketStream, both: anyio.CancelScope
) -> None:
    with contextlib.suppress(anyio.EndOfStream, anyio.BrokenResourceError, OSError):
        while True:
            await sink.send(await source.receive())
    both.cancel()


@asynccontextmanager
async def listening(handler: Any) -> AsyncIterator[Listener]:
    """Serve ``handler(listener, stream)`` on a free loopback port until the block ends."""
    tcp = await anyio.create_tcp_listener(local_host="127.0.0.1")
    listener = Listener(tcp.extra(anyio.abc.SocketAttribute.local_port))
    async with tcp, anyio.create_task_group() as tg:
        tg.start_soon(tcp.serve, functools.partial(handler, listener))
        yield listener
        tg.cancel_scope.cancel()


# -- worker processes -------------------------------------------------------------------------


def start_worker(
    tmp_path: Path, transport: str, app: str = APP
) -> tuple[subprocess.Popen[bytes], Path]:
    (tmp_path / "exit_app.py").write_text(app)
    log = tmp_path / "worker.log"
    path = os.pathsep.join(filter(None, [str(tmp_path), os.environ.get("PYTHONPATH")]))
    store = f"sqlite:///{tmp_path / 'runs.db'}"
    command = [sys.executable, "-m", "flowkit.worker", "--app", "exit_app"]
    with log.open("wb") as out:
        popen = subprocess.Popen(
            [*command, "--transport", transport, "--store", store],
            cwd=tmp_path,
            env=dict(os.environ, PYTHONPATH=path),
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its own process group: killed alone if need be
        )
    return popen, log


async def exit_code(popen: subprocess.Popen[bytes]) -> int | None:
    """The process's exit code, or None if it is still running after STOP_TIMEOUT."""
    with contextlib.suppress(subprocess.TimeoutExpired):
        await anyio.to_thread.run_sync(popen.wait, STOP_TIMEOUT)
    return popen.poll()


@contextlib.contextmanager
def killed_at_the_end(popen: subprocess.Popen[bytes]) -> Iterator[None]:
    try:
        yield
    finally:
        if popen.poll() is None:
            os.killpg(popen.pid, signal.SIGKILL)
            popen.wait()


@pytest.mark.parametrize("broker", sorted(BROKERS))
async def test_a_worker_stopped_while_connecting_exits(broker: str, tmp_path: Path) -> None:
    """SIGTERM lands while the worker's first broker connection is in its handshake."""
    url, _ = BROKERS[broker]
    async with silent_broker() as listener:
        popen, log = start_worker(tmp_path, url.format(port=listener.port))
        with killed_at_the_end(popen):
            with anyio.fail_after(BOUND):
                await listener.accepted.wait()  # the worker is connecting: it has started
            popen.send_signal(signal.SIGTERM)
            code = await exit_code(popen)
    text = log.read_text()
    assert (0, True, False) == (code, "worker stopped" in text, FORCED_EXIT in text), text


async def test_a_thread_left_running_does_not_keep_a_stopped_worker_alive(tmp_path: Path) -> None:
    async with silent_broker() as listener:
        url = BROKERS["redis"][0].format(port=listener.port)
        popen, log = start_worker(tmp_path, url, APP_LEAVING_A_THREAD)
        with killed_at_the_end(popen):
            with anyio.fail_after(BOUND):
                await listener.accepted.wait()
            popen.send_signal(signal.SIGTERM)
            code = await exit_code(popen)
    text = log.read_text()
    assert (0, True, True) == (code, "worker stopped" in text, FORCED_EXIT in text), text
    assert "left-behind" in text


# -- transports in this process -------------------------------------------------------------


def sdk_tasks(packages: tuple[str, ...]) -> list[asyncio.Task[Any]]:
    """The running tasks whose coroutine comes from one of the SDK ``packages``."""
    folders = tuple(f"{os.sep}{package}{os.sep}" for package in packages)
    found = []
    for task in asyncio.all_tasks():
        code = getattr(task.get_coro(), "cr_code", None)
        if code is not None and any(folder in code.co_filename for folder in folders):
            found.append(task)
    return found


async def consume(transport: Any) -> None:
    async for delivery in transport.receive("jobs"):
        await delivery.nack()


@pytest.mark.parametrize("broker", sorted(BROKERS))
async def test_a_connect_cancelled_halfway_leaves_nothing_behind(broker: str) -> None:
    url, packages = BROKERS[broker]
    async with silent_broker() as listener:
        transport = from_url(url.format(port=listener.port))
        async with anyio.create_task_group() as tg:
            tg.start_soon(consume, transport)
            with anyio.fail_after(BOUND):
                await listener.accepted.wait()
            tg.cancel_scope.cancel()
        await transport.close()
        assert [] == sdk_tasks(packages)


async def sending_after_close(transport: Any, listener: Listener) -> BaseException | None:
    """Send while the connection is held, close the transport, let the connection through:
    what the send raised (None if it went out)."""
    outcome: list[BaseException | None] = []

    async def send() -> None:
        try:
            await transport.send("jobs", b"late")
        except TransportError as exc:
            outcome.append(exc)
        else:
            outcome.append(None)

    with anyio.fail_after(BOUND):
        async with anyio.create_task_group() as tg:
            tg.start_soon(send)
            await listener.accepted.wait()
            await transport.close()
            listener.released.set()
    return outcome[0]


@pytest.mark.parametrize(
    ("broker", "upstream"),
    [
        pytest.param("rabbitmq", RABBITMQ, id="rabbitmq"),
        pytest.param("nats", NATS, id="nats"),
        pytest.param("kafka", None, id="kafka"),
    ],
)
async def test_a_close_during_a_connect_leaves_no_connection(
    broker: str, upstream: str | None
) -> None:
    """The connect finishes after close() returned: it must not be kept (nor its tasks)."""
    address = _host_port(upstream) if upstream else tansu.shared_tansu()
    url, packages = BROKERS[broker]
    namespace = f"fk{uuid.uuid4().hex[:10]}"
    async with holding_proxy(address) as proxy:
        transport = from_url(url.format(port=proxy.port) + _prefix(broker, namespace))
        raised = await sending_after_close(transport, proxy)
        assert isinstance(raised, TransportError), raised
        assert "closed" in str(raised)
        assert [] == sdk_tasks(packages)


def _host_port(url: str) -> str:
    from urllib.parse import urlsplit

    parts = urlsplit(url)
    return f"{parts.hostname}:{parts.port}"


def _prefix(broker: str, namespace: str) -> str:
    """A query string giving the transport names of the test's own."""
    option = {"rabbitmq": "queue_prefix", "nats": "stream_prefix", "kafka": "topic_prefix"}
    return f"?{option[broker]}={namespace}"

"""``SQSTransport`` in the transport conformance suite.

No real SQS can be reached from these machines, so each test starts its own
``moto_server`` on a free loopback port: moto is a local stand-in that speaks
the real SQS HTTP API (the JSON protocol, with SigV4-signed requests) to the
real aiobotocore client, and implements what the suite checks: visibility
timeouts, ``ApproximateReceiveCount``, ``DelaySeconds``, long polling,
``ChangeMessageVisibility``, redrive policies and FIFO queues. Dummy
credentials are given to the transport; traffic only ever goes to the moto
server on 127.0.0.1, which is stopped after the test. aiobotocore is
asyncio-only, so this factory runs on asyncio alone (its tests are marked
``asyncio_only``).

Ordering: none. A standard SQS queue (the kind used here) is best-effort
ordered; redeliveries, nacks, delays and competing consumers reorder, and
``key`` implies no ordering. (With ``fifo=True`` messages of one key are
delivered in order, one at a time; ``tests/test_transport_nats_sqs.py`` checks it.)
"""

from __future__ import annotations

import socket
import subprocess
import sys
import uuid
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Any, BinaryIO

import anyio

from flowkit.transports import from_url

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Callable
    from pathlib import Path

    from anyio.abc import Process

    from flowkit.transports.sqs._transport import SQSTransport

DUMMY_CREDENTIALS = {"aws_access_key_id": "testing", "aws_secret_access_key": "testing"}
_START_TIMEOUT = 30.0


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


async def _until_listening(port: int, server: Process, log: Path) -> None:
    """Return once ``server`` accepts connections on ``port``; fail if it exits first."""
    with anyio.fail_after(_START_TIMEOUT):
        while True:
            if server.returncode is not None:
                output = await anyio.Path(log).read_text()
                raise RuntimeError(f"moto_server exited: {output[-2000:]}")
            try:
                stream = await anyio.connect_tcp("127.0.0.1", port)
            except OSError:
                await anyio.sleep(0.05)  # not listening yet: poll again
            else:
                await stream.aclose()
                return


def _open_log(path: Path) -> BinaryIO:
    return path.open("wb")


@asynccontextmanager
async def moto_server(tmp_path: Path) -> AsyncIterator[str]:
    """A private ``moto_server`` on a free loopback port; yields its endpoint URL."""
    port = _free_port()
    log = tmp_path / "moto_server.log"
    command = [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)]
    with _open_log(log) as out:
        server = await anyio.open_process(command, stdout=out, stderr=subprocess.STDOUT)
        async with server:  # on exit: waits for it (killing it if cancelled)
            try:
                await _until_listening(port, server, log)
                yield f"http://127.0.0.1:{port}"
            finally:
                server.terminate()


class SQSFactory:
    """A private moto server per test; a new transport (client) per ``make()``."""

    name = "sqs"
    backends = ("asyncio",)
    # Whole seconds (SQS's unit). A lease starts when a receive returns, and every
    # settle is an HTTP call to moto, itself a Python process: on a loaded two-core
    # machine one consumer's long poll took over a second while another held its
    # delivery, so a 1 s lease ran out under a handler that was still on time.
    visibility_timeout = 3.0

    @asynccontextmanager
    async def open(self, tmp_path: Path) -> AsyncIterator[Callable[[], SQSTransport]]:
        made: list[SQSTransport] = []
        async with moto_server(tmp_path) as endpoint:
            url = f"sqs://us-east-1/fk-{uuid.uuid4().hex[:12]}?endpoint={endpoint}"

            def make(**options: Any) -> SQSTransport:
                options.setdefault("visibility_timeout", round(self.visibility_timeout))
                transport: SQSTransport = from_url(url, **DUMMY_CREDENTIALS, **options)
                made.append(transport)
                return transport

            try:
                yield make
            finally:
                for transport in made:
                    await transport.close()

    async def dead_letters(self, transport: SQSTransport, queue: str) -> list[tuple[bytes, str]]:
        return [(d.body, d.reason) for d in await transport.dead_letters(queue)]


FACTORY = SQSFactory()

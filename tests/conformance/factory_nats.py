"""``NATSTransport`` in the transport conformance suite.

Talks to the real NATS server with JetStream on loopback, 127.0.0.1:4222
(``.ci/run`` starts it when it is down; ``FLOWKIT_TEST_NATS`` overrides the
URL). Each test gets its own ``stream_prefix``, so its streams are its own;
they are deleted after the test. Every ``make()`` is a new transport with its
own connection, as a separate worker process would be. nats-py is
asyncio-only, so this factory runs on asyncio alone (its tests are marked
``asyncio_only``).

Ordering: the shared durable pull consumer hands out a queue in stream order,
but redeliveries (a nak, a lease running out) go before newer messages, a
delayed message joins the end of the queue when it falls due, and competing
consumers (each fetching a batch at a time) interleave; ``key`` implies no
ordering.
"""

from __future__ import annotations

import os
import uuid
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Any

from flowkit.transports import from_url

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Callable
    from pathlib import Path

    from flowkit.transports.nats._transport import NATSTransport

NATS_URL = os.environ.get("FLOWKIT_TEST_NATS", "nats://127.0.0.1:4222")


class NATSFactory:
    """A fresh stream prefix per test; a new transport (connection) per ``make()``."""

    name = "nats"
    backends = ("asyncio",)
    visibility_timeout = 1.0

    @asynccontextmanager
    async def open(self, tmp_path: Path) -> AsyncIterator[Callable[[], NATSTransport]]:
        prefix = f"FKT{uuid.uuid4().hex[:12]}"
        made: list[NATSTransport] = []

        def make(**options: Any) -> NATSTransport:
            options.setdefault("ack_wait", self.visibility_timeout)
            transport: NATSTransport = from_url(NATS_URL, stream_prefix=prefix, **options)
            made.append(transport)
            return transport

        try:
            yield make
        finally:
            for transport in made:
                await transport.close()
            await delete_streams(prefix)

    async def dead_letters(self, transport: NATSTransport, queue: str) -> list[tuple[bytes, str]]:
        return [(d.body, d.reason) for d in await transport.dead_letters(queue)]


async def delete_streams(prefix: str, url: str = NATS_URL) -> None:
    """Delete every JetStream stream whose name starts with ``prefix``."""
    import nats

    nc = await nats.connect(url)
    try:
        js = nc.jetstream()
        for info in await js.streams_info():
            if info.config.name and info.config.name.startswith(f"{prefix}_"):
                await js.delete_stream(info.config.name)
    finally:
        await nc.close()


FACTORY = NATSFactory()

"""``PostgresQueueTransport`` in the transport conformance suite.

Talks to the real PostgreSQL on loopback (``FLOWKIT_TEST_POSTGRES`` overrides
the DSN). Each test gets a fresh schema, dropped after; every ``make()`` is a
new transport with its own connections, as a separate worker process would be.
psycopg's async connections are asyncio-only, so this factory runs on asyncio
alone (its tests are marked ``asyncio_only``).

Ordering: the earliest available message first (by the time it became
available on the server's clock, then by insertion), so a queue is FIFO until
messages are delayed, nacked or redelivered after their lease ran out (a
redelivered message is ordered by its lease's expiry). ``SKIP LOCKED`` lets
concurrent consumers take the next messages out of order relative to each
other; ``key`` implies no ordering.
"""

from __future__ import annotations

import os
import uuid
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING

from flowkit.transports import from_url

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Callable
    from pathlib import Path

    from flowkit.transports._pgqueue import PostgresQueueTransport

PG_DSN = os.environ.get("FLOWKIT_TEST_POSTGRES", "postgresql://postgres@127.0.0.1:5432/test")


class PostgresFactory:
    """A fresh schema per test; a new transport per ``make()``."""

    name = "postgres"
    priorities = True  # send(priority=) orders the queue
    backends = ("asyncio",)
    visibility_timeout = 1.0

    @asynccontextmanager
    async def open(self, tmp_path: Path) -> AsyncIterator[Callable[[], PostgresQueueTransport]]:
        schema = f"fk_test_{uuid.uuid4().hex[:12]}"
        made: list[PostgresQueueTransport] = []

        def make() -> PostgresQueueTransport:
            transport: PostgresQueueTransport = from_url(
                PG_DSN, schema=schema, visibility_timeout=self.visibility_timeout
            )
            made.append(transport)
            return transport

        try:
            yield make
        finally:
            for transport in made:
                await transport.close()
            await _drop(schema)

    async def dead_letters(
        self, transport: PostgresQueueTransport, queue: str
    ) -> list[tuple[bytes, str]]:
        return [(d.body, d.reason) for d in await transport.dead_letters(queue)]


async def _drop(schema: str) -> None:
    import psycopg
    from psycopg import sql

    async with await psycopg.AsyncConnection.connect(PG_DSN, autocommit=True) as conn:
        await conn.execute(
            sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(schema))
        )


FACTORY = PostgresFactory()

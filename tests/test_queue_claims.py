"""A receiver cancelled while it claims a message hands the message back at once.

The SQLite and PostgreSQL queues claim a message by writing a lease. A worker
that drains leaves ``receive()``, which cancels a claim under way; the message
must not stay leased, unseen by the other workers, until its visibility timeout
(an hour here). Real SQLite file and real PostgreSQL server on loopback; the
PostgreSQL client is asyncio-only.
"""

from __future__ import annotations

import os
import uuid
from contextlib import aclosing
from typing import TYPE_CHECKING, Any

import anyio
import pytest

from flowkit.transports import SQLiteQueueTransport

if TYPE_CHECKING:
    from collections.abc import AsyncIterator
    from pathlib import Path

pytestmark = pytest.mark.anyio

PG_DSN = os.environ.get("FLOWKIT_TEST_POSTGRES", "postgresql://postgres@127.0.0.1:5432/test")
QUEUE = "work"
HOUR = 3600.0
BOUND = 20.0  # seconds a handed-back message certainly shows up within (it takes ms)


def held(base: type) -> type:
    """``base`` whose first claim, once made, waits for ``release``."""

    class Held(base):  # type: ignore[misc,valid-type]
        def __init__(self, *args: Any, **options: Any) -> None:
            super().__init__(*args, **options)
            self.claimed = anyio.Event()
            self.release = anyio.Event()

        async def _claim(self, queue: str) -> Any:
            delivery = await super()._claim(queue)
            if delivery is not None and not self.claimed.is_set():
                self.claimed.set()
                await self.release.wait()
            return delivery

    return Held


@pytest.fixture(
    params=[
        pytest.param(("sqlite", "asyncio"), id="sqlite-asyncio"),
        pytest.param(("sqlite", "trio"), id="sqlite-trio"),
        pytest.param(("postgres", "asyncio"), id="postgres", marks=pytest.mark.asyncio_only),
    ]
)
def case(request: pytest.FixtureRequest) -> tuple[str, str]:
    return request.param  # type: ignore[no-any-return]


@pytest.fixture
def anyio_backend(case: tuple[str, str]) -> str:
    return case[1]


@pytest.fixture
async def transport(case: tuple[str, str], tmp_path: Path) -> AsyncIterator[Any]:
    if case[0] == "sqlite":
        made = held(SQLiteQueueTransport)(tmp_path / "queue.db", visibility_timeout=HOUR)
        yield made
        await made.close()
        return
    import psycopg
    from psycopg import sql

    from flowkit.transports import PostgresQueueTransport

    schema = f"fk_claims_{uuid.uuid4().hex[:12]}"
    made = held(PostgresQueueTransport)(PG_DSN, schema=schema, visibility_timeout=HOUR)
    yield made
    await made.close()
    async with await psycopg.AsyncConnection.connect(PG_DSN, autocommit=True) as conn:
        await conn.execute(
            sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(schema))
        )


async def test_a_claim_cancelled_under_way_is_handed_back(transport: Any) -> None:
    await transport.send(QUEUE, b"the one message", key="k")

    async def receive_one(scope: anyio.CancelScope) -> None:
        with scope:
            async with aclosing(transport.receive(QUEUE)) as deliveries:
                async for _ in deliveries:
                    raise AssertionError("the claim was to be cancelled before it returned")

    draining = anyio.CancelScope()
    async with anyio.create_task_group() as tg:
        tg.start_soon(receive_one, draining)
        await transport.claimed.wait()  # the lease is written
        draining.cancel()  # the receiver leaves while the claim is under way
        transport.release.set()
    with anyio.fail_after(BOUND):
        async with aclosing(transport.receive(QUEUE)) as deliveries:
            delivery = await anext(deliveries)
    assert b"the one message" == delivery.body
    await delivery.ack()

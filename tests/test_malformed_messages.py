"""Any body at all on a worker's queue is either a node message or a ``MalformedMessage``.

Garbage is dead-lettered with its reason and the worker carries on: nested too
deeply for Python's parser, too large, not UTF-8, numbers too long to read,
fields of the wrong type, text no store can keep. The worker cases run on real
brokers on loopback: the SQLite queue with a SQLite store (asyncio and trio),
and Redis streams with a PostgreSQL store (asyncio only: their SDKs are).
"""

from __future__ import annotations

import os
import uuid
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Any

import anyio
import pytest

import flowkit
from flowkit import RunStatus
from flowkit.stores import from_url as store_from_url
from flowkit.transports import from_url as transport_from_url
from flowkit.worker._messages import (
    MAX_MESSAGE_BYTES,
    MalformedMessage,
    NodeMessage,
    names_a_run,
    readable_fields,
)

if TYPE_CHECKING:
    from collections.abc import AsyncIterator
    from pathlib import Path

PG_DSN = os.environ.get("FLOWKIT_TEST_POSTGRES", "postgresql://postgres@127.0.0.1:5432/test")
REDIS_URL = os.environ.get("FLOWKIT_TEST_REDIS", "redis://127.0.0.1:6379/0")
BOUND = 40.0  # seconds for the worker to clear the garbage and run a flow

FIELDS = b'"node_id":"n","attempt":1,"dispatch_id":"d","blueprint_digest":"x"'

# body -> a part of the reason it is dead-lettered for
GARBAGE: dict[bytes, str] = {
    b"[" * 200_000: f"over the {MAX_MESSAGE_BYTES}-byte limit",
    b"[" * 60_000: "nested too deeply",
    b'{"a":' * 10_000: "nested too deeply",
    b"x" * (MAX_MESSAGE_BYTES + 1): f"over the {MAX_MESSAGE_BYTES}-byte limit",
    b'{"run_id": "r\xff"}': "is not JSON",
    b'{"run_id": "r", "attempt": 1' + b"0" * 5000 + b"}": "is not JSON",
    b'{"run_id": 5, "node_id": [], "attempt": "1", "dispatch_id": null}': "run_id must be a string",
    b'{"run_id": "a\\u0000b", ' + FIELDS + b"}": "run_id must not contain NUL",
    b'{"run_id": "\\ud800", ' + FIELDS + b"}": "run_id is not valid UTF-8",
    b'{"run_id": "r", ' + FIELDS.replace(b'"attempt":1', b'"attempt":1' + b"0" * 30) + b"}": (
        "attempt must be at most"
    ),
    b'{"run_id": "r", ' + FIELDS.replace(b'"attempt":1', b'"attempt":NaN') + b"}": (
        "attempt must be an integer"
    ),
}


@flowkit.node
async def hello(name: str) -> str:
    return f"hello {name}"


@flowkit.flow
async def greet(name: str) -> str:
    return await hello(name)


# -- decoding -----------------------------------------------------------------------------------


@pytest.mark.parametrize("body", list(GARBAGE), ids=range(len(GARBAGE)))
def test_garbage_is_a_malformed_message_saying_why(body: bytes) -> None:
    with pytest.raises(MalformedMessage, match=GARBAGE[body]):
        NodeMessage.decode(body)


@pytest.mark.parametrize("body", list(GARBAGE), ids=range(len(GARBAGE)))
def test_what_can_be_read_of_garbage_never_raises(body: bytes) -> None:
    fields = readable_fields(body)
    assert isinstance(fields, dict)
    assert not names_a_run(body) or fields["run_id"] == "r"


def test_a_message_round_trips() -> None:
    message = NodeMessage("run", "node", 3, "dispatch", "digest", "00-trace")
    assert message == NodeMessage.decode(message.encode())
    assert names_a_run(message.encode())


# -- on a worker --------------------------------------------------------------------------------

CASES = [
    pytest.param(("sqlite", "asyncio"), id="sqlite-asyncio"),
    pytest.param(("sqlite", "trio"), id="sqlite-trio"),
    pytest.param(
        ("redis+postgres", "asyncio"), id="redis+postgres", marks=pytest.mark.asyncio_only
    ),
]


@pytest.fixture(params=CASES)
def case(request: pytest.FixtureRequest) -> tuple[str, str]:
    return request.param  # type: ignore[no-any-return]


@pytest.fixture
def anyio_backend(case: tuple[str, str]) -> str:
    return case[1]


@pytest.fixture
async def urls(case: tuple[str, str], tmp_path: Path) -> AsyncIterator[tuple[str, str]]:
    """A transport URL and a store URL of the test's own, cleaned up after."""
    if case[0] == "sqlite":
        yield f"sqlite:///{tmp_path / 'queue.db'}", f"sqlite:///{tmp_path / 'runs.db'}"
        return
    name = f"fk_mm_{uuid.uuid4().hex[:12]}"
    yield f"{REDIS_URL}?prefix={name}", f"{PG_DSN}?schema={name}"
    await _drop_redis_keys(name)
    await _drop_schema(name)


async def _drop_redis_keys(prefix: str) -> None:
    import redis.asyncio

    client = redis.asyncio.Redis.from_url(REDIS_URL)
    keys = [key async for key in client.scan_iter(f"{prefix}:*")]
    if keys:
        await client.delete(*keys)
    await client.aclose()


async def _drop_schema(schema: str) -> None:
    import psycopg
    from psycopg import sql

    async with await psycopg.AsyncConnection.connect(PG_DSN, autocommit=True) as conn:
        await conn.execute(
            sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(schema))
        )


async def _parked(transport: Any) -> list[tuple[bytes, str]]:
    """The ``(body, reason)`` of every message the transport dead-lettered."""
    if hasattr(transport, "dead_letters"):
        return [(d.body, d.reason) for d in await transport.dead_letters("flowkit")]
    import redis.asyncio

    client = redis.asyncio.Redis.from_url(REDIS_URL)
    try:
        entries = await client.xrange(transport.keys("flowkit")[-1])  # the dead-letter stream
    finally:
        await client.aclose()
    return [(fields[b"body"], fields[b"reason"].decode()) for _, fields in entries]


@asynccontextmanager
async def serving(urls: tuple[str, str]) -> AsyncIterator[tuple[Any, Any, list[str]]]:
    """A worker serving ``greet``; yields its transport, its store and the reasons it
    dead-lettered messages for, as it reports them."""
    transport, store = transport_from_url(urls[0]), store_from_url(urls[1])
    worker = flowkit.Worker([greet], transport, store, poll_interval=0.05)
    reasons: list[str] = []
    worker.events.subscribe(
        lambda event: reasons.append(event.data["reason"]), types={"message:dead_letter"}
    )
    try:
        with anyio.fail_after(BOUND):
            async with anyio.create_task_group() as tg:
                await tg.start(worker.run)
                yield transport, store, reasons
                tg.cancel_scope.cancel()
    finally:
        await transport.close()
        await store.close()


@pytest.mark.anyio
async def test_garbage_is_dead_lettered_and_the_worker_carries_on(urls: tuple[str, str]) -> None:
    async with serving(urls) as (transport, store, reasons):
        for body in GARBAGE:
            await transport.send("flowkit", body)
        # one worker takes the queue in order: the run's message comes after the garbage
        client = flowkit.Client(transport, store, flows=[greet])
        result = await client.run(greet, name="ada", timeout=BOUND)
        parked = await _parked(transport)
    assert (RunStatus.COMPLETED, "hello ada") == (result.status, result.output)
    assert len(GARBAGE) == len(reasons) == len(parked), reasons
    by_body = dict(parked)
    assert [] == [
        (body[:40], GARBAGE[body]) for body in GARBAGE if GARBAGE[body] not in by_body.get(body, "")
    ]

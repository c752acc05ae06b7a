"""Closing a KafkaTransport while its broker does not answer (a private tansu, SIGSTOPped).

``close()`` must return within its bound even when nothing the transport sends gets an
answer: it hands held deliveries back (bounded), commits (bounded), leaves the group
and stops its clients. It must leave nothing running behind (no task failing later
with an exception nobody retrieves, no unclosed client), and lose nothing: what it
could not hand back or commit is delivered again once the broker answers.
"""

from __future__ import annotations

import asyncio
import gc
import uuid
import warnings
from typing import TYPE_CHECKING, Any

import anyio
import pytest
from conformance.tansu import SESSION_TIMEOUT

from flowkit.transports import KafkaTransport
from flowkit.transports.kafka._transport import close_bound

if TYPE_CHECKING:
    from .broker import RestartableTansu

pytestmark = pytest.mark.anyio

QUEUE = "jobs"
READ_TIMEOUT = 30.0


def _transport(address: str, namespace: str) -> KafkaTransport:
    return KafkaTransport(
        address,
        group=namespace,
        topic_prefix=namespace,
        partitions=2,
        visibility_timeout=60.0,
        session_timeout=SESSION_TIMEOUT,
    )


async def _first_delivery(transport: KafkaTransport) -> tuple[Any, Any]:
    """The queue's stream on ``transport`` and its first delivery."""
    stream = transport.receive(QUEUE)
    with anyio.fail_after(READ_TIMEOUT):
        return stream, await anext(stream)


@pytest.mark.timeout(120)
async def test_close_is_bounded_while_the_broker_is_silent(
    running_tansu: RestartableTansu,
) -> None:
    namespace = f"fk{uuid.uuid4().hex[:12]}"
    before = asyncio.all_tasks()
    reported: list[dict[str, Any]] = []
    loop = asyncio.get_running_loop()
    previous_handler = loop.get_exception_handler()
    loop.set_exception_handler(lambda _loop, ctx: reported.append(ctx))
    try:
        await _close_while_frozen(running_tansu, namespace)
        # nothing left running that fails later, nothing left unclosed
        leftover = asyncio.all_tasks() - before
        assert [] == [task.get_coro() for task in leftover if not task.done()]
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            gc.collect()
    finally:
        loop.set_exception_handler(previous_handler)
    assert [] == [str(w.message) for w in caught]
    assert [] == [str(ctx) for ctx in reported]

    # nothing lost: the held delivery comes again (handed back, or never committed)
    again = _transport(running_tansu.address, namespace)
    try:
        stream, delivery = await _first_delivery(again)
        assert b"held" == delivery.body
        await delivery.ack()
        await stream.aclose()
    finally:
        await again.close()


async def _close_while_frozen(running_tansu: RestartableTansu, namespace: str) -> None:
    """A consumer holds a delivery; the broker freezes; the consumer's transport closes."""
    consumer = _transport(running_tansu.address, namespace)
    producer = _transport(running_tansu.address, namespace)
    await producer.send(QUEUE, b"held", key="k")
    await producer.close()
    stream, held = await _first_delivery(consumer)
    assert b"held" == held.body

    running_tansu.freeze()
    try:
        with anyio.fail_after(close_bound(consumer) + SESSION_TIMEOUT):
            await consumer.close()
        await stream.aclose()
    finally:
        running_tansu.thaw()

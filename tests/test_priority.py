"""Run priorities: ``start(..., priority=N)`` is checked, kept in the run's header (and
its children's), sent with every node message, and ordered by the queues that can.

The ordering of each transport is in ``tests/conformance/test_transport.py``
(``TestPriority``); here: the API, the messages, schema upgrades of the SQL queues,
RabbitMQ's refusal of a queue declared otherwise, Redis's delayed entries, and a
worker of concurrency 1 on the SQLite queue serving a late high-priority run first.
SQLite and memory tests run on asyncio and trio; the servers' on asyncio.
"""

from __future__ import annotations

import sqlite3
import time
import uuid
from contextlib import aclosing
from typing import TYPE_CHECKING, Any

import anyio
import pytest

import flowkit
from flowkit import ConfigurationError, RunStatus, TransportError
from flowkit._clock import use_clock
from flowkit.stores import MemoryStore, SQLiteStore
from flowkit.transports import MemoryTransport
from flowkit.transports._sqlqueue import SQLiteQueueTransport
from flowkit.worker import NodeMessage

if TYPE_CHECKING:
    from collections.abc import Mapping
    from pathlib import Path

pytestmark = pytest.mark.anyio
BOUND = 30.0


@flowkit.node
async def double(x: int) -> int:
    return x * 2


@flowkit.node
async def plus_one(x: int) -> int:
    return x + 1


@flowkit.flow
async def two_steps(x: int) -> int:
    return await plus_one(await double(x))


@flowkit.flow
async def parent_of_two_steps(x: int) -> int:
    return await two_steps(x)


@flowkit.flow
async def waits_for_go() -> Any:
    return await flowkit.flow.wait("go")


@flowkit.flow
async def takes_priority(priority: int) -> int:
    return await double(priority)


class SpyTransport(MemoryTransport):
    """A MemoryTransport that records the priority and headers of every send."""

    def __init__(self) -> None:
        super().__init__()
        self.sent: list[tuple[str, int | None, dict[str, str]]] = []

    async def send(
        self,
        queue: str,
        body: bytes,
        *,
        key: str | None = None,
        headers: Mapping[str, str] | None = None,
        delay: float | None = None,
        priority: int | None = None,
    ) -> None:
        self.sent.append((NodeMessage.decode(body).run_id, priority, dict(headers or {})))
        await super().send(queue, body, key=key, headers=headers, delay=delay, priority=priority)


class NoPriorityTransport(MemoryTransport):
    """A transport written before priorities: its send() has no ``priority=``."""

    async def send(  # type: ignore[override]
        self,
        queue: str,
        body: bytes,
        *,
        key: str | None = None,
        headers: Mapping[str, str] | None = None,
        delay: float | None = None,
    ) -> None:
        await super().send(queue, body, key=key, headers=headers, delay=delay)


async def _run_on_worker(transport: Any, store: Any, flow: Any, **options: Any) -> Any:
    worker = flowkit.Worker([flow], transport, store, poll_interval=0.05)
    client = flowkit.Client(transport, store, flows=[flow])
    with anyio.fail_after(BOUND):
        async with anyio.create_task_group() as tg:
            await tg.start(worker.run)
            result = await client.run(flow, **options)
            tg.cancel_scope.cancel()
    return client, result


class TestChecked:
    """A priority is an int from 0 to 9; anything else is refused, naming it and the range."""

    @pytest.mark.parametrize("bad", [-1, 10, True, "5", 5.0])
    async def test_client_refuses(self, bad: object) -> None:
        transport, store = SpyTransport(), MemoryStore()
        client = flowkit.Client(transport, store, flows=[two_steps])
        with pytest.raises(ConfigurationError, match=f"from 0 to 9.*got {bad!r}"):
            await client.start(two_steps, run_id="r", priority=bad, x=1)  # type: ignore[arg-type]
        assert (None, []) == (await store.load("r"), transport.sent)

    async def test_message_names_value_and_range(self) -> None:
        with pytest.raises(ConfigurationError) as raised:
            await flowkit.Runtime().run(two_steps, priority=12, x=1)
        assert "priority must be from 0 to 9 (higher is served sooner), got 12" in str(raised.value)

    async def test_runtime_signal_with_start_refuses(self) -> None:
        async with flowkit.Runtime() as rt:
            with pytest.raises(ConfigurationError, match="got True"):
                await rt.signal_with_start(waits_for_go, run_id="r", signal="go", priority=True)

    async def test_signal_with_start_records_it(self) -> None:
        transport, store = SpyTransport(), MemoryStore()
        client = flowkit.Client(transport, store, flows=[waits_for_go])
        await client.signal_with_start(waits_for_go, run_id="w", signal="go", data=1, priority=3)
        assert 3 == (await client.describe("w")).priority

    async def test_a_flow_parameter_named_priority_still_gets_it(self) -> None:
        result = await flowkit.Runtime().run(takes_priority, priority=4)
        assert (RunStatus.COMPLETED, 8) == (result.status, result.output)


class TestRecorded:
    """The run's header keeps its priority; describe() shows it; children inherit it."""

    async def test_runtime_describe_and_child(self) -> None:
        rt = flowkit.Runtime(store=MemoryStore())
        result = await rt.run(parent_of_two_steps, run_id="p", priority=7, x=2)
        assert (RunStatus.COMPLETED, 5) == (result.status, result.output)
        assert 7 == (await rt.describe("p")).priority
        (child,) = (await rt.list_runs(parent="p")).runs
        assert 7 == (await rt.describe(child.run_id)).priority

    async def test_default_is_zero_and_not_stored(self) -> None:
        rt = flowkit.Runtime(store=MemoryStore())
        await rt.run(two_steps, run_id="plain", x=1)
        assert 0 == (await rt.describe("plain")).priority
        loaded = await rt.store.load("plain")  # type: ignore[union-attr]
        assert loaded is not None
        assert "priority" not in loaded[0].header

    async def test_every_message_of_the_run_and_its_child_carries_it(self) -> None:
        transport, store = SpyTransport(), MemoryStore()
        client, result = await _run_on_worker(
            transport, store, parent_of_two_steps, run_id="p", priority=6, x=1
        )
        assert RunStatus.COMPLETED == result.status
        (child,) = (await client.list_runs(parent="p")).runs
        assert {child.run_id} == {run_id for run_id, _, _ in transport.sent}  # (p has no node)
        assert {(6, "6")} == {(p, h.get("flowkit-priority")) for _, p, h in transport.sent}
        assert 2 == len(transport.sent)
        assert 6 == (await client.describe("p")).priority

    async def test_a_republished_dispatch_keeps_it(self) -> None:
        transport, store = SpyTransport(), MemoryStore()
        client = flowkit.Client(transport, store, flows=[two_steps], lease=30.0)
        await client.start(two_steps, run_id="r", priority=7, x=1)
        worker = flowkit.Worker([two_steps], transport, store, lease=30.0)
        with use_clock(lambda: time.time() + 60.0):  # the dispatch's lease ran out
            await worker._reconcile()
        assert [("r", 7, "7")] * 2 == [
            (run_id, p, h.get("flowkit-priority")) for run_id, p, h in transport.sent
        ]

    async def test_a_debounced_run_begins_with_it(self) -> None:
        now = [1_800_000_000.0]
        transport, store = SpyTransport(), MemoryStore()
        worker = flowkit.Worker([two_steps], transport, store, poll_interval=0.01)
        client = flowkit.Client(transport, store, flows=[two_steps])
        with use_clock(lambda: now[0]), anyio.fail_after(BOUND):
            async with anyio.create_task_group() as tg:
                await tg.start(worker.run)
                await client.start(two_steps, run_id="d", debounce="1m", priority=4, x=1)
                await client.start(two_steps, run_id="d", debounce="1m", priority=4, x=2)
                assert [] == transport.sent  # waiting out its debounce
                now[0] += 61
                result = await client.wait("d", timeout=BOUND)
                tg.cancel_scope.cancel()
        assert (RunStatus.COMPLETED, 5) == (result.status, result.output)
        assert [("d", 4)] * 2 == [(run_id, p) for run_id, p, _ in transport.sent]

    async def test_a_default_run_sends_no_priority(self) -> None:
        transport, store = SpyTransport(), MemoryStore()
        _, result = await _run_on_worker(transport, store, two_steps, x=1)
        assert RunStatus.COMPLETED == result.status
        assert {None} == {p for _, p, _ in transport.sent}
        assert all("flowkit-priority" not in h for _, _, h in transport.sent)

    async def test_a_transport_without_the_keyword_runs_default_runs(self) -> None:
        _, result = await _run_on_worker(NoPriorityTransport(), MemoryStore(), two_steps, x=3)
        assert (RunStatus.COMPLETED, 7) == (result.status, result.output)


class TestMemoryTransport:
    """The reference transport serves the highest priority first, FIFO within one."""

    async def test_order(self) -> None:
        transport = MemoryTransport()
        sends = [(b"a", 0), (b"b", 3), (b"c", 9), (b"d", 3), (b"e", None), (b"f", 9)]
        for body, priority in sends:
            await transport.send("q", body, priority=priority)
        received = []
        async with aclosing(transport.receive("q")) as deliveries:
            async for delivery in deliveries:
                received.append(delivery.body)
                await delivery.ack()
                if len(received) == len(sends):
                    break
        assert [b"c", b"f", b"b", b"d", b"a", b"e"] == received


class TestSQLiteQueueUpgrade:
    """A queue database made before priorities gets the column; its rows count as 0."""

    async def test_old_database(self, tmp_path: Path) -> None:
        path = tmp_path / "old.db"
        with sqlite3.connect(path) as conn:
            conn.execute(
                "CREATE TABLE flowkit_queue (id INTEGER PRIMARY KEY AUTOINCREMENT,"
                " queue TEXT NOT NULL, body BLOB NOT NULL, headers TEXT NOT NULL, key TEXT,"
                " available_at REAL NOT NULL, attempts INTEGER NOT NULL DEFAULT 0,"
                " lease_token TEXT, lease_until REAL)"
            )
            conn.execute(
                "CREATE INDEX flowkit_queue_ready ON flowkit_queue (queue, available_at, id)"
            )
            conn.execute(
                "INSERT INTO flowkit_queue (queue, body, headers, available_at)"
                " VALUES ('q', x'6f6c64', '{}', 0)"
            )
        conn.close()
        transport = SQLiteQueueTransport(path)
        try:
            await transport.send("q", b"new-high", priority=5)
            await transport.send("q", b"new-low")
            received = []
            async with aclosing(transport.receive("q")) as deliveries:
                async for delivery in deliveries:
                    received.append(delivery.body)
                    await delivery.ack()
                    if len(received) == 3:
                        break
        finally:
            await transport.close()
        assert [b"new-high", b"old", b"new-low"] == received
        with sqlite3.connect(path) as conn:
            indexes = {row[1] for row in conn.execute("PRAGMA index_list(flowkit_queue)")}
        conn.close()
        assert "flowkit_queue_next" in indexes
        assert "flowkit_queue_ready" not in indexes


class TestEndToEnd:
    """A worker of concurrency 1 on the SQLite queue: 20 low-priority runs wait, then a
    high-priority run is started; its nodes (both) are served before most of theirs."""

    async def test_high_run_finishes_before_most_low_ones(self, tmp_path: Path) -> None:
        transport = SQLiteQueueTransport(tmp_path / "queue.db")
        store = SQLiteStore(tmp_path / "runs.db")
        client = flowkit.Client(transport, store, flows=[two_steps])
        finished: list[str] = []
        worker = flowkit.Worker([two_steps], transport, store, concurrency=1, poll_interval=0.05)
        worker.events.subscribe(
            lambda event: finished.append(event.run_id), types={"workflow:finish"}
        )
        low = [(await client.start(two_steps, priority=1, x=i)).run_id for i in range(20)]
        high = (await client.start(two_steps, priority=9, x=100)).run_id
        try:
            with anyio.fail_after(BOUND * 2):
                async with anyio.create_task_group() as tg:
                    await tg.start(worker.run)
                    results = [await client.wait(run_id) for run_id in [high, *low]]
                    tg.cancel_scope.cancel()
        finally:
            await transport.close()
            await store.close()
        assert {RunStatus.COMPLETED} == {result.status for result in results}
        assert sorted([high, *low]) == sorted(finished)
        assert finished.index(high) <= 2  # before at least 18 of the 20 low runs


@pytest.mark.asyncio_only
class TestRabbitMQ:
    """``max_priority`` is opt-in: a queue declared otherwise is refused, saying why."""

    @pytest.fixture
    def anyio_backend(self) -> str:
        return "asyncio"

    async def test_existing_queue_without_priorities(self) -> None:
        from conformance.factory_rabbitmq import RABBITMQ_URL, delete_queues

        from flowkit.transports.rabbitmq._transport import RabbitMQTransport

        prefix = f"fk_test_{uuid.uuid4().hex[:12]}"
        plain = RabbitMQTransport(RABBITMQ_URL, queue_prefix=prefix)
        prioritised = RabbitMQTransport(RABBITMQ_URL, queue_prefix=prefix, max_priority=9)
        try:
            await plain.connect("q")
            with pytest.raises(TransportError, match="max_priority") as raised:
                await prioritised.connect("q")
            assert "PRECONDITION" in str(raised.value).upper() or "x-max-priority" in str(
                raised.value
            )
        finally:
            await plain.close()
            await prioritised.close()
            await delete_queues(plain.declared_queues | {f"{prefix}.q", f"{prefix}.q.dlq"})

    def test_max_priority_checked(self) -> None:
        from flowkit.transports.rabbitmq._transport import RabbitMQTransport

        for bad in (0, 10, True):
            with pytest.raises(ConfigurationError, match="max_priority"):
                RabbitMQTransport(max_priority=bad)
        url = "amqp://guest:guest@127.0.0.1:5672/?max_priority=5"
        assert 5 == RabbitMQTransport.from_url(url).max_priority


@pytest.mark.asyncio_only
class TestRedis:
    """Delayed and nacked-with-delay entries of priority 1-9 come back to the high stream."""

    @pytest.fixture
    def anyio_backend(self) -> str:
        return "asyncio"

    async def test_delayed_and_requeued_entries_stay_high(self) -> None:
        from conformance.factory_redis import REDIS_URL, delete_keys

        from flowkit.transports.redis._transport import RedisTransport

        prefix = f"fk_test_{uuid.uuid4().hex[:12]}"
        transport = RedisTransport(REDIS_URL, prefix=prefix, block_ms=100)
        streams: list[tuple[bytes, str]] = []
        try:
            await transport.send("q", b"high", priority=8, delay=0.1)
            await transport.send("q", b"low", delay=0.1)
            with anyio.fail_after(BOUND):
                async with aclosing(transport.receive("q")) as deliveries:
                    async for delivery in deliveries:
                        streams.append((delivery.body, delivery._keys.stream))
                        if len(streams) == 2:
                            await delivery.nack(requeue_after=0.1)
                        else:
                            await delivery.ack()
                        if len(streams) == 3:
                            break
        finally:
            await transport.close()
            await delete_keys(f"{prefix}:*")
        high, low = f"{prefix}:q:high", f"{prefix}:q"
        assert {(b"high", high), (b"low", low)} == set(streams[:2])
        assert (streams[1][0], streams[1][1]) == streams[2]  # requeued to the same stream


@pytest.mark.asyncio_only
class TestPostgresQueueUpgrade:
    """Queue tables of schema version 1 get the priority column (migration 2); the
    messages they hold count as priority 0."""

    @pytest.fixture
    def anyio_backend(self) -> str:
        return "asyncio"

    async def test_version_1_tables(self) -> None:
        import psycopg
        from conformance.factory_postgres import PG_DSN, _drop
        from psycopg import sql

        from flowkit.backends._postgres import migrate
        from flowkit.transports._pgqueue import _MIGRATIONS, PostgresQueueTransport

        schema = f"fk_test_{uuid.uuid4().hex[:12]}"
        async with await psycopg.AsyncConnection.connect(PG_DSN, autocommit=True) as conn:
            await conn.execute(sql.SQL("SET search_path TO {}").format(sql.Identifier(schema)))
            await migrate(
                conn,
                schema,
                _MIGRATIONS[:1],
                version_table="flowkit_queue_schema",
                tables="flowkit queue tables",
                error=TransportError,
            )
            await conn.execute(
                sql.SQL(
                    "INSERT INTO {}.flowkit_queue (queue, body, headers, available_at)"
                    " VALUES ('q', 'old', '{{}}', 0)"
                ).format(sql.Identifier(schema))
            )
        transport = PostgresQueueTransport(PG_DSN, schema=schema)
        try:
            await transport.send("q", b"new-high", priority=5)
            await transport.send("q", b"new-low")
            received = []
            async with aclosing(transport.receive("q")) as deliveries:
                async for delivery in deliveries:
                    received.append(delivery.body)
                    await delivery.ack()
                    if len(received) == 3:
                        break
            versions = await transport._query(
                "versions", "SELECT max(version) FROM flowkit_queue_schema", None
            )
        finally:
            await transport.close()
            await _drop(schema)
        assert [b"new-high", b"old", b"new-low"] == received
        assert [(2,)] == [tuple(row) for row in versions]


class TestRunsShow:
    """``flowkit runs show`` prints a run's priority when it has one."""

    async def test_header_line(self) -> None:
        from rich.console import Console

        from flowkit.cli._show import _header

        rt = flowkit.Runtime(store=MemoryStore())
        await rt.run(two_steps, run_id="hi", priority=8, x=1)
        await rt.run(two_steps, run_id="plain", x=1)
        console = Console(width=200, record=True)
        console.print(_header(await rt.describe("hi")))
        console.print(_header(await rt.describe("plain")))
        shown = console.export_text()
        assert 1 == shown.count("priority")
        assert "priority 8" in shown

"""Observability: one trace per run (across runtimes and workers), metrics, logs, redaction.

Traces and metrics are read back with the OpenTelemetry SDK's in-memory span
exporter and metric reader. "Two processes" are two Runtime (or Worker)
objects over one store, each with its own tracer provider, exactly as two
processes would be configured; nothing crosses between them but the store.
"""

from __future__ import annotations

import importlib
import io
import json
import logging
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

import anyio
import pytest
import structlog
from anyio.streams.buffered import BufferedByteReceiveStream
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import StatusCode
from structlog.testing import capture_logs

import flowkit
import flowkit.observability
import flowkit.shell._execute
import flowkit.webhooks
import flowkit.worker._messages
from flowkit import Flow, RunStatus
from flowkit.backends._options import redact as redact_url
from flowkit.observability import (
    EventLogger,
    OpenTelemetryMiddleware,
    configure_logging,
    current_traceparent,
    redact,
)
from flowkit.stores import MemoryStore, SQLiteStore
from flowkit.transports import MemoryTransport

if TYPE_CHECKING:
    from collections.abc import Iterator

BROKER_URL = "amqp://app:brokerpass-7f3@127.0.0.1:5672/prod"
PG_URL = "postgresql://u:pg-s3cret-91@127.0.0.1/test"
WEBHOOK_SECRET = "whsec-c0ffee-42"


# -- telemetry ------------------------------------------------------------------------
class Telemetry:
    """One process's OpenTelemetry SDK set-up, exporting to memory."""

    def __init__(self) -> None:
        self.exporter = InMemorySpanExporter()
        self.tracer_provider = TracerProvider(shutdown_on_exit=False)
        self.tracer_provider.add_span_processor(SimpleSpanProcessor(self.exporter))
        self.reader = InMemoryMetricReader()
        self.meter_provider = MeterProvider(metric_readers=[self.reader], shutdown_on_exit=False)
        self.middleware = OpenTelemetryMiddleware(self.tracer_provider, self.meter_provider)
        self.tracer = self.tracer_provider.get_tracer("app")

    def spans(self, name: str | None = None) -> list[ReadableSpan]:
        finished = sorted(self.exporter.get_finished_spans(), key=lambda s: s.start_time or 0)
        return [s for s in finished if name is None or s.name == name]

    def one(self, name: str) -> ReadableSpan:
        spans = self.spans(name)
        assert 1 == len(spans), [s.name for s in self.spans()]
        return spans[0]

    def points(self, name: str) -> list[Any]:
        data = self.reader.get_metrics_data()
        if data is None:
            return []
        return [
            point
            for resource in data.resource_metrics
            for scope in resource.scope_metrics
            for metric in scope.metrics
            if metric.name == name
            for point in metric.data.data_points
        ]

    def total(self, name: str, **labels: Any) -> float:
        """Sum of a counter's values (or a histogram's counts) over points with ``labels``."""
        wanted = {f"flowkit.{key}": value for key, value in labels.items()}
        return sum(
            getattr(point, "count", None) or getattr(point, "value", 0)
            for point in self.points(name)
            if wanted.items() <= dict(point.attributes or {}).items()
        )


@pytest.fixture
def telemetry() -> Telemetry:
    return Telemetry()


def attrs_of(span: ReadableSpan) -> dict[str, Any]:
    return dict(span.attributes or {})


def trace_id(span: ReadableSpan) -> int:
    assert span.context is not None
    return span.context.trace_id


def span_id(span: ReadableSpan) -> int:
    assert span.context is not None
    return span.context.span_id


def parent_id(span: ReadableSpan) -> int | None:
    return span.parent.span_id if span.parent is not None else None


def attempts(spans: list[ReadableSpan]) -> list[tuple[Any, Any]]:
    return [(attrs_of(s)["flowkit.node_id"], attrs_of(s)["flowkit.attempt"]) for s in spans]


# -- flows ----------------------------------------------------------------------------
async def one() -> int:
    return 1


async def plus_one(value: int) -> int:
    return value + 1


async def publish(value: Any = None) -> str:
    return f"published {value}"


def chain() -> Flow:
    return Flow("chain").node("a", one).node("b", plus_one).edge("a", "b")


def three() -> Flow:
    return (
        Flow("three")
        .node("a", one)
        .node("b", plus_one)
        .node("c", plus_one)
        .edge("a", "b")
        .edge("b", "c")
    )


def flaky_node(failures: int) -> Any:
    errors = [ValueError(f"flaky {n}") for n in range(failures)]

    async def flaky() -> int:
        if errors:
            raise errors.pop()
        return 1

    return flaky


async def on_workers(
    flow: Flow, client: flowkit.Client, workers: list[flowkit.Worker], runs: int = 1
) -> list[str]:
    """Start ``runs`` runs through ``client`` and return once the workers finished them."""
    finished: set[str] = set()
    done = anyio.Event()

    def on_finish(event: flowkit.Event) -> None:
        finished.add(event.run_id)
        if len(finished) == runs:
            done.set()

    for worker in workers:
        worker.events.subscribe(on_finish, types={"workflow:finish"})
    async with anyio.create_task_group() as tg:
        for worker in workers:
            await tg.start(worker.run)
        run_ids = [(await client.start(flow)).run_id for _ in range(runs)]
        with anyio.fail_after(10):
            await done.wait()
        tg.cancel_scope.cancel()
    return run_ids


# -- worker processes -----------------------------------------------------------------
PROCESS_FLOWS = """
from flowkit import Flow

async def a(order_id: str) -> str:
    return f"order {order_id}"

async def b(value=None) -> str:
    return "shipped"

approval = (
    Flow("approval").node("a", a).wait("approve").sleep("nap", duration=0.01).node("b", b)
    .edge("a", "approve").edge("approve", "nap").edge("nap", "b")
)
"""

WORKER_PROCESS = """
import signal, sys
import anyio, flowkit
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor, SpanExporter, SpanExportResult
from flowkit.observability import EventLogger, OpenTelemetryMiddleware, configure_logging
from flowkit.stores import SQLiteStore
from flowkit.transports import from_url
from procflows import approval

class FileExporter(SpanExporter):
    def __init__(self, path):
        self.file = open(path, "w", buffering=1)
    def export(self, spans):
        for span in spans:
            self.file.write(span.to_json(indent=None) + "\\n")
        return SpanExportResult.SUCCESS
    def shutdown(self):
        self.file.close()

async def main(db, spans):
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(FileExporter(spans)))
    configure_logging("json", stream=sys.stdout)
    otel = OpenTelemetryMiddleware(provider)
    worker = flowkit.Worker([approval], from_url(f"sqlite:///{db}"), SQLiteStore(db),
                            middleware=[otel], poll_interval=0.02)
    otel.attach(worker.events)
    worker.events.subscribe(EventLogger())
    with anyio.open_signal_receiver(signal.SIGTERM) as signals:
        async with anyio.create_task_group() as tg:
            tg.start_soon(worker.run)
            async for _ in signals:
                worker.stop()
                break
    provider.shutdown()

anyio.run(main, sys.argv[1], sys.argv[2])
"""


async def worker_process(
    directory: Path, name: str, run_id: str, until: str
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Run a worker process until it logs event ``until`` for ``run_id``; its logs and spans."""
    spans = directory / f"{name}.spans"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(directory), *sys.path])}
    command = [sys.executable, str(directory / "worker.py"), str(directory / "q.db"), str(spans)]
    logs: list[dict[str, Any]] = []
    async with await anyio.open_process(command, cwd=directory, env=env) as process:
        assert process.stdout is not None
        lines = BufferedByteReceiveStream(process.stdout)
        with anyio.fail_after(60):
            while not any(x.get("event") == until and x.get("run_id") == run_id for x in logs):
                logs.append(json.loads(await lines.receive_until(b"\n", 1 << 20)))
            process.terminate()
            assert 0 == await process.wait()
    return logs, [json.loads(line) for line in spans.read_text().splitlines()]


def hex_id(value: int, width: int) -> str:
    return f"0x{value:0{width}x}"


# -- traces ---------------------------------------------------------------------------
@pytest.mark.anyio
class TestNodeSpans:
    """Every node attempt is a ``flowkit.node`` span; failures are recorded on it."""

    async def test_one_trace_per_run_with_a_span_per_node(self, telemetry: Telemetry) -> None:
        rt = flowkit.Runtime(middleware=[telemetry.middleware])
        result = await rt.run(chain())
        run = telemetry.one("flowkit.run")
        nodes = telemetry.spans("flowkit.node")
        assert [("a", 1), ("b", 1)] == attempts(nodes)
        assert {trace_id(run)} == {trace_id(s) for s in nodes}
        assert {span_id(run)} == {parent_id(s) for s in nodes}
        assert run.parent is None
        assert {"flowkit.run_id": result.run_id, "flowkit.flow": "chain"} == attrs_of(run)
        expected = {
            "flowkit.run_id": result.run_id,
            "flowkit.node_id": "a",
            "flowkit.attempt": 1,
            "flowkit.flow": "chain",
            "flowkit.outcome": "ok",
        }
        assert expected == attrs_of(nodes[0])

    async def test_retries_are_separate_attempts(self, telemetry: Telemetry) -> None:
        rt = flowkit.Runtime(middleware=[telemetry.middleware])
        flow = Flow("flaky").node("a", flaky_node(2), retries=2).node("b", plus_one)
        result = await rt.run(flow.edge("a", "b"))
        assert RunStatus.COMPLETED == result.status
        nodes = telemetry.spans("flowkit.node")
        assert [("a", 1), ("a", 2), ("a", 3), ("b", 1)] == attempts(nodes)
        statuses = [s.status.status_code for s in nodes]
        assert [StatusCode.ERROR, StatusCode.ERROR, StatusCode.UNSET, StatusCode.UNSET] == statuses
        assert ["exception"] == [e.name for e in nodes[0].events]
        assert "ValueError" == dict(nodes[0].events[0].attributes or {})["exception.type"]

    async def test_failure_sets_status_error(self, telemetry: Telemetry) -> None:
        async def boom() -> None:
            raise KeyError("no such order")

        rt = flowkit.Runtime(middleware=[telemetry.middleware])
        result = await rt.run(Flow("boom").node("boom", boom))
        assert RunStatus.FAILED == result.status
        span = telemetry.one("flowkit.node")
        assert StatusCode.ERROR == span.status.status_code
        assert "KeyError: 'no such order'" == span.status.description
        assert "error" == attrs_of(span)["flowkit.outcome"]

    async def test_secrets_in_exceptions_are_redacted(self, telemetry: Telemetry) -> None:
        async def connect() -> None:
            raise ConnectionError(f"cannot reach {BROKER_URL}")

        rt = flowkit.Runtime(middleware=[telemetry.middleware])
        await rt.run(Flow("connect").node("connect", connect))
        span = telemetry.one("flowkit.node")
        recorded = json.dumps([dict(e.attributes or {}) for e in span.events])
        assert "amqp://app:***@127.0.0.1" in recorded
        assert "brokerpass" not in recorded + str(span.status.description)

    async def test_timeout_is_an_error(self, telemetry: Telemetry) -> None:
        async def stuck() -> None:
            await anyio.Event().wait()

        rt = flowkit.Runtime(middleware=[telemetry.middleware])
        result = await rt.run(Flow("stuck").node("stuck", stuck, timeout=0.01))
        assert RunStatus.FAILED == result.status
        span = telemetry.one("flowkit.node")
        assert "timeout" == attrs_of(span)["flowkit.outcome"]
        assert StatusCode.ERROR == span.status.status_code

    async def test_spans_started_in_a_node_nest_under_it(self, telemetry: Telemetry) -> None:
        async def charge() -> None:
            with telemetry.tracer.start_as_current_span("charge card"):
                pass

        rt = flowkit.Runtime(middleware=[telemetry.middleware])
        await rt.run(Flow("pay").node("charge", charge))
        assert span_id(telemetry.one("flowkit.node")) == parent_id(telemetry.one("charge card"))


@pytest.mark.anyio
class TestRunTrace:
    """A run is one trace: it joins the caller's span and continues wherever it runs."""

    async def test_run_started_in_a_user_span_joins_its_trace(self, telemetry: Telemetry) -> None:
        rt = flowkit.Runtime(middleware=[telemetry.middleware])
        with telemetry.tracer.start_as_current_span("POST /orders"):
            await rt.run(chain())
        request = telemetry.one("POST /orders")
        flowkit_spans = [s for s in telemetry.spans() if s.name.startswith("flowkit.")]
        assert len(flowkit_spans) >= 2
        assert {trace_id(request)} == {trace_id(s) for s in flowkit_spans}
        by_id = {span_id(s): s for s in telemetry.spans()}
        for span in flowkit_spans:
            while span.parent is not None:
                span = by_id[span.parent.span_id]
            assert request is span

    async def test_two_runtimes_over_one_store_share_the_trace(self, tmp_path: Path) -> None:
        flow = Flow("approval").node("a", one).wait("approve").node("b", publish)
        flow.edge("a", "approve").edge("approve", "b")
        first, second = Telemetry(), Telemetry()
        store = SQLiteStore(tmp_path / "runs.db")
        paused = await flowkit.Runtime(store=store, middleware=[first.middleware]).run(flow)
        assert RunStatus.AWAITING == paused.status
        other = flowkit.Runtime(
            store=SQLiteStore(tmp_path / "runs.db"), middleware=[second.middleware], flows=[flow]
        )
        result = await other.signal(paused.run_id, "approve", "yes")
        assert RunStatus.COMPLETED == result.status
        run = first.one("flowkit.run")
        a, b = first.one("flowkit.node"), second.one("flowkit.node")
        assert [("a", 1), ("b", 1)] == attempts([a, b])
        assert trace_id(run) == trace_id(a) == trace_id(b)
        assert span_id(run) == parent_id(a) == parent_id(b)

    async def test_nodes_on_two_workers_share_the_trace(self) -> None:
        transport, store = MemoryTransport(), MemoryStore()
        caller, left, right = Telemetry(), Telemetry(), Telemetry()
        client = flowkit.Client(transport, store, flows=[three()], middleware=[caller.middleware])
        workers = [
            flowkit.Worker([three()], transport, store, middleware=[t.middleware])
            for t in (left, right)
        ]
        with caller.tracer.start_as_current_span("POST /orders"):
            await on_workers(three(), client, workers, runs=4)
        request = caller.one("POST /orders")
        runs = caller.spans("flowkit.run")
        nodes = left.spans("flowkit.node") + right.spans("flowkit.node")
        assert 4 == len(runs)
        assert 12 == len(nodes)
        assert {span_id(request)} == {parent_id(s) for s in runs}
        assert {trace_id(request)} == {trace_id(s) for s in runs + nodes}
        run_spans = {attrs_of(s)["flowkit.run_id"]: span_id(s) for s in runs}
        for node in nodes:
            assert run_spans[attrs_of(node)["flowkit.run_id"]] == parent_id(node)

    async def test_a_run_moving_between_worker_processes_is_one_trace(
        self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        (tmp_path / "procflows.py").write_text(PROCESS_FLOWS)
        (tmp_path / "worker.py").write_text(WORKER_PROCESS)
        monkeypatch.syspath_prepend(str(tmp_path))
        flows = importlib.import_module("procflows")
        monkeypatch.setitem(sys.modules, "procflows", flows)
        db = tmp_path / "q.db"
        caller = Telemetry()
        client = flowkit.Client(
            flowkit.transports.from_url(f"sqlite:///{db}"),
            SQLiteStore(db),
            flows=[flows.approval],
            middleware=[caller.middleware],
        )
        caller.middleware.attach(client.events)
        with caller.tracer.start_as_current_span("POST /orders"):
            run_id = (await client.start(flows.approval, order_id="A1")).run_id
        first_logs, first = await worker_process(tmp_path, "first", run_id, "workflow:pause")
        await client.signal(run_id, "approve", "yes")
        second_logs, second = await worker_process(tmp_path, "second", run_id, "workflow:finish")
        assert RunStatus.COMPLETED == (await client.result(run_id)).status

        request, run = caller.one("POST /orders"), caller.one("flowkit.run")
        assert span_id(request) == parent_id(run)
        names = [[s["name"] for s in spans] for spans in (first, second)]
        assert "flowkit.node" in names[0]
        assert {"flowkit.timer.fire", "flowkit.node", "flowkit.run.finish"} <= set(names[1])
        assert "flowkit.signal" in [s.name for s in caller.spans()]
        assert {hex_id(trace_id(request), 32)} == {s["context"]["trace_id"] for s in first + second}
        assert {hex_id(span_id(run), 16)} == {s["parent_id"] for s in first + second}
        nodes = [[s["attributes"]["flowkit.node_id"] for s in spans if s["name"] == "flowkit.node"]
                 for spans in (first, second)]  # fmt: skip
        assert [["a"], ["b"]] == nodes
        grepped = [x for x in first_logs + second_logs if run_id in json.dumps(x)]
        assert {"a", "b"} == {x["node_id"] for x in grepped if x["event"] == "node:finish"}

    async def test_sleep_and_signal_are_markers_in_the_trace(self, telemetry: Telemetry) -> None:
        flow = (
            Flow("nap")
            .node("a", one)
            .sleep("nap", duration=0.001)
            .wait("approve")
            .node("b", publish)
        )
        flow.edge("a", "nap").edge("nap", "approve").edge("approve", "b")
        rt = flowkit.Runtime(middleware=[telemetry.middleware])
        telemetry.middleware.attach(rt.events)
        sleeping = await rt.run(flow)
        await rt.signal(sleeping.run_id, "approve", "yes")  # buffered until the wait
        async with rt.scheduler():
            result = await rt.handle(sleeping.run_id).result(timeout=10)
        assert RunStatus.COMPLETED == result.status
        run = telemetry.one("flowkit.run")
        markers = [s for s in telemetry.spans() if s.name not in ("flowkit.run", "flowkit.node")]
        expected = [
            "flowkit.timer.set",
            "flowkit.run.pause",
            "flowkit.signal",
            "flowkit.timer.fire",
            "flowkit.run.resume",
            "flowkit.run.finish",
        ]
        assert expected == [s.name for s in markers]
        assert {span_id(run)} == {parent_id(s) for s in markers}
        assert {trace_id(run)} == {trace_id(s) for s in telemetry.spans()}
        assert all(s.start_time == s.end_time for s in markers)
        assert 0.001 == attrs_of(markers[0])["flowkit.timer.delay"]
        assert "completed" == attrs_of(markers[-1])["flowkit.run.status"]

    async def test_a_failed_run_finishes_with_an_error_marker(self, telemetry: Telemetry) -> None:
        async def boom() -> None:
            raise ValueError("out of stock")

        rt = flowkit.Runtime(middleware=[telemetry.middleware])
        telemetry.middleware.attach(rt.events)
        await rt.run(Flow("boom").node("boom", boom))
        finish = telemetry.one("flowkit.run.finish")
        assert StatusCode.ERROR == finish.status.status_code
        assert "failed" == attrs_of(finish)["flowkit.run.status"]

    async def test_a_child_run_nests_under_its_parent(self, telemetry: Telemetry) -> None:
        child = Flow("child").node("c", one)
        parent = Flow("parent").node("sub", uses="subflow", params={"blueprint_id": "child"})
        rt = flowkit.Runtime(middleware=[telemetry.middleware], flows=[child])
        result = await rt.run(parent)
        assert RunStatus.COMPLETED == result.status
        runs = {attrs_of(s)["flowkit.flow"]: s for s in telemetry.spans("flowkit.run")}
        assert span_id(runs["parent"]) == parent_id(runs["child"])
        assert result.run_id == attrs_of(runs["child"])["flowkit.parent_run_id"]
        assert span_id(runs["child"]) == parent_id(telemetry.one("flowkit.node"))
        assert {trace_id(runs["parent"])} == {trace_id(s) for s in telemetry.spans()}


# -- metrics --------------------------------------------------------------------------
@pytest.mark.anyio
class TestMetrics:
    """Node metrics come from the middleware, run metrics from the event bus."""

    async def test_node_duration_and_retries(self, telemetry: Telemetry) -> None:
        rt = flowkit.Runtime(middleware=[telemetry.middleware])
        flow = Flow("flaky").node("a", flaky_node(1), retries=1).node("b", plus_one)
        await rt.run(flow.edge("a", "b"))
        duration = "flowkit.node.duration"
        assert 1 == telemetry.total(duration, node_id="a", outcome="error")
        assert 1 == telemetry.total(duration, node_id="a", outcome="ok")
        assert 1 == telemetry.total(duration, node_id="b", outcome="ok")
        assert 1 == telemetry.total("flowkit.node.retries", node_id="a")
        assert 0 == telemetry.total("flowkit.node.retries", node_id="b")

    async def test_in_flight_counts_running_nodes(self, telemetry: Telemetry) -> None:
        seen: list[float] = []

        async def look() -> None:
            seen.append(telemetry.total("flowkit.node.in_flight"))

        rt = flowkit.Runtime(middleware=[telemetry.middleware])
        await rt.run(Flow("look").node("look", look))
        assert [1] == seen
        assert 0 == telemetry.total("flowkit.node.in_flight")

    async def test_queue_lag_and_flow_label(self, telemetry: Telemetry) -> None:
        rt = flowkit.Runtime(middleware=[telemetry.middleware], max_concurrency=1)
        await rt.run(chain())
        assert 2 == telemetry.total("flowkit.node.queue_lag", flow="chain")
        assert 2 == telemetry.total("flowkit.node.duration", flow="chain")

    async def test_runs_started_and_finished_by_status(self, telemetry: Telemetry) -> None:
        async def boom() -> None:
            raise ValueError("no")

        rt = flowkit.Runtime(middleware=[telemetry.middleware])
        telemetry.middleware.attach(rt.events)
        flows = [chain(), Flow("boom").node("boom", boom)]  # referenced while runs start
        await rt.run(flows[0])
        await rt.run(flows[0])
        await rt.run(flows[1])
        assert 2 == telemetry.total("flowkit.runs.started", flow="chain")
        assert 1 == telemetry.total("flowkit.runs.started", flow="boom")
        assert 2 == telemetry.total("flowkit.runs.finished", status="completed")
        assert 1 == telemetry.total("flowkit.runs.finished", status="failed")

    async def test_runs_finished_by_flow(self, telemetry: Telemetry) -> None:
        rt = flowkit.Runtime()
        telemetry.middleware.attach(rt.events)
        await rt.run(chain())
        assert 1 == telemetry.total("flowkit.runs.finished", flow="chain", status="completed")

    async def test_detaching_stops_run_metrics(self, telemetry: Telemetry) -> None:
        rt = flowkit.Runtime()
        detach = telemetry.middleware.attach(rt.events)
        await rt.run(chain())
        detach()
        await rt.run(chain())
        assert 1 == telemetry.total("flowkit.runs.started")

    async def test_dead_lettered_messages(self, telemetry: Telemetry) -> None:
        transport = MemoryTransport()
        worker = flowkit.Worker([chain()], transport, MemoryStore())
        telemetry.middleware.attach(worker.events)
        dead = anyio.Event()
        worker.events.subscribe(lambda _: dead.set(), types={"message:dead_letter"})
        async with anyio.create_task_group() as tg:
            await tg.start(worker.run)
            await transport.send("flowkit", b"not a node message")
            with anyio.fail_after(10):
                await dead.wait()
            tg.cancel_scope.cancel()
        assert 1 == telemetry.total("flowkit.messages.dead_lettered")

    async def test_queue_lag_on_a_worker(self, telemetry: Telemetry) -> None:
        transport, store = MemoryTransport(), MemoryStore()
        client = flowkit.Client(transport, store, flows=[three()])
        worker = flowkit.Worker([three()], transport, store, middleware=[telemetry.middleware])
        await on_workers(three(), client, [worker], runs=2)
        assert 6 == telemetry.total("flowkit.node.queue_lag", flow="three")
        assert all(p.min >= 0 for p in telemetry.points("flowkit.node.queue_lag"))


# -- event logging --------------------------------------------------------------------
@pytest.mark.anyio
class TestEventLogger:
    """``EventLogger`` writes each event as one structured log line."""

    async def test_each_event_is_a_line_with_its_fields(self) -> None:
        rt = flowkit.Runtime()
        rt.events.subscribe(EventLogger())
        with capture_logs() as logs:
            result = await rt.run(chain())
        expected = [
            "workflow:start",
            "node:start",
            "node:finish",
            "node:start",
            "node:finish",
            "workflow:finish",
        ]
        assert expected == [line["event"] for line in logs]
        assert expected == [line["type"] for line in logs]
        assert {result.run_id} == {line["run_id"] for line in logs}
        assert {"info"} == {line["log_level"] for line in logs}
        nodes = [(line["node_id"], line["attempt"]) for line in logs if "node_id" in line]
        assert [("a", 1), ("a", 1), ("b", 1), ("b", 1)] == nodes
        assert isinstance(logs[2]["duration"], float)
        assert {"status": "completed"} == logs[-1]["data"]

    async def test_logger_and_level(self) -> None:
        rt = flowkit.Runtime()
        audit = structlog.get_logger("audit").bind(component="orders")
        rt.events.subscribe(EventLogger(audit, level="DEBUG"), types={"workflow:finish"})
        with capture_logs() as logs:
            await rt.run(chain())
        assert [("debug", "orders")] == [(x["log_level"], x["component"]) for x in logs]

    async def test_lines_name_the_flow(self) -> None:
        rt = flowkit.Runtime()
        rt.events.subscribe(EventLogger())
        with capture_logs() as logs:
            await rt.run(chain())
        assert {"chain"} == {line["flow"] for line in logs}

    def test_unknown_level_is_refused(self) -> None:
        with pytest.raises(ValueError, match="unknown log level 'loud'"):
            EventLogger(level="loud")


# -- configured logging ---------------------------------------------------------------
@pytest.fixture
def restore_logging() -> Iterator[None]:
    saved = structlog.get_config()
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield
    structlog.configure(**saved)
    root.handlers[:] = handlers
    root.setLevel(level)


@pytest.fixture
def json_logs(restore_logging: None) -> io.StringIO:
    output = io.StringIO()
    configure_logging("json", "DEBUG", stream=output)
    return output


def lines_with(output: io.StringIO, text: str) -> list[dict[str, Any]]:
    """``grep text`` over JSON log output, parsed."""
    return [json.loads(line) for line in output.getvalue().splitlines() if text in line]


@pytest.mark.anyio
class TestJsonLogs:
    """``configure_logging("json")`` writes one JSON object per line that grep can follow."""

    async def test_grep_one_run_id_in_worker_logs(self, json_logs: io.StringIO) -> None:
        transport, store = MemoryTransport(), MemoryStore()
        client = flowkit.Client(transport, store, flows=[three()])
        worker = flowkit.Worker([three()], transport, store)
        worker.events.subscribe(EventLogger())
        first, second = await on_workers(three(), client, [worker], runs=2)
        mine = lines_with(json_logs, first)
        assert {"a", "b", "c"} == {line["node_id"] for line in mine if "node_id" in line}
        assert {first} == {line["run_id"] for line in mine}
        assert all(second not in json.dumps(line) for line in mine)
        assert lines_with(json_logs, second)

    async def test_lines_written_by_node_code_name_the_node(self, json_logs: io.StringIO) -> None:
        async def charge() -> None:
            structlog.get_logger("shop").info("charging card")
            logging.getLogger("payments.sdk").warning("slow gateway")

        rt = flowkit.Runtime()
        result = await rt.run(Flow("pay").node("charge", charge))
        expected = {"run_id": result.run_id, "node_id": "charge", "attempt": 1, "flow": "pay"}
        lines = lines_with(json_logs, result.run_id)
        assert ["charging card", "slow gateway"] == [line["event"] for line in lines]
        for line in lines:
            assert expected.items() <= line.items()

    async def test_stdlib_records_are_rendered_too(self, json_logs: io.StringIO) -> None:
        logging.getLogger("broker.sdk").warning("connecting to %s", BROKER_URL)
        (line,) = lines_with(json_logs, "connecting to")
        assert "connecting to amqp://app:***@127.0.0.1:5672/prod" == line["event"]
        assert ("warning", "broker.sdk") == (line["level"], line["logger"])

    async def test_level_filters(self, restore_logging: None) -> None:
        output = io.StringIO()
        configure_logging("json", "WARNING", stream=output)
        structlog.get_logger().info("quiet")
        structlog.get_logger().warning("loud")
        assert ["loud"] == [json.loads(x)["event"] for x in output.getvalue().splitlines()]

    async def test_console_format(self, restore_logging: None) -> None:
        output = io.StringIO()
        configure_logging("console", stream=output)
        rt = flowkit.Runtime()
        rt.events.subscribe(EventLogger(), types={"node:finish"})
        result = await rt.run(chain())
        lines = output.getvalue().splitlines()
        assert 2 == len(lines)
        for line in lines:
            assert "node:finish" in line
            assert f"run_id={result.run_id}" in line

    def test_bad_format_or_level_is_refused(self, restore_logging: None) -> None:
        with pytest.raises(ValueError, match="unknown log format 'xml'"):
            configure_logging("xml")  # type: ignore[arg-type]
        with pytest.raises(ValueError, match="unknown log level 'LOUD'"):
            configure_logging("json", "LOUD")


# -- redaction ------------------------------------------------------------------------
class TestRedact:
    """``redact`` masks secrets in text and structures and leaves everything else alone."""

    @pytest.mark.parametrize(
        ("text", "expected"),
        [
            (BROKER_URL, "amqp://app:***@127.0.0.1:5672/prod"),
            ("amqp://app:p@ss@rabbit/vh", "amqp://app:***@rabbit/vh"),
            ("redis://:pw@localhost:6379/0", "redis://:***@localhost:6379/0"),
            (f"connect to {PG_URL} failed", "connect to postgresql://u:***@127.0.0.1/test failed"),
            ("Server=db;User Id=sa;Password=hunter2;", "Server=db;User Id=sa;Password=***;"),
            (
                "Endpoint=sb://ns/;SharedAccessKeyName=root;SharedAccessKey=a/b+c=;EntityPath=q",
                "Endpoint=sb://ns/;SharedAccessKeyName=root;SharedAccessKey=***;EntityPath=q",
            ),
            ("host=db password='a b' user=x", "host=db password='***' user=x"),
            ("GET /cb?token=abc&user=y", "GET /cb?token=***&user=y"),
            ("{'path': '/hooks', 'secret': 'wh_1'}", "{'path': '/hooks', 'secret': '***'}"),
            ('{"password": "p\\"w"}', '{"password": "***"}'),
            ("Authorization: Bearer eyJhbGciOiJIUzI1NiJ9.e30", "Authorization: Bearer ***"),
        ],
    )
    def test_masks(self, text: str, expected: str) -> None:
        assert expected == redact(text)
        assert expected == redact(expected)

    @pytest.mark.parametrize(
        "text",
        [
            "order A1 shipped via http://example.com:8080/a@b?c=d",
            "idempotency_key=k1 routing_key=orders key=value",
            "a basic configuration, the bearer of news",
            "amqp://guest@localhost/",
        ],
    )
    def test_leaves_ordinary_text_alone(self, text: str) -> None:
        assert text == redact(text)

    @pytest.mark.parametrize(
        "url",
        [BROKER_URL, PG_URL, "redis://:pw@h:6379/0", "sqlite:///runs.db", "amqp://u:@h/"],
    )
    def test_agrees_with_the_store_url_redact(self, url: str) -> None:
        assert redact_url(url) == redact(url)

    def test_structures(self) -> None:
        value = {
            "secret": WEBHOOK_SECRET,
            "nested": {"db_password": "x", "url": PG_URL, "token": None},
            "urls": [BROKER_URL],
            "pair": ("ok", BROKER_URL),
            "count": 3,
        }
        expected = {
            "secret": "***",
            "nested": {"db_password": "***", "url": redact(PG_URL), "token": None},
            "urls": [redact(BROKER_URL)],
            "pair": ("ok", redact(BROKER_URL)),
            "count": 3,
        }
        assert expected == redact(value)

    def test_objects_whose_repr_shows_a_secret(self) -> None:
        class Conn:
            def __repr__(self) -> str:
                return f"Conn({PG_URL!r})"

        plain = object()
        assert plain is redact(plain)
        assert "Conn('postgresql://u:***@127.0.0.1/test')" == redact(Conn())

    def test_literal_secrets(self) -> None:
        text = f"signed with {WEBHOOK_SECRET}"
        assert "signed with ***" == redact(text, secrets=[WEBHOOK_SECRET, ""])


@pytest.mark.anyio
class TestSecretsNeverLeak:
    """Webhook secrets and broker or database passwords appear in no log line and no repr."""

    async def test_not_in_any_log_line(self, json_logs: io.StringIO) -> None:
        async def connect(payment: Any = None) -> None:
            raise ConnectionError(f"broker down: {BROKER_URL}")

        hook = {"path": "/hooks/pay", "secret": WEBHOOK_SECRET}
        flow = Flow("pay").node("hook", uses="webhook", params=hook).node("c", connect)
        rt = flowkit.Runtime()
        rt.events.subscribe(EventLogger())
        await rt.signal((await rt.run(flow.edge("hook", "c"))).run_id, "hook", {"amount": 1})
        log = structlog.get_logger("app")
        log.info("starting", store=PG_URL, transport=BROKER_URL, webhook=hook)
        log.info("blueprint", nodes=[s.params for s in flow.blueprint.nodes])
        logging.getLogger("sdk").error("auth failed for %s", BROKER_URL)
        try:
            raise flowkit.StoreError(f"cannot connect to {PG_URL}")
        except flowkit.StoreError:
            log.exception("store unavailable")
        text = json_logs.getvalue()
        assert "node:error" in text
        assert "store unavailable" in text
        for secret in ("brokerpass", "pg-s3cret", WEBHOOK_SECRET):
            assert secret not in text

    @pytest.mark.parametrize(
        "url", [PG_URL, "redis://:pg-s3cret-91@127.0.0.1:6379/0", "sqlite:///:memory:"]
    )
    def test_not_in_store_reprs(self, url: str) -> None:
        assert "pg-s3cret" not in repr(flowkit.stores.from_url(url))

    @pytest.mark.parametrize(
        "url",
        [
            BROKER_URL,
            "redis://:brokerpass-7f3@127.0.0.1:6379/0",
            "nats://user:brokerpass-7f3@127.0.0.1:4222",
            "kafka://user:brokerpass-7f3@127.0.0.1:9092",
            "postgresql://u:brokerpass-7f3@127.0.0.1/db",
            "servicebus://Endpoint=sb://ns/;SharedAccessKeyName=r;SharedAccessKey=brokerpass-7f3=",
        ],
    )
    def test_not_in_transport_reprs_or_errors(self, url: str) -> None:
        try:
            text = repr(flowkit.transports.from_url(url))
        except flowkit.FlowkitError as exc:  # refused, not available, or its extra missing
            text = str(exc)
        assert "brokerpass" not in text

    def test_not_in_webhook_app_repr(self) -> None:
        hook = {"path": "/hooks/pay", "secret": WEBHOOK_SECRET}
        rt = flowkit.Runtime(flows=[Flow("pay").node("hook", uses="webhook", params=hook)])
        app = flowkit.webhooks.app(rt)
        assert WEBHOOK_SECRET not in repr(vars(app))

    def test_not_in_blueprint_repr(self) -> None:
        hook = {"path": "/hooks/pay", "secret": WEBHOOK_SECRET}
        flow = Flow("pay").node("hook", uses="webhook", params=hook)
        assert WEBHOOK_SECRET not in repr(flow.blueprint)


# -- the package ----------------------------------------------------------------------
class TestPackage:
    """The public surface, lazy OpenTelemetry import, and the documented example."""

    def test_public_names(self) -> None:
        expected = [
            "EventLogger",
            "OpenTelemetryMiddleware",
            "configure_logging",
            "current_traceparent",
            "redact",
        ]
        assert expected == flowkit.observability.__all__

    def test_import_does_not_import_opentelemetry(self) -> None:
        code = (
            "import sys, flowkit, flowkit.observability\n"
            "print(sorted(m for m in sys.modules if m.startswith('opentelemetry')))"
        )
        done = subprocess.run(
            [sys.executable, "-c", code], capture_output=True, text=True, check=True
        )
        assert "[]" == done.stdout.strip()

    def test_missing_opentelemetry(self, monkeypatch: pytest.MonkeyPatch) -> None:
        monkeypatch.setitem(sys.modules, "opentelemetry", None)
        with pytest.raises(flowkit.MissingDependency, match=re.escape("flowkit[otel]")):
            OpenTelemetryMiddleware()

    def test_current_traceparent(self, telemetry: Telemetry) -> None:
        assert current_traceparent() is None
        with telemetry.tracer.start_as_current_span("outer") as span:
            context = span.get_span_context()
            flags = int(context.trace_flags)
            expected = f"00-{context.trace_id:032x}-{context.span_id:016x}-{flags:02x}"
            assert expected == current_traceparent()

    def test_without_an_sdk_it_passes_the_trace_context_through(self) -> None:
        middleware = OpenTelemetryMiddleware()  # the global (no-op) providers
        caller = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
        assert caller == middleware.on_run_start("r1", "chain", caller)
        assert middleware.on_run_start("r2", "chain", None) is None

    def test_documented_example_runs(self) -> None:
        docs = Path(__file__).parent.parent / "docs" / "observability.md"
        example = re.search(r"```python\n(.*?)```", docs.read_text(), re.DOTALL)
        assert example is not None
        done = subprocess.run(
            [sys.executable, "-c", example.group(1)],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert 0 == done.returncode, done.stderr
        assert '"name": "flowkit.node"' in done.stdout

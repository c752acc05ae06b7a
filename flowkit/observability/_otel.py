"""OpenTelemetry traces and metrics for flowkit runs (``pip install 'flowkit[otel]'``).

How a run becomes one trace
---------------------------
A run may sleep for days and move between processes, so it is never one open
span (a span held open for three days is lost with the process holding it).
The shape is the one Temporal's tracing interceptor uses:

* ``flowkit.run`` is started *and ended* the moment the run is created, in
  the process creating it (:meth:`OpenTelemetryMiddleware.on_run_start`, called
  by the shell). Its parent is the caller's active span, or for a child run
  its parent run's ``flowkit.run``. Its span context is what the run stores as
  its ``traceparent``: it is the anchor every other span of the run hangs from.
* ``flowkit.node``, one per node attempt, in whichever process executes it,
  is a child of ``flowkit.run`` (``ctx.traceparent`` extracted with the W3C
  propagator), never of whatever span is active in that process. A failure
  records the exception and sets status ERROR; a retry is another span with a
  higher ``flowkit.attempt``.
* Zero-length marker spans, children of ``flowkit.run`` stamped with the
  event's time, show what happened between nodes: ``flowkit.timer.set``,
  ``flowkit.timer.fire``, ``flowkit.signal``, ``flowkit.run.pause`` /
  ``resume`` / ``cancel`` / ``stall`` / ``finish``, ``flowkit.node.retry``,
  ``flowkit.node.fallback``, ``flowkit.message.dead_letter``. They come from
  the event bus: call :meth:`OpenTelemetryMiddleware.attach`.

A run that slept three days is therefore one trace: the run span, the nodes
before the sleep, ``timer.set``, then three days later ``timer.fire`` and the
nodes after it — whichever processes ran them.

Metrics (meter ``flowkit``): the middleware records the node-level ones, the
event-bus subscriber the run-level ones; see :class:`_Instruments`.
"""

from __future__ import annotations

import time
import traceback
from typing import TYPE_CHECKING, Any, Final

import anyio

from .. import _clock as clock
from .._errors import MissingDependency
from .._version import __version__
from ..shell._middleware import Middleware
from ._logging import redact
from ._propagation import extract_context, format_traceparent

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator, Mapping
    from contextlib import AbstractContextManager

    from opentelemetry.metrics import Histogram, Meter, MeterProvider
    from opentelemetry.trace import Span, TracerProvider

    from ..shell._context import NodeContext
    from ..shell._events import Event, EventBus
    from ..shell._middleware import CallNext

_SCOPE: Final = "flowkit"
# Bucket boundaries (seconds) for the duration histograms: 5 ms to an hour.
_SECONDS: Final = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
                   120.0, 300.0, 600.0, 1800.0, 3600.0)  # fmt: skip
_MARKERS: Final = {
    "workflow:pause": "flowkit.run.pause",
    "workflow:resume": "flowkit.run.resume",
    "workflow:cancel": "flowkit.run.cancel",
    "workflow:retry": "flowkit.run.retry",
    "workflow:queue": "flowkit.run.queue",
    "workflow:admit": "flowkit.run.admit",
    "workflow:stall": "flowkit.run.stall",
    "workflow:finish": "flowkit.run.finish",
    "timer:set": "flowkit.timer.set",
    "timer:fire": "flowkit.timer.fire",
    "signal:receive": "flowkit.signal",
    "node:retry": "flowkit.node.retry",
    "node:fallback": "flowkit.node.fallback",
    "message:dead_letter": "flowkit.message.dead_letter",
}
_DEAD_LETTER: Final = "message:dead_letter"


class OpenTelemetryMiddleware(Middleware):
    """Traces every run as one trace and records flowkit's metrics.

    ``tracer_provider`` / ``meter_provider`` default to the global providers,
    as OpenTelemetry instrumentations do. Pass the same instance to every
    shell of a process, and attach it to their event buses for the run-level
    spans and metrics::

        otel = OpenTelemetryMiddleware()
        rt = flowkit.Runtime(middleware=[otel])
        otel.attach(rt.events)
        worker = flowkit.Worker(app=[checkout], transport=t, store=s, middleware=[otel])
        otel.attach(worker.events)

    Put it first in the middleware list so its node span wraps the others.
    Raises :class:`flowkit.MissingDependency` without ``opentelemetry-api``.
    """

    def __init__(
        self,
        tracer_provider: TracerProvider | None = None,
        meter_provider: MeterProvider | None = None,
    ) -> None:
        try:
            from opentelemetry import metrics, trace
        except ImportError as exc:
            raise MissingDependency("OpenTelemetryMiddleware", "otel") from exc
        self._tracer = trace.get_tracer(_SCOPE, __version__, tracer_provider)
        self._instruments = _Instruments(metrics.get_meter(_SCOPE, __version__, meter_provider))

    # -- runs -----------------------------------------------------------------
    def on_run_start(
        self, run_id: str, flow: str, traceparent: str | None, parent: str | None = None
    ) -> str | None:
        """Emit the run's ``flowkit.run`` span; its context is the run's new ``traceparent``.

        Called by the shell creating the run, with the caller's (or the parent
        run's) ``traceparent``. Without a recording SDK the span is invalid and
        ``traceparent`` is returned unchanged.
        """
        attributes: dict[str, str] = {"flowkit.run_id": run_id, "flowkit.flow": flow}
        if parent is not None:
            attributes["flowkit.parent_run_id"] = parent
        span = self._tracer.start_span(
            "flowkit.run", context=extract_context(traceparent), attributes=attributes
        )
        span.end()
        return format_traceparent(span.get_span_context()) or traceparent

    # -- nodes ----------------------------------------------------------------
    async def around_node(self, ctx: NodeContext, call_next: CallNext) -> Any:
        """Run the node inside its ``flowkit.node`` span and record the node metrics."""
        labels = _metric_labels(ctx)
        self._instruments.node_started(ctx, labels)
        started = time.perf_counter()
        outcome = "cancelled"
        with self._node_span(ctx) as span:
            try:
                result = await call_next()
                outcome = "ok"
            except Exception as exc:
                outcome = "error"
                _record_error(span, exc)
                raise
            finally:
                outcome = _settle(span, ctx, outcome)
                self._instruments.node_finished(labels, outcome, time.perf_counter() - started)
        return result

    def _node_span(self, ctx: NodeContext) -> AbstractContextManager[Span]:
        """The node span, current for the node's body (so spans it starts nest under it)."""
        return self._tracer.start_as_current_span(
            "flowkit.node",
            context=extract_context(ctx.traceparent),
            attributes=_node_attributes(ctx),
            record_exception=False,
            set_status_on_exception=False,
        )

    # -- events ---------------------------------------------------------------
    def attach(self, events: EventBus) -> Callable[[], None]:
        """Subscribe to a shell's events (``rt.events``, ``worker.events``); returns unsubscribe.

        Feeds the run-level metrics and the marker spans.
        """
        return events.subscribe(self.on_event)

    def on_event(self, event: Event) -> None:
        """Record one event: run metrics, dead letters, and its marker span (if any)."""
        self._instruments.record_event(event)
        name = _MARKERS.get(event.type)
        traceparent = getattr(event, "traceparent", None)  # Event.traceparent: the run's
        if name is not None and traceparent is not None:
            self._mark(name, event, traceparent)

    def _mark(self, name: str, event: Event, traceparent: str) -> None:
        at = int(event.timestamp * 1e9)
        span = self._tracer.start_span(
            name,
            context=extract_context(traceparent),
            attributes=_event_attributes(event),
            start_time=at,
        )
        if _event_failed(event):
            _set_error(span, f"{event.type}: {_status_of(event) or 'failed'}")
        span.end(end_time=at)


class _Instruments:
    """flowkit's metrics, all under the meter ``flowkit``.

    Node-level (from the middleware, per process — a worker's resource tells
    workers apart): ``flowkit.node.duration`` (histogram, s, by outcome),
    ``flowkit.node.queue_lag`` (histogram, s, enqueue to start),
    ``flowkit.node.retries`` (counter), ``flowkit.node.in_flight``
    (up-down counter). Run-level (from the event bus):
    ``flowkit.runs.started``, ``flowkit.runs.finished`` (by
    ``flowkit.status``), ``flowkit.messages.dead_lettered``. Attributes are
    low-cardinality: ``flowkit.flow``, ``flowkit.node_id``, never a run id.
    """

    def __init__(self, meter: Meter) -> None:
        self.runs_started = meter.create_counter("flowkit.runs.started", "{run}", "Runs created.")
        self.runs_finished = meter.create_counter(
            "flowkit.runs.finished", "{run}", "Runs that completed, failed or were cancelled."
        )
        self.node_duration = _histogram(
            meter, "flowkit.node.duration", "Time to execute a node attempt."
        )
        self.queue_lag = _histogram(
            meter, "flowkit.node.queue_lag", "Time from a node's enqueue to its start."
        )
        self.retries = meter.create_counter(
            "flowkit.node.retries", "{attempt}", "Node attempts retrying a failed attempt."
        )
        self.in_flight = meter.create_up_down_counter(
            "flowkit.node.in_flight", "{attempt}", "Node attempts executing in this process."
        )
        self.dead_letters = meter.create_counter(
            "flowkit.messages.dead_lettered", "{message}", "Messages a worker gave up on."
        )

    def node_started(self, ctx: NodeContext, labels: Mapping[str, str]) -> None:
        self.in_flight.add(1, labels)
        if ctx.attempt > 1 and ctx.error is None:  # ctx.error is set for a fallback
            self.retries.add(1, labels)
        enqueued_at = getattr(ctx, "enqueued_at", None)  # NodeContext.enqueued_at
        if enqueued_at is not None:
            self.queue_lag.record(max(0.0, clock.now() - enqueued_at), labels)

    def node_finished(self, labels: Mapping[str, str], outcome: str, seconds: float) -> None:
        self.in_flight.add(-1, labels)
        self.node_duration.record(seconds, {**labels, "flowkit.outcome": outcome})

    def record_event(self, event: Event) -> None:
        if event.type == "workflow:start":
            self.runs_started.add(1, _flow_label(event))
        elif event.type == "workflow:finish":
            status = _status_of(event) or "unknown"
            self.runs_finished.add(1, {**_flow_label(event), "flowkit.status": status})
        elif event.type == _DEAD_LETTER:
            self.dead_letters.add(1)


def _histogram(meter: Meter, name: str, description: str) -> Histogram:
    try:
        return meter.create_histogram(
            name, "s", description, explicit_bucket_boundaries_advisory=_SECONDS
        )
    except TypeError:  # opentelemetry-api < 1.23 takes no advisory boundaries
        return meter.create_histogram(name, "s", description)


# -- attributes -------------------------------------------------------------------
def _flow_of(ctx: NodeContext) -> str | None:
    flow = getattr(ctx, "flow", None)  # NodeContext.flow: the run's blueprint id
    return str(flow) if flow is not None else None


def _node_attributes(ctx: NodeContext) -> dict[str, str | int | bool]:
    attributes: dict[str, str | int | bool] = {
        "flowkit.run_id": ctx.run_id,
        "flowkit.node_id": ctx.node_id,
        "flowkit.attempt": ctx.attempt,
    }
    flow = _flow_of(ctx)
    if flow is not None:
        attributes["flowkit.flow"] = flow
    if ctx.error is not None:
        attributes["flowkit.fallback"] = True
    return attributes


def _metric_labels(ctx: NodeContext) -> dict[str, str]:
    flow = _flow_of(ctx)
    labels = {"flowkit.node_id": ctx.node_id}
    if flow is not None:
        labels["flowkit.flow"] = flow
    return labels


def _flow_label(event: Event) -> dict[str, str]:
    flow = getattr(event, "flow", None)  # Event.flow: the run's blueprint id
    if flow is None and isinstance(event.data, dict):
        flow = event.data.get("blueprint")  # workflow:start carries it in its data
    return {"flowkit.flow": str(flow)} if flow is not None else {}


def _status_of(event: Event) -> str | None:
    status = event.data.get("status") if isinstance(event.data, dict) else None
    return str(status) if status is not None else None


def _event_failed(event: Event) -> bool:
    return event.type == _DEAD_LETTER or _status_of(event) == "failed"


def _event_attributes(event: Event) -> dict[str, str | int | float | bool]:
    """Run, node and attempt, then the event's scalar data as ``flowkit.<family>.<key>``."""
    attributes: dict[str, str | int | float | bool] = {"flowkit.run_id": event.run_id}
    if event.node_id is not None:
        attributes["flowkit.node_id"] = event.node_id
    if event.attempt is not None:
        attributes["flowkit.attempt"] = event.attempt
    family = event.type.split(":")[0].replace("workflow", "run")
    for key, value in _scalars(event.data):
        attributes[f"flowkit.{family}.{key}"] = value
    return attributes


def _scalars(data: Any) -> Iterator[tuple[str, str | int | float | bool]]:
    if isinstance(data, dict):
        for key, value in data.items():
            if isinstance(value, str):
                yield str(key), redact(value)
            elif isinstance(value, bool | int | float):
                yield str(key), value


# -- status -----------------------------------------------------------------------
def _record_error(span: Span, exc: Exception) -> None:
    """Record ``exc`` (message and traceback redacted) and set status ERROR."""
    span.record_exception(
        exc,
        attributes={
            "exception.message": redact(str(exc)),
            "exception.stacktrace": redact("".join(traceback.format_exception(exc))),
        },
        escaped=True,
    )
    _set_error(span, f"{type(exc).__name__}: {redact(str(exc))}")


def _set_error(span: Span, description: str) -> None:
    from opentelemetry.trace import Status, StatusCode

    span.set_status(Status(StatusCode.ERROR, description))


def _settle(span: Span, ctx: NodeContext, outcome: str) -> str:
    """The final outcome; a node cancelled by its own timeout is a timeout error.

    The executor enforces ``timeout=`` with a cancel scope around the node, so
    a cancellation with that scope's deadline passed is the timeout firing.
    """
    if outcome == "cancelled" and ctx.deadline is not None and _deadline_passed():
        outcome = "timeout"
        _set_error(span, f"node {ctx.node_id!r} timed out")
    span.set_attribute("flowkit.outcome", outcome)
    return outcome


def _deadline_passed() -> bool:
    return anyio.current_time() >= anyio.current_effective_deadline()

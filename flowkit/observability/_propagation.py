"""W3C trace context for runs: captured when a run starts, carried in its state.

A run's ``traceparent`` is stored in its header when it is created and read by
every node execution (``NodeContext.traceparent``), in whichever process runs
it. OpenTelemetry is optional: without ``opentelemetry-api`` installed (or with
no active span) a new run simply has no ``traceparent``.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Final

if TYPE_CHECKING:
    from opentelemetry.context import Context
    from opentelemetry.trace import SpanContext

TRACEPARENT_HEADER: Final = "traceparent"
_TRACEPARENT = re.compile(r"^[0-9a-f]{2}-[0-9a-f]{32}-[0-9a-f]{16}-[0-9a-f]{2}$")


def current_traceparent() -> str | None:
    """The W3C ``traceparent`` of the active OpenTelemetry span, if any.

    >>> current_traceparent() is None  # no active span
    True
    """
    try:
        from opentelemetry.trace import get_current_span
    except ImportError:
        return None
    return format_traceparent(get_current_span().get_span_context())


def format_traceparent(span_context: SpanContext) -> str | None:
    """``00-<trace id>-<span id>-<flags>`` for a valid span context, else ``None``."""
    if not span_context.is_valid:
        return None
    flags = int(span_context.trace_flags)
    return f"00-{span_context.trace_id:032x}-{span_context.span_id:016x}-{flags:02x}"


def is_traceparent(value: object) -> bool:
    """Whether ``value`` looks like a W3C ``traceparent`` header value."""
    return isinstance(value, str) and _TRACEPARENT.match(value) is not None


def extract_context(traceparent: str | None) -> Context:
    """An OpenTelemetry context whose parent is the span ``traceparent`` names.

    ``None`` (or a malformed value) gives an empty context, so a span started
    in it is a root span: the parent is exactly what the run recorded, never
    whatever span happens to be active in the process executing the node.
    Needs ``opentelemetry-api`` (callers check first).
    """
    from opentelemetry.context import Context
    from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

    if not is_traceparent(traceparent):
        return Context()
    carrier = {TRACEPARENT_HEADER: str(traceparent)}
    return TraceContextTextMapPropagator().extract(carrier, context=Context())

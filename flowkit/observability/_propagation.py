"""W3C trace context for runs: captured when a run starts, carried in its state.

OpenTelemetry is optional: without ``opentelemetry-api`` installed (or with no
active span) a new run simply has no ``traceparent``.
"""

from __future__ import annotations


def current_traceparent() -> str | None:
    """The W3C ``traceparent`` of the active OpenTelemetry span, if any."""
    try:
        from opentelemetry.trace import get_current_span
    except ImportError:
        return None

    context = get_current_span().get_span_context()
    if not context.is_valid:
        return None
    flags = int(context.trace_flags)
    return f"00-{context.trace_id:032x}-{context.span_id:016x}-{flags:02x}"

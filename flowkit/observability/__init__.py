"""Observability: logging set-up, OpenTelemetry tracing and metrics, event logging.

Importing this package never imports OpenTelemetry: ``OpenTelemetryMiddleware``
imports it when instantiated (extra ``[otel]``).
"""

from ._events_log import EventLogger as EventLogger
from ._logging import configure_logging as configure_logging
from ._logging import redact as redact
from ._otel import OpenTelemetryMiddleware as OpenTelemetryMiddleware
from ._propagation import current_traceparent as current_traceparent

__all__ = [
    "EventLogger",
    "OpenTelemetryMiddleware",
    "configure_logging",
    "current_traceparent",
    "redact",
]

"""Observability: logging set-up, OpenTelemetry tracing and metrics, event logging."""

from ._logging import configure_logging as configure_logging

__all__ = ["configure_logging"]

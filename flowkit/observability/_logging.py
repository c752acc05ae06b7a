"""Logging for applications: flowkit logs through structlog and never configures it.

Two pieces:

* :func:`configure_logging` — the set-up an application (or ``python -m
  flowkit.worker --log-format``) opts into: JSON or console lines, structlog
  and stdlib records alike, with secrets redacted.
* :func:`redact` — masks passwords in URLs and connection strings, and the
  values of secret-looking keys, in text or in structured data.

Around each node the executor binds ``run_id``, ``node_id``, ``attempt`` and
``flow`` in structlog's context variables (``flowkit.shell._context``), so every
log line written meanwhile, by flowkit or by the node's own code, names the node.
"""

from __future__ import annotations

import logging
import sys
from typing import TYPE_CHECKING, Literal, TextIO

import structlog

from .._redact import redact as redact
from .._redact import redact_field

if TYPE_CHECKING:
    from structlog.typing import EventDict, Processor, WrappedLogger


# -- redaction (what a secret looks like is flowkit._redact's) --------------------
def redact_processor(logger: WrappedLogger, method_name: str, event_dict: EventDict) -> EventDict:
    """A structlog processor applying :func:`redact` to every field of a log line.

    Put it after ``format_exc_info`` (so tracebacks are redacted too) and
    before the renderer. ``exc_info`` is left for the formatter.
    """
    for key, value in event_dict.items():
        if key != "exc_info":
            event_dict[key] = redact_field(key, value)
    return event_dict


# -- configuration ----------------------------------------------------------------
class _FlowkitHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """The root handler :func:`configure_logging` installs (and replaces on a second call)."""


def configure_logging(
    format: Literal["json", "console"] = "console",
    level: str | int = "INFO",
    *,
    stream: TextIO | None = None,
) -> None:
    """Configure structlog and the stdlib root logger for an application or the worker CLI.

    Every line — from structlog or from stdlib ``logging`` (broker SDKs,
    libraries) — is rendered the same way, carries the contextvars flowkit
    binds during a node (``run_id``, ``node_id``, ``attempt``, ``flow``) and
    has secrets redacted (see :func:`redact`). Lines go to ``stream``
    (default ``sys.stderr``). Calling it again replaces the previous set-up.

    Args:
        format: ``"json"`` (one JSON object per line) or ``"console"``.
        level: the minimum level, by name (``"DEBUG"``) or number.
        stream: where lines are written.

    >>> configure_logging("json", "WARNING")
    """
    numeric = _level_number(level)
    renderer = _renderer(format)
    out = stream if stream is not None else sys.stderr
    structlog.configure(
        processors=[structlog.contextvars.merge_contextvars, *_shared_processors(), renderer],
        wrapper_class=structlog.make_filtering_bound_logger(numeric),
        logger_factory=structlog.PrintLoggerFactory(file=out),
        cache_logger_on_first_use=False,
    )
    _configure_stdlib(numeric, renderer, out)


def _level_number(level: str | int) -> int:
    numeric = logging.getLevelName(level.upper()) if isinstance(level, str) else level
    if not isinstance(numeric, int):
        raise ValueError(f"unknown log level {level!r}; use DEBUG, INFO, WARNING or ERROR")
    return numeric


def _renderer(format: str) -> Processor:
    if format == "json":
        return structlog.processors.JSONRenderer()
    if format == "console":
        return structlog.dev.ConsoleRenderer(
            colors=False, exception_formatter=structlog.dev.plain_traceback
        )
    raise ValueError(f"unknown log format {format!r}; use 'json' or 'console'")


def _shared_processors() -> list[Processor]:
    """Level, timestamp, formatted traceback, then redaction (last, before rendering)."""
    return [
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        structlog.processors.format_exc_info,
        redact_processor,
    ]


def _configure_stdlib(level: int, renderer: Processor, stream: TextIO) -> None:
    """Route stdlib records through the same processors (so they are redacted too)."""
    handler = _FlowkitHandler(stream)
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta, renderer],
            foreign_pre_chain=[
                structlog.contextvars.merge_contextvars,
                structlog.stdlib.add_logger_name,
                *_shared_processors(),
            ],
        )
    )
    root = logging.getLogger()
    for old in [h for h in root.handlers if isinstance(h, _FlowkitHandler)]:
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level)

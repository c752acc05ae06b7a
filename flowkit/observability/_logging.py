"""Logging for applications: flowkit logs through structlog and never configures it.

Three pieces:

* :func:`configure_logging` — the set-up an application (or ``python -m
  flowkit.worker --log-format``) opts into: JSON or console lines, structlog
  and stdlib records alike, with secrets redacted.
* :func:`redact` — masks passwords in URLs and connection strings, and the
  values of secret-looking keys, in text or in structured data.
* :func:`bind_node_context` / :func:`unbind_node_context` — what the executor
  calls around each node so every log line written during it (by flowkit or by
  the node's own code) carries ``run_id``, ``node_id``, ``attempt`` and ``flow``.
"""

from __future__ import annotations

import contextvars
import logging
import sys
from typing import TYPE_CHECKING, Any, Final, Literal, TextIO

import structlog

from .._redact import redact as redact
from .._redact import redact_field

if TYPE_CHECKING:
    from structlog.typing import EventDict, Processor, WrappedLogger

    from ..shell._context import NodeContext


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


# -- binding a node's identity ----------------------------------------------------
_NODE_KEYS: Final = ("run_id", "node_id", "attempt", "flow")


def _structlog_vars() -> tuple[contextvars.ContextVar[Any], ...]:
    """structlog's own context variables for the node keys (through its public API)."""
    tokens = structlog.contextvars.bind_contextvars(**dict.fromkeys(_NODE_KEYS, ...))
    structlog.contextvars.reset_contextvars(**tokens)
    return tuple(token.var for token in tokens.values())


_RUN_ID, _NODE_ID, _ATTEMPT, _FLOW = _structlog_vars()
NodeBinding = tuple[contextvars.Token[Any], ...]


def bind_node_context(ctx: NodeContext) -> NodeBinding:
    """Bind ``run_id``, ``node_id``, ``attempt`` and ``flow`` in structlog's contextvars.

    Exactly what ``structlog.contextvars.bind_contextvars(run_id=..., ...)``
    does, at a fraction of the cost (it runs for every node). The executor
    calls it and :func:`unbind_node_context` around each node execution, so
    every log line written meanwhile in that task (with
    ``structlog.contextvars.merge_contextvars`` in the chain, as
    :func:`configure_logging` sets up) names the node.
    """
    return (
        _RUN_ID.set(ctx.run_id),
        _NODE_ID.set(ctx.node_id),
        _ATTEMPT.set(ctx.attempt),
        _FLOW.set(getattr(ctx, "flow", None)),  # NodeContext.flow: the run's blueprint id
    )


def unbind_node_context(tokens: NodeBinding) -> None:
    """Restore the contextvars :func:`bind_node_context` set."""
    run_id, node_id, attempt, flow = tokens
    _FLOW.reset(flow)
    _ATTEMPT.reset(attempt)
    _NODE_ID.reset(node_id)
    _RUN_ID.reset(run_id)


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

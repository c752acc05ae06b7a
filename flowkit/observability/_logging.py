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
import re
import sys
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any, Final, Literal, TextIO, overload

import structlog

if TYPE_CHECKING:
    from structlog.typing import EventDict, Processor, WrappedLogger

    from ..shell._context import NodeContext

MASK: Final = "***"

# -- redaction ----------------------------------------------------------------
_SECRET_WORDS = (
    r"password|passwd|pwd|secret|token|sharedaccesskey|sharedaccesssignature"
    r"|account[-_]?key|access[-_]?key|api[-_]?key|private[-_]?key"
)
# scheme://user:PASSWORD@host -> the password (up to the last "@" of the authority)
_URL_PASSWORD = re.compile(r"(\b[a-zA-Z][a-zA-Z0-9+.\-]*://[^\s:/@'\"]*:)[^\s/'\"]+(?=@)")
# Password=...; SharedAccessKey=...; password='a b'; ?token=...&
_KEY_VALUE = re.compile(
    rf"(?i)((?<![\w-])[\w.-]*?(?:{_SECRET_WORDS})\s*=\s*)"
    r"('(?:[^'\\]|\\.)*'|\"(?:[^\"\\]|\\.)*\"|[^\s;&,]+)"
)
# 'secret': 'value' / "password": "value" (reprs of dicts, JSON)
_QUOTED_PAIR = re.compile(
    rf"(?i)(['\"])([\w.-]*?(?:{_SECRET_WORDS}))\1(\s*:\s*)(['\"])(?:\\.|(?!\4).)*\4"
)
# Bearer <token>; Authorization: Basic <credentials>
_BEARER = re.compile(r"(?i)(\bbearer\s+)[A-Za-z0-9\-._~+/]{8,}=*")
_BASIC = re.compile(r"(?i)(\bauthorization['\"]?\s*[:=]\s*['\"]?basic\s+)[A-Za-z0-9+/]+=*")
_SECRET_KEY = re.compile(rf"(?i)(?:^|[\W_])(?:{_SECRET_WORDS})$|^(?:authorization|cookie)$")


@overload
def redact(value: str, *, secrets: Iterable[str] = ()) -> str: ...
@overload
def redact(value: Mapping[str, Any], *, secrets: Iterable[str] = ()) -> dict[str, Any]: ...
@overload
def redact(value: Any, *, secrets: Iterable[str] = ()) -> Any: ...
def redact(value: Any, *, secrets: Iterable[str] = ()) -> Any:
    """``value`` with secrets masked as ``***``.

    Masks passwords in URLs (``amqp://user:***@host``), values in connection
    strings (``Password=***;``, ``SharedAccessKey=***``, ``password='***'``),
    bearer tokens, the values of secret-looking keys (``secret``,
    ``password``, ``*_token``, ...) in mappings and in their reprs, and any of
    the literal ``secrets`` given (a webhook secret read from the environment,
    say). Mappings, lists and tuples are redacted recursively; another object
    is returned as is unless its ``repr`` shows a secret, in which case the
    redacted ``repr`` is returned. Applying it twice changes nothing more.

    Generalises ``flowkit.stores._urls.redact`` (URLs only) and agrees with it
    on URLs.

    >>> redact("amqp://app:hunter2@rabbit:5672/prod")
    'amqp://app:***@rabbit:5672/prod'
    >>> redact("Endpoint=sb://ns/;SharedAccessKeyName=root;SharedAccessKey=abc=")
    'Endpoint=sb://ns/;SharedAccessKeyName=root;SharedAccessKey=***'
    >>> redact({"path": "/hooks/pay", "secret": "wh_123"})
    {'path': '/hooks/pay', 'secret': '***'}
    """
    return _scrub(value, tuple(s for s in secrets if s))


def _scrub(value: Any, secrets: tuple[str, ...]) -> Any:
    if isinstance(value, str):
        return _scrub_text(value, secrets)
    if value is None or isinstance(value, bool | int | float):
        return value
    if isinstance(value, Mapping):
        return {k: _scrub_item(k, v, secrets) for k, v in value.items()}
    if type(value) in (list, tuple):
        return type(value)(_scrub(v, secrets) for v in value)
    text = repr(value)
    scrubbed = _scrub_text(text, secrets)
    return value if scrubbed == text else scrubbed


def _scrub_item(key: Any, value: Any, secrets: tuple[str, ...]) -> Any:
    if value not in (None, "") and _SECRET_KEY.search(str(key)):
        return MASK
    return _scrub(value, secrets)


def _scrub_text(text: str, secrets: tuple[str, ...]) -> str:
    if "@" in text:
        text = _URL_PASSWORD.sub(rf"\1{MASK}", text)
    if "=" in text:
        text = _KEY_VALUE.sub(_mask_value, text)
    if ":" in text and ("'" in text or '"' in text):
        text = _QUOTED_PAIR.sub(rf"\1\2\1\3\4{MASK}\4", text)
    if "earer" in text:
        text = _BEARER.sub(rf"\1{MASK}", text)
    if "asic" in text:
        text = _BASIC.sub(rf"\1{MASK}", text)
    for secret in secrets:
        text = text.replace(secret, MASK)
    return text


def _mask_value(match: re.Match[str]) -> str:
    value = match.group(2)
    quote = value[0] if value[:1] in ("'", '"') else ""
    return f"{match.group(1)}{quote}{MASK}{quote}"


def redact_processor(logger: WrappedLogger, method_name: str, event_dict: EventDict) -> EventDict:
    """A structlog processor applying :func:`redact` to every field of a log line.

    Put it after ``format_exc_info`` (so tracebacks are redacted too) and
    before the renderer. ``exc_info`` is left for the formatter.
    """
    for key, value in event_dict.items():
        if key != "exc_info":
            event_dict[key] = _scrub_item(key, value, ())
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

"""The one message flowkit sends: "execute this node of this run" (never the state)."""

from __future__ import annotations

import json
from typing import Any

import attrs

from .._errors import FlowkitError


class MalformedMessage(FlowkitError, ValueError):
    """A message body is not a valid flowkit node message; it is dead-lettered."""


MAX_MESSAGE_BYTES = 64 * 1024
"""A node message is a few hundred bytes: a larger body is refused unread."""

MAX_ATTEMPT = 2**31 - 1

ENQUEUED_AT_HEADER = "flowkit-enqueued-at"
"""Transport header: when the message was published (epoch seconds), for queue lag."""

PRIORITY_HEADER = "flowkit-priority"
"""Transport header: the run's priority (1-9), on messages of runs that have one. The
body is unchanged, so workers that predate priorities read the message as before."""

_FIELDS = {
    "run_id": str,
    "node_id": str,
    "attempt": int,
    "dispatch_id": str,
    "blueprint_digest": str,
}


@attrs.frozen
class NodeMessage:
    """``{run_id, node_id, attempt, dispatch_id, blueprint_digest, traceparent}``."""

    run_id: str
    node_id: str
    attempt: int
    dispatch_id: str
    blueprint_digest: str
    traceparent: str | None = None

    def encode(self) -> bytes:
        data: dict[str, Any] = attrs.asdict(self)
        if self.traceparent is None:
            del data["traceparent"]
        return json.dumps(data, separators=(",", ":")).encode()

    @classmethod
    def decode(cls, body: bytes) -> NodeMessage:
        """Parse and validate; raises :class:`MalformedMessage` saying what is wrong.

        Any body at all gets that error, never another: too large, not UTF-8, not
        JSON, nested too deeply, a number too long to read, or fields of the wrong
        type or with text no store can keep.
        """
        data = _parse(body)
        if not isinstance(data, dict):
            raise MalformedMessage(f"message must be a JSON object, got {type(data).__name__}")
        problems = _problems(data)
        if problems:
            raise MalformedMessage("malformed node message: " + "; ".join(problems))
        return cls(**data)


def readable_fields(body: bytes) -> dict[str, Any]:
    """What can be read of a message body: its JSON object, or ``{}`` (never raises)."""
    try:
        data = _parse(body)
    except MalformedMessage:
        return {}
    return data if isinstance(data, dict) else {}


def names_a_run(body: bytes) -> bool:
    """Whether the body, however malformed otherwise, names a run a store could hold."""
    run_id = readable_fields(body).get("run_id")
    return isinstance(run_id, str) and bool(run_id) and _text_problem("run_id", run_id) is None


def _parse(body: bytes) -> Any:
    """The JSON in ``body``; :class:`MalformedMessage` for anything that is not."""
    size = len(body) if isinstance(body, bytes | bytearray | str) else None
    if size is None:
        raise MalformedMessage(f"message body must be bytes, got {type(body).__name__}")
    if size > MAX_MESSAGE_BYTES:
        raise MalformedMessage(
            f"message is {size} bytes, over the {MAX_MESSAGE_BYTES}-byte limit of a node "
            f"message: {body[:80]!r}"
        )
    try:
        return json.loads(body)
    except RecursionError:
        raise MalformedMessage(f"message JSON is nested too deeply: {body[:80]!r}") from None
    except (ValueError, TypeError) as exc:  # UnicodeDecodeError and over-long numbers too
        raise MalformedMessage(f"message is not JSON ({exc}): {body[:80]!r}") from exc


def _problems(data: dict[str, Any]) -> list[str]:
    """Every way ``data`` is not a node message."""
    problems = [_field_problem(name, kind, data.get(name)) for name, kind in _FIELDS.items()]
    traceparent = data.get("traceparent")
    if traceparent is not None:
        problems.append(_field_problem("traceparent", str, traceparent))
    extra = set(data) - set(_FIELDS) - {"traceparent"}
    if extra:
        problems.append(f"unknown field(s) {sorted(extra)}")
    return [problem for problem in problems if problem is not None]


def _field_problem(name: str, kind: type, value: Any) -> str | None:
    if not isinstance(value, kind) or isinstance(value, bool):
        return f"{name} must be {'a string' if kind is str else 'an integer'}"
    if isinstance(value, str):
        return _text_problem(name, value)
    if isinstance(value, int) and value < 1:
        return f"{name} must be 1 or more"
    if isinstance(value, int) and value > MAX_ATTEMPT:
        return f"{name} must be at most {MAX_ATTEMPT}, got a number of {len(str(value))} digits"
    return None


def _text_problem(name: str, value: str) -> str | None:
    """Why ``value`` cannot name anything in a store (None if it can)."""
    if "\x00" in value:
        return f"{name} must not contain NUL characters"
    try:
        value.encode()
    except UnicodeEncodeError:
        return f"{name} is not valid UTF-8 text (it holds a lone surrogate)"
    return None

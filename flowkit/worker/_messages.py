"""The one message flowkit sends: "execute this node of this run" (never the state)."""

from __future__ import annotations

import json
from typing import Any

import attrs

from .._errors import FlowkitError


class MalformedMessage(FlowkitError, ValueError):
    """A message body is not a valid flowkit node message; it is dead-lettered."""


ENQUEUED_AT_HEADER = "flowkit-enqueued-at"
"""Transport header: when the message was published (epoch seconds), for queue lag."""

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
        """Parse and validate; raises :class:`MalformedMessage` saying what is wrong."""
        try:
            data = json.loads(body)
        except (ValueError, UnicodeDecodeError) as exc:
            raise MalformedMessage(f"message is not JSON ({exc}): {body[:80]!r}") from exc
        if not isinstance(data, dict):
            raise MalformedMessage(f"message must be a JSON object, got {type(data).__name__}")
        problems = [
            f"{name} must be a {kind.__name__}"
            for name, kind in _FIELDS.items()
            if not isinstance(data.get(name), kind) or isinstance(data.get(name), bool)
        ]
        extra = set(data) - set(_FIELDS) - {"traceparent"}
        if extra:
            problems.append(f"unknown field(s) {sorted(extra)}")
        traceparent = data.get("traceparent")
        if traceparent is not None and not isinstance(traceparent, str):
            problems.append("traceparent must be a string")
        if not problems and data["attempt"] < 1:
            problems.append("attempt must be 1 or more")
        if problems:
            raise MalformedMessage("malformed node message: " + "; ".join(problems))
        return cls(**data)

"""NATS stream and subject names, and the headers flowkit sets (see ``_nats.py``)."""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

import attrs

from ..._errors import TransportError

if TYPE_CHECKING:
    from collections.abc import Mapping

    from nats.aio.msg import Msg

KEY_HEADER = "x-flowkit-key"
REASON_HEADER = "x-flowkit-reason"
ATTEMPTS_HEADER = "x-flowkit-attempts"
QUEUE_HEADER = "x-flowkit-queue"
DELIVER_AT_HEADER = "x-flowkit-deliver-at"
_INTERNAL = ("x-flowkit-", "nats-")  # lower-cased prefixes never shown to users
_TOKEN_SAFE = re.compile(r"[A-Za-z0-9-]")


def _token(queue: str) -> str:
    """``queue`` as a subject token and stream-name part (an injective encoding)."""
    return "".join(
        ch if _TOKEN_SAFE.fullmatch(ch) else "".join(f"_{b:02x}" for b in ch.encode())
        for ch in queue
    )


@attrs.frozen
class _Names:
    """The streams and subjects behind one flowkit queue."""

    stream: str
    work: str
    hold: str
    dlq_stream: str
    dlq: str

    @classmethod
    def of(cls, prefix: str, queue: str) -> _Names:
        token = _token(queue)
        return cls(
            stream=f"{prefix}_{token}",
            work=f"{prefix}.{token}.work",
            hold=f"{prefix}.{token}.hold",
            dlq_stream=f"{prefix}_{token}_DLQ",
            dlq=f"{prefix}.{token}.dlq",
        )


def _user_headers(raw: Mapping[str, str] | None) -> dict[str, str]:
    """The headers the sender set."""
    return {k: v for k, v in (raw or {}).items() if not k.lower().startswith(_INTERNAL)}


def _outgoing(headers: Mapping[str, str], extra: Mapping[str, str]) -> dict[str, str]:
    """Headers to publish, refusing what the NATS wire format cannot carry and the
    ``Nats-`` headers the server would act on."""
    reserved = [name for name in headers if name.lower().startswith("nats-")]
    if reserved:
        raise TransportError(f"NATS headers {reserved} are reserved for the server; rename them")
    merged = dict(headers) | dict(extra)
    for name, value in merged.items():
        if any(ch in name + value for ch in "\r\n") or not name or ":" in name:
            raise TransportError(
                f"NATS header {name!r} cannot be sent: names must be non-empty without ':' "
                "and neither names nor values may contain line breaks"
            )
    return merged


def _deliver_at(msg: Msg) -> float:
    """When a held message falls due (UNIX time); 0 for a malformed header."""
    try:
        return float((msg.headers or {}).get(DELIVER_AT_HEADER, "0"))
    except ValueError:
        return 0.0

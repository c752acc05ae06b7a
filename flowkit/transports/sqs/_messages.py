"""How flowkit messages travel as SQS messages: body, attributes, names (see ``_sqs.py``)."""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import math
import re
import uuid
from typing import TYPE_CHECKING, Any

from .._memory import DeadLetter

if TYPE_CHECKING:
    from collections.abc import Mapping

Message = dict[str, Any]  # one message of a ReceiveMessage response

ENCODING_ATTR = "flowkit-encoding"
HEADERS_ATTR = "flowkit-headers"
KEY_ATTR = "flowkit-key"
REASON_ATTR = "flowkit-reason"
ATTEMPTS_ATTR = "flowkit-attempts"
QUEUE_ATTR = "flowkit-queue"
DELIVER_AT_ATTR = "flowkit-deliver-at"
_TOKEN_SAFE = re.compile(r"[A-Za-z0-9-]")
_GROUP_SAFE = re.compile(r"[\x21-\x7e]{1,128}")


def _token(queue: str) -> str:
    """``queue`` as part of an SQS queue name (an injective encoding)."""
    return "".join(
        ch if _TOKEN_SAFE.fullmatch(ch) else "".join(f"_{b:02x}" for b in ch.encode())
        for ch in queue
    )


def _attr(value: str) -> dict[str, str]:
    return {"DataType": "String", "StringValue": value}


def _encode(body: bytes, key: str | None, headers: Mapping[str, str]) -> dict[str, Any]:
    """SendMessage arguments for a flowkit message."""
    attributes = {
        ENCODING_ATTR: _attr("base64" if body else "empty"),
        HEADERS_ATTR: _attr(json.dumps(dict(headers))),
    }
    if key is not None:
        attributes[KEY_ATTR] = _attr(json.dumps(key))  # JSON: an SQS value cannot be empty
    text = base64.b64encode(body).decode() if body else "-"
    return {"MessageBody": text, "MessageAttributes": attributes}


def _attrs(message: Message) -> dict[str, str]:
    raw = message.get("MessageAttributes") or {}
    return {name: str(value.get("StringValue", "")) for name, value in raw.items()}


def _body(message: Message) -> bytes:
    text = str(message.get("Body", ""))
    encoding = _attrs(message).get(ENCODING_ATTR)
    if encoding == "empty":
        return b""
    if encoding == "base64":
        try:
            return base64.b64decode(text, validate=True)
        except binascii.Error:
            pass  # a foreign message claiming base64: hand the text over as it is
    return text.encode()


def _headers(message: Message) -> dict[str, str]:
    """The sender's headers ({} if the attribute is missing or malformed)."""
    try:
        decoded = json.loads(_attrs(message).get(HEADERS_ATTR, "{}"))
    except (ValueError, RecursionError):  # a foreign message's attribute
        return {}
    if not isinstance(decoded, dict):
        return {}
    return {str(k): str(v) for k, v in decoded.items()}


def _key(message: Message) -> str | None:
    text = _attrs(message).get(KEY_ATTR)
    if text is None:
        return None
    try:
        key = json.loads(text)
    except (ValueError, RecursionError):
        return text  # a foreign message's plain attribute
    return key if isinstance(key, str) else text


def _group(key: str | None) -> str:
    """A FIFO message group for ``key``: itself if SQS takes it, else its digest."""
    if key is None:
        return uuid.uuid4().hex
    if _GROUP_SAFE.fullmatch(key):
        return key
    return hashlib.sha256(key.encode()).hexdigest()


def _number(text: str | None) -> float:
    try:
        return float(text or 0)
    except ValueError:
        return 0.0


def _attempt(message: Message) -> int:
    count = int(_number(message.get("Attributes", {}).get("ApproximateReceiveCount")))
    return max(1, count) + int(_number(_attrs(message).get(ATTEMPTS_ATTR)))


def _seconds(value: float) -> int:
    """Whole seconds for SQS, never less than asked."""
    return max(0, math.ceil(value))


def _copy(message: Message, extra: Mapping[str, str]) -> dict[str, Any]:
    """SendMessage arguments repeating ``message`` with ``extra`` attributes."""
    attributes = {
        name: _attr(value) for name, value in _attrs(message).items() if name != DELIVER_AT_ATTR
    }
    attributes.update({name: _attr(value) for name, value in extra.items()})
    return {"MessageBody": message["Body"], "MessageAttributes": attributes}


def _visible_now(messages: list[Message]) -> list[dict[str, Any]]:
    """ChangeMessageVisibilityBatch entries making ``messages`` visible at once."""
    return [
        {"Id": str(i), "ReceiptHandle": m["ReceiptHandle"], "VisibilityTimeout": 0}
        for i, m in enumerate(messages)
    ]


def _dead_letter(queue: str, message: Message, max_receive_count: int) -> DeadLetter:
    reason = _attrs(message).get(REASON_ATTR) or (
        f"received more than maxReceiveCount={max_receive_count} times (moved by SQS)"
    )
    return DeadLetter(queue, _body(message), _headers(message), reason)

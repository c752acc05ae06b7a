"""``PubSubTransport`` settings: URL options, validation, the emulator (see ``_pubsub.py``)."""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any

from ..._errors import ConfigurationError
from ...backends._options import boolean
from ._names import _escape

try:
    import grpc  # type: ignore[import-untyped,unused-ignore]  # grpcio ships no type hints
except ImportError:  # the "pubsub" extra is not installed: PubSubTransport() says so
    _HAVE_PUBSUB = False
else:
    _HAVE_PUBSUB = True

if TYPE_CHECKING:
    from ...backends._options import Converter


def _attempts(text: str) -> int | None:
    """``max_delivery_attempts``: a count, or ``none``, ``0`` or nothing for no policy."""
    return None if text.strip().lower() in ("", "none", "0") else int(text)


_URL_OPTIONS: dict[str, Converter] = {
    "topic_prefix": str,
    "create": boolean,
    "flow_control": int,
    "ack_deadline": float,
    "max_delivery_attempts": _attempts,
    "ordering": boolean,
}


def _emulator_channel() -> Any:
    """A plaintext channel to ``PUBSUB_EMULATOR_HOST`` if it is set (no credentials are
    looked up then), else ``None``. Done here rather than left to the generated clients,
    whose own emulator support is slated for removal (googleapis/python-pubsub#1349)."""
    host = os.environ.get("PUBSUB_EMULATOR_HOST")
    return grpc.insecure_channel(host) if host else None


def _validate(
    project: str,
    prefix: str,
    flow_control: int,
    ack_deadline: float,
    max_delivery_attempts: int | None,
) -> None:
    """Refuse settings Pub/Sub would refuse later, with what to do instead."""
    if not project or "/" in project:
        raise ConfigurationError(f"bad Google Cloud project id {project!r}")
    if not prefix[:1].isalpha() or prefix.lower().startswith("goog") or _escape(prefix) != prefix:
        raise ConfigurationError(
            f"bad topic_prefix {prefix!r}: start with a letter (not 'goog') and use only "
            "letters, digits and - _ . +"
        )
    if flow_control < 1:
        raise ConfigurationError(f"flow_control must be 1 or more, got {flow_control}")
    if not ack_deadline > 0:
        raise ConfigurationError(f"ack_deadline must be positive, got {ack_deadline}")
    if max_delivery_attempts is not None and not 5 <= max_delivery_attempts <= 100:
        raise ConfigurationError(
            f"max_delivery_attempts must be 5..100 (Pub/Sub's range) or None, "
            f"got {max_delivery_attempts}"
        )

"""``NATSTransport`` settings: URL options and their validation (see ``_nats.py``)."""

from __future__ import annotations

import re
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

from ..._errors import ConfigurationError
from ...backends._options import redact

if TYPE_CHECKING:
    from ...backends._options import Converter

_PREFIX = re.compile(r"^[A-Za-z0-9_-]+$")
_URL_OPTIONS: dict[str, Converter] = {
    "stream_prefix": str,
    "ack_wait": float,
    "max_deliver": int,
    "batch": int,
    "fetch_wait": float,
    "request_timeout": float,
    "connect_timeout": float,
}


def _check_options(
    url: str, prefix: str, ack_wait: float, max_deliver: int, batch: int, fetch_wait: float
) -> None:
    if urlsplit(url).scheme.lower() not in ("nats", "tls", "ws", "wss"):
        raise ConfigurationError(f"NATSTransport needs a nats:// URL, got {redact(url)!r}")
    if not _PREFIX.fullmatch(prefix):
        raise ConfigurationError(
            f"stream_prefix {prefix!r} must be letters, digits, '_' and '-' only"
        )
    if ack_wait <= 0 or fetch_wait <= 0:
        raise ConfigurationError("ack_wait and fetch_wait must be positive numbers of seconds")
    if max_deliver < 1 or batch < 1:
        raise ConfigurationError(
            f"max_deliver and batch must be 1 or more, got {max_deliver} and {batch}"
        )

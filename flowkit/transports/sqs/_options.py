"""``SQSTransport`` settings: URL options and their validation (see ``_sqs.py``)."""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

from ..._errors import ConfigurationError
from ...backends._options import boolean
from ._delivery import MAX_VISIBILITY

if TYPE_CHECKING:
    from ...backends._options import Converter

_PREFIX = re.compile(r"^[A-Za-z0-9_-]+$")
_URL_OPTIONS: dict[str, Converter] = {
    "endpoint": str,
    "visibility_timeout": int,
    "wait_time": int,
    "fifo": boolean,
    "max_receive_count": int,
    "batch": int,
}


def _check_options(
    prefix: str, visibility_timeout: int, wait_time: int, max_receive_count: int, batch: int
) -> None:
    if not _PREFIX.fullmatch(prefix):
        raise ConfigurationError(
            f"queue_prefix {prefix!r} must be letters, digits, '_' and '-' only"
        )
    if not 0 <= visibility_timeout <= MAX_VISIBILITY:
        raise ConfigurationError(f"visibility_timeout must be 0 to 43200, got {visibility_timeout}")
    if not 0 <= wait_time <= 20:
        raise ConfigurationError(f"wait_time must be 0 to 20 seconds, got {wait_time}")
    if not 1 <= max_receive_count <= 1000:
        raise ConfigurationError(f"max_receive_count must be 1 to 1000, got {max_receive_count}")
    if not 1 <= batch <= 10:
        raise ConfigurationError(f"batch must be 1 to 10, got {batch}")

"""The one place where aiokafka exceptions become flowkit's (see ``_kafka.py``)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from ...backends._options import redact
from .._sdk import translating

try:
    from aiokafka import errors as kafka_errors  # type: ignore[import-untyped,unused-ignore]
except ImportError:  # the "kafka" extra is not installed: KafkaTransport() says so
    _HAVE_KAFKA = False
else:
    _HAVE_KAFKA = True

if TYPE_CHECKING:
    from contextlib import AbstractContextManager


def _sdk_errors() -> tuple[type[Exception], ...]:
    """The roots of every exception class in ``aiokafka.errors``."""
    return (
        kafka_errors.KafkaError,
        kafka_errors.ConsumerStoppedError,
        kafka_errors.IllegalOperation,
    )


def translate_errors(operation: str, where: str) -> AbstractContextManager[None]:
    """Re-raise any aiokafka error in the block as a TransportError naming ``operation``.

    The one place where aiokafka exceptions become flowkit's.
    """
    return translating(f"Kafka {redact(where)!r}", operation, _sdk_errors(), _kafka_hint)


def _kafka_hint(exc: BaseException) -> str:
    return "check that the broker is reachable and the topic exists"

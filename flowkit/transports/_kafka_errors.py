"""The one place where aiokafka exceptions become flowkit's (see ``_kafka.py``)."""

from __future__ import annotations

from contextlib import contextmanager
from typing import TYPE_CHECKING

from .._errors import TransportError
from ..stores._urls import redact
from ._sdk import error_text

try:
    from aiokafka import errors as kafka_errors  # type: ignore[import-untyped,unused-ignore]
except ImportError:  # the "kafka" extra is not installed: KafkaTransport() says so
    _HAVE_KAFKA = False
else:
    _HAVE_KAFKA = True

if TYPE_CHECKING:
    from collections.abc import Iterator


def _sdk_errors() -> tuple[type[Exception], ...]:
    """The roots of every exception class in ``aiokafka.errors``."""
    return (
        kafka_errors.KafkaError,
        kafka_errors.ConsumerStoppedError,
        kafka_errors.IllegalOperation,
    )


@contextmanager
def translate_errors(operation: str, where: str) -> Iterator[None]:
    """Re-raise any aiokafka error in the block as a TransportError naming ``operation``.

    The one place where aiokafka exceptions become flowkit's.
    """
    try:
        yield
    except _sdk_errors() as exc:
        raise TransportError(
            f"Kafka {redact(where)!r}: {operation} failed ({type(exc).__name__}: "
            f"{error_text(exc)}); check that the broker is reachable and the topic exists"
        ) from exc

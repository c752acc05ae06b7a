"""The one place where aio-pika, aiormq and pamqp exceptions become flowkit's.

See ``_rabbitmq.py``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ...backends._options import redact
from .._sdk import translating

try:
    import aiormq.exceptions as amqp_errors
    import pamqp.exceptions as pamqp_errors
except ImportError:  # the "rabbitmq" extra is not installed: RabbitMQTransport() says so
    _HAVE_AIO_PIKA = False
else:
    _HAVE_AIO_PIKA = True

if TYPE_CHECKING:
    from contextlib import AbstractContextManager


def sdk_errors() -> tuple[type[BaseException], ...]:
    """The roots of every exception aio-pika, aiormq and pamqp raise (and socket errors)."""
    return (
        amqp_errors.AMQPError,
        amqp_errors.AMQPException,
        amqp_errors.ChannelInvalidStateError,
        pamqp_errors.PAMQPException,
        OSError,  # includes ConnectionError and TimeoutError from connecting
    )


def _hint(exc: BaseException) -> str:
    """What to do next about ``exc``."""
    if isinstance(
        exc,
        amqp_errors.AuthenticationError
        | amqp_errors.ProbableAuthenticationError
        | amqp_errors.ChannelAccessRefused
        | pamqp_errors.AMQPAccessRefused,
    ):
        return "check the user, password and vhost permissions in the URL"
    if isinstance(exc, amqp_errors.ChannelPreconditionFailed | pamqp_errors.AMQPPreconditionFailed):
        return (
            "a queue of that name exists with other arguments (type, TTL, dead-lettering, "
            "x-max-priority: max_priority must match the queue's, or be unset for a queue "
            "declared without it): delete the queue (drain it first) or choose another "
            "queue_prefix"
        )
    if isinstance(exc, amqp_errors.ChannelInvalidStateError):
        return "the channel closed; RabbitMQ redelivers what was not acked on it"
    if isinstance(exc, OSError | amqp_errors.AMQPConnectionError):
        return "check that RabbitMQ is running and reachable at that URL"
    return "retry; if it keeps failing, check the broker's logs"


def translate_errors(
    operation: str, url: str, *, settling: bool = False
) -> AbstractContextManager[None]:
    """Re-raise any SDK error in the block as a TransportError (DeliveryError if ``settling``)."""
    where = f"RabbitMQ {redact(url)!r}"
    return translating(where, operation, sdk_errors(), _hint, settling=settling, secret_url=url)

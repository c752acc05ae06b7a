"""The one place where nats-py exceptions become flowkit's (see ``_nats.py``)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from ...backends._options import redact
from .._sdk import translating

try:
    import nats.errors as nats_errors
    import nats.js.errors as js_errors
except ImportError:  # the "nats" extra is not installed: NATSTransport() says so
    _HAVE_NATS = False
else:
    _HAVE_NATS = True

if TYPE_CHECKING:
    from contextlib import AbstractContextManager


def sdk_errors() -> tuple[type[BaseException], ...]:
    """The roots of every exception nats-py raises (``nats.js.errors`` derive from
    ``nats.errors.Error``), and socket errors from connecting."""
    return (nats_errors.Error, OSError)


def _hint(exc: BaseException) -> str:
    """What to do next about ``exc``."""
    if isinstance(exc, nats_errors.AuthorizationError | nats_errors.InvalidUserCredentialsError):
        return "check the user and password (or token) in the URL"
    if isinstance(exc, js_errors.ServiceUnavailableError | nats_errors.NoRespondersError):
        return "JetStream is not enabled or not ready: start nats-server with -js"
    if isinstance(exc, js_errors.BadRequestError):
        return (
            "a stream of that name exists with another configuration: delete it or choose "
            "another stream_prefix"
        )
    if isinstance(exc, nats_errors.MaxPayloadError):
        return "the message is larger than the server's max_payload (1 MB by default)"
    if isinstance(exc, nats_errors.MsgAlreadyAckdError):
        return "the delivery was already settled"
    if isinstance(exc, nats_errors.TimeoutError):
        return "the server did not answer in time; retry"
    if isinstance(
        exc,
        OSError
        | nats_errors.NoServersError
        | nats_errors.ConnectionClosedError
        | nats_errors.StaleConnectionError,
    ):
        return "check that nats-server is running (with -js) and reachable at that URL"
    return "retry; if it keeps failing, check the server's log"


def translate_errors(
    operation: str, url: str, *, settling: bool = False
) -> AbstractContextManager[None]:
    """Re-raise any SDK error in the block as a TransportError (DeliveryError if ``settling``)."""
    where = f"NATS {redact(url)!r}"
    return translating(where, operation, sdk_errors(), _hint, settling=settling, secret_url=url)

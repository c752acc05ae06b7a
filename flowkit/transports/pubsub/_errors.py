"""The one place where Pub/Sub SDK exceptions become flowkit's (see ``_pubsub.py``)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from .._sdk import translating

try:
    import google.api_core.exceptions as api_errors
    import google.auth.exceptions as auth_errors
    import grpc  # type: ignore[import-untyped,unused-ignore]  # grpcio ships no type hints
    from google.cloud.pubsub_v1.publisher import (  # type: ignore[import-untyped,unused-ignore]
        exceptions as publish_errors,  # this subpackage has no py.typed marker
    )
except ImportError:  # the "pubsub" extra is not installed: PubSubTransport() says so
    _HAVE_PUBSUB = False
else:
    _HAVE_PUBSUB = True

if TYPE_CHECKING:
    from contextlib import AbstractContextManager


def sdk_errors() -> tuple[type[BaseException], ...]:
    """The roots of every exception google-api-core, google-auth and google-cloud-pubsub raise."""
    return (
        api_errors.GoogleAPIError,  # every RPC error, RetryError, PublishError, AcknowledgeError
        # not a GoogleAPIError, and absent from older google-api-core releases
        getattr(api_errors, "AsyncRestUnsupportedParameterError", api_errors.GoogleAPIError),
        auth_errors.GoogleAuthError,  # no or bad credentials
        publish_errors.MessageTooLargeError,
        publish_errors.PublishToPausedOrderingKeyException,
        publish_errors.FlowControlLimitError,
        grpc.RpcError,  # a raw gRPC failure the library did not wrap
    )


def _hint(exc: BaseException) -> str:
    """What to do next about ``exc``."""
    if isinstance(exc, api_errors.NotFound):
        return "the topic or subscription does not exist: create it, or use create=True"
    if isinstance(
        exc, api_errors.Forbidden | api_errors.Unauthorized | auth_errors.GoogleAuthError
    ):
        return (
            "check the credentials (GOOGLE_APPLICATION_CREDENTIALS) and their Pub/Sub IAM "
            "roles, or set PUBSUB_EMULATOR_HOST to use the emulator"
        )
    if isinstance(exc, api_errors.Conflict | api_errors.FailedPrecondition):
        return "a resource of that name exists with other settings: delete it or rename"
    if isinstance(exc, api_errors.BadRequest | publish_errors.MessageTooLargeError):
        return "Pub/Sub refused the request: check names, ordering settings and message size"
    if isinstance(exc, publish_errors.PublishToPausedOrderingKeyException):
        return "an earlier publish with this ordering key failed: send again"
    return "check that Pub/Sub (or PUBSUB_EMULATOR_HOST) is reachable, then retry"


def translate_errors(
    operation: str, where: str, *, settling: bool = False
) -> AbstractContextManager[None]:
    """Re-raise any SDK error in the block as a TransportError (DeliveryError if ``settling``)."""
    return translating(f"Pub/Sub {where}", operation, sdk_errors(), _hint, settling=settling)

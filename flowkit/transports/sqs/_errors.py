"""The one place where botocore exceptions become flowkit's (see ``_sqs.py``)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from .._sdk import translating

try:
    import botocore.exceptions as boto_errors  # type: ignore[import-untyped,unused-ignore]
except ImportError:  # the "sqs" extra is not installed: SQSTransport() says so
    _HAVE_AIOBOTOCORE = False
else:
    _HAVE_AIOBOTOCORE = True

if TYPE_CHECKING:
    from contextlib import AbstractContextManager

_STALE_CODES = ("ReceiptHandleIsInvalid", "MessageNotInflight", "InvalidParameterValue")
_AUTH_CODES = (
    "AccessDenied",
    "AccessDeniedException",
    "InvalidClientTokenId",
    "SignatureDoesNotMatch",
    "UnrecognizedClientException",
    "ExpiredToken",
)


def sdk_errors() -> tuple[type[BaseException], ...]:
    """The roots of every exception botocore and aiobotocore raise, and socket errors."""
    return (
        boto_errors.BotoCoreError,
        boto_errors.ClientError,  # service errors, the modeled ones (QueueDoesNotExist) too
        boto_errors.UndefinedModelAttributeError,
        OSError,
    )


def _code(exc: BaseException) -> str:
    response = getattr(exc, "response", None) or {}
    return str(response.get("Error", {}).get("Code", ""))


def _hint(exc: BaseException) -> str:
    """What to do next about ``exc``."""
    code = _code(exc)
    if "NonExistentQueue" in code or code == "QueueDoesNotExist":
        return "the queue does not exist: create it, or let SQSTransport (create_queues=True)"
    if code in _AUTH_CODES or isinstance(
        exc, boto_errors.NoCredentialsError | boto_errors.PartialCredentialsError
    ):
        return "check the AWS credentials and their SQS permissions"
    if code in _STALE_CODES:
        return "the delivery's visibility timeout may have run out: SQS redelivers it"
    if isinstance(exc, boto_errors.NoRegionError):
        return "give a region: SQSTransport('eu-west-1') or sqs://eu-west-1/prefix"
    if isinstance(exc, boto_errors.ConnectionError | boto_errors.HTTPClientError | OSError):
        return "check the network and the endpoint (endpoint_url) SQS is reached at"
    return "retry; if it keeps failing, check the request against the SQS limits"


def translate_errors(
    operation: str, where: str, *, settling: bool = False
) -> AbstractContextManager[None]:
    """Re-raise any SDK error in the block as a TransportError (DeliveryError if ``settling``)."""
    return translating(f"SQS {where}", operation, sdk_errors(), _hint, settling=settling)

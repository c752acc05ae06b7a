"""The one place where redis-py exceptions become flowkit's (see ``_redis.py``)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from ...backends._options import redact
from ...backends._redis import error_roots
from .._sdk import translating

try:
    from redis import exceptions as redis_errors
except ImportError:  # the "redis" extra is not installed: RedisTransport() says so
    _HAVE_REDIS = False
else:
    _HAVE_REDIS = True

if TYPE_CHECKING:
    from contextlib import AbstractContextManager


def sdk_errors() -> tuple[type[BaseException], ...]:
    """The roots of every exception redis-py raises (and socket errors)."""
    return (*error_roots(), OSError)


def _hint(exc: BaseException) -> str:
    """What to do next about ``exc``."""
    if isinstance(
        exc,
        redis_errors.AuthenticationError
        | redis_errors.AuthorizationError
        | redis_errors.NoPermissionError,
    ):
        return "check the user and password in the URL and the user's ACL"
    if isinstance(exc, redis_errors.ConnectionError | redis_errors.TimeoutError | OSError):
        return "check that Redis is running and reachable at that URL"
    if isinstance(exc, redis_errors.ResponseError) and "WRONGTYPE" in repr(exc.args):
        return "a key of the transport's prefix holds something else: choose another prefix"
    return "retry; if it keeps failing, check the server's logs"


def translate_errors(
    operation: str, url: str, *, settling: bool = False
) -> AbstractContextManager[None]:
    """Re-raise any redis-py error in the block as a TransportError (DeliveryError if
    ``settling``)."""
    where = f"Redis transport {redact(url)!r}"
    return translating(where, operation, sdk_errors(), _hint, settling=settling, secret_url=url)

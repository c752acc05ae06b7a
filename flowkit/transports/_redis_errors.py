"""The one place where redis-py exceptions become flowkit's (see ``_redis.py``)."""

from __future__ import annotations

from contextlib import contextmanager
from typing import TYPE_CHECKING

from .._errors import TransportError
from ..stores._urls import redact
from ._protocol import DeliveryError
from ._sdk import error_text

try:
    from redis import exceptions as redis_errors
except ImportError:  # the "redis" extra is not installed: RedisTransport() says so
    _HAVE_REDIS = False
else:
    _HAVE_REDIS = True

if TYPE_CHECKING:
    from collections.abc import Iterator


def sdk_errors() -> tuple[type[BaseException], ...]:
    """The roots of every exception redis-py raises (and socket errors)."""
    return (
        redis_errors.RedisError,
        redis_errors.RedisClusterException,
        redis_errors.ChildDeadlockedError,
        redis_errors.IncorrectPolicyType,
        OSError,
    )


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


@contextmanager
def translate_errors(operation: str, url: str, *, settling: bool = False) -> Iterator[None]:
    """Re-raise any redis-py error in the block as a TransportError.

    It is a :class:`~flowkit.transports.DeliveryError` if ``settling``.
    """
    try:
        yield
    except sdk_errors() as exc:
        error = DeliveryError if settling else TransportError
        raise error(
            f"Redis transport {redact(url)!r}: {operation} failed "
            f"({type(exc).__name__}: {error_text(exc, url)}); {_hint(exc)}"
        ) from exc

"""What the transports share about their SDKs: error translation and client-side leases."""

from __future__ import annotations

import time
from contextlib import contextmanager
from typing import TYPE_CHECKING, Protocol
from urllib.parse import urlsplit

import structlog

from .._errors import TransportError
from ._protocol import DeliveryError

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator

_log = structlog.get_logger("flowkit.transports")


def error_text(exc: BaseException, url: str = "") -> str:
    """``exc`` as text, without ``url``'s password; never raises (some SDK classes
    cannot ``str()`` without the arguments or attributes they were not given)."""
    try:
        text = str(exc) or type(exc).__name__
    except Exception:
        text = repr(exc.args)
    password = urlsplit(url).password if url else None
    return text.replace(password, "***") if password else text


@contextmanager
def translating(
    where: str,
    operation: str,
    catch: tuple[type[BaseException], ...],
    hint: Callable[[BaseException], str],
    *,
    settling: bool = False,
    secret_url: str = "",
    text: Callable[[BaseException], str] | None = None,
) -> Iterator[None]:
    """Re-raise an SDK error of ``catch`` in the block as a TransportError (a DeliveryError
    if ``settling``): "{where}: {operation} failed (Class: text); hint".

    Each transport's ``translate_errors`` is this with its SDK's classes and hints.
    """
    try:
        yield
    except catch as exc:
        error = DeliveryError if settling else TransportError
        detail = error_text(exc, secret_url) if text is None else text(exc)
        raise error(
            f"{where}: {operation} failed ({type(exc).__name__}: {detail}); {hint(exc)}"
        ) from exc


def _guard(seconds: float) -> float:
    return min(0.05 * seconds, 0.5)


class Lease:
    """This process's view of a delivery's visibility: it ends no later than the broker's
    (a small guard before it), so a settle is never sent on a lease already gone."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self.until = time.monotonic() + seconds

    def renew(self, seconds: float | None = None, *, since: float | None = None) -> None:
        """Start the lease again, for ``seconds`` if given, else for as long as before,
        from ``since`` (a ``time.monotonic()`` reading: when the request that renewed it
        went out, which the broker's clock cannot have started before), else from now."""
        if seconds is not None:
            self.seconds = seconds
        self.until = (time.monotonic() if since is None else since) + self.seconds

    def expired(self) -> bool:
        return time.monotonic() > self.until - _guard(self.seconds)

    def half_gone(self) -> bool:
        """Whether less than half of the lease is left (one that waited behind others)."""
        return self.until - time.monotonic() < self.seconds / 2


class Extendable(Protocol):
    async def extend(self, seconds: float) -> None: ...


async def fresh(delivery: Extendable, lease: Lease, seconds: float) -> bool:
    """Whether ``delivery``, taken from a fetched batch, can go to its handler: one whose
    lease is half gone (it waited behind the others of its batch) is extended first, so
    every handler starts with at least half a lease; False (and not handed over: the
    broker redelivers it) if that failed."""
    if not lease.half_gone():
        return True
    try:
        await delivery.extend(seconds)
    except DeliveryError as exc:
        _log.info("a fetched message's lease ran out before its turn", error=str(exc))
        return False
    return True

"""Purging finished runs from a store: the loop behind ``purge`` and a worker's retention."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .. import _clock as clock
from .._durations import to_seconds
from .._errors import ConfigurationError

if TYPE_CHECKING:
    from collections.abc import Callable, Collection

    from .._durations import Duration

BATCH = 500
"""Runs one store call deletes, by default."""


def cutoff(older_than: Duration) -> float:
    """The unix time ``older_than`` ago (a :class:`~flowkit.ConfigurationError` if it is
    not a duration)."""
    return clock.now() - to_seconds(older_than)


def purger(store: Any, where: str) -> Callable[..., Any]:
    """The store's ``purge``; a :class:`~flowkit.ConfigurationError` if it has none."""
    purge = getattr(store, "purge", None)
    if store is None or purge is None:
        raise ConfigurationError(
            f"{where} needs a store: runs are purged from the store"
            if store is None
            else f"{where}: the store {store!r} cannot purge runs (no purge method)"
        )
    return purge  # type: ignore[no-any-return]


async def purge_runs(
    store: Any,
    older_than: Duration,
    *,
    status: str | Collection[str] | None = None,
    batch: int = BATCH,
    progress: Callable[[int], object] | None = None,
) -> int:
    """Delete every run of ``store`` that finished ``older_than`` ago (with ``status``), in
    batches of ``batch``; how many. ``progress(n)`` hears of each batch deleted."""
    purge = purger(store, "purge")
    before = cutoff(older_than)
    total = 0
    while True:
        purged = await purge(finished_before=before, status=status, limit=batch)
        total += len(purged)
        if progress is not None and purged:
            progress(len(purged))
        if len(purged) < batch:
            return total

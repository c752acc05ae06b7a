"""Notices a store pushes, so that readers need not poll.

Finished runs: how a waiting client learns a run ended. A store that can push
offers ``watch_finished()`` (see :class:`WatchesFinished`): MemoryStore in this
process, PostgresStore by ``LISTEN``/``NOTIFY`` (sent in the committing
transaction, so delivered only once the final state is durable), RedisStore by
pub/sub (published after the commit script).

Cancelled nodes: how a worker learns that a node it runs is no longer wanted
(see :class:`WatchesCancelledNodes`). The process whose transition cancelled
dispatches announces the run once the transition is durable; the same three
stores carry the notice.

A notice is a hint that the reader confirms by reading the store; one can be
missed (a listener reconnecting), so readers still re-read the store now and then.
"""

from __future__ import annotations

import math
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

import anyio

from ..core._state import FINISHED_VALUES

if TYPE_CHECKING:
    from collections.abc import AsyncIterator
    from contextlib import AbstractAsyncContextManager

    from anyio.streams.memory import MemoryObjectSendStream


@runtime_checkable
class WatchesFinished(Protocol):
    """The optional store capability behind push results (finished runs announced to clients)."""

    def watch_finished(self) -> AbstractAsyncContextManager[AsyncIterator[str]]:
        """While the block is open: the ids of runs whose final status was committed."""


@runtime_checkable
class WatchesCancelledNodes(Protocol):
    """The optional store capability behind prompt cancellation of nodes on workers."""

    def watch_cancelled_nodes(self) -> AbstractAsyncContextManager[AsyncIterator[str]]:
        """While the block is open: the ids of runs some of whose dispatches were cancelled."""

    async def announce_cancelled_nodes(self, run_id: str) -> None:
        """Tell every watcher that dispatches of ``run_id`` were cancelled (call it after
        the commit that took them out of the run). Best effort: it never raises, since
        workers also poll."""


def finishes(info: dict[str, Any] | None) -> bool:
    """Whether a commit's ``info`` gives the run a final status."""
    return info is not None and info.get("status") in FINISHED_VALUES


class Announcer:
    """Fans finished run ids out to every watch open in this process."""

    def __init__(self) -> None:
        self._watches: set[MemoryObjectSendStream[str]] = set()

    def announce(self, run_id: str) -> None:
        for watch in list(self._watches):
            watch.send_nowait(run_id)

    @asynccontextmanager
    async def watch(self) -> AsyncIterator[AsyncIterator[str]]:
        send, receive = anyio.create_memory_object_stream[str](math.inf)
        self._watches.add(send)
        try:
            yield receive
        finally:
            self._watches.discard(send)
            send.close()
            receive.close()

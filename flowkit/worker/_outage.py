"""The store or the broker, unreachable for a while: pause, probe with backoff, resume.

A worker that loses its store must not run nodes whose results it cannot
commit, nor spin on them: the first failure that a probe confirms marks the
dependency down (one log line with the reason), the work that needs it waits,
one waiter at a time probes it again after a capped, jittered
:class:`~flowkit.Backoff`, and the first probe that gets through marks it up
(one log line saying how long it was away) and wakes every waiter.

A failure the probe does not confirm (the store answers the probe, so the error
was about one record or statement) is not an outage: the caller handles it as
any other error.
"""

from __future__ import annotations

import uuid
from typing import TYPE_CHECKING, Any, TypeVar

import anyio
import structlog

from .._durations import Backoff
from .._errors import StoreError, TransportError
from ..shell._durable import dispatch_queue
from ..stores._protocol import Conflict

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable

    from ..shell._target import Target
    from ..stores._protocol import Store
    from ._shell import Shell

OUTAGE_BACKOFF = Backoff(initial=0.25, factor=2.0, max=5.0, jitter=True)
"""Delay before each probe of an unreachable dependency (and each reconnection to a broker)."""

PROBE_TIMEOUT = 5.0
"""Seconds a probe may take; a slower one counts as a failure."""

PROBE_RUN_ID = "flowkit-reachability-probe"
"""The run a store probe asks about: its answer (no such run) does not matter."""

T = TypeVar("T")


class Dependency:
    """What this process knows of one dependency (``"store"``, ``"broker"``): up, or down
    since a failure. ``pausing``/``resuming`` say in the log lines what waits meanwhile."""

    def __init__(
        self,
        name: str,
        probe: Callable[[], Awaitable[object]] | None,
        *,
        pausing: str,
        resuming: str,
        logger: Any = None,
        backoff: Backoff = OUTAGE_BACKOFF,
    ) -> None:
        self.name = name
        self.pausing = pausing
        self.resuming = resuming
        self.backoff = backoff
        self.outages = 0  # how many times it went down
        self._probe = probe
        self._log = logger or structlog.get_logger("flowkit.worker")
        self._seed = uuid.uuid4().hex  # spreads the probes of many processes apart
        self._down_since: float | None = None
        self.reason = ""  # why it went down last
        self._retries = 0  # probes (or reconnections) in this outage so far
        self._up = anyio.Event()
        self._up.set()
        self._probing = anyio.Lock()

    @property
    def down(self) -> bool:
        return self._down_since is not None

    def mark_down(self, reason: str) -> None:
        """Note the outage (logged once, however many callers fail meanwhile)."""
        if self._down_since is not None:
            return
        self._down_since = anyio.current_time()
        self.reason = reason
        self._retries = 0
        self._up = anyio.Event()
        self.outages += 1
        self._log.warning(f"{self.name} unreachable, {self.pausing}: {reason}")

    def mark_up(self) -> None:
        """Note the end of the outage (logged once) and wake whatever waits for it."""
        if self._down_since is None:
            return
        away = anyio.current_time() - self._down_since
        self._down_since = None
        self._up.set()
        self._log.warning(f"{self.name} back after {away:.1f} s, {self.resuming}")

    def next_delay(self) -> float:
        """Seconds to wait before the next probe or reconnection in this outage."""
        self._retries += 1
        return self.backoff.delay(self._retries, self._seed)

    async def outage(self, error: Exception) -> bool:
        """Whether ``error`` came from an outage: the dependency is known to be down, or
        a probe fails now (then it is marked down, with ``error`` as the reason)."""
        if self.down:
            return True
        if self._probe is None:
            self.mark_down(str(error))
            return True
        async with self._probing:
            if self.down:
                return True
            if await self._reachable():
                return False
            self.mark_down(str(error))
            return True

    async def until_up(self) -> None:
        """Return once the dependency is reachable: one waiter at a time probes it after
        the backoff delay, the others wait for the probe that gets through."""
        while self.down:
            async with self._probing:
                if not self.down:
                    return
                up = self._up
                with anyio.move_on_after(self.next_delay()):
                    await up.wait()  # marked up by someone else meanwhile (mark_up)
                if self.down and await self._reachable():
                    self.mark_up()

    async def _reachable(self) -> bool:
        if self._probe is None:
            return False  # only a caller that gets through can tell: see mark_up
        with anyio.move_on_after(PROBE_TIMEOUT):
            try:
                await self._probe()
            except StoreError:
                return False
            return True
        return False


def store_dependency(
    store: Store, *, pausing: str, resuming: str, logger: Any = None
) -> Dependency:
    """The store as a :class:`Dependency`, probed by asking it about a run."""

    async def probe() -> None:
        await store.info(PROBE_RUN_ID)

    return Dependency("store", probe, pausing=pausing, resuming=resuming, logger=logger)


async def despite_store_outages(
    store: Dependency,
    operation: Callable[[], Awaitable[T]],
    until_back: Callable[[], Awaitable[None]] | None = None,
) -> T:
    """``operation()``, done again once the store is back (``until_back()``, by default
    :meth:`Dependency.until_up`) whenever it fails because the store is unreachable (a
    probe confirms it); any other error is raised, the second time in a row (the first
    may come from a connection broken by an outage the probe no longer sees). Bound it
    with the caller's timeout."""
    unconfirmed = 0
    while True:
        try:
            return await operation()
        except Conflict:
            raise
        except StoreError as exc:
            if await store.outage(exc):
                unconfirmed = 0
            else:
                unconfirmed += 1
                if unconfirmed > 1:
                    raise
        await (until_back or store.until_up)()


async def start_despite_outages(
    shell: Shell,
    store: Dependency,
    broker: Dependency,
    start: Callable[[], Awaitable[object]],
    run_id: str,
    target: Target,
) -> None:
    """Create the run (``start()``) despite store outages; if its first nodes cannot be
    published, publish them again (with backoff) until the broker takes them."""
    try:
        await despite_store_outages(store, start)
        return
    except TransportError as exc:  # the run is stored: what is left is to publish it
        broker.mark_down(str(exc))
    while True:
        await anyio.sleep(broker.next_delay())
        try:
            await despite_store_outages(store, lambda: _publish_dispatches(shell, run_id, target))
        except TransportError:
            continue
        broker.mark_up()
        return


async def _publish_dispatches(shell: Shell, run_id: str, target: Target) -> None:
    """Publish every node the run has dispatched (again: a duplicate is skipped by workers)."""
    replica = await shell.replica(run_id, fresh=True)
    header = replica.state.header
    for dispatch_id, record in list(replica.state.sections["dispatches"].items()):
        if record.get("deferred"):
            continue  # it ran and awaits its completion token
        queue = dispatch_queue(record, header)
        await shell.publish(
            run_id, target, record["node"], int(record["attempt"]), dispatch_id, header, queue
        )

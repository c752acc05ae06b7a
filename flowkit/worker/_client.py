"""``Client``: start, signal and await runs that workers execute."""

from __future__ import annotations

import uuid
from contextlib import AsyncExitStack, asynccontextmanager
from functools import partial
from typing import TYPE_CHECKING, Any

import anyio
import structlog

from .._durations import Backoff, Duration
from .._errors import (
    CompletionTokenError,
    ConfigurationError,
    DuplicateDelivery,
    FlowkitError,
    ResultTimeout,
    ResumeError,
    StoreError,
    TransportError,
)
from .._ids import new_run_id
from ..core import _protocol as p
from ..core._action import split_action
from ..core._state import FINISHED_VALUES, RunStatus
from ..shell._completion import CompletionToken, check_open, completion_event, failure_event
from ..shell._describe import describe_stored, read_history
from ..shell._durable import (
    debounce_seconds,
    newest_run,
    refuse_if_finished,
    refuse_retry,
    split_priority,
    split_tags,
)
from ..shell._flows import refuse_unknown_wait
from ..shell._migrate import check_map
from ..shell._purge import purge_runs
from ..shell._result import RunResult
from ..shell._schedules import ScheduleControls
from ..stores._notices import WatchesFinished
from . import _handlers
from ._outage import Dependency, despite_store_outages, start_despite_outages, store_dependency
from ._shell import Shell

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Awaitable, Callable, Collection, Mapping, Sequence

    from .._durations import Duration
    from ..core._state import RunState
    from ..shell._describe import RunDescription
    from ..shell._middleware import Middleware
    from ..shell._target import Target
    from ..stores._history import HistoryEvent
    from ..stores._protocol import RunPage, Store
    from ..transports._protocol import Transport

log = structlog.get_logger("flowkit.client")

STATUS_READ_TIMEOUT = 5.0  # seconds a timed-out wait spends reading where the run stands

# waits of one client that each hold a subscription to the store's notices of
# finished runs (a connection each on PostgreSQL); further waits poll
MAX_WATCHES = 16

REGISTER_HINT = (
    "pass the flow itself, or register it: flowkit.Client(transport, store, flows=[...]) "
    "(the flowkit command: --app with the module defining it)"
)
"""What to do about a flow name a client does not know."""

# runs a client keeps a copy of: each call reads its run from the store, so a copy
# only serves the calls in progress (a client that only starts runs kept thousands)
CACHED_RUNS = 64


class Client(ScheduleControls):
    """Talks to a fleet of workers through their transport and store.

    >>> import flowkit
    >>> from flowkit.stores import MemoryStore
    >>> from flowkit.transports import MemoryTransport
    >>> client = flowkit.Client(transport=MemoryTransport(), store=MemoryStore())

    While the store or the broker is unreachable, :meth:`start` (and :meth:`run`)
    retry with a capped, jittered backoff for up to ``outage_timeout`` seconds (or
    the run's ``timeout``) before raising the last error, and waits retry within
    their own timeout; one log line when a dependency goes, one when it is back.
    """

    def __init__(
        self,
        transport: Transport,
        store: Store,
        *,
        queue: str = "flowkit",
        flows: Sequence[Any] = (),
        lease: float = 30.0,
        poll_interval: float = 0.05,
        max_poll_interval: float = 1.0,
        outage_timeout: float = 30.0,
        middleware: Sequence[Middleware] = (),
    ) -> None:
        self.shell = Shell(
            transport,
            store,
            queue=queue,
            lease=lease,
            flows=flows,
            middleware=middleware,
            cache_size=CACHED_RUNS,
        )
        self.store = store
        self.poll_interval = poll_interval
        self.max_poll_interval = max_poll_interval
        self._watching = 0  # waits holding a subscription to the store's notices
        self.outage_timeout = outage_timeout
        self.store_health = store_dependency(
            store, pausing="retrying", resuming="carrying on", logger=log
        )
        self.broker_health = Dependency(
            "broker", None, pausing="retrying", resuming="carrying on", logger=log
        )

    @property
    def events(self) -> Any:
        return self.shell.events

    async def start(
        self,
        flow: Any,
        *,
        run_id: str | None = None,
        tags: Mapping[str, str] | None = None,
        priority: int | None = None,
        debounce: Duration | None = None,
        **inputs: Any,
    ) -> ClientHandle:
        """Create the run and publish its first nodes; idempotent per ``run_id``.

        ``flow`` is a flow, or the id of one this client knows (``flows=[...]``; the
        newest version registered), for code that does not import the flow; an unknown
        name raises :class:`~flowkit.ConfigurationError` listing the known flows.
        ``tags`` (str keys and values, at most 64, each up to 256 characters) are
        stored with the run in the store's index, for :meth:`list_runs`; a child run
        inherits none. The flow's inputs are the other keyword arguments: ``run_id=``
        and ``tags=`` are this method's, so a builder or blueprint input of those names
        cannot be passed (a ``@flow`` parameter named ``tags`` still receives ``tags=``,
        and its runs are not tagged).
        ``priority`` (0 to 9, default 0; higher is served sooner) is sent with every
        node message of the run and of its child runs, and honoured by the transports
        that can order by it (see the Flow control page of the docs); ``priority=`` is
        this method's as ``tags=`` is.

        With ``debounce`` (``"5s"``, seconds or a ``timedelta``; needs ``run_id``) the run
        begins only once that long has passed without another start of the same
        ``run_id``, from any client: a burst of starts makes one run, with the inputs of
        the last one. A start once the run has begun returns the run as it is.

        Raises :class:`~flowkit.InvalidInputs` if ``inputs`` do not fit the flow, and
        :class:`~flowkit.ConfigurationError` naming a bad tag, priority or ``debounce``.
        """
        delay = debounce_seconds(debounce, run_id, "Client.start")
        return await self._start(
            flow, run_id, inputs, self.outage_timeout, tags, delay, priority=priority
        )

    async def _start(
        self,
        flow: Any,
        run_id: str | None,
        inputs: dict[str, Any],
        within: float,
        tags: Mapping[str, str] | None = None,
        debounce: float | None = None,
        *,
        priority: int | None = None,
    ) -> ClientHandle:
        """Start the run, retrying with backoff for up to ``within`` seconds while the
        store or the broker is unreachable; then the last error is raised."""
        flow = self.shell.flows.registered(flow, hint=REGISTER_HINT)
        target = self.shell.target_for(flow)
        run_tags, inputs = split_tags(flow, tags, inputs)
        level, inputs = split_priority(flow, priority, inputs)
        target.check(inputs)
        run_id = run_id or new_run_id()  # the same one if the start is tried again

        def create() -> Awaitable[str]:
            return self.shell.start(
                target, run_id, inputs, tags=run_tags, debounce=debounce, priority=level
            )

        await self._create(run_id, target, create, within)
        return ClientHandle(self, run_id)

    async def _create(
        self, run_id: str, target: Target, create: Callable[[], Awaitable[object]], within: float
    ) -> None:
        """``create()`` the run and publish its first nodes, retrying with backoff for up to
        ``within`` seconds while the store or the broker is unreachable; then the last
        error is raised."""
        failure: FlowkitError | None = None
        with anyio.move_on_after(within):
            try:
                await start_despite_outages(
                    self.shell, self.store_health, self.broker_health, create, run_id, target
                )
                return
            except FlowkitError as exc:
                failure = exc
        if failure is not None:
            raise failure
        down, error = (
            (self.store_health, StoreError)
            if self.store_health.down
            else (self.broker_health, TransportError)
        )
        raise error(
            f"could not start run {run_id!r} within {within:g}s: the {down.name} stayed "
            f"unreachable ({down.reason})"
        )

    async def run(
        self,
        flow: Any,
        *,
        run_id: str | None = None,
        timeout: float | None = None,
        tags: Mapping[str, str] | None = None,
        priority: int | None = None,
        **inputs: Any,
    ) -> RunResult:
        """Start a run and wait for it to complete, fail or be cancelled.

        ``tags``, ``priority`` and the inputs as for :meth:`start` (``timeout=`` is this
        method's too).
        """
        started = anyio.current_time()
        within = self.outage_timeout if timeout is None else min(timeout, self.outage_timeout)
        handle = await self._start(flow, run_id, inputs, within, tags, priority=priority)
        left = None if timeout is None else max(0.0, timeout - (anyio.current_time() - started))
        return await handle.result(timeout=left)

    async def signal(
        self,
        run_id: str,
        name: str,
        data: Any = None,
        *,
        action: str | None = None,
        delivery_id: str | None = None,
    ) -> RunResult:
        """Deliver a signal (routed to a waiting child if need be); returns the run's result.

        Raises :class:`~flowkit.ResumeError` for an unknown run, a run that has finished
        or a name no wait uses, and :class:`~flowkit.DuplicateDelivery` for a
        ``delivery_id`` the run already received. While the store is unreachable the
        signal is tried again once it is back (for up to ``outage_timeout``); a signal
        without a ``delivery_id`` gets one, so a try whose commit went through before the
        outage hid the answer is not delivered twice.
        """
        data, action = split_action(data, action)
        event = p.SignalReceived(name, data, action, delivery_id or f"client:{uuid.uuid4().hex}")
        run_id = await self._deliver(run_id, event)
        return await self.result(run_id)

    async def _deliver(self, run_id: str, event: p.SignalReceived) -> str:
        """Deliver ``event`` to the run (or the child waiting for it), tried again while the
        store is unreachable; a run that continued as new passes it on to the newest run
        of its chain, whose id is returned."""
        tries = 0
        first = run_id

        async def state_of(run_id: str) -> RunState:
            return (await self.shell.replica(run_id, fresh=True)).state

        async def deliver() -> None:
            nonlocal tries, run_id
            tries += 1
            run_id = await newest_run(first, state_of)
            try:
                target = await self.shell.signal_target(run_id, event.name)
                refuse_if_finished(
                    (await self.shell.replica(run_id)).state, event.name, event.delivery_id
                )
                # checked again on the run as stored: it may have finished since
                await self.shell.step(target, event, check=partial(_refuse, event))
            except DuplicateDelivery:
                if tries == 1:
                    raise  # (a later try finds what an earlier one committed: delivered)

        await self._despite_outage(f"signal run {run_id!r}", deliver)
        return run_id

    async def complete(self, token: str, value: Any = None) -> RunResult:
        """Complete the deferred node execution ``token`` names with ``value`` (JSON data);
        returns its run's result as of now. The workers carry the run on.

        Raises :class:`~flowkit.CompletionTokenError` for a malformed token, an unknown
        run, or a node execution that is no longer open (completed already, timed out,
        retried, or its run finished). While the store is unreachable it is tried again
        once the store is back (for up to ``outage_timeout``); a try whose commit went
        through before the outage hid the answer is not refused.

        >>> # await client.complete(token, {"charged": 42})
        """
        parsed = CompletionToken.parse(token)
        await self._settle_token(token, parsed, completion_event(parsed, value, plain=True))
        return await self.result(parsed.run_id)

    async def fail(self, token: str, error: BaseException | str) -> RunResult:
        """Fail the deferred node execution ``token`` names with ``error`` (an exception,
        or a message); the node's retry policy decides whether it runs again. Raises as
        :meth:`complete` does."""
        parsed = CompletionToken.parse(token)
        await self._settle_token(token, parsed, failure_event(parsed, error))
        return await self.result(parsed.run_id)

    async def _settle_token(
        self, token: str, parsed: CompletionToken, event: p.NodeCompleted | p.NodeFailed
    ) -> None:
        tries = 0

        async def settle() -> None:
            nonlocal tries
            tries += 1
            try:
                await self.shell.replica(parsed.run_id, fresh=True)
            except ResumeError as exc:
                raise CompletionTokenError(token, str(exc)) from None
            try:
                await self.shell.step(
                    parsed.run_id, event, check=partial(check_open, token, parsed)
                )
            except CompletionTokenError:
                if tries == 1:
                    raise  # (a later try finds what an earlier one committed: settled)

        await self._despite_outage(f"complete a node of run {parsed.run_id!r}", settle)

    async def query(self, run_id: str, name: str) -> Any:
        """The answer of the run's query ``name`` (declared with ``@flow_fn.query``),
        computed in this process from the run's flow variables as stored (running,
        awaiting or finished).

        Raises :class:`~flowkit.ResumeError` for an unknown run, a name the flow declares
        no query for, or a run whose flow this client does not have (register it:
        ``Client(..., flows=[...])``).

        >>> # await client.query(run_id, "contents")   # ['lamp', 'rug']
        """
        return await _handlers.query(self.shell, run_id, name)

    async def update(
        self, run_id: str, name: str, data: Any = None, *, timeout: float | None = None
    ) -> Any:
        """Deliver update ``name`` (declared with ``@flow_fn.update``) and return its reply.

        Waits until the run waits in ``flow.wait(name)``; runs the update's validator
        on the run's variables as stored then, under the run's lock, and records the
        signal only if it passes (else :class:`~flowkit.UpdateRejected`, nothing
        recorded); waits until the workers have taken the run to its next wait, or to
        its end; returns the update's reply computed from the variables at that point.
        All within ``timeout`` seconds (:class:`~flowkit.ResultTimeout` after that; the
        update may have been recorded by then). While the store is unreachable each step
        is tried again once it is back (for up to ``outage_timeout``), and an update whose
        commit went through before the outage hid the answer is not delivered twice.
        Raises :class:`~flowkit.ResumeError` for an unknown run or update, or a run that
        has finished, and the run's error if it failed meanwhile. The flow must be
        registered with this client.

        >>> # await client.update(run_id, "add_item", "lamp", timeout=30)   # 1
        """
        return await _handlers.update(
            self.shell, run_id, name, data, timeout, despite=self._despite_outage
        )

    async def signal_with_start(
        self,
        flow: Any,
        *,
        run_id: str,
        signal: str,
        data: Any = None,
        delivery_id: str | None = None,
        tags: Mapping[str, str] | None = None,
        priority: int | None = None,
        **inputs: Any,
    ) -> ClientHandle:
        """Deliver signal ``signal`` to run ``run_id``, starting the run first if it does
        not exist; returns its handle, as :meth:`start` does.

        Atomic: a new run is created with the signal already received (buffered for its
        wait ``signal``), in the one store transaction that creates it, so however many
        clients race, one run is started and each signal is delivered once. For a run
        that exists the signal is delivered as :meth:`signal` delivers it (a child
        waiting under that name gets it). ``data`` may be an ``Action(name, value)``.
        ``flow`` (a flow, or its id), ``tags``, ``priority`` and the inputs as for
        :meth:`start`; they are used only if the run is started.

        Raises :class:`~flowkit.ResumeError` if the flow has no wait named ``signal`` or
        the run has already finished, :class:`~flowkit.DuplicateDelivery` for a
        ``delivery_id`` the run already received (a retried call is not delivered
        twice), and :class:`~flowkit.InvalidInputs` if ``inputs`` do not fit the flow.
        Store and broker outages are ridden out as :meth:`start` and :meth:`signal` do.

        >>> # handle = await client.signal_with_start(
        >>> #     cart, run_id="cart-c1", signal="add", data="lamp", customer="c1")
        """
        flow = self.shell.flows.registered(flow, hint=REGISTER_HINT)
        target = self.shell.target_for(flow)
        refuse_unknown_wait(target, signal)
        run_tags, inputs = split_tags(flow, tags, inputs)
        level, inputs = split_priority(flow, priority, inputs)
        target.check(inputs)
        data, action = split_action(data, None)
        own_id = delivery_id or f"client:{uuid.uuid4().hex}"
        event = p.SignalReceived(signal, data, action, own_id)
        tries: list[str] = []  # "created" once a try to create the run made it
        call = uuid.uuid4().hex  # kept in the run if this call creates it
        start = partial(
            self.shell.start,
            target,
            run_id,
            inputs,
            tags=run_tags,
            signal=event,
            creator=call,
            priority=level,
        )

        async def create() -> None:
            tries.append("tried")
            await start(on_created=lambda: tries.append("created"))

        await self._create(run_id, target, create, self.outage_timeout)
        if "created" in tries:
            return ClientHandle(self, run_id)
        if len(tries) > 1 and await self._created_by(run_id, call):
            return ClientHandle(self, run_id)  # a try whose answer an outage hid made it
        await self._deliver(run_id, event)
        return ClientHandle(self, run_id)

    async def _created_by(self, run_id: str, call: str) -> bool:
        """Whether the run was created by the call that kept ``call`` in it."""
        creators: list[Any] = []

        async def read() -> None:
            replica = await self.shell.replica(run_id, fresh=True)
            creators.append(replica.state.header.get("creator"))

        await self._despite_outage(f"read run {run_id!r}", read)
        return bool(creators[-1] == call)

    async def cancel(self, run_id: str) -> RunResult:
        """Cancel a run; the workers running its nodes cancel them (``finally`` blocks run).
        While the store is unreachable it is tried again once the store is back (for up to
        ``outage_timeout``; cancelling twice is cancelling once)."""

        async def cancel() -> None:
            await self.shell.replica(run_id, fresh=True)
            await self.shell.step(run_id, p.CancelRequested())

        await self._despite_outage(f"cancel run {run_id!r}", cancel)
        return await self.result(run_id)

    async def retry(self, run_id: str) -> RunResult:
        """Resume a failed run where it failed (see :meth:`flowkit.Runtime.retry`); its
        result as of now. The workers run the failed node again with fresh attempts.

        Raises :class:`~flowkit.ResumeError` for a run a retry cannot resume, saying why.
        While the store is unreachable it is tried again once the store is back (for up
        to ``outage_timeout``); a try that went through before the outage hid the answer
        is not repeated.
        """
        rounds: list[int] = []  # the run's retry count when the first try read it

        async def retry() -> None:
            state = (await self.shell.replica(run_id, fresh=True)).state
            done = int(state.header.get("retried", 0))
            if rounds and done > rounds[0]:
                return  # an earlier try's commit went through
            rounds[:] = rounds or [done]
            refuse_retry(state)
            await self.shell.step(run_id, p.RetryRequested())

        await self._despite_outage(f"retry run {run_id!r}", retry)
        return await self.result(run_id)

    async def migrate(
        self,
        run_id: str,
        *,
        to: Any,
        map: Mapping[str, str] | None = None,
    ) -> RunResult:
        """Move a run that has not finished to another version of its flow, ``to``; its
        result as of now. See :meth:`flowkit.Runtime.migrate`: ``map`` renames node ids,
        a run whose positions the new version lacks (or has as other kinds of node) is
        refused with a :class:`~flowkit.MigrationRefused` and nothing changes; the check
        and the rewrite are one store transaction under the run's lock. Workers go on
        with the run on the new version (they must have it registered).

        >>> # await client.migrate("order-7", to=checkout_v2, map={"check": "basic_check"})
        """
        mapping = check_map(map)
        target = self.shell.flows.add(self.shell.flows.registered(to, hint=REGISTER_HINT))

        async def migrate() -> None:
            await self.shell.migrate(run_id, target, mapping)

        await self._despite_outage(f"migrate run {run_id!r}", migrate)
        return await self.result(run_id)

    async def _despite_outage(self, what: str, operation: Callable[[], Awaitable[None]]) -> None:
        """``operation()``, tried again while the store is unreachable, for up to
        ``outage_timeout``; then a :class:`~flowkit.StoreError` says so."""
        with anyio.move_on_after(self.outage_timeout):
            await despite_store_outages(self.store_health, operation)
            return
        raise StoreError(
            f"could not {what} within {self.outage_timeout:g}s: the store stayed unreachable "
            f"({self.store_health.reason})"
        )

    async def result(self, run_id: str) -> RunResult:
        """The run's current result, read from the store."""
        replica = await self.shell.replica(run_id, fresh=True)
        return RunResult.of(replica.state, replica.program.blueprint)

    async def wait(self, run_id: str, timeout: float | None = None) -> RunResult:
        """Wait until the run is completed, failed or cancelled.

        Raises :class:`~flowkit.ResultTimeout` (a ``TimeoutError``), saying where
        the run stands and what to check, if that takes over ``timeout`` seconds.
        With a store that announces finished runs (MemoryStore, PostgresStore,
        RedisStore) the wait wakes on the announcement, and reads the run only
        every ``max_poll_interval`` besides, in case one was missed. Other
        stores (SQLite) are polled, every ``poll_interval`` rising to
        ``max_poll_interval``. A run that continued as new (``flow.continue_as_new``) is
        followed along its chain: the result is the last run's.
        """
        deadline = None if timeout is None else anyio.current_time() + timeout
        while True:
            left = None if deadline is None else max(0.0, deadline - anyio.current_time())
            result = await self._wait_one(run_id, left, timeout)
            if result.continued_as is None:
                return result
            run_id = result.continued_as

    async def _wait_one(
        self, run_id: str, timeout: float | None, waited: float | None
    ) -> RunResult:
        """:meth:`wait` for one run (``waited``: the whole wait's timeout, for its error)."""
        announced = anyio.Event()
        with anyio.move_on_after(timeout):
            # subscribed before the first read, so no announcement falls in between
            async with self._finish_notices() as notices, anyio.create_task_group() as tg:
                if notices is not None:
                    tg.start_soon(_announcement, notices, run_id, announced)
                await self._until_finished(run_id, announced, notified=notices is not None)
                tg.cancel_scope.cancel()
            return await despite_store_outages(self.store_health, lambda: self.result(run_id))
        assert waited is not None  # only a timeout ends the wait without a result
        raise await self._timed_out(run_id, waited)

    async def _timed_out(self, run_id: str, waited: float) -> ResultTimeout:
        """The error for a wait that gave up: where the run stands, and what to check."""
        status: str | None = None
        detail = f"its status could not be read within {STATUS_READ_TIMEOUT:g}s"
        with anyio.move_on_after(STATUS_READ_TIMEOUT):
            try:
                current = await self.result(run_id)
            except ResumeError:
                detail = (
                    f"it is not in the store {self.store!r}; check the run id, and that this "
                    "client uses the store the run was started on"
                )
            except StoreError as exc:
                detail = f"its status could not be read: {exc}"
            else:
                status = current.status.value
                detail = _still(current)
        return ResultTimeout(run_id, status, waited, detail)

    async def _until_finished(self, run_id: str, announced: anyio.Event, *, notified: bool) -> None:
        """Read the run's status until it is final, between reads waiting for ``announced``."""
        first = self.max_poll_interval if notified else self.poll_interval
        delays = Backoff(first, factor=1.5, max=max(first, self.max_poll_interval)).delays()
        while True:
            # an announcement before the read that finds the run unfinished is stale (then
            # poll); one that comes after it (even before the wait below) is news
            stale = announced.is_set()
            info = await despite_store_outages(self.store_health, lambda: self.store.info(run_id))
            if info is not None and info.status in FINISHED_VALUES:
                return
            with anyio.move_on_after(next(delays)):
                if not notified or stale:
                    await anyio.sleep_forever()
                await announced.wait()

    @asynccontextmanager
    async def _finish_notices(self) -> AsyncIterator[AsyncIterator[str] | None]:
        """The store's notices of finished runs, or None: it has none, or too many are open."""
        if not isinstance(self.store, WatchesFinished) or self._watching >= MAX_WATCHES:
            yield None
            return
        self._watching += 1
        try:
            async with AsyncExitStack() as stack:
                notices: AsyncIterator[str] | None = None
                try:
                    notices = await stack.enter_async_context(self.store.watch_finished())
                except StoreError as exc:
                    log.warning("cannot watch for finished runs; polling", error=str(exc))
                yield notices
        finally:
            self._watching -= 1

    async def purge(
        self,
        older_than: Duration,
        *,
        status: str | Collection[str] | None = None,
        batch: int = 500,
    ) -> int:
        """Delete the runs that finished more than ``older_than`` ago (``"30d"``, seconds or
        a ``timedelta``), with everything the store keeps for them; how many.

        ``status`` narrows it to some final statuses (``"completed"``, ``"failed"``,
        ``"cancelled"``; all by default). Runs that have not finished are never deleted.
        Deletes ``batch`` runs per store call. Raises
        :class:`~flowkit.ConfigurationError` for a bad argument.
        """
        return await purge_runs(self.store, older_than, status=status, batch=batch)

    async def list_runs(
        self,
        *,
        flow: str | None = None,
        status: str | Collection[str] | None = None,
        tags: Mapping[str, str] | None = None,
        created_after: float | None = None,
        created_before: float | None = None,
        parent: str | None = None,
        limit: int = 50,
        cursor: str | None = None,
    ) -> RunPage:
        """The runs in the store, newest first, filtered; a page at a time.

        Filters combine with AND: ``flow`` (the flow's id), ``status`` (a
        :class:`~flowkit.RunStatus` value, or several: any of them), ``tags`` (every
        key given has the value given), ``created_after <= created_at <
        created_before`` (unix seconds), ``parent`` (the children of that run). At most
        ``limit`` runs (1 to 1000); pass the page's ``cursor`` back for the next page
        (None when there is none). Raises :class:`~flowkit.ConfigurationError` naming a
        bad argument.
        """
        lister = getattr(self.store, "list_runs", None)
        if lister is None:
            raise ConfigurationError(
                f"list_runs: the store {self.store!r} keeps no run index (no list_runs method)"
            )
        page: RunPage = await lister(
            flow=flow,
            status=status,
            tags=tags,
            created_after=created_after,
            created_before=created_before,
            parent=parent,
            limit=limit,
            cursor=cursor,
        )
        return page

    async def history(self, run_id: str) -> list[HistoryEvent]:
        """The run's history: its events in order (``seq`` from 1), read from the store.

        Raises :class:`~flowkit.ResumeError` for a run not in the store. A store made
        with ``history=False`` keeps none: the list is empty.
        """
        return await read_history(self.store, run_id)

    async def describe(self, run_id: str) -> RunDescription:
        """The run's header (as :meth:`list_runs` lists it), a table of its nodes
        (status, attempts, first start, last end, time spent, last error) and what it
        waits for (waits with their timeout, timers with their due time, children).

        Raises :class:`~flowkit.ResumeError` for a run not in the store.
        """
        return await describe_stored(self.store, run_id)

    def known_blueprints(self) -> list[Any]:
        """Blueprints this client knows (the webhook app routes from these)."""
        return [t.blueprint for t in self.shell.flows.by_digest.values()]

    def _schedule_store(self) -> Store:
        return self.store


class ClientHandle:
    """A run started through a :class:`Client`."""

    def __init__(self, client: Client, run_id: str) -> None:
        self.client = client
        self.run_id = run_id

    async def result(self, timeout: float | None = None) -> RunResult:
        """Wait for the run to finish; :class:`~flowkit.ResultTimeout` after ``timeout`` s."""
        return await self.client.wait(self.run_id, timeout)

    async def cancel(self) -> RunResult:
        return await self.client.cancel(self.run_id)

    def __repr__(self) -> str:
        return f"ClientHandle(run_id={self.run_id!r})"


def _refuse(event: p.SignalReceived, state: RunState) -> None:
    refuse_if_finished(state, event.name, event.delivery_id)


async def _announcement(notices: AsyncIterator[str], run_id: str, announced: anyio.Event) -> None:
    """Set ``announced`` when ``notices`` announce ``run_id``."""
    try:
        async for finished in notices:
            if finished == run_id:
                announced.set()
                return
    except StoreError as exc:  # the subscription broke: the waiter's re-reads go on
        log.warning("lost the store's notices of finished runs; polling", error=str(exc))


def _still(current: RunResult) -> str:
    """Where an unfinished run stands, and what would carry it on."""
    if current.status is RunStatus.QUEUED:
        return (
            "it is queued for a slot of its flow's concurrency limit (@flow(concurrency=...)): "
            "it starts when a run of its pool ends"
        )
    if current.status is RunStatus.AWAITING:
        waits = ", ".join(map(repr, current.waiting_for)) or "a timer or a child run"
        return (
            f"it is awaiting {waits}; signal it (client.signal) or, for timers, keep a "
            "worker running on its store"
        )
    return (
        f"it is still {current.status.value}; check that workers serving this flow, with "
        "the same code as this client, run on the same transport, queue and store, and look "
        "in their logs for errors (a message they dead-lettered fails its run)"
    )

"""Persisting core transitions in a store (shared by the Runtime and the Worker)."""

from __future__ import annotations

import inspect
from typing import TYPE_CHECKING, Any

import anyio

from .. import _clock as clock
from .._durations import to_seconds
from .._errors import ConfigurationError, DuplicateDelivery, ResumeError, StoreError
from ..core import _protocol as p
from ..core._machine import handle_event
from ..core._priority import DEFAULT_PRIORITY, check_priority
from ..core._retry import retry_refusal
from ..core._state import DELETED, Delta, RunState, RunStatus
from ..stores._index import check_tags, error_of
from ..stores._protocol import CatchesUp, CommitsOptimistically, Conflict
from ._history import Origin, options_of, transition_events

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable, Mapping, Sequence

    from .._durations import Duration
    from ..blueprint._model import Blueprint
    from ..core._program import Program
    from ..stores._history import HistoryEntry, HistoryOptions
    from ..stores._protocol import IndexOps, RunTransaction, Store


CHILD_LEASE = "child:"
"""Prefix of the lease ids that guard a child run's start and its report to the parent."""


def index_ops(
    delta: Delta,
    commands: list[p.Command],
    *,
    now: float | None = None,
    lease_seconds: float | None = None,
) -> IndexOps:
    """Timer and lease index changes implied by one transition."""
    from ..stores._protocol import IndexOps

    now = clock.now() if now is None else now
    timers = [(c.timer_id, now + c.delay) for c in commands if isinstance(c, p.StartTimer)]
    timers_done = [key for section, key, value in delta if section == "timers" and value is DELETED]
    leases: list[tuple[str, float]] = []
    leases_done: list[str] = []
    if lease_seconds is not None:
        # Dispatches and children both lease: if a process dies before publishing a
        # node or starting a child, the lease runs out and a reconciler redoes it.
        for section, key, value in delta:
            if section not in ("dispatches", "children"):
                continue
            lease_id = key if section == "dispatches" else CHILD_LEASE + key
            # a deferred dispatch ran: it waits for its completion, not for a worker
            if value is DELETED or (section == "dispatches" and value.get("deferred")):
                leases_done.append(lease_id)
            else:
                leases.append((lease_id, now + lease_seconds))
    return IndexOps(timers, timers_done, leases, leases_done)


def with_tags(
    extra: Mapping[str, Any] | None, tags: Mapping[str, str] | None
) -> dict[str, Any] | None:
    """A new run's extra header entries, with its ``tags`` (kept in the header so that a
    run continued as new carries them over)."""
    if not tags:
        return dict(extra) if extra else None
    return {**(extra or {}), "tags": dict(tags)}


async def newest_run(run_id: str, state_of: Callable[[str], Awaitable[RunState]]) -> str:
    """The newest run of ``run_id``'s chain (runs that continued as new, followed)."""
    while True:
        state = await state_of(run_id)
        following = state.header.get("continued_as") if state.finished else None
        if following is None:
            return run_id
        run_id = str(following)


def continuing(state: RunState) -> bool:
    """Whether the run has a continuation (``flow.continue_as_new``) not yet reported."""
    return any(record.get("continuation") for record in state.sections["children"].values())


def commit_info(state: RunState, now: float) -> dict[str, Any]:
    """The ``info`` of a commit of ``state``: its status, the commit's time ``now`` and,
    for a failed run, its error's type and message (the run index's fields)."""
    info: dict[str, Any] = {"at": now}
    status = state.header.get("status")
    if status:
        info["status"] = status
    if status == RunStatus.FAILED.value:
        error = error_of(state.header)
        if error is not None:
            info["error"] = error
    return info


def split_tags(
    flow: Any, tags: Mapping[str, str] | None, inputs: dict[str, Any]
) -> tuple[dict[str, str], dict[str, Any]]:
    """The run's tags and the flow's inputs, from a start's ``tags=`` and ``**inputs``.

    ``tags=`` is the keyword of the run's tags (checked: a
    :class:`~flowkit.ConfigurationError` names a bad tag), so a flow input of that
    name cannot be passed next to it, as with ``run_id=`` and ``registry=``; but a
    ``@flow`` whose signature has a parameter named ``tags`` keeps receiving ``tags=``
    as that input, as before runs had tags (its runs are started untagged).
    """
    if tags is not None and _takes_parameter(flow, "tags"):
        return {}, {**inputs, "tags": tags}
    return check_tags(tags), inputs


def split_priority(
    flow: Any, priority: int | None, inputs: dict[str, Any]
) -> tuple[int, dict[str, Any]]:
    """The run's priority and the flow's inputs, from a start's ``priority=`` and
    ``**inputs``: as for ``tags=`` (see :func:`split_tags`), a ``@flow`` with a
    parameter named ``priority`` keeps receiving it as that input."""
    if priority is None:
        return DEFAULT_PRIORITY, inputs
    if _takes_parameter(flow, "priority"):
        return DEFAULT_PRIORITY, {**inputs, "priority": priority}
    return check_priority(priority), inputs


def debounce_seconds(debounce: Duration | None, run_id: str | None, where: str) -> float | None:
    """A start's ``debounce=`` in seconds (None: no debounce); a
    :class:`~flowkit.ConfigurationError` without a ``run_id`` or for a bad duration."""
    if debounce is None:
        return None
    if run_id is None:
        raise ConfigurationError(
            f"{where}(debounce=...) needs a run_id: the starts it coalesces are those of "
            "one run id, e.g. run_id=f'reindex-{account}'"
        )
    seconds = to_seconds(debounce)
    if seconds <= 0:
        raise ConfigurationError(f"{where}(debounce={debounce!r}): expected more than 0 seconds")
    return seconds


def _takes_parameter(flow: Any, name: str) -> bool:
    fn = getattr(flow, "fn", None)
    if not callable(fn):
        return False
    try:
        parameter = inspect.signature(fn).parameters.get(name)
    except (TypeError, ValueError):
        return False
    return parameter is not None and parameter.kind not in (
        inspect.Parameter.VAR_POSITIONAL,
        inspect.Parameter.VAR_KEYWORD,
    )


QUIET_STEPS = 8
"""After a conflict, steps that first catch the copy up (one read) before they attempt:
another process has been writing the run (a fan's completions on other workers)."""

OPTIMISTIC_TRIES = 3
"""Attempts of one step, each after catching up with what made the last one conflict,
before it is taken under the run's lock."""


class Replica:
    """This process's copy of a stored run, kept in step with the store's versions."""

    __slots__ = ("_busy", "contended", "program", "run_id", "state", "version")

    def __init__(self, program: Program, state: RunState, version: int) -> None:
        self.program = program
        self.state = state
        self.run_id = state.run_id
        self.version = version
        # steps that catch up before attempting: another process changed the run under
        # an attempt lately (each conflict costs a reload)
        self.contended = 0
        # one step or catch-up of this copy at a time: a reload or catch-up between an
        # attempt's change and its commit would pair the version with another state
        self._busy: anyio.Lock | None = None

    def _one_at_a_time(self) -> anyio.Lock:
        if self._busy is None:
            self._busy = anyio.Lock()
        return self._busy

    async def step(
        self,
        store: Store,
        event: p.Event,
        *,
        lease_seconds: float | None = None,
        origin: Origin | None = None,
        check: Callable[[RunState], None] | None = None,
    ) -> list[p.Command]:
        """Apply ``event`` and commit only the delta: in one round trip if the store
        commits optimistically and this copy is current; in two (a catch-up read first) if
        another process wrote the run under an attempt lately; an attempt that conflicts
        is tried again, up to :data:`OPTIMISTIC_TRIES`, after reloading the run; else
        under the run's lock. The commit carries the transition's history events
        (``origin``: who ran the node the event settles).

        ``check(state)`` may refuse the event (by raising) on the run as the store holds
        it under the lock: a copy that was behind learns there, e.g., that the run has
        finished meanwhile (which the core would take as a stale event, silently)."""
        turn = _Turn(event, origin, lease_seconds, options_of(store), check)
        async with self._one_at_a_time():
            return (await self._step(store, [turn]))[0]

    async def step_together(
        self,
        store: Store,
        events: Sequence[tuple[p.Event, Origin | None]],
        *,
        lease_seconds: float | None = None,
    ) -> list[list[p.Command]]:
        """Apply ``events`` (each with its ``origin``) in order and commit them as one
        transaction, as :meth:`step` commits one: the commands of each event applied.
        Those are the first events, at least one: an event whose transition starts a timer
        is the last of its commit (the commit's timer index is made of the whole delta);
        the caller steps the rest after."""
        history = options_of(store)
        turns = [_Turn(event, origin, lease_seconds, history) for event, origin in events]
        async with self._one_at_a_time():
            return await self._step(store, turns)

    async def _step(self, store: Store, turns: list[_Turn]) -> list[list[p.Command]]:
        try:
            if isinstance(store, CommitsOptimistically):
                done = await self._step_optimistically(store, turns)
                if done is not None:
                    return done
            return await self._step_locked(store, turns)
        except BaseException:
            self.version = -1  # our copy may hold an uncommitted step: reload next time
            raise

    async def _step_optimistically(
        self, store: Any, turns: list[_Turn]
    ) -> list[list[p.Command]] | None:
        """The steps committed by an attempt; None if they are to be done under the lock:
        they conflicted :data:`OPTIMISTIC_TRIES` times, or the events changed nothing here
        (duplicates, or news to a stale copy)."""
        reads = isinstance(store, CatchesUp)
        for _ in range(OPTIMISTIC_TRIES):
            if not reads and (self.version <= 0 or self.contended):
                return None  # the lock's transaction reads what this copy misses
            if self.version <= 0:
                await self._reload(store)
            elif self.contended:
                self.contended -= 1
                if not await self._read_missed(store):
                    await self._reload(store)
            try:
                return await self._attempt(store, turns)
            except Conflict:
                self.version = -1  # this copy holds the step that did not commit: reload it
                self.contended = QUIET_STEPS
        return None

    async def _attempt(
        self, store: CommitsOptimistically, turns: list[_Turn]
    ) -> list[list[p.Command]] | None:
        """The steps committed at this copy's version (:class:`Conflict` if the copy was
        stale); None if the events changed nothing here."""
        attempt = store.attempt(self.run_id, self.version)
        transition = self._transition(turns)
        committed = await self._commit(attempt, transition, turns[0].lease_seconds)
        return transition.done if committed else None

    def _transition(self, turns: list[_Turn]) -> _Transition:
        """Apply the turns' events to the copy, in order, up to the first whose transition
        starts a timer; ``check`` is called on the copy before its event."""
        transition = _Transition(clock.now(), turns[0].history is not None)
        for turn in turns:
            if turn.check is not None:  # the copy is the run as stored, if the commit goes through
                turn.check(self.state)
            commands = handle_event(self.program, self.state, turn.event)
            transition.add(turn, commands, self.state)
            if any(isinstance(command, p.StartTimer) for command in commands):
                break
        return transition

    async def _reload(self, store: Store) -> None:
        """Load the run whole, without a lock (:class:`RunMigrated` if it was migrated)."""
        loaded = await store.load(self.run_id)
        if loaded is None:
            raise StoreError(f"run {self.run_id!r} is not in the store {store!r}")
        digest = self.state.header.get("digest")
        self.state = loaded[0]
        self._moved_on(loaded[1], digest)

    async def _step_locked(self, store: Store, turns: list[_Turn]) -> list[list[p.Command]]:
        async with store.transaction(self.run_id) as txn:
            if txn.version == 0:
                raise StoreError(f"run {self.run_id!r} is not in the store {store!r}")
            if txn.version != self.version:
                await self._catch_up(txn)
            elif self.contended:
                self.contended -= 1
            transition = self._transition(turns)
            await self._commit(txn, transition, turns[0].lease_seconds)
            return transition.done

    async def _commit(
        self, txn: RunTransaction, transition: _Transition, lease_seconds: float | None
    ) -> bool:
        """Commit the state's delta, if any, with its history; whether there was one."""
        delta = self.state.take_delta()
        if not delta:
            return False
        now = transition.now
        index = index_ops(delta, transition.commands, now=now, lease_seconds=lease_seconds)
        info = commit_info(self.state, now)
        if transition.history is None:
            await txn.commit(delta, index=index, info=info, state=self.state)
        else:
            history = transition.history
            await txn.commit(delta, index=index, info=info, state=self.state, history=history)
        self.version = txn.version
        return True

    async def catch_up(self, store: Store) -> bool:
        """Bring this copy to the store's version by the deltas it missed (one read,
        nothing held); False if it cannot (a store without the capability, a copy that
        holds a step not committed, deltas a snapshot pruned): then load the run whole.
        :class:`RunMigrated` if the run was migrated meanwhile."""
        async with self._one_at_a_time():
            return await self._read_missed(store)

    async def _read_missed(self, store: Store) -> bool:
        if self.version <= 0 or not isinstance(store, CatchesUp):
            return False
        found = await store.changes_since(self.run_id, self.version)
        if found is None or found[1] < self.version:
            return False
        self._apply(found[0], found[1])
        return True

    async def _catch_up(self, txn: Any) -> None:
        changes = await txn.changes_since(self.version) if self.version > 0 else None
        if changes is None:
            digest = self.state.header.get("digest")
            state = await txn.load()
            if state is None:
                raise StoreError(f"run {self.run_id!r} vanished from the store")
            self.state = state
            self._moved_on(txn.version, digest)
        else:
            self._apply(changes, txn.version)

    def _apply(self, changes: list[Delta], version: int) -> None:
        digest = self.state.header.get("digest")
        for delta in changes:
            self.state.apply_delta(delta)
        self._moved_on(version, digest)

    def _moved_on(self, version: int, digest: Any) -> None:
        self.state.journal.clear()
        self.version = version
        if self.state.header.get("digest") != digest:
            self.version = -1  # this copy steps the old version's program: load it again
            raise RunMigrated(self.run_id)


class RunMigrated(ResumeError):
    """The run was migrated to another version since this copy was made: the caller loads
    it again (with the new version's program) and tries once more."""

    def __init__(self, run_id: str) -> None:
        self.run_id = run_id
        super().__init__(
            f"run {run_id!r} was migrated to another version of its flow meanwhile; try again"
        )


class _Turn:
    """One step's event and what its commit needs besides the state."""

    __slots__ = ("check", "event", "history", "lease_seconds", "origin")

    def __init__(
        self,
        event: p.Event,
        origin: Origin | None,
        lease_seconds: float | None,
        history: HistoryOptions | None,
        check: Callable[[RunState], None] | None = None,
    ) -> None:
        self.event = event
        self.origin = origin
        self.lease_seconds = lease_seconds
        self.history = history  # None: the store keeps no history
        self.check = check


class _Transition:
    """The events of one commit applied to a copy: each one's commands, and the history
    events of them all."""

    __slots__ = ("commands", "done", "history", "now")

    def __init__(self, now: float, keeps_history: bool) -> None:
        self.now = now
        self.done: list[list[p.Command]] = []
        self.commands: list[p.Command] = []
        self.history: list[HistoryEntry] | None = [] if keeps_history else None

    def add(self, turn: _Turn, commands: list[p.Command], state: RunState) -> None:
        self.done.append(commands)
        self.commands += commands
        if self.history is not None and turn.history is not None:
            max_payload = turn.history.max_payload
            self.history += transition_events(
                turn.event, commands, state, self.now, turn.origin, max_payload
            )


def routes_nodes(blueprint: Blueprint) -> bool:
    """Whether some node of ``blueprint`` is sent to a queue of its own."""
    return any(
        spec.config.queue is not None or "queue" in (spec.params.get("options") or {})
        for spec in blueprint.nodes
    )


def dispatch_queue(record: Mapping[str, Any], header: Mapping[str, Any]) -> str | None:
    """The queue a recorded dispatch is sent to: its own, else its run's (None: the
    sender's)."""
    queue = record.get("queue") or header.get("queue")
    return None if queue is None else str(queue)


def dispatch_command(run_id: str, dispatch_id: str, record: dict[str, Any]) -> p.ExecuteNode:
    """The ExecuteNode for a dispatch recorded in a run's state (to run or re-run it)."""
    item = record.get("item")
    suffix = f"@{record['act']}" if item is None else f"@{record['act']}[{item}]"
    return p.ExecuteNode(
        dispatch_id,
        record["node"],
        int(record["attempt"]),
        f"{run_id}:{record['node']}{suffix}",
        tuple(record.get("args") or ()),
        dict(record.get("kwargs") or {}),
        bool(record.get("fallback")),
        (record.get("options") or {}).get("timeout"),
        record.get("queue"),
    )


def refuse_if_finished(state: RunState, name: str, delivery_id: str | None) -> None:
    """Raise if the run has finished, so a signal would change nothing: a
    :class:`DuplicateDelivery` for a delivery it already received, else a ResumeError."""
    if not state.finished:
        return
    if delivery_id is not None and delivery_id in state.sections["deliveries"]:
        raise DuplicateDelivery(state.run_id, delivery_id)
    raise ResumeError(
        f"run {state.run_id!r} has already finished ({state.status.value}): nothing waits "
        f"for signal {name!r} any more, so it was not delivered; read the run's result "
        "instead, or start a new run"
    )


def refuse_retry(state: RunState) -> None:
    """Raise a ResumeError saying why, unless ``state`` is a run a retry can resume."""
    reason = retry_refusal(state)
    if reason is not None:
        raise ResumeError(f"cannot retry run {state.run_id!r}: {reason}")


def unknown_digest(
    state: RunState, known: list[str], refused: list[str] | None = None
) -> ResumeError:
    """The error for a run whose blueprint digest this process does not know: which flow
    started it, why no patched version of it here can go on with it (``refused``), and
    how to give this process that flow."""
    digest = str(state.header.get("digest", ""))
    flow_id = str(state.header.get("blueprint", ""))
    why = f"; patched versions cannot continue it: {' | '.join(refused)}" if refused else ""
    return ResumeError(
        f"run {state.run_id!r} was started by flow {flow_id!r} (blueprint digest "
        f"{digest[:12]}), which this process does not know (it knows: "
        f"{', '.join(sorted(known)) or 'nothing'}){why}; {_how_to_register(flow_id, known)}"
    )


def _how_to_register(flow_id: str, known: list[str]) -> str:
    if any(name.startswith(f"{flow_id} v") for name in known):
        return (
            f"this process has a different definition of {flow_id!r}: register the one that "
            "started the run as well (keep old definitions, each with @flow(version=...), "
            "until their runs finish)"
        )
    name = flow_id if flow_id.isidentifier() else "your_flow"
    return (
        f"register the flow definition that started it with this process: "
        f"Runtime(store=..., flows=[{name}]), Client(transport, store, flows=[{name}]) or "
        f"Worker([{name}], transport, store) (the CLI: --app with the module defining it)"
    )

"""The runtime's part in flow concurrency limits: carrying out the core's ``TakeSlot``
and ``ReleaseSlot`` on slots in its store, or, without one, in a :class:`MemoryStore`
of its own (an in-process queue per pool, served in order of arrival); see
``shell/_run_slots``.

An admitted run is driven by whoever is waiting for it (a :meth:`Runtime.run` that
found it queued), else in the open runtime's background, else by the task that
admitted it (the one that gave a slot back)."""

from __future__ import annotations

from contextlib import contextmanager
from functools import partial
from typing import TYPE_CHECKING, Any

import anyio
import structlog

from .._errors import ResumeError, StoreError
from ..core import _protocol as p
from ..shell._run_slots import RunSlots, holds_slot, pool_size

_log = structlog.get_logger("flowkit.runtime")
SWEEP_EVERY = 30.0
"""Seconds between two sweeps of the flow slots of a Runtime with a store."""

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator

    from anyio.abc import TaskGroup

    from ..core._state import RunState
    from ..shell._flows import Flows
    from ..shell._history import Origin
    from ..shell._target import Target
    from ._driver import Run


class SlotDriving:
    """Mixed into :class:`~flowkit.Runtime`: flow slots taken and given back."""

    run_slots: RunSlots
    store: Any
    flows: Flows
    poll_interval: float
    _tg: TaskGroup | None

    if TYPE_CHECKING:

        def _start_task(self, run: Run, fn: Any, *args: Any) -> None: ...
        def _spawn(self, run: Run, ready: list[p.ExecuteNode]) -> None: ...
        def _carry_out(self, run: Run, commands: list[p.Command]) -> list[p.ExecuteNode]: ...
        def _drive_soon(self, run: Run, commands: list[p.Command]) -> None: ...
        async def _drive(self, run: Run, commands: list[p.Command]) -> None: ...
        async def _get(self, run_id: str) -> Run: ...
        async def _step(
            self,
            run: Run,
            event: p.Event,
            origin: Origin | None = None,
            check: Callable[[RunState], None] | None = None,
        ) -> list[p.Command]: ...

    def _init_slots(self, store: Any) -> None:
        from ..stores._memory import MemoryStore

        self.run_slots = RunSlots(store if store is not None else MemoryStore())
        # run id -> admissions handed to the ``run()`` call that drives or awaits the run
        self._awaiting_slot: dict[str, Handoff] = {}

    def finish_run(self, run: Run, command: p.FinishRun) -> None:
        super().finish_run(run, command)  # type: ignore[misc]  # Driver's, next in line
        waiting = self._awaiting_slot.get(run.run_id)
        if waiting is not None:  # cancelled while queued: the run() waiting returns
            waiting.wake()

    def take_slot(self, run: Run, command: p.TakeSlot) -> None:
        self._start_task(run, self.run_slots.take, command, self._admit)

    def release_slot(self, run: Run, command: p.ReleaseSlot) -> None:
        self._start_task(run, self.run_slots.release, command, self._admit)

    async def _slot_at_start(
        self, target: Target, run_id: str, inputs: dict[str, Any], extra: Any
    ) -> dict[str, Any] | None:
        """A slot taken for a new run before it exists, if one is free and nobody waits
        (see :meth:`RunSlots.take_at_start`)."""
        return await self.run_slots.take_at_start(target.program, run_id, inputs, extra or {})

    async def _admit(self, run_id: str) -> bool:
        """Tell a queued run it has its slot and have it driven (see the module)."""
        try:
            run = await self._get(run_id)
        except ResumeError:
            return False
        commands = await self._step(run, p.SlotTaken())
        if not holds_slot(run.state):
            return False
        waiting = self._awaiting_slot.get(run_id)
        if run.tg is not None:
            self._spawn(run, self._carry_out(run, commands))
        elif waiting is not None:
            waiting.commands.append(commands)
            waiting.wake()
        elif self._tg is not None:
            self._drive_soon(run, commands)
        else:
            await self._drive(run, commands)
        return True

    @contextmanager
    def _admissions_to(self, run_id: str) -> Iterator[list[list[p.Command]]]:
        """While a ``run()`` call drives ``run_id``, an admission of it is handed to that
        call (the commands it yields), not driven by the task that admitted it: the
        call would otherwise read the run's result mid-run."""
        waiting = self._awaiting_slot.get(run_id)
        if waiting is None:
            waiting = self._awaiting_slot[run_id] = Handoff()
        handed = waiting.commands
        try:
            yield handed
        finally:
            if not handed and self._awaiting_slot.get(run_id) is waiting:
                self._awaiting_slot.pop(run_id, None)

    async def _until_admitted(self, run: Run) -> list[p.Command] | None:
        """Wait until the queued ``run`` is admitted; the commands to drive it with
        (None: another process sharing the store admitted it, and drives it)."""
        waiting = self._awaiting_slot.setdefault(run.run_id, Handoff())
        event, handed = waiting.waited(), waiting.commands
        try:
            while not handed and _queued(run.state):
                with anyio.move_on_after(self.poll_interval):
                    await event.wait()
                if not handed and await self._admitted_elsewhere(run.run_id):
                    return None
        finally:
            self._awaiting_slot.pop(run.run_id, None)
        return handed[0] if handed else []

    async def _admitted_elsewhere(self, run_id: str) -> bool:
        if self.store is None:
            return False
        info = await self.store.info(run_id)
        return info is not None and info.status != "queued"

    async def _sweep_loop(self) -> None:
        """Every ``SWEEP_EVERY`` seconds, admit the queued runs nobody admitted (see
        :meth:`RunSlots.sweep`): a process sharing the store may have died."""
        while True:
            await anyio.sleep(SWEEP_EVERY)
            try:
                await self.run_slots.sweep(partial(pool_size, self.flows), self._admit)
            except StoreError as exc:
                _log.warning("flow slot sweep failed; retrying", error=str(exc))


class Handoff:
    """The admissions of a run handed to the ``run()`` call that drives or awaits it, and
    the event that wakes that call (made only once the call waits: most never do)."""

    __slots__ = ("commands", "event")

    def __init__(self) -> None:
        self.commands: list[list[p.Command]] = []
        self.event: anyio.Event | None = None

    def waited(self) -> anyio.Event:
        """The event to wait on for a change."""
        if self.event is None:
            self.event = anyio.Event()
        return self.event

    def wake(self) -> None:
        if self.event is not None:
            self.event.set()


def _queued(state: RunState) -> bool:
    return state.header.get("status") == "queued"

"""Flow concurrency limits under :func:`~flowkit.testing.simulate`: each pool's slots
and queue in memory, served in order of arrival, as the other shells serve them from
a store (``shell/_run_slots``)."""

from __future__ import annotations

from collections import deque
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from collections.abc import Callable

    from ..core import _protocol as p


class SimulatedSlots:
    """The pools of one simulation; ``admit(run_id)`` tells a queued run it has its
    slot (False: the run has ended, and the slot goes to the next one)."""

    def __init__(self, admit: Callable[[str], bool]) -> None:
        self.admit = admit
        self._held: dict[tuple[str, str], set[str]] = {}
        self._queues: dict[tuple[str, str], deque[str]] = {}

    def take(self, command: p.TakeSlot) -> None:
        pool = (command.limit_id, command.key)
        line = self._queues.setdefault(pool, deque())
        if command.holder not in line and command.holder not in self._held.get(pool, ()):
            line.append(command.holder)
        self._serve(pool, command.max)

    def release(self, command: p.ReleaseSlot) -> None:
        pool = (command.limit_id, command.key)
        self._held.get(pool, set()).discard(command.holder)
        line = self._queues.get(pool)
        if line is not None and command.holder in line:
            line.remove(command.holder)
        self._serve(pool, command.max)

    def _serve(self, pool: tuple[str, str], size: int) -> None:
        held = self._held.setdefault(pool, set())
        line = self._queues.setdefault(pool, deque())
        while line and len(held) < size:
            holder = line.popleft()
            if self.admit(holder):
                held.add(holder)

"""A run's state: plain-data sections whose every change is journaled as a delta."""

from __future__ import annotations

import enum
from typing import TYPE_CHECKING, Any, Final

if TYPE_CHECKING:
    from collections.abc import Iterator

SECTIONS: Final = (
    "header",  # status, inputs, output, error, parent, digest
    "context",  # user state and flow variables
    "outputs",  # node id -> latest output
    "nodes",  # node id -> [activation, arrived, taken, fired, status]
    "dispatches",  # dispatch id -> in-flight execution (node, attempt, args, kwargs)
    "timers",  # timer id -> {node, purpose, delay, dispatch?}
    "waits",  # wait name -> {node, activation, timer}
    "signals",  # wait name -> buffered payloads
    "batches",  # node id -> progress of a batch
    "loops",  # loop node id -> iteration state
    "children",  # child run id -> {node, activation}
    "deliveries",  # webhook delivery id -> True (replay protection)
)


class Sections(dict[str, dict[str, Any]]):
    """A run's sections by name; a section is made (empty) when first looked up, so a
    run costs only the sections it uses."""

    __slots__ = ()

    def __missing__(self, name: str) -> dict[str, Any]:
        section: dict[str, Any] = {}
        self[name] = section
        return section


class NullJournal(set[tuple[str, str]]):
    """A journal that records nothing: runs without a store never take deltas."""

    __slots__ = ()

    # discarding from a set that is always empty does nothing, as add must here, in C:
    # a Python method would cost a call on every write of every run
    add = set.discard


NULL_JOURNAL: Final = NullJournal()
"""The journal of every run without a store: it stays empty, so one serves them all."""

DELETED: Final = object()
"""Marker in a delta: the key was deleted."""


class RunStatus(enum.StrEnum):
    """Where a run stands."""

    QUEUED = "queued"
    """Not begun: waiting for a slot of its flow's concurrency limit."""
    RUNNING = "running"
    AWAITING = "awaiting"
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELLED = "cancelled"

    @property
    def finished(self) -> bool:
        """Whether the run has ended for good."""
        return self in _FINISHED


_FINISHED = frozenset({RunStatus.COMPLETED, RunStatus.FAILED, RunStatus.CANCELLED})
FINISHED_VALUES: Final = frozenset(s.value for s in _FINISHED)

Delta = list[tuple[str, str, Any]]


class RunState:
    """All that is known about one run, as sections of plain (JSON) data.

    Writes go through :meth:`put`, :meth:`drop` or :meth:`touch` so that
    :meth:`take_delta` can hand a store exactly the keys that changed.
    """

    __slots__ = ("journal", "run_id", "sections")

    def __init__(self, run_id: str, sections: dict[str, dict[str, Any]] | None = None) -> None:
        self.run_id = run_id
        self.sections: dict[str, dict[str, Any]] = Sections()
        if sections:
            for name, values in sections.items():
                self.sections[name] = dict(values)
        self.journal: set[tuple[str, str]] = set()

    # -- writes -----------------------------------------------------------
    def put(self, section: str, key: str, value: Any) -> None:
        self.sections[section][key] = value
        self.journal.add((section, key))

    def drop(self, section: str, key: str) -> None:
        if self.sections[section].pop(key, DELETED) is not DELETED:
            self.journal.add((section, key))

    def touch(self, section: str, key: str) -> None:
        """Record that a mutable value stored under ``key`` changed in place."""
        self.journal.add((section, key))

    def take_delta(self) -> Delta:
        """The changes since the last call: ``(section, key, value or DELETED)``."""
        delta = [
            (section, key, self.sections[section].get(key, DELETED))
            for section, key in sorted(self.journal)
        ]
        self.journal.clear()
        return delta

    def apply_delta(self, delta: Delta) -> None:
        """Apply a delta produced by :meth:`take_delta` (used by stores and replicas)."""
        for section, key, value in delta:
            if value is DELETED:
                self.sections[section].pop(key, None)
            else:
                self.sections[section][key] = value

    # -- reads ------------------------------------------------------------
    @property
    def header(self) -> dict[str, Any]:
        return self.sections["header"]

    @property
    def context(self) -> dict[str, Any]:
        return self.sections["context"]

    @property
    def status(self) -> RunStatus:
        return RunStatus(self.header.get("status", RunStatus.RUNNING))

    @property
    def finished(self) -> bool:
        """Whether the run has ended (cheaper than ``status.finished``)."""
        return self.sections["header"].get("status") in FINISHED_VALUES

    def to_dict(self) -> dict[str, Any]:
        """Plain data for a snapshot (JSON-serialisable when the values are)."""
        return {
            "run_id": self.run_id,
            "sections": {k: dict(v) for k, v in self.used_sections().items()},
        }

    def used_sections(self) -> dict[str, dict[str, Any]]:
        """The sections that hold anything (themselves, not copies), in their usual order."""
        sections = self.sections
        used = {name: sections[name] for name in SECTIONS if sections.get(name)}
        if len(used) < len(sections):
            used.update((k, v) for k, v in sections.items() if v and k not in used)
        return used

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> RunState:
        return cls(str(data["run_id"]), data.get("sections") or {})

    def __iter__(self) -> Iterator[str]:
        return iter([*SECTIONS, *(name for name in self.sections if name not in SECTIONS)])

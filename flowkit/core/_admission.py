"""Run-level concurrency limits, ``@flow(concurrency=Limit(max=N, key="arg"))``; mixed
into ``_machine.Step``.

A limited flow's blueprint says so in its metadata (``concurrency``: ``max`` and
``key``). At most ``max`` runs of it hold a slot of one *pool* at once: the pool of a
run is the flow's limit and the value of its input ``key`` (one pool without a key).
The core decides; the shells carry it out:

* A run that needs a slot starts ``queued``: it asks for one (:class:`TakeSlot`) and
  begins only when the shell reports :class:`SlotTaken`. The shell serves a pool's
  queue in order of arrival.
* The slot belongs to the run, not to a process: it is held while the run sleeps or
  waits, and given back (:class:`ReleaseSlot`) when the run ends, whatever the end
  (completed, failed, cancelled; a queued run that is cancelled leaves the queue).
* A run that continues as new in the same pool hands its slot to the new run, which
  begins at once; in another pool the new run queues like any other.
* A retried run (it gave its slot back when it failed) queues again before it resumes.
* No deadlock: a slot is taken only when a run starts, before it holds anything else;
  node slots are held only while a node runs, and a node never waits for a flow slot.
  A child run (subflow) whose pool is its parent's runs under its parent's slot
  instead of waiting for one, so ``max=1`` with a recursive subflow cannot deadlock.
  (Children in *other* limited pools queue for their own slots: two flows whose runs
  each start children of the other's pool can still wait for each other.)
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

from . import _protocol as proto

if TYPE_CHECKING:
    from ._program import Program
    from ._state import RunState

SLOT = "slot"  # header: the slot the run runs under (see ``slot_record``)
QUEUED = "queued"  # header of a queued run: what it does once admitted ("begin", "retry")
PARENT_SLOT = "parent_slot"  # header of a child run: its parent's slot, if it had one
POOL_PREFIX = "flow:"  # the store pools of flow limits are named "flow:<blueprint id>"


def key_text(value: Any) -> str:
    """A run input's value as the text its pool is stored under: strings as they are,
    anything else as canonical JSON (``1`` and ``"1"`` are different keys; the shells
    hand the core plain data, and anything else is named by its ``repr``)."""
    if isinstance(value, str):
        return value
    try:
        return json.dumps(value, sort_keys=True, separators=(",", ":"))
    except (TypeError, ValueError):
        return repr(value)


def flow_pool(program: Program, inputs: dict[str, Any]) -> tuple[str, str, int] | None:
    """The pool a run of ``program`` with ``inputs`` needs a slot of (limit id, key
    value, max), or None if its flow has no limit."""
    limit = program.blueprint.metadata.get("concurrency")
    if not isinstance(limit, dict):
        return None
    key = limit.get("key")
    value = "" if key is None else key_text(inputs.get(key))
    return POOL_PREFIX + program.blueprint.id, value, int(limit["max"])


def taken_slot(pool: tuple[str, str, int], holder: str) -> dict[str, Any]:
    """The header entry of a run whose shell took it a slot of ``pool`` before it was
    created (it begins at once)."""
    limit_id, key, size = pool
    return {
        "limit": limit_id,
        "key": key,
        "max": size,
        "holder": holder,
        "own": True,
        "taken": True,
    }


def lent_slot(header: dict[str, Any]) -> dict[str, Any] | None:
    """The slot a run lends its children (its own once taken, or the one it runs under)."""
    slot = header.get(SLOT)
    if slot is None or header.get(QUEUED) is not None:
        return None
    if slot.get("own") and not slot.get("taken"):
        return None
    return {k: slot[k] for k in ("limit", "key", "max", "holder")}


class AdmissionSteps:
    """Queueing for, running under and giving back flow slots (see the module)."""

    p: Program
    s: RunState
    commands: list[proto.Command]

    if TYPE_CHECKING:

        def begin(self) -> None: ...
        def retry_now(self) -> None: ...
        def note(
            self, type_: str, node_id: str | None, attempt: int | None = None, *, data: Any = None
        ) -> None: ...

    def admitted(self, then: str) -> bool:
        """Whether the run may go on now; if not, it queues for a slot and does ``then``
        ("begin" or "retry") once the shell reports :class:`SlotTaken`."""
        pool = flow_pool(self.p, self.s.header.get("inputs") or {})
        if pool is None:
            return True
        held = self.s.header.get(SLOT)
        if held is None:
            held = self.s.header.get(PARENT_SLOT)
            if held is not None and (held["limit"], held["key"]) == pool[:2]:
                self.s.put("header", SLOT, dict(held, own=False))
                return True
        elif (held["limit"], held["key"]) == pool[:2] and (held.get("taken") or not held["own"]):
            return True
        limit_id, key, size = pool
        slot = {"limit": limit_id, "key": key, "max": size, "holder": self.s.run_id, "own": True}
        self.s.put("header", SLOT, slot)
        self.s.put("header", QUEUED, then)
        self.s.put("header", "status", "queued")
        self.commands.append(proto.TakeSlot(limit_id, key, size, self.s.run_id))
        self.note("workflow:queue", None, data={"limit": limit_id, "key": key, "max": size})
        return False

    def on_slot_taken(self) -> None:
        """The shell took the run's slot: it begins (or resumes, for a retry)."""
        then = self.s.header.get(QUEUED)
        if then is None:
            return  # told twice (a redo): it went on already
        self.s.drop("header", QUEUED)
        self.s.put("header", SLOT, dict(self.s.header[SLOT], taken=True))
        self.s.put("header", "status", "running")
        self.note("workflow:admit", None)
        if then == "retry":
            self.retry_now()
        elif self.s.header.get("debounce") is None:
            self.begin()

    def release_slot(self) -> None:
        """The run ends: give its own slot back (or leave the queue), unless a run it
        continues as took it over."""
        slot = self.s.header.get(SLOT)
        if slot is None or not slot["own"] or slot.get("passed"):
            return
        if not slot.get("taken") and self.s.header.get(QUEUED) is None:
            return
        self.s.drop("header", QUEUED)
        self.s.put("header", SLOT, dict(slot, taken=False))
        self.commands.append(
            proto.ReleaseSlot(slot["limit"], slot["key"], int(slot["max"]), slot["holder"])
        )

    def pass_slot(self, inputs: dict[str, Any]) -> dict[str, Any]:
        """Header entries of the run this one continues as: this run's slot if the new
        run's pool is the same (it begins at once, and this run keeps the slot)."""
        slot = self.s.header.get(SLOT)
        pool = flow_pool(self.p, inputs)
        if slot is None or pool is None or not slot["own"] or not slot.get("taken"):
            return {}
        if (slot["limit"], slot["key"]) != pool[:2]:
            return {}
        self.s.put("header", SLOT, dict(slot, passed=True))
        return {SLOT: {k: v for k, v in slot.items() if k != "passed"}}

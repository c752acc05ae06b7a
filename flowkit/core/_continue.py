"""``flow.continue_as_new(...)``: a run that ends by starting a fresh run of its flow.

The core cannot create a run, so continuing takes two transitions. The first
(the ``return`` node with ``params["continue_as_new"]``) stops whatever else the
run had in progress, records the new run in the ``children`` section (a
``continuation`` record, which a durable shell leases like a child start) and asks
the shell for :class:`~flowkit.core._protocol.ContinueAsNew`. The run stays open
until the shell reports :class:`~flowkit.core._protocol.RunContinued`: then it
completes, with no output and ``continued_as`` in its header. A shell that dies in
between redoes the command when the lease runs out; the new run's id is derived
from the first run's (``<first>:<generation>``), so a redo never makes two.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .._errors import FlowkitError
from . import _protocol as proto

if TYPE_CHECKING:
    from collections import deque

    from ._program import Program
    from ._state import RunState, RunStatus

CONTINUING = "continuing"  # header: the id of the run this one is becoming
CONTINUED_AS = "continued_as"  # header of a finished run: the run it continued as
CONTINUED_FROM = "continued_from"  # header of a new run: the run it continues
CHAIN = "chain"  # header: the first run of the chain (whose id the next ids derive from)
GENERATION = "generation"  # header: how many runs came before this one in its chain


def next_run_id(header: dict[str, Any], run_id: str) -> tuple[str, str, int]:
    """The id of the run that ``run_id`` continues as, its chain's first id, its generation."""
    first = str(header.get(CHAIN, run_id))
    generation = int(header.get(GENERATION, 0)) + 1
    return f"{first}:{generation}", first, generation


class ContinueSteps:
    """Continue-as-new behaviour of a core step; mixed into ``_machine.Step``."""

    p: Program
    s: RunState
    commands: list[proto.Command]
    queue: deque[tuple[str, bool, bool, str | None]]

    if TYPE_CHECKING:

        def finish(self, status: RunStatus, *, output: Any = None, error: Any = None) -> None: ...
        def cancel_nodes(self, nodes: tuple[str, ...] | None, *, skip: bool) -> None: ...
        def pass_slot(self, inputs: dict[str, Any]) -> dict[str, Any]: ...
        def note(
            self, type_: str, node_id: str | None, attempt: int | None = None, *, data: Any = None
        ) -> None: ...

    def continue_as_new(self, node_id: str, source: str) -> None:
        """Stop the run's other work and ask for the run it continues as (see module)."""
        header = self.s.header
        if header.get("parent") is not None:
            raise ContinueInChild(self.s.run_id, str(header["parent"]))
        inputs = self.p.expr(source)(self.s.context)
        new_id, first, generation = next_run_id(header, self.s.run_id)
        self.cancel_nodes(None, skip=False)
        self.queue.clear()
        blueprint_id = self.p.blueprint.id
        record = {"node": node_id, "continuation": True, "blueprint_id": blueprint_id}
        record["inputs"] = dict(inputs)
        self.s.put("children", new_id, record)
        self.s.put("header", CONTINUING, new_id)
        link = {CONTINUED_FROM: self.s.run_id, CHAIN: first, GENERATION: generation}
        link.update(self.pass_slot(dict(inputs)))
        self.commands.append(proto.ContinueAsNew(new_id, blueprint_id, dict(inputs), link))

    def on_continued(self, event: proto.RunContinued) -> None:
        """The new run exists: this one completes, pointing at it."""
        from ._state import RunStatus

        record = self.s.sections["children"].get(event.new_run_id)
        if record is None or not record.get("continuation"):
            return  # reported twice (a redo), or not a continuation of this run
        self.s.drop("children", event.new_run_id)
        self.s.drop("header", CONTINUING)
        self.s.put("header", CONTINUED_AS, event.new_run_id)
        self.finish(RunStatus.COMPLETED, output=None)


def continuation_command(run_id: str, header: dict[str, Any], record: dict[str, Any]) -> Any:
    """The :class:`ContinueAsNew` a continuation ``record`` of run ``run_id`` stands for
    (for a shell redoing it after a crash)."""
    new_id, first, generation = next_run_id(header, run_id)
    link: dict[str, Any] = {CONTINUED_FROM: run_id, CHAIN: first, GENERATION: generation}
    slot = header.get("slot")
    if slot is not None and slot.get("passed"):  # the new run takes this run's slot over
        link["slot"] = {k: v for k, v in slot.items() if k != "passed"}
    return proto.ContinueAsNew(
        new_id, str(record["blueprint_id"]), dict(record.get("inputs") or {}), link
    )


class ContinueInChild(FlowkitError):
    """``flow.continue_as_new`` in a child run (a subflow), which cannot continue as new."""

    def __init__(self, run_id: str, parent: str) -> None:
        self.run_id = run_id
        super().__init__(
            f"run {run_id!r} called flow.continue_as_new(...), but it is a child run of "
            f"{parent!r}: a subflow cannot continue as new (its parent waits for this run); "
            "loop in the parent instead, or start the flow as a run of its own"
        )

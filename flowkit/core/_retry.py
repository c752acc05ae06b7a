"""Retrying a failed run; mixed into ``_machine.Step``.

When a run fails, the work that stood at that moment (dispatches, batches,
timers, waits, child runs — the failed node's among them) is cancelled like
any run's; the core keeps a copy in the run's header (``suspended``). A retry
starts that work again where it stood: node executions with fresh attempts
(attempt 1, a full retry budget) under their old idempotency keys, sleeps and
wait timeouts anew from their full duration, child runs as new child runs.
Nodes that had completed are not run again. Each retry is a *round*: the ids
of what it starts carry it, so nothing left over from an earlier round (a late
completion, a stale timer) is taken for the work of this one.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Final

from . import _protocol as proto
from ._admission import lent_slot

if TYPE_CHECKING:
    from collections import deque

    from ._program import Program
    from ._state import RunState

_STATUS = 4
STANDING: Final = ("dispatches", "batches", "timers", "waits", "children")
"""The sections that hold a run's work in progress."""


def retry_refusal(state: RunState) -> str | None:
    """Why ``state`` cannot be retried, or None if it can."""
    header = state.header
    status = header.get("status")
    if status != "failed":
        return f"it is {status}; only a failed run can be retried"
    if header.get("parent") is not None:
        return f"it is a child run; retry its parent run {header['parent']!r} instead"
    standing = header.get("suspended")
    if standing is None:
        return "it failed before flowkit kept what a retry needs (an older version ran it)"
    node = (header.get("error") or {}).get("node")
    if node is None and not any(standing.values()):
        message = (header.get("error") or {}).get("message", "")
        return f"its failure was not a node's ({message}); a retry would fail the same way"
    return None


class RetrySteps:
    """Keeping and resuming what stood when a run failed (see the module docstring)."""

    p: Program
    s: RunState
    commands: list[proto.Command]
    queue: deque[tuple[str, bool, bool, str | None]]
    buffered_waits: list[tuple[str, dict[str, Any]]]
    failing: list[tuple[str, str, Any]]  # (section, key, record) dropped on the way to failing

    if TYPE_CHECKING:

        def record(self, node_id: str) -> list[Any]: ...
        def fire(self, node_id: str, back: bool, source: str | None) -> None: ...
        def dispatch(
            self,
            node_id: str,
            attempt: int,
            args: tuple[Any, ...],
            kwargs: dict[str, Any],
            *,
            item: int | None = None,
            act: int | None = None,
            round_: int = 0,
            options: dict[str, Any] | None = None,
        ) -> None: ...
        def enter_wait(self, node_id: str, act: int, suffix: str) -> None: ...
        def admitted(self, then: str) -> bool: ...
        def sleep_delay(self, params: dict[str, Any]) -> float: ...
        def note(
            self, type_: str, node_id: str | None, attempt: int | None = None, *, data: Any = None
        ) -> None: ...

    def suspend(self) -> None:
        """Before a failing run's work is cancelled: keep what stands, for a retry."""
        sections = self.s.sections
        standing = {section: dict(sections[section]) for section in STANDING}
        for section, key, record in self.failing:
            standing[section].setdefault(key, record)
        self.s.put("header", "suspended", standing)

    def on_retry(self) -> None:
        if retry_refusal(self.s) is not None:
            return
        if self.admitted("retry"):  # a limited flow's run queues for its slot first
            self.retry_now()

    def retry_now(self) -> None:
        """Resume what stood when the run failed (its slot, if it needs one, is taken)."""
        header = self.s.header
        standing: dict[str, dict[str, Any]] = header["suspended"]
        failed_node = (header.get("error") or {}).get("node")
        round_ = int(header.get("retried", 0)) + 1
        for key in ("suspended", "error", "output"):
            self.s.drop("header", key)
        self.s.put("header", "retried", round_)
        self.s.put("header", "status", "running")
        self.note("workflow:retry", failed_node, data={"round": round_})
        resumed = self.resume(standing, round_)
        if failed_node is not None and failed_node not in resumed:
            self.fire(failed_node, True, None)  # it failed before any of its work stood
        for node_id in resumed:
            self.record(node_id)[_STATUS] = "running"
        if failed_node is not None:
            self.unpoison(failed_node)

    def resume(self, standing: dict[str, dict[str, Any]], round_: int) -> set[str]:
        """Start again what ``standing`` holds; the nodes whose work it was."""
        resumed: set[str] = set()
        for record in standing["dispatches"].values():
            self.resume_dispatch(record, round_)
            resumed.add(record["node"])
        for node_id, batch in standing["batches"].items():
            self.s.put("batches", node_id, batch)
            resumed.add(node_id)
        for timer in standing["timers"].values():
            node_id = timer["node"]
            if timer["purpose"] == "retry":  # a retry was due: it runs now, as attempt 1
                self.resume_dispatch(timer["dispatch"], round_)
            elif timer["purpose"] == "sleep":
                self.resume_sleep(node_id, round_)
            else:
                continue  # a wait's timeout: set again with its wait
            resumed.add(node_id)
        for wait in standing["waits"].values():
            self.enter_wait(wait["node"], int(wait["act"]), f"~{round_}")
            resumed.add(wait["node"])
        for child_id, child in standing["children"].items():
            self.resume_child(child_id, child, round_)
            resumed.add(child["node"])
        return resumed

    def resume_dispatch(self, record: dict[str, Any], round_: int) -> None:
        self.dispatch(
            record["node"],
            1,
            tuple(record["args"]),
            dict(record["kwargs"]),
            item=record.get("item"),
            act=record["act"],
            round_=round_,
            options=record.get("options"),
        )

    def resume_sleep(self, node_id: str, round_: int) -> None:
        delay = self.sleep_delay(self.p.specs[node_id].params)
        timer_id = f"sleep:{node_id}@{self.record(node_id)[0]}~{round_}"
        self.s.put("timers", timer_id, {"node": node_id, "purpose": "sleep"})
        self.note("timer:set", node_id, data={"timer_id": timer_id, "delay": delay})
        self.commands.append(proto.StartTimer(timer_id, node_id, delay, "sleep"))

    def resume_child(self, child_id: str, child: dict[str, Any], round_: int) -> None:
        """A child run cut short (or failed) starts again as a new child run."""
        fresh = f"{child_id.partition('~')[0]}~{round_}"
        record = dict(child)
        self.s.put("children", fresh, record)
        self.commands.append(
            proto.StartChild(
                fresh,
                child["node"],
                str(child["blueprint_id"]),
                child["inputs"],
                lent_slot(self.s.header),
            )
        )

    def unpoison(self, node_id: str) -> None:
        """The failed node's successors wait for it again."""
        nodes = self.s.sections["nodes"]
        for edge in self.p.out[node_id]:
            record = nodes.get(edge.target)
            if not edge.back and record is not None and record[_STATUS] == "poisoned":
                record[_STATUS] = "pending"
                self.s.touch("nodes", edge.target)

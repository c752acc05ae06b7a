"""``RunResult`` and ``RunHandle``: what callers get back from a run."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, Protocol

import anyio
import attrs

from .._detach import detached as detached
from .._errors import (
    Cancelled,
    ChildFailed,
    FlowkitError,
    NodeError,
    ResultTimeout,
    WaitTimeout,
    WorkflowFailed,
)
from ..blueprint._graph import shape_of
from ..blueprint._model import Blueprint
from ..core._state import FINISHED_VALUES, RunStatus

if TYPE_CHECKING:
    from ..core._state import RunState

_STATUS = 4  # index of the status in a node record [activation, arrived, taken, fired, status]
_HOLDING_TIMERS = frozenset({"sleep", "timeout"})  # a retry's backoff timer is not a pause
_ROUTES = frozenset({"true", "false"})  # the labels a branch node routes by
_NEVER = "False"  # the condition of an edge routing never takes (a compiled flow's links)


@attrs.frozen(repr=False)
class RunResult:
    """Where a run stood when this result was taken: ``status``, ``output``,
    ``error``, ``state`` and ``run_id``.

    A result is a snapshot: it never changes after it was returned, whatever
    the run does later, and changing what it hands out (``state``, ``output``,
    ``snapshot()``) never changes the run. ``state`` is the run's flow
    variables and context (what nodes read and write through
    ``flowkit.context().state``) as of that moment. Values are deep-copied
    when first read; one that cannot be copied (a lock, a socket) is shared.

    ``blueprint`` is the graph the run follows, when the shell that produced
    the result attached it; in Jupyter a result renders as that graph with the
    path the run took styled on it (see :meth:`mermaid`). For an awaiting run,
    :attr:`resume_hint` says how to carry it on.
    """

    run_id: str
    status: RunStatus
    error: FlowkitError | None = None
    blueprint_id: str = ""
    blueprint: Blueprint | None = attrs.field(default=None, eq=False)
    resumed_by: str = attrs.field(default="", eq=False)
    # The run's sections at that moment: nobody changes them (a finished run's own,
    # which the core never touches again, or a private copy of a running one's).
    _sections: Mapping[str, Mapping[str, Any]] = attrs.field(factory=dict, alias="sections")
    _copies: dict[str, Any] = attrs.field(factory=dict, init=False, eq=False)

    @classmethod
    def of(
        cls, state: RunState, blueprint: Blueprint | None = None, *, resumed_by: str = ""
    ) -> RunResult:
        """The result of ``state`` as it is now (copied only as far as it may still change).

        ``resumed_by`` names what resumes the run (``"checkout"`` for
        ``checkout.signal(...)``), for :attr:`resume_hint`.
        """
        header = state.header
        return cls(
            run_id=state.run_id,
            status=state.status,
            error=error_from_info(state.run_id, header.get("error")),
            blueprint_id=str(header.get("blueprint", "")),
            blueprint=blueprint,
            resumed_by=resumed_by,
            sections=state.used_sections() if state.finished else detached(state.used_sections()),
        )

    @property
    def state(self) -> dict[str, Any]:
        """The run's flow variables and context when this result was taken."""
        if "state" not in self._copies:
            self._copies["state"] = detached(self._raw_state())
        state: dict[str, Any] = self._copies["state"]
        return state

    @property
    def continued_as(self) -> str | None:
        """The id of the run this one continued as (``flow.continue_as_new``), else None."""
        value = self._sections.get("header", {}).get("continued_as")
        return None if value is None else str(value)

    @property
    def output(self) -> Any:
        """What a completed run returned; ``None`` for any other status."""
        if "output" not in self._copies:
            self._copies["output"] = detached(self._raw_output())
        return self._copies["output"]

    def snapshot(self) -> dict[str, Any]:
        """The run's serialised state, for :meth:`Runtime.resume` without a store.

        Each call returns a new copy.
        """
        sections = {name: values for name, values in self._sections.items() if values}
        return {"run_id": self.run_id, "sections": detached(sections)}

    @property
    def waiting_for(self) -> tuple[str, ...]:
        """The signal names this run's open waits and webhooks listen for, sorted.

        Waits inside a child run are the child's (a signal sent to the parent
        is routed to them all the same).
        """
        return tuple(sorted(self._sections.get("waits", {})))

    @property
    def resume_hint(self) -> str:
        """For an awaiting run, how to carry it on; ``""`` for any other status.

        >>> # (await checkout.run(order_id="A1")).resume_hint
        >>> # "await checkout.signal('3f2a...', 'approval', data)"
        """
        if self.status is not RunStatus.AWAITING:
            return ""
        names = self.waiting_for
        if self.resumed_by:
            call = f"await {self.resumed_by}"
            if names:
                return f"{call}.signal({self.run_id!r}, {names[0]!r}, data)"
            return f"{call}.wait({self.run_id!r})"
        if names:
            return (
                f"deliver {', '.join(map(repr, names))}: await rt.signal({self.run_id!r}, "
                f"{names[0]!r}, data) on the Runtime or Client that runs it"
            )
        if any(d.get("deferred") for d in self._sections.get("dispatches", {}).values()):
            return (
                "a node awaits its completion token: complete it with "
                "complete(token, value) or fail(token, error) on the Runtime or Client"
            )
        return "a timer or a child run holds it: a running scheduler or worker carries it on"

    def path(self) -> dict[str, str]:
        """Node id -> what happened there in this run.

        ``visited``, ``failed``, ``skipped`` (a branch not taken), ``awaiting``
        (a sleep, wait, webhook or child run holds the run there), ``running``,
        or ``cancelled`` (still open when the run ended); nodes the run never
        reached are left out.
        """
        return node_statuses(self._as_snapshot(), self.blueprint)

    def mermaid(self, flow: Any = None) -> str:
        """The run's blueprint as a Mermaid flowchart, its path styled by node status.

        Visited, failed, skipped, awaiting, running, cancelled and unreached
        nodes each get a ``classDef``. ``flow`` (a ``@flow``, ``Flow`` or
        ``Blueprint``) is needed only when no blueprint is attached.
        """
        from ..blueprint._mermaid import run_mermaid

        snapshot = self._as_snapshot()
        bp = checked_blueprint(flow, self.blueprint, snapshot, self.run_id)
        return run_mermaid(bp, node_statuses(snapshot, bp))

    def _repr_mimebundle_(self, include: Any = None, exclude: Any = None) -> dict[str, str]:
        if self.blueprint is None:
            return {"text/plain": repr(self)}
        from ..blueprint._mermaid import run_mimebundle

        return run_mimebundle(self.blueprint, self.path(), repr(self))

    def unwrap(self) -> Any:
        """The output of a completed run; raises the run's error otherwise."""
        if self.status is RunStatus.COMPLETED:
            return self.output
        if self.error is not None:
            raise self.error
        raise WorkflowFailed(self.run_id, f"run is {self.status.value}, not completed")

    def __repr__(self) -> str:
        fields = [
            f"run_id={self.run_id!r}",
            f"status={self.status!r}",
            f"output={self._raw_output()!r}",
            f"error={self.error!r}",
            f"state={self._raw_state()!r}",
            f"blueprint_id={self.blueprint_id!r}",
        ]
        if self.continued_as is not None:
            fields.append(f"continued_as={self.continued_as!r}")
        if self.status is RunStatus.AWAITING:
            fields += [f"waiting_for={self.waiting_for!r}", f"resume_hint={self.resume_hint!r}"]
        return f"RunResult({', '.join(fields)})"

    def _raw_state(self) -> dict[str, Any]:
        context = self._sections.get("context", {})
        return {k: v for k, v in context.items() if not k.startswith("__")}

    def _raw_output(self) -> Any:
        if self.status is not RunStatus.COMPLETED:
            return None
        return self._sections.get("header", {}).get("output")

    def _as_snapshot(self) -> dict[str, Any]:
        """The sections in the shape of :meth:`snapshot`, uncopied: for reading only."""
        return {"run_id": self.run_id, "sections": self._sections}


def node_statuses(
    snapshot: Mapping[str, Any], blueprint: Blueprint | None = None
) -> dict[str, str]:
    """Node id -> status of its latest activation, from a run's snapshot.

    ``visited`` (completed), ``failed``, ``skipped`` (a branch not taken),
    ``awaiting`` (a sleep, wait, webhook, child run or a node's completion token
    holds the run there), ``running`` (executing, or waiting to retry), ``cancelled`` (still open
    when the run ended). Nodes the run never reached are not in the mapping.
    With the ``blueprint``, the ``return`` node that ended a run counts as
    visited even when it raised, so does a loop a completed run left by a
    ``break`` or ``return``, and the nodes of a branch not taken in a
    compiled flow are skipped (see :func:`untaken`).
    """
    sections = snapshot.get("sections", {})
    finished = sections.get("header", {}).get("status") in FINISHED_VALUES
    holding = {w["node"] for w in sections.get("waits", {}).values()}
    holding |= {c["node"] for c in sections.get("children", {}).values()}
    holding |= {d["node"] for d in sections.get("dispatches", {}).values() if d.get("deferred")}
    holding |= {
        t["node"] for t in sections.get("timers", {}).values() if t["purpose"] in _HOLDING_TIMERS
    }
    ended = set(sections.get("outputs", {}))
    if blueprint is not None:
        # a completed run left its open loops by a break or a return, not by a cancel
        completed = sections.get("header", {}).get("status") == RunStatus.COMPLETED.value
        done_kinds = {"return", "loop"} if completed else {"return"}
        ended |= {spec.id for spec in blueprint.nodes if spec.kind in done_kinds}
    statuses: dict[str, str] = {}
    for node_id, record in sections.get("nodes", {}).items():
        status = record[_STATUS]
        if status == "done":
            statuses[node_id] = "visited"
        elif status in ("failed", "skipped", "cancelled"):
            statuses[node_id] = status
        elif status == "running" and finished:
            statuses[node_id] = "visited" if node_id in ended else "cancelled"
        elif status == "running":
            statuses[node_id] = "awaiting" if node_id in holding else "running"
    if blueprint is not None:
        statuses.update(dict.fromkeys(untaken(blueprint, statuses), "skipped"))
    return statuses


def untaken(blueprint: Blueprint, statuses: Mapping[str, str]) -> list[str]:
    """The nodes, not in ``statuses``, that lie on routes the run did not take.

    A compiled flow's nodes join with ``"pass"``: the core drops an arrival
    along an edge not taken instead of skipping its target, as it does in a
    builder graph, so those nodes keep no record. Such a node counts as skipped
    when every way into it is dead: it comes from a skipped node, or from a
    ``branch`` that ran and did not follow that ``true``/``false`` label.
    """
    entries = _entries(blueprint)
    decided = {
        n.id for n in blueprint.nodes if n.kind == "branch" and statuses.get(n.id) == "visited"
    }
    dead = {n for n, status in statuses.items() if status == "skipped"}
    found: list[str] = []
    changed = True
    while changed:
        changed = False
        for node_id, ways_in in entries.items():
            if node_id in statuses or node_id in dead or not ways_in:
                continue
            if all(s in dead or (s in decided and a in _ROUTES) for s, a in ways_in):
                dead.add(node_id)
                found.append(node_id)
                changed = True
    return found


def _entries(blueprint: Blueprint) -> dict[str, list[tuple[str, str | None]]]:
    """Node id -> the ``(source, action)`` ways into it that do not close a loop.

    Those are forward edges routing may take (not the compiler's never-taken
    ``when="False"`` links), and, into an ``except`` handler, each node whose
    failure enters it.
    """
    back = shape_of(blueprint).back_edges
    entries: dict[str, list[tuple[str, str | None]]] = {n.id: [] for n in blueprint.nodes}
    for index, edge in enumerate(blueprint.edges):
        if index not in back and edge.when != _NEVER and edge.target in entries:
            entries[edge.target].append((edge.source, edge.action))
    for spec in blueprint.nodes:
        handler = spec.params.get("on_error")
        if isinstance(handler, str) and handler in entries:
            entries[handler].append((spec.id, None))
    return entries


def checked_blueprint(
    flow: Any, attached: Blueprint | None, snapshot: Mapping[str, Any], run_id: str
) -> Blueprint:
    """``flow``'s blueprint (or the attached one), checked to be the one the run follows."""
    if flow is None:
        if attached is None:
            raise ValueError(
                f"run {run_id!r} has no blueprint attached: pass the flow, e.g. .mermaid(checkout)"
            )
        return attached
    bp = flow if isinstance(flow, Blueprint) else getattr(flow, "blueprint", None)
    if not isinstance(bp, Blueprint):
        raise TypeError(f"expected a @flow, a Flow builder or a Blueprint, got {flow!r}")
    digest = snapshot.get("sections", {}).get("header", {}).get("digest")
    if digest is not None and digest != bp.digest:
        raise ValueError(
            f"run {run_id!r} follows another blueprint than {bp.id!r} v{bp.version}; "
            "pass the flow (and version) the run was started with"
        )
    return bp


def error_from_info(run_id: str, info: dict[str, Any] | None) -> FlowkitError | None:
    """Rebuild a FlowkitError from the plain error record kept in a run's state."""
    if not info:
        return None
    type_ = str(info.get("type", ""))
    message = str(info.get("message", ""))
    if type_ == "flowkit._errors.Cancelled":
        return Cancelled(run_id)
    if type_ == "flowkit._errors.WaitTimeout":
        return WaitTimeout(str(info.get("wait", "")), run_id)
    if type_ == "flowkit._errors.ChildFailed":
        return ChildFailed(str(info.get("child_run_id", "")), message)
    if type_ == "flowkit._errors.WorkflowFailed" or not info.get("node"):
        return WorkflowFailed(run_id, message)
    return NodeError(
        str(info["node"]),
        int(info.get("attempt", 0)),
        message,
        error_type=type_,
        error_mro=info.get("mro", ()),
    )


class Runs(Protocol):
    """What a :class:`RunHandle` needs from whoever runs the run."""

    async def finished(self, run_id: str) -> RunResult: ...

    async def result(self, run_id: str) -> RunResult: ...

    async def cancel(self, run_id: str) -> RunResult: ...


class RunHandle:
    """A started run: ``await handle.result()`` waits; ``await handle.cancel()`` stops it."""

    def __init__(self, runtime: Runs, run_id: str) -> None:
        self._runtime = runtime
        self.run_id = run_id

    async def result(self, timeout: float | None = None) -> RunResult:
        """Wait until the run is completed, failed or cancelled.

        A run that continued as new (``flow.continue_as_new``) is followed along its
        chain: the result is the last run's. Raises :class:`flowkit.ResultTimeout` (a
        ``TimeoutError``) if that takes longer than ``timeout`` seconds; the run goes on.
        """
        run_id = self.run_id
        with anyio.move_on_after(timeout):
            while True:
                result = await self._runtime.finished(run_id)
                if result.continued_as is None:
                    return result
                run_id = result.continued_as
        status = (await self._runtime.result(run_id)).status.value
        detail = (
            f"it is {status}; a sleep, wait or child run holds it (see result().waiting_for), "
            "or its nodes are still running; wait longer or signal it"
        )
        raise ResultTimeout(run_id, status, float(timeout or 0), detail)

    async def status(self) -> RunStatus:
        return (await self._runtime.result(self.run_id)).status

    async def cancel(self) -> RunResult:
        """Cancel the run: in-flight nodes are cancelled and the run ends ``cancelled``."""
        return await self._runtime.cancel(self.run_id)

    def __repr__(self) -> str:
        return f"RunHandle(run_id={self.run_id!r})"

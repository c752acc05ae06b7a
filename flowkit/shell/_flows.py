"""The flows a shell can run, and what every shell asks of them: which flow a stored run
follows, which flow a child run starts, and which run a signal is for."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .._errors import ConfigurationError, ResumeError
from ..core import _protocol as p
from ..core._machine import wait_names
from ..core._patches import continuation_problems
from ._durable import unknown_digest
from ._target import Target, resolve

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable, Iterable, Mapping

    from ..core._state import RunState


class Flows:
    """Flows by blueprint digest (the version a run was started with) and by blueprint id
    (what a parent's ``StartChild`` names); subflows are registered with their parents."""

    def __init__(
        self, flows: Iterable[Any] = (), *, on_add: Callable[[Target], None] | None = None
    ):
        self.by_digest: dict[str, Target] = {}
        self.by_blueprint_id: dict[str, Target] = {}
        self._sources: dict[str, Any] = {}  # blueprint id -> what the user registered
        self._resolved: dict[int, tuple[Any, Target]] = {}  # id(flow) -> (flow, target)
        self._newest: dict[str, tuple[int, Any]] = {}  # blueprint id -> (version, flow)
        self._on_add = on_add
        for flow in flows:
            self.add(flow)

    def add(self, flow: Any, registry: Mapping[str, Any] | None = None) -> Target:
        """The flow's target, resolved once per flow object (and ``registry``)."""
        if isinstance(flow, Target):
            target = flow
        else:
            cached = self._resolved.get(id(flow)) if registry is None else None
            if cached is not None and cached[0] is flow:
                return cached[1]
            target = resolve(flow, registry)
            self._resolved[id(flow)] = (flow, target)  # holding flow keeps its id
        if self._on_add is not None:
            self._on_add(target)
        self.by_digest[target.blueprint.digest] = target
        self.by_blueprint_id.setdefault(target.blueprint.id, target)
        self._sources.setdefault(target.blueprint.id, flow)
        newest = self._newest.get(target.blueprint.id)
        if newest is None or target.blueprint.version > newest[0]:
            self._newest[target.blueprint.id] = (target.blueprint.version, flow)
        for child in target.children:
            self.add(child)
        return target

    def source(self, blueprint_id: str) -> Any:
        """What the user registered for ``blueprint_id`` (a @flow function, a builder)."""
        return self._sources.get(blueprint_id)

    def registered(self, flow: Any, *, hint: str) -> Any:
        """``flow`` itself, or for a name (a flow's id, as ``flowkit flows list`` shows it)
        the flow registered under it, its newest version; a
        :class:`~flowkit.ConfigurationError` lists the known flows, and ``hint`` says
        where to register one, if none is."""
        if not isinstance(flow, str):
            return flow
        newest = self._newest.get(flow)
        if newest is None:
            known = ", ".join(self.known()) or "none"
            raise ConfigurationError(
                f"no flow named {flow!r} is known here (known flows: {known}); check the "
                f"name, or {hint}"
            )
        return newest[1]

    def known(self) -> list[str]:
        return sorted({f"{t.blueprint.id} v{t.blueprint.version}" for t in self.by_digest.values()})

    def of_state(self, state: RunState) -> Target:
        """The flow a stored run follows (``ResumeError`` saying how to register it): the
        blueprint that started it, else a patched version of it that can continue it."""
        target = self.find(state)
        if target is None:
            raise unknown_digest(state, self.known(), self.why_not_patched(state))
        return target

    def find(self, state: RunState) -> Target | None:
        """:meth:`of_state`, or ``None`` when no registered flow can go on with the run."""
        target = self.by_digest.get(str(state.header.get("digest", "")))
        if target is not None:
            return target
        return next(
            (t for t in self._versions(state) if not continuation_problems(t.program, state)), None
        )

    def _versions(self, state: RunState) -> list[Target]:
        """The registered versions of the run's flow, newest first."""
        flow_id = state.header.get("blueprint")
        same = [t for t in self.by_digest.values() if t.blueprint.id == flow_id]
        return sorted(same, key=lambda t: -t.blueprint.version)

    def why_not_patched(self, state: RunState) -> list[str]:
        """Why each registered patched version of the run's flow cannot continue it."""
        return [
            f"{t.blueprint.id} v{t.blueprint.version}: {'; '.join(problems)}"
            for t in self._versions(state)
            if t.program.patches and (problems := continuation_problems(t.program, state))
        ]

    def child(self, command: p.StartChild, hint: str) -> Target | p.ChildFinished:
        """The flow of a child run, or the event that fails the parent's subflow node
        when it is not registered here (``hint`` says where to register it)."""
        target = self.by_blueprint_id.get(command.blueprint_id)
        if target is not None:
            return target
        error = {
            "type": "flowkit._errors.ResumeError",
            "mro": ["flowkit._errors.ResumeError"],
            "message": f"no flow with blueprint id {command.blueprint_id!r} is known here "
            f"(known: {sorted(self.by_blueprint_id)}); {hint}",
        }
        return p.ChildFinished(command.child_run_id, "failed", None, error)


async def route_signal(
    run_id: str, name: str, state_of: Callable[[str], Awaitable[tuple[RunState, Target]]]
) -> str:
    """The run (``run_id`` or a descendant) whose wait ``name`` a signal should reach.

    A run waiting for ``name`` now gets it (the run itself first, then its
    children, depth first); otherwise the run itself, if its flow has such a
    wait (the core buffers the signal until the wait is reached).
    """
    state, target = await state_of(run_id)
    if name in state.sections["waits"]:
        return run_id
    for child_id in list(state.sections["children"]):
        try:
            found = await route_signal(child_id, name, state_of)
        except ResumeError:
            continue  # a child without such a wait
        if name in (await state_of(found))[0].sections["waits"]:
            return found
    declared = wait_names(target.program)
    if name in declared:
        return run_id
    raise ResumeError(
        f"run {run_id!r} has no wait named {name!r}; its waits are {sorted(declared) or 'none'}"
    )


def refuse_unknown_wait(target: Target, name: str) -> None:
    """Raise a :class:`~flowkit.ResumeError` unless the flow itself waits for ``name``
    somewhere (signal-with-start buffers the signal in the new run, for that wait)."""
    declared = wait_names(target.program)
    if name not in declared:
        raise ResumeError(
            f"flow {target.blueprint.id!r} has no wait named {name!r}; its waits are "
            f"{sorted(declared) or 'none'} (signal_with_start signals a wait of the flow "
            "itself, not one of its subflows)"
        )

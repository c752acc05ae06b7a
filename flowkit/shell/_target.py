"""Resolving what users run (a FlowDef, a Flow builder, a Blueprint) into a program."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import attrs

from .._errors import BlueprintError, FlowkitError
from ..blueprint._lint import LintIssue
from ..blueprint._model import Blueprint
from ..core._program import Evaluator, Program
from ._inputs import check_json_inputs
from ._invoke import Invoker, make_invoker

if TYPE_CHECKING:
    from collections.abc import Mapping


@attrs.define
class Target:
    """A runnable blueprint: its program, node invokers and the child flows it may start."""

    program: Program
    invokers: dict[str, Invoker]
    fallbacks: dict[str, Invoker]
    children: tuple[Any, ...] = ()
    binder: Any = None  # FlowDef.bind_inputs: inputs -> parameters, defaults applied
    checker: Any = None  # FlowDef.check_inputs: raises InvalidInputs
    queries: Any = None  # FlowDef.queries: name -> handler of the run's variables
    updates: Any = None  # FlowDef.updates: name -> shell._handlers.Update
    # whether a node has a concurrency or rate limit; found on first use (_limits.limited)
    limited: bool | None = attrs.field(default=None, init=False, eq=False, repr=False)

    @property
    def blueprint(self) -> Blueprint:
        return self.program.blueprint

    def bind(self, inputs: dict[str, Any]) -> dict[str, Any]:
        """The run's inputs as the flow declares them (``InvalidInputs`` if some are
        missing or unknown)."""
        return dict(self.binder(inputs)) if self.binder is not None else inputs

    def check(self, inputs: dict[str, Any]) -> None:
        """Raise :class:`~flowkit.InvalidInputs` unless ``inputs`` fit the flow: its
        signature and declared types, or (without a signature) JSON alone."""
        if self.checker is not None:
            self.checker(inputs)
        else:
            check_json_inputs(self.blueprint.id, inputs)


def runnable(value: Any) -> bool:
    """Whether ``value`` is a @flow function or a ``Flow`` builder (what :func:`resolve`
    takes without a registry)."""
    return hasattr(value, "registry") and (hasattr(value, "blueprint") or hasattr(value, "build"))


def resolve(target: Any, registry: Mapping[str, Any] | None = None) -> Target:
    """Build a :class:`Target` for a FlowDef, a ``Flow`` builder or a ``Blueprint``."""
    evaluator: Evaluator | None = getattr(target, "evaluator", None)
    children: tuple[Any, ...] = tuple(getattr(target, "children", ()) or ())
    if isinstance(target, Blueprint):
        bp = target
        reg: Mapping[str, Any] = registry or {}
    elif runnable(target):
        bp = target.blueprint if hasattr(target, "blueprint") else target.build()
        reg = {**target.registry, **(registry or {})}
    else:
        raise TypeError(
            f"cannot run {target!r}: pass a @flow function, a flowkit.Flow builder, "
            "or a flowkit.Blueprint (with registry=...)"
        )
    missing = [
        n.id
        for n in bp.nodes
        if n.kind == "call"
        and (n.uses not in reg or (n.config.fallback and n.config.fallback not in reg))
    ]
    if missing:
        issues = [
            LintIssue(
                "missing-implementation",
                m,
                f"no implementation registered for node {m!r}; pass registry={{name: callable}}",
            )
            for m in missing
        ]
        raise BlueprintError(bp.id, issues)
    program = Program(bp, reg, evaluator=evaluator)
    invokers: dict[str, Invoker] = {}
    fallbacks: dict[str, Invoker] = {}
    for spec in bp.nodes:
        if spec.kind != "call" or spec.uses is None:
            continue
        try:
            if spec.uses not in invokers:
                invokers[spec.uses] = make_invoker(reg[spec.uses])
            fallback = spec.config.fallback
            if fallback and fallback not in fallbacks:
                fallbacks[fallback] = make_invoker(reg[fallback])
        except TypeError as exc:
            raise FlowkitError(f"node {spec.id!r}: {exc}") from exc
    return Target(
        program,
        invokers,
        fallbacks,
        children,
        getattr(target, "bind_inputs", None),
        getattr(target, "check_inputs", None),
        getattr(target, "queries", None),
        getattr(target, "updates", None),
    )

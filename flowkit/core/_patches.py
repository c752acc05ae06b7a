"""Whether a run started by one version of a flow can go on under another.

A flow that uses ``flow.patched`` keeps the code older runs follow, so such a
run may continue on it instead of on the exact blueprint that started it. That
is safe when the new blueprint knows every patch the run recorded at its start,
did not drop (``flow.deprecate_patch``) the old code of a patch the run lacks,
and has every node the run is parked in.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ..blueprint._diff import run_positions

if TYPE_CHECKING:
    from collections.abc import Mapping

    from ._program import Program
    from ._state import RunState


def run_patches(state: RunState) -> frozenset[str]:
    """The patch ids the run recorded at its start."""
    return frozenset(state.header.get("patches", ()))


def continuation_problems(program: Program, state: RunState) -> list[str]:
    """Why ``program`` cannot continue the run in ``state`` (empty: it can)."""
    if not program.patches:
        return ["it does not use flow.patched"]
    problems = patch_problems(program.blueprint.metadata, state)
    missing = sorted(_parked(state) - set(program.specs))
    problems += [f"the run is parked in node {n!r}, which this code lacks" for n in missing]
    return problems


def patch_problems(metadata: Mapping[str, Any], state: RunState) -> list[str]:
    """Why code with blueprint ``metadata`` cannot take the run's patches: it lacks one
    the run recorded, or deprecated one the run lacks."""
    recorded = run_patches(state)
    known = metadata.get("patches") or ()
    problems = [
        f"the run started with patch {patch!r}, which this code does not know"
        for patch in sorted(recorded - set(known))
    ]
    deprecated = metadata.get("deprecated_patches") or ()
    problems += [
        f"the run started before patch {patch!r}, whose old code flow.deprecate_patch removed"
        for patch in deprecated
        if patch not in recorded
    ]
    return problems


def _parked(state: RunState) -> set[str]:
    """The nodes the run has work in (waits, dispatches, timers, children, loops, batches)."""
    return {position.node for position in run_positions(state.sections)}

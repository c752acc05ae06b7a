"""Moving a run to another version of its flow: the check, and the rewrite of its state.

A run may move when every position it stands at (see
:func:`flowkit.blueprint._diff.run_positions`) is, in the new blueprint, a node
of the same kind (after renaming node ids by the caller's ``mapping``), and the
new code can take the patches the run recorded. The rewrite renames node ids in
every section that names them and points the header at the new blueprint.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ..blueprint._diff import PositionCheck, check_positions, run_positions
from ._patches import patch_problems

if TYPE_CHECKING:
    from collections.abc import Mapping

    from ..blueprint import Blueprint
    from ._state import RunState

_KEYED = ("outputs", "nodes", "loops", "batches")  # sections keyed by node id
_NAMING = ("dispatches", "timers", "waits", "children")  # records with a "node"
_FIRED = 3  # a node record's slot naming the predecessor that won an ``any`` race


def migration_checks(
    state: RunState,
    new: Blueprint,
    mapping: Mapping[str, str],
    old: Blueprint | None = None,
) -> list[PositionCheck]:
    """Each of the run's positions, checked against ``new`` (``old``: the blueprint the
    run started with, when known, to compare node kinds exactly)."""
    return check_positions(run_positions(state.sections), new, old=old, mapping=mapping)


def migration_problems(
    state: RunState,
    new: Blueprint,
    mapping: Mapping[str, str],
    old: Blueprint | None = None,
) -> list[str]:
    """Why the run cannot move to ``new`` (empty: it can)."""
    problems = []
    if state.finished:
        problems.append(f"the run has finished ({state.status.value})")
    unknown = sorted(set(mapping.values()) - {n.id for n in new.nodes})
    problems += [f"the map names node {n!r}, which the new version lacks" for n in unknown]
    if old is not None:
        stray = sorted(set(mapping) - {n.id for n in old.nodes})
        problems += [f"the map names node {n!r}, which the run's version lacks" for n in stray]
    problems += patch_problems(new.metadata, state)
    checks = migration_checks(state, new, mapping, old)
    return problems + [c.problem for c in checks if c.problem is not None]


def migrate_state(state: RunState, new: Blueprint, mapping: Mapping[str, str]) -> None:
    """Point the run at ``new``, renaming node ids by ``mapping`` (journaled, so the
    store gets the change as a delta)."""
    renames = {old: new_id for old, new_id in mapping.items() if old != new_id}
    for section in _KEYED:
        _rekey(state, section, renames)
    for section in _NAMING:
        for key, record in list(state.sections[section].items()):
            if isinstance(record, dict) and record.get("node") in renames:
                state.put(section, key, {**record, "node": renames[record["node"]]})
    for key, record in list(state.sections["nodes"].items()):
        if isinstance(record, list) and len(record) > _FIRED and record[_FIRED] in renames:
            fixed: list[Any] = list(record)
            fixed[_FIRED] = renames[record[_FIRED]]
            state.put("nodes", key, fixed)
    state.put("header", "digest", new.digest)
    state.put("header", "blueprint", new.id)


def _rekey(state: RunState, section: str, renames: Mapping[str, str]) -> None:
    values = state.sections[section]
    moved = {key: values[key] for key in renames if key in values}
    for key in moved:
        state.drop(section, key)
    for key, value in moved.items():
        state.put(section, renames[key], value)

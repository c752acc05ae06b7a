"""Migrating a stored run to another version of its flow, under the run's lock."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .. import _clock as clock
from .._errors import ConfigurationError, MigrationRefused, ResumeError
from ..core._migrate import migrate_state, migration_problems
from ._history import _entry, options_of

if TYPE_CHECKING:
    from collections.abc import Mapping

    from ..core._state import RunState
    from ._flows import Flows
    from ._target import Target


def check_map(mapping: Mapping[str, str] | None) -> dict[str, str]:
    """``map=`` as a plain dict of node ids, or a :class:`~flowkit.ConfigurationError`."""
    if mapping is None:
        return {}
    if not hasattr(mapping, "items") or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in mapping.items()
    ):
        raise ConfigurationError(
            f"migrate(map=...) takes a mapping of old node id to new node id (str to str), "
            f"got {mapping!r}"
        )
    return dict(mapping)


def refuse_or_rewrite(
    state: RunState, to: Target, mapping: Mapping[str, str], flows: Flows
) -> dict[str, Any]:
    """Check the run against ``to`` (raising :class:`~flowkit.MigrationRefused`) and rewrite
    it; the ``run.migrated`` event's fields."""
    old_digest = str(state.header.get("digest", ""))
    old = flows.by_digest.get(old_digest)
    new = to.blueprint
    problems = migration_problems(state, new, mapping, old.blueprint if old else None)
    if problems:
        raise MigrationRefused(state.run_id, f"{new.id} v{new.version}", problems)
    migrate_state(state, new, mapping)
    return {"from": old_digest, "to": new.digest, "flow": new.id, "map": dict(mapping)}


async def migrate_stored(
    store: Any, run_id: str, to: Target, mapping: Mapping[str, str], flows: Flows
) -> RunState:
    """Migrate the stored run in one transaction: checked and rewritten as the store holds
    it, committed with its new digest and a ``run.migrated`` history event."""
    async with store.transaction(run_id) as txn:
        state: RunState | None = await txn.load() if txn.version else None
        if state is None:
            raise ResumeError(f"unknown run {run_id!r}: it is not in {store!r}")
        state.journal.clear()
        if state.header.get("digest") == to.blueprint.digest:
            return state  # on that version already (a try that went through before)
        fields = refuse_or_rewrite(state, to, mapping, flows)
        delta = state.take_delta()
        now = clock.now()
        options = options_of(store)
        history = (
            [_entry(now, "run.migrated", None, None, None, fields, options.max_payload, "", None)]
            if options is not None
            else []
        )
        info = {"digest": to.blueprint.digest, "blueprint_id": to.blueprint.id, "at": now}
        await txn.commit(delta, info=info, state=state, history=history)
    return state

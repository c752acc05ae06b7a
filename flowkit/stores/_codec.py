"""Deltas and states as JSON, shared by every persistent store."""

from __future__ import annotations

import json
from typing import Any

from .._errors import StoreError
from .._serde import to_data
from ..core._state import DELETED, Delta, RunState


def encode_delta(delta: Delta) -> str:
    """``[[section, key, value], [section, key]]``: a two-element entry is a deletion."""
    entries: list[list[Any]] = []
    for section, key, value in delta:
        if value is DELETED:
            entries.append([section, key])
        else:
            entries.append([section, key, to_data(value)])
    return json.dumps(entries, separators=(",", ":"), ensure_ascii=False)


def decode_delta(text: str | bytes) -> Delta:
    try:
        entries = json.loads(text)
        return [(e[0], e[1], e[2] if len(e) == 3 else DELETED) for e in entries]
    except (ValueError, TypeError, LookupError, RecursionError) as exc:
        raise StoreError(f"corrupt delta in store: {exc}") from exc


def encode_state(state: RunState) -> str:
    return json.dumps(to_data(state.to_dict()), separators=(",", ":"), ensure_ascii=False)


def decode_state(text: str | bytes) -> RunState:
    try:
        return RunState.from_dict(json.loads(text))
    except (ValueError, LookupError, TypeError, RecursionError) as exc:
        raise StoreError(f"corrupt snapshot in store: {exc}") from exc


def replay(snapshot: RunState, deltas: list[Delta]) -> RunState:
    for delta in deltas:
        snapshot.apply_delta(delta)
    snapshot.journal.clear()
    return snapshot

"""Run history in the stores: what a commit appends, what ``history`` reads back.

A run's history is an append-only list of timestamped events, numbered from 1 by
``seq`` within the run. The shells derive the events of a transition (see
``flowkit.shell._history``) and hand them to the store's commit, which writes them
in the same transaction as the state change they describe: a commit that does not
happen writes no history. Each store keeps a ``next_seq`` counter in the run's row
(SQL) or hash (Redis), moved in the statement or script that moves the run's
version, so numbering an event never costs a lookup.

Here: the entry a commit takes (:class:`HistoryEntry`, its data already JSON and
bounded), the event a read returns (:class:`HistoryEvent`), the stores' history
options and the decoding they share.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any, NamedTuple

import attrs

from .._errors import ConfigurationError, StoreError

if TYPE_CHECKING:
    from collections.abc import Sequence

DEFAULT_PAYLOAD = 2048
"""How many characters of JSON a history event's payload (inputs, signal data,
output, error) keeps by default; a longer one is cut and marked ``truncated``."""
MIN_PAYLOAD = 128
"""The smallest payload bound a store accepts."""


class HistoryEntry(NamedTuple):
    """One event as a commit takes it: ``data`` is JSON text, already bounded."""

    at: float
    kind: str
    node_id: str | None
    attempt: int | None
    worker: str | None
    data: str


@attrs.frozen
class HistoryEvent:
    """One event of a run's history, as ``history(run_id)`` returns it.

    ``seq`` numbers the run's events from 1 in the order they were committed;
    ``at`` is unix seconds on the clock of the process that took it (virtual time
    under the simulator). ``kind`` says what happened (``run.started``,
    ``node.scheduled``, ``node.started``, ``node.completed``, ``node.failed``,
    ``node.timed_out``, ``node.retried``, ``node.cancelled``, ``node.deferred``,
    ``node.heartbeat``, ``timer.set``,
    ``timer.fired``, ``wait.entered``, ``signal.received``, ``child.started``,
    ``child.finished``, ``run.completed``, ``run.failed``, ``run.cancelled``...);
    ``node_id``, ``attempt`` and ``worker`` (who ran the node) where they apply;
    ``data`` the rest. A payload longer than the store's bound is replaced by
    ``{"truncated": true, "size": <characters of its JSON>, "preview": <its start>}``.
    """

    seq: int
    at: float
    kind: str
    node_id: str | None
    attempt: int | None
    worker: str | None
    data: dict[str, Any]


@attrs.frozen
class HistoryOptions:
    """Whether a store keeps run history, and how long an event's payload may be."""

    enabled: bool = True
    max_payload: int = DEFAULT_PAYLOAD


def history_options(owner: str, history: bool, history_payload: int) -> HistoryOptions:
    """The checked ``history=`` and ``history_payload=`` of a store's constructor."""
    if not isinstance(history, bool):
        raise ConfigurationError(f"{owner}: history must be True or False, got {history!r}")
    if (
        isinstance(history_payload, bool)
        or not isinstance(history_payload, int)
        or history_payload < MIN_PAYLOAD
    ):
        raise ConfigurationError(
            f"{owner}: history_payload must be a whole number of characters, at least "
            f"{MIN_PAYLOAD}, got {history_payload!r}"
        )
    return HistoryOptions(history, history_payload)


def event(seq: int, entry: Sequence[Any]) -> HistoryEvent:
    """The event numbered ``seq`` from a stored ``(at, kind, node_id, attempt, worker,
    data)`` row (data as JSON text, or decoded already)."""
    at, kind, node_id, attempt, worker, data = entry
    try:
        decoded = json.loads(data) if isinstance(data, str | bytes) else data
    except (ValueError, TypeError, RecursionError) as exc:
        raise StoreError(f"corrupt history event in store: {exc}") from exc
    if not isinstance(decoded, dict):
        raise StoreError(f"corrupt history event in store: {str(data)[:60]!r}")
    return HistoryEvent(
        int(seq),
        float(at),
        str(kind),
        None if node_id is None else str(node_id),
        None if attempt is None else int(attempt),
        None if worker is None else str(worker),
        decoded,
    )


def check_read(after: int, limit: int | None) -> tuple[int, int | None]:
    """``history``'s ``after`` and ``limit`` arguments, checked."""
    if isinstance(after, bool) or not isinstance(after, int) or after < 0:
        raise ConfigurationError(f"history: after must be a seq (an int >= 0), got {after!r}")
    if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int) or limit < 1):
        raise ConfigurationError(f"history: limit must be an int >= 1 or None, got {limit!r}")
    return after, limit


_STRING = getattr(json.encoder, "c_encode_basestring", None) or json.encoder.py_encode_basestring


def as_json(entries: Sequence[HistoryEntry]) -> str:
    """The entries as one JSON array of ``[at, kind, node_id, attempt, worker, data]``
    (data embedded as it is), which PostgreSQL unpacks with ``json_array_elements``:
    one text parameter costs the client far less than six arrays."""
    return "[" + ",".join(map(_as_json, entries)) + "]"


def _as_json(entry: HistoryEntry) -> str:
    at, kind, node_id, attempt, worker, data = entry
    node = "null" if node_id is None else _STRING(node_id)
    number = "null" if attempt is None else str(int(attempt))
    who = "null" if worker is None else _STRING(worker)
    return f"[{float(at)!r},{_STRING(kind)},{node},{number},{who},{data}]"

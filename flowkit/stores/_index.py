"""The run index every store keeps beside its runs: what ``list_runs`` filters on.

Each run is indexed by its flow (blueprint id), status, parent, tags and wall-clock
times. The shells stamp the times (``flowkit._clock.now()``, so virtual time under
the simulator): ``created_at`` on ``create_run``, and on every commit the ``info``
key ``"at"`` (the run's ``updated_at``; its ``finished_at`` too on the commit that
gives it a final status) and, for a failed run, ``"error"``, its ``(type, message)``.
A store writes them in the same transaction as the state change they describe.

Here: the checks of ``list_runs``' arguments and of tags (each a
:class:`~flowkit.ConfigurationError` naming the argument), the opaque keyset
cursor, and the split of a commit's ``info`` into header columns and that stamp.
"""

from __future__ import annotations

import base64
import binascii
import json
import math
from collections.abc import Collection, Mapping, Sequence
from typing import TYPE_CHECKING, Any

import attrs

from .. import _clock as clock
from .._errors import ConfigurationError, StoreError
from ..core._state import FINISHED_VALUES, RunStatus
from ._protocol import RunPage, RunSummary

if TYPE_CHECKING:
    from ..core._state import RunState

MAX_LIMIT = 1000
"""The most runs one page of ``list_runs`` holds."""
MAX_TAGS = 64
"""The most tags a run has."""
MAX_TAG_LENGTH = 256
"""The longest tag key or value, in characters."""
STATUSES = frozenset(status.value for status in RunStatus)
HEADER_COLUMNS = frozenset({"status", "blueprint_id", "digest", "parent"})
"""The ``info`` keys of a commit that set the run's header (the others stamp it)."""
STAMP_KEYS = frozenset({"at", "error"})


def check_tags(tags: Mapping[str, str] | None, *, where: str = "tags") -> dict[str, str]:
    """``tags`` as a plain dict, or a :class:`~flowkit.ConfigurationError` naming the bad tag:
    string keys (not empty) and values, each at most :data:`MAX_TAG_LENGTH` characters, at
    most :data:`MAX_TAGS` of them."""
    if tags is None:
        return {}
    if not isinstance(tags, Mapping):
        raise ConfigurationError(
            f"{where} must be a mapping of str to str, got {type(tags).__name__}"
        )
    if len(tags) > MAX_TAGS:
        raise ConfigurationError(f"{where}: at most {MAX_TAGS} tags, got {len(tags)}")
    checked: dict[str, str] = {}
    for key, value in tags.items():
        if not isinstance(key, str) or not key:
            raise ConfigurationError(f"{where}: tag key {key!r} must be a non-empty str")
        if not isinstance(value, str):
            raise ConfigurationError(
                f"{where}: tag {key!r} must have a str value, got {type(value).__name__}"
            )
        if len(key) > MAX_TAG_LENGTH or len(value) > MAX_TAG_LENGTH:
            raise ConfigurationError(
                f"{where}: tag {key[:40]!r} is too long (keys and values take at most "
                f"{MAX_TAG_LENGTH} characters)"
            )
        checked[key] = value
    return checked


# -- list_runs' arguments -----------------------------------------------------------------
@attrs.frozen
class RunQuery:
    """The checked arguments of one ``list_runs`` call."""

    flow: str | None
    statuses: tuple[str, ...] | None  # any of these (sorted); None: any status
    tags: dict[str, str]
    created_after: float | None  # inclusive
    created_before: float | None  # exclusive
    parent: str | None
    limit: int
    after: tuple[float, str] | None  # the cursor: runs strictly older than this key

    def matches(self, run: RunSummary) -> bool:
        """Whether ``run`` passes every filter and comes after the cursor."""
        key = (run.created_at, run.run_id)
        return (
            (self.flow is None or run.flow == self.flow)
            and (self.statuses is None or run.status in self.statuses)
            and (self.parent is None or run.parent == self.parent)
            and all(run.tags.get(k) == v for k, v in self.tags.items())
            and (self.created_after is None or run.created_at >= self.created_after)
            and (self.created_before is None or run.created_at < self.created_before)
            and (self.after is None or key < self.after)
        )

    def page(self, rows: list[RunSummary]) -> RunPage:
        """The page of ``rows``, the matching runs newest first, up to ``limit + 1`` of
        them (one more than the page holds says that there is a next page)."""
        runs = rows[: self.limit]
        more = len(rows) > self.limit
        return RunPage(runs, encode_cursor(runs[-1].created_at, runs[-1].run_id) if more else None)


def run_query(
    *,
    flow: str | None = None,
    status: str | Collection[str] | None = None,
    tags: Mapping[str, str] | None = None,
    created_after: float | None = None,
    created_before: float | None = None,
    parent: str | None = None,
    limit: int = 50,
    cursor: str | None = None,
) -> RunQuery:
    """Check ``list_runs``' arguments; a :class:`~flowkit.ConfigurationError` names a bad one."""
    for name, value in (("flow", flow), ("parent", parent)):
        if value is not None and not isinstance(value, str):
            raise ConfigurationError(
                f"list_runs: {name} must be a str or None, got {type(value).__name__}"
            )
    return RunQuery(
        flow,
        _statuses(status),
        check_tags(tags, where="list_runs: tags"),
        _time("created_after", created_after),
        _time("created_before", created_before),
        parent,
        _limit(limit, "list_runs"),
        None if cursor is None else decode_cursor(cursor),
    )


def _statuses(
    status: str | Collection[str] | None, where: str = "list_runs"
) -> tuple[str, ...] | None:
    if status is None:
        return None
    wanted = [status] if isinstance(status, str) else status
    if not isinstance(wanted, Collection) or isinstance(wanted, Mapping):
        raise ConfigurationError(
            f"{where}: status must be a run status or a collection of them, got {status!r}"
        )
    found = set()
    for value in wanted:
        if value not in STATUSES:
            raise ConfigurationError(
                f"{where}: status {value!r} is not a run status "
                f"(one of: {', '.join(sorted(STATUSES))})"
            )
        found.add(str(value))
    if not found:
        raise ConfigurationError(
            f"{where}: status is an empty collection, which no run matches; "
            "pass None for runs of any status"
        )
    return tuple(sorted(found))


def _limit(limit: int, where: str) -> int:
    if isinstance(limit, bool) or not isinstance(limit, int) or not 1 <= limit <= MAX_LIMIT:
        raise ConfigurationError(
            f"{where}: limit must be an int from 1 to {MAX_LIMIT}, got {limit!r}"
        )
    return limit


def _time(name: str, value: float | None, where: str = "list_runs") -> float | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise ConfigurationError(
            f"{where}: {name} must be unix seconds (a finite number) or None, got {value!r}"
        )
    return float(value)


# -- purging ------------------------------------------------------------------------------
@attrs.frozen
class PurgeQuery:
    """Checked arguments of a store's ``purge``."""

    before: float  # runs that finished before this (unix seconds)
    statuses: tuple[str, ...]  # final statuses only (sorted)
    limit: int

    def matches(self, run: RunSummary) -> bool:
        ended = run.finished_at if run.finished_at is not None else run.updated_at
        return run.status in self.statuses and run.created_at < self.before and ended < self.before


def purge_query(
    *, finished_before: float, status: str | Collection[str] | None, limit: int
) -> PurgeQuery:
    """Check ``purge``'s arguments; a :class:`~flowkit.ConfigurationError` names a bad one.
    Only finished runs are ever purged: a status that is not final is refused."""
    before = _time("finished_before", finished_before, "purge")
    if before is None:
        raise ConfigurationError("purge: finished_before is required (unix seconds)")
    statuses = _statuses(status, "purge") or tuple(sorted(FINISHED_VALUES))
    unfinished = sorted(set(statuses) - FINISHED_VALUES)
    if unfinished:
        raise ConfigurationError(
            f"purge: status {unfinished[0]!r} is not final; purge deletes finished runs only "
            f"(status one of: {', '.join(sorted(FINISHED_VALUES))})"
        )
    return PurgeQuery(before, statuses, _limit(limit, "purge"))


# -- the cursor ---------------------------------------------------------------------------
def encode_cursor(created_at: float, run_id: str) -> str:
    """The cursor after the run keyed ``(created_at, run_id)``: URL-safe base64 of JSON."""
    raw = json.dumps([float(created_at), run_id], separators=(",", ":"), ensure_ascii=False)
    return base64.urlsafe_b64encode(raw.encode()).decode().rstrip("=")


def decode_cursor(cursor: str) -> tuple[float, str]:
    """The ``(created_at, run_id)`` of a cursor from :func:`encode_cursor`."""
    try:
        if not isinstance(cursor, str) or not cursor:
            raise ValueError("not a non-empty str")
        raw = base64.b64decode(cursor + "=" * (-len(cursor) % 4), altchars=b"-_", validate=True)
        created_at, run_id = json.loads(raw)
        if isinstance(created_at, bool) or not isinstance(created_at, int | float):
            raise ValueError("no time")
        if not math.isfinite(created_at) or not isinstance(run_id, str):
            raise ValueError("no run id")
    except (ValueError, TypeError, binascii.Error, RecursionError) as exc:
        raise ConfigurationError(
            f"list_runs: cursor {str(cursor)[:60]!r} is not a cursor list_runs returned "
            f"({exc}); pass the RunPage.cursor of the previous page, or None for the first"
        ) from None
    return float(created_at), run_id


# -- what a create and a commit write into the index ---------------------------------------
@attrs.frozen
class Stamp:
    """What one commit writes into the run's index besides its header columns."""

    at: float
    finishing: bool  # the commit gives the run a final status: finished_at, if not yet set
    error: tuple[str, str] | None  # (type, message) of a failed run's error
    reopening: bool = False  # a status not final (a retried run): no finished_at, no error


def split_info(info: dict[str, Any] | None) -> tuple[dict[str, Any], Stamp]:
    """A commit's ``info`` as the header columns it sets and its :class:`Stamp`; a
    :class:`~flowkit.StoreError` for a key no store takes."""
    info = info or {}
    for key in info:
        if key not in HEADER_COLUMNS and key not in STAMP_KEYS:
            raise StoreError(
                f"cannot set {key!r} on a run: info takes {sorted(HEADER_COLUMNS | STAMP_KEYS)}"
            )
    columns = {key: value for key, value in info.items() if key in HEADER_COLUMNS}
    at = info.get("at")
    error = info.get("error")
    if error is not None:
        if not isinstance(error, tuple | list) or len(error) != 2:
            raise StoreError(f"a commit's info['error'] is a (type, message) pair, got {error!r}")
        error = (str(error[0]), str(error[1]))
    status = info.get("status")
    return columns, Stamp(
        clock.now() if at is None else float(at),
        status in FINISHED_VALUES,
        error,
        status is not None and status not in FINISHED_VALUES,
    )


def error_of(header: Mapping[str, Any]) -> tuple[str, str] | None:
    """The ``(type, message)`` of the error a run's header records, if any."""
    error = header.get("error")
    if not isinstance(error, Mapping):
        return None
    return str(error.get("type", "")), str(error.get("message", ""))


@attrs.frozen
class Created:
    """The index fields of a run being created."""

    status: str
    created_at: float
    finished_at: float | None
    error: tuple[str, str] | None
    tags: dict[str, str]

    @property
    def tags_json(self) -> str:
        return json.dumps(self.tags, separators=(",", ":"), ensure_ascii=False, sort_keys=True)


def created_fields(
    state: RunState, created_at: float | None, tags: Mapping[str, str] | None
) -> Created:
    """The index fields of a new run (a run already final when created finishes then)."""
    status = str(state.header.get("status", RunStatus.RUNNING.value))
    at = clock.now() if created_at is None else float(created_at)
    final = status in FINISHED_VALUES
    error = error_of(state.header) if status == RunStatus.FAILED.value else None
    return Created(status, at, at if final else None, error, check_tags(tags))


SUMMARY_FIELDS = (
    "run_id",
    "blueprint_id",
    "digest",
    "status",
    "parent",
    "created_at",
    "updated_at",
    "finished_at",
    "error_type",
    "error_message",
    "tags",
)
"""The fields of a run a listing reads, in the order :func:`summary` takes them."""


def summary(row: Sequence[Any]) -> RunSummary:
    """A run as listed, from its :data:`SUMMARY_FIELDS` (times as numbers or their
    text, tags as JSON text)."""
    run_id, flow, digest, status, parent, created_at, updated_at, finished_at = row[:8]
    error_type, error_message, tags = row[8:11]
    return RunSummary(
        str(run_id),
        str(flow),
        str(digest),
        str(status),
        None if parent is None else str(parent),
        float(created_at),
        float(created_at if updated_at is None else updated_at),
        None if finished_at is None else float(finished_at),
        None if error_type is None else str(error_type),
        None if error_message is None else str(error_message),
        decode_tags(tags),
    )


def decode_tags(text: str | None) -> dict[str, str]:
    """The tags a store kept as JSON text."""
    if not text:
        return {}
    try:
        tags = json.loads(text)
    except ValueError as exc:
        raise StoreError(f"corrupt tags in store: {exc}") from exc
    if not isinstance(tags, dict):
        raise StoreError(f"corrupt tags in store: {text[:60]!r}")
    return {str(k): str(v) for k, v in tags.items()}

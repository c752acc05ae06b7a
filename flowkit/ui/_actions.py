"""What the console can do to a run, through the operations API (``Client`` or ``Runtime``).

An action is offered when the operations object has its method: ``cancel``,
``signal`` and ``retry`` act on one run; ``purge`` (on the runs page) deletes
the runs that finished long ago. Each action is a POST that asks for
confirmation first (see ``_routes``); :func:`perform` and :func:`purge` carry it
out.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

import attrs

if TYPE_CHECKING:
    from collections.abc import Mapping


class ActionRefused(Exception):
    """The form cannot be carried out as it is; the message says why (shown on the page)."""


UNFINISHED = frozenset({"queued", "running", "awaiting"})


@attrs.frozen
class Action:
    name: str  # the operations API's method, and the URL's last part
    label: str
    question: str  # the confirmation step asks it; {run_id} is filled in
    statuses: frozenset[str]  # the run statuses the page offers it in
    danger: bool = False


CANCEL = Action(
    "cancel",
    "Cancel run",
    "Cancel run {run_id}? Its running nodes are cancelled (their finally blocks run) "
    "and it ends cancelled.",
    statuses=UNFINISHED,
    danger=True,
)
SIGNAL = Action(
    "signal",
    "Send signal",
    "Send this signal to run {run_id}?",
    statuses=UNFINISHED,
)
RETRY = Action(
    "retry",
    "Retry run",
    "Retry run {run_id}? The work that stood when it failed starts again (the failed "
    "node with fresh attempts); nodes that completed are not run again.",
    statuses=frozenset({"failed"}),
)
ACTIONS = {action.name: action for action in (CANCEL, SIGNAL, RETRY)}


PURGE = Action(
    "purge",
    "Purge runs",
    "Delete the {what}? Everything the store keeps for them goes; this cannot be undone.",
    statuses=frozenset(),
    danger=True,
)
FINAL = ("completed", "failed", "cancelled")


def can_purge(operations: Any) -> bool:
    return operations is not None and callable(getattr(operations, "purge", None))


def purge_arguments(form: Mapping[str, str]) -> tuple[str, str | None, str]:
    """The age, the status (None: every final one) and a description, from the form."""
    from .._durations import to_seconds
    from .._errors import ConfigurationError

    age = form.get("older_than", "").strip()
    try:
        seconds = to_seconds(age)
    except ConfigurationError:
        seconds = 0.0
    if seconds <= 0:
        raise ActionRefused(f"purge needs an age above zero such as 30d or 12h, not {age!r}")
    status = form.get("status", "").strip() or None
    if status is not None and status not in FINAL:
        raise ActionRefused(f"purge deletes finished runs: status is one of {', '.join(FINAL)}")
    what = f"{status or 'finished'} runs that finished more than {age} ago"
    return age, status, what


async def purge(operations: Any, form: Mapping[str, str]) -> str:
    """Purge what the form asks for; returns what to tell the user."""
    age, status, what = purge_arguments(form)
    count = await operations.purge(age, status=status)
    return f"purged {count} {what}"


def supported(operations: Any) -> list[Action]:
    """The actions ``operations`` has a method for (none without operations)."""
    if operations is None:
        return []
    return [a for a in ACTIONS.values() if callable(getattr(operations, a.name, None))]


def offered(operations: Any, status: str) -> list[Action]:
    """The actions ``operations`` supports that fit a run in ``status``."""
    return [action for action in supported(operations) if status in action.statuses]


def signal_arguments(form: Mapping[str, str]) -> tuple[str, Any]:
    """The signal's name and payload from the form (``name``, ``data`` as JSON)."""
    name = form.get("name", "").strip()
    if not name:
        raise ActionRefused("a signal needs a name: the wait's name the run listens for")
    text = form.get("data", "").strip()
    try:
        return name, json.loads(text) if text else None
    except ValueError as exc:
        raise ActionRefused(f'the payload is not JSON ({exc}); e.g. {{"ok": true}}') from None


async def perform(operations: Any, action: Action, run_id: str, form: Mapping[str, str]) -> str:
    """Carry ``action`` out on ``run_id``; returns what to tell the user."""
    method = getattr(operations, action.name)
    if action is SIGNAL:
        name, data = signal_arguments(form)
        result = await method(run_id, name, data)
        return f"signal {name!r} delivered; the run is {_status(result)}"
    result = await method(run_id)
    return f"{action.label.lower()}: done; the run is {_status(result)}"


def _status(result: Any) -> str:
    status = getattr(result, "status", None)
    return str(getattr(status, "value", status) or "changed")

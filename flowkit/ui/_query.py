"""The runs page's filters, read from and written back to its URL (links can be shared).

``?flow=checkout&status=failed&status=awaiting&tag=customer=c1&since=2h`` and
``from=`` / ``to=`` (``YYYY-MM-DDTHH:MM`` in UTC, what a ``datetime-local`` input
sends), ``q=`` (a run id) and ``cursor=`` (the next page).
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any
from urllib.parse import urlencode

import attrs

from .._durations import to_seconds
from .._errors import ConfigurationError
from ..core._state import RunStatus

if TYPE_CHECKING:
    from collections.abc import Iterable

STATUSES = tuple(status.value for status in RunStatus)
SINCE_CHOICES = ("15m", "1h", "6h", "24h", "7d", "30d")


@attrs.frozen
class RunsQuery:
    """The filters of one runs page; :attr:`problems` says which parameters were ignored."""

    flow: str = ""
    statuses: tuple[str, ...] = ()
    tags: tuple[tuple[str, str], ...] = ()
    since: str = ""
    start: str = ""  # ``from=``
    end: str = ""  # ``to=``
    q: str = ""
    cursor: str = ""
    problems: tuple[str, ...] = ()

    @classmethod
    def parse(cls, params: Iterable[tuple[str, str]]) -> RunsQuery:
        """Read the query string's pairs; a bad value is dropped and said in ``problems``."""
        values: dict[str, list[str]] = {}
        for key, value in params:
            values.setdefault(key, []).append(value.strip())
        problems: list[str] = []
        statuses = tuple(s for s in values.get("status", []) if s)
        for bad in [s for s in statuses if s not in STATUSES]:
            problems.append(f"unknown status {bad!r} (one of {', '.join(STATUSES)})")
        tags = []
        for text in values.get("tag", []):
            key, sep, value = text.partition("=")
            if text and (not sep or not key):
                problems.append(f"tag {text!r} is not KEY=VALUE")
            elif text:
                tags.append((key, value))
        query = cls(
            flow=_one(values, "flow"),
            statuses=tuple(dict.fromkeys(s for s in statuses if s in STATUSES)),
            tags=tuple(tags),
            since=_one(values, "since"),
            start=_one(values, "from"),
            end=_one(values, "to"),
            q=_one(values, "q"),
            cursor=_one(values, "cursor"),
        )
        return query.checked(problems)

    def checked(self, problems: list[str]) -> RunsQuery:
        """This query without the time filters that do not parse, saying so."""
        changes: dict[str, Any] = {}
        for field, label, read in (
            ("since", "since", _age),
            ("start", "from", _instant),
            ("end", "to", _instant),
        ):
            text = getattr(self, field)
            if text and read(text) is None:
                problems.append(f"{label}={text!r} is not understood; ignored")
                changes[field] = ""
        return attrs.evolve(self, problems=tuple(problems), **changes)

    def list_args(self, now: float) -> dict[str, Any]:
        """The keyword arguments of ``store.list_runs`` for this query (without status,
        limit and cursor)."""
        after = [t for t in (_instant(self.start), _since(self.since, now)) if t is not None]
        return {
            "flow": self.flow or None,
            "tags": dict(self.tags) or None,
            "created_after": max(after) if after else None,
            "created_before": _instant(self.end),
        }

    def params(self, **changes: Any) -> list[tuple[str, str]]:
        """The query string pairs of this query with ``changes`` (a page link drops the
        cursor unless it sets one)."""
        query = attrs.evolve(self, **{"cursor": "", **changes})
        pairs = [("flow", query.flow)]
        pairs += [("status", s) for s in query.statuses]
        pairs += [("tag", f"{k}={v}") for k, v in query.tags]
        pairs += [("since", query.since), ("from", query.start), ("to", query.end)]
        pairs += [("q", query.q), ("cursor", query.cursor)]
        return [(k, v) for k, v in pairs if v]

    def url(self, **changes: Any) -> str:
        """``?...`` for this query with ``changes``; ``?`` alone for no filter."""
        return "?" + urlencode(self.params(**changes))

    def live_url(self) -> str:
        """``?...`` of this very page (its cursor too) as its live part."""
        return "?" + urlencode([*self.params(cursor=self.cursor), ("partial", "1")])

    @property
    def filtered(self) -> bool:
        return bool(self.flow or self.statuses or self.tags or self.since or self.start or self.end)


def _one(values: dict[str, list[str]], key: str) -> str:
    return (values.get(key) or [""])[-1]


def _age(text: str) -> float | None:
    try:
        seconds = to_seconds(text)
    except (ConfigurationError, TypeError, ValueError):
        return None
    return seconds if seconds > 0 else None


def _since(text: str, now: float) -> float | None:
    seconds = _age(text) if text else None
    return None if seconds is None else now - seconds


def _instant(text: str) -> float | None:
    """``YYYY-MM-DDTHH:MM[:SS]`` (UTC unless it says otherwise) as unix seconds."""
    if not text:
        return None
    try:
        at = datetime.fromisoformat(text)
    except ValueError:
        return None
    return (at if at.tzinfo else at.replace(tzinfo=UTC)).timestamp()

"""The flows the console knows (``flows=`` / ``--app``): their blueprints and lint findings."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import attrs

from .._errors import BlueprintError, CompileError, FlowkitError
from ..blueprint import Analysis, Blueprint, LintIssue, analyze, lint

if TYPE_CHECKING:
    from collections.abc import Iterable


@attrs.frozen
class FlowEntry:
    """One flow: its blueprint (None if it does not build), what lint says, its shape."""

    id: str
    blueprint: Blueprint | None
    issues: tuple[LintIssue, ...]
    analysis: Analysis | None

    @property
    def errors(self) -> int:
        return sum(issue.severity == "error" for issue in self.issues)


class Catalogue:
    """Flows by blueprint id and by digest, read once when the console is built."""

    def __init__(self, flows: Iterable[Any] = ()) -> None:
        self.entries = [_entry(flow) for flow in flows]
        self.by_id = {e.id: e for e in self.entries}
        self.by_digest = {e.blueprint.digest: e.blueprint for e in self.entries if e.blueprint}

    def blueprint(self, digest: str, flow_id: str) -> tuple[Blueprint | None, bool]:
        """The blueprint a run follows, and whether it is that very one (same digest);
        else the current version of its flow, if the console knows it."""
        if digest in self.by_digest:
            return self.by_digest[digest], True
        entry = self.by_id.get(flow_id)
        return (entry.blueprint if entry else None), False


def _entry(flow: Any) -> FlowEntry:
    if isinstance(flow, Blueprint):
        return FlowEntry(flow.id, flow, tuple(lint(flow)), analyze(flow))
    try:
        bp = flow.blueprint
    except BlueprintError as exc:  # a builder that does not validate: its own issues
        return FlowEntry(_name(flow), None, tuple(exc.issues), None)
    except CompileError as exc:
        issue = LintIssue("compile-error", None, " ".join(str(exc).split()))
        return FlowEntry(_name(flow), None, (issue,), None)
    except FlowkitError as exc:
        return FlowEntry(_name(flow), None, (LintIssue("invalid", None, str(exc)),), None)
    registry = getattr(flow, "registry", None)
    return FlowEntry(bp.id, bp, tuple(lint(bp, registry)), analyze(bp))


def _name(flow: Any) -> str:
    return str(getattr(flow, "id", None) or getattr(flow, "__name__", None) or repr(flow))

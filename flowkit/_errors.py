"""Every exception flowkit raises derives from :class:`FlowkitError`.

The tree::

    FlowkitError
    ├── CompileError          (also a SyntaxError: filename, lineno, col_offset, hint)
    ├── BlueprintError        (validation; carries the lint issues)
    ├── InvalidInputs         (also a TypeError: a run's inputs do not fit its flow)
    ├── NodeError             (wraps the user's exception: node_id, attempt)
    ├── WorkflowFailed        (a run ended FAILED and the caller asked for its output)
    ├── WaitTimeout           (also a TimeoutError: a flow.wait timed out)
    ├── CompletionTimeout     (also a TimeoutError: a deferred node was not completed in time)
    ├── PendingWithoutToken   (a node returned flowkit.PENDING without a completion token)
    ├── ResultTimeout         (also a TimeoutError: a run did not finish in the time waited)
    ├── Undeliverable         (a node's message was dead-lettered: the node failed unrun)
    ├── ChildFailed           (a subflow's run failed)
    ├── ResumeError           (signal, query, update or resume for an unknown run or name)
    │   ├── DuplicateDelivery (a signal's delivery id was already received)
    │   ├── MigrationRefused  (a run cannot move to another version: problems say why)
    │   └── CompletionTokenError (a completion token is malformed, unknown or stale)
    ├── UpdateRejected        (an update's validator refused it: nothing was recorded)
    ├── Cancelled             (the run was cancelled)
    ├── TransportError        (a broker failed; each transport translates its SDK here)
    ├── StoreError            (a database failed; each store translates its driver here)
    ├── MissingDependency     (an optional extra is not installed; also an ImportError)
    ├── ConfigurationError    (a transport/store URL or option is wrong; also a ValueError)
    └── WebhookRejected       (a webhook call was refused: status says why)

Constructors take structured data and build the message, so every message says
what happened, where, and what to do next.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Literal

import attrs

if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence

Severity = Literal["error", "warning"]


@attrs.frozen
class LintIssue:
    """One problem found in a blueprint.

    ``code`` is stable and machine-readable (``"unknown-edge-target"``),
    ``node_id`` the node it is about (``None`` for the blueprint as a whole) and
    ``message`` says what is wrong and what to do about it.

    >>> LintIssue("orphan", "x", "node 'x' has no edges", severity="warning").severity
    'warning'
    """

    code: str
    node_id: str | None
    message: str
    severity: Severity = "error"


class FlowkitError(Exception):
    """Root of every error flowkit raises."""


class CompileError(FlowkitError, SyntaxError):
    """A ``@flow`` body uses something outside the compiled subset.

    Carries ``filename``, ``lineno``, ``col_offset``, ``source_line`` and ``hint``.
    """

    def __init__(
        self,
        message: str,
        *,
        filename: str,
        lineno: int,
        col_offset: int,
        source_line: str = "",
        hint: str = "",
    ) -> None:
        full = f"{message} ({filename}, line {lineno})"
        if hint:
            full += f"; hint: {hint}"
        SyntaxError.__init__(self, full, (filename, lineno, col_offset + 1, source_line))
        self.message = message
        self.col_offset = col_offset
        self.source_line = source_line
        self.hint = hint

    def __str__(self) -> str:
        text = str(self.msg)
        if self.source_line:
            text += f"\n    {self.source_line.strip()}"
        return text


class BlueprintError(FlowkitError):
    """A blueprint failed validation; ``issues`` lists every problem found."""

    def __init__(self, blueprint_id: str, issues: Sequence[LintIssue]) -> None:
        self.blueprint_id = blueprint_id
        self.issues = tuple(issues)
        lines = "\n".join(f"  - [{i.code}] {i.node_id or '-'}: {i.message}" for i in self.issues)
        super().__init__(
            f"blueprint {blueprint_id!r} is invalid ({len(self.issues)} problem(s)):\n{lines}"
        )


class InvalidInputs(FlowkitError, TypeError):
    """A run's inputs do not fit its flow; nothing was started.

    ``flow_id`` names the flow and ``problems`` maps each bad argument (or a path
    into one, like ``items[2]``) to what is wrong with it.
    """

    def __init__(self, flow_id: str, problems: Mapping[str, str]) -> None:
        self.flow_id = flow_id
        self.problems = dict(problems)
        lines = "\n".join(f"  - {where}: {why}" for where, why in self.problems.items())
        super().__init__(
            f"flow {flow_id!r} cannot start with these inputs ({len(self.problems)} "
            f"problem(s)):\n{lines}\ninputs are keyword arguments, one per parameter of the "
            "flow, of its declared type and storable as JSON"
        )


class NodeError(FlowkitError):
    """A node raised; ``__cause__`` (when in-process) is the user's exception.

    ``error_type`` is the qualified name of the original exception class and
    ``error_mro`` the qualified names of its bases, so ``except`` clauses can
    match errors that crossed a process boundary.
    """

    def __init__(
        self,
        node_id: str,
        attempt: int,
        message: str,
        *,
        error_type: str = "builtins.Exception",
        error_mro: Sequence[str] = (),
    ) -> None:
        self.node_id = node_id
        self.attempt = attempt
        self.message = message
        self.error_type = error_type
        self.error_mro = tuple(error_mro) or (error_type,)
        super().__init__(f"node {node_id!r} failed on attempt {attempt}: {message}")


class WorkflowFailed(FlowkitError):
    """The run failed; ``run_id`` and ``error`` (the failure's message) say which and why."""

    def __init__(self, run_id: str, error: str) -> None:
        self.run_id = run_id
        self.error = error
        super().__init__(f"run {run_id!r} failed: {error}")


class WaitTimeout(FlowkitError, TimeoutError):
    """A ``flow.wait`` (or webhook) timed out before its signal arrived."""

    def __init__(self, name: str, run_id: str = "") -> None:
        self.name = name
        self.run_id = run_id
        super().__init__(
            f"wait {name!r} timed out before a signal arrived"
            + (f" (run {run_id!r})" if run_id else "")
            + "; catch flowkit.WaitTimeout in the flow to handle it"
        )


class CompletionTimeout(FlowkitError, TimeoutError):
    """A node that returned ``flowkit.PENDING`` was not completed within the timeout
    its completion token was given; the node's retry policy decides what follows."""

    def __init__(self, node_id: str, dispatch_id: str, run_id: str = "") -> None:
        self.node_id = node_id
        self.dispatch_id = dispatch_id
        self.run_id = run_id
        super().__init__(
            f"node {node_id!r} (dispatch {dispatch_id!r}"
            + (f", run {run_id!r}" if run_id else "")
            + ") was not completed before its completion token's timeout; complete it "
            "sooner (client.complete) or give completion_token() a longer timeout"
        )


class PendingWithoutToken(FlowkitError):
    """A node returned ``flowkit.PENDING`` without taking a completion token."""

    def __init__(self, node_id: str) -> None:
        self.node_id = node_id
        super().__init__(
            f"node {node_id!r} returned flowkit.PENDING without taking a completion token: "
            "nobody could ever complete it; call flowkit.context().completion_token() and "
            "hand the token to whoever completes the node"
        )


class ResultTimeout(FlowkitError, TimeoutError):
    """Waiting for a run's result took longer than the caller's ``timeout``.

    ``run_id``, ``status`` (where the run stood when the wait gave up; ``None``
    if that could not be read) and ``waited`` (seconds) say which run and how
    long; the message says what to check.
    """

    def __init__(self, run_id: str, status: str | None, waited: float, detail: str) -> None:
        self.run_id = run_id
        self.status = status
        self.waited = waited
        super().__init__(f"run {run_id!r} did not finish within {waited:g}s: {detail}")


class Undeliverable(FlowkitError):
    """A worker dead-lettered a node's message (an unknown flow version, a message it
    cannot read, ...): the node failed without running, and its run with it unless
    the flow catches this error."""


class ChildFailed(FlowkitError):
    """A subflow's run failed; catch it in the parent with ``except flowkit.ChildFailed``."""

    def __init__(self, child_run_id: str, error: str) -> None:
        self.child_run_id = child_run_id
        self.error = error
        super().__init__(f"child run {child_run_id!r} failed: {error}")


class ResumeError(FlowkitError):
    """A signal, query, update or resume named a run, wait, handler or node that cannot
    take it."""


class DuplicateDelivery(ResumeError):
    """A signal carried a delivery id the run has already received; nothing changed."""

    def __init__(self, run_id: str, delivery_id: str) -> None:
        self.run_id = run_id
        self.delivery_id = delivery_id
        super().__init__(
            f"run {run_id!r} already received delivery {delivery_id!r}; the repeat was ignored"
        )


class MigrationRefused(ResumeError):
    """A run could not be migrated to another version of its flow; nothing changed.

    ``problems`` lists each reason: a position (wait, node in flight, timer, child,
    loop, batch) the new version lacks or has as another kind of node, a patch it
    does not know, a run that has finished.
    """

    def __init__(self, run_id: str, to: str, problems: Sequence[str]) -> None:
        self.run_id = run_id
        self.problems = list(problems)
        super().__init__(
            f"run {run_id!r} cannot be migrated to {to}: {'; '.join(problems)}. Nothing was "
            "changed: pass map={'old_node': 'new_node'} for nodes that were renamed, or keep "
            "the run's version registered for it"
        )


class CompletionTokenError(ResumeError):
    """A completion token could not be used: malformed, for an unknown run, or for a
    node execution that is no longer waiting (completed, retried, or its run finished).

    ``token`` is the token given; ``reason`` says what is wrong with it.
    """

    def __init__(self, token: str, reason: str, hint: str = "") -> None:
        self.token = token
        self.reason = reason
        shown = token if len(token) <= 80 else token[:77] + "..."
        super().__init__(f"completion token {shown!r}: {reason}" + (f"; {hint}" if hint else ""))


class UpdateRejected(FlowkitError):
    """An update's validator refused its payload; nothing was recorded in the run.

    ``run_id`` and ``name`` say which run and update, ``reason`` what the validator
    said; ``__cause__`` is the exception the validator raised.
    """

    def __init__(self, run_id: str, name: str, reason: str) -> None:
        self.run_id = run_id
        self.name = name
        self.reason = reason
        super().__init__(
            f"update {name!r} of run {run_id!r} was rejected: {reason}; nothing was "
            "recorded in the run, so correct the data and send the update again"
        )


class Cancelled(FlowkitError):
    """The run was cancelled."""

    def __init__(self, run_id: str) -> None:
        self.run_id = run_id
        super().__init__(f"run {run_id!r} was cancelled")


class TransportError(FlowkitError):
    """A transport (message broker) operation failed."""


class StoreError(FlowkitError):
    """A store (database) operation failed."""


class MissingDependency(FlowkitError, ImportError):
    """An optional integration is used without its extra installed."""

    def __init__(self, feature: str, extra: str) -> None:
        self.feature = feature
        self.extra = extra
        super().__init__(
            f"{feature} needs an optional dependency; install it with: "
            f"pip install 'flowkit[{extra}]'"
        )


class ConfigurationError(FlowkitError, ValueError):
    """A URL or option names something flowkit cannot build."""


class WebhookRejected(FlowkitError):
    """A webhook call was refused; ``status`` is the HTTP status it was answered with."""

    def __init__(self, status: int, reason: str) -> None:
        self.status = status
        self.reason = reason
        super().__init__(f"webhook rejected ({status}): {reason}")


def describe(exc: BaseException) -> tuple[str, tuple[str, ...], str]:
    """Return ``(type, mro, message)`` of an exception as plain strings."""
    mro = tuple(
        f"{c.__module__}.{c.__qualname__}"
        for c in type(exc).__mro__
        if issubclass(c, BaseException)
    )
    return mro[0], mro, str(exc) or type(exc).__name__

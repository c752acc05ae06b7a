"""What the core is fed (events) and what it asks shells to do (commands).

All are small frozen attrs classes of plain data, so they cross process
boundaries as JSON and make the core's behaviour easy to replay and test.
"""

from __future__ import annotations

from typing import Any

import attrs

ErrorInfo = dict[str, Any]
"""``{"type": qualified name, "mro": [qualified names], "message": str}``."""


# -- events (shell -> core) ----------------------------------------------------
@attrs.define(eq=True)  # mutable slots classes: cheaper to build than frozen ones
class NodeCompleted:
    """A dispatched execution returned; ``writes`` are its changes to the run's state."""

    dispatch_id: str
    output: Any = None
    action: str | None = None
    writes: dict[str, Any] | None = None
    deletes: tuple[str, ...] = ()
    fallback: bool = False


@attrs.frozen
class NodeFailed:
    """A dispatched execution raised (or timed out); ``retryable`` false skips retries.

    ``started_at`` and ``failed_at`` (epoch seconds, from the shell's clock) say when
    the attempt started and failed; a node's ``retry_timeout`` is judged by them.
    """

    dispatch_id: str
    error: ErrorInfo
    retryable: bool = True
    started_at: float | None = None
    failed_at: float | None = None
    heartbeat: Any = None


@attrs.frozen
class NodeDeferred:
    """A dispatched execution handed out a completion token and returned pending.

    The dispatch stays open, awaiting :class:`NodeCompleted` or :class:`NodeFailed`
    from whoever holds the token; ``nonce`` is the token's secret part, ``timeout``
    (seconds), when set, fails the node if no completion comes in time.
    """

    dispatch_id: str
    nonce: str
    timeout: float | None = None
    heartbeat: Any = None


@attrs.frozen
class NodeHeartbeat:
    """A running (or deferred) execution recorded progress ``details`` (JSON data);
    a later attempt of the same execution reads the last details back."""

    dispatch_id: str
    details: Any = None


@attrs.frozen
class TimerFired:
    timer_id: str


@attrs.frozen
class SignalReceived:
    """A signal for wait ``name``; ``delivery_id`` makes a redelivery a DuplicateDelivery."""

    name: str
    data: Any = None
    action: str | None = None
    delivery_id: str | None = None


@attrs.frozen
class ChildFinished:
    child_run_id: str
    status: str
    output: Any = None
    error: ErrorInfo | None = None


@attrs.frozen
class CancelRequested:
    reason: str = "cancelled"


@attrs.frozen
class RetryRequested:
    """Resume a failed run: what stood when it failed starts again, with fresh attempts."""


@attrs.frozen
class StartDebounced:
    """A start of a run that is still waiting out its debounce: it begins ``delay``
    seconds from now instead, with these ``inputs`` (the latest start's)."""

    inputs: dict[str, Any]
    delay: float


@attrs.frozen
class RunContinued:
    """The run that this one continues as (``flow.continue_as_new``) exists now: the
    shell created it (or found it created), so this run may finish."""

    new_run_id: str


@attrs.frozen
class SlotTaken:
    """The shell took a slot of its flow's concurrency limit for this queued run: it
    begins (see :class:`TakeSlot`)."""


Event = (
    NodeCompleted
    | NodeFailed
    | NodeDeferred
    | NodeHeartbeat
    | TimerFired
    | SignalReceived
    | ChildFinished
    | CancelRequested
    | RetryRequested
    | StartDebounced
    | RunContinued
    | SlotTaken
)


# -- commands (core -> shell) ---------------------------------------------------
@attrs.define(eq=True)
class ExecuteNode:
    """Run ``uses`` (or its fallback) with these arguments.

    ``timeout`` (seconds), when set, is the call's own and replaces the node's;
    ``queue``, when set, is the transport queue a worker sends the execution to.
    """

    dispatch_id: str
    node_id: str
    attempt: int
    idempotency_key: str
    args: tuple[Any, ...] = ()
    kwargs: dict[str, Any] = attrs.field(factory=dict)
    fallback: bool = False
    timeout: float | None = None
    queue: str | None = None


@attrs.frozen
class CancelNode:
    dispatch_id: str


@attrs.frozen
class StartTimer:
    timer_id: str
    node_id: str
    delay: float
    purpose: str  # "sleep" | "retry" | "timeout" | "debounce"


@attrs.frozen
class CancelTimer:
    timer_id: str


@attrs.frozen
class AwaitSignal:
    node_id: str
    name: str


@attrs.frozen
class StartChild:
    """Start a child run; ``slot``, when set, is the flow slot the parent holds, which a
    child of the same limited pool runs under (see ``_admission``)."""

    child_run_id: str
    node_id: str
    blueprint_id: str
    inputs: dict[str, Any]
    slot: dict[str, Any] | None = None


@attrs.frozen
class CancelChild:
    child_run_id: str


@attrs.frozen
class FinishRun:
    status: str
    output: Any = None
    error: ErrorInfo | None = None


@attrs.frozen
class ContinueAsNew:
    """Create ``run_id``, a fresh run of the same flow with ``inputs`` and these extra
    ``header`` entries (its link to this run), then report :class:`RunContinued`.

    Creating it twice is harmless (a run id that exists is left alone), so a shell that
    died before reporting may carry the command out again."""

    run_id: str
    blueprint_id: str
    inputs: dict[str, Any]
    header: dict[str, Any]


@attrs.frozen
class TakeSlot:
    """Queue ``holder`` (the run) for a slot of the pool ``(limit_id, key)`` of ``max``
    slots; once it has one, in order of arrival, report :class:`SlotTaken` to it."""

    limit_id: str
    key: str
    max: int
    holder: str


@attrs.frozen
class ReleaseSlot:
    """Give ``holder``'s slot of the pool back (or take it out of the queue), then
    admit the queued runs that fit now."""

    limit_id: str
    key: str
    max: int
    holder: str


@attrs.frozen
class Note:
    """Something observers may want to know (``node:retry``, ``batch:start``, ...)."""

    type: str
    node_id: str | None = None
    attempt: int | None = None
    data: Any = None


Command = (
    ExecuteNode
    | CancelNode
    | StartTimer
    | CancelTimer
    | AwaitSignal
    | StartChild
    | CancelChild
    | FinishRun
    | ContinueAsNew
    | TakeSlot
    | ReleaseSlot
    | Note
)

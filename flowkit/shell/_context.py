"""``flowkit.context()``: what a running node knows about itself."""

from __future__ import annotations

import contextvars
from collections.abc import Iterator, Mapping, MutableMapping
from typing import TYPE_CHECKING, Any, Final

import attrs
import structlog

from .._detach import detached
from .._durations import to_seconds

if TYPE_CHECKING:
    from .._durations import Duration

_MISSING: Any = object()


class Context(MutableMapping[str, Any]):
    """A run's state as seen by one node execution.

    Reads see the run's state plus this execution's own writes; writes are
    recorded and applied to the run atomically with the node's completion (so a
    node that fails or is retried leaves no half-written state behind). A dict
    or list read from the run's state is a copy: changing it in place
    (``ctx.state["progress"]["step"] = 2``) is a write like any other, recorded
    when the node completes.
    """

    __slots__ = ("_base", "_borrowed", "deletes", "writes")

    def __init__(self, base: Mapping[str, Any]) -> None:
        self._base = base
        self._borrowed: dict[str, Any] = {}
        self.writes: dict[str, Any] = {}
        self.deletes: set[str] = set()

    def __getitem__(self, key: str) -> Any:
        if key in self.writes:
            return self.writes[key]
        if key in self.deletes:
            raise KeyError(key)
        value = self._base[key]
        if type(value) is dict or type(value) is list:
            borrowed = self._borrowed.get(key, _MISSING)
            if borrowed is _MISSING:
                borrowed = self._borrowed[key] = detached(value)
            return borrowed
        return value

    def settle(self) -> None:
        """Record the values read from the run's state that the node changed in place."""
        for key, value in self._borrowed.items():
            if key not in self.writes and key not in self.deletes and value != self._base[key]:
                self.writes[key] = value
        self._borrowed.clear()

    def __setitem__(self, key: str, value: Any) -> None:
        self.writes[key] = value
        self.deletes.discard(key)

    def __delitem__(self, key: str) -> None:
        if key not in self:
            raise KeyError(key)
        self.writes.pop(key, None)
        self.deletes.add(key)

    def __iter__(self) -> Iterator[str]:
        seen = set()
        for key in self.writes:
            seen.add(key)
            yield key
        for key in self._base:
            if key not in seen and key not in self.deletes and not key.startswith("__"):
                yield key

    def __len__(self) -> int:
        return sum(1 for _ in self)

    def __repr__(self) -> str:
        return f"Context({dict(self)!r})"


@attrs.define(slots=True)
class NodeContext:
    """Facts about the node execution in progress; see :func:`context`.

    ``idempotency_key`` is stable across retries and redeliveries of the same
    node execution: use it for side effects that must happen once.
    ``traceparent`` is the W3C trace context the run started under (if any).
    ``flow`` is the id of the run's blueprint; ``enqueued_at`` the epoch time
    the execution was queued (from the message in the distributed shell).
    ``dispatch_id`` names this execution in its run; ``last_heartbeat`` holds the
    details an earlier attempt of it recorded with :meth:`heartbeat` (None: none).
    """

    run_id: str
    node_id: str
    attempt: int
    idempotency_key: str
    state: Context
    deadline: float | None = None
    error: BaseException | None = None
    traceparent: str | None = None
    flow: str | None = None
    enqueued_at: float | None = None
    dispatch_id: str = ""
    last_heartbeat: Any = None
    _log: Any = attrs.field(default=None, alias="_log")
    _token: Any = attrs.field(default=None, alias="_token")
    _timeout: float | None = attrs.field(default=None, alias="_timeout")
    _beat: Any = attrs.field(default=_MISSING, alias="_beat")
    _sink: Any = attrs.field(default=None, alias="_sink")  # the shell's heartbeat recorder

    def completion_token(self, *, timeout: Duration | None = None) -> str:
        """A token that completes this node execution later, from outside the node.

        Hand it to the system that will finish the work, then ``return
        flowkit.PENDING``: the run awaits until someone calls
        ``client.complete(token, value)`` (or ``runtime.complete``), or
        ``client.fail(token, error)``, which the node's retry policy handles as
        any failure. With ``timeout`` (``"1h"``, seconds) the node fails with
        :class:`~flowkit.CompletionTimeout` if nobody completes it in time.
        Calling it again returns the same token.

        >>> # token = flowkit.context().completion_token(timeout="1h")
        """
        if self._token is None:
            from ._completion import CompletionToken

            if not self.dispatch_id:
                raise RuntimeError(
                    f"node {self.node_id!r} runs outside a flowkit shell (no dispatch id): "
                    "completion tokens need a Runtime, Worker or simulate()"
                )
            self._token = CompletionToken.new(self.run_id, self.dispatch_id, self.attempt)
            self._timeout = None if timeout is None else to_seconds(timeout)
        return str(self._token.encode())

    def heartbeat(self, details: Any = None) -> None:
        """Record progress ``details`` (JSON data) of this node execution.

        If the attempt fails (or the node defers), the last details are kept with the
        node, and its next attempt reads them from :attr:`last_heartbeat` to resume
        where this one stopped. The latest details of a long node are also committed
        while it runs, throttled (a Worker: with its lease heartbeats, once per third
        of a lease; a Runtime with a store: every 5 s), so they outlive its process.

        >>> # flowkit.context().heartbeat({"done": 120})
        """
        from .._serde import to_data

        self._beat = to_data(details)
        if self._sink is not None:
            self._sink(self._beat)

    def deferral(self) -> tuple[str, float | None] | None:
        """(nonce, timeout) of the token this execution handed out; None if none."""
        if self._token is None:
            return None
        return self._token.nonce, self._timeout

    @property
    def heartbeat_details(self) -> Any:
        """What :meth:`heartbeat` recorded in this attempt (None: nothing)."""
        return None if self._beat is _MISSING else self._beat

    @property
    def log(self) -> Any:
        """A structlog logger bound to ``run_id``, ``node_id`` and ``attempt``."""
        if self._log is None:
            self._log = structlog.get_logger("flowkit").bind(
                run_id=self.run_id, node_id=self.node_id, attempt=self.attempt
            )
        return self._log


_current: contextvars.ContextVar[NodeContext] = contextvars.ContextVar("flowkit_node")


def context() -> NodeContext:
    """The :class:`NodeContext` of the node running in this task.

    Raises ``LookupError``-derived :class:`RuntimeError` outside a node.

    >>> from flowkit import node, context
    >>> @node
    ... async def charge(amount: int) -> str:
    ...     return context().idempotency_key
    """
    try:
        return _current.get()
    except LookupError:
        raise RuntimeError(
            "flowkit.context() was called outside a running node; call it from the body "
            "of a @node (or a node function run by a flowkit Runtime or Worker)"
        ) from None


# -- binding a node's identity ----------------------------------------------------
_NODE_KEYS: Final = ("run_id", "node_id", "attempt", "flow")


def _structlog_vars() -> tuple[contextvars.ContextVar[Any], ...]:
    """structlog's own context variables for the node keys (through its public API)."""
    tokens = structlog.contextvars.bind_contextvars(**dict.fromkeys(_NODE_KEYS, ...))
    structlog.contextvars.reset_contextvars(**tokens)
    return tuple(token.var for token in tokens.values())


_RUN_ID, _NODE_ID, _ATTEMPT, _FLOW = _structlog_vars()
NodeEntry = tuple[contextvars.Token[Any], ...]


def enter_node(ctx: NodeContext) -> NodeEntry:
    """Make ``ctx`` the current node's (:func:`context`) and bind ``run_id``, ``node_id``,
    ``attempt`` and ``flow`` in structlog's contextvars.

    Exactly what ``structlog.contextvars.bind_contextvars(run_id=..., ...)`` does for
    the four keys, at a fraction of the cost (it runs for every node). The executor
    calls it and :func:`leave_node` around each node execution, so every log line
    written meanwhile in that task (with ``structlog.contextvars.merge_contextvars``
    in the chain, as :func:`configure_logging` sets up) names the node.
    """
    return (
        _current.set(ctx),
        _RUN_ID.set(ctx.run_id),
        _NODE_ID.set(ctx.node_id),
        _ATTEMPT.set(ctx.attempt),
        _FLOW.set(ctx.flow),
    )


def leave_node(tokens: NodeEntry) -> None:
    """Undo :func:`enter_node`."""
    current, run_id, node_id, attempt, flow = tokens
    _FLOW.reset(flow)
    _ATTEMPT.reset(attempt)
    _NODE_ID.reset(node_id)
    _RUN_ID.reset(run_id)
    _current.reset(current)

"""Concurrency limits of nodes: ``@node(concurrency=flowkit.Limit(max=2, key="account"))``.

A limit caps how many executions of a node run at once, per value of one of its
arguments (``key``) or in one pool (no key). The shells enforce it:

* the in-memory ``Runtime`` with one semaphore per key value, in process
  (:class:`LocalSlots`);
* the ``Worker`` with slot leases in the store, shared by every worker: a slot is
  taken before the node runs, kept by the heartbeat that keeps the dispatch
  leased, and released when the node ends; a slot whose worker died expires with
  its lease.
"""

from __future__ import annotations

import inspect
import json
import re
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Any

import anyio
import attrs
import sniffio

from .._errors import ConfigurationError
from .._serde import SerializationError, to_data
from ..stores._buckets import refill

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Callable, Mapping, Sequence

    from ..core import _protocol as p
    from ._target import Target


@attrs.frozen
class Limit:
    """At most ``max`` executions of a node (or runs of a flow) at once per value of
    the argument ``key``.

    ``key`` names an argument of the node (an input of the flow); the executions whose
    calls pass equal values for it share ``max`` slots, and those with other values
    have slots of their own. Without ``key`` all executions of the node share one pool.
    On a flow, a run started while its pool is full is ``queued`` until a slot frees
    (in order of arrival); the slot is the run's until it ends.

    >>> import flowkit
    >>> @flowkit.node(concurrency=flowkit.Limit(max=2, key="account"))
    ... async def charge(account: str, cents: int) -> None: ...
    >>> @flowkit.flow(concurrency=flowkit.Limit(max=1, key="customer_id"))
    ... async def onboard(customer_id: str) -> None:
    ...     await charge(customer_id, 100)
    """

    max: int = attrs.field(kw_only=True)
    key: str | None = attrs.field(default=None, kw_only=True)

    def __attrs_post_init__(self) -> None:
        if isinstance(self.max, bool) or not isinstance(self.max, int) or self.max < 1:
            raise ConfigurationError(
                f"Limit(max=...) must be a whole number of 1 or more, e.g. Limit(max=2); "
                f"got {self.max!r}"
            )
        if self.key is not None and (not isinstance(self.key, str) or not self.key.isidentifier()):
            raise ConfigurationError(
                "Limit(key=...) must name an argument of the node, e.g. "
                f"Limit(max=2, key='account'), or be None; got {self.key!r}"
            )


def check_limit_key(key: str | None, fn: Callable[..., Any], what: str = "node") -> str | None:
    """Why ``key`` is not an argument of ``fn`` (None: it is, or there is no key);
    ``what`` names ``fn`` in the answer (a node, a flow)."""
    if key is None:
        return None
    try:
        parameters = inspect.signature(fn).parameters
    except (TypeError, ValueError):
        return f"the {what} has no signature to find the argument in"
    if key in parameters:
        return None
    return f"the {what} has no argument {key!r} (it has {', '.join(parameters) or 'none'})"


@attrs.frozen
class Slot:
    """The pool one execution takes a slot of: the limit's id (the node's registry
    name), the key's value as text, and the pool's size."""

    limit_id: str
    key: str
    max: int


@attrs.frozen
class Rate:
    """``@node(rate="100/m", key=...)``: starts a second, evenly spaced, per key value."""

    text: str
    per_second: float
    key: str | None = None


_RATE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*/\s*(s|m|h|d)\s*$")
_PER = {"s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}


def parse_rate(text: object, key: str | None) -> Rate:
    """``"100/m"`` as a :class:`Rate`; a :class:`ConfigurationError` if it is not one."""
    found = _RATE.match(text) if isinstance(text, str) else None
    if found is None or float(found[1]) <= 0:
        raise ConfigurationError(
            f"rate must be a count above zero per s, m, h or d, e.g. rate='100/m' or "
            f"rate='10/s'; got {text!r}"
        )
    return Rate(str(text), float(found[1]) / _PER[found[2]], key)


@attrs.frozen
class Bucket:
    """The token bucket one execution takes a token of: the node's registry name, the
    key's value as text, tokens a second. It holds one token: starts are spaced evenly."""

    limit_id: str
    key: str
    rate: float
    capacity: float = 1.0


def slot_of(target: Target, command: p.ExecuteNode) -> Slot | None:
    """The slot pool ``command`` needs, or None if its node has no limit."""
    limit, impl, uses = _option(target, command, "concurrency")
    if not isinstance(limit, Limit):
        return None
    return Slot(uses, _key(impl, limit.key, command), limit.max)


def bucket_of(target: Target, command: p.ExecuteNode) -> Bucket | None:
    """The token bucket ``command`` needs, or None if its node has no rate limit."""
    rate, impl, uses = _option(target, command, "rate")
    if not isinstance(rate, Rate):
        return None
    return Bucket(uses, _key(impl, rate.key, command), rate.per_second)


def limited(target: Target) -> bool:
    """Whether any node of ``target`` has a concurrency or rate limit (found once)."""
    found = target.limited
    if found is None:
        registry = target.program.registry
        found = target.limited = any(
            isinstance(options.get("concurrency"), Limit) or isinstance(options.get("rate"), Rate)
            for options in (
                getattr(registry.get(spec.uses or ""), "__flowkit_options__", None) or {}
                for spec in target.program.specs.values()
            )
        )
    return found


def _option(target: Target, command: p.ExecuteNode, name: str) -> tuple[Any, Any, str]:
    """The ``@node`` option ``name`` of the command's node, its implementation, its id."""
    if command.fallback:
        return None, None, ""
    uses = target.program.specs[command.node_id].uses or ""
    impl = target.program.registry.get(uses)
    options = getattr(impl, "__flowkit_options__", None) or {}
    return options.get(name), impl, uses


def _key(impl: Any, name: str | None, command: p.ExecuteNode) -> str:
    if name is None:
        return ""
    return key_text(_argument(impl, name, command.args, command.kwargs))


def _argument(impl: Any, name: str, args: Sequence[Any], kwargs: Mapping[str, Any]) -> Any:
    fn = getattr(impl, "fn", impl)
    try:
        bound = inspect.signature(fn).bind_partial(*args, **kwargs)
    except TypeError:
        return kwargs.get(name)
    bound.apply_defaults()
    return bound.arguments.get(name)


def key_text(value: Any) -> str:
    """A key value as the text slots are stored under: strings as they are, anything
    else as canonical JSON (``1`` and ``"1"`` are different keys)."""
    if isinstance(value, str):
        return value
    try:
        return json.dumps(to_data(value), sort_keys=True, separators=(",", ":"))
    except (SerializationError, TypeError, ValueError):
        return repr(value)


class LocalBuckets:
    """Rate limits enforced in one process: a token bucket per ``(limit id, key value)``
    on the event loop's clock; takers of one bucket are served in arrival order."""

    def __init__(self) -> None:
        self._buckets: dict[tuple[str, str, str], tuple[float | None, float, anyio.Lock]] = {}

    async def take(self, bucket: Bucket) -> None:
        """Return once a token of ``bucket`` is taken (sleeping until there is one)."""
        name = (sniffio.current_async_library(), bucket.limit_id, bucket.key)
        found = self._buckets.get(name)
        if found is None:
            found = self._buckets[name] = (None, anyio.current_time(), anyio.Lock())
        lock = found[2]
        async with lock:
            while True:
                tokens, updated, _ = self._buckets[name]
                now = anyio.current_time()
                left, wait = refill(
                    tokens, updated, rate=bucket.rate, capacity=bucket.capacity, now=now
                )
                self._buckets[name] = (left, now, lock)
                if wait == 0.0:
                    return
                await anyio.sleep(wait)


class LocalSlots:
    """Limits enforced in one process: a semaphore per ``(limit id, key value)``,
    made when first needed and dropped when nobody holds or waits for it."""

    def __init__(self) -> None:
        self._pools: dict[tuple[str, str, str], tuple[anyio.Semaphore, int]] = {}

    @staticmethod
    def _backend() -> str:
        return sniffio.current_async_library()  # a semaphore is bound to its event loop

    @asynccontextmanager
    async def hold(self, slot: Slot) -> AsyncIterator[None]:
        """Wait (in order of arrival) for a slot of ``slot``'s pool; hold it in the block."""
        pool = (self._backend(), slot.limit_id, slot.key)
        semaphore, users = self._pools.get(pool) or (anyio.Semaphore(slot.max), 0)
        self._pools[pool] = (semaphore, users + 1)
        try:
            async with semaphore:
                yield
        finally:
            semaphore, users = self._pools[pool]
            if users == 1:
                del self._pools[pool]
            else:
                self._pools[pool] = (semaphore, users - 1)

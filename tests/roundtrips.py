"""Counting the network round trips flowkit makes, by the client library calls that make them.

:class:`RoundTrips` patches, while it is entered, the calls of redis-py (a command,
a pipeline, a script), psycopg (every exchange with the server, a pipeline's sync
counted once) and aiormq (RabbitMQ: an RPC, a publish and its confirm; an ack is a
frame with no answer, counted apart as ``frames``) and counts those made inside
:meth:`RoundTrips.counting`: by the task that entered it and the tasks it starts
(a context variable), so a worker's background loops and receive loop stay out of
a node step's count. Calls outside any ``counting`` block go to ``other``.

A count is a ``Counter`` of ``(side, operation)``: ``side`` is ``"store"``,
``"broker"`` (the client given to :meth:`watch_redis` as such, any psycopg
connection and aiormq channel); ``operation`` names the command (a script by the
attribute that holds it, e.g. ``"_commit"``; a pipeline ``"pipeline[XADD+_settle]"``).
"""

from __future__ import annotations

import contextvars
from collections import Counter, defaultdict
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from collections.abc import Iterator

_label: contextvars.ContextVar[str | None] = contextvars.ContextVar("roundtrips", default=None)
FRAME_ONLY = frozenset({"basic_ack", "basic_nack", "basic_reject"})


class RoundTrips:
    """Round trips (and one-way frames) by label, then by ``(side, operation)``."""

    def __init__(self) -> None:
        self.counts: defaultdict[str, Counter[tuple[str, str]]] = defaultdict(Counter)
        self.frames: defaultdict[str, Counter[tuple[str, str]]] = defaultdict(Counter)
        self._pools: dict[int, tuple[str, dict[str, str]]] = {}  # pool id -> side, sha -> name
        self._undo: list[tuple[Any, str, Any]] = []

    # -- what to count -----------------------------------------------------------------
    def watch_redis(self, owner: Any, side: str) -> None:
        """Count the calls of ``owner``'s redis-py client (``owner._client``) as ``side``;
        its scripts are named by the attributes of ``owner`` that hold them."""
        from redis.commands.core import AsyncScript

        names = {v.sha: k for k, v in vars(owner).items() if isinstance(v, AsyncScript)}
        self._pools[id(owner._client.connection_pool)] = (side, names)

    @contextmanager
    def counting(self, label: str) -> Iterator[None]:
        """Count the calls made in this block (and the tasks it starts) under ``label``."""
        token = _label.set(label)
        try:
            yield
        finally:
            _label.reset(token)

    def total(self, label: str, side: str | None = None) -> int:
        return sum(n for (s, _), n in self.counts[label].items() if side in (None, s))

    # -- patching ------------------------------------------------------------------------
    def __enter__(self) -> RoundTrips:
        self._patch_redis()
        self._patch_psycopg()
        self._patch_aiormq()
        return self

    def __exit__(self, *exc: object) -> None:
        for owner, name, original in reversed(self._undo):
            setattr(owner, name, original)
        self._undo.clear()

    def _patch(self, owner: Any, name: str, make: Any) -> None:
        original = getattr(owner, name)
        self._undo.append((owner, name, original))
        setattr(owner, name, make(original))

    def _note(self, side: str, operation: str, *, frame: bool = False) -> None:
        label = _label.get() or "other"
        (self.frames if frame else self.counts)[label][(side, operation)] += 1

    def _redis_side(self, client: Any, command: Any, args: Any) -> tuple[str, str]:
        side, names = self._pools.get(id(client.connection_pool), ("redis", {}))
        name = str(command).upper()
        if name in ("EVALSHA", "EVAL") and args:
            name = names.get(str(args[0]), name)
        return side, name

    def _patch_redis(self) -> None:
        from redis.asyncio.client import Pipeline, Redis

        counter = self

        def command(original: Any) -> Any:
            async def execute_command(client: Any, *args: Any, **options: Any) -> Any:
                if not isinstance(client, Pipeline):
                    counter._note(*counter._redis_side(client, args[0], args[1:]))
                return await original(client, *args, **options)

            return execute_command

        def pipeline(original: Any) -> Any:
            async def execute(pipe: Any, *args: Any, **options: Any) -> Any:
                if pipe.command_stack:
                    parts = [
                        counter._redis_side(pipe, args[0], args[1:])
                        for args, _ in pipe.command_stack
                    ]
                    operations = "+".join(op for _, op in parts)
                    counter._note(parts[0][0], f"pipeline[{operations}]")
                return await original(pipe, *args, **options)

            return execute

        self._patch(Redis, "execute_command", command)
        self._patch(Pipeline, "execute", pipeline)

    def _patch_psycopg(self) -> None:
        from psycopg import AsyncConnection

        counter = self
        in_pipeline = {"_sync_gen", "_exit_gen", "_fetch_gen"}

        def wait(original: Any) -> Any:
            async def waiting(conn: Any, gen: Any, *args: Any, **options: Any) -> Any:
                name = getattr(gen, "__name__", "query")
                if conn._pipeline is None or name in in_pipeline:
                    counter._note("store", "sql" if conn._pipeline is None else "pipeline")
                return await original(conn, gen, *args, **options)

            return waiting

        self._patch(AsyncConnection, "wait", wait)

    def _patch_aiormq(self) -> None:
        from aiormq import Channel

        counter = self

        def method(name: str) -> Any:
            def make(original: Any) -> Any:
                async def call(channel: Any, *args: Any, **options: Any) -> Any:
                    counter._note("broker", name, frame=name in FRAME_ONLY)
                    return await original(channel, *args, **options)

                return call

            return make

        for name in ("basic_publish", "rpc", *FRAME_ONLY):
            self._patch(Channel, name, method(name))

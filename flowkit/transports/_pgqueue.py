"""``PostgresQueueTransport``: queues in a PostgreSQL table.

``--transport postgresql://...`` gives a fleet that already has PostgreSQL (for
``PostgresStore``) a queue with no other broker. Messages are rows of
``flowkit_queue`` in ``schema``; a consumer claims the next available row with
``SELECT ... FOR UPDATE SKIP LOCKED LIMIT 1`` (concurrent consumers skip each
other's rows instead of queueing on them) and writes a fresh lease token and
expiry. Settling checks the token: a delivery whose lease ran out and was
claimed again by another consumer can no longer ack, nack, extend or
dead-letter it (a :class:`~flowkit.transports.DeliveryError` says so). Dead
letters move, with their reason, to ``flowkit_dead_letters``. Times come from
the database server's clock, so workers on hosts with skewed clocks agree.

A send ``NOTIFY``s the schema's channel; each ``receive`` listens on its own
connection and wakes at once, and polls with backoff (``poll_interval`` up to
``max_poll_interval``) as a fallback for delays, nacks and expired leases. The
tables are created on first use under the same ``pg_advisory_xact_lock`` as
``PostgresStore``'s, so stores and queues may start at once on one schema.
Every psycopg exception becomes a :class:`~flowkit.TransportError` in
:func:`translate_errors`.

psycopg's async connections run on asyncio only, so this transport does too
(not trio).

Ordering: the highest ``priority`` first, then the earliest available message
(by the time it became available, then by insertion), so a queue is FIFO within
a priority until deliveries are delayed, nacked or redelivered after their
lease; several consumers interleave, and ``key`` implies no ordering. Schema
version 2 added the ``priority`` column (0 for the rows a version 1 table holds).
"""

from __future__ import annotations

import hashlib
import json
import uuid
from contextlib import aclosing, contextmanager
from typing import TYPE_CHECKING, Any, LiteralString

import anyio

from .._durations import Backoff
from .._errors import MissingDependency, TransportError
from ..backends._options import check_positive
from ..backends._postgres import SchemaClient, failure, migrate, redact_dsn, split_dsn
from ._claims import claim_or_hand_back
from ._memory import DeadLetter
from ._protocol import DeliveryError

try:
    import psycopg
except ImportError:  # the "postgres" extra is not installed: the constructor says so
    _HAVE_PSYCOPG = False
else:
    _HAVE_PSYCOPG = True

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Iterator, Mapping

    from ..backends._options import Converter

    Conn = psycopg.AsyncConnection[tuple[Any, ...]]

_NOW: LiteralString = "extract(epoch FROM statement_timestamp())::double precision"
_MIGRATIONS: tuple[tuple[LiteralString, ...], ...] = (
    (  # v1
        "CREATE TABLE flowkit_queue (id BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,"
        " queue TEXT NOT NULL, body BYTEA NOT NULL, headers TEXT NOT NULL, key TEXT,"
        " available_at DOUBLE PRECISION NOT NULL, attempts INTEGER NOT NULL DEFAULT 0,"
        " lease_token TEXT, lease_until DOUBLE PRECISION)",
        "CREATE INDEX flowkit_queue_ready ON flowkit_queue (queue, available_at, id)",
        "CREATE TABLE flowkit_dead_letters (id BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,"
        " queue TEXT NOT NULL, body BYTEA NOT NULL, headers TEXT NOT NULL, key TEXT,"
        " attempts INTEGER NOT NULL, reason TEXT NOT NULL, dead_at DOUBLE PRECISION NOT NULL)",
        "CREATE INDEX flowkit_dead_letters_queue ON flowkit_dead_letters (queue, id)",
    ),
    (  # v2: priorities
        "ALTER TABLE flowkit_queue ADD COLUMN priority SMALLINT NOT NULL DEFAULT 0",
        "CREATE INDEX flowkit_queue_next ON flowkit_queue (queue, priority DESC, available_at, id)",
        "DROP INDEX flowkit_queue_ready",
    ),
)
SCHEMA_VERSION = len(_MIGRATIONS)
_URL_OPTIONS: dict[str, Converter] = {
    "schema": str,
    "visibility_timeout": float,
    "poll_interval": float,
    "max_poll_interval": float,
    "pool_size": int,
}
_SEND: LiteralString = (
    "WITH sent AS (INSERT INTO flowkit_queue (queue, body, headers, key, priority, available_at)"
    " VALUES (%(queue)s, %(body)s, %(headers)s, %(key)s, %(priority)s, " + _NOW + " + %(delay)s)"
    " RETURNING queue)"
    " SELECT CASE WHEN %(wake)s THEN pg_notify(%(channel)s, queue) END FROM sent"
)
# available_at follows lease_until while leased, so the claim's index scan skips rows in flight
_CLAIM: LiteralString = (
    "UPDATE flowkit_queue SET lease_token = %(token)s, lease_until = " + _NOW + " + %(lease)s,"
    " available_at = " + _NOW + " + %(lease)s, attempts = attempts + 1"
    " WHERE id = (SELECT id FROM flowkit_queue WHERE queue = %(queue)s"
    " AND available_at <= " + _NOW + " AND (lease_until IS NULL OR lease_until < " + _NOW + ")"
    " ORDER BY priority DESC, available_at, id LIMIT 1 FOR UPDATE SKIP LOCKED)"
    " RETURNING id, body, headers, key, attempts"
)
_ACK: LiteralString = (
    "DELETE FROM flowkit_queue WHERE id = %(id)s AND lease_token = %(token)s RETURNING id"
)
_NACK: LiteralString = (
    "WITH released AS (UPDATE flowkit_queue SET lease_token = NULL, lease_until = NULL,"
    " available_at = " + _NOW + " + %(delay)s"
    " WHERE id = %(id)s AND lease_token = %(token)s RETURNING queue)"
    " SELECT CASE WHEN %(wake)s THEN pg_notify(%(channel)s, queue) END FROM released"
)
_EXTEND: LiteralString = (
    "UPDATE flowkit_queue SET lease_until = " + _NOW + " + %(seconds)s,"
    " available_at = " + _NOW + " + %(seconds)s"
    " WHERE id = %(id)s AND lease_token = %(token)s RETURNING id"
)
_BURY: LiteralString = (
    "WITH buried AS (DELETE FROM flowkit_queue WHERE id = %(id)s AND lease_token = %(token)s"
    " RETURNING queue, body, headers, key, attempts)"
    " INSERT INTO flowkit_dead_letters (queue, body, headers, key, attempts, reason, dead_at)"
    " SELECT queue, body, headers, key, attempts, %(reason)s, " + _NOW + " FROM buried"
    " RETURNING id"
)


@contextmanager
def translate_errors(operation: str, dsn: str) -> Iterator[None]:
    """Re-raise any psycopg exception in the block as a TransportError naming ``operation``.

    ``psycopg.Rollback`` is not an error but a signal that ``conn.transaction()``
    consumes, so it is left alone.
    """
    try:
        yield
    except (psycopg.Error, psycopg.Warning) as exc:
        raise TransportError(failure("PostgreSQL queue", operation, dsn, exc)) from exc


def channel_name(schema: str) -> str:
    """The NOTIFY channel of ``schema``'s queues (an identifier short enough for any schema)."""
    return "flowkit_queue_" + hashlib.sha256(schema.encode()).hexdigest()[:16]


async def _migrate(conn: Conn, schema: str) -> None:
    """Create the queue tables in ``schema``, or bring them up to :data:`SCHEMA_VERSION`
    (under the advisory lock ``PostgresStore`` migrates under: a store and a queue may
    create the schema at once)."""
    await migrate(
        conn,
        schema,
        _MIGRATIONS,
        version_table="flowkit_queue_schema",
        tables="flowkit queue tables",
        error=TransportError,
    )


class PostgresDelivery:
    """A message leased from a :class:`PostgresQueueTransport`, settled by its lease token."""

    def __init__(self, transport: PostgresQueueTransport, queue: str, row: Any, token: str) -> None:
        self._transport = transport
        self._queue = queue
        self._id = int(row[0])
        self._token = token
        self.body = bytes(row[1])
        self.headers: Mapping[str, str] = json.loads(row[2])
        self.key: str | None = row[3]
        self.attempt = int(row[4])

    def __repr__(self) -> str:
        return f"PostgresDelivery(queue={self._queue!r}, id={self._id}, attempt={self.attempt})"

    async def ack(self) -> None:
        """Delete the message."""
        await self._settle("ack", _ACK)

    async def nack(self, requeue_after: float | None = None) -> None:
        """Release the lease; the message is available again after ``requeue_after`` seconds."""
        delay = requeue_after or 0.0
        channel = self._transport.channel
        await self._settle("nack", _NACK, delay=delay, wake=delay <= 0, channel=channel)

    async def extend(self, seconds: float) -> None:
        """Hold the lease until ``seconds`` from now (by the server's clock)."""
        await self._settle("extend", _EXTEND, seconds=seconds)

    async def dead_letter(self, reason: str) -> None:
        """Move the message and ``reason`` to ``flowkit_dead_letters``."""
        await self._settle("dead_letter", _BURY, reason=reason)

    async def _settle(self, operation: str, query: LiteralString, **params: Any) -> None:
        params.update(id=self._id, token=self._token)
        if not await self._transport._query(operation, query, params):
            raise DeliveryError(
                f"cannot {operation} message {self._id} on PostgreSQL queue {self._queue!r}: it "
                "is no longer held (already settled, or its visibility timeout ran out and it "
                "was delivered again); extend() the lease of long handlers"
            )


class PostgresQueueTransport(SchemaClient):
    """Queues in PostgreSQL, shared by every worker that reaches the database.

    >>> transport = PostgresQueueTransport("postgresql://app@db/flowkit", schema="flowkit")
    """

    def __init__(
        self,
        dsn: str,
        *,
        visibility_timeout: float = 30.0,
        poll_interval: float = 0.05,
        max_poll_interval: float = 0.5,
        schema: str = "public",
        pool_size: int = 4,
    ) -> None:
        if not _HAVE_PSYCOPG:
            raise MissingDependency("PostgresQueueTransport", "postgres")
        check_positive(
            "PostgresQueueTransport",
            visibility_timeout=visibility_timeout,
            poll_interval=poll_interval,
            pool_size=pool_size,
        )
        super().__init__(
            dsn, schema=schema, pool_size=pool_size, migrate=_migrate, translate=translate_errors
        )
        self.channel = channel_name(schema)
        self.visibility_timeout = visibility_timeout
        self.poll_interval = poll_interval
        self.max_poll_interval = max(poll_interval, max_poll_interval)
        self._idle_backoff = Backoff(initial=poll_interval, max=self.max_poll_interval)
        self._naps: set[anyio.CancelScope] = set()  # receivers waiting for a NOTIFY
        self._parked: set[Conn] = set()  # listeners of receivers suspended at a yield
        self._closed = False

    @classmethod
    def from_url(cls, url: str, **options: Any) -> PostgresQueueTransport:
        """Build from a libpq URL, ``postgresql://user:password@host:port/db?schema=queues``.

        Query options: ``schema`` (str), ``visibility_timeout``,
        ``poll_interval``, ``max_poll_interval`` (float seconds), ``pool_size``
        (int). Other parameters (``sslmode=``, ``connect_timeout=``...) stay in
        the DSN for libpq. Keyword ``options`` override the query.
        """
        dsn, found = split_dsn(url, "queue", _URL_OPTIONS)
        return cls(dsn, **(found | options))

    def __repr__(self) -> str:
        return f"PostgresQueueTransport({redact_dsn(self.dsn)!r}, schema={self.schema!r})"

    # -- plumbing (more in SchemaClient) ------------------------------------------
    async def _query(self, operation: str, query: LiteralString, params: Any) -> list[Any]:
        """Run one statement on a pooled connection; its rows (none for a plain command)."""
        if self._closed:
            raise TransportError(f"{self!r} is closed; cannot {operation}")
        with translate_errors(operation, self.dsn):
            async with self._pool.connection() as conn:
                cur = await conn.execute(query, params)
                return await cur.fetchall() if cur.description else []

    # -- the Transport protocol -----------------------------------------------
    async def send(
        self,
        queue: str,
        body: bytes,
        *,
        key: str | None = None,
        headers: Mapping[str, str] | None = None,
        delay: float | None = None,
        priority: int | None = None,
    ) -> None:
        """Insert the message (committed on return) and wake the queue's receivers; it is
        claimed before the available messages of a lower ``priority``."""
        params = {
            "queue": queue,
            "body": bytes(body),
            "headers": json.dumps(dict(headers or {})),
            "key": key,
            "priority": priority or 0,
            "delay": delay or 0.0,
            "wake": not delay,
            "channel": self.channel,
        }
        await self._query("send", _SEND, params)

    async def connect(self, queue: str) -> None:
        """Open a pooled connection, creating the schema's tables on first use
        (idempotent); TransportError if the server cannot be reached. Queues are rows:
        ``queue`` needs nothing more."""
        await self._query("connect", "SELECT 1", None)

    async def receive(self, queue: str) -> AsyncIterator[PostgresDelivery]:
        """Claim messages one at a time; between claims, wait for a NOTIFY or the poll delay."""
        async with self._listening(self.channel, "receive") as listener:
            naps = self._idle_backoff.delays()  # longer while claims in a row find nothing
            while not self._closed:
                delivery = await claim_or_hand_back(lambda: self._claim(queue))
                if delivery is not None:
                    naps = self._idle_backoff.delays()
                    self._parked.add(listener)
                    try:
                        yield delivery
                    finally:
                        self._parked.discard(listener)
                    continue
                await self._nap(listener, queue, next(naps))

    async def _claim(self, queue: str) -> PostgresDelivery | None:
        token = uuid.uuid4().hex
        params = {"queue": queue, "token": token, "lease": self.visibility_timeout}
        try:
            rows = await self._query("receive", _CLAIM, params)
        except TransportError:
            if self._closed:  # closed while claiming: the receiver just stops
                return None
            raise
        return PostgresDelivery(self, queue, rows[0], token) if rows else None

    async def _nap(self, listener: Conn, queue: str, delay: float) -> None:
        """Return after ``delay`` seconds, or sooner on a NOTIFY for ``queue`` or :meth:`close`."""
        with anyio.move_on_after(delay) as scope:
            self._naps.add(scope)
            try:
                with translate_errors("receive", self.dsn):
                    async with aclosing(listener.notifies()) as notifies:
                        async for notify in notifies:
                            if notify.payload == queue:
                                break
            finally:
                self._naps.discard(scope)

    async def close(self) -> None:
        """Stop the receivers and close the connections; unsettled leases run out."""
        self._closed = True
        for scope in self._naps:
            scope.cancel()
        parked, self._parked = self._parked, set()
        for conn in parked:
            await conn.close()
        with translate_errors("close", self.dsn):
            await self._pool.close()

    # -- inspection -----------------------------------------------------------
    async def dead_letters(self, queue: str) -> list[DeadLetter]:
        """The messages dead-lettered from ``queue``, oldest first."""
        rows = await self._query(
            "dead_letters",
            "SELECT body, headers, reason FROM flowkit_dead_letters WHERE queue = %s ORDER BY id",
            (queue,),
        )
        return [DeadLetter(queue, bytes(b), json.loads(h), reason) for b, h, reason in rows]

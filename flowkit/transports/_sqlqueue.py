"""``SQLiteQueueTransport``: queues in a SQLite table, the embedded default.

``--transport sqlite:///flowkit.db`` lets several worker processes on one
machine share work with no broker at all. Messages are rows of
``flowkit_queue``; a consumer claims the next available row in a
``BEGIN IMMEDIATE`` transaction (the database write lock, so two processes
never claim the same row) by writing a fresh lease token and a lease expiry.
Settling checks the token: a delivery whose lease ran out and was claimed again
by another consumer can no longer ack, nack, extend or dead-letter it (a
:class:`~flowkit.transports.DeliveryError` says so). Dead letters move, with
their reason, to ``flowkit_dead_letters``.

The file may be the store's database too (``SQLiteStore`` uses other table
names). WAL mode and a busy timeout let processes share it. The stdlib
``sqlite3`` module runs in worker threads, one connection per transport, and
every ``sqlite3`` exception becomes a :class:`~flowkit.TransportError` in
:func:`translate_errors`. Receivers poll, backing off from ``poll_interval`` to
``max_poll_interval`` while the queue is empty; a send through the same
transport object wakes them at once.

Ordering: the highest ``priority`` first, then the earliest available message
(by the time it became available, then by insertion), so a queue is FIFO within
a priority until deliveries are delayed, nacked or redelivered after their
lease; several consumers interleave, and ``key`` implies no ordering. A
database made before priorities gets the ``priority`` column (0 for the rows it
holds) when a transport first opens it.
"""

from __future__ import annotations

import json
import sqlite3
import time
import uuid
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any, TypeVar

import anyio
import anyio.to_thread

from .._durations import Backoff
from .._errors import ConfigurationError, TransportError
from ..backends._options import check_positive, redact, split_options, sqlite_path
from ..backends._sqlite import connect
from ._claims import claim_or_hand_back
from ._memory import DeadLetter
from ._protocol import DeliveryError

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Callable, Iterator, Mapping
    from pathlib import Path

    from ..backends._options import Converter

T = TypeVar("T")
_URL_OPTIONS: dict[str, Converter] = {
    "visibility_timeout": float,
    "poll_interval": float,
    "max_poll_interval": float,
}
_Row = tuple[int, bytes, str, "str | None", int]  # id, body, headers, key, attempts

_SCHEMA = """
CREATE TABLE IF NOT EXISTS flowkit_queue (
    id INTEGER PRIMARY KEY AUTOINCREMENT, queue TEXT NOT NULL, body BLOB NOT NULL,
    headers TEXT NOT NULL, key TEXT, available_at REAL NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0, lease_token TEXT, lease_until REAL,
    priority INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE IF NOT EXISTS flowkit_dead_letters (
    id INTEGER PRIMARY KEY AUTOINCREMENT, queue TEXT NOT NULL, body BLOB NOT NULL,
    headers TEXT NOT NULL, key TEXT, attempts INTEGER NOT NULL, reason TEXT NOT NULL,
    dead_at REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS flowkit_dead_letters_queue ON flowkit_dead_letters (queue, id)
"""
# run once the priority column exists (a database made before priorities gets it first)
_INDEXES = """
DROP INDEX IF EXISTS flowkit_queue_ready;
CREATE INDEX IF NOT EXISTS flowkit_queue_next
    ON flowkit_queue (queue, priority DESC, available_at, id)
"""
_NEXT = (
    "SELECT id, body, headers, key, attempts FROM flowkit_queue"
    " WHERE queue = ? AND available_at <= ? AND (lease_until IS NULL OR lease_until < ?)"
    " ORDER BY priority DESC, available_at, id LIMIT 1"
)
# available_at follows lease_until while leased, so the claim's index scan skips rows in flight
_LEASE = (
    "UPDATE flowkit_queue SET lease_token = ?, lease_until = ?, available_at = ?,"
    " attempts = attempts + 1 WHERE id = ?"
)
_ACK = "DELETE FROM flowkit_queue WHERE id = ? AND lease_token = ?"
_NACK = (
    "UPDATE flowkit_queue SET lease_token = NULL, lease_until = NULL, available_at = ?"
    " WHERE id = ? AND lease_token = ?"
)
_EXTEND = (
    "UPDATE flowkit_queue SET lease_until = ?, available_at = ? WHERE id = ? AND lease_token = ?"
)
_BURY = (
    "INSERT INTO flowkit_dead_letters (queue, body, headers, key, attempts, reason, dead_at)"
    " SELECT queue, body, headers, key, attempts, ?, ? FROM flowkit_queue"
    " WHERE id = ? AND lease_token = ?"
)


@contextmanager
def translate_errors(operation: str, path: str) -> Iterator[None]:
    """Re-raise any ``sqlite3`` exception in the block as a TransportError naming ``operation``."""
    try:
        yield
    except (sqlite3.Error, sqlite3.Warning) as exc:
        raise TransportError(
            f"SQLite queue {path!r}: {operation} failed ({type(exc).__name__}: {exc}); "
            "check that the file is a writable SQLite database"
        ) from exc


@contextmanager
def _immediate(conn: sqlite3.Connection) -> Iterator[None]:
    """A write transaction for the block: committed if it finishes, else rolled back."""
    conn.execute("BEGIN IMMEDIATE")
    try:
        yield
        conn.execute("COMMIT")
    finally:
        if conn.in_transaction:
            conn.execute("ROLLBACK")


def _open(path: str) -> sqlite3.Connection:
    """Connect in WAL mode with a busy timeout, creating the tables if need be."""
    conn = connect(path)
    ready = False
    try:
        with _immediate(conn):
            for statement in filter(str.strip, _SCHEMA.split(";")):
                conn.execute(statement)
            _add_priority(conn)
            for statement in filter(str.strip, _INDEXES.split(";")):
                conn.execute(statement)
        ready = True
    finally:
        if not ready:
            conn.close()
    return conn


def _add_priority(conn: sqlite3.Connection) -> None:
    """Give a queue table made before priorities its ``priority`` column (0 for every row)."""
    columns = {row[1] for row in conn.execute("PRAGMA table_info(flowkit_queue)")}
    if "priority" not in columns:
        conn.execute("ALTER TABLE flowkit_queue ADD COLUMN priority INTEGER NOT NULL DEFAULT 0")


def _claim(conn: sqlite3.Connection, queue: str, token: str, lease: float) -> _Row | None:
    """Lease the next available message of ``queue`` to ``token`` for ``lease`` seconds."""
    now = time.time()
    with _immediate(conn):
        row: _Row | None = conn.execute(_NEXT, (queue, now, now)).fetchone()
        if row is not None:
            conn.execute(_LEASE, (token, now + lease, now + lease, row[0]))
    return row


def _bury(conn: sqlite3.Connection, row_id: int, token: str, reason: str) -> bool:
    """Move the held message to the dead letters; False if it is no longer held."""
    with _immediate(conn):
        moved = conn.execute(_BURY, (reason, time.time(), row_id, token)).rowcount == 1
        if moved:
            conn.execute(_ACK, (row_id, token))
    return moved


def _updated(conn: sqlite3.Connection, query: str, params: tuple[Any, ...]) -> bool:
    return conn.execute(query, params).rowcount == 1


class SQLiteDelivery:
    """A message leased from a :class:`SQLiteQueueTransport`, settled by its lease token."""

    def __init__(self, transport: SQLiteQueueTransport, queue: str, row: _Row, token: str) -> None:
        self._transport = transport
        self._queue = queue
        self._id = row[0]
        self._token = token
        self.body = bytes(row[1])
        self.headers: Mapping[str, str] = json.loads(row[2])
        self.key = row[3]
        self.attempt = row[4] + 1

    def __repr__(self) -> str:
        return f"SQLiteDelivery(queue={self._queue!r}, id={self._id}, attempt={self.attempt})"

    async def ack(self) -> None:
        """Delete the message."""
        await self._settle("ack", _updated, _ACK, (self._id, self._token))

    async def nack(self, requeue_after: float | None = None) -> None:
        """Release the lease; the message is available again after ``requeue_after`` seconds."""
        at = time.time() + (requeue_after or 0.0)
        await self._settle("nack", _updated, _NACK, (at, self._id, self._token))
        self._transport._wake_receivers()

    async def extend(self, seconds: float) -> None:
        """Hold the lease until ``seconds`` from now."""
        until = time.time() + seconds
        await self._settle("extend", _updated, _EXTEND, (until, until, self._id, self._token))

    async def dead_letter(self, reason: str) -> None:
        """Move the message and ``reason`` to ``flowkit_dead_letters``."""
        await self._settle("dead_letter", _bury, self._id, self._token, reason)

    async def _settle(self, operation: str, fn: Callable[..., bool], *args: Any) -> None:
        held = await self._transport._run(operation, lambda conn: fn(conn, *args))
        if not held:
            raise DeliveryError(
                f"cannot {operation} message {self._id} on SQLite queue {self._queue!r}: it is "
                "no longer held (already settled, or its visibility timeout ran out and it was "
                "delivered again); extend() the lease of long handlers"
            )


class SQLiteQueueTransport:
    """Queues in a SQLite file shared by the processes of one machine.

    >>> transport = SQLiteQueueTransport("flowkit.db", visibility_timeout=60)
    """

    def __init__(
        self,
        path: str | Path,
        *,
        visibility_timeout: float = 30.0,
        poll_interval: float = 0.05,
        max_poll_interval: float = 0.5,
    ) -> None:
        check_positive(
            "SQLiteQueueTransport",
            visibility_timeout=visibility_timeout,
            poll_interval=poll_interval,
        )
        self.path = str(path)
        self.visibility_timeout = visibility_timeout
        self.poll_interval = poll_interval
        self.max_poll_interval = max(poll_interval, max_poll_interval)
        self._idle_backoff = Backoff(initial=poll_interval, max=self.max_poll_interval)
        self._conn: sqlite3.Connection | None = None
        self._lock = anyio.Lock()
        self._wake = anyio.Event()
        self._closed = False

    @classmethod
    def from_url(cls, url: str, **options: Any) -> SQLiteQueueTransport:
        """Build from ``sqlite:///relative.db``, ``sqlite:////absolute.db`` or ``sqlite://``
        (in memory), optionally with ``?visibility_timeout=60``.

        Query options: ``visibility_timeout``, ``poll_interval``,
        ``max_poll_interval`` (float seconds); any other is refused (the path is
        a file name, not a SQLite URI). Keyword ``options`` override the query.

        >>> SQLiteQueueTransport.from_url("sqlite:///q.db?visibility_timeout=60").path
        'q.db'
        """
        if not url.lower().startswith("sqlite://"):
            raise ConfigurationError(
                f"not a SQLite queue URL: {redact(url)!r}; use sqlite:///path/to/flowkit.db"
            )
        rest, found = split_options(url, _URL_OPTIONS)
        return cls(sqlite_path(rest), **(found | options))

    def __repr__(self) -> str:
        return f"SQLiteQueueTransport({self.path!r})"

    # -- plumbing -------------------------------------------------------------
    async def _run(self, operation: str, fn: Callable[[sqlite3.Connection], T]) -> T:
        """Run ``fn`` on this transport's connection in a worker thread, one call at a time."""
        async with self._lock:
            if self._closed:
                raise TransportError(f"{self!r} is closed; cannot {operation}")
            return await anyio.to_thread.run_sync(self._call, operation, fn)

    def _call(self, operation: str, fn: Callable[[sqlite3.Connection], T]) -> T:
        with translate_errors(operation, self.path):
            if self._conn is None:
                self._conn = _open(self.path)
            return fn(self._conn)

    def _wake_receivers(self) -> None:
        self._wake.set()
        self._wake = anyio.Event()

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
        """Insert the message; it becomes available ``delay`` seconds from now, and is
        claimed before the available messages of a lower ``priority``."""
        row = (queue, bytes(body), json.dumps(dict(headers or {})), key, priority or 0)
        await self._run(
            "send",
            lambda conn: conn.execute(
                "INSERT INTO flowkit_queue (queue, body, headers, key, priority, available_at)"
                " VALUES (?, ?, ?, ?, ?, ?)",
                (*row, time.time() + (delay or 0.0)),
            ),
        )
        if not delay:
            self._wake_receivers()

    async def connect(self, queue: str) -> None:
        """Open the database file, creating its tables on first use: a worker says it
        started once its queue is there. Queues are rows: ``queue`` needs nothing more."""
        await self._run("connect", lambda conn: None)

    async def receive(self, queue: str) -> AsyncIterator[SQLiteDelivery]:
        """Claim messages one at a time, polling with backoff while the queue is empty."""
        naps = self._idle_backoff.delays()  # longer while polls in a row find nothing
        while not self._closed:
            delivery = await claim_or_hand_back(lambda: self._claim(queue))
            if delivery is not None:
                naps = self._idle_backoff.delays()
                yield delivery
                continue
            wake = self._wake
            with anyio.move_on_after(next(naps)):
                await wake.wait()

    async def _claim(self, queue: str) -> SQLiteDelivery | None:
        token = uuid.uuid4().hex
        lease = self.visibility_timeout
        try:
            row = await self._run("receive", lambda conn: _claim(conn, queue, token, lease))
        except TransportError:
            if self._closed:  # closed while claiming: the receiver just stops
                return None
            raise
        return None if row is None else SQLiteDelivery(self, queue, row, token)

    async def close(self) -> None:
        """Stop the receivers and close the connection; unsettled leases run out."""
        self._closed = True
        self._wake_receivers()
        async with self._lock:
            conn, self._conn = self._conn, None
            if conn is not None:
                await anyio.to_thread.run_sync(conn.close)

    # -- inspection -----------------------------------------------------------
    async def dead_letters(self, queue: str) -> list[DeadLetter]:
        """The messages dead-lettered from ``queue``, oldest first."""
        rows = await self._run(
            "dead_letters",
            lambda conn: conn.execute(
                "SELECT body, headers, reason FROM flowkit_dead_letters WHERE queue = ?"
                " ORDER BY id",
                (queue,),
            ).fetchall(),
        )
        return [
            DeadLetter(queue, bytes(body), json.loads(hdrs), reason) for body, hdrs, reason in rows
        ]

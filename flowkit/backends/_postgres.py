"""PostgreSQL plumbing shared by ``PostgresStore`` and ``PostgresQueueTransport``.

Both keep their tables in one ``schema`` of a database: :class:`SchemaClient`
holds the DSN, the schema and a :class:`ConnectionPool` of autocommit
connections whose ``search_path`` is the schema, the first of which creates
or migrates the tables (:func:`migrate`, under an advisory lock per schema, so
stores and queues of several processes may start at once on one schema); a
``LISTEN`` gets a connection of its own (:meth:`SchemaClient._listening`).
:func:`split_dsn` reads their URLs, :func:`redact_dsn` and :func:`failure`
word their errors.

psycopg's async connections run on asyncio only (not trio).
"""

from __future__ import annotations

import re
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Any, LiteralString
from urllib.parse import urlsplit

import anyio

from .._errors import ConfigurationError
from ._options import redact, split_options

try:
    import psycopg
    from psycopg import sql
except ImportError:  # the "postgres" extra is not installed: the constructors say so
    pass

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
    from contextlib import AbstractContextManager

    from ._options import Converter

    Conn = psycopg.AsyncConnection[tuple[Any, ...]]

_PASSWORD = re.compile(r"(password\s*=\s*)('(?:[^'\\]|\\.)*'|[^\s&]+)", re.IGNORECASE)


def redact_dsn(dsn: str, text: str | None = None) -> str:
    """``text`` (default: the DSN) with the DSN's password replaced by ``***``.

    Handles the URL form (``postgresql://user:pw@host``) and ``password=pw``.
    """
    text = redact(dsn) if text is None else text
    secret = urlsplit(dsn).password
    if secret:
        text = text.replace(secret, "***")
    return _PASSWORD.sub(r"\1***", text)


def failure(owner: str, operation: str, dsn: str, exc: BaseException) -> str:
    """The message of the flowkit error that replaces psycopg's ``exc``, raised while
    ``owner`` (``"PostgreSQL store"``) did ``operation``: passwords masked."""
    detail = redact_dsn(dsn, f"{type(exc).__name__}: {exc}".strip())
    return (
        f"{owner} {redact_dsn(dsn)!r}: {operation} failed ({detail}); "
        "check that the server is reachable and the user may use the schema"
    )


def split_dsn(url: str, kind: str, accepted: Mapping[str, Converter]) -> tuple[str, dict[str, Any]]:
    """The libpq DSN of a ``postgresql://`` (or ``postgres://``) URL, and the options of
    ``accepted`` taken off its query (other parameters, ``sslmode=``..., stay for libpq).

    Raises:
        ConfigurationError: not a PostgreSQL URL (``kind``, ``"store"`` or
            ``"queue"``, names what was expected), or a bad option.
    """
    if not url.lower().startswith(("postgresql://", "postgres://")):
        raise ConfigurationError(
            f"not a PostgreSQL {kind} URL: {redact(url)!r}; use postgresql://user@host/db"
        )
    return split_options(url, accepted, mode="pass-through")


class ConnectionPool:
    """At most ``size`` connections, reused; one left in doubt is closed, never reused,
    and one found broken (the server went away) takes the idle ones with it."""

    def __init__(self, open_: Callable[[], Awaitable[Conn]], size: int) -> None:
        self._open = open_
        self._slots = anyio.Semaphore(size)
        self._idle: list[Conn] = []
        self._closed = False

    @asynccontextmanager
    async def connection(self) -> AsyncIterator[Conn]:
        """A connection (in autocommit mode, outside any transaction) for the block."""
        async with self._slots:
            conn = await self._take()
            try:
                yield conn
            finally:
                with anyio.CancelScope(shield=True):
                    await self._give_back(conn)

    async def _take(self) -> Conn:
        while self._idle:
            conn = self._idle.pop()
            if not conn.closed:
                return conn
        return await self._open()

    async def _give_back(self, conn: Conn) -> None:
        idle = conn.info.transaction_status == psycopg.pq.TransactionStatus.IDLE
        if idle and not self._closed and not conn.closed:
            self._idle.append(conn)
            return
        await conn.close()
        if conn.broken:  # the server went away: the idle ones, opened before, are dead too
            stale, self._idle = self._idle, []
            for other in stale:
                await other.close()

    async def close(self) -> None:
        """Close the idle connections; busy ones close when given back."""
        self._closed = True
        idle, self._idle = self._idle, []
        for conn in idle:
            await conn.close()


class SchemaClient:
    """A client of the tables in ``schema``: pooled connections whose ``search_path`` is
    the schema, the first of which runs ``migrate(conn, schema)`` (once per client).

    ``translate(operation, dsn)`` is the subclass's context manager that turns
    psycopg's exceptions into flowkit's.
    """

    def __init__(
        self,
        dsn: str,
        *,
        schema: str,
        pool_size: int,
        migrate: Callable[[Conn, str], Awaitable[None]],
        translate: Callable[[str, str], AbstractContextManager[None]],
    ) -> None:
        self.dsn = dsn
        self.schema = schema
        self.pool_size = pool_size
        self._migrate = migrate
        self._translate = translate
        self._pool = ConnectionPool(self._open, pool_size)
        self._migrated = False
        self._migrating = anyio.Lock()

    async def _open(self) -> Conn:
        conn = await psycopg.AsyncConnection.connect(self.dsn, autocommit=True)
        ready = False
        try:
            await conn.execute(sql.SQL("SET search_path TO {}").format(sql.Identifier(self.schema)))
            async with self._migrating:
                if not self._migrated:
                    await self._migrate(conn, self.schema)
                    self._migrated = True
            ready = True
        finally:
            if not ready:
                with anyio.CancelScope(shield=True):
                    await conn.close()
        return conn

    @asynccontextmanager
    async def _listening(self, channel: str, operation: str) -> AsyncIterator[Conn]:
        """A connection of its own that ``LISTEN``s on ``channel``, closed after the block."""
        with self._translate(operation, self.dsn):
            conn = await psycopg.AsyncConnection.connect(self.dsn, autocommit=True)
        try:
            with self._translate(operation, self.dsn):
                await conn.execute(sql.SQL("LISTEN {}").format(sql.Identifier(channel)))
            yield conn
        finally:
            with anyio.CancelScope(shield=True):
                await conn.close()


async def migrate(
    conn: Conn,
    schema: str,
    migrations: Sequence[Sequence[LiteralString]],
    *,
    version_table: str,
    tables: str,
    error: type[Exception],
) -> None:
    """Create ``schema`` and its tables, or bring them up to version ``len(migrations)``.

    ``version_table`` records the version; ``migrations[n]`` are the statements
    from version n to n + 1. Tables newer than ``migrations`` know raise
    ``error`` naming them as ``tables`` (``"flowkit tables"``). Runs under
    the transaction-level advisory lock of the schema, which every flowkit
    migration of the schema takes, so processes may start at once.
    """
    latest = len(migrations)
    versions = sql.Identifier(version_table)
    async with conn.transaction():
        await conn.execute(
            "SELECT pg_advisory_xact_lock(hashtextextended(%s, 0))", (f"flowkit:{schema}",)
        )
        cur = await conn.execute("SELECT 1 FROM pg_namespace WHERE nspname = %s", (schema,))
        if await cur.fetchone() is None:  # (CREATE SCHEMA IF NOT EXISTS needs CREATE on the db)
            await conn.execute(sql.SQL("CREATE SCHEMA {}").format(sql.Identifier(schema)))
        await conn.execute(
            sql.SQL("CREATE TABLE IF NOT EXISTS {} (version INTEGER NOT NULL)").format(versions)
        )
        cur = await conn.execute(
            sql.SQL("SELECT coalesce(max(version), 0) FROM {}").format(versions)
        )
        current = int((await cur.fetchone() or (0,))[0])
        if current > latest:
            raise error(
                f"schema {schema!r} has {tables} v{current}, newer than this flowkit "
                f"(v{latest}); upgrade flowkit"
            )
        for statements in migrations[current:]:
            for statement in statements:
                await conn.execute(statement)
        if current < latest:
            await conn.execute(sql.SQL("DELETE FROM {}").format(versions))
            await conn.execute(sql.SQL("INSERT INTO {} VALUES (%s)").format(versions), (latest,))

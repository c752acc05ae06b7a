"""Driver exceptions never leak from the store-backed queues: every one becomes a TransportError.

Each queue translates its driver's exceptions in one place (``translate_errors``
in ``flowkit/transports/_sqlqueue.py`` and ``_pgqueue.py``); these tests raise
every exception class ``sqlite3`` and psycopg define through it, then show real
failures (a file that is not a database, a dropped table, an unreachable
server) arriving as TransportError. PostgreSQL runs on loopback
(``FLOWKIT_TEST_POSTGRES`` overrides the DSN); psycopg's async connections are
asyncio-only, so those tests run on asyncio alone.
"""

from __future__ import annotations

import inspect
import os
import sqlite3
import subprocess
import sys
import uuid
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Any, TypeVar

import psycopg
import pytest
from psycopg import sql

from flowkit import TransportError
from flowkit.stores._urls import ConfigurationError
from flowkit.transports import DeliveryError, from_url
from flowkit.transports._pgqueue import PostgresQueueTransport
from flowkit.transports._pgqueue import translate_errors as translate_psycopg
from flowkit.transports._sqlqueue import SQLiteQueueTransport
from flowkit.transports._sqlqueue import translate_errors as translate_sqlite

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Callable
    from pathlib import Path

PG_DSN = os.environ.get("FLOWKIT_TEST_POSTGRES", "postgresql://postgres@127.0.0.1:5432/test")
SECRET_URL = "postgresql://app:pa55word@db.example/runs"

F = TypeVar("F", bound="Callable[..., Any]")
T = TypeVar("T", SQLiteQueueTransport, PostgresQueueTransport)


def on_asyncio(test: F) -> F:
    """Run an async test on asyncio only: psycopg's async connections need it."""
    marks = (
        pytest.mark.anyio,
        pytest.mark.asyncio_only,
        pytest.mark.parametrize("anyio_backend", ["asyncio"]),
    )
    for mark in marks:
        test = mark(test)
    return test


def exception_classes(*modules: Any) -> list[type[BaseException]]:
    """Every exception class defined in ``modules`` or below their classes, in a stable order."""
    found: set[type[BaseException]] = set()
    pending = [
        cls
        for module in modules
        for _, cls in inspect.getmembers(module, inspect.isclass)
        if issubclass(cls, BaseException) and cls.__module__.split(".")[0] == module.__name__
    ]
    while pending:
        cls = pending.pop()
        if cls not in found:
            found.add(cls)
            pending.extend(cls.__subclasses__())
    return sorted(found, key=lambda c: f"{c.__module__}.{c.__qualname__}")


@asynccontextmanager
async def opened(transport: T) -> AsyncIterator[T]:
    """``transport`` for the block, closed after it however the block ends."""
    try:
        yield transport
    finally:
        await transport.close()


SQLITE_CLASSES = exception_classes(sqlite3)
# psycopg.Rollback is no error: `raise psycopg.Rollback` inside `conn.transaction()` asks
# the block to roll back, and the block consumes it, so no psycopg call ever raises it
PSYCOPG_CLASSES = [
    c for c in exception_classes(psycopg, psycopg.errors) if c is not psycopg.Rollback
]


class TestSQLiteTranslation:
    """Every ``sqlite3`` exception class becomes a TransportError naming the operation."""

    def test_enumeration_is_complete(self) -> None:
        names = {cls.__name__ for cls in SQLITE_CLASSES}
        assert {"Error", "Warning", "DatabaseError", "OperationalError", "IntegrityError"} <= names
        assert 10 <= len(SQLITE_CLASSES)

    @pytest.mark.parametrize("error", SQLITE_CLASSES, ids=lambda cls: cls.__name__)
    def test_every_class(self, error: type[Exception]) -> None:
        raised = error("database is locked")
        with pytest.raises(TransportError) as caught, translate_sqlite("ack", "/tmp/q.db"):
            raise raised
        assert raised is caught.value.__cause__
        message = str(caught.value)
        assert "ack failed" in message
        assert error.__name__ in message
        assert "/tmp/q.db" in message

    def test_transport_errors_pass_unchanged(self) -> None:
        raised = DeliveryError("no longer held")
        with pytest.raises(DeliveryError) as caught, translate_sqlite("ack", "q.db"):
            raise raised
        assert raised is caught.value

    def test_other_exceptions_pass_through(self) -> None:
        with pytest.raises(KeyError), translate_sqlite("send", "q.db"):
            raise KeyError("not a driver error")


@pytest.mark.anyio
class TestSQLiteFailures:
    """Real sqlite3 failures reach the caller as TransportError."""

    async def test_not_a_database(self, tmp_path: Path) -> None:
        path = tmp_path / "garbage.db"
        path.write_bytes(b"this is not a SQLite database file, not even close" * 100)
        async with opened(SQLiteQueueTransport(path)) as transport:
            with pytest.raises(TransportError, match="DatabaseError"):
                await transport.send("q", b"body")

    async def test_directory_missing(self, tmp_path: Path) -> None:
        async with opened(SQLiteQueueTransport(tmp_path / "missing" / "queue.db")) as transport:
            with pytest.raises(TransportError, match="OperationalError"):
                async for _ in transport.receive("q"):
                    pass

    async def test_dropped_table(self, tmp_path: Path) -> None:
        async with opened(SQLiteQueueTransport(tmp_path / "queue.db")) as transport:
            await transport.send("q", b"body")
            with sqlite3.connect(tmp_path / "queue.db") as conn:
                conn.execute("DROP TABLE flowkit_queue")
            conn.close()
            with pytest.raises(TransportError, match="no such table"):
                await transport.send("q", b"body")

    async def test_closed(self, tmp_path: Path) -> None:
        transport = SQLiteQueueTransport(tmp_path / "queue.db")
        await transport.close()
        with pytest.raises(TransportError, match="closed"):
            await transport.send("q", b"body")


class TestPsycopgTranslation:
    """Every psycopg exception class becomes a TransportError, the DSN's password redacted."""

    def test_enumeration_is_complete(self) -> None:
        assert psycopg.Warning in PSYCOPG_CLASSES
        assert psycopg.errors.UndefinedTable in PSYCOPG_CLASSES
        assert 100 < len(PSYCOPG_CLASSES)  # psycopg.errors defines one class per SQLSTATE

    @pytest.mark.parametrize("error", PSYCOPG_CLASSES, ids=lambda cls: cls.__qualname__)
    def test_every_class(self, error: type[Exception]) -> None:
        raised = error("boom for app:pa55word")
        with pytest.raises(TransportError) as caught, translate_psycopg("receive", SECRET_URL):
            raise raised
        assert raised is caught.value.__cause__
        message = str(caught.value)
        assert "receive failed" in message
        assert error.__name__ in message
        assert "pa55word" not in message
        assert "postgresql://app:***@db.example/runs" in message

    def test_keyword_dsn_password_redacted(self) -> None:
        dsn = "host=db.example dbname=runs password='p w' user=app"
        with pytest.raises(TransportError) as caught, translate_psycopg("send", dsn):
            raise psycopg.OperationalError("password='p w' rejected")
        assert "p w" not in str(caught.value)

    def test_rollback_is_not_an_error(self) -> None:
        with pytest.raises(psycopg.Rollback), translate_psycopg("send", PG_DSN):
            raise psycopg.Rollback()

    def test_other_exceptions_pass_through(self) -> None:
        with pytest.raises(KeyError), translate_psycopg("send", PG_DSN):
            raise KeyError("not a driver error")


@pytest.fixture
async def pg_schema() -> AsyncIterator[str]:
    schema = f"fk_test_{uuid.uuid4().hex[:12]}"
    yield schema
    async with await psycopg.AsyncConnection.connect(PG_DSN, autocommit=True) as conn:
        await conn.execute(
            sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(schema))
        )


class TestPostgresFailures:
    """Real PostgreSQL failures reach the caller as TransportError."""

    @on_asyncio
    async def test_dropped_table(self, pg_schema: str) -> None:
        async with opened(PostgresQueueTransport(PG_DSN, schema=pg_schema)) as transport:
            await transport.send("q", b"body")
            async with await psycopg.AsyncConnection.connect(PG_DSN, autocommit=True) as conn:
                drop = sql.SQL("DROP TABLE {}.flowkit_queue").format(sql.Identifier(pg_schema))
                await conn.execute(drop)
            with pytest.raises(TransportError, match="UndefinedTable"):
                await transport.send("q", b"body")

    @on_asyncio
    async def test_unreachable_server(self) -> None:
        unreachable = PostgresQueueTransport("postgresql://nobody@127.0.0.1:1/none")
        async with opened(unreachable) as transport:
            with pytest.raises(TransportError, match="OperationalError"):
                await transport.send("q", b"body")
            with pytest.raises(TransportError, match="OperationalError"):
                async for _ in transport.receive("q"):
                    pass

    @on_asyncio
    async def test_newer_schema_refused(self, pg_schema: str) -> None:
        async with opened(PostgresQueueTransport(PG_DSN, schema=pg_schema)) as transport:
            await transport.send("q", b"body")
        async with await psycopg.AsyncConnection.connect(PG_DSN, autocommit=True) as conn:
            bump = sql.SQL("UPDATE {}.flowkit_queue_schema SET version = 99")
            await conn.execute(bump.format(sql.Identifier(pg_schema)))
        async with opened(PostgresQueueTransport(PG_DSN, schema=pg_schema)) as newer:
            with pytest.raises(TransportError, match="upgrade flowkit"):
                await newer.send("q", b"body")


class TestMissingDependency:
    """Without psycopg, the PostgreSQL queue says which extra to install."""

    def test_from_url(self) -> None:
        code = (
            "import sys; sys.modules['psycopg'] = None\n"
            "from flowkit import MissingDependency\n"
            "from flowkit.transports import from_url\n"
            "try:\n    from_url('postgresql://postgres@127.0.0.1/test')\n"
            "except MissingDependency as exc:\n    print(exc.extra, exc.feature)\n"
        )
        done = subprocess.run(
            [sys.executable, "-c", code], capture_output=True, text=True, check=True
        )
        assert "postgres PostgresQueueTransport" == done.stdout.strip()


class TestURLs:
    """The queues parse their URLs like the stores do, and refuse other schemes."""

    @pytest.mark.parametrize(
        ("url", "path"),
        [
            ("sqlite:///flowkit.db", "flowkit.db"),
            ("sqlite:///data/q.db", "data/q.db"),
            ("sqlite:////var/lib/q.db", "/var/lib/q.db"),
            ("sqlite:///", ":memory:"),
            ("sqlite://", ":memory:"),
        ],
    )
    def test_sqlite_paths(self, url: str, path: str) -> None:
        transport = from_url(url, visibility_timeout=5.0)
        assert (path, 5.0) == (transport.path, transport.visibility_timeout)

    def test_postgres_url(self) -> None:
        transport = from_url(SECRET_URL, schema="q")
        assert isinstance(transport, PostgresQueueTransport)
        assert "pa55word" not in repr(transport)

    @pytest.mark.parametrize(
        ("cls", "url"),
        [(SQLiteQueueTransport, "postgresql://x/db"), (PostgresQueueTransport, "sqlite:///q.db")],
    )
    def test_wrong_scheme(self, cls: Any, url: str) -> None:
        with pytest.raises(ConfigurationError):
            cls.from_url(url)

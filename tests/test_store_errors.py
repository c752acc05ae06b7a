"""Driver exceptions never leak: every psycopg and redis-py exception becomes a StoreError.

Also the driver-specific failure modes: a missing extra, concurrent first use of
a PostgreSQL schema, a schema newer than this flowkit, and a Redis lock that
expires mid-transaction. Talks to the real PostgreSQL and Redis on loopback
(``FLOWKIT_TEST_POSTGRES`` / ``FLOWKIT_TEST_REDIS`` override the addresses);
both async drivers are asyncio-only, so those tests run on asyncio alone.
"""

from __future__ import annotations

import inspect
import os
import subprocess
import sys
import uuid
from typing import TYPE_CHECKING, Any, TypeVar

import anyio
import psycopg
import pytest
import redis.asyncio
import redis.exceptions
from psycopg import sql

from flowkit import StoreError
from flowkit.core._state import RunState
from flowkit.stores._postgres import SCHEMA_VERSION, PostgresStore
from flowkit.stores._postgres import translate_errors as translate_psycopg
from flowkit.stores._redis import RedisStore
from flowkit.stores._redis import translate_errors as translate_redis

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Callable

PG_DSN = os.environ.get("FLOWKIT_TEST_POSTGRES", "postgresql://postgres@127.0.0.1:5432/test")
REDIS_URL = os.environ.get("FLOWKIT_TEST_REDIS", "redis://127.0.0.1:6379/0")
SECRET_URL = "postgresql://app:pa55word@db.example/runs"

F = TypeVar("F", bound="Callable[..., Any]")


def on_asyncio(test: F) -> F:
    """Run an async test on asyncio only: psycopg's and redis-py's async clients need it."""
    marks = (
        pytest.mark.anyio,
        pytest.mark.asyncio_only,
        pytest.mark.parametrize("anyio_backend", ["asyncio"]),
    )
    for mark in marks:
        test = mark(test)
    return test


def subclasses(root: type[BaseException]) -> list[type[BaseException]]:
    """``root`` and every class below it, in a stable order."""
    found = {root}
    pending = [root]
    while pending:
        for sub in pending.pop().__subclasses__():
            if sub not in found:
                found.add(sub)
                pending.append(sub)
    return sorted(found, key=lambda c: f"{c.__module__}.{c.__qualname__}")


def redis_exception_classes() -> list[type[BaseException]]:
    return [
        cls
        for _, cls in inspect.getmembers(redis.exceptions, inspect.isclass)
        if issubclass(cls, BaseException) and cls.__module__ == "redis.exceptions"
    ]


def new_state(run_id: str) -> RunState:
    state = RunState(run_id)
    state.put("context", "n", 0)
    return state


class TestPsycopgErrors:
    """Every psycopg exception class is translated, with the DSN's password redacted."""

    @pytest.mark.parametrize(
        "error",
        [
            psycopg.Error,
            psycopg.OperationalError,
            psycopg.IntegrityError,
            psycopg.ProgrammingError,
            psycopg.DataError,
            psycopg.InterfaceError,
            psycopg.DatabaseError,
            psycopg.InternalError,
            psycopg.NotSupportedError,
        ],
        ids=lambda cls: cls.__name__,
    )
    def test_named_classes(self, error: type[psycopg.Error]) -> None:
        raised = error("boom for app:pa55word")
        with pytest.raises(StoreError) as caught, translate_psycopg("commit", SECRET_URL):
            raise raised
        assert raised is caught.value.__cause__
        message = str(caught.value)
        assert "commit failed" in message
        assert error.__name__ in message
        assert "pa55word" not in message
        assert "postgresql://app:***@db.example/runs" in message

    def test_every_subclass(self) -> None:
        classes = subclasses(psycopg.Error)
        assert 100 < len(classes)  # psycopg.errors defines one class per SQLSTATE
        for error in classes:
            with pytest.raises(StoreError), translate_psycopg("load", PG_DSN):
                raise error("boom")

    def test_keyword_dsn_password_redacted(self) -> None:
        dsn = "host=db.example dbname=runs password='p w' user=app"
        with pytest.raises(StoreError) as caught, translate_psycopg("load", dsn):
            raise psycopg.OperationalError("password='p w' rejected")
        assert "p w" not in str(caught.value)

    def test_other_exceptions_pass_through(self) -> None:
        with pytest.raises(KeyError), translate_psycopg("load", PG_DSN):
            raise KeyError("not a driver error")

    @on_asyncio
    async def test_server_error(self) -> None:
        store = PostgresStore(PG_DSN, schema=f"fk_test_{uuid.uuid4().hex[:12]}")
        await store.create_run("r", new_state("r"), blueprint_id="b", digest="d")
        await drop_schema(store.schema)
        with pytest.raises(StoreError, match="UndefinedTable"):
            await store.info("r")
        await store.close()


class TestRedisErrors:
    """Every class in ``redis.exceptions`` is translated, with the URL's password redacted."""

    @pytest.mark.parametrize("error", redis_exception_classes(), ids=lambda cls: cls.__name__)
    def test_every_class(self, error: type[Exception]) -> None:
        raised = error("3999 127.0.0.1:6381")  # the reply AskError and MovedError parse
        url = "redis://:pa55word@cache.example:6379/0"
        with pytest.raises(StoreError) as caught, translate_redis("claim_timer", url):
            raise raised
        assert raised is caught.value.__cause__
        message = str(caught.value)
        assert "claim_timer failed" in message
        assert "pa55word" not in message

    def test_enumeration_is_complete(self) -> None:
        assert 30 < len(redis_exception_classes())

    def test_other_exceptions_pass_through(self) -> None:
        with pytest.raises(KeyError), translate_redis("load", REDIS_URL):
            raise KeyError("not a driver error")

    @on_asyncio
    async def test_server_error(self, redis_store: RedisStore) -> None:
        client = redis.asyncio.Redis.from_url(REDIS_URL)
        await client.set(f"{redis_store.prefix}:timers", "not a sorted set")
        await client.aclose()
        with pytest.raises(StoreError, match="ResponseError"):
            await redis_store.due_timers(1.0)


class TestMissingDependency:
    """Without the extra, constructing the store raises MissingDependency naming the extra."""

    @pytest.mark.parametrize(
        ("module", "url", "extra"),
        [
            ("psycopg", "postgresql://postgres@127.0.0.1/test", "postgres"),
            ("redis", "redis://127.0.0.1:6379/0", "redis"),
        ],
    )
    def test_from_url(self, module: str, url: str, extra: str) -> None:
        code = (
            f"import sys; sys.modules[{module!r}] = None\n"
            "from flowkit import MissingDependency\n"
            "from flowkit.stores import from_url\n"
            f"try:\n    from_url({url!r})\n"
            "except MissingDependency as exc:\n    print(exc.extra, exc.feature)\n"
        )
        done = subprocess.run(
            [sys.executable, "-c", code], capture_output=True, text=True, check=True
        )
        store = {"postgres": "PostgresStore", "redis": "RedisStore"}[extra]
        assert f"{extra} {store}" == done.stdout.strip()


async def drop_schema(schema: str) -> None:
    async with await psycopg.AsyncConnection.connect(PG_DSN, autocommit=True) as conn:
        drop = sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE")
        await conn.execute(drop.format(sql.Identifier(schema)))


@pytest.fixture
async def pg_schema() -> AsyncIterator[str]:
    schema = f"fk_test_{uuid.uuid4().hex[:12]}"
    yield schema
    await drop_schema(schema)


@pytest.fixture
async def redis_store() -> AsyncIterator[RedisStore]:
    store = RedisStore(REDIS_URL, prefix=f"fk_test_{uuid.uuid4().hex[:12]}", lock_timeout=0.2)
    yield store
    await store.close()
    client = redis.asyncio.Redis.from_url(REDIS_URL)
    keys = [key async for key in client.scan_iter(f"{store.prefix}:*")]
    if keys:
        await client.delete(*keys)
    await client.aclose()


class TestRedisBursts:
    """More concurrent transactions than pooled connections wait for one instead of failing
    (redis-py's default pool raised "Too many connections" beyond 100)."""

    @on_asyncio
    async def test_a_burst_beyond_the_pool(self, redis_store: RedisStore) -> None:
        store = RedisStore(REDIS_URL, prefix=redis_store.prefix, max_connections=3)
        runs = [f"r{i}" for i in range(150)]

        async def step(run_id: str) -> None:
            await store.create_run(run_id, new_state(run_id), blueprint_id="b", digest="d")
            async with store.transaction(run_id) as txn:
                await anyio.sleep(0.001)  # hold the run's lock across a checkpoint
                await txn.commit([("context", "n", 1)])

        try:
            async with anyio.create_task_group() as tg:
                for run_id in runs:
                    tg.start_soon(step, run_id)
            versions = [(await store.info(run_id)) for run_id in runs]
        finally:
            await store.close()
        assert {2} == {info.version for info in versions if info is not None}
        assert len(runs) == len([v for v in versions if v is not None])


class TestPostgresSchema:
    """The schema is created once however many stores start at once, and never downgraded."""

    @on_asyncio
    async def test_concurrent_first_use(self, pg_schema: str) -> None:
        stores = [PostgresStore(PG_DSN, schema=pg_schema) for _ in range(8)]
        results: list[Any] = []

        async def first_use(store: PostgresStore) -> None:
            results.append(
                await store.create_run("r", new_state("r"), blueprint_id="b", digest="d")
            )

        async with anyio.create_task_group() as tg:
            for store in stores:
                tg.start_soon(first_use, store)
        assert [True] == [r for r in results if r]
        async with await psycopg.AsyncConnection.connect(PG_DSN) as conn:
            query = sql.SQL("SELECT version FROM {}.flowkit_schema")
            cur = await conn.execute(query.format(sql.Identifier(pg_schema)))
            assert [(SCHEMA_VERSION,)] == await cur.fetchall()
        for store in stores:
            await store.close()

    @on_asyncio
    async def test_newer_schema_refused(self, pg_schema: str) -> None:
        store = PostgresStore(PG_DSN, schema=pg_schema)
        await store.info("r")
        await store.close()
        async with await psycopg.AsyncConnection.connect(PG_DSN, autocommit=True) as conn:
            query = sql.SQL("UPDATE {}.flowkit_schema SET version = 99")
            await conn.execute(query.format(sql.Identifier(pg_schema)))
        newer = PostgresStore(PG_DSN, schema=pg_schema)
        with pytest.raises(StoreError, match="upgrade flowkit"):
            await newer.info("r")
        await newer.close()


class TestRedisLock:
    """A commit whose lock expired mid-transaction writes nothing and raises StoreError if
    anyone else wrote the run or holds its lock since; if no one did, it lands."""

    @on_asyncio
    async def test_expired_lock_taken_by_another(self, redis_store: RedisStore) -> None:
        await redis_store.create_run("r", new_state("r"), blueprint_id="b", digest="d")
        other = RedisStore(REDIS_URL, prefix=redis_store.prefix)
        async with redis_store.transaction("r") as stale:
            await anyio.sleep(0.3)
            async with other.transaction("r") as fresh:
                assert 2 == await fresh.commit([("context", "n", 1)])
            with pytest.raises(StoreError, match="another transaction changed it"):
                await stale.commit([("context", "n", 99)])
        loaded = await redis_store.load("r")
        assert loaded is not None
        assert ({"n": 1}, 2) == (loaded[0].context, loaded[1])
        await other.close()

    @on_asyncio
    async def test_expired_lock_held_by_another(self, redis_store: RedisStore) -> None:
        await redis_store.create_run("r", new_state("r"), blueprint_id="b", digest="d")
        other = RedisStore(REDIS_URL, prefix=redis_store.prefix)
        async with redis_store.transaction("r") as stale:
            await anyio.sleep(0.3)
            async with other.transaction("r") as fresh:
                with pytest.raises(StoreError, match="another transaction holds it"):
                    await stale.commit([("context", "n", 99)])
                assert 2 == await fresh.commit([("context", "n", 1)])
        loaded = await redis_store.load("r")
        assert loaded is not None
        assert ({"n": 1}, 2) == (loaded[0].context, loaded[1])
        await other.close()

    @on_asyncio
    async def test_expired_lock_alone_commits(self, redis_store: RedisStore) -> None:
        await redis_store.create_run("r", new_state("r"), blueprint_id="b", digest="d")
        async with redis_store.transaction("r") as txn:
            await anyio.sleep(0.3)
            assert 2 == await txn.commit([("context", "n", 1)])  # no one wrote meanwhile
            assert 3 == await txn.commit([("context", "n", 2)])  # the lock is not needed back
        async with redis_store.transaction("r") as txn:
            assert 4 == await txn.commit([("context", "n", 3)])

"""SDK exceptions never leak: every aio-pika/aiormq/pamqp and redis-py exception is translated.

Each class the SDKs' exception modules define is raised inside the transport's
one translation point and must come out as a :class:`flowkit.TransportError`
(a :class:`~flowkit.transports.DeliveryError` while settling), with the cause
kept and the URL's password redacted. Then real failures from the real RabbitMQ
and Redis on loopback (``FLOWKIT_TEST_RABBITMQ`` / ``FLOWKIT_TEST_REDIS``
override the addresses): both SDKs are asyncio-only, so those tests run on
asyncio alone (marked ``asyncio_only``).
"""

from __future__ import annotations

import inspect
import os
import subprocess
import sys
import uuid
from typing import TYPE_CHECKING, Any, TypeVar

import aio_pika
import aio_pika.exceptions
import aiormq.exceptions
import pamqp.exceptions
import pytest
import redis.asyncio
import redis.exceptions

from flowkit import TransportError
from flowkit.transports import DeliveryError
from flowkit.transports.rabbitmq._transport import RabbitMQTransport
from flowkit.transports.rabbitmq._transport import translate_errors as translate_amqp
from flowkit.transports.redis._transport import RedisTransport
from flowkit.transports.redis._transport import translate_errors as translate_redis

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Callable, Iterable
    from types import ModuleType

RABBITMQ_URL = os.environ.get("FLOWKIT_TEST_RABBITMQ", "amqp://guest:guest@127.0.0.1:5672/")
REDIS_URL = os.environ.get("FLOWKIT_TEST_REDIS", "redis://127.0.0.1:6379/0")
SECRET_AMQP = "amqp://app:pa55word@mq.example:5672/prod"
SECRET_REDIS = "redis://:pa55word@cache.example:6379/0"

F = TypeVar("F", bound="Callable[..., Any]")


def on_asyncio(test: F) -> F:
    """Run an async test on asyncio only: aio-pika and redis-py's async client need it."""
    marks = (
        pytest.mark.anyio,
        pytest.mark.asyncio_only,
        pytest.mark.parametrize("anyio_backend", ["asyncio"]),
    )
    for mark in marks:
        test = mark(test)
    return test


def exception_classes(*modules: ModuleType) -> list[type[BaseException]]:
    """Every exception class the modules define (or re-export), in a stable order."""
    found = {
        cls
        for module in modules
        for _, cls in inspect.getmembers(module, inspect.isclass)
        if issubclass(cls, BaseException)
    }
    return sorted(found, key=lambda c: f"{c.__module__}.{c.__qualname__}")


def instance(cls: type[BaseException], text: str) -> BaseException:
    """An instance of ``cls`` carrying ``text``, bypassing constructors that need SDK frames."""
    exc = cls.__new__(cls)
    BaseException.__init__(exc, text)
    return exc


AMQP_CLASSES = exception_classes(aio_pika.exceptions, aiormq.exceptions, pamqp.exceptions)
REDIS_CLASSES = exception_classes(redis.exceptions)


def translated(translate: Any, url: str, exc: BaseException, **kw: Any) -> TransportError:
    """What ``translate`` turns ``exc`` into."""
    with pytest.raises(TransportError) as caught, translate("publish", url, **kw):
        raise exc
    return caught.value


class TestAmqpErrors:
    """Every aio-pika, aiormq and pamqp exception class becomes a TransportError."""

    @pytest.mark.parametrize("error", AMQP_CLASSES, ids=lambda c: f"{c.__module__}.{c.__name__}")
    def test_every_class(self, error: type[BaseException]) -> None:
        raised = instance(error, "boom for app:pa55word")
        caught = translated(translate_amqp, SECRET_AMQP, raised)
        assert raised is caught.__cause__
        assert not isinstance(caught, DeliveryError)
        message = str(caught)
        assert "publish failed" in message
        assert error.__name__ in message
        assert "pa55word" not in message
        assert "amqp://app:***@mq.example:5672/prod" in message

    @pytest.mark.parametrize("error", AMQP_CLASSES, ids=lambda c: f"{c.__module__}.{c.__name__}")
    def test_every_class_while_settling(self, error: type[BaseException]) -> None:
        caught = translated(translate_amqp, SECRET_AMQP, instance(error, "boom"), settling=True)
        assert isinstance(caught, DeliveryError)

    def test_enumeration_is_complete(self) -> None:
        assert 50 < len(AMQP_CLASSES)  # aio-pika re-exports most of aiormq's
        for module in (aio_pika.exceptions, aiormq.exceptions, pamqp.exceptions):
            assert {c for c in AMQP_CLASSES if c.__module__ == module.__name__}

    def test_socket_errors(self) -> None:
        for error in (ConnectionRefusedError, TimeoutError, OSError):
            caught = translated(translate_amqp, RABBITMQ_URL, error("refused"))
            assert "reachable" in str(caught)

    def test_other_exceptions_pass_through(self) -> None:
        with pytest.raises(KeyError), translate_amqp("publish", RABBITMQ_URL):
            raise KeyError("not an SDK error")


class TestRedisErrors:
    """Every class in ``redis.exceptions`` becomes a TransportError."""

    @pytest.mark.parametrize("error", REDIS_CLASSES, ids=lambda cls: cls.__name__)
    def test_every_class(self, error: type[BaseException]) -> None:
        raised = error("3999 127.0.0.1:6381")  # the reply AskError and MovedError parse
        caught = translated(translate_redis, SECRET_REDIS, raised)
        assert raised is caught.__cause__
        assert not isinstance(caught, DeliveryError)
        message = str(caught)
        assert "publish failed" in message
        assert error.__name__ in message
        assert "redis://:***@cache.example:6379/0" in message

    def test_password_redacted(self) -> None:
        raised = redis.exceptions.ConnectionError("AUTH :pa55word refused")
        assert "pa55word" not in str(translated(translate_redis, SECRET_REDIS, raised))

    def test_unprintable_exception(self) -> None:
        raised = redis.exceptions.MovedError.__new__(redis.exceptions.MovedError)
        assert "MovedError" in str(translated(translate_redis, SECRET_REDIS, raised))

    @pytest.mark.parametrize("error", REDIS_CLASSES, ids=lambda cls: cls.__name__)
    def test_every_class_while_settling(self, error: type[BaseException]) -> None:
        caught = translated(
            translate_redis, SECRET_REDIS, error("3999 127.0.0.1:6381"), settling=True
        )
        assert isinstance(caught, DeliveryError)

    def test_enumeration_is_complete(self) -> None:
        assert 30 < len(REDIS_CLASSES)

    def test_other_exceptions_pass_through(self) -> None:
        with pytest.raises(KeyError), translate_redis("publish", REDIS_URL):
            raise KeyError("not an SDK error")


class TestRabbitMQFailures:
    """Real broker failures reach the caller as TransportError with a next step."""

    @on_asyncio
    async def test_unreachable(self) -> None:
        transport = RabbitMQTransport("amqp://guest:guest@127.0.0.1:1/")
        with pytest.raises(TransportError, match="reachable"):
            await transport.send("q", b"x")
        await transport.close()

    @on_asyncio
    async def test_wrong_password(self) -> None:
        transport = RabbitMQTransport("amqp://guest:wr0ng-secret@127.0.0.1:5672/")
        with pytest.raises(TransportError) as caught:
            await transport.send("q", b"x")
        assert "wr0ng-secret" not in str(caught.value)
        assert "password" in str(caught.value)
        await transport.close()

    @on_asyncio
    async def test_queue_declared_with_other_arguments(self, amqp_prefix: str) -> None:
        await declare_classic(f"{amqp_prefix}.q")
        transport = RabbitMQTransport(RABBITMQ_URL, queue_prefix=amqp_prefix)
        with pytest.raises(TransportError, match="another queue_prefix"):
            await transport.send("q", b"x")
        await transport.close()

    @on_asyncio
    async def test_settling_on_a_closed_channel(self, amqp_prefix: str) -> None:
        transport = RabbitMQTransport(RABBITMQ_URL, queue_prefix=amqp_prefix)
        await transport.send("q", b"x")
        deliveries = transport.receive("q")
        delivery = await deliveries.__anext__()
        await deliveries.aclose()  # closes its channel: the broker requeues the message
        with pytest.raises(DeliveryError, match="channel closed"):
            await delivery.ack()
        await transport.close()

    @on_asyncio
    async def test_closed_transport(self) -> None:
        transport = RabbitMQTransport(RABBITMQ_URL)
        await transport.close()
        with pytest.raises(TransportError, match="closed"):
            await transport.send("q", b"x")


class TestRedisFailures:
    """Real server failures reach the caller as TransportError with a next step."""

    @on_asyncio
    async def test_unreachable(self) -> None:
        transport = RedisTransport("redis://127.0.0.1:1/0")
        with pytest.raises(TransportError, match="reachable"):
            await transport.send("q", b"x")
        await transport.close()

    @on_asyncio
    async def test_key_of_another_type(self, redis_prefix: str) -> None:
        client = redis.asyncio.Redis.from_url(REDIS_URL)
        await client.set(f"{redis_prefix}:q", "not a stream")
        await client.aclose()
        transport = RedisTransport(REDIS_URL, prefix=redis_prefix)
        with pytest.raises(TransportError, match="another prefix"):
            await transport.send("q", b"x")
        await transport.close()


class TestMissingDependency:
    """Without the extra, building the transport raises MissingDependency naming the extra."""

    @pytest.mark.parametrize(
        ("module", "url", "extra", "feature"),
        [
            ("aio_pika", "amqp://guest:guest@127.0.0.1:5672/", "rabbitmq", "RabbitMQTransport"),
            ("redis", "redis://127.0.0.1:6379/0", "redis", "RedisTransport"),
        ],
    )
    def test_from_url(self, module: str, url: str, extra: str, feature: str) -> None:
        code = (
            f"import sys; sys.modules[{module!r}] = None\n"
            "from flowkit import MissingDependency\n"
            "from flowkit.transports import from_url\n"
            f"try:\n    from_url({url!r})\n"
            "except MissingDependency as exc:\n    print(exc.extra, exc.feature)\n"
        )
        done = subprocess.run(
            [sys.executable, "-c", code], capture_output=True, text=True, check=True
        )
        assert f"{extra} {feature}" == done.stdout.strip()


async def declare_classic(name: str) -> None:
    connection = await aio_pika.connect(RABBITMQ_URL)
    async with connection:
        channel = await connection.channel()
        await channel.declare_queue(name, durable=True)


async def delete_amqp_queues(names: Iterable[str]) -> None:
    connection = await aio_pika.connect(RABBITMQ_URL)
    async with connection:
        channel = await connection.channel()
        for name in names:
            await channel.queue_delete(name, if_unused=False, if_empty=False)


@pytest.fixture
async def amqp_prefix() -> AsyncIterator[str]:
    prefix = f"fk_test_{uuid.uuid4().hex[:12]}"
    yield prefix
    await delete_amqp_queues([f"{prefix}.q", f"{prefix}.q.dlq"])


@pytest.fixture
async def redis_prefix() -> AsyncIterator[str]:
    prefix = f"fk_test_{uuid.uuid4().hex[:12]}"
    yield prefix
    client = redis.asyncio.Redis.from_url(REDIS_URL)
    keys = [key async for key in client.scan_iter(f"{prefix}:*")]
    if keys:
        await client.delete(*keys)
    await client.aclose()

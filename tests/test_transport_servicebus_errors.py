"""Every exception the Service Bus SDK defines becomes a flowkit ``TransportError``.

``ServiceBusTransport`` translates SDK exceptions in one place,
``translate_errors`` in ``flowkit/transports/_servicebus.py``. These tests
enumerate the exception classes of ``azure.servicebus.exceptions``,
``azure.core.exceptions`` and the SDK's own AMQP layer
(``azure.servicebus._pyamqp.error``), raise each inside that translation and
check what comes out.

End-to-end tests provoke real failures through the real ``azure-servicebus``
SDK: a closed port on loopback, and the stand-in broker of
``tests/servicebus_standin.py`` (a test-only AMQP 1.0 broker on
python-qpid-proton speaking the real wire protocol, since no Service Bus
emulator can run on these machines) with a wrong key, a missing queue and a
lock that ran out. The same stand-in shows the default ``lock_renewal=True``
keeping a long delivery's lock. Nothing talks to Azure.
"""

from __future__ import annotations

import inspect
import socket
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Any

import anyio
import azure.core.exceptions
import azure.servicebus._pyamqp.error
import azure.servicebus.exceptions
import pytest
from azure.core.credentials import AzureNamedKeyCredential
from servicebus_standin import ServiceBusStandIn

import flowkit
from flowkit import MissingDependency, TransportError
from flowkit.stores._urls import ConfigurationError
from flowkit.transports import DeliveryError, from_url
from flowkit.transports import _servicebus as servicebus_module
from flowkit.transports._servicebus import ServiceBusTransport, translate_errors

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Iterator
    from types import ModuleType

    from flowkit.transports import Delivery

SDK_MODULES = (
    azure.servicebus.exceptions,
    azure.core.exceptions,
    azure.servicebus._pyamqp.error,
)
NO_RETRIES = {"retry_total": 0}


def exception_classes(*modules: ModuleType) -> list[type[BaseException]]:
    """Every exception class defined in ``modules`` (warnings are never raised: left out)."""
    return [
        cls
        for module in modules
        for _, cls in inspect.getmembers(module, inspect.isclass)
        if issubclass(cls, BaseException)
        and not issubclass(cls, Warning)
        and cls.__module__ == module.__name__
    ]


def bare(cls: type[BaseException]) -> BaseException:
    """An instance of ``cls`` even where its constructor wants arguments we do not have."""
    exc = cls.__new__(cls)
    exc.args = ("simulated",)
    return exc


def _translated(exc: BaseException, *, settling: bool) -> TransportError:
    with (
        pytest.raises(TransportError) as caught,
        translate_errors("test", "where", settling=settling),
    ):
        raise exc
    return caught.value


SDK_ERRORS = exception_classes(*SDK_MODULES)


class TestEveryServiceBusErrorIsMapped:
    """Each SDK exception class becomes a TransportError (a DeliveryError when settling)."""

    def test_the_sdk_has_errors(self) -> None:
        names = {cls.__name__ for cls in SDK_ERRORS}
        assert 45 <= len(SDK_ERRORS)
        assert {"MessageLockLostError", "MessageAlreadySettled", "AMQPLinkError"} <= names

    @pytest.mark.parametrize(
        "cls", [pytest.param(cls, id=f"{cls.__module__}.{cls.__qualname__}") for cls in SDK_ERRORS]
    )
    def test_mapped(self, cls: type[BaseException]) -> None:
        exc = bare(cls)
        error = _translated(exc, settling=False)
        assert (TransportError, exc) == (type(error), error.__cause__)
        assert cls.__name__ in str(error)
        assert DeliveryError is type(_translated(exc, settling=True))


class TestNothingElseIsCaught:
    """Errors that are not the SDK's (bugs) pass through untouched."""

    @pytest.mark.parametrize("exc", [KeyError("a bug"), ValueError("a bug"), TypeError("a bug")])
    def test_other_errors_pass(self, exc: Exception) -> None:
        with pytest.raises(type(exc)), translate_errors("test", "where"):
            raise exc


class TestMessages:
    """Messages say what failed, where, and what to do next, and never show a key."""

    def test_lock_lost_hint(self) -> None:
        error = _translated(azure.servicebus.exceptions.MessageLockLostError(), settling=True)
        assert "lock ran out" in str(error)

    def test_missing_queue_hint(self) -> None:
        exc = azure.servicebus.exceptions.MessagingEntityNotFoundError(message="no queue 'q'")
        assert "create_queues=True" in str(_translated(exc, settling=False))

    def test_credentials_hint(self) -> None:
        exc = azure.servicebus.exceptions.ServiceBusAuthenticationError(message="401")
        assert "connection string or credential" in str(_translated(exc, settling=False))

    def test_key_redacted(self) -> None:
        exc = azure.servicebus.exceptions.ServiceBusError(
            message="bad Endpoint=sb://x/;SharedAccessKeyName=k;SharedAccessKey=hunter2=; "
            "token SharedAccessSignature sr=sb%3A%2F%2Fx&sig=hunter3%3D&se=1&skn=k"
        )
        error = str(_translated(exc, settling=False))
        assert [] == [secret for secret in ("hunter2", "hunter3") if secret in error]
        assert "SharedAccessKey=***" in error


CONNECTION = (
    "Endpoint=sb://shop.servicebus.windows.net/;SharedAccessKeyName=k;SharedAccessKey=c2VjcmV0"
)


class TestConfiguration:
    """Connection strings, namespaces and URL options are checked before anything connects."""

    def test_url_with_connection_string(self) -> None:
        transport = from_url(f"servicebus://{CONNECTION}?prefetch=8&lock_duration=30")
        assert isinstance(transport, ServiceBusTransport)
        assert (CONNECTION, "shop.servicebus.windows.net") == (
            transport.connection_string,
            transport.namespace,
        )
        assert (8, 30.0) == (transport.prefetch, transport.visibility_timeout)

    def test_url_with_namespace_and_credential(self) -> None:
        credential = AzureNamedKeyCredential("k", "c2VjcmV0")
        transport = from_url("servicebus://shop.servicebus.windows.net", credential=credential)
        assert ("shop.servicebus.windows.net", None) == (
            transport.namespace,
            transport.connection_string,
        )

    def test_namespace_needs_credential(self) -> None:
        with pytest.raises(ConfigurationError, match="DefaultAzureCredential"):
            from_url("servicebus://shop.servicebus.windows.net")

    @pytest.mark.parametrize(
        "query", ["bogus=1", "prefetch=many", "lock_renewal=perhaps", "prefetch=-1"]
    )
    def test_bad_options(self, query: str) -> None:
        with pytest.raises(ConfigurationError) as caught:
            from_url(f"servicebus://{CONNECTION}?{query}")
        assert "c2VjcmV0" not in str(caught.value)

    def test_connection_string_or_namespace(self) -> None:
        with pytest.raises(ConfigurationError, match="either"):
            ServiceBusTransport()
        with pytest.raises(ConfigurationError, match="Endpoint"):
            ServiceBusTransport("SharedAccessKeyName=k;SharedAccessKey=x")


def _closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@pytest.fixture
def standin() -> Iterator[ServiceBusStandIn]:
    with ServiceBusStandIn(lock_duration=1.0, auto_create=False) as broker:
        yield broker


@asynccontextmanager
async def receiving(transport: ServiceBusTransport, queue: str) -> AsyncIterator[Any]:
    """``transport.receive(queue)``, closed when the block ends."""
    deliveries: Any = transport.receive(queue)
    try:
        yield deliveries
    finally:
        with anyio.CancelScope(shield=True):
            await deliveries.aclose()


async def _first(transport: ServiceBusTransport, queue: str) -> Delivery:
    """The first delivery from ``queue``; the receive loop is closed after it."""
    async with receiving(transport, queue) as deliveries:
        delivery: Delivery = await deliveries.__anext__()
    return delivery


@pytest.mark.asyncio_only
class TestRealFailures:
    """Failures of real connections through the real SDK arrive as TransportError."""

    @pytest.fixture
    def anyio_backend(self) -> str:
        return "asyncio"

    @pytest.fixture
    async def transports(self) -> AsyncIterator[list[ServiceBusTransport]]:
        made: list[ServiceBusTransport] = []
        yield made
        for transport in made:
            await transport.close()

    @pytest.mark.anyio
    async def test_nobody_listening(self, transports: list[ServiceBusTransport]) -> None:
        connection = (
            f"Endpoint=sb://127.0.0.1:{_closed_port()};SharedAccessKeyName=k;"
            "SharedAccessKey=x;UseDevelopmentEmulator=true"
        )
        transports.append(transport := ServiceBusTransport(connection, client_options=NO_RETRIES))
        with pytest.raises(TransportError, match="check the network"):
            await transport.send("q", b"x")

    @pytest.mark.anyio
    async def test_wrong_key(
        self, standin: ServiceBusStandIn, transports: list[ServiceBusTransport]
    ) -> None:
        wrong = standin.connection_string.replace(standin.key, "not-the-key")
        transports.append(transport := ServiceBusTransport(wrong, client_options=NO_RETRIES))
        with pytest.raises(TransportError, match="ServiceBusAuthenticationError") as caught:
            await transport.send("q", b"x")
        assert "not-the-key" not in str(caught.value)

    @pytest.mark.anyio
    async def test_missing_queue(
        self, standin: ServiceBusStandIn, transports: list[ServiceBusTransport]
    ) -> None:
        connection = standin.connection_string
        transports.append(transport := ServiceBusTransport(connection, client_options=NO_RETRIES))
        with pytest.raises(TransportError, match="the queue does not exist"):
            await _first(transport, "nowhere")

    @pytest.mark.anyio
    async def test_lock_ran_out(
        self, standin: ServiceBusStandIn, transports: list[ServiceBusTransport]
    ) -> None:
        standin.call(lambda broker: broker.queue("q"))
        transports.append(transport := _transport(standin, lock_renewal=False))
        await transport.send("q", b"slow")
        delivery = await _first(transport, "q")
        await anyio.sleep(standin.lock_duration * 1.5)
        with pytest.raises(DeliveryError, match="MessageLockLostError"):
            await delivery.ack()
        with pytest.raises(DeliveryError, match="MessageLockLostError"):
            await delivery.extend(1.0)

    @pytest.mark.anyio
    async def test_lock_lost_at_the_broker(self) -> None:
        """The client still believes in its lock; the broker's outcome says it is gone."""
        with ServiceBusStandIn(lock_duration=30.0) as standin:
            transport = _transport(standin, lock_renewal=False)
            try:
                await transport.send("q", b"contested")
                async with receiving(transport, "q") as deliveries:
                    delivery = await deliveries.__anext__()
                    await anyio.to_thread.run_sync(standin.call, _expire_every_lock)
                    with pytest.raises(DeliveryError, match="MessageLockLostError"):
                        await delivery.ack()
                    again = await deliveries.__anext__()
                    assert (b"contested", 2) == (again.body, again.attempt)
                    await again.ack()
            finally:
                await transport.close()

    @pytest.mark.anyio
    async def test_too_many_deliveries(self) -> None:
        """A message that keeps coming back is dead-lettered by the broker, with its reason."""
        with ServiceBusStandIn(lock_duration=30.0, max_delivery_count=2) as standin:
            transport = _transport(standin, lock_renewal=False)
            try:
                await transport.send("q", b"poison")
                async with receiving(transport, "q") as deliveries:
                    for attempt in (1, 2):
                        delivery = await deliveries.__anext__()
                        assert (b"poison", attempt) == (delivery.body, delivery.attempt)
                        await delivery.nack()
                parked = await transport.dead_letters("q")
            finally:
                await transport.close()
        assert [(b"poison", "MaxDeliveryCountExceeded")] == [
            (letter.body, letter.reason) for letter in parked
        ]

    @pytest.mark.anyio
    async def test_settling_after_close(
        self, standin: ServiceBusStandIn, transports: list[ServiceBusTransport]
    ) -> None:
        standin.call(lambda broker: broker.queue("q"))
        transport = _transport(standin, lock_renewal=False)
        await transport.send("q", b"orphan")
        delivery = await _first(transport, "q")
        await transport.close()
        with pytest.raises(DeliveryError, match="transport was closed"):
            await delivery.ack()
        with pytest.raises(TransportError, match="closed"):
            await transport.send("q", b"late")


class TestLockRenewal:
    """With ``lock_renewal=True`` (the default) a held message outlives its lock duration."""

    @pytest.fixture
    def anyio_backend(self) -> str:
        return "asyncio"

    @pytest.mark.asyncio_only
    @pytest.mark.anyio
    async def test_held_past_the_lock(self) -> None:
        # the SDK's AutoLockRenewer looks once a second and renews in the lock's last
        # half (whole seconds), so the lock must last a few seconds (Service Bus: >= 5 s)
        with ServiceBusStandIn(lock_duration=4.0) as standin:
            holder, other = _transport(standin), _transport(standin)
            try:
                await holder.send("q", b"long")
                delivery = await _first(holder, "q")
                with anyio.move_on_after(standin.lock_duration * 1.5):
                    stolen = await _first(other, "q")
                    raise AssertionError(f"redelivered while held: {stolen.body!r}")
                await delivery.ack()
            finally:
                await holder.close()
                await other.close()


class TestAsyncioOnly:
    """Under trio the transport says it needs asyncio, before touching the SDK."""

    @pytest.fixture
    def anyio_backend(self) -> str:
        return "trio"

    @pytest.mark.anyio
    async def test_trio_refused(self) -> None:
        transport = ServiceBusTransport(CONNECTION)
        with pytest.raises(TransportError, match="asyncio only"):
            await transport.send("q", b"x")
        await transport.close()


class TestMissingSDK:
    """Without the extra installed, building the transport says which extra to install."""

    def test_missing_dependency(self, monkeypatch: pytest.MonkeyPatch) -> None:
        monkeypatch.setattr(servicebus_module, "_HAVE_SDK", False)
        with pytest.raises(MissingDependency) as caught:
            ServiceBusTransport(CONNECTION)
        assert ("servicebus", "flowkit[servicebus]") == (
            caught.value.extra,
            str(caught.value).split("'")[1],
        )
        assert isinstance(caught.value, flowkit.FlowkitError)


def _expire_every_lock(broker: Any) -> None:
    """Run in the stand-in's thread: every lock runs out now."""
    for queue in broker.queues.values():
        for stored in queue.locked.values():
            stored.locked_until = 0.0
    broker.expire_locks()


def _transport(standin: ServiceBusStandIn, **options: Any) -> ServiceBusTransport:
    options.setdefault("lock_duration", standin.lock_duration)
    return ServiceBusTransport(standin.connection_string, prefetch=1, **options)

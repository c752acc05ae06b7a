"""Every exception the NATS and SQS SDKs define becomes a flowkit ``TransportError``.

Each transport translates its SDK's exceptions in one place, ``translate_errors``
in ``flowkit/transports/_nats.py`` and ``_sqs.py``. These tests enumerate the
SDKs' exception classes (``nats.errors``, ``nats.js.errors``,
``botocore.exceptions`` and the SQS client's modelled service errors), raise
each inside that translation and check what comes out. A few end-to-end tests
provoke real failures (a closed port on loopback, a missing queue on a local
``moto_server``, the stand-in for SQS described in
``tests/conformance/factory_sqs.py``); nothing talks to AWS.
"""

from __future__ import annotations

import inspect
import socket
from typing import TYPE_CHECKING, Any

import botocore.exceptions
import botocore.session
import nats.errors
import nats.js.errors
import pytest

import flowkit
from flowkit import MissingDependency, TransportError
from flowkit.transports import DeliveryError
from flowkit.transports.nats import _transport as nats_module
from flowkit.transports.sqs import _transport as sqs_module

if TYPE_CHECKING:
    from collections.abc import Callable
    from contextlib import AbstractContextManager
    from types import ModuleType

    Translate = Callable[..., AbstractContextManager[None]]


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


def sqs_service_errors() -> list[type[BaseException]]:
    """The SQS client's modelled errors (``client.exceptions.QueueDoesNotExist`` ...)."""
    client = botocore.session.get_session().create_client(
        "sqs", region_name="us-east-1", aws_access_key_id="x", aws_secret_access_key="x"
    )
    return list(client.exceptions._code_to_exception.values())


def bare(cls: type[BaseException]) -> BaseException:
    """An instance of ``cls`` even where its constructor wants arguments we do not have."""
    exc = cls.__new__(cls)
    exc.args = ("simulated",)
    return exc


NATS_ERRORS = exception_classes(nats.errors, nats.js.errors)
BOTO_ERRORS = exception_classes(botocore.exceptions) + sqs_service_errors()


def _translated(translate: Translate, exc: BaseException, *, settling: bool) -> TransportError:
    with pytest.raises(TransportError) as caught, translate("test", "where", settling=settling):
        raise exc
    return caught.value


def _names(classes: list[type[BaseException]]) -> list[Any]:
    return [pytest.param(cls, id=f"{cls.__module__}.{cls.__qualname__}") for cls in classes]


class TestEveryNATSErrorIsMapped:
    """Each nats-py exception class becomes a TransportError (a DeliveryError when settling)."""

    def test_the_sdk_has_errors(self) -> None:
        assert 40 <= len(NATS_ERRORS)

    @pytest.mark.parametrize("cls", _names(NATS_ERRORS))
    def test_mapped(self, cls: type[BaseException]) -> None:
        exc = bare(cls)
        error = _translated(nats_module.translate_errors, exc, settling=False)
        assert (TransportError, exc) == (type(error), error.__cause__)
        assert cls.__name__ in str(error)
        settling = _translated(nats_module.translate_errors, exc, settling=True)
        assert DeliveryError is type(settling)


class TestEveryBotocoreErrorIsMapped:
    """Each botocore exception class, and each modelled SQS error, becomes a TransportError."""

    def test_the_sdk_has_errors(self) -> None:
        assert 80 <= len(BOTO_ERRORS)
        assert "QueueDoesNotExist" in {cls.__name__ for cls in BOTO_ERRORS}

    @pytest.mark.parametrize("cls", _names(BOTO_ERRORS))
    def test_mapped(self, cls: type[BaseException]) -> None:
        exc = bare(cls)
        error = _translated(sqs_module.translate_errors, exc, settling=False)
        assert (TransportError, exc) == (type(error), error.__cause__)
        settling = _translated(sqs_module.translate_errors, exc, settling=True)
        assert DeliveryError is type(settling)


class TestNothingElseIsCaught:
    """Errors that are not the SDK's (bugs, cancellation) pass through untouched."""

    @pytest.mark.parametrize("module", [nats_module, sqs_module], ids=["nats", "sqs"])
    def test_other_errors_pass(self, module: ModuleType) -> None:
        with pytest.raises(KeyError), module.translate_errors("test", "where"):
            raise KeyError("a bug")


class TestMessages:
    """Messages say what failed, where, and what to do next, and never show a password."""

    def test_nats_password_redacted(self) -> None:
        url = "nats://flow:hunter2@127.0.0.1:4222"
        exc = nats.errors.AuthorizationError()
        exc.args = ("bad password hunter2",)
        with pytest.raises(TransportError) as caught, nats_module.translate_errors("connect", url):
            raise exc
        assert "hunter2" not in str(caught.value)
        assert "check the user and password" in str(caught.value)

    def test_nats_config_conflict_hint(self) -> None:
        error = _translated(
            nats_module.translate_errors, nats.js.errors.BadRequestError(), settling=False
        )
        assert "stream_prefix" in str(error)

    def test_sqs_missing_queue_hint(self) -> None:
        response = {"Error": {"Code": "AWS.SimpleQueueService.NonExistentQueue", "Message": "x"}}
        exc = botocore.exceptions.ClientError(response, "GetQueueUrl")
        error = _translated(sqs_module.translate_errors, exc, settling=False)
        assert "GetQueueUrl" in str(error)
        assert "does not exist" in str(error)

    def test_sqs_credentials_hint(self) -> None:
        error = _translated(
            sqs_module.translate_errors, botocore.exceptions.NoCredentialsError(), settling=False
        )
        assert "credentials" in str(error)


def _closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@pytest.mark.asyncio_only
class TestRealFailures:
    """Failures of real connections arrive as TransportError."""

    @pytest.fixture
    def anyio_backend(self) -> str:
        return "asyncio"

    @pytest.mark.anyio
    async def test_nats_nobody_listening(self) -> None:
        url = f"nats://127.0.0.1:{_closed_port()}"
        transport = nats_module.NATSTransport(url, connect_timeout=1.0)
        with pytest.raises(TransportError, match="nats-server is running"):
            await transport.send("q", b"x")
        await transport.close()

    @pytest.mark.anyio
    async def test_sqs_nobody_listening(self) -> None:
        transport = sqs_module.SQSTransport(
            endpoint_url=f"http://127.0.0.1:{_closed_port()}",
            aws_access_key_id="x",
            aws_secret_access_key="x",
        )
        with pytest.raises(TransportError, match="endpoint"):
            await transport.send("q", b"x")
        await transport.close()


class TestMissingSDK:
    """Without the extra installed, building the transport says which extra to install."""

    @pytest.mark.parametrize(
        ("module", "flag", "build", "extra"),
        [
            (nats_module, "_HAVE_NATS", lambda: nats_module.NATSTransport(), "nats"),
            (sqs_module, "_HAVE_AIOBOTOCORE", lambda: sqs_module.SQSTransport(), "sqs"),
        ],
        ids=["nats", "sqs"],
    )
    def test_missing_dependency(
        self,
        monkeypatch: pytest.MonkeyPatch,
        module: ModuleType,
        flag: str,
        build: Callable[[], object],
        extra: str,
    ) -> None:
        monkeypatch.setattr(module, flag, False)
        with pytest.raises(MissingDependency) as caught:
            build()
        assert (extra, f"flowkit[{extra}]") == (
            caught.value.extra,
            str(caught.value).split("'")[1],
        )
        assert isinstance(caught.value, flowkit.FlowkitError)

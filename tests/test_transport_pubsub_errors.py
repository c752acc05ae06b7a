"""Pub/Sub SDK exceptions never leak: every one becomes a :class:`flowkit.TransportError`.

``flowkit/transports/_pubsub.py`` translates in one place, ``translate_errors``.
These tests raise every exception class that google-api-core
(``google.api_core.exceptions``), google-auth (``google.auth.exceptions``) and
google-cloud-pubsub (its publisher and subscriber ``exceptions`` modules) define
through it, plus gRPC's ``RpcError``, and check each comes out as a
TransportError (a DeliveryError while settling) with the cause kept. Then real
failures, against Google's Pub/Sub emulator on loopback (see
``tests/conformance/pubsub_emulator.py``) or with no emulator and no
credentials, arrive as TransportError too; and a missing SDK is a
MissingDependency naming the ``pubsub`` extra.
"""

from __future__ import annotations

import inspect
import os
import subprocess
import sys
import uuid
from typing import TYPE_CHECKING

import google.api_core.exceptions
import google.auth.exceptions
import google.cloud.pubsub_v1.publisher.exceptions
import google.cloud.pubsub_v1.subscriber.exceptions
import grpc
import pytest
from conformance.pubsub_emulator import shared_emulator

from flowkit import MissingDependency, TransportError
from flowkit.transports import DeliveryError
from flowkit.transports.pubsub._transport import PubSubTransport, sdk_errors, translate_errors

if TYPE_CHECKING:
    from pathlib import Path
    from types import ModuleType

SDK_MODULES = (
    google.api_core.exceptions,
    google.auth.exceptions,
    google.cloud.pubsub_v1.publisher.exceptions,
    google.cloud.pubsub_v1.subscriber.exceptions,
)


def exception_classes(*modules: ModuleType) -> list[type[BaseException]]:
    """Every exception class the modules define or re-export, and all their subclasses."""
    pending = [
        cls
        for module in modules
        for _, cls in inspect.getmembers(module, inspect.isclass)
        if issubclass(cls, BaseException) and cls.__module__.startswith("google.")
    ]
    found: set[type[BaseException]] = set()
    while pending:
        cls = pending.pop()
        if cls not in found:
            found.add(cls)
            pending.extend(c for c in cls.__subclasses__() if c.__module__.startswith("google."))
    return sorted(found, key=lambda c: f"{c.__module__}.{c.__qualname__}")


def instance(cls: type[BaseException], text: str) -> BaseException:
    """An instance of ``cls`` carrying ``text``; bypasses constructors that need more."""
    try:
        return cls(text)
    except TypeError:
        exc = cls.__new__(cls)
        BaseException.__init__(exc, text)
        return exc


SDK_CLASSES = exception_classes(*SDK_MODULES)


class TestTranslation:
    """Every SDK exception class becomes a TransportError naming the operation and a remedy."""

    def test_enumeration_is_complete(self) -> None:
        names = {cls.__name__ for cls in SDK_CLASSES}
        expected = {
            "GoogleAPICallError",
            "NotFound",
            "PermissionDenied",
            "DeadlineExceeded",
            "ServiceUnavailable",
            "RetryError",
            "DefaultCredentialsError",
            "PublishError",
            "MessageTooLargeError",
            "AcknowledgeError",
        }
        assert expected <= names
        assert 60 <= len(SDK_CLASSES)

    @pytest.mark.parametrize("error", SDK_CLASSES, ids=lambda cls: cls.__qualname__)
    def test_every_class(self, error: type[BaseException]) -> None:
        raised = instance(error, "the broker said no")
        with pytest.raises(TransportError) as caught, translate_errors("acking", "project 'p'"):
            raise raised
        assert raised is caught.value.__cause__
        assert not isinstance(caught.value, DeliveryError)
        message = str(caught.value)
        assert message.startswith("Pub/Sub project 'p': acking failed (")
        assert error.__name__ in message

    @pytest.mark.parametrize("error", SDK_CLASSES, ids=lambda cls: cls.__qualname__)
    def test_every_class_while_settling(self, error: type[BaseException]) -> None:
        with pytest.raises(DeliveryError), translate_errors("acking", "p", settling=True):
            raise instance(error, "gone")

    def test_raw_grpc_errors(self) -> None:
        with pytest.raises(TransportError, match="RpcError"), translate_errors("pulling", "p"):
            raise grpc.RpcError()

    def test_every_class_is_caught_by_one_root(self) -> None:
        assert all(issubclass(cls, sdk_errors()) for cls in SDK_CLASSES)

    def test_hints(self) -> None:
        cases: list[tuple[BaseException, str]] = [
            (google.api_core.exceptions.NotFound("topic"), "create=True"),
            (google.api_core.exceptions.PermissionDenied("iam"), "IAM"),
            (google.auth.exceptions.DefaultCredentialsError("none"), "PUBSUB_EMULATOR_HOST"),
            (google.api_core.exceptions.ServiceUnavailable("down"), "reachable"),
            (google.api_core.exceptions.InvalidArgument("bad"), "refused the request"),
        ]
        for error, hint in cases:
            with pytest.raises(TransportError, match=hint), translate_errors("sending", "p"):
                raise error

    def test_flowkit_errors_pass_unchanged(self) -> None:
        raised = DeliveryError("lease ran out")
        with pytest.raises(DeliveryError) as caught, translate_errors("acking", "p"):
            raise raised
        assert raised is caught.value

    def test_other_exceptions_pass_through(self) -> None:
        with pytest.raises(KeyError), translate_errors("sending", "p"):
            raise KeyError("not an SDK error")


@pytest.mark.anyio
class TestRealFailures:
    """Failures of real calls to the emulator arrive as TransportError."""

    async def test_missing_topic_with_create_false(self) -> None:
        shared_emulator()
        transport = PubSubTransport("flowkit-test", topic_prefix=f"fk{uuid.uuid4().hex[:12]}")
        locked_down = PubSubTransport("flowkit-test", topic_prefix="absent", create=False)
        try:
            with pytest.raises(TransportError, match=r"NotFound.*create=True") as caught:
                await locked_down.send("jobs", b"x")
            assert isinstance(caught.value.__cause__, google.api_core.exceptions.NotFound)
            with pytest.raises(TransportError, match="NotFound"):
                async for _ in locked_down.receive("jobs"):
                    pass
        finally:
            await locked_down.close()
            await transport.close()

    async def test_closed_transport(self) -> None:
        transport = PubSubTransport("flowkit-test")
        await transport.close()
        with pytest.raises(TransportError, match="closed"):
            await transport.send("jobs", b"x")


def _run_child(code: str, **env: str) -> str:
    child_env = {k: v for k, v in os.environ.items() if k != "PUBSUB_EMULATOR_HOST"} | env
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=child_env, timeout=60
    )
    assert 0 == done.returncode, done.stderr
    return done.stdout


class TestOutsideTheEmulator:
    """Without the emulator or the SDK, errors say what is missing."""

    def test_no_credentials(self, tmp_path: Path) -> None:
        code = (
            "import anyio\n"
            "from flowkit import TransportError\n"
            "from flowkit.transports import from_url\n"
            "async def main():\n"
            "    transport = from_url('pubsub://some-project')\n"
            "    try:\n"
            "        await transport.send('jobs', b'x')\n"
            "    except TransportError as exc:\n"
            "        print(type(exc.__cause__).__name__, '|', exc)\n"
            "anyio.run(main)\n"
        )
        missing = str(tmp_path / "no-such-key.json")
        output = _run_child(code, GOOGLE_APPLICATION_CREDENTIALS=missing)
        assert output.startswith("DefaultCredentialsError |")
        assert "GOOGLE_APPLICATION_CREDENTIALS" in output

    def test_missing_sdk(self) -> None:
        code = (
            "import sys\n"
            "class Block:\n"
            "    def find_spec(self, name, path=None, target=None):\n"
            "        if name.startswith(('google.cloud.pubsub', 'google.pubsub')):\n"
            "            raise ImportError(name)\n"
            "sys.meta_path.insert(0, Block())\n"
            "from flowkit import MissingDependency\n"
            "from flowkit.transports import from_url\n"
            "try:\n"
            "    from_url('pubsub://p')\n"
            "except MissingDependency as exc:\n"
            "    print(exc.feature, exc.extra, '|', exc)\n"
        )
        output = _run_child(code)
        assert output.startswith("PubSubTransport pubsub |")
        assert "pip install 'flowkit[pubsub]'" in output
        assert issubclass(MissingDependency, ImportError)

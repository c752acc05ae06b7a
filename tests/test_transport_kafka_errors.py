"""aiokafka exceptions never leak: every class in ``aiokafka.errors`` becomes a TransportError.

``flowkit.transports.kafka._transport.translate_errors`` is the one place the translation
happens; these tests enumerate ``aiokafka.errors`` and prove each class maps.
Also a missing ``kafka`` extra, and real failures against a loopback port where
no broker listens (no broker is started here). aiokafka is asyncio-only, so the
async tests run on asyncio alone.
"""

from __future__ import annotations

import inspect
import socket
import subprocess
import sys

import aiokafka.errors
import anyio
import pytest

from flowkit import TransportError
from flowkit.transports.kafka._transport import KafkaTransport, translate_errors

SECRET = "kafka://app:pa55word@kafka.example:9092"


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"  # aiokafka is asyncio-only


def aiokafka_exception_classes() -> list[type[BaseException]]:
    """Every exception class defined in ``aiokafka.errors``, in a stable order."""
    return sorted(
        (
            cls
            for _, cls in inspect.getmembers(aiokafka.errors, inspect.isclass)
            if issubclass(cls, BaseException) and cls.__module__ == "aiokafka.errors"
        ),
        key=lambda cls: cls.__qualname__,
    )


def closed_port() -> int:
    """A loopback port nothing listens on (bound, then released)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class TestEveryAiokafkaError:
    """Each aiokafka exception class is translated, with the cause kept and secrets redacted."""

    @pytest.mark.parametrize("error", aiokafka_exception_classes(), ids=lambda c: c.__name__)
    def test_translated(self, error: type[Exception]) -> None:
        raised = error("boom")
        with pytest.raises(TransportError) as caught, translate_errors("producing to 'q'", SECRET):
            raise raised
        assert raised is caught.value.__cause__
        message = str(caught.value)
        assert "producing to 'q' failed" in message
        assert error.__name__ in message
        assert "pa55word" not in message

    def test_enumeration_is_complete(self) -> None:
        classes = aiokafka_exception_classes()
        assert 100 < len(classes)  # one class per Kafka error code, and the client's own
        assert {"ConsumerStoppedError", "IllegalOperation", "KafkaError"} <= {
            cls.__name__ for cls in classes
        }

    def test_other_exceptions_pass_through(self) -> None:
        with pytest.raises(KeyError), translate_errors("fetching", "127.0.0.1:9092"):
            raise KeyError("not an aiokafka error")


@pytest.mark.anyio
class TestNoBroker:
    """Talking to a port where no broker listens fails with a TransportError, not aiokafka's."""

    async def test_send(self) -> None:
        transport = KafkaTransport(f"127.0.0.1:{closed_port()}")
        with anyio.fail_after(30), pytest.raises(TransportError, match="KafkaConnectionError"):
            await transport.send("jobs", b"x")
        await transport.close()

    async def test_receive(self) -> None:
        transport = KafkaTransport(f"127.0.0.1:{closed_port()}")
        deliveries = transport.receive("jobs")
        with anyio.fail_after(30), pytest.raises(TransportError, match="failed"):
            await anext(deliveries)
        await transport.close()


class TestMissingDependency:
    """Without aiokafka, building the transport raises MissingDependency naming the extra."""

    def test_from_url(self) -> None:
        code = (
            "import sys; sys.modules['aiokafka'] = None\n"
            "from flowkit import MissingDependency\n"
            "from flowkit.transports import from_url\n"
            "try:\n    from_url('kafka://127.0.0.1:9092')\n"
            "except MissingDependency as exc:\n    print(exc.extra, exc.feature)\n"
        )
        done = subprocess.run(
            [sys.executable, "-c", code], capture_output=True, text=True, check=True
        )
        assert "kafka KafkaTransport" == done.stdout.strip()

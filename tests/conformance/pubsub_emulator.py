"""Run Google's Pub/Sub emulator on loopback for the Pub/Sub tests.

The emulator is Google's own (Debian package ``google-cloud-cli-pubsub-emulator``,
a Java server; Java 17 runs it). It serves the real Pub/Sub gRPC API, so the
real google-cloud-pubsub client talks to it exactly as to Google Cloud; the
client library connects to it when ``PUBSUB_EMULATOR_HOST`` is set.

* :func:`emulator_binary` — the launcher (``FLOWKIT_TEST_PUBSUB_EMULATOR_BIN``
  overrides the lookup); a missing emulator **fails** the test saying so, never
  a silent skip.
* :func:`pubsub_emulator` — a context manager: starts one emulator on a free
  127.0.0.1 port, waits (bounded) until it accepts connections, yields
  ``"127.0.0.1:PORT"`` and terminates it on exit (killing it if it lingers).
* :func:`shared_emulator` — one emulator per test process (the JVM takes a
  second or two to start), started on first use, stopped at interpreter exit
  (and, on Linux, killed by the kernel if this process dies first). It sets
  ``PUBSUB_EMULATOR_HOST``. ``FLOWKIT_TEST_PUBSUB=host:port`` uses a running
  emulator instead.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import shutil
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

PACKAGE = "google-cloud-cli-pubsub-emulator"
KNOWN_PATH = "/usr/lib/google-cloud-sdk/platform/pubsub-emulator/bin/cloud-pubsub-emulator"
START_TIMEOUT = 60.0
STOP_TIMEOUT = 10.0

_shared: contextlib.ExitStack | None = None
_shared_address = ""


def emulator_binary() -> str:
    """The emulator's launcher script; fails the test (never skips) when there is none."""
    override = os.environ.get("FLOWKIT_TEST_PUBSUB_EMULATOR_BIN")
    for candidate in (override, _from_dpkg(), KNOWN_PATH):
        if candidate and os.access(candidate, os.X_OK):
            return candidate
    pytest.fail(
        f"the Pub/Sub tests need Google's Pub/Sub emulator and none was found: install the "
        f"Debian package {PACKAGE} (apt-get install {PACKAGE}; it needs Java 17), or set "
        "FLOWKIT_TEST_PUBSUB_EMULATOR_BIN to its bin/cloud-pubsub-emulator, or "
        "FLOWKIT_TEST_PUBSUB=host:port to a running emulator",
        pytrace=False,
    )


def _from_dpkg() -> str | None:
    """Where the Debian package put the launcher, if dpkg knows the package."""
    dpkg = shutil.which("dpkg")
    if dpkg is None:
        return None
    listing = subprocess.run([dpkg, "-L", PACKAGE], capture_output=True, text=True, check=False)
    found = [
        line for line in listing.stdout.splitlines() if line.endswith("bin/cloud-pubsub-emulator")
    ]
    return found[0] if found else None


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _die_with_parent() -> None:  # pragma: no cover - runs in the child
    """Linux: have the kernel SIGTERM the emulator if the test process dies first."""
    import ctypes
    import signal

    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


def _spawn(binary: str, port: int, workdir: Path) -> subprocess.Popen[bytes]:
    log = (workdir / "emulator.log").open("wb")
    try:
        return subprocess.Popen(
            [binary, "--host=127.0.0.1", f"--port={port}"],
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
            log = (workdir / "emulator.log").read_text(errors="replace")[-2000:]
            raise RuntimeError(f"the Pub/Sub emulator exited with {process.returncode}:\n{log}")
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.2):
            return
        time.sleep(0.05)  # polling a child process's port: there is no event to await
    raise RuntimeError(f"the Pub/Sub emulator did not listen on port {port} in {START_TIMEOUT}s")


def _stop(process: subprocess.Popen[bytes]) -> None:
    process.terminate()
    try:
        process.wait(STOP_TIMEOUT)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(STOP_TIMEOUT)


@contextlib.contextmanager
def pubsub_emulator() -> Iterator[str]:
    """Run one Pub/Sub emulator on a free loopback port; yield its ``host:port``."""
    binary = emulator_binary()
    port = free_port()
    with tempfile.TemporaryDirectory(prefix="pubsub-emulator-") as tmp:
        workdir = Path(tmp)
        process = _spawn(binary, port, workdir)
        try:
            _wait_listening(process, port, workdir)
            yield f"127.0.0.1:{port}"
        finally:
            _stop(process)


def shared_emulator() -> str:
    """The ``host:port`` of this test process's emulator, started on first call.

    Also sets ``PUBSUB_EMULATOR_HOST`` to it, which the client library reads.
    """
    global _shared, _shared_address
    if not _shared_address:
        external = os.environ.get("FLOWKIT_TEST_PUBSUB")
        if external:
            _shared_address = external
        else:
            stack = contextlib.ExitStack()
            _shared_address = stack.enter_context(pubsub_emulator())
            _shared = stack
            atexit.register(stack.close)
    os.environ["PUBSUB_EMULATOR_HOST"] = _shared_address
    return _shared_address

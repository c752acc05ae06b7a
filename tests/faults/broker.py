"""A private tansu broker that a test may SIGKILL and start again on the same port.

tansu keeps topics, records and committed offsets in memory: a restarted broker
is empty, as a Kafka cluster that lost its disks would be. Reuses the process
helpers of ``tests/conformance/tansu.py``; the broker binds 127.0.0.1 only, on a
port that was free when the broker was made.
"""

from __future__ import annotations

import contextlib
import signal
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING

from conformance.tansu import _spawn, _stop, _wait_listening, broker_binary, free_port

if TYPE_CHECKING:
    import subprocess
    from collections.abc import Iterator

KILL_TIMEOUT = 5.0


class RestartableTansu:
    """One tansu on a fixed loopback port: :meth:`kill` it, :meth:`start` it again."""

    def __init__(self, workdir: Path) -> None:
        self.binary = broker_binary()
        self.workdir = workdir
        self.port = free_port()
        self.address = f"127.0.0.1:{self.port}"
        self.process: subprocess.Popen[bytes] | None = None
        self.starts = 0

    def start(self) -> None:
        """Start the broker (empty) and return once its port accepts connections."""
        assert self.process is None or self.process.poll() is not None, "tansu is running"
        run_dir = self.workdir / f"run-{self.starts}"  # each run keeps its own log
        run_dir.mkdir(parents=True)
        self.starts += 1
        self.process = _spawn(self.binary, self.port, run_dir)
        _wait_listening(self.process, self.port, run_dir)

    def kill(self) -> None:
        """SIGKILL the broker: whatever it held in memory is gone."""
        if self.process is not None and self.process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                self.process.send_signal(signal.SIGKILL)
            self.process.wait(KILL_TIMEOUT)

    def freeze(self) -> None:
        """SIGSTOP the broker: connections stay open, nothing is answered."""
        assert self.process is not None, "tansu was never started"
        assert self.process.poll() is None, "tansu is not running"
        self.process.send_signal(signal.SIGSTOP)

    def thaw(self) -> None:
        """SIGCONT a frozen broker."""
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGCONT)

    def stop(self) -> None:
        self.thaw()
        if self.process is not None and self.process.poll() is None:
            _stop(self.process)


@contextlib.contextmanager
def restartable_tansu() -> Iterator[RestartableTansu]:
    """A started :class:`RestartableTansu`, stopped on exit."""
    with tempfile.TemporaryDirectory(prefix="flowkit-faults-tansu-") as tmp:
        broker = RestartableTansu(Path(tmp))
        try:
            broker.start()
            yield broker
        finally:
            broker.stop()

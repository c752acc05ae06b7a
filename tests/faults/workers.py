"""Worker processes for the fault tests: ``python -m flowkit.worker``, SIGKILLed at will.

Each process runs in its own session (a SIGKILL reaches it alone) and writes its
log to the test's ``tmp_path``; whatever still runs when the test ends is killed.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
from pathlib import Path

import anyio
from conformance.tansu import _die_with_parent  # a killed test run leaves no worker behind

TESTS = Path(__file__).resolve().parent.parent
KILL_TIMEOUT = 10.0
LOG_TAIL = 4000


class WorkerProcess:
    """One worker process and its log file."""

    def __init__(self, popen: subprocess.Popen[bytes], log: Path) -> None:
        self.popen = popen
        self.log = log

    @property
    def pid(self) -> int:
        return self.popen.pid

    def output(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""

    def kill(self) -> None:
        """SIGKILL: no drain, no goodbye to the broker's group, deliveries left held."""
        if self.popen.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.popen.pid, signal.SIGKILL)
        self.popen.wait(KILL_TIMEOUT)

    async def started(self, timeout: float) -> None:
        """Return once the worker logged that it started; fail if it exits first."""
        with anyio.fail_after(timeout):
            while "worker started" not in self.output():
                if self.popen.poll() is not None:
                    raise AssertionError(
                        f"worker exited with {self.popen.returncode} before it started:\n"
                        f"{self.output()[-LOG_TAIL:]}"
                    )
                await anyio.sleep(0.05)  # polling a child's log file: no event to await


class WorkerPool:
    """Starts worker processes with the same arguments; kills the survivors at the end."""

    def __init__(self, tmp_path: Path, args: list[str], env: dict[str, str]) -> None:
        self.tmp_path = tmp_path
        self.args = args
        self.env = {**os.environ, **env, "PYTHONUNBUFFERED": "1"}
        self.env["PYTHONPATH"] = os.pathsep.join(
            [str(TESTS), *filter(None, [os.environ.get("PYTHONPATH")])]
        )
        self.started: list[WorkerProcess] = []

    def start(self) -> WorkerProcess:
        log = self.tmp_path / f"worker-{len(self.started)}.log"
        with log.open("wb") as out:
            popen = subprocess.Popen(
                [sys.executable, "-m", "flowkit.worker", *self.args],
                cwd=self.tmp_path,
                env=self.env,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                preexec_fn=_die_with_parent if sys.platform == "linux" else None,
            )
        process = WorkerProcess(popen, log)
        self.started.append(process)
        return process

    def by_pid(self, pid: str) -> WorkerProcess | None:
        return next((p for p in self.started if str(p.pid) == pid), None)

    @property
    def running(self) -> list[WorkerProcess]:
        return [p for p in self.started if p.popen.poll() is None]

    def kill_all(self) -> None:
        for process in self.started:
            process.kill()

    def report(self) -> str:
        return "\n".join(
            f"--- worker {p.pid} exit {p.popen.poll()}\n{p.output()[-LOG_TAIL:]}"
            for p in self.started
        )

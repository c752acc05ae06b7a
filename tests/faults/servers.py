"""Private servers for the fault tests: Redis, PostgreSQL and RabbitMQ on free loopback ports.

Each binds 127.0.0.1 only, keeps its data in a temporary directory of its own,
and may be stopped (or SIGKILLed) and started again on the same port, keeping
its data as a production server would: Redis with an append-only file, the
PostgreSQL cluster and the RabbitMQ node on disk. Every wait is for a
condition (the port accepts connections, the process exited), bounded.

PostgreSQL's ``initdb`` refuses root and RabbitMQ runs as its own user, so those
two run as the ``postgres`` and ``rabbitmq`` users (``runuser``) when this
process is root. A missing binary is a test failure saying so, never a skip.
"""

from __future__ import annotations

import contextlib
import glob
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
from conformance.tansu import free_port

if TYPE_CHECKING:
    from collections.abc import Iterator

STOP_TIMEOUT = 30.0
LOG_TAIL = 3000


def accepts_connections(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.settimeout(0.5)
        return sock.connect_ex(("127.0.0.1", port)) == 0


def wait_listening(
    port: int, timeout: float, alive: subprocess.Popen[bytes] | None, log: Path
) -> None:
    """Return once ``port`` accepts connections; fail with the log if the process dies
    or ``timeout`` passes first."""
    deadline = time.monotonic() + timeout
    while not accepts_connections(port):
        if alive is not None and alive.poll() is not None:
            raise AssertionError(f"server exited with {alive.returncode}:\n{tail(log)}")
        if time.monotonic() > deadline:
            raise AssertionError(f"server not listening on {port} after {timeout}s:\n{tail(log)}")
        time.sleep(0.05)  # polling a port: there is no event to wait on


def tail(log: Path) -> str:
    return log.read_text(errors="replace")[-LOG_TAIL:] if log.exists() else "(no log)"


def binary(name: str, pattern: str | None = None) -> str:
    found = shutil.which(name) or next(iter(sorted(glob.glob(pattern or ""), reverse=True)), None)
    if not found:
        pytest.fail(f"the fault tests need {name} (not found on PATH or {pattern})", pytrace=False)
    return found


def as_user(user: str) -> list[str]:
    """The command prefix that runs a command as ``user`` (nothing if this already is not root)."""
    return ["runuser", "-u", user, "--"] if os.geteuid() == 0 else []


def give_to(path: Path, user: str) -> None:
    if os.geteuid() == 0:
        shutil.chown(path, user, user)


def stop_group(process: subprocess.Popen[bytes], sig: int) -> None:
    """Signal the process's whole session (it was started in its own) and wait for it."""
    if process.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, sig)
    try:
        process.wait(STOP_TIMEOUT)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        process.wait(STOP_TIMEOUT)


class PrivateRedis:
    """``redis-server`` with an append-only file (fsync always): a restart keeps the data."""

    START_TIMEOUT = 20.0

    def __init__(self, workdir: Path) -> None:
        self.binary = binary("redis-server")
        self.workdir = workdir
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.process: subprocess.Popen[bytes] | None = None
        self.starts = 0

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def start(self) -> None:
        assert not self.running, "redis is running"
        log = self.workdir / f"redis-{self.starts}.log"
        self.starts += 1
        args = [
            self.binary, "--port", str(self.port), "--bind", "127.0.0.1",
            "--dir", str(self.workdir), "--appendonly", "yes", "--appendfsync", "always",
            "--save", "", "--daemonize", "no", "--protected-mode", "yes",
        ]  # fmt: skip
        with log.open("wb") as out:
            self.process = subprocess.Popen(
                args, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
            )
        wait_listening(self.port, self.START_TIMEOUT, self.process, log)
        self._until_loaded()

    def _until_loaded(self) -> None:
        """Redis accepts connections while it replays its AOF; wait for the replay."""
        import redis

        client = redis.Redis(port=self.port, socket_timeout=2.0)
        deadline = time.monotonic() + self.START_TIMEOUT
        try:
            while True:
                try:
                    client.ping()
                    return
                except redis.exceptions.BusyLoadingError:
                    if time.monotonic() > deadline:
                        raise
                    time.sleep(0.05)
        finally:
            client.close()

    def stop(self) -> None:
        """A clean shutdown (SIGTERM): the append-only file is complete."""
        if self.process is not None:
            stop_group(self.process, signal.SIGTERM)

    def kill(self) -> None:
        if self.process is not None:
            stop_group(self.process, signal.SIGKILL)


class PrivatePostgres:
    """A PostgreSQL cluster of its own (``initdb``; trust auth for ``postgres``)."""

    START_TIMEOUT = 60.0

    def __init__(self, workdir: Path) -> None:
        self.bin = Path(binary("pg_ctl", "/usr/lib/postgresql/*/bin/pg_ctl")).parent
        self.workdir = workdir
        give_to(workdir, "postgres")
        self.data = workdir / "data"
        self.log = workdir / "postgres.log"
        self.port = free_port()
        self.dsn = f"postgresql://postgres@127.0.0.1:{self.port}/postgres"
        self.initialised = False

    @property
    def running(self) -> bool:
        return (self.data / "postmaster.pid").exists()

    def create_schema(self, schema: str) -> None:
        import psycopg

        with psycopg.connect(self.dsn, autocommit=True) as conn:
            conn.execute(f"CREATE SCHEMA IF NOT EXISTS {schema}")

    def _pg(self, *args: str) -> None:
        result = subprocess.run(
            [*as_user("postgres"), *args], capture_output=True, timeout=self.START_TIMEOUT
        )
        if result.returncode:
            raise AssertionError(
                f"{' '.join(args[:2])} failed ({result.returncode}): "
                f"{result.stdout.decode(errors='replace')}{result.stderr.decode(errors='replace')}"
                f"\n{tail(self.log)}"
            )

    def start(self) -> None:
        if not self.initialised:
            self._pg(str(self.bin / "initdb"), "-D", str(self.data), "-U", "postgres",
                     "--auth=trust", "-N")  # fmt: skip
            self.initialised = True
        options = (
            f"-p {self.port} -k {self.workdir} -c listen_addresses=127.0.0.1 -c fsync=off "
            "-c max_connections=200"
        )
        self._pg(str(self.bin / "pg_ctl"), "-D", str(self.data), "-l", str(self.log), "-w",
                 "-t", str(int(self.START_TIMEOUT)), "-o", options, "start")  # fmt: skip

    def stop(self) -> None:
        """Stop it (fast: clients are disconnected, nothing committed is lost)."""
        if self.running:
            self._pg(str(self.bin / "pg_ctl"), "-D", str(self.data), "-m", "fast", "-w", "stop")


class PrivateRabbitMQ:
    """A RabbitMQ node of its own: its name, ports, data and logs; no plugins."""

    START_TIMEOUT = 90.0

    def __init__(self, workdir: Path) -> None:
        self.binary = binary("rabbitmq-server", "/usr/lib/rabbitmq/bin/rabbitmq-server")
        self.workdir = workdir
        self.port = free_port()
        self.dist_port = free_port()
        self.url = f"amqp://guest:guest@127.0.0.1:{self.port}/"
        self.node = f"fkfaults{self.port}@localhost"
        self.process: subprocess.Popen[bytes] | None = None
        self.starts = 0
        config = workdir / "rabbitmq.conf"
        config.write_text(f"listeners.tcp.local = 127.0.0.1:{self.port}\nloopback_users = none\n")
        (workdir / "enabled_plugins").write_text("[].\n")
        for sub in ("mnesia", "log"):
            (workdir / sub).mkdir()
        self.env = {
            **os.environ,
            "RABBITMQ_NODENAME": self.node,
            "RABBITMQ_NODE_IP_ADDRESS": "127.0.0.1",
            "RABBITMQ_NODE_PORT": str(self.port),
            "RABBITMQ_DIST_PORT": str(self.dist_port),
            "RABBITMQ_MNESIA_BASE": str(workdir / "mnesia"),
            "RABBITMQ_LOG_BASE": str(workdir / "log"),
            "RABBITMQ_CONFIG_FILE": str(config),
            "RABBITMQ_ENABLED_PLUGINS_FILE": str(workdir / "enabled_plugins"),
            "RABBITMQ_FEATURE_FLAGS_FILE": str(workdir / "feature_flags"),
            "RABBITMQ_PLUGINS_EXPAND_DIR": str(workdir / "plugins-expand"),
            "RABBITMQ_PID_FILE": str(workdir / "pid"),
            "ERL_CRASH_DUMP": str(workdir / "erl_crash.dump"),
        }
        if os.geteuid() == 0:
            subprocess.run(["chown", "-R", "rabbitmq:rabbitmq", str(workdir)], check=True)

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def start(self) -> None:
        assert not self.running, "rabbitmq is running"
        log = self.workdir / f"rabbitmq-{self.starts}.out"
        self.starts += 1
        with log.open("wb") as out:
            self.process = subprocess.Popen(
                [*as_user("rabbitmq"), self.binary],
                env=self.env,
                cwd=self.workdir,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        wait_listening(self.port, self.START_TIMEOUT, self.process, log)

    def stop(self) -> None:
        """A clean stop (SIGTERM): durable queues and persistent messages are kept."""
        if self.process is not None:
            stop_group(self.process, signal.SIGTERM)


@contextlib.contextmanager
def workdir(prefix: str) -> Iterator[Path]:
    path = Path(tempfile.mkdtemp(prefix=f"flowkit-faults-{prefix}-"))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


@contextlib.contextmanager
def private_redis() -> Iterator[PrivateRedis]:
    with workdir("redis") as path:
        server = PrivateRedis(path)
        try:
            server.start()
            yield server
        finally:
            server.kill()


@contextlib.contextmanager
def private_postgres() -> Iterator[PrivatePostgres]:
    with workdir("postgres") as path:
        server = PrivatePostgres(path)
        try:
            server.start()
            yield server
        finally:
            server.stop()


@contextlib.contextmanager
def private_rabbitmq() -> Iterator[PrivateRabbitMQ]:
    with workdir("rabbitmq") as path:
        server = PrivateRabbitMQ(path)
        try:
            server.start()
            yield server
        finally:
            server.stop()

"""Temporal's samples written with flowkit (``examples/temporal_samples``) do what they say.

Every sample module (see the package's README for what it defines) runs three ways,
and must observe what it expects each time:

* in-memory: its ``demo`` (the client code) against a ``flowkit.Runtime``, on
  asyncio and trio;
* under ``flowkit.testing.simulate()``: its ``simulated`` scenario on virtual time;
* on workers: two ``python -m flowkit.worker`` processes serving every sample over
  RabbitMQ (the real broker on 127.0.0.1:5672, a queue name of this module's own,
  deleted after) with a SQLite store, shared by the module's tests; its ``demo``
  against a ``flowkit.Client`` (asyncio only: aio-pika). At the end both workers
  drain on SIGTERM and exit 0.

A module that does not define the names the README lists fails; none is skipped.
"""

from __future__ import annotations

import contextlib
import importlib
import os
import pkgutil
import signal
import subprocess
import sys
import uuid
from pathlib import Path
from typing import TYPE_CHECKING, Any

import anyio
import pytest

import flowkit
from flowkit.stores import SQLiteStore

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Iterator
    from types import ModuleType

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:  # the test imports the samples as the workers do
    sys.path.insert(0, str(ROOT))

import examples.temporal_samples as package  # noqa: E402

RABBITMQ_URL = os.environ.get("FLOWKIT_TEST_RABBITMQ", "amqp://guest:guest@127.0.0.1:5672/")
STOP_TIMEOUT = 30.0  # a SIGTERMed worker drains and exits within this
START_TIMEOUT = 30.0  # a worker logs that it started within this
REQUIRED = ("FLOWS", "demo", "EXPECTED", "simulated")
OWN_SAMPLES = {  # written with this package; others join by following the README
    "activity_retry",
    "cancellation",
    "child_workflow",
    "parallel_activities",
    "polling",
    "query",
    "saga",
    "signals",
    "sleep_for_days",
    "update",
}

NAMES = sorted(m.name for m in pkgutil.iter_modules(package.__path__) if not m.name.startswith("_"))


def sample(name: str) -> ModuleType:
    return importlib.import_module(f"examples.temporal_samples.{name}")


def all_flows() -> list[Any]:
    return [flow for name in NAMES for flow in sample(name).FLOWS]


class TestConvention:
    """Every sample module defines what the harness runs, and none has gone missing."""

    def test_every_sample_is_found(self) -> None:
        assert set() == OWN_SAMPLES - set(NAMES)

    @pytest.mark.parametrize("name", NAMES)
    def test_defines_the_names(self, name: str) -> None:
        module = sample(name)
        assert [] == [attr for attr in REQUIRED if not hasattr(module, attr)]
        assert module.FLOWS
        assert all(isinstance(f, flowkit.FlowDef) for f in module.FLOWS)

    @pytest.mark.parametrize("name", NAMES)
    def test_names_its_temporal_sample(self, name: str) -> None:
        assert "Temporal" in (sample(name).__doc__ or "")


@pytest.mark.anyio
class TestInMemory:
    """Each sample's client code against an in-memory runtime observes what it expects."""

    @pytest.mark.parametrize("name", NAMES)
    async def test_demo(self, name: str) -> None:
        module = sample(name)
        async with flowkit.Runtime(flows=module.FLOWS) as rt:
            observed = await module.demo(rt)
        assert module.EXPECTED == observed

    async def test_main_runs_every_sample(self) -> None:
        from examples.temporal_samples.__main__ import main

        with contextlib.redirect_stdout(None):
            seen = await main()
        assert {name: sample(name).EXPECTED for name in NAMES} == seen


class TestSimulated:
    """Each sample's scenario under ``simulate()``, on virtual time, observes what it expects."""

    @pytest.mark.parametrize("name", NAMES)
    def test_simulated(self, name: str) -> None:
        module = sample(name)
        expected = getattr(module, "EXPECTED_SIMULATED", module.EXPECTED)
        assert expected == module.simulated()


# -- two worker processes over RabbitMQ -----------------------------------------------------------


class Workers:
    """Two ``python -m flowkit.worker`` processes serving every sample, logging to files."""

    def __init__(self, directory: Path, queue: str) -> None:
        self.directory = directory
        self.queue = queue
        self.store_path = directory / "runs.db"
        self.processes: list[tuple[subprocess.Popen[bytes], Path]] = []

    def start(self, count: int) -> None:
        apps = [arg for name in NAMES for arg in ("--app", f"examples.temporal_samples.{name}")]
        store = f"sqlite:///{self.store_path}"
        flags = ["--transport", RABBITMQ_URL, "--store", store, "--queue", self.queue]
        path = os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))
        for index in range(count):
            log = self.directory / f"worker-{index}.log"
            with log.open("wb") as out:
                popen = subprocess.Popen(
                    [sys.executable, "-m", "flowkit.worker", *apps, *flags, "--lease", "10"],
                    cwd=self.directory,
                    env=dict(os.environ, PYTHONPATH=path),
                    stdin=subprocess.DEVNULL,
                    stdout=out,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,  # its own process group: killed alone if need be
                )
            self.processes.append((popen, log))

    def logs(self) -> str:
        return "\n".join(f"--- {log.name}\n{log.read_text()[-3000:]}" for _, log in self.processes)

    def check_started(self) -> None:
        """Every worker has logged that it started; an ``AssertionError`` with the logs if
        one exited instead (a sample that does not import, say)."""
        for popen, log in self.processes:
            self._await_start(popen, log)
        exited = [popen.args for popen, _ in self.processes if popen.poll() is not None]
        assert [] == exited, self.logs()

    def stop(self) -> list[int | None]:
        """SIGTERM each worker once it has started; their exit codes (None: still running)."""
        for popen, log in self.processes:
            self._await_start(popen, log)
            popen.send_signal(signal.SIGTERM)
        codes: list[int | None] = []
        for popen, _ in self.processes:
            with contextlib.suppress(subprocess.TimeoutExpired):
                popen.wait(STOP_TIMEOUT)
            codes.append(popen.poll())
        return codes

    @staticmethod
    def _await_start(popen: subprocess.Popen[bytes], log: Path) -> None:
        """Until the worker logs that it started (before, SIGTERM would just kill it)."""
        deadline = START_TIMEOUT
        while popen.poll() is None and "worker started" not in log.read_text():
            with contextlib.suppress(subprocess.TimeoutExpired):
                popen.wait(0.05)  # a log line, no event to await: poll, bounded
            deadline -= 0.05
            if deadline <= 0:
                return

    def kill_all(self) -> None:
        for popen, _ in self.processes:
            if popen.poll() is None:
                os.killpg(popen.pid, signal.SIGKILL)
                popen.wait()


async def delete_rabbitmq_queues(queue: str) -> None:
    import aio_pika

    connection = await aio_pika.connect(RABBITMQ_URL)
    async with connection:
        channel = await connection.channel()
        base = f"flowkit.{queue}"  # the transport's default queue_prefix is "flowkit"
        for name in (base, f"{base}.dlq", f"{base}.delay.1000"):
            await channel.queue_delete(name)


@pytest.fixture(scope="module")
def workers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Workers]:
    """Two workers for the module's tests; at the end they must drain and exit 0."""
    started = Workers(
        tmp_path_factory.mktemp("temporal-samples"), f"samples_{uuid.uuid4().hex[:10]}"
    )
    started.start(2)
    try:
        started.check_started()
        yield started
        codes = started.stop()
        assert [0, 0] == codes, started.logs()
    finally:
        started.kill_all()
        anyio.run(delete_rabbitmq_queues, started.queue, backend="asyncio")


@contextlib.asynccontextmanager
async def client_of(workers: Workers) -> AsyncIterator[flowkit.Client]:
    from flowkit.transports import from_url

    transport, store = from_url(RABBITMQ_URL), SQLiteStore(workers.store_path)
    try:
        yield flowkit.Client(transport, store, queue=workers.queue, flows=all_flows())
    finally:
        await transport.close()
        await store.close()


@pytest.mark.anyio
@pytest.mark.asyncio_only
class TestOnRabbitMQWorkers:
    """Each sample's client code, through a Client, against two worker processes."""

    @pytest.fixture
    def anyio_backend(self) -> str:
        return "asyncio"  # the test's client talks to RabbitMQ with aio-pika

    @pytest.mark.parametrize("name", NAMES)
    async def test_demo(self, name: str, workers: Workers) -> None:
        module = sample(name)
        try:
            async with client_of(workers) as client:
                observed = await module.demo(client)
        except BaseException:
            print(workers.logs())  # shown with the failure
            raise
        assert module.EXPECTED == observed

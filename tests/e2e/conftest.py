"""Fixtures for the end-to-end tests: worker processes, and private broker/store namespaces.

* :class:`WorkerProcesses` starts ``python -m flowkit.worker`` processes (each in
  its own process group, output to a log file in ``tmp_path``), kills or drains
  them, and kills whatever is left when the test ends. When a test fails, the
  tail of every worker's log is attached to the report ("worker logs").
* ``pg_database``: a fresh PostgreSQL database per test (``CREATE DATABASE ...
  TEMPLATE template0``), dropped after, so a store's and a queue's tables are
  the test's own — the worker CLI takes URLs only, and libpq URLs cannot pick a
  schema flowkit would use.
* ``redis_db``: a Redis database number (1-15) claimed for the test with a
  lock key in db 0, so concurrent test sessions never share one; every
  ``flowkit:*`` key in it is deleted before and after (the worker CLI cannot
  set a key prefix).
* ``effects``: the side-effect tables of ``flows_e2e`` (a unique prefix in the
  ``test`` database), dropped after.

The e2e tests run on asyncio (``anyio_backend`` below): the broker SDKs the test
process talks to (aio-pika, aiokafka, redis-py, psycopg's async connections) are
asyncio-only. The in-process MemoryTransport test also runs on trio.

The e2e marker is registered here as well as in pyproject (``--strict-markers``).
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
import signal
import subprocess
import sys
import time
import uuid
from contextlib import asynccontextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

import anyio
import attrs
import pytest

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Iterator

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))  # the test process imports flows_e2e as the workers do
if str(HERE.parent) not in sys.path:  # tests/: the conformance helpers (tansu, dead letters)
    sys.path.append(str(HERE.parent))

import flows_e2e  # noqa: E402

PG_DSN = flows_e2e.DEFAULT_DSN
REDIS_URL = os.environ.get("FLOWKIT_TEST_REDIS", "redis://127.0.0.1:6379/0")
RABBITMQ_URL = os.environ.get("FLOWKIT_TEST_RABBITMQ", "amqp://guest:guest@127.0.0.1:5672/")
DUMMY_AWS = {  # moto accepts any credentials; botocore needs some
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_DEFAULT_REGION": "us-east-1",
}
STOP_TIMEOUT = 30.0  # a drained worker exits within this
LOG_TAIL = 6000  # characters of each worker log attached to a failure report

_PROCESSES = pytest.StashKey["WorkerProcesses"]()


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "e2e: end-to-end tests with worker processes and brokers")


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


# -- worker processes ---------------------------------------------------------------------------


class WorkerProcess:
    """One ``python -m flowkit.worker`` process and its log file."""

    def __init__(self, popen: subprocess.Popen[bytes], log: Path, args: list[str]) -> None:
        self.popen = popen
        self.log = log
        self.args = args

    @property
    def pid(self) -> int:
        return self.popen.pid

    @property
    def returncode(self) -> int | None:
        return self.popen.poll()

    def output(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""

    def events(self) -> list[dict[str, Any]]:
        """The JSON log lines (``--log-format json``) the worker wrote so far."""
        events = []
        for line in self.output().splitlines():
            with contextlib.suppress(ValueError):
                event = json.loads(line)
                if isinstance(event, dict):
                    events.append(event)
        return events

    def kill(self) -> None:
        """SIGKILL the worker's process group (the worker alone: it runs in its own session)."""
        if self.popen.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.popen.pid, signal.SIGKILL)
        self.popen.wait(STOP_TIMEOUT)

    async def wait(self, timeout: float) -> int:
        """The exit code, once the process exits (``TimeoutError`` after ``timeout``)."""
        try:
            return await anyio.to_thread.run_sync(self.popen.wait, timeout)
        except subprocess.TimeoutExpired:
            raise TimeoutError(f"worker {self.pid} still running after {timeout}s") from None

    async def wait_for_line(self, text: str, timeout: float) -> None:
        """Return once ``text`` appears in the log; fail if the process exits first."""
        with anyio.fail_after(timeout):
            while text not in self.output():
                if self.popen.poll() is not None:
                    raise AssertionError(
                        f"worker exited with {self.popen.returncode} before logging {text!r}:\n"
                        f"{self.output()[-LOG_TAIL:]}"
                    )
                await anyio.sleep(0.05)

    async def terminate(self, timeout: float = STOP_TIMEOUT) -> int:
        """SIGTERM (drain) and the exit code."""
        if self.popen.poll() is None:
            self.popen.send_signal(signal.SIGTERM)
        return await self.wait(timeout)


class WorkerProcesses:
    """The worker processes of one test; whatever is still running at the end is killed."""

    def __init__(self, tmp_path: Path) -> None:
        self.tmp_path = tmp_path
        self.started: list[WorkerProcess] = []
        self.env = dict(os.environ)
        self.env["PYTHONPATH"] = os.pathsep.join(
            [str(HERE), *filter(None, [os.environ.get("PYTHONPATH")])]
        )
        self.env["PYTHONUNBUFFERED"] = "1"

    def start(self, *args: str, env: dict[str, str] | None = None) -> WorkerProcess:
        command = [sys.executable, "-m", "flowkit.worker", *args]
        log = self.tmp_path / f"worker-{len(self.started)}.log"
        with log.open("wb") as out:
            popen = subprocess.Popen(
                command,
                cwd=self.tmp_path,  # the default sqlite:///flowkit.db lands here, if used
                env={**self.env, **(env or {})},
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        process = WorkerProcess(popen, log, command)
        self.started.append(process)
        return process

    @property
    def running(self) -> list[WorkerProcess]:
        return [p for p in self.started if p.returncode is None]

    def report(self) -> str:
        parts = []
        for i, process in enumerate(self.started):
            parts.append(
                f"--- worker {i} pid {process.pid} exit {process.returncode} "
                f"({' '.join(process.args[3:])})\n{process.output()[-LOG_TAIL:]}"
            )
        return "\n".join(parts)

    def kill_all(self) -> None:
        for process in self.started:
            process.kill()


@pytest.fixture
def worker_processes(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[WorkerProcesses]:
    processes = WorkerProcesses(tmp_path)
    request.node.stash[_PROCESSES] = processes
    try:
        yield processes
    finally:
        processes.kill_all()


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[Any]) -> Any:
    outcome = yield
    report = outcome.get_result()
    processes = item.stash.get(_PROCESSES, None)
    if processes is not None and report.failed and processes.started:
        report.sections.append(("worker logs", processes.report()))


# -- private namespaces on the shared servers ---------------------------------------------------


def _admin(dsn: str = PG_DSN) -> Any:
    import psycopg

    return psycopg.connect(dsn, autocommit=True)


def dsn_for(database: str) -> str:
    base, _, _ = PG_DSN.rpartition("/")
    return f"{base}/{database}"


@pytest.fixture
def pg_database() -> Iterator[str]:
    """A fresh database's DSN; dropped (disconnecting its users) after the test."""
    name = f"fk_e2e_{uuid.uuid4().hex[:12]}"
    with _admin() as conn:
        conn.execute(f"CREATE DATABASE {name} TEMPLATE template0")
    try:
        yield dsn_for(name)
    finally:
        with _admin() as conn:
            conn.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


@pytest.fixture
def effects() -> Iterator[str]:
    """A table prefix whose ``flows_e2e`` side-effect tables exist for this test."""
    prefix = f"fk_e2e_{uuid.uuid4().hex[:12]}"
    flows_e2e.create_tables(PG_DSN, prefix)
    try:
        yield prefix
    finally:
        flows_e2e.drop_tables(PG_DSN, prefix)


def redis_url(db: int) -> str:
    base, _, _ = REDIS_URL.rpartition("/")
    return f"{base}/{db}"


def _delete_flowkit_keys(client: Any) -> None:
    keys = list(client.scan_iter("flowkit:*", count=1000))
    for start in range(0, len(keys), 500):
        client.delete(*keys[start : start + 500])


@pytest.fixture
def redis_db() -> Iterator[int]:
    """A Redis database number held by this test alone (a lock key in db 0 claims it)."""
    import redis

    token = uuid.uuid4().hex
    lock = redis.Redis.from_url(REDIS_URL)
    try:
        deadline = time.monotonic() + 60
        db = None
        while db is None:
            for candidate in range(1, 16):
                if lock.set(f"flowkit-e2e:redis-db:{candidate}", token, nx=True, ex=900):
                    db = candidate
                    break
            else:
                if time.monotonic() > deadline:
                    raise RuntimeError("no free Redis database (1-15) for the e2e test")
                time.sleep(0.2)  # every database is claimed by another session: poll, bounded
        client = redis.Redis.from_url(redis_url(db))
        try:
            _delete_flowkit_keys(client)
            yield db
            _delete_flowkit_keys(client)
        finally:
            client.close()
            key = f"flowkit-e2e:redis-db:{db}"
            if lock.get(key) == token.encode():
                lock.delete(key)
    finally:
        lock.close()


async def delete_rabbitmq_queues(names: list[str]) -> None:
    import aio_pika

    connection = await aio_pika.connect(RABBITMQ_URL)
    async with connection:
        channel = await connection.channel()
        for name in names:
            await channel.queue_delete(name, if_unused=False, if_empty=False)


# -- a transport and a store, private to one test -----------------------------------------------

# the transport/store pairs of the end-to-end tests, by transport: issue 6's, then issue 8's
BROKERS = (
    "sqlite", "postgres", "rabbitmq", "redis", "kafka",
    "pubsub", "sqs", "nats", "servicebus",
)  # fmt: skip


@attrs.define
class Backend:
    """URLs for ``--transport`` and ``--store``, and the ``--queue`` name."""

    name: str
    transport: str
    store: str
    queue: str
    env: dict[str, str] = attrs.Factory(dict)  # what the SDK reads from the environment

    async def dead_letters(self, transport: Any) -> list[tuple[bytes, str]]:
        """``(body, reason)`` of every message dead-lettered from the queue so far."""
        return await dead_letters(self.name, transport, self.queue)


@pytest.fixture(params=BROKERS)
def broker(request: pytest.FixtureRequest) -> str:
    """Each transport/store pair of :data:`BROKERS` in turn."""
    return str(request.param)


@pytest.fixture
def open_backend(
    request: pytest.FixtureRequest, tmp_path: Path, worker_processes: WorkerProcesses
) -> Any:
    """``open_backend(name, lease=...)``: :func:`backend` for this test (its worker
    processes are killed, if still running, before the backend is cleaned up)."""
    return functools.partial(backend, request=request, tmp_path=tmp_path, workers=worker_processes)


@asynccontextmanager
async def backend(
    name: str,
    *,
    request: pytest.FixtureRequest,
    tmp_path: Path,
    workers: WorkerProcesses,
    lease: float,
) -> AsyncIterator[Backend]:
    """SQLite queue + SQLiteStore, PostgreSQL queue + PostgresStore, RabbitMQ +
    PostgresStore, Redis Streams + RedisStore, Kafka (tansu) + RedisStore, Pub/Sub
    (Google's emulator) + PostgresStore, SQS (a private moto server) + RedisStore,
    NATS JetStream + RedisStore or Service Bus (a private stand-in broker, see
    ``tests/servicebus_standin.py``) + PostgresStore, on namespaces of this test's
    own (a unique queue; a fresh database; a claimed Redis db; a unique topic or
    stream prefix), cleaned up after. ``lease`` is also the broker's visibility
    timeout where the URL can set one (RabbitMQ, Redis Streams and the SQL queues
    take the worker's ``--lease`` alone). ``Backend.env`` (emulator host, dummy
    credentials) is set in this process too, for the test's own client.
    """
    async with _backend(name, request, tmp_path, lease) as urls:
        monkeypatch = request.getfixturevalue("monkeypatch")
        for variable, value in urls.env.items():
            monkeypatch.setenv(variable, value)
        workers.env.update(urls.env)
        try:
            yield urls
        finally:
            workers.kill_all()  # before the queues and databases they use go away


PG_POOL = 3


@asynccontextmanager
async def _backend(
    name: str, request: pytest.FixtureRequest, tmp_path: Path, lease: float
) -> AsyncIterator[Backend]:
    queue = f"e2e_{uuid.uuid4().hex[:10]}"
    if name == "sqlite":
        queue_db, runs_db = tmp_path / "queue.db", tmp_path / "runs.db"
        yield Backend(name, f"sqlite:///{queue_db}", f"sqlite:///{runs_db}", queue)
    elif name == "postgres":
        dsn = pooled(request.getfixturevalue("pg_database"))
        yield Backend(name, dsn, dsn, queue)
    elif name == "rabbitmq":
        dsn = pooled(request.getfixturevalue("pg_database"))
        try:
            yield Backend(name, RABBITMQ_URL, dsn, queue)
        finally:
            base = f"flowkit.{queue}"  # the transport's default queue_prefix is "flowkit"
            await delete_rabbitmq_queues([base, f"{base}.dlq", f"{base}.delay.1000"])
    elif name == "redis":
        url = redis_url(request.getfixturevalue("redis_db"))
        yield Backend(name, url, url, queue)  # the redis_db fixture deletes the keys
    elif name == "kafka":
        from conformance.tansu import SESSION_TIMEOUT, shared_tansu

        url = redis_url(request.getfixturevalue("redis_db"))
        options = (
            f"group={queue}&topic_prefix={queue}&partitions=4"
            f"&visibility_timeout={lease}&session_timeout={SESSION_TIMEOUT}"
        )
        yield Backend(name, f"kafka://{shared_tansu()}?{options}", url, queue)
    elif name == "pubsub":
        from conformance.pubsub_emulator import shared_emulator

        dsn = pooled(request.getfixturevalue("pg_database"))
        host = shared_emulator()
        url = f"pubsub://flowkit-e2e?topic_prefix={queue}&ack_deadline={lease}"
        yield Backend(name, url, dsn, queue, env={"PUBSUB_EMULATOR_HOST": host})
    elif name == "sqs":
        from conformance.factory_sqs import moto_server

        url = redis_url(request.getfixturevalue("redis_db"))
        async with moto_server(tmp_path) as endpoint:
            sqs = f"sqs://us-east-1/{queue}?endpoint={endpoint}&visibility_timeout={round(lease)}"
            yield Backend(name, sqs, url, queue, env=DUMMY_AWS)
    elif name == "nats":
        from conformance.factory_nats import NATS_URL, delete_streams

        url = redis_url(request.getfixturevalue("redis_db"))
        prefix = f"FKE{uuid.uuid4().hex[:12]}"
        try:
            yield Backend(name, f"{NATS_URL}?stream_prefix={prefix}&ack_wait={lease}", url, queue)
        finally:
            await delete_streams(prefix, NATS_URL)
    elif name == "servicebus":
        from servicebus_standin import ServiceBusStandIn

        dsn = pooled(request.getfixturevalue("pg_database"))
        standin = ServiceBusStandIn(lock_duration=lease).start()
        try:
            url = f"servicebus://{quote(standin.connection_string)}?lock_duration={lease}"
            yield Backend(name, url, dsn, queue)
        finally:
            await anyio.to_thread.run_sync(standin.stop)
    else:
        raise AssertionError(f"unknown backend {name!r}")


def pooled(dsn: str) -> str:
    """``dsn`` for a store or queue of :data:`PG_POOL` connections at most: a test runs
    up to four worker processes, and concurrent test suites share PostgreSQL's
    ``max_connections`` (100)."""
    return f"{dsn}?pool_size={PG_POOL}"


async def dead_letters(name: str, transport: Any, queue: str) -> list[tuple[bytes, str]]:
    """``(body, reason)`` of every message dead-lettered from ``queue`` so far."""
    if name in ("sqlite", "postgres"):
        return [(d.body, d.reason) for d in await transport.dead_letters(queue)]
    if name == "rabbitmq":
        from conformance.factory_rabbitmq import FACTORY as RABBITMQ

        return list(await RABBITMQ.dead_letters(transport, queue))
    if name == "kafka":
        from conformance.factory_kafka import FACTORY as KAFKA

        return list(await KAFKA.dead_letters(transport, queue))
    if name == "pubsub":
        from conformance.factory_pubsub import FACTORY as PUBSUB

        return list(await PUBSUB.dead_letters(transport, queue))
    if name in ("sqs", "nats", "servicebus"):
        return [(d.body, d.reason) for d in await transport.dead_letters(queue)]
    if name == "redis":  # the conformance helper reads db 0; this test's db is another
        import redis.asyncio

        client = redis.asyncio.Redis.from_url(transport.url)
        try:
            entries = await client.xrange(transport.keys(queue)[-1])
        finally:
            await client.aclose()
        return [(fields[b"body"], fields[b"reason"].decode()) for _, fields in entries]
    raise AssertionError(f"unknown backend {name!r}")

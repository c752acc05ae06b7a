"""Distributed: worker processes over real brokers, against the raw broker and Celery.

For each broker (RabbitMQ, Kafka on tansu, Redis Streams; ``--quick``: RabbitMQ
and Redis) and each pool size (1, 2, 4 worker processes; 1 and 2 with
``--quick``) three systems run side by side, every one on the same broker, with
the same number of processes:

* **flowkit** — ``python -m flowkit.worker`` subprocesses serving a 200-node
  chain and a 500-wide fan (source, 500 parallel nodes, join: 502 nodes) of
  trivial builder nodes, with run state in a ``RedisStore``. A ``Client`` in
  this process starts K runs at once; the batch ends when the store says every
  run completed. steps/s = node executions ÷ wall time.
* **raw** — the broker alone through the client library flowkit's transport
  uses (aio-pika, aiokafka, redis-py), with the same queue type, publish
  guarantees, message size (a flowkit node message, ~200 B) and in-flight limit
  (32 per process): K tokens each relayed 200 times; every hop is one consume,
  one publish of the next message and one ack (Kafka: offset commit).
  msgs/s = hops ÷ wall time. ``x_raw`` = flowkit steps/s ÷ that.
* **Celery** — the same chain as a canvas ``chain`` of 200 trivial tasks, and
  the fan as a chord (``chain(one, group(500 x inc), done)``)
  (``celery worker --pool threads --concurrency 8``: one process each, like a
  flowkit worker, with concurrency inside it; ``--pool solo`` stalls on amqp for
  up to a minute with chains in flight, see docs/performance.md), Redis result
  backend, K chains at once, timed until every chain's result arrives. It has
  flowkit's guarantees: ``task_acks_late``, a prefetch of 32 per process
  (``worker_prefetch_multiplier`` 4 x 8 threads), and on RabbitMQ a quorum
  queue with publisher confirms. Kafka has no production Celery broker, so it
  has no Celery column.

Step latency (enqueue → completion): each flowkit worker wraps
``Worker.handle`` to note ``time.time()`` once a delivery is fully handled
(node run, state committed, successors published, message acked) next to the
message's ``flowkit-enqueued-at`` header; the raw consumers note the same per
hop. Nothing is written to the broker or the store for it.

Every process started here is stopped at the end (SIGTERM, then SIGKILL), also
on errors; queues, streams, topics and keys carry a per-invocation tag and are
deleted afterwards. ``--only smoke`` runs one worker over the SQLite queue and
store (no broker) in a few seconds.

``python -m bench.distributed raw ...`` is the raw consumer process (internal).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ._util import Config, Table, ratio, reachable, sig

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable, Iterable, Iterator

ROOT = Path(__file__).resolve().parent.parent
AMQP_URL = os.environ.get("FLOWKIT_BENCH_AMQP", "amqp://guest:guest@127.0.0.1:5672/")
REDIS_URL = os.environ.get("FLOWKIT_BENCH_REDIS", "redis://127.0.0.1:6379/0")
KAFKA = os.environ.get("FLOWKIT_BENCH_KAFKA", "")  # host:port; empty: start tansu
CHAIN = 200
FAN = 500
STARTS_AT_ONCE = 32  # Client.start calls in flight (redis-py's pool raises past 100 connections)
CONCURRENCY = 32  # flowkit's --concurrency, its transports' prefetch, raw in-flight per process
CELERY_THREADS = 8  # --pool threads: Celery's best healthy setting here (see docs/performance.md)
CELERY_PREFETCH = CONCURRENCY // CELERY_THREADS  # worker_prefetch_multiplier: 32 per process
KAFKA_SESSION = 2.0  # seconds; tansu accepts 2 (Kafka wants >= 6: set FLOWKIT_BENCH_KAFKA_SESSION)
KAFKA_PARTITIONS = 8  # KafkaTransport's default
ENQUEUED = "flowkit-enqueued-at"
START_TIMEOUT = 90.0
BATCH_TIMEOUT = 180.0
STOP_TIMEOUT = 20.0
BROKERS = ("rabbitmq", "kafka", "redis")


# -- sizes ------------------------------------------------------------------------------------


def pool_sizes(config: Config) -> tuple[int, ...]:
    if ONLY.get("workers"):
        return tuple(ONLY["workers"])
    return config.pick((1, 2, 4), (1, 2), (1,))


def chain_runs(config: Config, workers: int) -> int:
    """Chains (or relayed tokens) in flight at once: each process has that many messages."""
    return config.pick(32, 8, 2) * workers


def fan_runs(config: Config, workers: int) -> int:
    return config.pick(2, 1, 1) * workers


def brokers(config: Config) -> tuple[str, ...]:
    """Kafka has no Celery to compare with and no goal: full runs only."""
    if ONLY.get("brokers"):
        return tuple(ONLY["brokers"])
    return config.pick(BROKERS, ("rabbitmq", "redis"), BROKERS)


def repeats(config: Config) -> int:
    return config.pick(3, 2, 1)


# -- the modules the worker processes import ------------------------------------------------

FLOWS_MODULE = '''\
"""Flows of bench/distributed.py, served by ``python -m flowkit.worker --app fkbench_flows``."""

import atexit
import os
import time

import flowkit

CHAIN = {chain}
FAN = {fan}


async def inc(x=0):
    return (x or 0) + 1


async def one():
    return 1


async def done(_=None):
    return "done"


chain = flowkit.Flow("fkbench-chain")
for _i in range(CHAIN):
    chain.node(f"n{{_i}}", inc)
for _i in range(CHAIN - 1):
    chain.edge(f"n{{_i}}", f"n{{_i + 1}}")

fan = flowkit.Flow("fkbench-fan")
fan.node("src", one)
for _i in range(FAN):
    fan.node(f"w{{_i}}", inc).edge("src", f"w{{_i}}")
fan.node("sink", done, join="all")
for _i in range(FAN):
    fan.edge(f"w{{_i}}", "sink")

# Step latency: when a delivery is fully handled (node run, state committed,
# successors published, message acked), next to its enqueue time. Kept in
# memory and written once, when the worker exits.
_handled = []


def _dump():
    path = os.path.join(os.environ["FKBENCH_OUT"], f"flowkit-{{os.getpid()}}.lat")
    with open(path, "w") as out:
        for done_at, enqueued, body in _handled:
            out.write(f"{{done_at!r}} {{enqueued}} {{body.decode(errors='replace')}}\\n")


_FETCH_WAIT = os.environ.get("FLOWKIT_BENCH_KAFKA_FETCH_WAIT_MS")
if os.environ.get("FKBENCH_ROLE") == "worker" and _FETCH_WAIT:
    # diagnosis only (off by default): the raw consumers get the same fetch_max_wait_ms
    import aiokafka

    _consumer_init = aiokafka.AIOKafkaConsumer.__init__

    def _short_wait(self, *args, **kwargs):
        kwargs.setdefault("fetch_max_wait_ms", int(_FETCH_WAIT))
        _consumer_init(self, *args, **kwargs)

    aiokafka.AIOKafkaConsumer.__init__ = _short_wait

if os.environ.get("FKBENCH_ROLE") == "worker":
    from flowkit.worker import Worker

    _handle = Worker.handle

    async def _timed_handle(self, delivery):
        await _handle(self, delivery)
        _handled.append((time.time(), delivery.headers.get("{enqueued}"), delivery.body))
        if len(_handled) == 1:  # the bench waits for every worker to have handled one
            _marker = os.path.join(os.environ["FKBENCH_OUT"], f"flowkit-active-{{os.getpid()}}")
            open(_marker, "w").close()

    Worker.handle = _timed_handle
    atexit.register(_dump)
'''

CELERY_MODULE = '''\
"""Celery app of bench/distributed.py: the chain ({chain} x inc) and the fan (a chord)."""

import os
import pathlib

from celery import Celery, signals

app = Celery("fkbench", broker={broker!r}, backend={backend!r})
app.conf.update(
    task_default_queue={queue!r},
    broker_transport_options={broker_options!r},
    result_backend_transport_options={backend_options!r},
    result_expires=600,
    worker_enable_remote_control=False,
    worker_send_task_events=False,
    broker_connection_retry_on_startup=True,
    # flowkit's guarantees: acked once done, {prefetch} x {threads} threads = flowkit's prefetch
    task_acks_late=True,
    worker_prefetch_multiplier={prefetch},
    **{settings!r},
)


@app.task(name="fkbench.inc")
def inc(x=0):
    return (x or 0) + 1


@app.task(name="fkbench.one")
def one():
    return 1


@app.task(name="fkbench.done")
def done(_=None):
    return "done"


@signals.worker_ready.connect
def _ready(**_):
    pathlib.Path({out!r}, f"celery-ready-{{os.getpid()}}").touch()
'''


# -- processes --------------------------------------------------------------------------------


def _die_with_parent() -> None:  # pragma: no cover - runs in the child
    """Linux: the kernel SIGTERMs the child if this process dies first."""
    import ctypes

    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


class Processes:
    """The subprocesses of one pool: started with logs in the work dir, always stopped."""

    def __init__(self, workdir: Path, env: dict[str, str]) -> None:
        self.workdir = workdir
        self.env = env
        self.procs: list[tuple[str, subprocess.Popen[bytes], Path]] = []

    def spawn(self, name: str, argv: list[str], **env: str) -> None:
        log = self.workdir / f"{name}.log"
        with log.open("wb") as out:
            proc = subprocess.Popen(
                argv,
                cwd=self.workdir,
                env={**self.env, **env},
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                preexec_fn=_die_with_parent if sys.platform == "linux" else None,
            )
        self.procs.append((name, proc, log))

    def check(self) -> None:
        """Raise, with the end of its log, if a process exited on its own."""
        for name, proc, log in self.procs:
            if proc.poll() is not None:
                tail = log.read_text(errors="replace")[-1500:]
                raise RuntimeError(f"{name} exited with {proc.returncode}:\n{tail}")

    def stop(self) -> None:
        """SIGTERM every process (they drain), wait, SIGKILL what is left; by pid only."""
        for _, proc, _ in self.procs:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + STOP_TIMEOUT
        for _, proc, _ in self.procs:
            try:
                proc.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)
        self.procs.clear()


# -- brokers ----------------------------------------------------------------------------------


class Broker:
    """One broker: URLs for the three systems, the raw driver, cleanup."""

    name = ""
    celery_reason: str | None = None  # why Celery cannot run here, if it cannot

    def __init__(self, tag: str) -> None:
        self.tag = tag

    def unavailable(self) -> str | None:
        return None

    def flowkit_url(self, cell: str) -> str:
        raise NotImplementedError

    def raw_args(self, cell: str) -> dict[str, Any]:
        raise NotImplementedError

    async def raw_open(self, cell: str) -> Any:
        raise NotImplementedError

    async def raw_batch(self, handle: Any, cell: str, tokens: int, hops: int, batch: str) -> None:
        raise NotImplementedError

    async def raw_close(self, handle: Any) -> None:
        raise NotImplementedError

    def celery_urls(self, cell: str) -> tuple[str, str, dict[str, Any], dict[str, Any]]:
        raise NotImplementedError

    def celery_queue(self, cell: str) -> str:
        return f"{self.tag}-{cell}-celery"

    def celery_settings(self) -> dict[str, Any]:
        """Celery settings that give it the guarantees flowkit's transport has here."""
        return {}

    async def prepare(self, cell: str) -> None:
        """Create what the raw consumers expect before they start (Kafka's topics)."""

    async def cleanup(self) -> None:
        """Delete what this invocation created on the broker."""

    async def close(self) -> None:
        """Stop what :meth:`unavailable` started (tansu)."""


async def _limited(calls: Iterable[Awaitable[None]], at_once: int | None = None) -> None:
    """Await ``calls`` with at most ``at_once`` (default STARTS_AT_ONCE) in flight."""
    slots = asyncio.Semaphore(at_once or STARTS_AT_ONCE)

    async def one(call: Awaitable[None]) -> None:
        async with slots:
            await call

    await asyncio.gather(*(one(call) for call in calls))


def _raw_body(size: int, left: int, batch: str) -> bytes:
    """``left|batch|`` padded to ``size`` bytes: the hops still to go and the batch label."""
    head = f"{left}|{batch}|".encode()
    return head + b"x" * max(0, size - len(head))


def _parse_raw(body: bytes) -> tuple[int, str]:
    left, batch, _ = body.split(b"|", 2)
    return int(left), batch.decode()


class RabbitMQ(Broker):
    name = "rabbitmq"

    def unavailable(self) -> str | None:
        try:
            import aio_pika  # noqa: F401
        except ImportError:
            return "aio-pika not installed (pip install -e '.[rabbitmq]')"
        if not reachable(AMQP_URL):
            return f"nothing listens at {AMQP_URL}"
        # Celery on quorum queues declares its delayed-delivery topology; ours to remove
        # at the end only if it was not there before
        self._celery_delayed = not _rabbit_names(CELERY_DELAYED)
        return None

    def _queue(self, kind: str, cell: str) -> str:
        return f"{self.tag}-{cell}-{kind}"

    def flowkit_url(self, cell: str) -> str:
        return AMQP_URL

    async def _connection(self) -> Any:
        import aio_pika

        if getattr(self, "_conn", None) is None:
            self._conn = await aio_pika.connect_robust(AMQP_URL)
        return self._conn

    def raw_args(self, cell: str) -> dict[str, Any]:
        return {"url": AMQP_URL, "queue": self._queue("raw", cell)}

    async def raw_open(self, cell: str) -> Any:
        conn = await self._connection()
        publisher = await conn.channel(publisher_confirms=True, on_return_raises=True)
        reader = await conn.channel()
        await reader.set_qos(prefetch_count=1000)
        done = await reader.declare_queue(
            self._queue("raw", cell) + ".done", durable=True, arguments=RABBIT_QUEUE_ARGS
        )
        inbox: asyncio.Queue[bytes] = asyncio.Queue()

        async def on_done(message: Any) -> None:
            await message.ack()
            inbox.put_nowait(message.body)

        await done.consume(on_done)
        return {"publisher": publisher, "reader": reader, "inbox": inbox}

    async def raw_batch(self, handle: Any, cell: str, tokens: int, hops: int, batch: str) -> None:
        import aio_pika

        exchange = handle["publisher"].default_exchange
        queue = self._queue("raw", cell)

        async def seed(i: int) -> None:
            headers = {ENQUEUED: repr(time.time()), "x-flowkit-key": f"{batch}-{i}/0"}
            message = aio_pika.Message(
                _raw_body(MESSAGE_SIZE, hops - 1, batch),
                headers=headers,
                delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
            )
            await exchange.publish(message, queue, mandatory=True)

        await _limited(seed(i) for i in range(tokens))
        for _ in range(tokens):
            await handle["inbox"].get()

    async def raw_close(self, handle: Any) -> None:
        for channel in (handle["publisher"], handle["reader"]):
            with contextlib.suppress(Exception):
                await channel.close()

    def celery_urls(self, cell: str) -> tuple[str, str, dict[str, Any], dict[str, Any]]:
        prefix = f"{self.tag}-celery-{cell}:"
        return (
            AMQP_URL.replace("amqp://", "pyamqp://", 1),
            REDIS_URL,
            {"confirm_publish": True},  # publisher confirms, as RabbitMQTransport
            {"global_keyprefix": prefix},
        )

    def celery_settings(self) -> dict[str, Any]:
        return {"task_default_queue_type": "quorum"}  # RabbitMQTransport's queue type

    async def cleanup(self) -> None:
        conn = getattr(self, "_conn", None)
        if conn is None:
            try:
                conn = await self._connection()
            except Exception:
                return
        names = await asyncio.to_thread(_rabbit_names, self.tag)
        if getattr(self, "_celery_delayed", False):
            names += await asyncio.to_thread(_rabbit_names, CELERY_DELAYED)
        for kind, name in names:
            channel = await conn.channel()
            try:
                if kind == "queue":
                    await channel.queue_delete(name, if_unused=False, if_empty=False)
                else:
                    await channel.exchange_delete(name)
            except Exception:
                pass
            finally:
                with contextlib.suppress(Exception):
                    await channel.close()
        with contextlib.suppress(Exception):
            await conn.close()
        self._conn = None


RABBIT_QUEUE_ARGS = {"x-queue-type": "quorum"}  # what RabbitMQTransport declares on 3.8+
CELERY_DELAYED = "celery_delayed_"  # Celery's delayed-delivery queues and exchanges


def _rabbit_names(tag: str) -> list[tuple[str, str]]:
    """Queues and exchanges whose name has ``tag`` (rabbitmqctl, else the names we know)."""
    found: list[tuple[str, str]] = []
    for kind, command in (("queue", "list_queues"), ("exchange", "list_exchanges")):
        try:
            done = subprocess.run(
                ["rabbitmqctl", "-q", command, "name"],
                capture_output=True,
                text=True,
                timeout=30,
            )
        except (OSError, subprocess.TimeoutExpired):
            continue
        found += [(kind, line.strip()) for line in done.stdout.splitlines() if tag in line]
    return found


class Redis(Broker):
    name = "redis"

    def unavailable(self) -> str | None:
        try:
            import redis  # noqa: F401
        except ImportError:
            return "redis-py not installed (pip install -e '.[redis]')"
        return None if reachable(REDIS_URL) else f"nothing listens at {REDIS_URL}"

    def _stream(self, kind: str, cell: str) -> str:
        return f"{self.tag}-{cell}-{kind}"

    def flowkit_url(self, cell: str) -> str:
        return REDIS_URL

    async def _client(self) -> Any:
        import redis.asyncio as aioredis

        if getattr(self, "_redis", None) is None:
            self._redis = aioredis.Redis.from_url(REDIS_URL)
        return self._redis

    def raw_args(self, cell: str) -> dict[str, Any]:
        return {"url": REDIS_URL, "queue": self._stream("raw", cell)}

    async def raw_open(self, cell: str) -> Any:
        client = await self._client()
        done = self._stream("raw", cell) + ".done"
        await client.xadd(done, {"body": b"start"})
        last = (await client.xrevrange(done, count=1))[0][0]
        return {"client": client, "done": done, "last": last}

    async def raw_batch(self, handle: Any, cell: str, tokens: int, hops: int, batch: str) -> None:
        client = handle["client"]
        stream = self._stream("raw", cell)

        async def seed(i: int) -> None:
            fields = {
                "body": _raw_body(MESSAGE_SIZE, hops - 1, batch),
                "key": f"{batch}-{i}/0",
                "headers": json.dumps({ENQUEUED: repr(time.time())}),
            }
            await client.xadd(stream, fields)

        await _limited(seed(i) for i in range(tokens))
        seen = 0
        while seen < tokens:
            reply = await client.xread({handle["done"]: handle["last"]}, count=1000, block=1000)
            for _, entries in reply or ():
                for entry_id, _ in entries:
                    handle["last"] = entry_id
                    seen += 1

    async def raw_close(self, handle: Any) -> None:
        pass

    def celery_urls(self, cell: str) -> tuple[str, str, dict[str, Any], dict[str, Any]]:
        prefix = f"{self.tag}-celery-{cell}:"
        return REDIS_URL, REDIS_URL, {"global_keyprefix": prefix}, {"global_keyprefix": prefix}

    async def cleanup(self) -> None:
        await _delete_redis_keys(self.tag)
        client = getattr(self, "_redis", None)
        if client is not None:
            with contextlib.suppress(Exception):
                await client.aclose()
            self._redis = None


async def _delete_redis_keys(tag: str) -> None:
    """Every key naming ``tag`` (streams, store runs, Celery's), and our index entries."""
    import redis.asyncio as aioredis

    client = aioredis.Redis.from_url(REDIS_URL)
    try:
        keys = [k async for k in client.scan_iter(match=f"*{tag}*", count=1000)]
        for start in range(0, len(keys), 500):
            await client.delete(*keys[start : start + 500])
        indexes = ["flowkit:timers", "flowkit:leases"]  # RedisStore's shared sorted sets
        indexes += [k async for k in client.scan_iter(match="flowkit:runs:*", _type="zset")]
        for index in indexes:  # and its run index (by flow, status, tag)
            members = [m async for m, _ in client.zscan_iter(index, match=f"{tag}*")]
            if members:
                await client.zrem(index, *members)
    finally:
        await client.aclose()


class Kafka(Broker):
    name = "kafka"
    celery_reason = (
        "Celery has no production Kafka broker (kombu's Kafka transport is experimental "
        "and unmaintained), so there is nothing a Python user would pick to compare"
    )

    def __init__(self, tag: str) -> None:
        super().__init__(tag)
        self.bootstrap = KAFKA
        self._stack = contextlib.ExitStack()
        self._admin: Any = None

    def unavailable(self) -> str | None:
        try:
            import aiokafka  # noqa: F401
        except ImportError:
            return "aiokafka not installed (pip install -e '.[kafka]')"
        if self.bootstrap:
            return None if reachable(f"kafka://{self.bootstrap}") else f"nothing at {KAFKA}"
        try:
            sys.path.insert(0, str(ROOT))
            from tests.conformance.tansu import tansu
        except Exception as exc:
            return f"cannot load tests/conformance/tansu.py: {exc}"
        try:
            self.bootstrap = self._stack.enter_context(tansu())
        except BaseException as exc:  # pytest.fail() raises an Exception subclass of BaseException
            return f"tansu did not start: {exc}"
        return None

    def _topic(self, kind: str, cell: str) -> str:
        return f"{self.tag}-{cell}-{kind}"

    def _group(self, kind: str, cell: str) -> str:
        return f"{self.tag}-{cell}-{kind}-group"

    def flowkit_url(self, cell: str) -> str:
        session = os.environ.get("FLOWKIT_BENCH_KAFKA_SESSION", str(KAFKA_SESSION))
        return (
            f"kafka://{self.bootstrap}?group={self._group('fk', cell)}"
            f"&session_timeout={session}&partitions={KAFKA_PARTITIONS}"
        )

    async def _admin_client(self) -> Any:
        from aiokafka.admin import AIOKafkaAdminClient

        if self._admin is None:
            self._admin = AIOKafkaAdminClient(bootstrap_servers=self.bootstrap)
            await self._admin.start()
        return self._admin

    def raw_args(self, cell: str) -> dict[str, Any]:
        session = float(os.environ.get("FLOWKIT_BENCH_KAFKA_SESSION", str(KAFKA_SESSION)))
        return {
            "bootstrap": self.bootstrap,
            "queue": self._topic("raw", cell),
            "group": self._group("raw", cell),
            "session": session,
        }

    async def prepare(self, cell: str) -> None:
        from aiokafka.admin import NewTopic

        admin = await self._admin_client()
        topic = self._topic("raw", cell)
        await admin.create_topics(
            [NewTopic(topic, KAFKA_PARTITIONS, 1), NewTopic(topic + ".done", 1, 1)]
        )

    async def raw_open(self, cell: str) -> Any:
        from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

        producer = AIOKafkaProducer(bootstrap_servers=self.bootstrap, acks="all")
        await producer.start()
        reader = AIOKafkaConsumer(  # the bench's own reader: no long-poll at the batch's end
            bootstrap_servers=self.bootstrap, enable_auto_commit=False, fetch_max_wait_ms=5
        )
        await reader.start()
        tp = TopicPartition(self._topic("raw", cell) + ".done", 0)
        reader.assign([tp])
        await reader.seek_to_end(tp)
        return {"producer": producer, "reader": reader}

    async def raw_batch(self, handle: Any, cell: str, tokens: int, hops: int, batch: str) -> None:
        producer = handle["producer"]
        topic = self._topic("raw", cell)

        async def seed(i: int) -> None:
            headers = [(ENQUEUED, repr(time.time()).encode())]
            body = _raw_body(MESSAGE_SIZE, hops - 1, batch)
            await producer.send_and_wait(
                topic, body, key=f"{batch}-{i}/0".encode(), headers=headers
            )

        await _limited(seed(i) for i in range(tokens))
        seen = 0
        while seen < tokens:
            got = await handle["reader"].getmany(timeout_ms=1000)
            seen += sum(len(records) for records in got.values())

    async def raw_close(self, handle: Any) -> None:
        for client in (handle["producer"], handle["reader"]):
            with contextlib.suppress(Exception):
                await client.stop()

    async def cleanup(self) -> None:
        if self._admin is not None:
            if KAFKA:  # an external broker: delete our topics (tansu just stops)
                with contextlib.suppress(Exception):
                    topics = [t for t in await self._admin.list_topics() if self.tag in t]
                    if topics:
                        await self._admin.delete_topics(topics)
            with contextlib.suppress(Exception):
                await self._admin.close()
            self._admin = None

    async def close(self) -> None:
        self._stack.close()


# -- the raw consumer process -------------------------------------------------------------------


def raw_main(argv: list[str]) -> int:
    """``python -m bench.distributed raw BROKER JSON``: relay hops until SIGTERM."""
    broker, options = argv[0], json.loads(argv[1])
    latencies = _Latencies(Path(options["out"]) / f"raw-active-{os.getpid()}")
    run = {"rabbitmq": _raw_rabbitmq, "kafka": _raw_kafka, "redis": _raw_redis}[broker]
    asyncio.run(_until_sigterm(run(options, latencies)))
    path = Path(options["out"]) / f"raw-{os.getpid()}.lat"
    path.write_text("".join(f"{batch} {seconds!r}\n" for batch, seconds in latencies))
    return 0


class _Latencies(list[tuple[str, float]]):
    """Hop latencies of a raw consumer; the first one touches its ``active`` marker."""

    def __init__(self, marker: Path) -> None:
        super().__init__()
        self.marker = marker

    def append(self, item: tuple[str, float]) -> None:
        if not self:
            self.marker.touch()
        super().append(item)


async def _until_sigterm(consume: Awaitable[None]) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    task = asyncio.ensure_future(consume)
    waiter = asyncio.ensure_future(stop.wait())
    await asyncio.wait([task, waiter], return_when=asyncio.FIRST_COMPLETED)
    if task.done():
        task.result()  # raise its error
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task


async def _raw_rabbitmq(o: dict[str, Any], latencies: list[tuple[str, float]]) -> None:
    """aio-pika as RabbitMQTransport uses it: quorum queue, persistent + confirmed, manual ack."""
    import aio_pika

    conn = await aio_pika.connect_robust(o["url"])
    try:
        publisher = await conn.channel(publisher_confirms=True, on_return_raises=True)
        channel = await conn.channel()
        await channel.set_qos(prefetch_count=CONCURRENCY)
        queue = await channel.declare_queue(o["queue"], durable=True, arguments=RABBIT_QUEUE_ARGS)
        await channel.declare_queue(o["queue"] + ".done", durable=True, arguments=RABBIT_QUEUE_ARGS)

        async def on_message(message: aio_pika.abc.AbstractIncomingMessage) -> None:
            left, batch = _parse_raw(message.body)
            target = o["queue"] if left > 0 else o["queue"] + ".done"
            headers = {ENQUEUED: repr(time.time()), "x-flowkit-key": batch}
            body = _raw_body(len(message.body), left - 1, batch)
            out = aio_pika.Message(
                body, headers=headers, delivery_mode=aio_pika.DeliveryMode.PERSISTENT
            )
            await publisher.default_exchange.publish(out, target, mandatory=True)
            await message.ack()
            latencies.append((batch, time.time() - float(message.headers[ENQUEUED])))  # type: ignore[arg-type]

        await queue.consume(on_message)
        await asyncio.Event().wait()
    finally:
        with contextlib.suppress(Exception):
            await conn.close()


async def _raw_redis(o: dict[str, Any], latencies: list[tuple[str, float]]) -> None:
    """redis-py streams as RedisTransport uses them: XREADGROUP, XADD, XACK + XDEL."""
    import redis.asyncio as aioredis
    from redis.exceptions import ResponseError

    client = aioredis.Redis.from_url(o["url"])
    stream, consumer = o["queue"], f"raw-{os.getpid()}"
    with contextlib.suppress(ResponseError):  # BUSYGROUP: it exists
        await client.xgroup_create(stream, "raw", id="0", mkstream=True)
    slots = asyncio.Semaphore(CONCURRENCY)
    tasks: set[asyncio.Task[None]] = set()

    async def handle(entry_id: bytes, fields: dict[bytes, bytes]) -> None:
        try:
            body = fields[b"body"]
            left, batch = _parse_raw(body)
            target = stream if left > 0 else stream + ".done"
            out = {
                "body": _raw_body(len(body), left - 1, batch),
                "key": batch,
                "headers": json.dumps({ENQUEUED: repr(time.time())}),
            }
            await client.xadd(target, out)
            async with client.pipeline(transaction=False) as pipe:
                pipe.xack(stream, "raw", entry_id)
                pipe.xdel(stream, entry_id)
                await pipe.execute()
            enqueued = float(json.loads(fields[b"headers"])[ENQUEUED])
            latencies.append((batch, time.time() - enqueued))
        finally:
            slots.release()

    try:
        while True:
            await slots.acquire()
            room = 1
            while not slots.locked() and room < CONCURRENCY:  # take every free slot
                await slots.acquire()
                room += 1
            reply = await client.xreadgroup("raw", consumer, {stream: ">"}, count=room, block=1000)
            entries = [e for _, es in (reply or ()) for e in es]
            for _ in range(room - len(entries)):
                slots.release()
            for entry_id, fields in entries:
                task = asyncio.ensure_future(handle(entry_id, fields))
                tasks.add(task)
                task.add_done_callback(tasks.discard)
    finally:
        with contextlib.suppress(Exception):
            await client.aclose()


def _fetch_wait() -> dict[str, int]:
    """aiokafka's fetch_max_wait_ms from FLOWKIT_BENCH_KAFKA_FETCH_WAIT_MS (default: its own)."""
    wait = os.environ.get("FLOWKIT_BENCH_KAFKA_FETCH_WAIT_MS")
    return {"fetch_max_wait_ms": int(wait)} if wait else {}


async def _raw_kafka(o: dict[str, Any], latencies: list[tuple[str, float]]) -> None:
    """aiokafka as KafkaTransport uses it: acks=all, group, manual out-of-order-safe commits."""
    from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

    session_ms = round(o["session"] * 1000)
    producer = AIOKafkaProducer(bootstrap_servers=o["bootstrap"], acks="all")
    consumer = AIOKafkaConsumer(
        o["queue"],
        bootstrap_servers=o["bootstrap"],
        group_id=o["group"],
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        session_timeout_ms=session_ms,
        heartbeat_interval_ms=max(100, min(3000, session_ms // 6)),
        **_fetch_wait(),
    )
    await producer.start()
    await consumer.start()
    pending: dict[Any, set[int]] = {}
    fetched: dict[Any, int] = {}
    in_flight = 0
    room_freed = asyncio.Event()
    dirty = asyncio.Event()
    tasks: set[asyncio.Task[None]] = set()

    async def handle(tp: Any, record: Any) -> None:
        nonlocal in_flight
        left, batch = _parse_raw(record.value)
        target = o["queue"] if left > 0 else o["queue"] + ".done"
        headers = [(ENQUEUED, repr(time.time()).encode())]
        body = _raw_body(len(record.value), left - 1, batch)
        await producer.send_and_wait(target, body, key=batch.encode(), headers=headers)
        pending[tp].discard(record.offset)
        dirty.set()
        in_flight -= 1
        room_freed.set()
        enqueued = float(dict(record.headers)[ENQUEUED])
        latencies.append((batch, time.time() - enqueued))

    async def committer() -> None:
        committed: dict[Any, int] = {}
        while True:
            await dirty.wait()
            dirty.clear()
            wanted = {
                tp: min(offsets) if offsets else fetched[tp] + 1 for tp, offsets in pending.items()
            }
            wanted = {tp: o for tp, o in wanted.items() if committed.get(tp) != o}
            if wanted:
                with contextlib.suppress(Exception):  # a rebalance: the next commit catches up
                    await consumer.commit(wanted)
                    committed.update(wanted)

    commit_task = asyncio.ensure_future(committer())
    try:
        while True:
            room = CONCURRENCY - in_flight
            if room <= 0:
                room_freed.clear()
                await room_freed.wait()
                continue
            batch = await consumer.getmany(timeout_ms=500, max_records=room)
            for tp, records in batch.items():
                for record in records:
                    pending.setdefault(tp, set()).add(record.offset)
                    fetched[tp] = max(fetched.get(tp, -1), record.offset)
                    in_flight += 1
                    task = asyncio.ensure_future(handle(tp, record))
                    tasks.add(task)
                    task.add_done_callback(tasks.discard)
    finally:
        commit_task.cancel()
        with contextlib.suppress(Exception):
            await consumer.stop()
        with contextlib.suppress(Exception):
            await producer.stop()


# -- measuring --------------------------------------------------------------------------------

MESSAGE_SIZE = 200  # replaced by the size of a real node message in run()


def _node_message_size(flows: Any, tag: str) -> int:
    """Bytes of the message flowkit sends for a chain node (its header not counted)."""
    from flowkit.shell._target import resolve
    from flowkit.worker import NodeMessage

    digest = resolve(flows.chain).blueprint.digest
    run_id = f"{tag}-r1-fk-chain-t0-00"
    return len(NodeMessage(run_id, "n10", 1, "n10@1.1", digest).encode())


async def _statuses(store: Any, run_ids: list[str]) -> list[str | None]:
    """The status of every run, in one round trip when the store allows it."""
    from flowkit.stores import RedisStore

    if isinstance(store, RedisStore):
        async with store._client.pipeline(transaction=False) as pipe:
            for run_id in run_ids:
                pipe.hget(f"{store.prefix}:run:{run_id}", "status")
            return list(await pipe.execute())
    infos = await asyncio.gather(*(store.info(run_id) for run_id in run_ids))
    return [None if i is None else i.status for i in infos]


async def flowkit_batch(client: Any, flow: Any, runs: int, label: str) -> float:
    """Start ``runs`` runs at once; seconds until the store shows every one completed."""
    ids = [f"{label}-{i:02d}" for i in range(runs)]
    start = time.perf_counter()
    await _limited(client.start(flow, run_id=run_id) for run_id in ids)
    pending = ids
    deadline = time.monotonic() + BATCH_TIMEOUT
    while pending:
        statuses = await _statuses(client.store, pending)
        bad = [
            (r, s) for r, s in zip(pending, statuses, strict=True) if s in ("failed", "cancelled")
        ]
        if bad:
            raise RuntimeError(f"flowkit runs ended {bad[0][1]}: {bad[:3]}")
        pending = [r for r, s in zip(pending, statuses, strict=True) if s != "completed"]
        if pending:
            if time.monotonic() > deadline:
                raise TimeoutError(f"{len(pending)} flowkit runs unfinished after {BATCH_TIMEOUT}s")
            await asyncio.sleep(0.01)
    return time.perf_counter() - start


def celery_batch(module: Any, chains: int, label: str) -> float:
    """Apply ``chains`` canvas chains of CHAIN tasks; seconds until every result is in."""
    from celery import chain

    del label
    start = time.perf_counter()
    results = [
        chain(module.inc.s(0), *(module.inc.s() for _ in range(CHAIN - 1))).apply_async()
        for _ in range(chains)
    ]
    for result in results:
        value = result.get(timeout=BATCH_TIMEOUT)
        if value != CHAIN:
            raise RuntimeError(f"a Celery chain returned {value!r}, not {CHAIN}")
    return time.perf_counter() - start


def celery_fan_batch(module: Any, fans: int, label: str) -> float:
    """Apply ``fans`` times one -> FAN x inc -> done (a chord); seconds until every result."""
    from celery import chain, group

    del label
    start = time.perf_counter()
    results = [
        chain(
            module.one.s(), group(module.inc.s() for _ in range(FAN)), module.done.s()
        ).apply_async()
        for _ in range(fans)
    ]
    for result in results:
        value = result.get(timeout=BATCH_TIMEOUT)
        if value != "done":
            raise RuntimeError(f"a Celery chord returned {value!r}, not 'done'")
    return time.perf_counter() - start


async def wait_ready(
    procs: Processes, what: str, count: Callable[[], Awaitable[int]], wanted: int
) -> None:
    deadline = time.monotonic() + START_TIMEOUT
    while True:
        procs.check()
        if await count() >= wanted:
            return
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what}: not all {wanted} active after {START_TIMEOUT}s")
        await asyncio.sleep(0.1)


def _percentiles(values: list[float]) -> tuple[float | None, float | None]:
    if not values:
        return None, None
    ordered = sorted(values)
    p50 = statistics.median(ordered)
    p95 = ordered[min(len(ordered) - 1, round(0.95 * (len(ordered) - 1)))]
    return round(p50 * 1000, 1), round(p95 * 1000, 1)


def read_latencies(out: Path) -> tuple[dict[str, list[float]], dict[str, list[float]]]:
    """Per batch label: flowkit step latencies, raw hop latencies (seconds); files removed."""
    flowkit_lat: dict[str, list[float]] = {}
    raw_lat: dict[str, list[float]] = {}
    for path in out.glob("flowkit-*.lat"):
        for line in path.read_text().splitlines():
            done_at, enqueued, body = line.split(" ", 2)
            with contextlib.suppress(ValueError, KeyError):
                run_id = json.loads(body)["run_id"]
                label = run_id.rsplit("-", 1)[0]
                flowkit_lat.setdefault(label, []).append(float(done_at) - float(enqueued))
        path.unlink()
    for path in out.glob("raw-*.lat"):
        for line in path.read_text().splitlines():
            batch, seconds = line.split(" ", 1)
            raw_lat.setdefault(batch, []).append(float(seconds))
        path.unlink()
    return flowkit_lat, raw_lat


class Cell:
    """One broker at one pool size: the three systems' processes and their batches."""

    def __init__(
        self,
        broker: Broker,
        workers: int,
        config: Config,
        workdir: Path,
        env: dict[str, str],
        flows: Any,
        store_url: str,
    ) -> None:
        self.broker = broker
        self.workers = workers
        self.config = config
        self.workdir = workdir
        self.flows = flows
        self.store_url = store_url
        self.cell = f"w{workers}"
        self.procs = Processes(workdir, env)
        self.celery: Any = None
        self.times: dict[str, list[float]] = {}
        self.phases: dict[str, float] = {}

    def _label(self, system: str, kind: str, round_: int | str) -> str:
        return f"{self.broker.tag}-{self.broker.name[:2]}{self.workers}-{system}-{kind}{round_}"

    def start(self) -> None:
        broker, cell = self.broker, self.cell
        for marker in self.workdir.glob("*-active-*"):  # an earlier cell's processes
            marker.unlink()
        for marker in self.workdir.glob("celery-ready-*"):
            marker.unlink()
        url = broker.flowkit_url(cell)
        queue = f"{broker.tag}-{cell}-fk"
        for i in range(self.workers):
            argv = [sys.executable, "-m", "flowkit.worker", "--app", "fkbench_flows"]
            argv += ["--transport", url, "--store", self.store_url, "--queue", queue]
            argv += ["--concurrency", str(CONCURRENCY), "--log-level", "WARNING"]
            self.procs.spawn(f"{broker.name}-{cell}-flowkit-{i}", argv, FKBENCH_ROLE="worker")
        options = {**broker.raw_args(cell), "out": str(self.workdir)}
        for i in range(self.workers):
            argv = [sys.executable, "-m", "bench.distributed", "raw", broker.name]
            self.procs.spawn(f"{broker.name}-{cell}-raw-{i}", [*argv, json.dumps(options)])
        if broker.celery_reason is None:
            self.celery = self._celery_module()
            for i in range(self.workers):
                argv = [sys.executable, "-m", "celery", "-A", self.celery.__name__, "worker"]
                argv += ["--pool", "threads", "--concurrency", str(CELERY_THREADS)]
                argv += ["-n", f"w{i}-{os.getpid()}@%h", "--without-mingle"]
                argv += ["--loglevel", "WARNING", "-Q", self.broker.celery_queue(cell)]
                self.procs.spawn(f"{broker.name}-{cell}-celery-{i}", argv)

    def _celery_module(self) -> Any:
        import importlib

        broker_url, backend_url, broker_options, backend_options = self.broker.celery_urls(
            self.cell
        )
        name = f"fkbench_celery_{self.broker.name}_{self.cell}"
        source = CELERY_MODULE.format(
            chain=CHAIN,
            broker=broker_url,
            backend=backend_url,
            queue=self.broker.celery_queue(self.cell),
            broker_options=broker_options,
            backend_options=backend_options,
            out=str(self.workdir),
            prefetch=CELERY_PREFETCH,
            threads=CELERY_THREADS,
            settings=self.broker.celery_settings(),
        )
        (self.workdir / f"{name}.py").write_text(source)
        return importlib.import_module(name)

    async def ready(self, systems: dict[str, Callable[[str], Awaitable[float]]]) -> None:
        """Warm-up batches until every process has handled a message (and Celery is up).

        Traffic is the one signal every broker gives: a Redis consumer appears only
        once it has read, a Kafka member only gets partitions after the group settled.
        """
        n = self.workers
        for kind, system in (("flowkit", "fk-chain"), ("raw", "raw")):
            attempt = 0

            async def active(kind: str = kind, system: str = system) -> int:
                nonlocal attempt
                await systems[system](self._label(system, "w", f"a{attempt}"))
                attempt += 1
                return len(list(self.workdir.glob(f"{kind}-active-*")))

            await wait_ready(self.procs, f"{kind} consumers", active, n)
        if self.celery is not None:

            async def celery_ready() -> int:
                return len(list(self.workdir.glob("celery-ready-*")))

            await wait_ready(self.procs, "celery workers", celery_ready, n)

    async def measure(self) -> None:
        """Warm up every system, then time them in turns, ``repeats`` rounds."""
        from flowkit import Client
        from flowkit.stores import from_url as store_from_url
        from flowkit.transports import from_url as transport_from_url

        broker, cell, config = self.broker, self.cell, self.config
        transport = transport_from_url(broker.flowkit_url(cell))
        store = store_from_url(self.store_url)
        client = Client(
            transport,
            store,
            queue=f"{broker.tag}-{cell}-fk",
            flows=[self.flows.chain, self.flows.fan],
        )
        raw: Any = None
        pool = ThreadPoolExecutor(max_workers=1)  # Celery's client thread
        loop = asyncio.get_running_loop()
        k_fan = fan_runs(config, self.workers)
        warming = [True]  # readiness and warm-up batches: one chain (or token) per process

        def k_chain() -> int:
            return self.workers if warming[0] else chain_runs(config, self.workers)

        systems: dict[str, Callable[[str], Awaitable[float]]] = {
            "fk-chain": lambda label: flowkit_batch(client, self.flows.chain, k_chain(), label),
            "fk-fan": lambda label: flowkit_batch(client, self.flows.fan, k_fan, label),
            "raw": lambda label: self._raw(raw, k_chain(), label),
        }
        if self.celery is not None:
            systems["celery"] = lambda label: loop.run_in_executor(
                pool, celery_batch, self.celery, k_chain(), label
            )
            systems["celery-fan"] = lambda label: loop.run_in_executor(
                pool, celery_fan_batch, self.celery, k_fan, label
            )
        try:
            raw = await broker.raw_open(cell)
            started = time.perf_counter()
            await self.ready(systems)
            self.phases["ready"] = time.perf_counter() - started
            for name, batch in systems.items():  # warm-up: connections, caches
                if name not in ("fk-chain", "raw"):  # ready() warmed those up
                    await batch(self._label(name, "w", 0))
            self.phases["warm-up"] = time.perf_counter() - started - self.phases["ready"]
            warming[0] = False
            names = list(systems)
            for round_ in range(repeats(config)):
                order = names[round_ % len(names) :] + names[: round_ % len(names)]
                for name in order:
                    self.procs.check()
                    seconds = await systems[name](self._label(name, "t", round_))
                    self.times.setdefault(name, []).append(seconds)
        finally:
            pool.shutdown(wait=True)
            if raw is not None:
                await broker.raw_close(raw)
            await transport.close()
            await store.close()

    def close(self) -> None:
        """Release the Celery client's connections."""
        if self.celery is not None:
            with contextlib.suppress(Exception):
                self.celery.app.close()

    async def _raw(self, raw: Any, tokens: int, label: str) -> float:
        start = time.perf_counter()
        await asyncio.wait_for(
            self.broker.raw_batch(raw, self.cell, tokens, CHAIN, label), BATCH_TIMEOUT
        )
        return time.perf_counter() - start

    def rows(self) -> tuple[dict[str, Any], dict[str, Any]]:
        """Throughput row and latency row, from the batches and the latency files."""
        flowkit_lat, raw_lat = read_latencies(self.workdir)
        k_chain = chain_runs(self.config, self.workers)
        k_fan = fan_runs(self.config, self.workers)
        fan_nodes = FAN + 2

        def rate(name: str, steps: int) -> float | None:
            times = self.times.get(name)
            return None if not times else round(steps / statistics.median(times))

        chain_s = rate("fk-chain", k_chain * CHAIN)
        fan_s = rate("fk-fan", k_fan * fan_nodes)
        raw_s = rate("raw", k_chain * CHAIN)
        celery_s = rate("celery", k_chain * CHAIN)
        celery_fan_s = rate("celery-fan", k_fan * fan_nodes)

        def timed(source: dict[str, list[float]], system: str) -> list[float]:
            prefix = self._label(system, "t", "")
            return [v for label, vs in source.items() if label.startswith(prefix) for v in vs]

        throughput = {
            "broker": self.broker.name,
            "workers": self.workers,
            "chain_steps_s": chain_s,
            "fan_steps_s": fan_s,
            "raw_msgs_s": raw_s,
            "x_raw_chain": ratio(chain_s, raw_s),
            "x_raw_fan": ratio(fan_s, raw_s),
            "celery_chain_s": celery_s,
            "celery_fan_s": celery_fan_s,
            "x_celery_chain": ratio(chain_s, celery_s),
            "x_celery_fan": ratio(fan_s, celery_fan_s),
            # messages each process has in flight: its share of the chains (or raw tokens),
            # and of the fans' ready nodes, under the prefetch of CONCURRENCY
            "chain_in_flight_proc": min(CONCURRENCY, k_chain // self.workers),
            "fan_in_flight_proc": min(CONCURRENCY, k_fan * FAN // self.workers),
        }
        c50, c95 = _percentiles(timed(flowkit_lat, "fk-chain"))
        f50, f95 = _percentiles(timed(flowkit_lat, "fk-fan"))
        r50, r95 = _percentiles(timed(raw_lat, "raw"))
        latency = {
            "broker": self.broker.name,
            "workers": self.workers,
            "in_flight": k_chain,
            "chain_p50_ms": c50,
            "chain_p95_ms": c95,
            "fan_p50_ms": f50,
            "fan_p95_ms": f95,
            "raw_p50_ms": r50,
            "raw_p95_ms": r95,
            "chain_little_ms": None if not chain_s else sig(k_chain / chain_s * 1000),
        }
        return throughput, latency


# -- the section ------------------------------------------------------------------------------


def _workdir() -> tuple[Path, dict[str, str], Any]:
    """A temp dir with the flows module on PYTHONPATH (ours too), and the children's env."""
    import importlib

    workdir = Path(tempfile.mkdtemp(prefix="flowkit-bench-dist-"))
    (workdir / "fkbench_flows.py").write_text(
        FLOWS_MODULE.format(chain=CHAIN, fan=FAN, enqueued=ENQUEUED)
    )
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(
        [str(workdir), str(ROOT), *filter(None, [env.get("PYTHONPATH")])]
    )
    env["FKBENCH_OUT"] = str(workdir)
    env["PYTHONUNBUFFERED"] = "1"
    sys.path.insert(0, str(workdir))
    sys.modules.pop("fkbench_flows", None)
    flows = importlib.import_module("fkbench_flows")
    return workdir, env, flows


def _cleanup_workdir(workdir: Path) -> None:
    import shutil

    with contextlib.suppress(ValueError):
        sys.path.remove(str(workdir))
    for name in [m for m in sys.modules if m.startswith("fkbench_")]:
        del sys.modules[name]
    shutil.rmtree(workdir, ignore_errors=True)


def _smoke(workdir: Path, env: dict[str, str], flows: Any) -> list[Table]:
    """One worker process over the SQLite queue and store: the harness, without a broker."""
    table = Table("distributed (smoke): 1 flowkit worker process over the SQLite queue and store")
    url = f"sqlite:///{workdir / 'queue.db'}"
    store_url = f"sqlite:///{workdir / 'store.db'}"
    procs = Processes(workdir, env)
    tag = f"fkb{uuid.uuid4().hex[:8]}"

    async def go() -> dict[str, Any]:
        from flowkit import Client
        from flowkit.stores import from_url as store_from_url
        from flowkit.transports import from_url as transport_from_url

        transport = transport_from_url(url)
        store = store_from_url(store_url)
        client = Client(transport, store, queue="smoke", flows=[flows.chain, flows.fan])
        try:
            procs.check()
            chain_s = await flowkit_batch(client, flows.chain, 2, f"{tag}-sq1-fk-chain-t0")
            fan_s = await flowkit_batch(client, flows.fan, 1, f"{tag}-sq1-fk-fan-t0")
        finally:
            await transport.close()
            await store.close()
        return {"chain_s": chain_s, "fan_s": fan_s}

    argv = [sys.executable, "-m", "flowkit.worker", "--app", "fkbench_flows", "--transport", url]
    argv += ["--store", store_url, "--queue", "smoke", "--log-level", "WARNING"]
    try:
        procs.spawn("sqlite-flowkit-0", argv, FKBENCH_ROLE="worker")
        times = asyncio.run(go())
    finally:
        procs.stop()
    flowkit_lat, _ = read_latencies(workdir)
    chain_lat = [v for label, vs in flowkit_lat.items() if "-chain-" in label for v in vs]
    p50, p95 = _percentiles(chain_lat)
    table.rows.append(
        {
            "broker": "sqlite",
            "workers": 1,
            "chain_steps_s": round(2 * CHAIN / times["chain_s"]),
            "fan_steps_s": round((FAN + 2) / times["fan_s"]),
            "chain_p50_ms": p50,
            "chain_p95_ms": p95,
            "latency_samples": len(chain_lat),
        }
    )
    table.notes.append("smoke: no broker, no raw baseline, no Celery; tiny batches, no repeats")
    return [table]


ONLY: dict[str, Any] = {}  # python -m bench.distributed --broker/--workers (manual runs)


def run(config: Config) -> list[Table]:
    workdir, env, flows = _workdir()
    try:
        if config.smoke:
            return _smoke(workdir, env, flows)
        return _run(config, workdir, env, flows)
    finally:
        _cleanup_workdir(workdir)


def _run(config: Config, workdir: Path, env: dict[str, str], flows: Any) -> list[Table]:
    global MESSAGE_SIZE
    tag = f"fkb{uuid.uuid4().hex[:8]}"
    MESSAGE_SIZE = _node_message_size(flows, tag)
    throughput = Table(
        f"distributed throughput: {CHAIN}-node chain and {FAN}-wide fan on flowkit worker "
        "processes (RedisStore), the raw broker and Celery, same broker and process count"
    )
    latency = Table(
        "distributed step latency (enqueue -> completion), ms, with `in_flight` chains "
        "(or raw tokens) at once"
    )
    store_url = ONLY.get("store") or REDIS_URL
    if store_url.startswith("postgres"):  # a schema of its own, dropped at the end
        store_url += f"{'&' if '?' in store_url else '?'}schema={tag}"
    skipped: list[str] = []
    if not reachable(REDIS_URL):
        throughput.notes.append(f"no Redis at {REDIS_URL} for the store: section skipped")
        return [throughput]
    try:
        import celery  # noqa: F401

        have_celery = True
    except ImportError:
        have_celery = False
    for broker_cls in (RabbitMQ, Kafka, Redis):
        broker = broker_cls(tag)
        if broker.name not in brokers(config):
            if not ONLY.get("brokers"):
                skipped.append(f"{broker.name}: full runs only (no goal, no Celery to compare)")
            continue
        reason = broker.unavailable()
        if reason is not None:
            skipped.append(f"{broker.name}: {reason}")
            continue
        if not have_celery and broker.celery_reason is None:
            broker.celery_reason = "celery not installed (pip install 'celery[redis]')"
        try:
            rows, failed = asyncio.run(_run_broker(broker, config, workdir, env, flows, store_url))
            for throughput_row, latency_row in rows:
                throughput.rows.append(throughput_row)
                latency.rows.append(latency_row)
            skipped += failed
        except Exception as exc:
            skipped.append(f"{broker.name}: FAILED {type(exc).__name__}: {exc}"[:500])
            print(f"distributed: {broker.name} failed: {exc!r}", file=sys.stderr, flush=True)
        finally:
            asyncio.run(broker.close())
        if broker.celery_reason is not None:
            skipped.append(f"Celery on {broker.name}: {broker.celery_reason}")
    failures = [note for note in skipped if "FAILED" in note]
    if failures and not throughput.rows:
        raise RuntimeError("every distributed measurement failed: " + "; ".join(failures))
    throughput.notes += [
        f"K = {chain_runs(config, 1)} x workers chains (and raw tokens, and Celery chains) "
        f"started at once, {fan_runs(config, 1)} x workers fans (and Celery chords); medians of "
        f"{repeats(config)} rounds, systems timed in turns after a warm-up batch each (one "
        "chain per process)",
        "x_raw_* = flowkit steps/s ÷ raw msgs/s (raw: aio-pika / aiokafka / redis-py, same queue "
        f"type and publish guarantees as flowkit's transport, {MESSAGE_SIZE} B bodies, "
        "each hop = consume + publish next + ack); x_celery_* = flowkit steps/s ÷ Celery "
        "steps/s, chain for chain and fan for chord",
        "*_in_flight_proc = messages each process has in flight in that cell: its share of "
        f"the K chains (raw: tokens; a chain has one message at a time), or of the fans' "
        f"ready nodes, capped by the prefetch of {CONCURRENCY} (flowkit --concurrency, the raw "
        "consumers' prefetch / in-flight limit)",
        f"flowkit: python -m flowkit.worker --concurrency {CONCURRENCY}; store at "
        f"{store_url}; Celery {_celery_version()}: celery worker --pool threads --concurrency "
        f"{CELERY_THREADS} (one process, like a flowkit worker; {CELERY_THREADS} tasks run at "
        f"once), Redis result backend, task_acks_late=True, worker_prefetch_multiplier="
        f"{CELERY_PREFETCH} ({CONCURRENCY} prefetched per process, as flowkit); on RabbitMQ a "
        "quorum queue and publisher confirms (confirm_publish), as RabbitMQTransport; the fan "
        f"is chain(one, group({FAN} x inc), done), i.e. a chord",
        f"Kafka: {f'the broker at {KAFKA}' if KAFKA else 'tansu, started here'}; consumers "
        f"use fetch_max_wait_ms = {_fetch_wait().get('fetch_max_wait_ms', 500)} on both flowkit "
        "and raw (aiokafka's default is 500; FLOWKIT_BENCH_KAFKA_FETCH_WAIT_MS sets both)",
        *skipped,
    ]
    latency.notes.append(
        "step latency: worker notes time.time() when a delivery is fully handled (state "
        "committed, successors published, acked) minus the message's enqueue header; raw: the "
        "same per hop; chain_little_ms = in_flight ÷ chain steps/s (Little's law: at saturation "
        "latency is the queue, not the step)"
    )
    return [throughput, latency]


async def _run_broker(
    broker: Broker, config: Config, workdir: Path, env: dict[str, str], flows: Any, store_url: str
) -> tuple[list[tuple[dict[str, Any], dict[str, Any]]], list[str]]:
    """Every pool size on one broker, in one event loop; cleans the broker up after.

    Returns the rows of the cells that ran and a note for each cell that failed.
    """
    rows, failed = [], []
    try:
        for workers in pool_sizes(config):
            cell = Cell(broker, workers, config, workdir, env, flows, store_url)
            started = time.perf_counter()
            try:
                await broker.prepare(cell.cell)
                cell.start()
                await cell.measure()
            except Exception as exc:
                failed.append(f"{broker.name} x{workers}: FAILED {type(exc).__name__}: {exc}"[:400])
                print(f"distributed: {failed[-1]}", file=sys.stderr, flush=True)
                continue
            finally:
                stopping = time.perf_counter()
                await asyncio.to_thread(cell.procs.stop)
                cell.close()
                cell.phases["stop"] = time.perf_counter() - stopping
                cell.phases["total"] = time.perf_counter() - started
            rows.append(cell.rows())
            phases = {k: round(v, 1) for k, v in cell.phases.items()}
            print(f"  {broker.name} x{workers}: {phases}", file=sys.stderr, flush=True)
    finally:
        with contextlib.suppress(Exception):
            await broker.cleanup()
        with contextlib.suppress(Exception):
            await _delete_redis_keys(broker.tag)
        if store_url.startswith("postgres"):
            with contextlib.suppress(Exception):
                await _drop_schema(store_url, broker.tag)
    return rows, failed


async def _drop_schema(url: str, schema: str) -> None:
    """The PostgresStore schema of this invocation."""
    import psycopg

    dsn = url.split("?", 1)[0]
    async with await psycopg.AsyncConnection.connect(dsn, autocommit=True) as conn:
        await conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')


def _celery_version() -> str:
    try:
        import celery

        return str(celery.__version__)
    except ImportError:
        return "(not installed)"


def summary(tables: list[Table]) -> dict[tuple[str, int], dict[str, Any]]:
    """Throughput rows by (broker, workers)."""
    if not tables:
        return {}
    return {(r["broker"], r["workers"]): r for r in tables[0].rows if "raw_msgs_s" in r}


@contextlib.contextmanager
def _timer(what: str) -> Iterator[None]:
    start = time.perf_counter()
    yield
    print(f"{what}: {time.perf_counter() - start:.1f}s", file=sys.stderr)


def main(argv: list[str]) -> int:
    if argv and argv[0] == "raw":
        return raw_main(argv[1:])
    parser = argparse.ArgumentParser(prog="python -m bench.distributed")
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--smoke", action="store_true")
    parser.add_argument("--broker", action="append", choices=BROKERS, help="only these brokers")
    parser.add_argument("--workers", action="append", type=int, help="only these pool sizes")
    parser.add_argument("--store", help="flowkit's store URL (default: RedisStore at REDIS_URL)")
    args = parser.parse_args(argv)
    ONLY.update(brokers=args.broker, workers=args.workers, store=args.store)
    from ._util import print_tables

    with _timer("distributed"):
        tables = run(Config(quick=args.quick, smoke=args.smoke))
    print_tables("distributed", tables, use_rich=False)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

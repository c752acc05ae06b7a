"""End to end: a pool of workers runs 50 flows while one of them is killed.

For each transport/store pair (SQLite queue + SQLiteStore, PostgreSQL queue +
PostgresStore, RabbitMQ + PostgresStore, Redis Streams + RedisStore, Kafka
(tansu) + RedisStore, Pub/Sub (Google's emulator) + PostgresStore, SQS (moto
server) + RedisStore, NATS JetStream + RedisStore, Service Bus (the AMQP 1.0
stand-in of ``tests/servicebus_standin.py``, driven by the real azure-servicebus
SDK) + PostgresStore; ``conftest.backend``) the test starts three ``python -m
flowkit.worker`` processes, submits 50 runs of ``flows_e2e.pipeline`` (gather,
sleep, wait, map, loop) from this process with a :class:`flowkit.Client`,
signals each run once it waits, SIGKILLs one worker after some runs completed
while others are in flight, starts a replacement, and waits (bounded) until
every run completed. Then:

* every run completed with the output its input and signal determine;
* every node activation of every run recorded its side effect exactly once,
  under one idempotency key (the ``effects`` table), and every execution —
  re-executions after the kill included — used that same key (the
  ``executions`` table has the same keys, one per activation);
* SIGTERM drains the surviving workers: each exits 0 within a bound.

The workers use a 3 s ``--lease`` so the reconciler republishes the dispatches
the killed worker held. The memory transport runs the same scenario with
in-process workers in one event loop, the crash being the cancellation of one
worker's task group.

The kill always lands inside a node: the test sets a *trap* (see ``flows_e2e``),
so the next node any worker runs records its side effect and then hangs, and
that worker is killed once that happened; that node must run again elsewhere
under the same key. One run's signal is held back until the trap is set, so
some node certainly runs after that (on a slow machine every other run may have
run its last node before the test set the trap). A second scenario SIGTERMs a
worker inside a (1 s) node instead: it must finish that node — once, there — and
exit 0, while the other worker completes every run.
"""

from __future__ import annotations

import signal
import threading
import time
import uuid
from collections import Counter, defaultdict
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Any

import anyio
import attrs
import pytest
from flows_e2e import (
    ACTIVATIONS,
    DEFAULT_DSN,
    DSN_ENV,
    TABLES_ENV,
    WAIT_NAME,
    expected_output,
    pipeline,
)

from flowkit import Client, RunStatus, Worker
from flowkit.stores import MemoryStore
from flowkit.stores import from_url as store_from_url
from flowkit.transports import MemoryTransport
from flowkit.transports import from_url as transport_from_url

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Awaitable, Callable

pytestmark = [pytest.mark.anyio, pytest.mark.e2e]

RUNS = 50
WORKERS = 3
CONCURRENCY = 8
LEASE = 3.0  # seconds: the reconciler republishes a dead worker's dispatches after this
KILL_AFTER = 10  # completed runs before one worker is killed
RUN_TIMEOUT = 180.0  # every run completes within this
POLL = 0.1  # seconds between looks at the runs' status
SUBMIT_INTERVAL = 0.08  # seconds between run submissions (50 runs: 4 s)
START_TIMEOUT = 30.0  # a worker process logs "worker started" within this
STOP_TIMEOUT = 30.0  # a drained (SIGTERM) worker exits within this
TEST_TIMEOUT = 300  # pytest-timeout for one scenario (the suite's default is 60 s)
HANG = 120.0  # seconds a trapped node takes when its worker is to be killed inside it
DRAIN_RUNS = 20  # runs of the busy-drain scenario
DRAIN_HOLD = 1.0  # seconds the trapped node takes when its worker is to drain meanwhile


@attrs.define
class Outcome:
    """What a scenario observed (printed, and checked by :func:`check`)."""

    run_ids: list[str]
    bonus: dict[str, int]
    inputs: dict[str, int]
    completed_at_crash: int = 0
    in_flight_at_crash: int = 0
    interrupted: str | None = None  # the idempotency key of a node the crash interrupted
    seconds: float = 0.0

    def summary(self) -> str:
        return (
            f"{len(self.run_ids)} runs in {self.seconds:.1f}s, crash after "
            f"{self.completed_at_crash} completed with {self.in_flight_at_crash} in flight, "
            f"interrupting {self.interrupted}"
        )


# -- the scenario -------------------------------------------------------------------------------


async def drive(
    client: Client,
    crash: Callable[[threading.Event], Awaitable[str]],
    tag: str,
    *,
    runs: int = RUNS,
    crash_after: int = KILL_AFTER,
) -> Outcome:
    """Submit the runs (a steady stream), signal each once it waits, crash a worker after
    ``crash_after`` completed (with others in flight), and wait until every run completed.

    ``crash(armed)`` sets ``armed`` once its trap is set; the last run's signal waits for
    that, so that run's later nodes spring the trap if no other run has nodes left.
    """
    started = time.monotonic()
    run_ids = [f"{tag}-{i:02d}" for i in range(runs)]
    outcome = Outcome(
        run_ids,
        bonus={run_id: i % 7 for i, run_id in enumerate(run_ids)},
        inputs={run_id: i for i, run_id in enumerate(run_ids)},
    )
    pending: set[str] = set()
    signalled: set[str] = set()
    submitted = 0
    crashed = anyio.Event()
    crashing = False
    armed = threading.Event()  # set by the crash's thread once its trap is set
    reserve = run_ids[-1]

    async def crash_now() -> None:
        outcome.interrupted = await crash(armed)
        crashed.set()

    try:
        with anyio.fail_after(RUN_TIMEOUT):
            # the first start may create the broker's queues (slow on some): the stream's
            # clock starts once it returned, or the first runs would all go out at once
            await client.start(pipeline, run_id=run_ids[0], n=outcome.inputs[run_ids[0]])
            pending.add(run_ids[0])
            submitted = 1
            stream_started = time.monotonic()
            async with anyio.create_task_group() as tg:
                while submitted < runs or pending:
                    # a steady stream of runs, so the crash finds them at every stage
                    elapsed = time.monotonic() - stream_started
                    due = min(runs, 1 + int(elapsed / SUBMIT_INTERVAL))
                    for run_id in run_ids[submitted:due]:
                        await client.start(pipeline, run_id=run_id, n=outcome.inputs[run_id])
                        pending.add(run_id)
                    submitted = max(submitted, due)
                    for run_id in sorted(pending):
                        held = run_id == reserve and not armed.is_set()
                        if not await _advance(client, run_id, outcome, signalled, held=held):
                            continue
                        pending.discard(run_id)
                        done = submitted - len(pending)
                        if not crashing and done >= crash_after:
                            # crash now, not after this sweep: on a slow broker one sweep
                            # can see most runs finish. The crash waits for the worker to
                            # be inside a node: meanwhile keep signalling, or the runs
                            # would all stop at their waits
                            assert len(pending) >= 5, f"only {len(pending)} runs in flight"
                            outcome.completed_at_crash = done
                            outcome.in_flight_at_crash = len(pending)
                            tg.start_soon(crash_now)
                            crashing = True
                    if submitted < runs or pending:
                        await anyio.sleep(POLL)
                await crashed.wait()
    except TimeoutError:
        raise AssertionError(
            f"{len(pending)} of {runs} runs not completed within {RUN_TIMEOUT}s "
            f"(submitted {submitted}, signalled {len(signalled)}, crashed {crashed.is_set()}): "
            f"{sorted(pending)[:5]}..."
        ) from None
    outcome.seconds = time.monotonic() - started
    return outcome


async def _advance(
    client: Client, run_id: str, outcome: Outcome, signalled: set[str], *, held: bool = False
) -> bool:
    """Signal the run if it waits for its signal (unless ``held``); whether it completed."""
    info = await client.store.info(run_id)
    assert info is not None, f"run {run_id} vanished from the store"
    if info.status == RunStatus.COMPLETED:
        return True
    if info.status in (RunStatus.FAILED, RunStatus.CANCELLED):
        result = await client.result(run_id)
        raise AssertionError(f"run {run_id} {info.status}: {result.error!r}")
    if info.status == RunStatus.AWAITING and run_id not in signalled and not held:
        loaded = await client.store.load(run_id)
        assert loaded is not None
        if WAIT_NAME in loaded[0].sections["waits"]:
            await client.signal(run_id, WAIT_NAME, {"bonus": outcome.bonus[run_id]})
            signalled.add(run_id)
    return False


async def check(
    client: Client, outcome: Outcome, tables: str, *, drained: str | None = None
) -> dict[str, int]:
    """Outputs are right; each activation has exactly one key in both side-effect tables;
    the interrupted node ran again elsewhere — or, if its worker was ``drained`` rather
    than killed, it finished there and ran only once."""
    for run_id in outcome.run_ids:
        result = await client.result(run_id)
        expected = expected_output(outcome.inputs[run_id], outcome.bonus[run_id])
        assert (RunStatus.COMPLETED, expected) == (result.status, result.output), run_id
    effects, executions = await anyio.to_thread.run_sync(_read_tables, tables)

    # the side effect itself: one row per activation, each under its own key
    by_activation = Counter((run_id, activation) for _, run_id, activation in effects)
    twice = {k: n for k, n in by_activation.items() if n != 1}
    assert {} == twice, "activations recorded under more than one idempotency key"
    for run_id in outcome.run_ids:
        recorded = {a for (r, a) in by_activation if r == run_id}
        assert ACTIVATIONS == recorded, run_id
    assert len(outcome.run_ids) * len(ACTIVATIONS) == len(effects)

    # every execution (re-executions included) used the activation's one key
    keys_by_activation: dict[tuple[str, str], set[str]] = defaultdict(set)
    for key, run_id, activation, _worker in executions:
        keys_by_activation[(run_id, activation)].add(key)
    two_keys = {k: v for k, v in keys_by_activation.items() if len(v) != 1}
    assert {} == two_keys, "a node ran under two different idempotency keys"
    assert {key for key, _, _ in effects} == {key for key, *_ in executions}
    assert outcome.interrupted is not None
    ran_on = [worker for key, *_, worker in executions if key == outcome.interrupted]
    if drained is None:
        # the node the crash interrupted (effect recorded, completion not) ran again elsewhere
        assert 2 <= len(set(ran_on)), f"{outcome.interrupted} was not run again: {ran_on}"
    else:
        # the node in flight when its worker was told to drain finished there, once
        assert [drained] == ran_on, f"{outcome.interrupted} ran on {ran_on}"
    return {
        "executions": len(executions),
        "re-executions": len(executions) - len(effects),
        "workers": len({worker for *_, worker in executions}),
    }


def _read_tables(prefix: str) -> tuple[list[tuple[str, str, str]], list[tuple[str, str, str, str]]]:
    """``(key, run_id, activation)`` of every effect; ``(..., worker)`` of every execution."""
    import psycopg
    from flows_e2e import tables

    names = tables(prefix)
    with psycopg.connect(DEFAULT_DSN) as conn:
        effect_rows = conn.execute(
            f"SELECT idempotency_key, run_id, activation FROM {names.effects}"
        ).fetchall()
        execution_rows = conn.execute(
            f"SELECT idempotency_key, run_id, activation, worker FROM {names.executions} "
            "ORDER BY id"
        ).fetchall()
    return effect_rows, execution_rows


# -- worker processes over real brokers ---------------------------------------------------------


def crash_inside_a_node(
    prefix: str,
    crash: Callable[[str], Any],
    armed: threading.Event,
    hold: float = HANG,
    timeout: float = 60.0,
) -> tuple[str, str]:
    """Set a trap (then set ``armed``), and call ``crash(worker)`` once a node of some
    worker sprang it; that worker and the node's key.

    The trapped node has recorded its side effect and takes ``hold`` seconds (see
    ``flows_e2e``): the crash certainly lands inside it, before its completion.
    Runs in a thread.
    """
    import psycopg
    from flows_e2e import tables

    traps = tables(prefix).traps
    deadline = time.monotonic() + timeout
    with psycopg.connect(DEFAULT_DSN, autocommit=True) as conn:
        (trap,) = conn.execute(
            f"INSERT INTO {traps} (hold) VALUES (%s) RETURNING id", (hold,)
        ).fetchone() or (None,)
        armed.set()
        while time.monotonic() < deadline:
            row = conn.execute(
                f"SELECT worker, idempotency_key FROM {traps} WHERE id = %s", (trap,)
            ).fetchone()
            if row is not None and row[1] is not None:
                crash(str(row[0]))
                return str(row[0]), str(row[1])
            time.sleep(0.01)  # polling a table, bounded by the deadline
    raise AssertionError(f"no worker ran a node for {timeout}s")


def worker_args(urls: Any) -> list[str]:
    return [
        "--app", "flows_e2e",
        "--transport", urls.transport,
        "--store", urls.store,
        "--queue", urls.queue,
        "--concurrency", str(CONCURRENCY),
        "--lease", str(LEASE),
        "--log-format", "json",
    ]  # fmt: skip


@asynccontextmanager
async def connect(urls: Any) -> AsyncIterator[Client]:
    """A client of the workers, on its own transport and store connections."""
    transport = transport_from_url(urls.transport)
    store = store_from_url(urls.store)
    try:
        yield Client(transport, store, queue=urls.queue, flows=[pipeline], lease=LEASE)
    finally:
        await transport.close()
        await store.close()


@pytest.mark.timeout(TEST_TIMEOUT)
async def test_worker_processes_survive_a_kill(
    broker: str, open_backend: Any, worker_processes: Any, effects: str
) -> None:
    async with open_backend(broker, lease=LEASE) as urls:
        args, env = worker_args(urls), {TABLES_ENV: effects, DSN_ENV: DEFAULT_DSN}
        workers = [worker_processes.start(*args, env=env) for _ in range(WORKERS)]
        for worker in workers:
            await worker.wait_for_line("worker started", START_TIMEOUT)
        by_pid = {str(worker.pid): worker for worker in workers}
        killed: list[Any] = []

        def kill(pid: str) -> None:
            killed.append(by_pid[pid])
            by_pid[pid].kill()

        async def crash(armed: threading.Event) -> str:
            _, interrupted = await anyio.to_thread.run_sync(
                crash_inside_a_node, effects, kill, armed
            )
            replacement = worker_processes.start(*args, env=env)
            await replacement.wait_for_line("worker started", START_TIMEOUT)
            return interrupted

        async with connect(urls) as client:
            outcome = await drive(client, crash, tag=f"{broker}-{uuid.uuid4().hex[:6]}")
            stats = await check(client, outcome, effects)
        assert [-signal.SIGKILL] == [worker.returncode for worker in killed]
        print(f"\n[e2e {broker}] killed pid {killed[0].pid}: {outcome.summary()}; {stats}")
        codes = {}
        async with anyio.create_task_group() as tg:

            async def drain(process: Any) -> None:
                codes[process.pid] = await process.terminate(STOP_TIMEOUT)

            for process in worker_processes.running:
                tg.start_soon(drain, process)
        assert len(codes) == WORKERS
        assert {0} == set(codes.values()), worker_processes.report()


DRAIN_EVENTS = ("draining", "worker stopped")
# what a worker logs when a delivery it took goes back to the broker instead of being acked
HANDED_BACK = (
    "could not settle a delivery; it will be redelivered",
    "transient failure; message requeued",
    "lost a delivery while running its node",
)


@pytest.mark.timeout(TEST_TIMEOUT)
async def test_sigterm_drains_a_busy_worker(
    broker: str,
    open_backend: Any,
    worker_processes: Any,
    effects: str,
) -> None:
    """SIGTERM while a node runs: the node finishes (once, there), the worker exits 0, and
    the other worker completes every run."""
    async with open_backend(broker, lease=LEASE) as urls:
        args, env = worker_args(urls), {TABLES_ENV: effects, DSN_ENV: DEFAULT_DSN}
        workers = [worker_processes.start(*args, env=env) for _ in range(2)]
        for worker in workers:
            await worker.wait_for_line("worker started", START_TIMEOUT)
        by_pid = {str(worker.pid): worker for worker in workers}
        told: list[Any] = []

        def drain(pid: str) -> None:
            told.append(by_pid[pid])
            by_pid[pid].popen.send_signal(signal.SIGTERM)

        async def sigterm(armed: threading.Event) -> str:
            _, interrupted = await anyio.to_thread.run_sync(
                crash_inside_a_node, effects, drain, armed, DRAIN_HOLD
            )
            return interrupted

        async with connect(urls) as client:
            tag = f"{broker}-drain-{uuid.uuid4().hex[:6]}"
            outcome = await drive(client, sigterm, tag, runs=DRAIN_RUNS, crash_after=3)
            (drained,) = told
            (other,) = [worker for worker in workers if worker is not drained]
            assert 0 == await drained.wait(STOP_TIMEOUT), drained.output()[-3000:]
            stats = await check(client, outcome, effects, drained=str(drained.pid))
        events = [event.get("event") for event in drained.events()]
        assert ["draining", "worker stopped"] == [e for e in events if e in DRAIN_EVENTS]
        assert [] == [e for e in events if e in HANDED_BACK], "in-flight work was handed back"
        print(f"\n[e2e {broker}] drained pid {drained.pid}: {outcome.summary()}; {stats}")
        assert 0 == await other.terminate(STOP_TIMEOUT)


# -- in-process workers over MemoryTransport -----------------------------------------------------


@pytest.mark.timeout(TEST_TIMEOUT)
@pytest.mark.parametrize("anyio_backend", ["asyncio", "trio"])
async def test_in_process_workers_survive_a_cancelled_worker(
    effects: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    import flows_e2e

    monkeypatch.setenv(TABLES_ENV, effects)
    monkeypatch.setenv(DSN_ENV, DEFAULT_DSN)
    transport = MemoryTransport(visibility_timeout=LEASE)
    store = MemoryStore()
    client = Client(transport, store, flows=[pipeline], lease=LEASE)

    def new_worker() -> Worker:
        return Worker(
            [pipeline], transport, store, concurrency=CONCURRENCY, lease=LEASE, poll_interval=0.1
        )

    workers = [new_worker() for _ in range(WORKERS)]
    names: dict[Worker, str] = {}
    scopes: dict[Worker, anyio.CancelScope] = {}
    stopped: dict[Worker, anyio.Event] = {}

    async def serve(worker: Worker, *, task_status: Any = anyio.TASK_STATUS_IGNORED) -> None:
        names[worker] = f"worker-{len(names)}"
        flows_e2e.WORKER.set(names[worker])  # this task's context: the worker's nodes inherit it
        stopped[worker] = anyio.Event()
        try:
            with anyio.CancelScope() as scopes[worker]:
                await worker.run(task_status=task_status)
        finally:
            stopped[worker].set()

    try:
        async with anyio.create_task_group() as tg:
            for worker in workers:
                await tg.start(serve, worker)
            by_name = {name: worker for worker, name in names.items()}
            cancelled: list[Worker] = []

            def cancel(name: str) -> None:
                cancelled.append(by_name[name])
                anyio.from_thread.run_sync(scopes[by_name[name]].cancel)

            async def crash(armed: threading.Event) -> str:
                """Cancel the worker's task group while it is inside a node (unacked)."""
                _, interrupted = await anyio.to_thread.run_sync(
                    crash_inside_a_node, effects, cancel, armed
                )
                replacement = new_worker()
                workers.append(replacement)
                await tg.start(serve, replacement)
                return interrupted

            outcome = await drive(client, crash, tag=f"memory-{uuid.uuid4().hex[:6]}")
            stats = await check(client, outcome, effects)
            print(f"\n[e2e memory] cancelled a worker: {outcome.summary()}; {stats}")
            with anyio.fail_after(STOP_TIMEOUT):
                survivors = [worker for worker in workers if worker not in cancelled]
                for worker in survivors:
                    worker.stop()
                for worker in survivors:
                    await stopped[worker].wait()
    finally:
        await transport.close()
        await store.close()
        await anyio.to_thread.run_sync(flows_e2e.close_connections)

"""The example packages (``examples/orders``, ``etl``, ``agent``) run as their docstrings say.

* In-memory: ``python -m examples.<name>`` exits 0 and prints every run's result.
* Distributed: two ``python -m flowkit.worker --app examples.<name>.flows``
  processes serve the flows, on the SQLite queue + SQLite store (files in the
  test's temp dir) and on RabbitMQ (the real broker on 127.0.0.1:5672, a queue
  name of the test's own) + SQLite store. The test submits runs with a
  ``flowkit.Client``, answers the waits (the orders' payment through the
  worker's webhook endpoint, signed, as a payment provider would), checks every
  output, then SIGTERMs the workers and checks that both drain and exit 0.

The test's client runs on asyncio and trio for the SQLite queue, on asyncio
only for RabbitMQ (aio-pika is asyncio-only); the workers run on asyncio.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import uuid
from pathlib import Path
from typing import TYPE_CHECKING, Any

import anyio
import httpx
import pytest

import flowkit
from flowkit.stores import SQLiteStore
from flowkit.transports import SQLiteQueueTransport
from flowkit.webhooks import sign

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Awaitable, Callable, Iterator

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:  # the test imports the examples as the workers do
    sys.path.insert(0, str(ROOT))

from examples.agent.flows import REVIEWS, assistant  # noqa: E402
from examples.etl.flows import etl  # noqa: E402
from examples.orders.flows import PAYMENT_SECRET, SCENARIOS, checkout  # noqa: E402

RABBITMQ_URL = os.environ.get("FLOWKIT_TEST_RABBITMQ", "amqp://guest:guest@127.0.0.1:5672/")
RUN_TIMEOUT = 30.0  # a run of an example finishes within this on two workers
STATE_TIMEOUT = 20.0  # a run reaches a wait within this
STOP_TIMEOUT = 30.0  # a SIGTERMed worker drains and exits within this
POLL = 0.05  # seconds between reads of a run's state


# -- in-memory ----------------------------------------------------------------------------------

IN_MEMORY = {
    "orders": [
        "A-100: completed: {'order': 'A-100', 'status': 'shipped'",
        "B-200: waiting for approval",
        "B-200: completed: {'order': 'B-200', 'status': 'payment-declined'",
        "C-300: completed: {'order': 'C-300', 'status': 'refunded'",
    ],
    "etl": [
        "sales-q1: completed via extract -> clean -> profile -> load -> publish",
        "sales-q2: completed via extract -> clean -> profile -> load -> quarantine",
        "{'published': True, 'revenue': {'north': 17.5, 'south': 52.5, 'east': 8.5}}",
    ],
    "agent": [
        "review: {'approved': False, 'comment': 'compare prices'}",
        "citing 3 source(s); addresses: compare prices, cite a second vendor",
        "completed: {'status': 'approved', 'rounds': 3",
    ],
}


class TestInMemory:
    """``python -m examples.<name>`` runs the example end to end and prints the results."""

    @pytest.mark.parametrize("name", sorted(IN_MEMORY))
    def test_module_runs(self, name: str) -> None:
        done = subprocess.run(
            [sys.executable, "-m", f"examples.{name}"],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert 0 == done.returncode, done.stderr
        missing = [line for line in IN_MEMORY[name] if line not in done.stdout]
        assert [] == missing, done.stdout


# -- worker processes ---------------------------------------------------------------------------


class Workers:
    """``python -m flowkit.worker`` processes of one test, each logging to a file."""

    def __init__(self, tmp_path: Path) -> None:
        self.tmp_path = tmp_path
        self.processes: list[tuple[subprocess.Popen[bytes], Path]] = []

    def start(self, *args: str) -> None:
        log = self.tmp_path / f"worker-{len(self.processes)}.log"
        path = os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))
        env = dict(os.environ, PYTHONPATH=path)
        with log.open("wb") as out:
            popen = subprocess.Popen(
                [sys.executable, "-m", "flowkit.worker", *args],
                cwd=self.tmp_path,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # its own process group: killed alone if need be
            )
        self.processes.append((popen, log))

    def logs(self) -> str:
        return "\n".join(f"--- {log.name}\n{log.read_text()[-3000:]}" for _, log in self.processes)

    async def stop(self) -> list[int | None]:
        """SIGTERM every worker once it started (before, SIGTERM would just kill it); their
        exit codes (``None``: still running after the timeout)."""
        with anyio.fail_after(STOP_TIMEOUT):
            for popen, log in self.processes:
                while True:
                    if popen.poll() is not None or "worker started" in log.read_text():
                        break
                    await anyio.sleep(0.05)  # a log line, no event to await: poll, bounded
        for popen, _ in self.processes:
            popen.send_signal(signal.SIGTERM)
        codes: list[int | None] = []
        for popen, _ in self.processes:
            with contextlib.suppress(subprocess.TimeoutExpired):
                await anyio.to_thread.run_sync(popen.wait, STOP_TIMEOUT)
            codes.append(popen.poll())
        return codes

    def kill_all(self) -> None:
        for popen, _ in self.processes:
            if popen.poll() is None:
                os.killpg(popen.pid, signal.SIGKILL)
                popen.wait()


@pytest.fixture
def workers(tmp_path: Path) -> Iterator[Workers]:
    started = Workers(tmp_path)
    try:
        yield started
    finally:
        started.kill_all()


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@contextlib.asynccontextmanager
async def backend(name: str, tmp_path: Path) -> AsyncIterator[tuple[list[str], Any, str]]:
    """(worker flags, the client's transport, queue name) for ``name``; cleaned up after."""
    queue = f"examples_{uuid.uuid4().hex[:10]}"
    store_url = f"sqlite:///{tmp_path / 'runs.db'}"
    if name == "sqlite":
        queue_path = tmp_path / "queue.db"
        flags = ["--transport", f"sqlite:///{queue_path}", "--store", store_url, "--queue", queue]
        yield flags, SQLiteQueueTransport(queue_path), queue
        return
    from flowkit.transports import from_url

    flags = ["--transport", RABBITMQ_URL, "--store", store_url, "--queue", queue]
    try:
        yield flags, from_url(RABBITMQ_URL), queue
    finally:
        await delete_rabbitmq_queues(queue)


async def delete_rabbitmq_queues(queue: str) -> None:
    import aio_pika

    connection = await aio_pika.connect(RABBITMQ_URL)
    async with connection:
        channel = await connection.channel()
        base = f"flowkit.{queue}"  # the transport's default queue_prefix is "flowkit"
        for name in (base, f"{base}.dlq", f"{base}.delay.1000"):
            await channel.queue_delete(name)


async def until(read: Callable[[], Awaitable[flowkit.RunResult]], wanted: Any) -> Any:
    """Poll ``read()`` until ``wanted(result)`` holds (bounded by STATE_TIMEOUT); the result."""
    with anyio.fail_after(STATE_TIMEOUT):
        while True:
            result = await read()
            if wanted(result):
                return result
            if result.status.finished:
                raise AssertionError(f"run ended before the expected state: {result}")
            await anyio.sleep(POLL)


# -- what each example's distributed test does ------------------------------------------------


# where each order's run went: the compensation in `except` ran where it should
ORDER_PATHS = {
    "A-100": {"capture_payment": "visited", "ship": "visited", "release_stock": None},
    "B-200": {"approval": "visited", "capture_payment": "failed", "release_stock": "visited"},
    "C-300": {"ship": "failed", "refund_payment": "visited", "release_stock#2": "visited"},
}


async def drive_orders(client: flowkit.Client, webhooks: str) -> None:
    """Each demo order, concurrently; the payment arrives as a signed webhook call."""

    async def one(order_id: str, http: httpx.AsyncClient) -> None:
        scenario = SCENARIOS[order_id]
        handle = await client.start(
            checkout, run_id=f"order-{order_id}", order_id=order_id, cooling_off=0.2
        )
        if scenario["approval"] is not None:
            await until(lambda: client.result(handle.run_id), lambda r: "approval" in r.waiting_for)
            await client.signal(handle.run_id, "approval", scenario["approval"])
        await until(lambda: client.result(handle.run_id), lambda r: "payment" in r.waiting_for)
        body = json.dumps(scenario["payment"]).encode()
        response = await post_webhook(http, f"{webhooks}/hooks/payment/{handle.run_id}", body)
        assert 202 == response.status_code, response.text
        result = await handle.result(timeout=RUN_TIMEOUT)
        assert (flowkit.RunStatus.COMPLETED, scenario["status"]) == (
            result.status,
            result.output["status"],
        )
        path = result.path()
        assert ORDER_PATHS[order_id] == {node: path.get(node) for node in ORDER_PATHS[order_id]}

    async with httpx.AsyncClient() as http, anyio.create_task_group() as tg:
        for order_id in SCENARIOS:
            tg.start_soon(one, order_id, http)


async def post_webhook(http: httpx.AsyncClient, url: str, body: bytes) -> httpx.Response:
    """POST a signed body; retried (bounded) while the worker's webhook server starts."""
    headers = {
        "content-type": "application/json",
        "x-flowkit-signature": sign(PAYMENT_SECRET, body),
    }
    with anyio.fail_after(STATE_TIMEOUT):
        while True:
            try:
                return await http.post(url, content=body, headers=headers)
            except httpx.ConnectError:
                await anyio.sleep(POLL)


async def drive_etl(client: flowkit.Client, webhooks: str) -> None:
    """Both data sets: the clean one is published, the one with bad rows quarantined."""
    q1 = await client.run(etl, dataset="sales-q1", timeout=RUN_TIMEOUT)
    q2 = await client.run(etl, dataset="sales-q2", timeout=RUN_TIMEOUT)
    assert {"published": True, "revenue": {"north": 17.5, "south": 52.5, "east": 8.5}} == q1.output
    assert (False, {"north": 5.0, "east": 25.5}) == (q2.output["published"], q2.output["revenue"])
    assert ["west", "south"] == [row["region"] for row in q2.output["rejected"]]


async def drive_agent(client: flowkit.Client, webhooks: str) -> None:
    """Three review rounds, each after the round's subflow and draft; approved on the third."""
    handle = await client.start(assistant, question="Which broker?")
    for round_no, review in enumerate(REVIEWS):
        result = await until(
            lambda: client.result(handle.run_id),
            lambda r, n=round_no: "review" in r.waiting_for and r.state.get("round_no") == n,
        )
        assert f"citing {round_no + 1} source(s)" in result.state["draft"]
        await client.signal(handle.run_id, "review", review)
    final = await handle.result(timeout=RUN_TIMEOUT)
    assert ("approved", 3) == (final.output["status"], final.output["rounds"])
    assert "addresses: compare prices, cite a second vendor" in final.output["answer"]


DRIVERS = {"orders": drive_orders, "etl": drive_etl, "agent": drive_agent}
FLOWS = {"orders": [checkout], "etl": [etl], "agent": [assistant]}


async def run_on_workers(name: str, broker: str, tmp_path: Path, workers: Workers) -> None:
    """Two workers serve example ``name`` on ``broker``; drive it; SIGTERM; both exit 0."""
    port = free_port()
    async with backend(broker, tmp_path) as (flags, transport, queue):
        app = ["--app", f"examples.{name}.flows", *flags, "--lease", "10"]
        serve_webhooks = ["--webhooks", f"127.0.0.1:{port}"] if name == "orders" else []
        workers.start(*app, *serve_webhooks)
        workers.start(*app)
        store = SQLiteStore(tmp_path / "runs.db")
        client = flowkit.Client(transport, store, queue=queue, flows=FLOWS[name])
        try:
            await DRIVERS[name](client, f"http://127.0.0.1:{port}")
        except BaseException:
            print(workers.logs())  # shown with the failure
            raise
        finally:
            await transport.close()
            await store.close()
        codes = await workers.stop()
    assert [0, 0] == codes, workers.logs()


@pytest.mark.anyio
class TestOnSQLiteWorkers:
    """Two workers on the SQLite queue + store run each example, then drain on SIGTERM."""

    @pytest.mark.parametrize("name", sorted(DRIVERS))
    async def test_example(self, name: str, tmp_path: Path, workers: Workers) -> None:
        await run_on_workers(name, "sqlite", tmp_path, workers)


@pytest.mark.anyio
@pytest.mark.asyncio_only
class TestOnRabbitMQWorkers:
    """Two workers on RabbitMQ (+ SQLite store) run each example, then drain on SIGTERM."""

    @pytest.fixture
    def anyio_backend(self) -> str:
        return "asyncio"  # the test's client talks to RabbitMQ with aio-pika

    @pytest.mark.parametrize("name", sorted(DRIVERS))
    async def test_example(self, name: str, tmp_path: Path, workers: Workers) -> None:
        await run_on_workers(name, "rabbitmq", tmp_path, workers)

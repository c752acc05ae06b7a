"""A dead-lettered dispatch fails its run with the reason, and its client learns why.

* A worker that does not have a run's flow version dead-letters its message and
  finishes the run FAILED in the store; ``handle.result()`` returns at once with
  the reason (an :class:`~flowkit.Undeliverable` node error).
* A message that cannot be decoded but whose run id can be read fails the run
  too: through the core when it names a dispatch of the run, in the store when
  it names none. A message for a dispatch the run no longer waits for changes
  nothing.
* ``handle.result(timeout=...)`` raises :class:`~flowkit.ResultTimeout`, saying
  which run, where it stands and what to check.
* Nodes are named by the module workers import, even when their script runs as
  ``__main__`` (``python shop.py`` or ``python -m shop``): such a script's client
  and a worker serving ``--app shop`` agree on the flow. A flow with no
  importable name (a REPL) is refused on a Client or Worker that crosses
  processes.

The broker cases use real servers on loopback: a Redis transport with a
PostgreSQL store, RabbitMQ with a SQLite store (asyncio only: their SDKs are),
and the SQLite queue with a SQLite store on asyncio and trio.
"""

from __future__ import annotations

import importlib
import importlib.machinery
import os
import sys
import types
import uuid
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Any

import anyio
import attrs
import pytest

import flowkit
from flowkit import BlueprintError, NodeError, ResultTimeout, RunStatus
from flowkit._naming import module_name
from flowkit.stores import MemoryStore
from flowkit.stores import from_url as store_from_url
from flowkit.transports import MemoryTransport
from flowkit.transports import from_url as transport_from_url
from flowkit.worker._messages import NodeMessage

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Iterator
    from pathlib import Path

pytestmark = pytest.mark.anyio

PG_DSN = os.environ.get("FLOWKIT_TEST_POSTGRES", "postgresql://postgres@127.0.0.1:5432/test")
REDIS_URL = os.environ.get("FLOWKIT_TEST_REDIS", "redis://127.0.0.1:6379/0")
RABBITMQ_URL = os.environ.get("FLOWKIT_TEST_RABBITMQ", "amqp://guest:guest@127.0.0.1:5672/")
BOUND = 20.0  # seconds within which a worker handles a message and the client hears of it
FLEET_BOUND = 45.0  # seconds a test's worker serves (under the 60 s per-test timeout)
SCRIPT_BOUND = 90.0  # seconds a test starting a script serves: a new interpreter comes first
UNDELIVERABLE = "flowkit._errors.Undeliverable"


@flowkit.node
async def hello(name: str) -> str:
    return f"hello {name}"


@flowkit.flow
async def greet(name: str) -> str:
    return await hello(name)


@flowkit.node
async def shout(name: str) -> str:
    return name.upper()


@flowkit.flow
async def other(name: str) -> str:
    return await shout(name)


# -- brokers and stores -------------------------------------------------------------------------


@attrs.frozen
class Backend:
    transport_url: str
    store_url: str


CASES = [
    pytest.param(
        ("redis+postgres", "asyncio"), id="redis+postgres", marks=pytest.mark.asyncio_only
    ),
    pytest.param(
        ("rabbitmq+sqlite", "asyncio"), id="rabbitmq+sqlite", marks=pytest.mark.asyncio_only
    ),
    pytest.param(("sqlite+sqlite", "asyncio"), id="sqlite-asyncio"),
    pytest.param(("sqlite+sqlite", "trio"), id="sqlite-trio"),
]


@pytest.fixture(params=CASES)
def case(request: pytest.FixtureRequest) -> tuple[str, str]:
    return request.param  # type: ignore[no-any-return]


@pytest.fixture
def anyio_backend(case: tuple[str, str]) -> str:
    return case[1]


@pytest.fixture
async def backend(case: tuple[str, str], tmp_path: Path) -> AsyncIterator[Backend]:
    """URLs of a transport and a store of the test's own, cleaned up after."""
    name = f"fk_dl_{uuid.uuid4().hex[:12]}"
    if case[0] == "redis+postgres":
        yield Backend(f"{REDIS_URL}?prefix={name}", f"{PG_DSN}?schema={name}")
        await _drop_redis_keys(name)
        await _drop_schema(name)
    elif case[0] == "rabbitmq+sqlite":
        yield Backend(f"{RABBITMQ_URL}?queue_prefix={name}", f"sqlite:///{tmp_path / 'runs.db'}")
        await _delete_rabbitmq_queues(name)
    else:
        yield Backend(f"sqlite:///{tmp_path / 'queue.db'}", f"sqlite:///{tmp_path / 'runs.db'}")


async def _drop_redis_keys(prefix: str) -> None:
    import redis.asyncio

    client = redis.asyncio.Redis.from_url(REDIS_URL)
    keys = [key async for key in client.scan_iter(f"{prefix}:*")]
    if keys:
        await client.delete(*keys)
    await client.aclose()


async def _drop_schema(schema: str) -> None:
    import psycopg
    from psycopg import sql

    async with await psycopg.AsyncConnection.connect(PG_DSN, autocommit=True) as conn:
        await conn.execute(
            sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(schema))
        )


async def _delete_rabbitmq_queues(prefix: str) -> None:
    import aio_pika

    connection = await aio_pika.connect(RABBITMQ_URL)
    async with connection:
        channel = await connection.channel()
        for queue in ("flowkit", "elsewhere"):
            for name in (f"{prefix}.{queue}", f"{prefix}.{queue}.dlq"):
                await channel.queue_delete(name)


@attrs.define
class Fleet:
    """One worker (serving ``flows``) and a client, sharing a transport and a store."""

    transport: Any
    store: Any
    worker: flowkit.Worker
    dead_letters: list[str]  # reasons, as the worker reports them
    dead_lettered: anyio.Event

    def client(self, *flows: Any, queue: str = "flowkit") -> flowkit.Client:
        return flowkit.Client(self.transport, self.store, queue=queue, flows=flows)


@asynccontextmanager
async def fleet(backend: Backend, *flows: Any, bound: float = FLEET_BOUND) -> AsyncIterator[Fleet]:
    transport = transport_from_url(backend.transport_url)
    store = store_from_url(backend.store_url)
    worker = flowkit.Worker(flows, transport, store, poll_interval=0.05)
    found = Fleet(transport, store, worker, [], anyio.Event())

    def on_dead_letter(event: flowkit.Event) -> None:
        found.dead_letters.append(event.data["reason"])
        found.dead_lettered.set()

    worker.events.subscribe(on_dead_letter, types={"message:dead_letter"})
    try:
        with anyio.fail_after(bound):
            async with anyio.create_task_group() as tg:
                await tg.start(worker.run)
                yield found
                tg.cancel_scope.cancel()
    finally:
        await transport.close()
        await store.close()


async def dispatch_of(store: Any, run_id: str) -> str:
    """The id of the run's one dispatch in flight."""
    loaded = await store.load(run_id)
    assert loaded is not None
    (dispatch_id,) = loaded[0].sections["dispatches"]
    return str(dispatch_id)


def assert_failed_undeliverable(result: flowkit.RunResult, *reason: str) -> None:
    """The run failed at node ``hello``, its message dead-lettered for ``reason``."""
    assert RunStatus.FAILED == result.status, result
    error = result.error
    assert isinstance(error, NodeError), error
    assert (UNDELIVERABLE, "hello") == (error.error_type, error.node_id), error
    assert "dead-lettered" in str(error)
    assert [] == [part for part in reason if part not in str(error)], str(error)
    with pytest.raises(NodeError, match="dead-lettered"):
        result.unwrap()


# -- dead letters fail their runs ---------------------------------------------------------------


async def test_a_message_for_a_flow_version_the_worker_lacks_fails_its_run(
    backend: Backend,
) -> None:
    async with fleet(backend, other) as workers:
        handle = await workers.client(greet).start(greet, name="ada")
        result = await handle.result(timeout=BOUND)
    assert_failed_undeliverable(result, "unknown blueprint digest", "other v1")
    assert 1 == len(workers.dead_letters)


async def test_an_undecodable_message_naming_a_dispatch_fails_its_run(backend: Backend) -> None:
    """The run's own message went to a queue no worker reads; a broken copy of it comes."""
    async with fleet(backend, greet) as workers:
        handle = await workers.client(greet, queue="elsewhere").start(greet, name="ada")
        dispatch_id = await dispatch_of(workers.store, handle.run_id)
        message = NodeMessage(handle.run_id, "hello", 1, dispatch_id, greet.blueprint.digest)
        broken = message.encode().replace(b'"attempt":1', b'"attempt":0')
        await workers.transport.send("flowkit", broken)
        result = await handle.result(timeout=BOUND)
    assert_failed_undeliverable(result, "attempt must be 1 or more")


async def test_garbage_naming_only_a_run_fails_it(backend: Backend) -> None:
    async with fleet(backend, greet) as workers:
        handle = await workers.client(greet, queue="elsewhere").start(greet, name="ada")
        await workers.transport.send("flowkit", b'{"run_id": "%s"}' % handle.run_id.encode())
        result = await handle.result(timeout=BOUND)
    assert RunStatus.FAILED == result.status, result
    assert isinstance(result.error, flowkit.WorkflowFailed), result.error
    assert "malformed node message" in str(result.error)


async def test_a_stale_message_leaves_its_run_alone(backend: Backend) -> None:
    """An undecodable message for a dispatch that is no longer in the run (done,
    cancelled) is only dead-lettered."""
    async with fleet(backend, greet) as workers:
        handle = await workers.client(greet, queue="elsewhere").start(greet, name="ada")
        stale = NodeMessage(handle.run_id, "hello", 0, "gone", greet.blueprint.digest)
        await workers.transport.send("flowkit", stale.encode())
        await workers.dead_lettered.wait()
        result = await workers.client(greet).result(handle.run_id)
    assert RunStatus.RUNNING == result.status, result


# -- waiting for a result -----------------------------------------------------------------------


async def test_a_result_that_does_not_come_in_time_says_why(backend: Backend) -> None:
    transport = transport_from_url(backend.transport_url)
    store = store_from_url(backend.store_url)
    client = flowkit.Client(transport, store, flows=[greet])
    try:
        handle = await client.start(greet, name="ada")  # no worker: it stays running
        with pytest.raises(ResultTimeout) as raised:
            await handle.result(timeout=0.2)
        with pytest.raises(ResultTimeout) as unknown:
            await client.wait("no-such-run", timeout=0.2)
    finally:
        await transport.close()
        await store.close()
    error = raised.value
    assert isinstance(error, TimeoutError)
    assert (handle.run_id, "running", 0.2) == (error.run_id, error.status, error.waited)
    assert f"run {handle.run_id!r} did not finish within 0.2s" in str(error)
    assert "check that workers serving this flow" in str(error)
    assert "is not in the store" in str(unknown.value)


# -- node names of a script run as __main__ -----------------------------------------------------

SHOP = '''
"""Flows a worker imports as a module, and a script that starts one when run."""
import sys

import anyio

import flowkit
from flowkit.stores import from_url as store_from_url
from flowkit.transports import from_url as transport_from_url


@flowkit.node
async def wrap(item: str) -> str:
    return f"[{item}]"


@flowkit.flow
async def parcel(item: str) -> str:
    return await wrap(item)


async def main(transport_url: str, store_url: str) -> None:
    transport, store = transport_from_url(transport_url), store_from_url(store_url)
    try:
        result = await flowkit.Client(transport, store).run(parcel, item="book", timeout=60)
        print(result.status.value, result.output)
    finally:
        await transport.close()
        await store.close()


if __name__ == "__main__":
    anyio.run(main, *sys.argv[1:], backend="asyncio")
'''


@pytest.fixture
def shop(tmp_path: Path) -> Iterator[types.ModuleType]:
    """The flows above as an importable module of its own name, imported here."""
    name = f"shop_{uuid.uuid4().hex[:8]}"
    (tmp_path / f"{name}.py").write_text(SHOP)
    sys.path.insert(0, str(tmp_path))
    try:
        yield importlib.import_module(name)
    finally:
        sys.path.remove(str(tmp_path))
        sys.modules.pop(name, None)


@pytest.mark.parametrize("how", ["script", "-m"])
@pytest.mark.timeout(SCRIPT_BOUND + 30)
async def test_a_script_run_as_main_and_a_worker_importing_it_agree(
    how: str, shop: types.ModuleType, backend: Backend, tmp_path: Path
) -> None:
    name = shop.__name__
    command = [f"{name}.py"] if how == "script" else ["-m", name]
    async with fleet(backend, shop.parcel, bound=SCRIPT_BOUND):
        done = await anyio.run_process(
            [sys.executable, *command, backend.transport_url, backend.store_url],
            cwd=tmp_path,
            check=False,
        )
    output = done.stdout.decode() + done.stderr.decode()
    assert (0, "completed [book]") == (done.returncode, done.stdout.decode().strip()), output


# -- node names, unit ---------------------------------------------------------------------------


def _in_main(fn: Any) -> Any:
    fn.__module__ = "__main__"
    return fn


async def _plain(x: int) -> int:
    return x


async def _other(x: int) -> int:
    return x


def test_a_node_of_a_module_keeps_its_module_name() -> None:
    assert f"{__name__}.hello" == hello.registry_name


def test_main_run_with_dash_m_is_named_by_its_spec(monkeypatch: pytest.MonkeyPatch) -> None:
    main = types.ModuleType("__main__")
    main.__spec__ = importlib.machinery.ModuleSpec("shop.flows", None)
    monkeypatch.setitem(sys.modules, "__main__", main)
    assert "shop.flows" == module_name(_in_main(_plain))


def test_a_main_script_is_named_by_its_path_on_sys_path(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    (tmp_path / "shop").mkdir()
    main = types.ModuleType("__main__")
    main.__file__ = str(tmp_path / "shop" / "flows.py")
    monkeypatch.setitem(sys.modules, "__main__", main)
    monkeypatch.setattr(sys, "path", [str(tmp_path / "elsewhere"), str(tmp_path)])
    assert "shop.flows" == module_name(_in_main(_plain))


def test_builder_flows_in_a_main_script_use_the_importable_name(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    main = types.ModuleType("__main__")
    main.__spec__ = importlib.machinery.ModuleSpec("shop.flows", None)
    monkeypatch.setitem(sys.modules, "__main__", main)
    plain, named = _in_main(_plain), flowkit.node(_in_main(_other))
    bp = flowkit.Flow("f").node("a", plain).node("b", named).edge("a", "b").build()
    assert ["shop.flows._plain", "shop.flows._other"] == [n.uses for n in bp.nodes]


def test_a_main_without_a_file_stays_main(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "__main__", types.ModuleType("__main__"))
    named = flowkit.node(_in_main(_plain))
    assert "__main__._plain" == named.registry_name


@pytest.fixture
def stranded(monkeypatch: pytest.MonkeyPatch) -> flowkit.Flow:
    """A flow whose node only a REPL's ``__main__`` can name."""
    monkeypatch.setitem(sys.modules, "__main__", types.ModuleType("__main__"))

    async def echo(x: int) -> int:
        return x

    return flowkit.Flow("stranded").node("echo", flowkit.node(_in_main(echo)))


async def test_a_flow_only_main_can_name_is_refused_across_processes(
    stranded: flowkit.Flow, backend: Backend
) -> None:
    transport = transport_from_url(backend.transport_url)
    store = store_from_url(backend.store_url)
    try:
        with pytest.raises(BlueprintError, match="move the flow and its nodes into a module"):
            flowkit.Client(transport, store, flows=[stranded])
        client = flowkit.Client(transport, store)
        with pytest.raises(BlueprintError, match="__main__"):
            await client.start(stranded, x=1)
        with pytest.raises(BlueprintError, match="node-in-main"):
            flowkit.Worker([stranded], transport, store)
    finally:
        await transport.close()
        await store.close()


@pytest.mark.parametrize("anyio_backend", ["asyncio", "trio"])
async def test_a_flow_only_main_can_name_runs_in_one_process(stranded: flowkit.Flow) -> None:
    transport, store = MemoryTransport(), MemoryStore()
    worker = flowkit.Worker([stranded], transport, store, poll_interval=0.05)
    client = flowkit.Client(transport, store, flows=[stranded])
    with anyio.fail_after(BOUND):
        async with anyio.create_task_group() as tg:
            await tg.start(worker.run)
            result = await client.run(stranded, x=7)
            tg.cancel_scope.cancel()
    assert (RunStatus.COMPLETED, 7) == (result.status, result.output)

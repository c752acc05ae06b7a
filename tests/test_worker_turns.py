"""Steps of one run in a worker's process take turns, and those waiting are committed together.

A fan's completions on one worker wait for the run's turn (one step of a run at a
time per process); the step whose turn it is commits the events of the steps
waiting behind it in the same store transaction, and each of them then carries out
its own commands. Checked on the store every worker shares: the completions land
once each (the join dispatches its node once), also when two processes complete
the same nodes concurrently, from copies of the same version.

Real Redis and PostgreSQL on loopback (``FLOWKIT_TEST_REDIS`` / ``FLOWKIT_TEST_POSTGRES``;
asyncio only: their clients are), and the memory store on asyncio and trio.
"""

from __future__ import annotations

import os
import uuid
from collections import Counter
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Any

import anyio
import anyio.lowlevel
import pytest

import flowkit
from flowkit.core import _protocol as p
from flowkit.shell import _durable
from flowkit.stores import MemoryStore
from flowkit.transports import MemoryTransport
from flowkit.worker._shell import Shell

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

PG_DSN = os.environ.get("FLOWKIT_TEST_POSTGRES", "postgresql://postgres@127.0.0.1:5432/test")
REDIS_URL = os.environ.get("FLOWKIT_TEST_REDIS", "redis://127.0.0.1:6379/0")
FAN = 8
BOUND = 30.0

pytestmark = pytest.mark.anyio


async def inc(x: int = 0) -> int:
    return (x or 0) + 1


async def done(_: Any = None) -> str:
    return "done"


fan = flowkit.Flow("turns-fan")
fan.node("src", inc)
for _i in range(FAN):
    fan.node(f"w{_i}", inc).edge("src", f"w{_i}")
fan.node("sink", done, join="all")
for _i in range(FAN):
    fan.edge(f"w{_i}", "sink")


@pytest.fixture(params=["memory", "redis", "postgres"])
def kind(request: pytest.FixtureRequest, anyio_backend: str) -> str:
    if request.param != "memory" and anyio_backend != "asyncio":
        pytest.skip("redis-py's and psycopg's async clients are asyncio-only")
    return str(request.param)


@asynccontextmanager
async def fresh_store(kind: str) -> AsyncIterator[Any]:
    """A store of ``kind`` in a key prefix or schema of its own, removed after."""
    if kind == "memory":
        yield MemoryStore()
        return
    name = f"fk_turns_{uuid.uuid4().hex[:10]}"
    store: Any
    if kind == "redis":
        from flowkit.stores import RedisStore

        store = RedisStore(REDIS_URL, prefix=name)
    else:
        from flowkit.stores import PostgresStore

        store = PostgresStore(PG_DSN, schema=name)
    try:
        yield store
    finally:
        await store.close()
        await _drop(kind, name)


async def _drop(kind: str, name: str) -> None:
    if kind == "redis":
        import redis.asyncio

        client = redis.asyncio.Redis.from_url(REDIS_URL)
        keys = [key async for key in client.scan_iter(f"{name}*")]
        if keys:
            await client.delete(*keys)
        await client.aclose()
        return
    import psycopg
    from psycopg import sql

    async with await psycopg.AsyncConnection.connect(PG_DSN, autocommit=True) as conn:
        await conn.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(name)))


def shell_on(store: Any) -> Shell:
    return Shell(MemoryTransport(), store, queue="q", lease=30.0, flows=[fan])


async def fan_out(shell: Shell) -> tuple[str, list[str]]:
    """A fan run whose source completed: its id and the fan's dispatch ids."""
    run_id = await shell.start(shell.target_for(fan), None, {})
    (src,) = shell._replicas[run_id].state.sections["dispatches"]
    await shell.step(run_id, p.NodeCompleted(src, 1))
    return run_id, list(shell._replicas[run_id].state.sections["dispatches"])


async def landed(store: Any, run_id: str) -> tuple[Counter[str], Counter[str]]:
    """The run's history: node.completed events and node.scheduled events, by node."""
    history = await store.history(run_id)
    completed = Counter(e.node_id for e in history if e.kind == "node.completed")
    scheduled = Counter(e.node_id for e in history if e.kind == "node.scheduled")
    return completed, scheduled


async def until(condition: Any) -> None:
    """Let the other tasks run until ``condition()`` holds (bounded by the test's deadline)."""
    while not condition():
        await anyio.lowlevel.checkpoint()


async def test_steps_waiting_for_their_turn_are_committed_in_one_transaction(kind: str) -> None:
    """The fan's completions queue behind a step of the run: the next turn commits them
    all at once, and every step returns with its own commands carried out."""
    async with fresh_store(kind) as store:
        shell = shell_on(store)
        run_id, workers = await fan_out(shell)
        commits = store.stats.commits
        with anyio.fail_after(BOUND):
            async with (
                anyio.create_task_group() as tg,
                shell._one_step_at_a_time(run_id) as turns,
            ):
                for i, dispatch_id in enumerate(workers):
                    tg.start_soon(shell.step, run_id, p.NodeCompleted(dispatch_id, i))
                await until(lambda: len(turns.waiting) == FAN)
        assert store.stats.commits == commits + 1
        assert run_id not in shell._stepping  # nobody is left waiting
        state = shell._replicas[run_id].state
        assert [d["node"] for d in state.sections["dispatches"].values()] == ["sink"]
        completed, scheduled = await landed(store, run_id)
        assert completed == Counter({"src": 1} | {f"w{i}": 1 for i in range(FAN)})
        assert scheduled["sink"] == 1
        loaded = await store.load(run_id)
        assert loaded is not None
        assert loaded[1] == shell._replicas[run_id].version
        assert set(loaded[0].sections["dispatches"]) == set(state.sections["dispatches"])


@pytest.mark.parametrize("refused", [0, 3])
async def test_a_group_that_fails_leaves_each_step_its_own_outcome(
    kind: str, refused: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    """One event of a group is refused (the first step's, whose turn it is, or one
    waiting behind it): only its step raises; every other completion lands once, in a
    turn of its own or a group's; the refused one, tried again (its message is
    delivered again), lands once too."""
    async with fresh_store(kind) as store:
        shell = shell_on(store)
        run_id, workers = await fan_out(shell)
        handle_event = _durable.handle_event

        def refusing(program: Any, state: Any, event: p.Event) -> list[p.Command]:
            if isinstance(event, p.NodeCompleted) and event.dispatch_id == workers[refused]:
                raise _Refused(event.dispatch_id)
            return handle_event(program, state, event)

        monkeypatch.setattr(_durable, "handle_event", refusing)
        failures: list[str] = []
        with anyio.fail_after(BOUND):
            async with (
                anyio.create_task_group() as tg,
                shell._one_step_at_a_time(run_id) as turns,
            ):
                for i, dispatch_id in enumerate(workers):
                    tg.start_soon(_step, shell, run_id, dispatch_id, failures)
                    await until(lambda i=i: len(turns.waiting) == i + 1)
        assert failures == [workers[refused]]
        completed, scheduled = await landed(store, run_id)
        others = {f"w{i}": 1 for i in range(FAN) if i != refused}
        assert completed == Counter({"src": 1} | others)
        assert "sink" not in scheduled
        monkeypatch.setattr(_durable, "handle_event", handle_event)
        await shell.step(run_id, p.NodeCompleted(workers[refused], 0))
        completed, scheduled = await landed(store, run_id)
        assert completed == Counter({"src": 1} | {f"w{i}": 1 for i in range(FAN)})
        assert scheduled["sink"] == 1


async def _step(shell: Shell, run_id: str, dispatch_id: str, failures: list[str]) -> None:
    try:
        await shell.step(run_id, p.NodeCompleted(dispatch_id, 0))
    except _Refused:
        failures.append(dispatch_id)


async def test_completions_of_one_join_on_two_processes_land_once_each(kind: str) -> None:
    """Two processes complete every node of the fan (each node on both: duplicates) at
    once, from copies of the same version, their steps waiting in turns: each
    completion is committed once, and the join dispatches its node once."""
    async with fresh_store(kind) as store:
        mine, theirs = shell_on(store), shell_on(store)
        run_id, workers = await fan_out(mine)
        await theirs.replica(run_id)
        with anyio.fail_after(BOUND):
            async with anyio.create_task_group() as tg:
                for i, dispatch_id in enumerate(workers):
                    first, second = (mine, theirs) if i % 2 else (theirs, mine)
                    tg.start_soon(first.step, run_id, p.NodeCompleted(dispatch_id, i))
                    tg.start_soon(second.step, run_id, p.NodeCompleted(dispatch_id, i))
        completed, scheduled = await landed(store, run_id)
        assert completed == Counter({"src": 1} | {f"w{i}": 1 for i in range(FAN)})
        assert scheduled["sink"] == 1
        for shell in (mine, theirs):
            replica = await shell.replica(run_id, fresh=True)
            assert [d["node"] for d in replica.state.sections["dispatches"].values()] == ["sink"]


class _Refused(Exception):
    pass

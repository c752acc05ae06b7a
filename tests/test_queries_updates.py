"""Queries (read-only handlers of a run's variables) and updates (signals that answer).

The in-memory Runtime (without a store, and on SQLite) and the distributed Client with an
in-process Worker on a MemoryTransport, over SQLite (asyncio and trio), PostgreSQL and Redis on
loopback (asyncio: psycopg's and redis-py's async clients are asyncio-only); the ``flowkit runs
query`` and ``runs update`` commands in process.
"""

from __future__ import annotations

import json
import os
import re
import sys
import textwrap
import uuid
from contextlib import asynccontextmanager
from datetime import timedelta
from typing import TYPE_CHECKING, Any

import anyio
import pytest

import flowkit
from flowkit import ConfigurationError, ResultTimeout, ResumeError, RunStatus, UpdateRejected
from flowkit.cli._main import main as flowkit_main
from flowkit.stores import SQLiteStore
from flowkit.testing import SimulationError, at, simulate
from flowkit.transports import MemoryTransport

if TYPE_CHECKING:
    from collections.abc import AsyncIterator
    from pathlib import Path

pytestmark = pytest.mark.anyio

REDIS_URL = os.environ.get("FLOWKIT_TEST_REDIS", "redis://127.0.0.1:6379/0")
PG_DSN = os.environ.get("FLOWKIT_TEST_POSTGRES", "postgresql://postgres@127.0.0.1:5432/test")
BOUND = 30.0  # seconds every test certainly finishes within (they take milliseconds)


@flowkit.node
async def price(item: str) -> int:
    return len(item)


@flowkit.flow
async def cart(customer: str) -> list[str]:
    items: list[str] = []
    total = 0
    while len(items) < 3:
        item = await flowkit.flow.wait("add_item")
        total = total + await price(item)
        items.append(item)
    return items


@cart.query
def contents(vars: dict[str, Any]) -> list[str]:
    return list(vars["items"])


@cart.query(name="total")
def total_of(vars: dict[str, Any]) -> int:
    return int(vars["total"])


def not_twice(vars: dict[str, Any], item: str) -> None:
    if item in vars["items"]:
        raise ValueError(f"{item!r} is in the cart already")


@cart.update(validator=not_twice)
def add_item(vars: dict[str, Any], item: str) -> dict[str, Any]:
    return {"items": len(vars["items"]), "total": vars["total"]}


GATES: dict[str, anyio.Event] = {}


@flowkit.node
async def gate(key: str) -> str:
    await GATES[key].wait()
    return key


@flowkit.flow
async def gated(key: str) -> str:
    opened = await gate(key)
    item = await flowkit.flow.wait("add_item")
    return f"{opened}:{item}"


@gated.update(name="add_item")
def add_item_to_gated(vars: dict[str, Any], item: str) -> str:
    return f"took {item}"


class TestRuntime:
    """The in-memory Runtime answers queries and updates on its runs."""

    async def test_a_query_reads_the_runs_variables(self) -> None:
        rt = flowkit.Runtime()
        run = await rt.run(cart, customer="c1")
        await rt.signal(run.run_id, "add_item", "lamp")
        assert (["lamp"], 4) == (
            await rt.query(run.run_id, "contents"),
            await rt.query(run.run_id, "total"),
        )

    async def test_an_update_replies_after_the_flow_took_it(self) -> None:
        rt = flowkit.Runtime()
        run = await rt.run(cart, customer="c1")
        assert {"items": 1, "total": 4} == await rt.update(run.run_id, "add_item", "lamp")
        assert {"items": 2, "total": 7} == await rt.update(run.run_id, "add_item", "rug")
        assert {"items": 3, "total": 12} == await rt.update(run.run_id, "add_item", "chair")
        result = await rt.result(run.run_id)
        assert (RunStatus.COMPLETED, ["lamp", "rug", "chair"]) == (result.status, result.output)
        assert ["lamp", "rug", "chair"] == await rt.query(run.run_id, "contents")

    async def test_a_rejected_update_records_nothing(self, tmp_path: Path) -> None:
        store = SQLiteStore(tmp_path / "runs.db")
        try:
            rt = flowkit.Runtime(store=store)
            run = await rt.run(cart, customer="c1")
            await rt.update(run.run_id, "add_item", "lamp")
            before = (await rt.result(run.run_id)).snapshot(), len(await rt.history(run.run_id))
            with pytest.raises(UpdateRejected, match="'lamp' is in the cart already") as caught:
                await rt.update(run.run_id, "add_item", "lamp")
            after = (await rt.result(run.run_id)).snapshot(), len(await rt.history(run.run_id))
        finally:
            await store.close()
        assert before == after
        assert (run.run_id, "add_item", ValueError) == (
            caught.value.run_id,
            caught.value.name,
            type(caught.value.__cause__),
        )

    async def test_an_update_waits_until_the_run_reaches_its_wait(self) -> None:
        key = uuid.uuid4().hex
        GATES[key] = anyio.Event()
        replies: list[Any] = []
        with anyio.fail_after(BOUND):
            async with flowkit.Runtime() as rt:
                handle = await rt.start(gated, key=key)

                async def update() -> None:
                    replies.append(await rt.update(handle.run_id, "add_item", "lamp"))

                async with anyio.create_task_group() as tg:
                    tg.start_soon(update)
                    await anyio.wait_all_tasks_blocked()
                    assert [] == replies  # the run is still in its gate
                    GATES[key].set()
                result = await handle.result()
        assert (["took lamp"], f"{key}:lamp") == (replies, result.output)

    async def test_concurrent_updates_are_validated_one_after_the_other(self) -> None:
        rt = flowkit.Runtime()
        run = await rt.run(cart, customer="c1")
        outcomes = await _twice(rt, run.run_id, "lamp")
        assert [UpdateRejected, dict] == sorted(map(type, outcomes), key=lambda t: t.__name__)
        assert ["lamp"] == await rt.query(run.run_id, "contents")

    async def test_an_update_gives_up_after_its_timeout_without_recording(self) -> None:
        key = uuid.uuid4().hex
        GATES[key] = anyio.Event()
        with anyio.fail_after(BOUND):
            async with flowkit.Runtime() as rt:
                handle = await rt.start(gated, key=key)
                with pytest.raises(ResultTimeout, match=re.escape("flow.wait('add_item')")):
                    await rt.update(handle.run_id, "add_item", "lamp", timeout=0.05)
                snapshot = (await rt.result(handle.run_id)).snapshot()
                GATES[key].set()
                await handle.cancel()
        assert {} == snapshot["sections"].get("deliveries", {})
        assert {} == snapshot["sections"].get("signals", {})

    async def test_unknown_names_runs_and_finished_runs_are_refused(self) -> None:
        rt = flowkit.Runtime()
        run = await rt.run(cart, customer="c1")
        with pytest.raises(ResumeError, match=r"no query named 'nope'.*'contents', 'total'"):
            await rt.query(run.run_id, "nope")
        with pytest.raises(ResumeError, match=r"no update named 'nope'.*'add_item'"):
            await rt.update(run.run_id, "nope", 1)
        with pytest.raises(ResumeError, match="unknown run 'missing'"):
            await rt.query("missing", "contents")
        for item in ("a", "b", "c"):
            await rt.update(run.run_id, "add_item", item)
        with pytest.raises(ResumeError, match="already finished \\(completed\\)"):
            await rt.update(run.run_id, "add_item", "d")

    async def test_a_process_without_the_flow_says_how_to_register_it(self, tmp_path: Path) -> None:
        store = SQLiteStore(tmp_path / "runs.db")
        try:
            run = await flowkit.Runtime(store=store).run(cart, customer="c1")
            with pytest.raises(ResumeError, match="register the flow definition"):
                await flowkit.Runtime(store=store).query(run.run_id, "contents")
            other = flowkit.Runtime(store=store, flows=[cart])  # another process, say
            reply = await other.update(run.run_id, "add_item", "lamp")
            answer = await other.query(run.run_id, "contents")
        finally:
            await store.close()
        assert ({"items": 1, "total": 4}, ["lamp"]) == (reply, answer)


class TestDeclaring:
    """Handlers are checked where they are declared."""

    def test_an_async_handler_is_refused(self) -> None:
        async def later(vars: dict[str, Any]) -> int:
            return 1

        with pytest.raises(ConfigurationError, match="plain def function"):
            cart.query(later)

    def test_a_handler_of_the_wrong_arity_is_refused(self) -> None:
        with pytest.raises(ConfigurationError, match="function of 2 argument"):
            cart.update(lambda vars: vars)  # type: ignore[arg-type,misc]

    def test_a_name_used_twice_is_refused(self) -> None:
        with pytest.raises(ConfigurationError, match="a name not used yet"):
            cart.query(name="contents")(lambda vars: vars)

    async def test_an_update_without_its_wait_is_refused(self) -> None:
        @flowkit.flow
        async def plain(x: int) -> int:
            return x

        @plain.update
        def bump(vars: dict[str, Any], data: Any) -> Any:
            return data

        rt = flowkit.Runtime()
        run = await rt.run(plain, x=1)
        with pytest.raises(ResumeError, match=re.escape("no flow.wait('bump')")):
            await rt.update(run.run_id, "bump", 1)


class TestSimulate:
    """``simulate()`` sends scripted updates on virtual time and answers queries."""

    def test_updates_are_validated_and_answered_in_order(self) -> None:
        script = ["lamp", "lamp", at("2h", "rug"), at("3h", "chair")]
        sim = simulate(cart, customer="c1", updates={"add_item": script})
        replies = [(o.data, o.at, o.reply, type(o.error)) for o in sim.updates]
        assert [
            ("lamp", timedelta(0), {"items": 1, "total": 4}, type(None)),
            ("lamp", timedelta(0), None, UpdateRejected),
            ("rug", timedelta(hours=2), {"items": 2, "total": 7}, type(None)),
            ("chair", timedelta(hours=3), {"items": 3, "total": 12}, type(None)),
        ] == replies
        assert (RunStatus.COMPLETED, ["lamp", "rug", "chair"], 12) == (
            sim.status,
            sim.output,
            sim.query("total"),
        )

    def test_an_update_the_run_never_takes_is_refused(self) -> None:
        sim = simulate(
            cart,
            customer="c1",
            updates={"add_item": ["a", "b", "c", "d"]},
        )
        assert (RunStatus.COMPLETED, ResumeError) == (sim.status, type(sim.updates[-1].error))
        assert "finished (completed) before it waited for 'add_item'" in str(sim.updates[-1].error)

    def test_an_unknown_query_is_a_simulation_error(self) -> None:
        sim = simulate(cart, customer="c1", updates={"add_item": ["a", "b", "c"]})
        with pytest.raises(SimulationError, match="no query named 'nope'"):
            sim.query("nope")

    def test_updates_need_the_one_process_simulator(self) -> None:
        with pytest.raises(SimulationError, match="leave out workers= and faults="):
            simulate(cart, customer="c1", updates={"add_item": ["a"]}, workers=2)


CLIENT_CASES = [
    pytest.param(("sqlite", "asyncio"), id="sqlite-asyncio"),
    pytest.param(("sqlite", "trio"), id="sqlite-trio"),
    pytest.param(("postgres", "asyncio"), id="postgres", marks=pytest.mark.asyncio_only),
    pytest.param(("redis", "asyncio"), id="redis", marks=pytest.mark.asyncio_only),
]


class TestClient:
    """A Client answers queries and updates on runs its workers execute."""

    @pytest.fixture(params=CLIENT_CASES)
    def case(self, request: pytest.FixtureRequest) -> tuple[str, str]:
        return request.param  # type: ignore[no-any-return]

    @pytest.fixture
    def anyio_backend(self, case: tuple[str, str]) -> str:
        return case[1]

    @pytest.fixture
    async def store(self, case: tuple[str, str], tmp_path: Path) -> AsyncIterator[Any]:
        if case[0] == "sqlite":
            sqlite = SQLiteStore(tmp_path / "runs.db")
            yield sqlite
            await sqlite.close()
            return
        name = f"fk_updates_{uuid.uuid4().hex[:12]}"
        if case[0] == "redis":
            async with _redis_store(name) as redis:
                yield redis
            return
        import psycopg
        from psycopg import sql

        from flowkit.stores import PostgresStore

        postgres = PostgresStore(PG_DSN, schema=name)
        yield postgres
        await postgres.close()
        async with await psycopg.AsyncConnection.connect(PG_DSN, autocommit=True) as conn:
            await conn.execute(
                sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(name))
            )

    async def test_queries_and_updates_through_a_worker(self, store: Any) -> None:
        transport = MemoryTransport()
        worker = flowkit.Worker([cart], transport, store, poll_interval=0.05)
        client = flowkit.Client(transport, store, flows=[cart])
        with anyio.fail_after(BOUND):
            async with anyio.create_task_group() as tg:
                await tg.start(worker.run)
                handle = await client.start(cart, customer="c1")
                first = await client.update(handle.run_id, "add_item", "lamp")
                with pytest.raises(UpdateRejected):
                    await client.update(handle.run_id, "add_item", "lamp")
                middle = await client.query(handle.run_id, "contents")
                await client.update(handle.run_id, "add_item", "rug")
                last = await client.update(handle.run_id, "add_item", "chair")
                result = await handle.result()
                finished = await client.query(handle.run_id, "total")
                with pytest.raises(ResumeError, match="already finished"):
                    await client.update(handle.run_id, "add_item", "sofa")
                tg.cancel_scope.cancel()
        await transport.close()
        assert {"items": 1, "total": 4} == first
        assert ["lamp"] == middle
        assert {"items": 3, "total": 12} == last
        assert (RunStatus.COMPLETED, ["lamp", "rug", "chair"], 12) == (
            result.status,
            result.output,
            finished,
        )

    async def test_an_update_waits_for_the_workers_to_reach_its_wait(self, store: Any) -> None:
        key = uuid.uuid4().hex
        GATES[key] = anyio.Event()
        transport = MemoryTransport()
        worker = flowkit.Worker([gated], transport, store, poll_interval=0.05)
        client = flowkit.Client(transport, store, flows=[gated])
        replies: list[Any] = []
        with anyio.fail_after(BOUND):
            async with anyio.create_task_group() as tg:
                await tg.start(worker.run)
                handle = await client.start(gated, key=key)

                async def update() -> None:
                    replies.append(await client.update(handle.run_id, "add_item", "lamp"))

                async with anyio.create_task_group() as updates:
                    updates.start_soon(update)
                    await anyio.wait_all_tasks_blocked()
                    assert [] == replies  # the worker is still in the gate
                    GATES[key].set()
                result = await handle.result()
                tg.cancel_scope.cancel()
        await transport.close()
        assert (["took lamp"], f"{key}:lamp") == (replies, result.output)

    async def test_concurrent_updates_are_validated_one_after_the_other(self, store: Any) -> None:
        transport = MemoryTransport()
        worker = flowkit.Worker([cart], transport, store, poll_interval=0.05)
        clients = [flowkit.Client(transport, store, flows=[cart]) for _ in range(2)]
        with anyio.fail_after(BOUND):
            async with anyio.create_task_group() as tg:
                await tg.start(worker.run)
                handle = await clients[0].start(cart, customer="c1")
                outcomes = await _twice(clients, handle.run_id, "lamp")
                contents = await clients[1].query(handle.run_id, "contents")
                tg.cancel_scope.cancel()
        await transport.close()
        assert [UpdateRejected, dict] == sorted(map(type, outcomes), key=lambda t: t.__name__)
        assert ["lamp"] == contents

    async def test_a_client_without_the_flow_says_how_to_register_it(self, store: Any) -> None:
        transport = MemoryTransport()
        handle = await flowkit.Client(transport, store, flows=[cart]).start(cart, customer="c")
        with pytest.raises(ResumeError, match="Client\\(transport, store, flows=\\[cart\\]\\)"):
            await flowkit.Client(transport, store).query(handle.run_id, "contents")
        await transport.close()


async def _twice(callers: Any, run_id: str, item: str) -> list[Any]:
    """Two ``update(run_id, "add_item", item)`` at once (from two callers, if a list);
    each one's reply or error."""
    pair = callers if isinstance(callers, list) else [callers, callers]
    outcomes: list[Any] = []

    async def one(caller: Any) -> None:
        try:
            outcomes.append(await caller.update(run_id, "add_item", item, timeout=BOUND))
        except UpdateRejected as exc:
            outcomes.append(exc)

    async with anyio.create_task_group() as tg:
        for caller in pair:
            tg.start_soon(one, caller)
    return outcomes


@asynccontextmanager
async def _redis_store(prefix: str) -> AsyncIterator[Any]:
    import redis.asyncio

    from flowkit.stores import RedisStore

    store = RedisStore(REDIS_URL, prefix=prefix)
    try:
        yield store
    finally:
        await store.close()
        client = redis.asyncio.Redis.from_url(REDIS_URL)
        keys = [key async for key in client.scan_iter(f"{prefix}:*")]
        if keys:
            await client.delete(*keys)
        await client.aclose()


APP = """
    from flowkit import flow

    @flow
    async def basket() -> list:
        items = []
        while True:
            item = await flow.wait("add")
            items.append(item)

    @basket.query
    def contents(vars):
        return vars["items"]

    def new_item(vars, item):
        if item in vars["items"]:
            raise ValueError(f"{item} is in the basket already")

    @basket.update(validator=new_item)
    def add(vars, item):
        return len(vars["items"])
"""


class TestCommand:
    """``flowkit runs query`` and ``runs update`` print the answer, or the reply, as JSON."""

    def test_runs_query(
        self,
        tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str],
    ) -> None:
        (tmp_path / "basket_app.py").write_text(textwrap.dedent(APP))
        monkeypatch.syspath_prepend(str(tmp_path))
        monkeypatch.delitem(sys.modules, "basket_app", raising=False)
        import basket_app

        url = f"sqlite:///{tmp_path / 'runs.db'}"
        run_id = anyio.run(_basket_run, tmp_path / "runs.db", basket_app)
        capsys.readouterr()
        status = flowkit_main(
            ["runs", "query", run_id, "contents", "--store", url, "--app", "basket_app"]
        )
        answer = json.loads(capsys.readouterr().out)
        missing = flowkit_main(["runs", "query", run_id, "contents", "--store", url])
        error = capsys.readouterr().err
        assert (0, ["lamp"]) == (status, answer)
        assert 2 == missing
        assert "--app with the module defining it" in error

    def test_runs_update(
        self,
        tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str],
    ) -> None:
        """The basket takes an item without running a node, so no worker is needed."""
        (tmp_path / "basket_app.py").write_text(textwrap.dedent(APP))
        monkeypatch.syspath_prepend(str(tmp_path))
        monkeypatch.delitem(sys.modules, "basket_app", raising=False)
        import basket_app

        url = f"sqlite:///{tmp_path / 'runs.db'}"
        run_id = anyio.run(_basket_run, tmp_path / "runs.db", basket_app)
        capsys.readouterr()
        common = ["--store", url, "--transport", url, "--app", "basket_app"]
        status = flowkit_main(["runs", "update", run_id, "add", "--data", '"rug"', *common])
        reply = json.loads(capsys.readouterr().out)
        refused = flowkit_main(["runs", "update", run_id, "add", "--data", '"rug"', *common])
        error = capsys.readouterr().err
        assert (0, 2) == (status, reply)
        assert 2 == refused
        assert "rug is in the basket already" in error


async def _basket_run(path: Path, app: Any) -> str:
    store = SQLiteStore(path)
    try:
        rt = flowkit.Runtime(store=store)
        run = await rt.run(app.basket)
        await rt.signal(run.run_id, "add", "lamp")
    finally:
        await store.close()
    return run.run_id

"""Async completion (completion tokens, ``flowkit.PENDING``) and heartbeat details.

A node hands its token to an external "system" (a task of the test) and returns
pending; the system completes or fails it through the Runtime or the Client. Runs
on the in-memory Runtime (without and with a SQLiteStore), under ``simulate()``
and on an in-process Worker (MemoryTransport + SQLiteStore), on asyncio and trio;
the Worker also on the real PostgreSQL and Redis on loopback (asyncio only: their
clients are).
"""

from __future__ import annotations

import uuid
from collections import defaultdict
from contextlib import asynccontextmanager
from functools import partial
from typing import TYPE_CHECKING, Any

import anyio
import pytest

import flowkit
from flowkit import CompletionTimeout, CompletionTokenError, RunStatus, flow, node
from flowkit._clock import use_clock
from flowkit.blueprint import Blueprint, NodeConfig, NodeSpec
from flowkit.core import _protocol as p
from flowkit.core._machine import handle_event, start_run
from flowkit.core._program import Program
from flowkit.core._state import RunState
from flowkit.shell._completion import CompletionToken
from flowkit.shell._durable import index_ops
from flowkit.stores import MemoryStore, SQLiteStore
from flowkit.testing import at, replay_async, simulate_async
from flowkit.transports import MemoryTransport

if TYPE_CHECKING:
    from collections.abc import AsyncIterator
    from pathlib import Path

    from flowkit import Event

from test_faults_optimistic_store import (
    fresh_store,  # a PostgreSQL schema or Redis prefix of its own
)

pytestmark = pytest.mark.anyio

TOKENS: dict[str, str] = {}
"""key -> the token the node of that key handed out last."""
ATTEMPTS: defaultdict[str, int] = defaultdict(int)
BEATS: dict[str, list[Any]] = {}
"""key -> what each attempt read from ``context().last_heartbeat``."""


@node(retries=1)
async def charge(key: str) -> int:
    """Hands its token to the "payment system" and returns pending."""
    ctx = flowkit.context()
    ATTEMPTS[key] += 1
    BEATS.setdefault(key, []).append(ctx.last_heartbeat)
    ctx.heartbeat({"attempt": ctx.attempt})
    TOKENS[key] = ctx.completion_token()
    return flowkit.PENDING  # type: ignore[return-value]


@node
async def receipt(charged: int) -> str:
    return f"charged {charged}"


@flow
async def pay(key: str) -> str:
    return await receipt(await charge(key))


@node(retries=2)
async def resumable(key: str) -> int:
    """Counts to 3, one step per attempt; each attempt resumes from the last heartbeat."""
    ctx = flowkit.context()
    ATTEMPTS[key] += 1
    BEATS.setdefault(key, []).append(ctx.last_heartbeat)
    done = (ctx.last_heartbeat or {}).get("done", 0) + 1
    ctx.heartbeat({"done": done})
    if done < 3:
        raise ConnectionError(f"lost the line after step {done}")
    return done


@flow
async def count(key: str) -> int:
    return await resumable(key)


@node
async def lazy(key: str) -> int:
    return flowkit.PENDING  # type: ignore[return-value]


@flow
async def forgets_the_token(key: str) -> int:
    return await lazy(key)


@node
async def patient(key: str) -> int:
    TOKENS[key] = flowkit.context().completion_token(timeout="1h")
    return flowkit.PENDING  # type: ignore[return-value]


@flow
async def pay_within_an_hour(key: str) -> int:
    return await patient(key)


FLOWS = [pay, count, forgets_the_token, pay_within_an_hour]


def _key(name: str) -> str:
    key = f"{name}-{uuid.uuid4().hex[:8]}"
    ATTEMPTS.pop(key, None)
    return key


def _message(result: Any) -> str:
    return str(result.error or "")


# -- the in-memory Runtime ------------------------------------------------------------------
@asynccontextmanager
async def _runtime(tmp_path: Path, stored: bool) -> AsyncIterator[flowkit.Runtime]:
    store = SQLiteStore(tmp_path / "runs.db") if stored else None
    async with flowkit.Runtime(store=store, flows=FLOWS) as rt:
        yield rt


@pytest.fixture(params=["memory", "sqlite"])
def stored(request: pytest.FixtureRequest) -> bool:
    return request.param == "sqlite"


class TestRuntime:
    """A deferred node on the in-memory Runtime, without and with a store."""

    async def test_an_external_system_completes_the_node(
        self, tmp_path: Path, stored: bool
    ) -> None:
        key = _key("rt-done")
        send, receive = anyio.create_memory_object_stream[str](1)
        async with _runtime(tmp_path, stored) as rt:
            completed: list[flowkit.RunResult] = []

            async def payment_system() -> None:
                async with receive:
                    token = await receive.receive()
                    completed.append(await rt.complete(token, 42))

            async with anyio.create_task_group() as tg:
                tg.start_soon(payment_system)
                awaiting = await rt.run(pay, key=key)
                assert RunStatus.AWAITING == awaiting.status
                assert "completion token" in awaiting.resume_hint
                assert "awaiting" == awaiting.path()["charge"]
                async with send:
                    await send.send(TOKENS[key])
            result = await rt.result(awaiting.run_id)
        assert [(result.status, result.output)] == [(r.status, r.output) for r in completed]
        assert (RunStatus.COMPLETED, "charged 42", 1) == (
            result.status,
            result.output,
            ATTEMPTS[key],
        )

    async def test_fail_retries_the_node_by_its_policy(self, tmp_path: Path, stored: bool) -> None:
        key = _key("rt-fail")
        async with _runtime(tmp_path, stored) as rt:
            first = await rt.run(pay, key=key)
            first_token = TOKENS[key]
            retried = await rt.fail(first_token, ConnectionError("card network down"))
            assert (RunStatus.AWAITING, 2) == (retried.status, ATTEMPTS[key])
            assert first_token != TOKENS[key]  # the new attempt handed out its own
            with pytest.raises(CompletionTokenError, match="no longer open"):
                await rt.complete(first_token, 1)  # the failed attempt's token is stale
            done = await rt.complete(TOKENS[key], 7)
            assert (RunStatus.COMPLETED, "charged 7") == (done.status, done.output)
            failed = await rt.run(pay, key=_key("rt-fail-twice"))
            await rt.fail(TOKENS[failed.state["key"]], "declined")
            final = await rt.fail(TOKENS[failed.state["key"]], "declined again")
        assert first.run_id != failed.run_id
        assert RunStatus.FAILED == final.status
        assert "declined again" in _message(final)

    async def test_heartbeat_details_reach_the_next_attempt(
        self, tmp_path: Path, stored: bool
    ) -> None:
        key = _key("rt-beat")
        async with _runtime(tmp_path, stored) as rt:
            result = await rt.run(count, key=key)
        assert (RunStatus.COMPLETED, 3) == (result.status, result.output)
        assert [None, {"done": 1}, {"done": 2}] == BEATS[key]

    async def test_heartbeat_recorded_before_deferring_survives_a_fail(
        self, tmp_path: Path, stored: bool
    ) -> None:
        key = _key("rt-beat-defer")
        async with _runtime(tmp_path, stored) as rt:
            await rt.run(pay, key=key)
            await rt.fail(TOKENS[key], "try again")
        assert [None, {"attempt": 1}] == BEATS[key]

    async def test_pending_without_a_token_fails_the_node_at_once(
        self, tmp_path: Path, stored: bool
    ) -> None:
        async with _runtime(tmp_path, stored) as rt:
            result = await rt.run(forgets_the_token, key="x")
        assert RunStatus.FAILED == result.status
        assert "without taking a completion token" in _message(result)


class TestTokens:
    """Malformed, unknown, altered and stale tokens are refused with what to do."""

    async def test_bad_tokens(self, tmp_path: Path) -> None:
        key = _key("bad")
        async with _runtime(tmp_path, True) as rt:
            await rt.run(pay, key=key)
            token = TOKENS[key]
            parsed = CompletionToken.parse(token)
            altered = CompletionToken(parsed.run_id, parsed.dispatch_id, 1, "guessed").encode()
            unknown = CompletionToken("no-such-run", parsed.dispatch_id, 1, "x").encode()
            cases = {
                "not-a-token": "not a flowkit completion token",
                "fk1.%%%": "malformed",
                "fk1." + "e30": "malformed",  # {} : no fields
                altered: "does not match",
                unknown: "unknown run",
            }
            for bad, reason in cases.items():
                with pytest.raises(CompletionTokenError, match=reason) as caught:
                    await rt.complete(bad, 1)
                assert isinstance(caught.value, flowkit.ResumeError)
            done = await rt.complete(token, 5)
            with pytest.raises(CompletionTokenError, match="has finished"):
                await rt.complete(token, 5)
        assert (RunStatus.COMPLETED, "charged 5") == (done.status, done.output)

    def test_a_token_names_its_run_dispatch_and_attempt(self) -> None:
        token = CompletionToken.new("run-1", "charge@1.2", 2)
        parsed = CompletionToken.parse(token.encode())
        assert token == parsed
        assert token.encode().startswith("fk1.")
        assert token.nonce != CompletionToken.new("run-1", "charge@1.2", 2).nonce


# -- simulate() -----------------------------------------------------------------------------------
class TestSimulate:
    """Scripted completions on virtual time; an uncompleted deferral leaves the run awaiting."""

    async def test_nobody_completes_it(self) -> None:
        sim = await simulate_async(pay, key=_key("sim-none"))
        assert RunStatus.AWAITING == sim.status
        assert ["deferred"] == [entry.status for entry in sim.trace]

    async def test_completed_an_hour_later(self) -> None:
        sim = await simulate_async(pay, key=_key("sim-at"), completions={charge: at("1h", 9)})
        assert (RunStatus.COMPLETED, "charged 9", 3600.0) == (
            sim.status,
            sim.output,
            sim.elapsed.total_seconds(),
        )

    async def test_failed_then_completed(self) -> None:
        key = _key("sim-fail")
        script = {"charge": [ConnectionError("down"), 3]}
        sim = await simulate_async(pay, key=key, completions=script)
        assert (RunStatus.COMPLETED, "charged 3", 2) == (sim.status, sim.output, ATTEMPTS[key])
        assert [None, {"attempt": 1}] == BEATS[key]

    async def test_completion_timeout_fails_the_node(self) -> None:
        sim = await simulate_async(pay_within_an_hour, key=_key("sim-timeout"))
        assert RunStatus.FAILED == sim.status
        assert "failed on attempt 1" in str(sim.error)
        assert "not completed before its completion token's timeout" in str(sim.error)
        assert isinstance(CompletionTimeout("n", "n@1.1"), TimeoutError)
        assert 3600.0 == sim.elapsed.total_seconds()

    async def test_in_time_beats_the_timeout(self) -> None:
        script = {patient: at("59m", 1)}
        sim = await simulate_async(pay_within_an_hour, key=_key("sim-in-time"), completions=script)
        assert (RunStatus.COMPLETED, 1) == (sim.status, sim.output)

    async def test_heartbeats_under_simulate(self) -> None:
        key = _key("sim-beat")
        sim = await simulate_async(count, key=key)
        assert (RunStatus.COMPLETED, 3) == (sim.status, sim.output)
        assert [None, {"done": 1}, {"done": 2}] == BEATS[key]


# -- the distributed Worker -------------------------------------------------------------------
LEASE = 1.0


@asynccontextmanager
async def _worker(store: Any) -> AsyncIterator[tuple[flowkit.Worker, flowkit.Client, Any]]:
    transport = MemoryTransport(visibility_timeout=LEASE)
    worker = flowkit.Worker(FLOWS, transport, store, lease=LEASE, poll_interval=0.05)
    client = flowkit.Client(transport, store, flows=FLOWS, lease=LEASE)
    deferred = _Latch(worker)
    with anyio.fail_after(30):
        async with anyio.create_task_group() as tg:
            await tg.start(worker.run)
            yield worker, client, deferred
            tg.cancel_scope.cancel()
    await transport.close()


class _Latch:
    """Waits for the worker's next ``node:deferred`` event (committed by then)."""

    def __init__(self, worker: flowkit.Worker) -> None:
        self.seen = 0
        self.changed = anyio.Event()
        worker.events.subscribe(self._on, types={"node:deferred"})

    def _on(self, event: Event) -> None:
        self.seen += 1
        self.changed.set()

    async def wait(self, count: int) -> None:
        while self.seen < count:
            self.changed = anyio.Event()
            await self.changed.wait()


async def _deferred_then_completed(store: Any) -> None:
    key = _key("wk")
    async with _worker(store) as (worker, client, deferred):
        handle = await client.start(pay, key=key)
        await deferred.wait(1)
        awaiting = await client.result(handle.run_id)
        assert RunStatus.AWAITING == awaiting.status
        described = await client.describe(handle.run_id)
        assert ["deferred"] == [row.status for row in described.nodes if row.node_id == "charge"]
        # no lease is left to run out: a reconciler far in the future republishes nothing
        assert [] == await store.expired_leases(flowkit._clock.now() + 3600)
        with use_clock(lambda: 10**10):
            await worker._reconcile()  # (the loop's own tick, an hour later)
        assert 1 == ATTEMPTS[key]
        await client.fail(TOKENS[key], ConnectionError("card network down"))
        await deferred.wait(2)
        assert [None, {"attempt": 1}] == BEATS[key]
        await client.complete(TOKENS[key], 12)
        result = await client.wait(handle.run_id)
        kinds = [event.kind for event in await client.history(handle.run_id)]
    assert (RunStatus.COMPLETED, "charged 12", 2) == (result.status, result.output, ATTEMPTS[key])
    assert 2 == kinds.count("node.deferred")


class TestWorker:
    """An in-process Worker, MemoryTransport + SQLiteStore, with one-second leases."""

    async def test_deferred_dispatch_is_never_republished(self, tmp_path: Path) -> None:
        await _deferred_then_completed(SQLiteStore(tmp_path / "runs.db"))

    async def test_on_a_memory_store(self) -> None:
        await _deferred_then_completed(MemoryStore())

    async def test_refusals_on_the_client(self, tmp_path: Path) -> None:
        key = _key("wk-bad")
        async with _worker(SQLiteStore(tmp_path / "runs.db")) as (_, client, deferred):
            handle = await client.start(pay, key=key)
            await deferred.wait(1)
            with pytest.raises(CompletionTokenError, match="not a flowkit completion token"):
                await client.complete("nope", 1)
            unknown = CompletionToken("no-such-run", "charge@1.1", 1, "x").encode()
            with pytest.raises(CompletionTokenError, match="unknown run"):
                await client.complete(unknown, 1)
            await client.complete(TOKENS[key], 1)
            await client.wait(handle.run_id)
            with pytest.raises(CompletionTokenError, match="has finished"):
                await client.fail(TOKENS[key], "too late")

    async def test_heartbeats_on_the_worker(self, tmp_path: Path) -> None:
        key = _key("wk-beat")
        async with _worker(SQLiteStore(tmp_path / "runs.db")) as (_, client, _deferred):
            result = await client.run(count, key=key)
        assert (RunStatus.COMPLETED, 3) == (result.status, result.output)
        assert [None, {"done": 1}, {"done": 2}] == BEATS[key]


@pytest.mark.asyncio_only
@pytest.mark.parametrize("anyio_backend", ["asyncio"])
@pytest.mark.parametrize("kind", ["postgres", "redis"])
class TestServerStores:
    """The same on the real PostgreSQL and Redis (asyncio only)."""

    async def test_deferred_then_completed(self, kind: str) -> None:
        async with fresh_store(kind) as store:
            await _deferred_then_completed(store)


@node
async def long_copy(key: str) -> int:
    """Records progress, then waits until the test saw it committed."""
    flowkit.context().heartbeat({"copied": 500})
    await RELEASE[key].wait()
    return 500


@flow
async def copy_table(key: str) -> int:
    return await long_copy(key)


RELEASE: dict[str, anyio.Event] = {}


class TestWorkerHeartbeats:
    """A long node's details are committed with its lease heartbeats, while it runs."""

    async def test_details_reach_the_store_while_the_node_runs(self, tmp_path: Path) -> None:
        key = _key("wk-long")
        RELEASE[key] = anyio.Event()
        store = SQLiteStore(tmp_path / "runs.db")
        transport = MemoryTransport(visibility_timeout=LEASE)
        flows = [copy_table]
        worker = flowkit.Worker(flows, transport, store, lease=LEASE, poll_interval=0.05)
        client = flowkit.Client(transport, store, flows=flows, lease=LEASE)
        committed = anyio.Event()
        worker.events.subscribe(lambda _: committed.set(), types={"node:heartbeat"})
        with anyio.fail_after(30):
            async with anyio.create_task_group() as tg:
                await tg.start(worker.run)
                handle = await client.start(copy_table, key=key)
                await committed.wait()
                loaded = await store.load(handle.run_id)
                assert loaded is not None
                (record,) = loaded[0].sections["dispatches"].values()
                RELEASE[key].set()
                result = await client.wait(handle.run_id)
                history = await client.history(handle.run_id)
                tg.cancel_scope.cancel()
        await transport.close()
        assert {"copied": 500} == record["heartbeat"]
        assert (RunStatus.COMPLETED, 500) == (result.status, result.output)
        beats = [event.data for event in history if event.kind == "node.heartbeat"]
        assert [] != beats
        assert {"copied": 500} == beats[0]["details"]


class TestHistory:
    """A run that deferred, heartbeat and was completed replays against its flow."""

    async def test_replays(self, tmp_path: Path) -> None:
        key = _key("replay")
        store = SQLiteStore(tmp_path / "runs.db")
        async with flowkit.Runtime(store=store, flows=FLOWS) as rt:
            started = await rt.run(pay, key=key)
            await rt.fail(TOKENS[key], "try again")
            await rt.complete(TOKENS[key], 3)
            history = await rt.history(started.run_id)
            replayed = await replay_async(started.run_id, pay, store=store)
        kinds = [event.kind for event in history]
        assert 2 == kinds.count("node.deferred")
        assert "node.failed" in kinds
        assert (True, None) == (replayed.ok, replayed.divergence)


# -- the core ---------------------------------------------------------------------------------
def _core_run(**node_config: Any) -> tuple[Any, RunState, str]:
    """A one-node blueprint started in the core: (program, state, the dispatch's id)."""
    blueprint = Blueprint(
        id="one",
        nodes=(NodeSpec("a", "call", uses="work", config=NodeConfig(**node_config)),),
        edges=(),
    )
    program = Program(blueprint, {"work": lambda: None})
    state = RunState("run-1")
    commands = start_run(program, state, {})
    (execute,) = [c for c in commands if isinstance(c, p.ExecuteNode)]
    return program, state, execute.dispatch_id


class TestCore:
    """The core keeps a deferred dispatch open, awaiting, with no lease; details carry over."""

    def test_deferral_awaits_without_a_lease(self) -> None:
        program, state, dispatch_id = _core_run()
        state.take_delta()
        commands = handle_event(program, state, p.NodeDeferred(dispatch_id, "n0nce", 60.0))
        ops = index_ops(state.take_delta(), commands, now=0.0, lease_seconds=30.0)
        assert RunStatus.AWAITING.value == state.header["status"]
        assert "n0nce" == state.sections["dispatches"][dispatch_id]["deferred"]
        assert ([], [dispatch_id]) == (ops.leases, ops.leases_done)
        assert [(f"completion:{dispatch_id}", 60.0)] == ops.timers
        again = handle_event(program, state, p.NodeDeferred(dispatch_id, "other"))
        assert [] == [c for c in again if not isinstance(c, p.Note)]  # a duplicate report
        done = handle_event(program, state, p.NodeCompleted(dispatch_id, 1))
        assert [p.CancelTimer(f"completion:{dispatch_id}")] == [
            c for c in done if isinstance(c, p.CancelTimer)
        ]
        assert RunStatus.COMPLETED.value == state.header["status"]

    def test_details_ride_into_a_retry_after_a_backoff(self) -> None:
        program, state, dispatch_id = _core_run(retries=1, backoff=flowkit.Backoff(initial=5))
        handle_event(program, state, p.NodeHeartbeat(dispatch_id, {"row": 7}))
        error = {"type": "builtins.OSError", "mro": ["builtins.OSError"], "message": "x"}
        commands = handle_event(program, state, p.NodeFailed(dispatch_id, error))
        (timer,) = [c for c in commands if isinstance(c, p.StartTimer)]
        commands = handle_event(program, state, p.TimerFired(timer.timer_id))
        (retry,) = [c for c in commands if isinstance(c, p.ExecuteNode)]
        assert {"row": 7} == state.sections["dispatches"][retry.dispatch_id]["heartbeat"]

    def test_the_completion_timeout_fails_the_dispatch(self) -> None:
        program, state, dispatch_id = _core_run()
        handle_event(program, state, p.NodeDeferred(dispatch_id, "n", 1.0))
        handle_event(program, state, p.TimerFired(f"completion:{dispatch_id}"))
        assert RunStatus.FAILED.value == state.header["status"]
        assert "completion token's timeout" in state.header["error"]["message"]


class TestRuntimeHeartbeats:
    """A stored run's long node commits its details while it runs (throttled)."""

    async def test_details_reach_the_store_while_the_node_runs(
        self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        from flowkit.runtime import _driver

        monkeypatch.setattr(_driver, "HEARTBEAT_EVERY", 0.0)  # every heartbeat is due
        key = _key("rt-long")
        RELEASE[key] = anyio.Event()
        store = SQLiteStore(tmp_path / "runs.db")
        async with flowkit.Runtime(store=store, flows=[copy_table]) as rt:
            committed = anyio.Event()
            rt.events.subscribe(lambda _: committed.set(), types={"node:heartbeat"})
            async with anyio.create_task_group() as tg:
                tg.start_soon(partial(rt.run, copy_table, run_id=key, key=key))
                await committed.wait()
                loaded = await store.load(key)
                RELEASE[key].set()
            result = await rt.result(key)
        assert loaded is not None
        (record,) = loaded[0].sections["dispatches"].values()
        assert {"copied": 500} == record["heartbeat"]
        assert (RunStatus.COMPLETED, 500) == (result.status, result.output)

    async def test_short_nodes_write_no_heartbeat(self, tmp_path: Path) -> None:
        key = _key("rt-short")
        store = SQLiteStore(tmp_path / "runs.db")
        async with flowkit.Runtime(store=store, flows=FLOWS) as rt:
            result = await rt.run(count, key=key)
            history = await rt.history(result.run_id)
        assert (RunStatus.COMPLETED, 3) == (result.status, result.output)
        assert [] == [event for event in history if event.kind == "node.heartbeat"]
        assert [None, {"done": 1}, {"done": 2}] == BEATS[key]

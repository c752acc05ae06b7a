"""Retrying a failed run: it resumes where it failed, with fresh attempts.

The failed node runs again (attempt 1, a full retry budget, the same
idempotency key); so does whatever else stood when the run failed. Nodes that
completed are not run again. On the runtime (no store, MemoryStore,
SQLiteStore) and on workers (memory and SQLite queues with their stores),
asyncio and trio.
"""

from __future__ import annotations

from collections import defaultdict
from typing import TYPE_CHECKING, Any

import anyio
import pytest

import flowkit
from flowkit import Flow, ResumeError, RunStatus, Runtime, flow, node
from flowkit.core import _protocol as p
from flowkit.core._machine import handle_event, start_run
from flowkit.core._retry import STANDING, retry_refusal
from flowkit.core._state import RunState
from flowkit.stores import MemoryStore, SQLiteStore
from flowkit.stores import from_url as store_from_url
from flowkit.transports import MemoryTransport
from flowkit.transports import from_url as transport_from_url

if TYPE_CHECKING:
    from pathlib import Path

pytestmark = pytest.mark.anyio

# node name -> [(attempt, idempotency key)] of every execution
RAN: dict[str, list[tuple[int, str]]] = defaultdict(list)
FAILURES: dict[str, int] = {}  # node name (or "square:<item>") -> executions still to fail


@pytest.fixture(autouse=True)
def _reset() -> None:
    RAN.clear()
    FAILURES.clear()


def _executed(name: str) -> None:
    ctx = flowkit.context()
    RAN[name].append((ctx.attempt, ctx.idempotency_key))
    if FAILURES.get(name, 0) > 0:
        FAILURES[name] -= 1
        raise ValueError(f"{name} failed")


@node
async def first(x: int) -> int:
    _executed("first")
    return x + 1


@node
async def flaky(x: int) -> int:
    _executed("flaky")
    return x * 2


@node
async def beside(x: int) -> int:
    _executed("beside")
    return x * 3


@node(retries=1)
async def stubborn(x: int) -> int:
    _executed("stubborn")
    return x + 100


@node
async def square(item: int) -> int:
    _executed(f"square:{item}")
    return item * item


@flow
async def fan(x: int) -> int:
    a = await first(x)
    b, c = await flow.gather(flaky(a), beside(a))
    return b + c


@flow
async def budget(x: int) -> int:
    return await stubborn(await first(x))


@flow
async def mapped(n: int) -> list[int]:
    return await flow.map(square, [0, 1, 2, 3], concurrency=1)


@flow
async def failing_child(x: int) -> int:
    return await flaky(x)


@flow
async def parent(x: int) -> int:
    a = await first(x)
    return await failing_child(a) + 1


@flow
async def times_out() -> Any:
    return await flow.wait("approval", timeout="20ms")


STORES = ["none", "memory", "sqlite"]


@pytest.fixture(params=STORES)
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Any:
    if request.param == "memory":
        return MemoryStore()
    if request.param == "sqlite":
        return SQLiteStore(tmp_path / "runs.db")
    return None


class TestOnTheRuntime:
    async def test_the_failed_node_and_the_work_beside_it_run_again(self, store: Any) -> None:
        FAILURES["flaky"] = 1
        async with Runtime(store=store, flows=[fan]) as rt:
            failed = await rt.run(fan, x=1)
            assert RunStatus.FAILED == failed.status
            retried = await rt.retry(failed.run_id)
            if store is not None:  # the index forgets the failure; the history tells it
                (run,) = (await rt.list_runs()).runs
                assert ("completed", None) == (run.status, run.error_type)
                events = [(e.kind, e.node_id, e.attempt) for e in await rt.history(run.run_id)]
                failed_at = events.index(("run.failed", None, None))
                assert ("run.retried", "flaky", None) == events[failed_at + 1]
                assert ("node.started", "flaky", 1) in events[failed_at:]
                assert ("run.completed", None, None) == events[-1]
        assert (RunStatus.COMPLETED, 2 * 2 + 2 * 3) == (retried.status, retried.output)
        assert 1 == len(RAN["first"]), "a completed node ran again"
        (key,) = {key for _, key in RAN["flaky"]}
        assert [1, 1] == [attempt for attempt, _ in RAN["flaky"]], "attempts are fresh"
        assert key.endswith(":flaky@1"), "the retry keeps the node's idempotency key"
        assert [1] == [attempt for attempt, _ in RAN["beside"]][-1:]

    async def test_a_retry_gets_a_full_retry_budget(self, store: Any) -> None:
        FAILURES["stubborn"] = 2  # attempts 1 and 2: the run fails
        async with Runtime(store=store, flows=[budget]) as rt:
            failed = await rt.run(budget, x=1)
            assert RunStatus.FAILED == failed.status
            FAILURES["stubborn"] = 1  # attempt 1 of the retry fails, its attempt 2 succeeds
            retried = await rt.retry(failed.run_id)
        assert (RunStatus.COMPLETED, 102) == (retried.status, retried.output)
        assert [1, 2, 1, 2] == [attempt for attempt, _ in RAN["stubborn"]]

    async def test_a_failed_map_item_runs_again_and_finished_items_do_not(self, store: Any) -> None:
        FAILURES["square:2"] = 1
        async with Runtime(store=store, flows=[mapped]) as rt:
            failed = await rt.run(mapped, n=4)
            assert RunStatus.FAILED == failed.status
            retried = await rt.retry(failed.run_id)
        assert (RunStatus.COMPLETED, [0, 1, 4, 9]) == (retried.status, retried.output)
        assert 1 == len(RAN["square:0"]) == len(RAN["square:1"]), "finished items ran again"
        assert 2 == len(RAN["square:2"])
        assert 1 == len(RAN["square:3"])  # one at a time: not reached before the failure

    async def test_a_wait_that_timed_out_waits_again(self, store: Any) -> None:
        async with Runtime(store=store, flows=[times_out], poll_interval=0.01) as rt:
            handle = await rt.start(times_out)
            failed = await handle.result(timeout=10)
            assert isinstance(failed.error, flowkit.WaitTimeout)
            retried = await rt.retry(handle.run_id)
            assert ("approval",) == retried.waiting_for
            again = await handle.result(timeout=10)  # its timeout is set again
        assert RunStatus.FAILED == again.status
        assert isinstance(again.error, flowkit.WaitTimeout)

    async def test_a_failed_child_starts_again_as_a_new_child_run(self, store: Any) -> None:
        FAILURES["flaky"] = 1
        async with Runtime(store=store, flows=[parent, failing_child]) as rt:
            failed = await rt.run(parent, x=1)
            assert RunStatus.FAILED == failed.status
            with pytest.raises(ResumeError, match="child run"):
                await rt.retry(_child_of(failed))
            retried = await rt.retry(failed.run_id)
        assert (RunStatus.COMPLETED, 5) == (retried.status, retried.output)
        assert 1 == len(RAN["first"])
        assert 2 == len(RAN["flaky"])

    async def test_runs_that_did_not_fail_are_refused(self, store: Any) -> None:
        async with Runtime(store=store, flows=[fan, times_out]) as rt:
            done = await rt.run(fan, x=1)
            with pytest.raises(ResumeError, match="it is completed; only a failed run"):
                await rt.retry(done.run_id)
            waiting = await rt.start(Flow("w").wait("never"))
            with pytest.raises(ResumeError, match="it is awaiting"):
                await rt.retry(waiting.run_id)
            cancelled = await rt.cancel(waiting.run_id)
            with pytest.raises(ResumeError, match="it is cancelled"):
                await rt.retry(cancelled.run_id)
            with pytest.raises(ResumeError, match="unknown run"):
                await rt.retry("no-such-run")


def _child_of(result: Any) -> str:
    """The id of the (first) child run the parent started."""
    return f"{result.run_id}/failing_child@1"


class TestInTheCore:
    def test_what_a_retry_cannot_resume_is_refused_with_the_reason(self) -> None:
        state = RunState("r", {"header": {"status": "failed", "error": {"message": "stalled"}}})
        assert "an older version ran it" in str(retry_refusal(state))
        empty = {section: {} for section in STANDING}
        state.put("header", "suspended", empty)
        assert "not a node's (stalled); a retry would fail the same way" in str(
            retry_refusal(state)
        )
        state.put("header", "error", {"message": "boom", "node": "n"})
        assert retry_refusal(state) is None

    def test_a_late_report_from_before_the_retry_changes_nothing(self) -> None:
        from flowkit.shell._target import resolve

        program = resolve(fan).program
        state = RunState("r")
        commands = start_run(program, state, {"x": 1})
        (execute,) = [c for c in commands if isinstance(c, p.ExecuteNode)]
        commands = handle_event(program, state, p.NodeCompleted(execute.dispatch_id, 2))
        flaky_run, beside_run = [c for c in commands if isinstance(c, p.ExecuteNode)]
        error = {"type": "builtins.ValueError", "mro": ["builtins.ValueError"], "message": "x"}
        handle_event(program, state, p.NodeFailed(flaky_run.dispatch_id, error, retryable=False))
        assert "failed" == state.header["status"]

        commands = handle_event(program, state, p.RetryRequested())
        again = [c for c in commands if isinstance(c, p.ExecuteNode)]
        assert {flaky_run.node_id, beside_run.node_id} == {c.node_id for c in again}
        assert all(c.dispatch_id.endswith("~1") and 1 == c.attempt for c in again)
        assert {flaky_run.idempotency_key, beside_run.idempotency_key} == {
            c.idempotency_key for c in again
        }
        before = state.to_dict()
        stale = p.NodeFailed(flaky_run.dispatch_id, error, retryable=False)
        assert [] == handle_event(program, state, stale)
        late = p.NodeCompleted(beside_run.dispatch_id, 6)
        assert [] == handle_event(program, state, late)
        assert before == state.to_dict()
        assert "running" == state.header["status"]


WORKER_CASES = ["memory", "sqlite"]


@pytest.mark.parametrize("backend", WORKER_CASES)
async def test_a_client_retries_a_run_the_workers_failed(backend: str, tmp_path: Path) -> None:
    if backend == "memory":
        transport: Any = MemoryTransport()
        store: Any = MemoryStore()
    else:
        transport = transport_from_url(f"sqlite:///{tmp_path / 'queue.db'}")
        store = store_from_url(f"sqlite:///{tmp_path / 'runs.db'}")
    FAILURES["flaky"] = 1
    worker = flowkit.Worker([fan], transport, store, poll_interval=0.05)
    client = flowkit.Client(transport, store, flows=[fan])
    try:
        async with anyio.create_task_group() as tg:
            await tg.start(worker.run)
            failed = await client.run(fan, x=1, timeout=30)
            assert RunStatus.FAILED == failed.status
            await client.retry(failed.run_id)
            done = await client.wait(failed.run_id, timeout=30)
            with pytest.raises(ResumeError, match="only a failed run"):
                await client.retry(failed.run_id)
            tg.cancel_scope.cancel()
    finally:
        await transport.close()
        await store.close()
    assert (RunStatus.COMPLETED, 10) == (done.status, done.output)
    assert 1 == len(RAN["first"])
    assert [1, 1] == [attempt for attempt, _ in RAN["flaky"]]

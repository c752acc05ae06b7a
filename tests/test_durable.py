"""Durable primitives: stores make runs outlive processes; waits, sleeps, subflows, resume."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from typing import TYPE_CHECKING, Any

import anyio
import pytest

import flowkit
from flowkit import Action, Flow, RunStatus
from flowkit.stores import MemoryStore, SQLiteStore

if TYPE_CHECKING:
    from pathlib import Path

STORES = ["none", "memory", "sqlite"]


@pytest.fixture(params=STORES)
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Any:
    if request.param == "memory":
        return MemoryStore()
    if request.param == "sqlite":
        return SQLiteStore(tmp_path / "runs.db")
    return None


async def publish(value: Any = None) -> str:
    return f"published {value}"


async def refund(value: Any = None) -> str:
    return f"refunded {value}"


def review_flow() -> Flow:
    return (
        Flow("review")
        .wait("review")
        .node("publish", publish)
        .node("refund", refund)
        .edge("review", "publish", action="approve")
        .edge("review", "refund", action="reject")
    )


@pytest.mark.anyio
class TestWait:
    """A wait pauses the run until a signal; the signal's action routes."""

    async def test_signal_resumes_with_action(self, store: Any) -> None:
        rt = flowkit.Runtime(store=store)
        result = await rt.run(review_flow())
        assert RunStatus.AWAITING == result.status
        result = await rt.signal(result.run_id, "review", 7, action="reject")
        assert (RunStatus.COMPLETED, "refunded 7") == (result.status, result.output)

    async def test_signal_before_wait_is_buffered(self, store: Any) -> None:
        flow = Flow("late").sleep("nap", duration="1ms").wait("go").node("p", publish)
        flow.edge("nap", "go").edge("go", "p")
        async with flowkit.Runtime(store=store, poll_interval=0.01) as rt:
            handle = await rt.start(flow)
            await rt.signal(handle.run_id, "go", "early")
            result = await handle.result(timeout=10)
        assert "published early" == result.output

    async def test_unknown_wait_name_is_refused(self, store: Any) -> None:
        rt = flowkit.Runtime(store=store)
        result = await rt.run(review_flow())
        with pytest.raises(flowkit.ResumeError, match="no wait named 'nope'"):
            await rt.signal(result.run_id, "nope", 1)

    async def test_unknown_run_is_refused(self, store: Any) -> None:
        with pytest.raises(flowkit.ResumeError, match="unknown run"):
            await flowkit.Runtime(store=store).signal("missing", "review", 1)

    async def test_timeout_fails_with_wait_timeout(self, store: Any) -> None:
        flow = Flow("t").wait("approval", timeout="1ms").node("p", publish).edge("approval", "p")
        async with flowkit.Runtime(store=store, poll_interval=0.01) as rt:
            handle = await rt.start(flow)
            result = await handle.result(timeout=10)
        assert RunStatus.FAILED == result.status
        assert isinstance(result.error, flowkit.WaitTimeout)
        assert "approval" == result.error.name


@pytest.mark.anyio
class TestSleep:
    """A sleep is a durable timer fired by the runtime's scheduler."""

    async def test_sleep_then_continue(self, store: Any) -> None:
        flow = Flow("s").sleep("nap", duration="5ms").node("p", publish).edge("nap", "p")
        async with flowkit.Runtime(store=store, poll_interval=0.01) as rt:
            first = await rt.run(flow)
            assert RunStatus.AWAITING == first.status
            result = await rt.handle(first.run_id).result(timeout=10)
        assert "published None" == result.output

    async def test_sleeping_runs_hold_no_tasks(self, tmp_path: Path) -> None:
        store = SQLiteStore(tmp_path / "many.db")
        flow = Flow("nap").sleep("nap", duration="1d").node("p", publish).edge("nap", "p")
        rt = flowkit.Runtime(store=store)
        before = len(anyio.get_running_tasks())
        for _ in range(10_000):
            result = await rt.run(flow)
            assert RunStatus.AWAITING == result.status
        assert before == len(anyio.get_running_tasks())
        assert 0 == len(rt._runs)  # nothing of them stays in memory either
        due = await store.due_timers(anyio.current_time() + 10**10, limit=20_000)
        assert 10_000 == len(due)


@pytest.mark.anyio
class TestSubflow:
    """A subflow is a child run; a wait inside it makes the parent wait."""

    async def test_child_wait_routes_signal(self, store: Any) -> None:
        child = Flow("child").wait("approve").node("p", publish).edge("approve", "p")
        parent = (
            Flow("parent")
            .node("sub", uses="subflow", params={"blueprint_id": "child"})
            .node("done", refund)
            .edge("sub", "done")
        )
        rt = flowkit.Runtime(store=store, flows=[child])
        result = await rt.run(parent)
        assert RunStatus.AWAITING == result.status
        result = await rt.signal(result.run_id, "approve", "ok")
        assert (RunStatus.COMPLETED, "refunded published ok") == (result.status, result.output)

    async def test_child_failure_fails_parent_with_child_failed(self, store: Any) -> None:
        async def boom() -> None:
            raise ValueError("no stock")

        child = Flow("child").node("boom", boom)
        parent = Flow("parent").node("sub", uses="subflow", params={"blueprint_id": "child"})
        result = await flowkit.Runtime(store=store, flows=[child]).run(parent)
        assert RunStatus.FAILED == result.status
        assert isinstance(result.error, flowkit.ChildFailed)
        assert "no stock" in str(result.error)


@pytest.mark.anyio
class TestIdentity:
    """Runs have stable ids; old definitions are refused clearly."""

    async def test_idempotent_start(self, store: Any) -> None:
        calls: list[int] = []

        async def count() -> int:
            calls.append(1)
            return len(calls)

        flow = Flow("once").node("count", count)
        async with flowkit.Runtime(store=store) as rt:
            first = await rt.start(flow, run_id="order-1")
            second = await rt.start(flow, run_id="order-1")
            assert first.run_id == second.run_id
            result = await first.result(timeout=10)
        assert (1, [1]) == (result.output, calls)

    async def test_unknown_digest_is_refused(self, tmp_path: Path) -> None:
        path = tmp_path / "runs.db"
        old = Flow("review").wait("review").node("p", publish).edge("review", "p")
        run_id = (await flowkit.Runtime(store=SQLiteStore(path)).run(old)).run_id
        new = Flow("review").wait("review").node("p", refund).edge("review", "p")
        rt = flowkit.Runtime(store=SQLiteStore(path), flows=[new])
        with pytest.raises(flowkit.ResumeError, match="does not know"):
            await rt.signal(run_id, "review", 1)


@pytest.mark.anyio
class TestSnapshotResume:
    """``resume()`` continues a run from a snapshot, routing by the resume action."""

    async def test_resume_routes_action(self) -> None:
        flow = review_flow()
        paused = await flowkit.Runtime().run(flow)
        snapshot = paused.snapshot()
        result = await flowkit.Runtime().resume(flow, snapshot, "review", Action("approve", 3))
        assert "published 3" == result.output
        result = await flowkit.Runtime().resume(flow, snapshot, "review", 4, action="reject")
        assert "refunded 4" == result.output

    async def test_resume_refuses_other_blueprint(self) -> None:
        paused = await flowkit.Runtime().run(review_flow())
        other = Flow("review").wait("review").node("x", refund).edge("review", "x")
        with pytest.raises(flowkit.ResumeError, match="does not know"):
            await flowkit.Runtime().resume(other, paused.snapshot(), "review", 1)


FLOWS_MODULE = """
from flowkit import Flow

async def publish(value=None):
    return f"published {value}"

approval = Flow("approval").wait("approve").node("p", publish).edge("approve", "p")
nap = Flow("nap").sleep("nap", duration="1ms").node("p", publish).edge("nap", "p")
"""

SCRIPT = """
import sys, anyio, flowkit
from flowkit.stores import SQLiteStore
from durable_flows import approval, nap

async def main(mode, db):
    rt = flowkit.Runtime(store=SQLiteStore(db), flows=[approval, nap], poll_interval=0.01)
    if mode == "start":
        print((await rt.run(approval, run_id="a-1")).status)
        print((await rt.run(nap, run_id="n-1")).status)
    elif mode == "signal":
        result = await rt.signal("a-1", "approve", "yes")
        print(result.status, result.output)
    else:
        async with rt:
            result = await rt.handle("n-1").result(timeout=20)
        print(result.status, result.output)

anyio.run(main, sys.argv[1], sys.argv[2])
"""


class TestAcrossProcesses:
    """A run started in one process is finished by another, with no process in between."""

    def _run(self, tmp_path: Path, mode: str) -> str:
        done = subprocess.run(
            [sys.executable, str(tmp_path / "script.py"), mode, str(tmp_path / "runs.db")],
            capture_output=True,
            text=True,
            timeout=60,
            cwd=tmp_path,
            env={"PYTHONPATH": str(tmp_path), "PATH": "/usr/bin:/bin"},
        )
        assert 0 == done.returncode, done.stderr
        return done.stdout.strip()

    def test_wait_and_sleep_survive_the_process(self, tmp_path: Path) -> None:
        (tmp_path / "durable_flows.py").write_text(textwrap.dedent(FLOWS_MODULE))
        (tmp_path / "script.py").write_text(textwrap.dedent(SCRIPT))
        assert "awaiting\nawaiting" == self._run(tmp_path, "start")
        assert "completed published yes" == self._run(tmp_path, "signal")
        assert "completed published None" == self._run(tmp_path, "timer")

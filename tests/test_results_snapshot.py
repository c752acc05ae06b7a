"""A RunResult is a snapshot; ``FlowDef.run()`` keeps paused runs resumable in the process.

Results never change after they were returned and never reach back into the
run; a run ``checkout.run()`` leaves awaiting is resumed by
``checkout.signal()`` and seen through its sleeps by ``checkout.wait()``, on
the same event loop or another one (each ``run_sync`` starts its own).
"""

from __future__ import annotations

import threading
import time
from typing import Any

import anyio
import pytest

import flowkit
from flowkit import ResumeError, RunStatus, Runtime, flow, node
from flowkit._clock import use_clock
from flowkit.shell._result import detached

TEN_MINUTES_LATER = 601.0


# -- a flow whose node changes the run's state in place across a wait ------------------------
@node
async def begin() -> None:
    flowkit.context().state["progress"] = {"step": 1, "seen": ["begin"]}


@node
async def advance() -> dict[str, Any]:
    progress = flowkit.context().state["progress"]  # the run's own dict: changed in place
    saw = progress["step"]
    progress["step"] = 2
    progress["seen"].append("advance")
    return {"saw": saw, "seen": list(progress["seen"])}


@flow
async def tracked() -> dict[str, Any]:
    await begin()
    await flow.wait("go")
    return await advance()


def wait_node(flow_def: Any) -> str:
    return str(next(n.id for n in flow_def.blueprint.nodes if n.kind == "wait"))


@pytest.mark.anyio
class TestResultsAreSnapshots:
    """What a RunResult shows is fixed when it is returned, and is its own."""

    async def test_a_result_taken_before_the_signal_keeps_the_old_state(self) -> None:
        rt = Runtime()
        paused = await rt.run(tracked)
        before = await rt.result(paused.run_id)
        await rt.signal(paused.run_id, "go")
        assert {"step": 1, "seen": ["begin"]} == paused.state["progress"]
        assert {"step": 1, "seen": ["begin"]} == before.state["progress"]
        assert {"step": 2, "seen": ["begin", "advance"]} == (await rt.result(paused.run_id)).state[
            "progress"
        ]

    async def test_a_result_keeps_its_path_and_snapshot(self) -> None:
        rt = Runtime()
        paused = await rt.run(tracked)
        await rt.signal(paused.run_id, "go")
        assert "awaiting" == paused.path()[wait_node(tracked)]
        assert ("go",) == paused.waiting_for
        sections = paused.snapshot()["sections"]
        assert "awaiting" == sections["header"]["status"]
        assert 1 == sections["context"]["progress"]["step"]

    async def test_mutating_an_awaiting_result_does_not_reach_the_run(self) -> None:
        rt = Runtime()
        paused = await rt.run(tracked)
        paused.state["progress"]["step"] = 99
        paused.snapshot()["sections"]["context"]["progress"]["step"] = 98
        done = await rt.signal(paused.run_id, "go")
        assert {"saw": 1, "seen": ["begin", "advance"]} == done.output

    async def test_mutating_a_completed_result_does_not_reach_the_run(self) -> None:
        rt = Runtime()
        paused = await rt.run(tracked)
        done = await rt.signal(paused.run_id, "go")
        done.output["saw"] = -1
        done.state["progress"]["seen"].append("mine")
        again = await rt.result(paused.run_id)
        assert {"saw": 1, "seen": ["begin", "advance"]} == again.output
        assert ["begin", "advance"] == again.state["progress"]["seen"]

    async def test_a_result_keeps_what_it_was_mutated_to(self) -> None:
        done = await Runtime().run(note_flow())
        done.state["note"] = "mine"
        assert "mine" == done.state["note"]

    async def test_a_handle_result_is_a_snapshot(self) -> None:
        async with Runtime() as rt:
            handle = await rt.start(tracked)
            await rt.signal(handle.run_id, "go")  # kept until the wait opens, if it comes first
            final = await handle.result(timeout=10)
            final.output["seen"].clear()
            assert ["begin", "advance"] == (await handle.result(timeout=10)).output["seen"]

    async def test_resuming_a_snapshot_leaves_it_and_its_result_alone(self) -> None:
        paused = await Runtime().run(tracked)
        snapshot = paused.snapshot()
        done = await Runtime().resume(tracked, snapshot, wait_node(tracked))
        assert RunStatus.COMPLETED == done.status
        assert {"step": 1, "seen": ["begin"]} == snapshot["sections"]["context"]["progress"]
        assert {"step": 1, "seen": ["begin"]} == paused.state["progress"]


def note_flow() -> flowkit.Flow:
    async def note() -> None:
        flowkit.context().state["note"] = "run's"

    return flowkit.Flow("note").node("note", note)


class TestDetached:
    """How a value is copied for a result."""

    def test_plain_data_is_copied_through(self) -> None:
        value: dict[str, Any] = {"a": [1, {"b": "c"}], "d": None}
        copied = detached(value)
        assert value == copied
        assert copied["a"] is not value["a"]
        assert copied["a"][1] is not value["a"][1]

    def test_a_cycle_is_copied(self) -> None:
        loop: list[Any] = [1]
        loop.append(loop)
        copied = detached(loop)
        assert copied is not loop
        assert copied[1] is copied

    def test_a_value_that_cannot_be_copied_is_shared(self) -> None:
        lock = threading.Lock()
        copied = detached({"lock": lock})
        assert copied["lock"] is lock


# -- the README's checkout -------------------------------------------------------------------
@node
async def fetch_order(order_id: str) -> dict[str, Any]:
    return {"id": order_id, "total": 1500}


@node(retries=3, timeout="30s")
async def charge(order: dict[str, Any]) -> str:
    return f"charged {order['total']}"


@flow
async def checkout(order_id: str) -> str:
    order = await fetch_order(order_id)
    if order["total"] > 1000:
        decision = await flow.wait("approval", timeout="2d")
        if not decision["approved"]:
            return "rejected"
    await flow.sleep("10m")  # durable: holds no task while it sleeps
    return await charge(order)


@flow
async def approval_only(order_id: str) -> str:
    decision = await flow.wait("approval")
    return f"{order_id}: {decision}"


@flow
async def with_subflow(order_id: str) -> str:
    return await approval_only(order_id)


def later() -> float:
    """The wall clock once the checkout's ten-minute sleep is over."""
    return time.time() + TEN_MINUTES_LATER


async def wait_later(flow_def: Any, run_id: str) -> flowkit.RunResult:
    with use_clock(later):
        return await flow_def.wait(run_id, timeout=30)  # type: ignore[no-any-return]


@pytest.mark.anyio
class TestFlowRunResumes:
    """``await checkout.run(...)`` as the README suggests, then its documented resume calls."""

    async def test_the_readme_path(self) -> None:
        result = await checkout.run(order_id="A1")
        run_id = result.run_id
        assert (RunStatus.AWAITING, ("approval",)) == (result.status, result.waiting_for)
        assert f"await checkout.signal({run_id!r}, 'approval', data)" == result.resume_hint
        assert result.resume_hint in repr(result)

        result = await checkout.signal(run_id, "approval", {"approved": True})
        assert (RunStatus.AWAITING, ()) == (result.status, result.waiting_for)  # sleeping
        assert f"await checkout.wait({run_id!r})" == result.resume_hint

        result = await wait_later(checkout, run_id)
        assert (RunStatus.COMPLETED, "charged 1500") == (result.status, result.output)
        assert "" == result.resume_hint
        assert "charged 1500" == (await checkout.result(run_id)).output

    async def test_wait_while_another_task_signals(self) -> None:
        run_id = (await approval_only.run(order_id="B2")).run_id
        results: list[flowkit.RunResult] = []

        async def wait() -> None:
            results.append(await approval_only.wait(run_id, timeout=30))

        async with anyio.create_task_group() as tg:
            tg.start_soon(wait)
            await anyio.wait_all_tasks_blocked()
            await approval_only.signal(run_id, "approval", "yes")
        assert ["B2: yes"] == [r.output for r in results]

    async def test_concurrent_waits_each_fire_their_timers(self) -> None:
        first = (await checkout.run(order_id="C1")).run_id
        second = (await checkout.run(order_id="C2")).run_id
        results: dict[str, flowkit.RunResult] = {}

        async def wait(run_id: str) -> None:
            results[run_id] = await wait_later(checkout, run_id)

        async with anyio.create_task_group() as tg:
            tg.start_soon(wait, first)
            await anyio.wait_all_tasks_blocked()
            tg.start_soon(wait, second)
            await anyio.wait_all_tasks_blocked()
            await checkout.signal(second, "approval", {"approved": True})
            await anyio.wait_all_tasks_blocked()
            assert [second] == list(results)
            await checkout.signal(first, "approval", {"approved": True})
        assert {first: "charged 1500", second: "charged 1500"} == {
            run_id: r.output for run_id, r in results.items()
        }

    async def test_a_subflow_wait_is_resumed_through_the_parent(self) -> None:
        result = await with_subflow.run(order_id="D4")
        assert RunStatus.AWAITING == result.status
        result = await with_subflow.signal(result.run_id, "approval", "ok")
        assert (RunStatus.COMPLETED, "D4: ok") == (result.status, result.output)

    async def test_cancel_a_paused_run(self) -> None:
        run_id = (await approval_only.run(order_id="E5")).run_id
        assert RunStatus.CANCELLED == (await approval_only.cancel(run_id)).status
        assert RunStatus.CANCELLED == (await approval_only.result(run_id)).status

    async def test_a_run_of_another_flow_is_refused(self) -> None:
        run_id = (await approval_only.run(order_id="F6")).run_id
        with pytest.raises(ResumeError, match="run of flow 'approval_only', not of 'checkout'"):
            await checkout.signal(run_id, "approval", {"approved": True})
        await approval_only.cancel(run_id)

    async def test_an_unknown_run_says_what_flow_run_keeps(self) -> None:
        with pytest.raises(ResumeError, match=r"unknown run 'nope'.*Runtime\(store="):
            await checkout.signal("nope", "approval", {"approved": True})

    async def test_timers_left_by_finished_runs_are_skipped(self) -> None:
        parent = (await with_timed_subflow.run()).run_id  # its child sets a 2-day timeout
        done = await with_timed_subflow.signal(parent, "approval", "yes")  # the child is gone
        assert RunStatus.COMPLETED == done.status
        other = (await approval_only.run(order_id="I9")).run_id
        results: list[flowkit.RunResult] = []

        async def wait() -> None:
            with use_clock(days_later):  # the child's timeout is due: it must be skipped
                results.append(await approval_only.wait(other, timeout=30))

        async with anyio.create_task_group() as tg:
            tg.start_soon(wait)
            await anyio.wait_all_tasks_blocked()
            await approval_only.signal(other, "approval", "ok")
        assert ["I9: ok"] == [r.output for r in results]

    async def test_a_run_that_finishes_in_its_first_call_is_not_kept(self) -> None:
        quick = await with_no_wait.run()
        assert RunStatus.COMPLETED == quick.status
        with pytest.raises(ResumeError, match="unknown run"):
            await with_no_wait.result(quick.run_id)


@flow
async def with_no_wait() -> int:
    return 1


@flow
async def timed_approval() -> str:
    return str(await flow.wait("approval", timeout="2d"))


@flow
async def with_timed_subflow() -> str:
    return await timed_approval()


def days_later() -> float:
    return time.time() + 3 * 24 * 3600


@pytest.mark.parametrize(("first", "then"), [("asyncio", "trio"), ("trio", "asyncio")])
def test_run_sync_then_resume_on_other_event_loops(first: str, then: str) -> None:
    """Each ``run_sync`` has its own event loop: the paused run survives them all."""
    result = checkout.run_sync(order_id="A1", backend=first)  # type: ignore[arg-type]
    assert RunStatus.AWAITING == result.status
    result = anyio.run(checkout.signal, result.run_id, "approval", {"approved": True}, backend=then)
    assert RunStatus.AWAITING == result.status
    result = anyio.run(wait_later, checkout, result.run_id, backend=first)
    assert (RunStatus.COMPLETED, "charged 1500") == (result.status, result.output)


@pytest.mark.parametrize(("first", "then"), [("asyncio", "trio"), ("trio", "asyncio")])
def test_a_subflow_run_sync_resumes_on_another_event_loop(first: str, then: str) -> None:
    result = with_subflow.run_sync(order_id="H8", backend=first)  # type: ignore[arg-type]
    assert RunStatus.AWAITING == result.status
    result = anyio.run(with_subflow.signal, result.run_id, "approval", "ok", backend=then)
    assert (RunStatus.COMPLETED, "H8: ok") == (result.status, result.output)


@pytest.mark.anyio
class TestHandleTimeout:
    """``handle.result(timeout=...)`` says which run, where it stands and what to check."""

    async def test_a_timeout_names_the_run_and_its_status(self) -> None:
        waiting = flowkit.Flow("waits").wait("approval")
        async with flowkit.Runtime() as rt:
            handle = await rt.start(waiting, run_id="held")
            with pytest.raises(flowkit.ResultTimeout, match=r"'held'.*awaiting") as caught:
                await handle.result(timeout=0.01)
        assert isinstance(caught.value, TimeoutError)
        assert ("held", "awaiting") == (caught.value.run_id, caught.value.status)

"""A signal nothing will take is refused, never silently accepted.

* ``Runtime.signal`` and ``Client.signal`` to a run that has finished raise
  ``ResumeError`` saying so, with the run's status; a delivery id the run
  already received raises ``DuplicateDelivery`` even then.
* The webhook app answers 409 to a replayed delivery id after the run
  completed, and 404 to a new call once the run has finished or has passed
  its webhook (nothing waits there any more). A call that comes before the run
  reaches its webhook is still kept for it (202).

Client cases use the SQLite queue and store with a worker, on asyncio and trio.
"""

from __future__ import annotations

import json
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Any

import anyio
import httpx
import pytest

import flowkit
from flowkit import DuplicateDelivery, Flow, ResumeError, RunStatus
from flowkit.stores import SQLiteStore
from flowkit.stores import from_url as store_from_url
from flowkit.transports import from_url as transport_from_url
from flowkit.webhooks import app, sign

if TYPE_CHECKING:
    from collections.abc import AsyncIterator
    from pathlib import Path

pytestmark = pytest.mark.anyio

SECRET = "wh_secret"
BOUND = 30.0


@flowkit.node
async def echo(value: Any) -> Any:
    return value


@flowkit.flow
async def approval(order: str) -> Any:
    answer = await flowkit.flow.wait("go")
    return await echo(answer)


def hook_then_wait() -> Flow:
    """Passes its webhook, then waits for signal ``approve``."""
    return (
        Flow("hook-then-wait")
        .node("hook", uses="webhook", params={"path": "/hooks/pay", "secret": SECRET})
        .wait("approve")
        .edge("hook", "approve")
    )


def hook_only() -> Flow:
    return (
        Flow("hook-only")
        .node("hook", uses="webhook", params={"path": "/hooks/pay", "secret": SECRET})
        .node("echo", echo, inputs={"value": "hook"})
        .edge("hook", "echo")
    )


def wait_then_hook() -> Flow:
    """Waits for signal ``first`` before it reaches its webhook."""
    return (
        Flow("wait-then-hook")
        .wait("first")
        .node("hook", uses="webhook", params={"path": "/hooks/pay", "secret": SECRET})
        .node("echo", echo, inputs={"value": "hook"})
        .edge("first", "hook")
        .edge("hook", "echo")
    )


# -- Runtime.signal and Client.signal -----------------------------------------------------------


@pytest.mark.parametrize("durable", [False, True], ids=["memory", "sqlite-store"])
async def test_runtime_signal_to_a_finished_run_is_refused(durable: bool, tmp_path: Path) -> None:
    store = SQLiteStore(str(tmp_path / "runs.db")) if durable else None
    rt = flowkit.Runtime(store=store, flows=[approval])
    try:
        started = await rt.run(approval, order="A1")
        done = await rt.signal(started.run_id, "go", "yes", delivery_id="d-1")
        assert (RunStatus.COMPLETED, "yes") == (done.status, done.output)
        with pytest.raises(ResumeError, match="already finished \\(completed\\)") as raised:
            await rt.signal(started.run_id, "go", "again")
        with pytest.raises(DuplicateDelivery, match="already received delivery 'd-1'"):
            await rt.signal(started.run_id, "go", "again", delivery_id="d-1")
        after = await rt.result(started.run_id)
    finally:
        if store is not None:
            await store.close()
    assert "nothing waits for signal 'go' any more" in str(raised.value)
    assert (RunStatus.COMPLETED, "yes") == (after.status, after.output)


async def test_runtime_signal_to_a_cancelled_run_says_cancelled() -> None:
    rt = flowkit.Runtime()
    started = await rt.run(approval, order="A1")
    await rt.cancel(started.run_id)
    with pytest.raises(ResumeError, match="already finished \\(cancelled\\)"):
        await rt.signal(started.run_id, "go", "yes")


@asynccontextmanager
async def fleet(tmp_path: Path, *flows: Any) -> AsyncIterator[flowkit.Client]:
    """A worker serving ``flows`` on the SQLite queue and store, and a client of theirs."""
    transport = transport_from_url(f"sqlite:///{tmp_path / 'queue.db'}")
    store = store_from_url(f"sqlite:///{tmp_path / 'runs.db'}")
    worker = flowkit.Worker(flows, transport, store, poll_interval=0.05)
    try:
        with anyio.fail_after(BOUND):
            async with anyio.create_task_group() as tg:
                await tg.start(worker.run)
                yield flowkit.Client(transport, store, flows=flows)
                tg.cancel_scope.cancel()
    finally:
        await transport.close()
        await store.close()


async def test_client_signal_to_a_finished_run_is_refused(tmp_path: Path) -> None:
    async with fleet(tmp_path, approval) as client:
        handle = await client.start(approval, order="A1")
        await client.signal(handle.run_id, "go", "yes", delivery_id="d-1")
        done = await handle.result(timeout=BOUND)
        with pytest.raises(ResumeError, match="already finished \\(completed\\)"):
            await client.signal(handle.run_id, "go", "again")
        with pytest.raises(DuplicateDelivery, match="already received delivery 'd-1'"):
            await client.signal(handle.run_id, "go", "again", delivery_id="d-1")
        after = await client.result(handle.run_id)
    assert (RunStatus.COMPLETED, "yes") == (done.status, done.output)
    assert (RunStatus.COMPLETED, "yes") == (after.status, after.output)


# -- webhooks -----------------------------------------------------------------------------------


async def _post(
    target: Any, run_id: str, body: bytes, delivery: str | None = None
) -> httpx.Response:
    headers = {"X-Flowkit-Signature": sign(SECRET, body), "Content-Type": "application/json"}
    if delivery is not None:
        headers["X-Flowkit-Delivery"] = delivery
    transport = httpx.ASGITransport(app=app(target))
    async with httpx.AsyncClient(transport=transport, base_url="http://flowkit.test") as client:
        return await client.post(f"/hooks/pay/{run_id}", content=body, headers=headers)


async def test_a_replayed_delivery_after_the_run_completed_is_409() -> None:
    rt = flowkit.Runtime()
    run_id = (await rt.run(hook_only())).run_id
    first = await _post(rt, run_id, b'{"n": 1}', delivery="d-1")
    replay = await _post(rt, run_id, b'{"n": 1}', delivery="d-1")
    assert (202, 409) == (first.status_code, replay.status_code)
    assert "already received delivery 'd-1'" in replay.json()["error"]
    assert {"n": 1} == (await rt.result(run_id)).output


async def test_a_new_call_after_the_run_completed_is_404() -> None:
    rt = flowkit.Runtime()
    run_id = (await rt.run(hook_only())).run_id
    first = await _post(rt, run_id, b'{"n": 1}')
    second = await _post(rt, run_id, b'{"n": 2}', delivery="d-2")
    assert (202, 404) == (first.status_code, second.status_code)
    assert "already finished (completed)" in second.json()["error"]
    assert {"n": 1} == (await rt.result(run_id)).output


async def test_a_call_after_the_run_passed_its_webhook_is_404() -> None:
    """The run goes on (it waits for ``approve``), but never at the webhook again."""
    rt = flowkit.Runtime()
    run_id = (await rt.run(hook_then_wait())).run_id
    first = await _post(rt, run_id, b'{"n": 1}', delivery="d-1")
    second = await _post(rt, run_id, b'{"n": 2}')
    replay = await _post(rt, run_id, b'{"n": 1}', delivery="d-1")
    assert (202, 404, 409) == (first.status_code, second.status_code, replay.status_code)
    assert "past its webhook 'hook'" in second.json()["error"]
    result = await rt.signal(run_id, "approve", "ok")
    assert (RunStatus.COMPLETED, "ok") == (result.status, result.output)
    assert {} == result.snapshot()["sections"].get("signals", {})  # nothing was kept


async def test_a_call_before_the_run_reaches_its_webhook_is_kept_for_it() -> None:
    rt = flowkit.Runtime()
    run_id = (await rt.run(wait_then_hook())).run_id
    early = await _post(rt, run_id, b'{"n": 1}')
    assert 202 == early.status_code
    result = await rt.signal(run_id, "first", None)
    assert (RunStatus.COMPLETED, {"n": 1}) == (result.status, result.output)


async def test_webhooks_on_a_client_refuse_calls_after_the_run_completed(tmp_path: Path) -> None:
    flow = hook_only()
    async with fleet(tmp_path, flow) as client:
        handle = await client.start(flow)
        body = json.dumps({"n": 1}).encode()
        first = await _post(client, handle.run_id, body, delivery="d-1")
        done = await handle.result(timeout=BOUND)
        replay = await _post(client, handle.run_id, body, delivery="d-1")
        second = await _post(client, handle.run_id, body)
    assert (202, 409, 404) == (first.status_code, replay.status_code, second.status_code)
    assert (RunStatus.COMPLETED, {"n": 1}) == (done.status, done.output)

"""The Runtime over chains and fans, where the core's completion shortcut is taken: runs
end as the full step would have them, and retries, timeouts, middleware, events, node
context and cancellation still apply to every node."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import anyio
import pytest
import structlog

import flowkit
from flowkit import Flow, Middleware, NodeContext, Runtime
from flowkit.core import _machine

if TYPE_CHECKING:
    from flowkit.shell._middleware import CallNext

pytestmark = pytest.mark.anyio


async def inc(x: Any = 0) -> int:
    return (x or 0) + 1


async def total(values: dict[str, int]) -> int:
    return sum(values.values())


def chain(n: int, fn: Any = inc, first: Any = None, **options: Any) -> Flow:
    """``n0 -> n1 -> ...``, ``n0`` running ``first`` (default ``fn``); ``options`` go to
    every node but the first."""
    flow = Flow(f"chain-{n}").node("n0", first or fn)
    for i in range(1, n):
        flow.node(f"n{i}", fn, **options).edge(f"n{i - 1}", f"n{i}")
    return flow


def fan(n: int) -> Flow:
    """``src`` fans out to ``n`` workers that meet in an ``all`` join."""
    flow = Flow(f"fan-{n}").node("src", inc).node("sink", total, join="all")
    for i in range(n):
        flow.node(f"w{i}", inc).edge("src", f"w{i}").edge(f"w{i}", "sink")
    return flow


def comparable(snapshot: dict[str, Any]) -> dict[str, Any]:
    sections = dict(snapshot["sections"])
    sections["header"] = {k: v for k, v in sections["header"].items() if k != "traceparent"}
    return sections


class TestSameRuns:
    """A run ends with the same state whether the shortcut is taken or not."""

    @pytest.mark.parametrize("flow", [chain(6), fan(5)], ids=["chain", "fan"])
    async def test_snapshots_match(self, flow: Flow, monkeypatch: pytest.MonkeyPatch) -> None:
        taken: list[bool] = []
        shortcut = _machine.completion_shortcut

        def counted(*args: Any) -> Any:
            commands = shortcut(*args)
            taken.append(commands is not None)
            return commands

        monkeypatch.setattr(_machine, "completion_shortcut", counted)
        fast = await Runtime().run(flow)
        assert any(taken)
        monkeypatch.setattr(_machine, "completion_shortcut", lambda *args: None)
        full = await Runtime().run(flow)
        assert "completed" == fast.status == full.status
        assert full.output == fast.output
        assert comparable(full.snapshot()) == comparable(fast.snapshot())


class TestNodesKeepTheirOptions:
    """Nodes the shortcut fires still get their retries, timeout and middleware."""

    async def test_retries(self) -> None:
        attempts: dict[str, int] = {}

        async def flaky(x: Any = 0) -> int:
            node = flowkit.context().node_id
            attempts[node] = attempts.get(node, 0) + 1
            if attempts[node] == 1:
                raise ValueError("first attempt fails")
            return (x or 0) + 1

        result = await Runtime().run(chain(4, flaky, inc, retries=1))
        assert "completed" == result.status, result.error
        assert 4 == result.output
        assert {"n1": 2, "n2": 2, "n3": 2} == attempts

    async def test_timeout(self) -> None:
        async def stuck(x: Any = 0) -> int:
            await anyio.sleep_forever()
            return 0

        flow = chain(2).node("n2", stuck, timeout=0.01).edge("n1", "n2")
        result = await Runtime().run(flow)
        assert "failed" == result.status
        assert "n2" == result.error.node_id
        assert "timed out" in str(result.error)

    async def test_middleware(self) -> None:
        seen: list[tuple[str, str]] = []

        class Recorder(Middleware):
            async def before_node(self, ctx: NodeContext) -> None:
                seen.append(("before", ctx.node_id))

            async def around_node(self, ctx: NodeContext, call_next: CallNext) -> Any:
                seen.append(("around", ctx.node_id))
                return await call_next()

            async def after_node(self, ctx: NodeContext, result: Any) -> None:
                seen.append(("after", ctx.node_id))

        result = await Runtime(middleware=[Recorder()]).run(chain(3))
        assert 3 == result.output
        expected = [(hook, f"n{i}") for i in range(3) for hook in ("before", "around", "after")]
        assert expected == seen

    async def test_events(self) -> None:
        rt = Runtime()
        seen: list[tuple[str, str | None]] = []
        rt.events.subscribe(lambda e: seen.append((e.type, e.node_id)), {"node:start"})
        await rt.run(fan(3))
        assert ["src", "w0", "w1", "w2", "sink"] == [node for _, node in seen]


class TestNodeContext:
    """Each node of a chain sees its own context and log bindings."""

    async def test_context_and_structlog_bindings(self) -> None:
        seen: list[tuple[str, Any, Any]] = []

        async def look(x: Any = 0) -> int:
            bound = structlog.contextvars.get_contextvars()
            seen.append((flowkit.context().node_id, bound["node_id"], bound["run_id"]))
            return (x or 0) + 1

        result = await Runtime().run(chain(3, look))
        assert [(f"n{i}", f"n{i}", result.run_id) for i in range(3)] == seen
        assert "node_id" not in structlog.contextvars.get_contextvars()


class TestCancel:
    """Cancelling a run stops the node of a chain in flight; its ``finally`` runs."""

    async def test_finally_runs(self) -> None:
        started, cleaned = anyio.Event(), anyio.Event()

        async def hang(x: Any = 0) -> int:
            started.set()
            try:
                await anyio.sleep_forever()
            finally:
                cleaned.set()
            return 0

        async with Runtime() as rt:
            flow = chain(2).node("n2", hang).edge("n1", "n2").node("n3", inc).edge("n2", "n3")
            handle = await rt.start(flow)
            await started.wait()
            result = await rt.cancel(handle.run_id)
        assert cleaned.is_set()
        assert "cancelled" == result.status

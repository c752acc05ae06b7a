"""Tests for middleware: hook order around every node, and failures raised by hooks."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import pytest

import flowkit
from flowkit import Flow, Middleware, Node, NodeContext, Runtime

if TYPE_CHECKING:
    from flowkit.shell._middleware import CallNext

pytestmark = pytest.mark.anyio


class Recorder(Middleware):
    """Appends ``<hook><n>`` entries to a shared log."""

    def __init__(self, n: int, log: list[str]) -> None:
        self.n = n
        self.log = log

    async def before_node(self, ctx: NodeContext) -> None:
        self.log.append(f"before{self.n}")

    async def around_node(self, ctx: NodeContext, call_next: CallNext) -> Any:
        self.log.append(f"around{self.n}-in")
        result = await call_next()
        self.log.append(f"around{self.n}-out")
        return result

    async def after_node(self, ctx: NodeContext, result: Any) -> None:
        self.log.append(f"after{self.n}")


class FailOnce(Middleware):
    """Raises from ``hook`` on the first attempt of every node, then lets it through."""

    def __init__(self, hook: str) -> None:
        self.hook = hook
        self.attempts: list[int] = []

    def _maybe_fail(self, ctx: NodeContext) -> None:
        self.attempts.append(ctx.attempt)
        if ctx.attempt == 1:
            raise RuntimeError(f"{self.hook} refused attempt 1")

    async def before_node(self, ctx: NodeContext) -> None:
        if self.hook == "before":
            self._maybe_fail(ctx)

    async def around_node(self, ctx: NodeContext, call_next: CallNext) -> Any:
        result = await call_next()
        if self.hook == "around":
            self._maybe_fail(ctx)
        return result

    async def after_node(self, ctx: NodeContext, result: Any) -> None:
        if self.hook == "after":
            self._maybe_fail(ctx)


class TestOrder:
    """Befores in list order, arounds with the first outermost, the node, afters in order."""

    async def test_two_middlewares(self) -> None:
        log: list[str] = []

        async def work() -> str:
            log.append("node")
            return "done"

        rt = Runtime(middleware=[Recorder(1, log), Recorder(2, log)])
        result = await rt.run(Flow("one").node("a", work))
        assert "completed" == result.status
        expected = [
            "before1", "before2", "around1-in", "around2-in", "node",
            "around2-out", "around1-out", "after1", "after2",
        ]  # fmt: skip
        assert expected == log

    async def test_hooks_run_for_every_node(self) -> None:
        log: list[str] = []

        async def work(value: Any = None) -> None:
            log.append(f"node:{flowkit.context().node_id}")

        rt = Runtime(middleware=[Recorder(1, log)])
        await rt.run(Flow("two").node("a", work).node("b", work).edge("a", "b"))
        expected = ["before1", "around1-in", "node:a", "around1-out", "after1"]
        assert expected == log[:5]
        assert ["before1", "around1-in", "node:b", "around1-out", "after1"] == log[5:]

    async def test_class_node_lifecycle_runs_inside_the_arounds(self) -> None:
        log: list[str] = []

        class Lifecycle(Node):
            def prep(self, ctx: NodeContext, *args: Any, **kwargs: Any) -> None:
                log.append("prep")

            def exec(self, prepared: Any) -> None:
                log.append("exec")

            def post(self, ctx: NodeContext, result: Any) -> str:
                log.append("post")
                return "posted"

        rt = Runtime(middleware=[Recorder(1, log)])
        result = await rt.run(Flow("cls").node("c", Lifecycle))
        assert "posted" == result.output
        expected = ["before1", "around1-in", "prep", "exec", "post", "around1-out", "after1"]
        assert expected == log

    async def test_hooks_see_the_node_context_and_result(self) -> None:
        seen: list[tuple[str, str, int, Any]] = []

        class Spy(Middleware):
            async def before_node(self, ctx: NodeContext) -> None:
                seen.append(("before", ctx.node_id, ctx.attempt, None))

            async def after_node(self, ctx: NodeContext, result: Any) -> None:
                seen.append(("after", ctx.node_id, ctx.attempt, result))

        async def work() -> int:
            return 7

        await Runtime(middleware=[Spy()]).run(Flow("spy").node("a", work))
        assert [("before", "a", 1, None), ("after", "a", 1, 7)] == seen

    async def test_around_can_replace_the_result(self) -> None:
        class Times10(Middleware):
            async def around_node(self, ctx: NodeContext, call_next: CallNext) -> Any:
                return 10 * await call_next()

        async def work() -> int:
            return 4

        result = await Runtime(middleware=[Times10()]).run(Flow("x").node("a", work))
        assert 40 == result.output

    async def test_middleware_wraps_sync_nodes(self) -> None:
        log: list[str] = []

        def work() -> str:
            log.append("node")
            return "sync"

        result = await Runtime(middleware=[Recorder(1, log)]).run(Flow("s").node("a", work))
        assert "sync" == result.output
        assert ["before1", "around1-in", "node", "around1-out", "after1"] == log


class TestFailures:
    """A hook that raises fails the node like the node would, and is retried like it."""

    @pytest.mark.parametrize("hook", ["before", "around", "after"])
    async def test_raising_hook_is_retried(self, hook: str) -> None:
        middleware = FailOnce(hook)
        runs: list[int] = []

        async def work() -> str:
            runs.append(flowkit.context().attempt)
            return "ok"

        rt = Runtime(middleware=[middleware])
        retries: list[int | None] = []
        rt.events.subscribe(lambda e: retries.append(e.attempt), types={"node:retry"})
        result = await rt.run(Flow("mw").node("a", work, retries=1))
        assert ("completed", "ok") == (result.status, result.output)
        assert [1, 2] == middleware.attempts
        assert [2] == retries
        if hook == "before":
            assert [2] == runs
        else:
            assert [1, 2] == runs

    @pytest.mark.parametrize("hook", ["before", "around", "after"])
    async def test_raising_hook_without_retries_fails_the_run(self, hook: str) -> None:
        result = await Runtime(middleware=[FailOnce(hook)]).run(Flow("mw").node("a", _ok))
        assert "failed" == result.status
        assert isinstance(result.error, flowkit.NodeError)
        assert "a" == result.error.node_id
        assert f"{hook} refused attempt 1" in str(result.error)

    async def test_raising_hook_triggers_the_fallback(self) -> None:
        def rescue() -> str:
            return "rescued"

        flow = Flow("mw").node("a", _ok, fallback=rescue)
        result = await Runtime(middleware=[FailOnce("before")]).run(flow)
        assert ("completed", "rescued") == (result.status, result.output)


async def _ok() -> str:
    return "ok"

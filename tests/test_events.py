"""Tests for observable events: their order, fields, subscriptions and streams."""

from __future__ import annotations

import anyio
import pytest

import flowkit
from flowkit import Event, Flow, Runtime
from flowkit.shell._events import EVENT_TYPES

pytestmark = pytest.mark.anyio


async def one() -> int:
    return 1


async def plus_one(value: int) -> int:
    return value + 1


def chain() -> Flow:
    return Flow("chain").node("a", one).node("b", plus_one).edge("a", "b")


def collect(rt: Runtime, types: set[str] | None = None) -> list[Event]:
    events: list[Event] = []
    rt.events.subscribe(events.append, types=types)
    return events


def kinds(events: list[Event]) -> list[tuple[str, str | None]]:
    return [(e.type, e.node_id) for e in events]


class TestOrder:
    """A run reports its start, each node's start and finish, and its finish, in order."""

    async def test_simple_run(self) -> None:
        rt = Runtime()
        events = collect(rt)
        result = await rt.run(chain())
        expected = [
            ("workflow:start", None),
            ("node:start", "a"),
            ("node:finish", "a"),
            ("node:start", "b"),
            ("node:finish", "b"),
            ("workflow:finish", None),
        ]
        assert expected == kinds(events)
        assert {result.run_id} == {e.run_id for e in events}
        assert {"status": "completed"} == events[-1].data

    async def test_retry_run(self) -> None:
        failures = [ValueError("first")]

        async def flaky() -> str:
            if failures:
                raise failures.pop()
            return "ok"

        rt = Runtime()
        events = collect(rt)
        await rt.run(Flow("flaky").node("a", flaky, retries=1))
        node_events = [(e.type, e.attempt) for e in events if e.type.startswith("node:")]
        expected = [
            ("node:start", 1),
            ("node:error", 1),
            ("node:retry", 2),
            ("node:start", 2),
            ("node:finish", 2),
        ]
        assert expected == node_events

    async def test_state_change_event_names_the_keys(self) -> None:
        async def write() -> None:
            flowkit.context().state.update(b=1, a=2)

        rt = Runtime()
        events = collect(rt, {"context:change"})
        await rt.run(Flow("w").node("w", write))
        assert [("context:change", "w")] == kinds(events)
        assert {"keys": ["a", "b"]} == events[0].data

    async def test_pause_timer_and_resume_events(self) -> None:
        flow = Flow("nap").sleep("nap", duration="1ms").node("b", plus_one).edge("nap", "b")
        rt = Runtime()
        events = collect(rt)
        paused = await rt.run(flow, value=1)
        assert ["workflow:start", "timer:set", "workflow:pause"] == [e.type for e in events]
        assert {"timer_id", "delay"} <= set(events[1].data)
        async with rt.scheduler():
            await rt.handle(paused.run_id).result(timeout=5)
        assert "timer:fire" in [e.type for e in events]
        assert "workflow:resume" in [e.type for e in events]

    async def test_signal_event(self) -> None:
        rt = Runtime()
        events = collect(rt, {"signal:receive"})
        paused = await rt.run(Flow("ask").wait("review"))
        await rt.signal(paused.run_id, "review", 1)
        assert [("signal:receive", "review")] == kinds(events)

    async def test_batch_events(self) -> None:
        rt = Runtime()
        events = collect(rt, {"batch:start", "batch:finish"})
        flow = Flow("b").batch("double", plus_one, items="$input.items", concurrency=2)
        result = await rt.run(flow, items=[1, 2, 3])
        assert [2, 3, 4] == result.output
        assert [("batch:start", "double"), ("batch:finish", "double")] == kinds(events)

    async def test_cancel_event(self) -> None:
        rt = Runtime()
        events = collect(rt, {"workflow:cancel", "workflow:finish"})
        paused = await rt.run(Flow("ask").wait("review"))
        await rt.cancel(paused.run_id)
        assert ["workflow:cancel", "workflow:finish"] == [e.type for e in events]
        assert {"status": "cancelled"} == events[-1].data


class TestFields:
    """Every event carries run_id and timestamp; node events carry node_id and attempt."""

    async def test_common_fields(self) -> None:
        rt = Runtime()
        events = collect(rt)
        result = await rt.run(chain(), run_id="fields-1")
        assert events
        for event in events:
            assert "fields-1" == event.run_id
            assert isinstance(event.timestamp, float)
            assert event.timestamp > 0
            assert event.type in EVENT_TYPES
        assert "fields-1" == result.run_id

    async def test_timestamps_do_not_go_backwards(self) -> None:
        rt = Runtime()
        events = collect(rt)
        await rt.run(chain())
        stamps = [e.timestamp for e in events]
        assert sorted(stamps) == stamps

    async def test_node_events_have_node_id_and_attempt(self) -> None:
        failures = [ValueError("first")]

        async def flaky() -> str:
            if failures:
                raise failures.pop()
            return "ok"

        rt = Runtime()
        events = collect(rt)
        await rt.run(Flow("flaky").node("a", flaky, retries=1))
        node_events = [e for e in events if e.type.startswith("node:")]
        assert 5 == len(node_events)
        for event in node_events:
            assert "a" == event.node_id
            assert isinstance(event.attempt, int)
            assert event.attempt >= 1

    async def test_node_finish_has_a_duration(self) -> None:
        rt = Runtime()
        events = collect(rt, {"node:finish"})
        await rt.run(chain())
        assert 2 == len(events)
        for event in events:
            assert isinstance(event.duration, float)
            assert event.duration >= 0


class TestSubscribe:
    """``subscribe`` filters by type and can be undone."""

    async def test_types_filter(self) -> None:
        rt = Runtime()
        events = collect(rt, {"node:finish"})
        await rt.run(chain())
        assert [("node:finish", "a"), ("node:finish", "b")] == kinds(events)

    async def test_unsubscribe(self) -> None:
        rt = Runtime()
        events: list[Event] = []
        unsubscribe = rt.events.subscribe(events.append)
        await rt.run(chain())
        count = len(events)
        assert count > 0
        unsubscribe()
        await rt.run(chain())
        assert count == len(events)

    async def test_unsubscribe_keeps_the_other_subscribers(self) -> None:
        rt = Runtime()
        kept = collect(rt)
        dropped: list[Event] = []
        rt.events.subscribe(dropped.append)()
        await rt.run(chain())
        assert [] == dropped
        assert 6 == len(kept)

    async def test_unknown_type_raises(self) -> None:
        rt = Runtime()
        with pytest.raises(ValueError, match="node:finsh"):
            rt.events.subscribe(print, types={"node:finsh"})
        assert not rt.events.active


class TestStream:
    """``async for ev in rt.events.stream()`` receives the events of runs."""

    async def test_stream_receives_a_run(self) -> None:
        rt = Runtime()
        stream = rt.events.stream()
        result = await rt.run(chain())
        received: list[Event] = []
        async with stream:
            async for event in stream:
                received.append(event)
                if event.type == "workflow:finish":
                    break
        assert "workflow:start" == received[0].type
        assert 6 == len(received)
        assert {result.run_id} == {e.run_id for e in received}

    async def test_stream_with_types_while_the_run_goes_on(self) -> None:
        received: list[tuple[str, str | None]] = []

        async with (
            Runtime() as rt,
            rt.events.stream(types={"node:finish", "workflow:finish"}) as stream,
        ):
            handle = await rt.start(chain())

            async def consume() -> None:
                async for event in stream:
                    received.append((event.type, event.node_id))
                    if event.type == "workflow:finish":
                        return

            async with anyio.create_task_group() as tg:
                tg.start_soon(consume)
                await handle.result(timeout=5)
        expected = [("node:finish", "a"), ("node:finish", "b"), ("workflow:finish", None)]
        assert expected == received

    async def test_stream_with_an_unknown_type_raises(self) -> None:
        rt = Runtime()
        with pytest.raises(ValueError, match="unknown event type"):
            rt.events.stream(types=["workflow:begin"])
        assert not rt.events.active

    async def test_closing_a_stream_ends_its_iteration(self) -> None:
        rt = Runtime()
        stream = rt.events.stream()
        ended = anyio.Event()

        async def consume() -> None:
            async for _ in stream:
                pass
            ended.set()

        async with anyio.create_task_group() as tg:
            tg.start_soon(consume)
            stream.close()
        assert ended.is_set()
        assert not rt.events.active

    async def test_closed_stream_is_unsubscribed(self) -> None:
        rt = Runtime()
        stream = rt.events.stream()
        assert rt.events.active
        stream.close()
        assert not rt.events.active
        result = await rt.run(chain())
        assert "completed" == result.status

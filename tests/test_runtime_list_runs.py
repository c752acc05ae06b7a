"""``Runtime.list_runs`` and ``tags=``: runs started by the runtime, listed from its store.

On MemoryStore and SQLiteStore, each on asyncio and trio. Times come from a fake
clock (``flowkit._clock.use_clock``) that the nodes move on, so each timestamp of a
run is known exactly; nothing sleeps or reads the wall clock.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import pytest

import flowkit
from flowkit import ConfigurationError, RunStatus
from flowkit._clock import use_clock
from flowkit.stores import MemoryStore, RunPage, SQLiteStore

if TYPE_CHECKING:
    from collections.abc import AsyncIterator
    from pathlib import Path

pytestmark = pytest.mark.anyio


class FakeClock:
    """A wall clock that moves only when told to."""

    def __init__(self, now: float = 1_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


CLOCK = FakeClock()


@flowkit.node
async def slow_double(x: int) -> int:
    CLOCK.now += 5.0  # the node takes five (fake) seconds
    return 2 * x


@flowkit.node
async def explode(x: int) -> int:
    CLOCK.now += 2.0
    raise ValueError(f"bad {x}")


@flowkit.flow
async def doubling(x: int) -> int:
    return await slow_double(x)


@flowkit.flow
async def failing(x: int) -> int:
    return await explode(x)


@flowkit.flow
async def parent_of_two(x: int) -> int:
    first = await doubling(x)
    return await doubling(first)


@flowkit.flow
async def labelled(tags: list[str]) -> int:
    return await slow_double(len(tags))


CASES = [
    pytest.param(("memory", "asyncio"), id="memory-asyncio"),
    pytest.param(("memory", "trio"), id="memory-trio"),
    pytest.param(("sqlite", "asyncio"), id="sqlite-asyncio"),
    pytest.param(("sqlite", "trio"), id="sqlite-trio"),
]


@pytest.fixture(params=CASES)
def case(request: pytest.FixtureRequest) -> tuple[str, str]:
    return request.param  # type: ignore[no-any-return]


@pytest.fixture
def anyio_backend(case: tuple[str, str]) -> str:
    return case[1]


@pytest.fixture
async def store(case: tuple[str, str], tmp_path: Path) -> AsyncIterator[Any]:
    store = MemoryStore() if case[0] == "memory" else SQLiteStore(tmp_path / "runs.db")
    yield store
    await store.close()


@pytest.fixture
def clock() -> FakeClock:
    CLOCK.now = 1_000.0
    return CLOCK


async def test_runs_are_listed_with_their_tags_and_times(store: Any, clock: FakeClock) -> None:
    rt = flowkit.Runtime(store=store)
    with use_clock(clock):
        done = await rt.run(doubling, x=4, tags={"team": "a", "env": "prod"})
        clock.now = 2_000.0
        failed = await rt.run(failing, x=1, tags={"team": "b"})
    assert (RunStatus.COMPLETED, RunStatus.FAILED) == (done.status, failed.status)
    page = await rt.list_runs()
    assert [failed.run_id, done.run_id] == [run.run_id for run in page.runs]
    assert None is page.cursor
    second, first = page.runs
    assert ("doubling", "completed", None, {"team": "a", "env": "prod"}) == (
        first.flow,
        first.status,
        first.parent,
        first.tags,
    )
    assert (1_000.0, 1_005.0, 1_005.0, None, None) == (
        first.created_at,
        first.updated_at,
        first.finished_at,
        first.error_type,
        first.error_message,
    )
    assert ("failing", "failed", 2_000.0, 2_002.0, 2_002.0) == (
        second.flow,
        second.status,
        second.created_at,
        second.updated_at,
        second.finished_at,
    )
    assert ("builtins.ValueError", "bad 1") == (second.error_type, second.error_message)
    assert [done.run_id] == [run.run_id for run in (await rt.list_runs(tags={"team": "a"})).runs]
    assert [failed.run_id] == [
        run.run_id for run in (await rt.list_runs(status="failed", created_after=1_500.0)).runs
    ]
    assert [] == (await rt.list_runs(flow="doubling", status="failed")).runs


async def test_started_runs_page_by_page(store: Any, clock: FakeClock) -> None:
    with use_clock(clock):
        async with flowkit.Runtime(store=store) as rt:
            handles = []
            for n in range(5):
                clock.now = 1_000.0 + 100 * n
                handles.append(await rt.start(doubling, x=n, tags={"batch": "7"}))
            for handle in handles:
                assert RunStatus.COMPLETED == (await handle.result()).status
            await rt.run(doubling, x=9, tags={"batch": "8"})
    newest_first = [handle.run_id for handle in reversed(handles)]
    pages: list[list[str]] = []
    cursor: str | None = None
    while True:
        page = await rt.list_runs(tags={"batch": "7"}, limit=2, cursor=cursor)
        pages.append([run.run_id for run in page.runs])
        if page.cursor is None:
            break
        cursor = page.cursor
    assert [newest_first[0:2], newest_first[2:4], newest_first[4:]] == pages


async def test_child_runs_inherit_no_tags(store: Any, clock: FakeClock) -> None:
    rt = flowkit.Runtime(store=store)
    with use_clock(clock):
        result = await rt.run(parent_of_two, x=1, tags={"team": "a"})
    assert (RunStatus.COMPLETED, 4) == (result.status, result.output)
    children = (await rt.list_runs(parent=result.run_id)).runs
    assert 2 == len(children)
    assert all(
        (child.flow, child.status, child.tags) == ("doubling", "completed", {})
        for child in children
    )
    assert children[0].created_at > children[1].created_at  # the second child started later
    tagged = (await rt.list_runs(tags={"team": "a"})).runs
    assert [(result.run_id, "parent_of_two", None)] == [
        (run.run_id, run.flow, run.parent) for run in tagged
    ]


@pytest.mark.parametrize(
    ("tags", "named"),
    [
        ({"": "x"}, "tag key ''"),
        ({"k": 1}, "tag 'k' must have a str value"),
        ({f"k{n}": "v" for n in range(65)}, "at most 64 tags"),
        ({"k": "v" * 257}, "tag 'k' is too long"),
        (["k", "v"], "tags must be a mapping"),
    ],
)
async def test_bad_tags_start_nothing(store: Any, tags: Any, named: str) -> None:
    with pytest.raises(ConfigurationError, match=named):
        await flowkit.Runtime(store=store).run(doubling, x=1, tags=tags)
    async with flowkit.Runtime(store=store) as rt:
        with pytest.raises(ConfigurationError, match=named):
            await rt.start(doubling, x=1, tags=tags)
    assert RunPage([], None) == await rt.list_runs()


async def test_a_flow_parameter_named_tags_still_gets_its_input(
    store: Any, clock: FakeClock
) -> None:
    """``tags=`` is the run's tags, except for a flow whose own parameter is ``tags``:
    that flow receives it as its input, as before runs had tags, and is not tagged."""
    rt = flowkit.Runtime(store=store)
    with use_clock(clock):
        result = await rt.run(labelled, tags=["a", "b", "c"])
    assert (RunStatus.COMPLETED, 6) == (result.status, result.output)
    [run] = (await rt.list_runs(flow="labelled")).runs
    assert {} == run.tags


async def test_listing_needs_a_store() -> None:
    with pytest.raises(ConfigurationError, match=r"list_runs needs Runtime\(store=\.\.\.\)"):
        await flowkit.Runtime().list_runs()


async def test_bad_listing_arguments_are_named(store: Any) -> None:
    rt = flowkit.Runtime(store=store)
    with pytest.raises(ConfigurationError, match="list_runs: limit"):
        await rt.list_runs(limit=0)
    with pytest.raises(ConfigurationError, match="list_runs: status 'done'"):
        await rt.list_runs(status="done")
    with pytest.raises(ConfigurationError, match="list_runs: cursor"):
        await rt.list_runs(cursor="nope")

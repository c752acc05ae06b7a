"""``start(..., debounce=...)``: a burst of starts of one run id makes one run, with the
inputs of the last start, begun once the debounce has passed with no other start.

The flowkit clock is a manual one (``use_clock``): the burst happens at a frozen time,
so every start falls within the debounce whatever the machine's load, and the test
moves the clock past the debounce itself. Run on the in-memory Runtime (with and
without a store) and on a Worker with two Clients (SQLite store, in-memory transport).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import anyio
import pytest

import flowkit
from flowkit import ConfigurationError, RunStatus, flow, node
from flowkit._clock import use_clock
from flowkit.stores import SQLiteStore
from flowkit.transports import MemoryTransport

if TYPE_CHECKING:
    from pathlib import Path

pytestmark = pytest.mark.anyio

RESULT_TIMEOUT = 20.0
ran: list[str] = []


@node
async def reindex(account: str, reason: str) -> str:
    ran.append(reason)
    return f"{account}: {reason}"


@flow
async def sync(account: str, reason: str) -> str:
    return await reindex(account, reason)


class ManualClock:
    """A flowkit clock that moves only when the test says so."""

    def __init__(self) -> None:
        self.now = 1_800_000_000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture(autouse=True)
def _fresh() -> None:
    ran.clear()


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock()


class _Counter:
    def __init__(self) -> None:
        self.count = 0
        self.changed = anyio.Event()

    def __call__(self, _: object) -> None:
        self.count += 1
        self.changed.set()

    async def reaching(self, count: int) -> None:
        with anyio.fail_after(RESULT_TIMEOUT):
            while self.count < count:
                self.changed = anyio.Event()
                await self.changed.wait()


def _counter(events: Any, type_: str) -> _Counter:
    counter = _Counter()
    events.subscribe(counter, types={type_})
    return counter


async def _burst(start: object, reasons: list[str]) -> list[Any]:
    return [
        await start(sync, run_id="sync-a1", debounce="1m", account="a1", reason=reason)  # type: ignore[operator]
        for reason in reasons
    ]


@pytest.mark.parametrize("durable", [False, True], ids=["no-store", "sqlite"])
async def test_a_burst_makes_one_run_with_the_last_inputs(
    durable: bool, clock: ManualClock, tmp_path: Path
) -> None:
    store = SQLiteStore(tmp_path / "runs.db") if durable else None
    with use_clock(clock):
        async with flowkit.Runtime(store=store, poll_interval=0.01) as rt:
            timers_set = _counter(rt.events, "timer:set")
            handles = await _burst(rt.start, ["signup", "edit", "import"])
            assert ["sync-a1"] * 3 == [handle.run_id for handle in handles]
            await timers_set.reaching(3)  # each start's timer is set (at the frozen time)
            waiting = await rt.result("sync-a1")
            assert (RunStatus.AWAITING, []) == (waiting.status, ran)
            clock.now += 61
            result = await rt.handle("sync-a1").result(timeout=RESULT_TIMEOUT)
    assert (RunStatus.COMPLETED, "a1: import") == (result.status, result.output)
    assert ["import"] == ran  # the node ran once


async def test_each_start_in_the_window_pushes_the_beginning_back(clock: ManualClock) -> None:
    with use_clock(clock):
        async with flowkit.Runtime(store=flowkit.stores.MemoryStore()) as rt:
            first = clock.now
            await rt.start(sync, run_id="sync-a1", debounce="1m", account="a1", reason="one")
            clock.now += 40
            await rt.start(sync, run_id="sync-a1", debounce="1m", account="a1", reason="two")
            (timer,) = (await rt.describe("sync-a1")).timers
            await rt.cancel("sync-a1")
    assert ("debounce", first + 40 + 60) == (timer.purpose, timer.due_at)


async def test_a_start_once_the_run_has_begun_returns_it_as_it_is(clock: ManualClock) -> None:
    with use_clock(clock):
        async with flowkit.Runtime(poll_interval=0.01) as rt:
            timers_set = _counter(rt.events, "timer:set")
            handle = await rt.start(
                sync, run_id="sync-a1", debounce="1s", account="a1", reason="first"
            )
            await timers_set.reaching(1)
            clock.now += 2
            done = await handle.result(timeout=RESULT_TIMEOUT)
            again = await rt.start(
                sync, run_id="sync-a1", debounce="1s", account="a1", reason="late"
            )
            late = await again.result(timeout=RESULT_TIMEOUT)
    assert ("a1: first", "a1: first", ["first"]) == (done.output, late.output, ran)


async def test_a_run_cancelled_while_it_waits_out_its_debounce_never_begins(
    clock: ManualClock,
) -> None:
    with use_clock(clock):
        async with flowkit.Runtime(poll_interval=0.01) as rt:
            await rt.start(sync, run_id="sync-a1", debounce="1m", account="a1", reason="x")
            cancelled = await rt.cancel("sync-a1")
            clock.now += 120
            later = await rt.result("sync-a1")
    assert (RunStatus.CANCELLED, RunStatus.CANCELLED, []) == (
        cancelled.status,
        later.status,
        ran,
    )


async def test_starts_from_two_clients_make_one_run_on_the_workers(
    clock: ManualClock, tmp_path: Path
) -> None:
    store, transport = SQLiteStore(tmp_path / "runs.db"), MemoryTransport()
    worker = flowkit.Worker([sync], transport, store, poll_interval=0.01)
    clients = [flowkit.Client(transport, store, flows=[sync]) for _ in range(2)]
    with use_clock(clock):
        async with anyio.create_task_group() as tg:
            await tg.start(worker.run)
            reasons = ["signup", "edit", "import", "merge"]
            handles = [
                handle
                for index, reason in enumerate(reasons)
                for handle in await _burst(clients[index % 2].start, [reason])
            ]
            assert RunStatus.AWAITING == (await clients[0].result("sync-a1")).status
            clock.now += 61
            result = await handles[0].result(timeout=RESULT_TIMEOUT)
            tg.cancel_scope.cancel()
    assert (RunStatus.COMPLETED, "a1: merge", ["merge"]) == (result.status, result.output, ran)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"debounce": "5s"}, "needs a run_id"),
        ({"debounce": 0, "run_id": "r"}, "more than 0 seconds"),
        ({"debounce": "soon", "run_id": "r"}, "invalid duration 'soon'"),
    ],
)
async def test_a_bad_debounce_is_refused(kwargs: dict[str, object], message: str) -> None:
    client = flowkit.Client(MemoryTransport(), flowkit.stores.MemoryStore(), flows=[sync])
    async with flowkit.Runtime() as rt:
        for start in (rt.start, client.start):
            with pytest.raises(ConfigurationError, match=message):
                await start(sync, account="a1", reason="x", **kwargs)  # type: ignore[arg-type]
    assert [] == ran

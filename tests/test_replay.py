"""``flowkit.testing.replay`` and ``flowkit replay``: recorded runs re-run against the
current code, node outputs taken from the history; exactly the runs whose path a change
crosses diverge, at the changed node. Runs are recorded by a ``Runtime`` over a
MemoryStore (and a SQLiteStore for the command), on asyncio and trio; the flows are in
tests/deploy_flows.py.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

import anyio
import attrs
import pytest
from deploy_flows import (
    charge,
    fetch,
    fraud_new,
    fraud_old,
    orders,
    orders_audit,
    orders_cond,
    orders_renamed,
    ship,
)

import flowkit
from flowkit import ConfigurationError, flow, node
from flowkit.cli._main import main
from flowkit.stores import MemoryStore, SQLiteStore
from flowkit.testing import ReplayResult, replay, replay_async

if TYPE_CHECKING:
    from pathlib import Path

RUNS = 200
BOUND = 60.0  # seconds recording and replaying certainly take less than


async def record(store: Any, count: int) -> None:
    """``count`` runs of ``orders``, n = 0..count-1; every third waits for approval."""
    async with flowkit.Runtime(store=store, flows=[orders]) as rt:
        for n in range(count):
            result = await rt.run(orders, run_id=f"r{n}", n=n)
            if result.status == "awaiting":
                result = await rt.signal(f"r{n}", "approval", {"by": "ops"})
            assert "completed" == result.status


async def replay_all(store: Any, current: Any, count: int = RUNS) -> dict[int, ReplayResult]:
    return {n: await replay_async(f"r{n}", current, store=store) for n in range(count)}


def diverged(results: dict[int, ReplayResult]) -> dict[int, tuple[Any, ...]]:
    return {
        n: (r.divergence.node_id, r.divergence.what, r.divergence.recorded, r.divergence.new)
        for n, r in results.items()
        if r.divergence is not None
    }


@pytest.fixture
async def recorded() -> Any:
    store = MemoryStore()
    with anyio.fail_after(BOUND):
        await record(store, RUNS)
    return store


@node
async def charge_more(x: int) -> int:
    return x * 11


class TestReplay:
    """Replaying 200 recorded runs against versions of their flow."""

    pytestmark = pytest.mark.anyio

    async def test_unchanged_code_never_diverges(self, recorded: Any) -> None:
        results = await replay_all(recorded, orders)
        assert {} == diverged(results)
        assert RUNS == sum(r.ok for r in results.values())
        assert 5 == results[3].steps  # fetch, charge, the wait, ship and the end

    async def test_a_node_added_in_the_middle(self, recorded: Any) -> None:
        found = diverged(await replay_all(recorded, orders_audit))
        passing = [n for n in range(RUNS) if (n + 1) % 2 == 0]  # through charge, now audit
        assert passing == sorted(found)
        assert ("audit", "next step", "wait 'approval'", "node 'audit'") == found[3]
        assert ("audit", "next step", "node 'ship'", "node 'audit'") == found[1]

    async def test_a_changed_condition(self, recorded: Any) -> None:
        found = diverged(await replay_all(recorded, orders_cond))
        passing = [n for n in range(RUNS) if (n + 1) % 2 == 0 and (n + 1) % 4 != 0]
        assert passing == sorted(found)
        assert ("ship", "next step", "node 'charge'", "node 'ship'") == found[1]
        assert ("approval", "next step", "node 'charge'", "wait 'approval'") == found[9]

    async def test_a_renamed_wait(self, recorded: Any) -> None:
        found = diverged(await replay_all(recorded, orders_renamed))
        assert [n for n in range(RUNS) if n % 3 == 0] == sorted(found)
        assert ("approval-v2", "next step", "wait 'approval'", "wait 'approval-v2'") == found[0]

    async def test_changed_arguments(self, recorded: Any) -> None:
        @flow(id="orders")
        async def orders_plus(n: int) -> str:
            x = await fetch(n)
            if x % 2 == 0:
                x = await charge(x + 1)
            if n % 3 == 0:
                await flow.wait("approval")
            return await ship(x)

        found = diverged(await replay_all(recorded, orders_plus, 4))
        recorded_args = {"args": [2], "kwargs": {}}
        assert {1: ("charge", "arguments", recorded_args, {"args": [3], "kwargs": {}})} == {
            n: d for n, d in found.items() if n == 1
        }
        assert [1, 3] == sorted(found)

    async def test_a_changed_output(self, recorded: Any) -> None:
        @flow(id="orders")
        async def orders_loud(n: int) -> str:
            x = await fetch(n)
            if x % 2 == 0:
                x = await charge(x)
            if n % 3 == 0:
                await flow.wait("approval")
            return (await ship(x)).upper()

        found = diverged(await replay_all(recorded, orders_loud, 2))
        assert (None, "output", "shipped 1", "SHIPPED 1") == found[0]

    async def test_a_run_replays_with_the_patches_it_recorded(self) -> None:
        store = MemoryStore()
        async with flowkit.Runtime(store=store, flows=[fraud_old]) as rt:
            await rt.run(fraud_old, run_id="before", order="A1")
            await rt.signal("before", "approval", "yes")
        async with flowkit.Runtime(store=store, flows=[fraud_new]) as rt:
            await rt.run(fraud_new, run_id="after", order="B2")
            await rt.signal("after", "approval", "yes")
        before = await replay_async("before", fraud_new, store=store)  # takes the else block
        after = await replay_async("after", fraud_new, store=store)
        unpatched = await replay_async("after", fraud_old, store=store)
        assert (True, True) == (before.ok, after.ok)
        assert unpatched.divergence is not None
        assert ("old_check", "node 'new_check'") == (
            unpatched.divergence.node_id,
            unpatched.divergence.recorded,
        )

    async def test_a_cut_output_cannot_be_replayed(self) -> None:
        @node
        async def big() -> str:
            return "x" * 1000

        @flow(id="big")
        async def make_big() -> str:
            return await big()

        store = MemoryStore(history_payload=128)
        async with flowkit.Runtime(store=store, flows=[make_big]) as rt:
            await rt.run(make_big, run_id="b1")
        result = await replay_async("b1", make_big, store=store)
        assert (False, None) == (result.ok, result.divergence)
        assert "the output of node 'big' was cut" == result.incomplete

    async def test_a_history_without_outputs_cannot_be_replayed(self, recorded: Any) -> None:
        events = await recorded.history("r1")
        older = [attrs.evolve(e, data=_without(e.data, "dispatch_id")) for e in events]
        result = await replay_async(older, orders)
        assert "node 'fetch' ran before flowkit recorded node outputs" in str(result.incomplete)

    async def test_a_run_of_another_flow_is_refused(self, recorded: Any) -> None:
        @flow(id="other")
        async def other(n: int) -> int:
            return n

        with pytest.raises(ConfigurationError, match="is a run of flow 'orders', not of 'other'"):
            await replay_async("r1", other, store=recorded)

    async def test_a_run_id_needs_a_store(self) -> None:
        with pytest.raises(ConfigurationError, match=r"needs store=\.\.\."):
            await replay_async("r1", orders)


def _without(data: dict[str, Any], key: str) -> dict[str, Any]:
    return {k: v for k, v in data.items() if k != key}


def test_replay_takes_a_history() -> None:
    async def history() -> list[Any]:
        store = MemoryStore()
        await record(store, 4)
        return await store.history("r3")

    events = anyio.run(history)
    assert (True, False) == (replay(events, orders).ok, replay(events, orders_renamed).ok)


class TestCommand:
    """``flowkit replay`` prints each divergence and a summary; exit 1 when any diverges."""

    def test_replay_command(self, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
        path = tmp_path / "runs.db"

        async def record_in_sqlite() -> None:
            store = SQLiteStore(str(path))
            try:
                await record(store, 12)
            finally:
                await store.close()

        anyio.run(record_in_sqlite)
        url = f"sqlite:///{path}"
        assert 0 == main(["replay", "--store", url, "--app", "deploy_flows:orders"])
        same = capsys.readouterr().out
        assert 1 == main(["replay", "--store", url, "--app", "deploy_flows:orders_renamed"])
        renamed = capsys.readouterr().out
        assert 0 == main(["replay", "--store", url, "--app", "deploy_flows:orders", "--flow", "x"])
        none = capsys.readouterr().out
        assert same.endswith(
            "replayed 12 runs: 12 ok, 0 diverged, 0 not replayable; 0 of flows --app does not "
            "define\n"
        )
        diverging = [line for line in renamed.splitlines() if line.startswith("DIVERGED")]
        assert 4 == len(diverging)  # r0, r3, r6, r9
        assert "run 'r9' diverges at 'approval-v2' (next step)" in diverging[0]
        assert "replayed 12 runs: 8 ok, 4 diverged" in renamed
        assert "replayed 0 runs" in none
        assert 1 == main(
            ["replay", "--store", url, "--app", "deploy_flows:orders_renamed", "--json"]
        )
        rows = json.loads(capsys.readouterr().out)
        first = next(r for r in rows["runs"] if "divergence" in r)  # newest first: r9
        assert ("r9", "approval-v2", "next step") == (
            first["run_id"],
            first["divergence"]["node_id"],
            first["divergence"]["what"],
        )
        assert (12, 4, 0) == (
            len(rows["runs"]),
            sum("divergence" in r for r in rows["runs"]),
            rows["skipped"],
        )


@node
async def inc(x: int) -> int:
    return x + 1


@flow
async def kid(x: int) -> int:
    return await inc(x)


@flow(id="shapes")
async def shapes(x: int) -> int:
    y = await kid(x)
    z, w = await flow.gather(inc(y), inc(y + 1))
    r = await flow.first(inc(1), inc(2))
    items = await flow.map(inc, [1, 2, 3], concurrency=2)
    return y + z + w + r + sum(items)


@flow(id="shapes")
async def shapes_changed(x: int) -> int:
    y = await kid(x)
    z, w = await flow.gather(inc(y), inc(y + 2))
    r = await flow.first(inc(1), inc(2))
    items = await flow.map(inc, [1, 2, 3], concurrency=2)
    return y + z + w + r + sum(items)


class TestShapes:
    """Subflows, gathers, races and maps replay from the history (a child's result
    from the child's own history)."""

    pytestmark = pytest.mark.anyio

    async def test_subflow_gather_first_map(self) -> None:
        store = MemoryStore()
        async with flowkit.Runtime(store=store, flows=[shapes]) as rt:
            assert 20 == (await rt.run(shapes, run_id="s1", x=1)).output
        same = await replay_async("s1", shapes, store=store)
        changed = await replay_async("s1", shapes_changed, store=store)
        assert (True, None) == (same.ok, same.incomplete)
        assert changed.divergence is not None
        assert ("inc#2", "arguments", {"args": [3], "kwargs": {}}) == (
            changed.divergence.node_id,
            changed.divergence.what,
            changed.divergence.recorded,
        )

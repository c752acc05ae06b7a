"""``flow.patched`` / ``flow.deprecate_patch``: a run started before a deploy keeps the old
path on the new code, a run started after takes the new one, in every shell: in memory
(``flow.run``, ``Runtime`` over a store), under ``simulate()`` and on a ``Worker`` over
a SQLiteStore. The flows are in tests/deploy_flows.py.
"""

from __future__ import annotations

from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Any

import anyio
import pytest
from deploy_flows import (
    fraud_done,
    fraud_new,
    fraud_old,
    new_check,
    old_check,
    pricing_new,
    pricing_old,
)

import flowkit
from flowkit import CompileError, ConfigurationError, ResumeError, flow, node
from flowkit.stores import MemoryStore, SQLiteStore
from flowkit.testing import simulate
from flowkit.transports import MemoryTransport

if TYPE_CHECKING:
    from collections.abc import AsyncIterator
    from pathlib import Path

pytestmark = pytest.mark.anyio

BOUND = 30.0  # seconds these in-process runs certainly finish within (they take milliseconds)


class TestCompiling:
    """A patch compiles to a branch decided by the run's patches; misuse is a CompileError."""

    def test_patch_branch_keeps_the_old_path_ids(self) -> None:
        assert ["fraud-check-v2"] == fraud_new.blueprint.metadata["patches"]
        branch = fraud_new.blueprint.node("patch:fraud-check-v2")
        assert ("branch", {"patch": "fraud-check-v2"}) == (branch.kind, dict(branch.params))
        ids = {n.id for n in fraud_old.blueprint.nodes if n.kind in ("call", "wait")}
        assert ids <= {n.id for n in fraud_new.blueprint.nodes}

    def test_deprecated_patch_is_known_and_marked(self) -> None:
        metadata = fraud_done.blueprint.metadata
        assert (["fraud-check-v2"], ["fraud-check-v2"]) == (
            metadata["patches"],
            metadata["deprecated_patches"],
        )

    def test_patched_outside_an_if_condition_is_refused(self) -> None:
        with pytest.raises(CompileError, match=r"must be the whole condition of an `if`"):

            @flow
            async def bad(x: int) -> bool:
                return flow.patched("p") and x > 1

    def test_patched_and_deprecated_at_once_is_refused(self) -> None:
        with pytest.raises(CompileError, match="both patched and deprecated"):

            @flow
            async def both(x: int) -> int:
                flow.deprecate_patch("p")
                if flow.patched("p"):
                    return x
                return -x

    def test_patch_id_must_be_a_literal(self) -> None:
        name = "p"
        with pytest.raises(CompileError, match=r"flow\.patched's id must be a literal"):

            @flow
            async def computed(x: int) -> int:
                if flow.patched(name):
                    return x
                return -x


@node
async def double(x: int) -> int:
    return 2 * x


@flow
async def doubled_when_patched(x: int) -> int:
    if flow.patched("double"):
        x = await double(x)
    return x


class TestInMemory:
    """``flow.run`` starts runs with every patch its code knows."""

    async def test_a_new_run_takes_the_new_path(self) -> None:
        assert 14 == (await doubled_when_patched.run(x=7)).output

    async def test_plain_python_call_is_the_new_code(self) -> None:
        assert 14 == await doubled_when_patched(7)


@asynccontextmanager
async def runtime(store: Any, flows: list[Any]) -> AsyncIterator[flowkit.Runtime]:
    with anyio.fail_after(BOUND):
        async with flowkit.Runtime(store=store, flows=flows) as rt:
            yield rt


class TestRuntimeDeploy:
    """A Runtime over a store continues runs of the old code on the patched code."""

    async def test_old_run_keeps_old_path_new_run_takes_new(self) -> None:
        store = MemoryStore()
        async with runtime(store, [fraud_old]) as rt:
            parked = await rt.run(fraud_old, run_id="before", order="A1")
        assert "awaiting" == parked.status
        async with runtime(store, [fraud_new]) as rt:
            old = await rt.signal("before", "approval", "yes")
            fresh = await rt.run(fraud_new, run_id="after", order="B2")
            fresh = await rt.signal("after", "approval", "yes")
        assert ("old:A1/yes", "new:B2/yes") == (old.output, fresh.output)

    async def test_deprecated_patch_refuses_a_run_from_before_the_patch(self) -> None:
        store = MemoryStore()
        async with runtime(store, [fraud_old]) as rt:
            await rt.run(fraud_old, run_id="before", order="A1")
        async with runtime(store, [fraud_new]) as rt:
            await rt.run(fraud_new, run_id="patched", order="B2")
        async with runtime(store, [fraud_done]) as rt:
            with pytest.raises(ResumeError, match=r"whose old code flow\.deprecate_patch removed"):
                await rt.signal("before", "approval", "yes")
            done = await rt.signal("patched", "approval", "yes")
        assert "new:B2/yes" == done.output

    async def test_a_patched_version_without_the_parked_node_refuses(self) -> None:
        @flow(id="fraud")
        async def renamed(order: str) -> str:
            decision = await flow.wait("approval-v2")
            if flow.patched("fraud-check-v2"):
                return await new_check(f"{order}/{decision}")
            return await old_check(f"{order}/{decision}")

        store = MemoryStore()
        async with runtime(store, [fraud_old]) as rt:
            await rt.run(fraud_old, run_id="before", order="A1")
        async with runtime(store, [renamed]) as rt:
            with pytest.raises(ResumeError, match="parked in node 'approval', which this code"):
                await rt.signal("before", "approval", "yes")

    async def test_unpatched_new_code_still_refuses_old_runs(self) -> None:
        store = MemoryStore()
        async with runtime(store, [fraud_new]) as rt:
            await rt.run(fraud_new, run_id="knows-patch", order="A1")
        async with runtime(store, [fraud_old]) as rt:  # a rollback: old code, no patches
            with pytest.raises(ResumeError, match="was started by flow 'fraud'"):
                await rt.signal("knows-patch", "approval", "yes")


class TestSimulate:
    """``simulate(before_patches=...)`` starts a run as of before those patches."""

    def test_default_is_after_every_patch(self) -> None:
        sim = simulate(fraud_new, order="A1", signals={"approval": "ok"})
        assert ("new:A1/ok", ["approval", "new_check"]) == (sim.output, sim.visited)

    def test_before_the_patch_takes_the_old_path(self) -> None:
        sim = simulate(
            fraud_new, order="A1", signals={"approval": "ok"}, before_patches=["fraud-check-v2"]
        )
        assert ("old:A1/ok", ["approval", "old_check"]) == (sim.output, sim.visited)

    def test_before_patches_is_for_the_one_process_simulator(self) -> None:
        with pytest.raises(ConfigurationError, match="drop workers= and faults="):
            simulate(fraud_new, order="A1", workers=2, before_patches=["fraud-check-v2"])

    def test_elif_patched(self) -> None:
        @flow
        async def chooser(x: int) -> str:
            if x < 0:
                return "negative"
            elif flow.patched("zero"):
                return "patched"
            return "old"

        assert ("patched", "old") == (
            simulate(chooser, x=1).output,
            simulate(chooser, x=1, before_patches=["zero"]).output,
        )

    def test_an_unknown_patch_id_is_refused(self) -> None:
        with pytest.raises(ConfigurationError, match=r"patches the flow does not know: \['typo'\]"):
            simulate(fraud_new, order="A1", before_patches=["typo"])


# -- Worker over a SQLiteStore -------------------------------------------------------------
@asynccontextmanager
async def fleet(store: Any, flows: list[Any]) -> AsyncIterator[flowkit.Client]:
    transport = MemoryTransport()
    worker = flowkit.Worker(flows, transport, store, poll_interval=0.05)
    client = flowkit.Client(transport, store, flows=flows, poll_interval=0.01)
    try:
        with anyio.fail_after(BOUND):
            async with anyio.create_task_group() as tg:
                await tg.start(worker.run)
                yield client
                tg.cancel_scope.cancel()
    finally:
        await transport.close()


class TestWorkerDeploy:
    """A worker with the patched code continues a run the old code parked at a wait."""

    async def test_parked_run_continues_on_the_old_branch(self, tmp_path: Path) -> None:
        store = SQLiteStore(str(tmp_path / "runs.db"))
        try:
            async with fleet(store, [fraud_old]) as client:
                await client.start(fraud_old, run_id="before", order="A1")  # waits at once
                parked = (await client.result("before")).status
            async with fleet(store, [fraud_new]) as client:
                await client.signal("before", "approval", "yes")
                old = await client.wait("before")
                await client.start(fraud_new, run_id="after", order="B2")
                await client.signal("after", "approval", "yes")
                new = await client.wait("after")
            history = [
                e.node_id for e in await store.history("before") if e.kind == "node.completed"
            ]
        finally:
            await store.close()
        assert "awaiting" == parked
        assert ("old:A1/yes", "new:B2/yes") == (old.output, new.output)
        assert ["old_check"] == history

    async def test_a_message_of_the_old_code_runs_on_the_patched_code(self, tmp_path: Path) -> None:
        store = SQLiteStore(str(tmp_path / "runs.db"))
        transport = MemoryTransport()
        try:
            old_client = flowkit.Client(transport, store, flows=[pricing_old])
            await old_client.start(pricing_old, run_id="queued", x=1)  # no worker takes it yet
            worker = flowkit.Worker([pricing_new], transport, store, poll_interval=0.05)
            client = flowkit.Client(transport, store, flows=[pricing_new], poll_interval=0.01)
            with anyio.fail_after(BOUND):
                async with anyio.create_task_group() as tg:
                    await tg.start(worker.run)
                    queued = await client.wait("queued")
                    fresh = await client.run(pricing_new, run_id="fresh", x=1)
                    tg.cancel_scope.cancel()
        finally:
            await transport.close()
            await store.close()
        assert (101, 100) == (queued.output, fresh.output)

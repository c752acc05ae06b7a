"""``flowkit diff OLD NEW [--store URL] [--app M] [--map A=B] [--json]``, run in-process
against real SQLite and PostgreSQL stores holding runs of ``orders_v1`` parked at a wait,
with a node in flight, and finished; and ``flowkit runs list`` showing each run's version."""

from __future__ import annotations

import json
import os
import uuid
from typing import TYPE_CHECKING, Any

import anyio
import pytest
from diff_flows import batch_v1, naps_v1, orders_added, orders_v1

import flowkit
from flowkit.cli._main import main
from flowkit.stores import from_url
from flowkit.transports import MemoryTransport

if TYPE_CHECKING:
    from collections.abc import Iterator

PG_DSN = os.environ.get("FLOWKIT_TEST_POSTGRES", "postgresql://postgres@127.0.0.1:5432/test")
OLD, ADDED, RENAMED = "diff_flows:orders_v1", "diff_flows:orders_added", "diff_flows:orders_renamed"


@pytest.fixture(scope="module", params=["sqlite", "postgres"])
def url(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A store with runs of orders_v1: 'waiting' (at its wait), 'in-flight' (its first
    node sent to no worker) and 'done' (completed); 'napping' (a run of naps_v1 in its
    sleep) and 'parent' (a run of batch_v1 whose child, an orders_v1 run, waits)."""
    name = f"fk_cli_diff_{uuid.uuid4().hex[:12]}"
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path_factory.mktemp('cli_diff') / 'runs.db'}"
    else:
        url = f"{PG_DSN}?schema={name}"
    anyio.run(_make_runs, url)
    yield url
    if request.param == "postgres":
        anyio.run(_drop_schema, name)


async def _make_runs(url: str) -> None:
    store = from_url(url)
    try:
        async with flowkit.Runtime(store=store, flows=[orders_v1]) as rt:
            await rt.run(orders_v1, run_id="waiting", n=1)
            await rt.run(orders_v1, run_id="done", n=2)
            await rt.signal("done", "approval", "ana")
        async with flowkit.Runtime(store=store, flows=[naps_v1, batch_v1]) as rt:
            await rt.run(naps_v1, run_id="napping", n=1)  # a timer
            await rt.run(batch_v1, run_id="parent", n=1)  # a child, waiting for approval
        client = flowkit.Client(MemoryTransport(), store, flows=[orders_v1])
        await client.start(orders_v1, run_id="in-flight", n=3)  # no worker: fetch in flight
    finally:
        await store.close()


async def _drop_schema(name: str) -> None:
    import psycopg
    from psycopg import sql

    async with await psycopg.AsyncConnection.connect(PG_DSN, autocommit=True) as conn:
        await conn.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(name)))


def flowkit_json(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, Any]:
    status = main([*argv, "--json"])
    return status, json.loads(capsys.readouterr().out)


class TestStoreCheck:
    """Every unfinished run of OLD's flow is checked against NEW; stranded runs exit 1."""

    def test_compatible_version_exits_0(self, url: str, capsys: pytest.CaptureFixture[str]) -> None:
        status = main(["diff", OLD, ADDED, "--store", url])
        out = capsys.readouterr().out
        assert 0 == status
        assert "3 unfinished runs of 'orders' checked: 3 can continue on NEW, 0 would" in out
        assert "wait approval" in out
        assert "node fetch" in out

    def test_renamed_wait_strands_the_waiting_run(
        self, url: str, capsys: pytest.CaptureFixture[str]
    ) -> None:
        status, data = flowkit_json(capsys, "diff", OLD, RENAMED, "--store", url)
        by_run = {run["run_id"]: run for run in data["runs"]}
        assert (1, 2) == (status, data["stranded"])  # 'waiting' and the child of 'parent'
        assert {"waiting", "in-flight"} < set(by_run)
        assert "done" not in by_run  # a finished run is not checked
        assert (True, False) == (by_run["waiting"]["stranded"], by_run["in-flight"]["stranded"])
        (position,) = by_run["waiting"]["positions"]
        assert ("wait", "approval", False) == (
            position["kind"],
            position["node"],
            position["ok"],
        )

    def test_map_does_not_rename_a_signal(
        self, url: str, capsys: pytest.CaptureFixture[str]
    ) -> None:
        argv = ["diff", OLD, RENAMED, "--store", url, "--map", "approval=manager-approval"]
        status, data = flowkit_json(capsys, *argv)
        problems = [p["problem"] for r in data["runs"] for p in r["positions"] if not p["ok"]]
        assert 1 == status
        assert 2 == len(problems)
        assert all("must keep its signal name" in problem for problem in problems)

    def test_removed_sleep_strands_the_napping_run(
        self, url: str, capsys: pytest.CaptureFixture[str]
    ) -> None:
        status, data = flowkit_json(
            capsys, "diff", "diff_flows:naps_v1", "diff_flows:naps_v2", "--store", url
        )
        (run,) = data["runs"]
        (position,) = run["positions"]
        assert (1, "napping") == (status, run["run_id"])
        assert ("timer", "sleep", False) == (position["kind"], position["node"], position["ok"])

    def test_removed_subflow_strands_the_parent(
        self, url: str, capsys: pytest.CaptureFixture[str]
    ) -> None:
        status, data = flowkit_json(
            capsys, "diff", "diff_flows:batch_v1", "diff_flows:batch_v2", "--store", url
        )
        (run,) = data["runs"]
        (position,) = run["positions"]
        assert (1, "parent") == (status, run["run_id"])
        assert ("child", False) == (position["kind"], position["ok"])

    def test_same_version_strands_nothing(
        self, url: str, capsys: pytest.CaptureFixture[str]
    ) -> None:
        for old in ("diff_flows:naps_v1", "diff_flows:batch_v1", OLD):
            assert 0 == main(["diff", old, old, "--store", url])
        assert "0 would be stranded" in capsys.readouterr().out

    def test_runs_list_shows_the_version(
        self, url: str, capsys: pytest.CaptureFixture[str]
    ) -> None:
        status = main(["runs", "list", "--store", url, "--flow", "orders"])
        out = capsys.readouterr().out
        assert 0 == status
        assert "version" in out
        assert orders_v1.blueprint.digest[:12] in out


class TestVersions:
    """OLD and NEW may be blueprint JSON files, MODULE:FLOW specs, or --app ids/digests."""

    def test_blueprint_file_against_a_module(
        self, tmp_path: Any, capsys: pytest.CaptureFixture[str]
    ) -> None:
        old = tmp_path / "old.json"
        old.write_text(orders_v1.blueprint.to_json(indent=2))
        status = main(["diff", str(old), ADDED])
        out = capsys.readouterr().out
        assert 0 == status
        assert "node added" in out
        assert "reserve" in out

    def test_digests_of_the_app(self, capsys: pytest.CaptureFixture[str]) -> None:
        old, new = orders_v1.blueprint.digest[:10], orders_added.blueprint.digest[:10]
        status, data = flowkit_json(capsys, "diff", old, new, "--app", "diff_flows")
        assert (0, ["reserve"]) == (status, data["diff"]["added"])
        assert data["runs"] is None

    def test_unknown_version_is_bad_usage(self, capsys: pytest.CaptureFixture[str]) -> None:
        status = main(["diff", "nothing.json", ADDED])
        assert 2 == status
        assert "'nothing.json' is no blueprint JSON file" in capsys.readouterr().err

    def test_bad_map_is_bad_usage(self, capsys: pytest.CaptureFixture[str]) -> None:
        with pytest.raises(SystemExit) as exited:
            main(["diff", OLD, ADDED, "--map", "approval"])
        assert 2 == exited.value.code
        assert "expected OLD_NODE=NEW_NODE" in capsys.readouterr().err

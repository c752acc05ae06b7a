"""``flowkit runs list | show | history | start | cancel | signal | retry | purge``, driven as a
subprocess against a SQLite store that holds runs in every status (made here, in-process,
with the same store)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import time
from typing import TYPE_CHECKING, Any

import anyio
import pytest

import flowkit
from flowkit import RunStatus
from flowkit._clock import use_clock
from flowkit.stores import SQLiteStore
from flowkit.transports import MemoryTransport

if TYPE_CHECKING:
    from pathlib import Path

APP = """
    from flowkit import Limit, flow, node

    @node
    async def echo(x: int) -> int:
        return x

    @node
    async def explode(x: int) -> int:
        raise ValueError(f"no {x}")

    @flow
    async def good(x: int) -> int:
        return await echo(x)

    @flow
    async def bad(x: int) -> int:
        return await explode(x)

    @flow
    async def gated() -> int:
        return int(await flow.wait("go"))

    @flow(concurrency=Limit(max=1))
    async def single(x: int) -> int:
        return await echo(x)
"""


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """A store with a completed, failed, awaiting, cancelled, running and queued run."""
    folder = tmp_path_factory.mktemp("runs_cli")
    (folder / "runs_app.py").write_text(textwrap.dedent(APP))
    sys.path.insert(0, str(folder))
    try:
        import runs_app
    finally:
        sys.path.remove(str(folder))
    ids = anyio.run(_make_runs, folder / "runs.db", runs_app)
    return {"folder": folder, "app": runs_app, "store": f"sqlite:///{folder / 'runs.db'}", **ids}


async def _make_runs(path: Path, app: Any) -> dict[str, str]:
    store = SQLiteStore(path)
    try:
        async with flowkit.Runtime(store=store) as rt:
            done = await rt.run(app.good, x=1, tags={"customer": "c1"})
            failed = await rt.run(app.bad, x=2, tags={"customer": "c2"})
            waiting = await rt.run(app.gated)
            cancelled = await rt.run(app.gated)
            await rt.cancel(cancelled.run_id)
        client = flowkit.Client(MemoryTransport(), store, flows=[app.good, app.single])
        running = await client.start(app.good, x=3)  # no worker: it stays running
        holding = await client.start(app.single, x=4)  # holds the flow's one slot: running
        queued = await client.start(app.single, x=5)  # waits for that slot
    finally:
        await store.close()
    return {
        "completed": done.run_id,
        "failed": failed.run_id,
        "awaiting": waiting.run_id,
        "cancelled": cancelled.run_id,
        "running": running.run_id,
        "queued": queued.run_id,
        "holding": holding.run_id,
    }


def flowkit_cli(runs: dict[str, Any], *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(runs["folder"]), "COLUMNS": "200"}
    return subprocess.run(
        [sys.executable, "-m", "flowkit", *args],
        capture_output=True,
        text=True,
        env=env,
        cwd=runs["folder"],
        timeout=120,
    )


def listed(runs: dict[str, Any], *flags: str) -> list[dict[str, Any]]:
    done = flowkit_cli(runs, "runs", "list", "--store", runs["store"], "--json", *flags)
    assert done.returncode == 0, done.stderr
    return list(json.loads(done.stdout))


def test_list_shows_runs_in_every_status(runs: dict[str, Any]) -> None:
    by_id = {row["run_id"]: row for row in listed(runs)}
    statuses = {status.value for status in RunStatus}
    assert {by_id[runs[status]]["status"] for status in statuses} == statuses
    failed = by_id[runs["failed"]]
    assert (failed["flow"], failed["tags"]) == ("bad", {"customer": "c2"})
    assert "no 2" in failed["error_message"]
    assert by_id[runs["completed"]]["finished_at"] is not None
    assert by_id[runs["running"]]["finished_at"] is None


def test_list_filters_combine(runs: dict[str, Any]) -> None:
    assert [runs["failed"]] == [r["run_id"] for r in listed(runs, "--status", "failed")]
    tagged = listed(runs, "--tag", "customer=c1")
    assert [runs["completed"]] == [r["run_id"] for r in tagged]
    gated = {r["run_id"] for r in listed(runs, "--flow", "gated")}
    assert gated == {runs["awaiting"], runs["cancelled"]}
    assert len(listed(runs, "--limit", "2")) == 2


def test_list_prints_a_table_for_people(runs: dict[str, Any]) -> None:
    done = flowkit_cli(runs, "runs", "list", "--store", runs["store"], "--status", "failed")
    assert done.returncode == 0, done.stderr
    row = next(line for line in done.stdout.splitlines() if runs["failed"] in line)
    assert ["bad", "failed", "customer=c2"] == [
        cell for cell in row.split() if cell in ("bad", "failed", "customer=c2")
    ]


def test_signal_and_cancel_act_on_stored_runs(runs: dict[str, Any], tmp_path: Path) -> None:
    own = anyio.run(_make_runs, tmp_path / "own.db", runs["app"])  # the others stay as they are
    queue = f"sqlite:///{tmp_path / 'queue.db'}"
    store = f"sqlite:///{tmp_path / 'own.db'}"
    common = ("--app", "runs_app", "--store", store, "--transport", queue, "--json")
    signalled = flowkit_cli(runs, "runs", "signal", own["awaiting"], "go", "--data", "5", *common)
    assert signalled.returncode == 0, signalled.stderr
    assert json.loads(signalled.stdout)["status"] == "completed"
    cancelled = flowkit_cli(runs, "runs", "cancel", own["running"], *common)
    assert cancelled.returncode == 0, cancelled.stderr
    assert json.loads(cancelled.stdout)["status"] == "cancelled"


def test_show_describes_a_run_and_draws_its_path(runs: dict[str, Any]) -> None:
    store = ("--store", runs["store"])
    shown = flowkit_cli(runs, "runs", "show", runs["failed"], *store, "--json")
    assert shown.returncode == 0, shown.stderr
    described = json.loads(shown.stdout)
    assert ("failed", "bad") == (described["run"]["status"], described["run"]["flow"])
    (explode,) = [row for row in described["nodes"] if row["node_id"] == "explode"]
    assert ("failed", 1) == (explode["status"], explode["attempts"])
    assert "no 2" in explode["error"]
    drawn = flowkit_cli(runs, "runs", "show", runs["failed"], *store, "--app", "runs_app")
    assert drawn.returncode == 0, drawn.stderr
    assert "✗ explode" in drawn.stdout  # the path, with the failed node marked
    assert "ValueError: no 2" in drawn.stdout
    waiting = flowkit_cli(runs, "runs", "show", runs["awaiting"], *store, "--json")
    assert ["go"] == [wait["name"] for wait in json.loads(waiting.stdout)["waits"]]


def test_history_lists_a_runs_events_in_order(runs: dict[str, Any]) -> None:
    store = ("--store", runs["store"])
    listed_events = flowkit_cli(runs, "runs", "history", runs["completed"], *store, "--json")
    assert listed_events.returncode == 0, listed_events.stderr
    events = json.loads(listed_events.stdout)
    assert list(range(1, len(events) + 1)) == [event["seq"] for event in events]
    assert ("run.started", "run.completed") == (events[0]["kind"], events[-1]["kind"])
    assert {"inputs": {"x": 1}} == {"inputs": events[0]["data"]["inputs"]}
    table = flowkit_cli(runs, "runs", "history", runs["completed"], *store)
    assert table.returncode == 0, table.stderr
    assert "node.completed" in table.stdout


def test_start_starts_a_flow_by_its_id(runs: dict[str, Any], tmp_path: Path) -> None:
    store = f"sqlite:///{tmp_path / 'started.db'}"
    queue = f"sqlite:///{tmp_path / 'queue.db'}"
    common = ("--app", "runs_app", "--store", store, "--transport", queue)
    started = flowkit_cli(
        runs, "runs", "start", "good", "--input", '{"x": 4}', "--tag", "customer=c9", *common
    )
    assert started.returncode == 0, started.stderr
    run_id = started.stdout.strip()
    again = flowkit_cli(
        runs, "runs", "start", "good", "--input", '{"x": 5}', "--run-id", run_id, "--json", *common
    )
    assert again.returncode == 0, again.stderr  # that run exists: left as it is
    assert {"run_id": run_id, "flow": "good", "status": "running"} == json.loads(again.stdout)
    [row] = listed({**runs, "store": store})
    assert (run_id, "good", {"customer": "c9"}) == (row["run_id"], row["flow"], row["tags"])
    done = anyio.run(_served, runs["app"], tmp_path, run_id)
    assert (RunStatus.COMPLETED, 4) == (done.status, done.output)


async def _served(app: Any, folder: Path, run_id: str) -> flowkit.RunResult:
    """The run's result once a worker on the SQLite queue and store has run it."""
    from flowkit.transports import from_url

    store = SQLiteStore(folder / "started.db")
    transport = from_url(f"sqlite:///{folder / 'queue.db'}")
    worker = flowkit.Worker([app.good], transport, store, poll_interval=0.05)
    try:
        with anyio.fail_after(30):
            async with anyio.create_task_group() as tg:
                await tg.start(worker.run)
                done = await flowkit.Client(transport, store, flows=[app.good]).wait(run_id)
                tg.cancel_scope.cancel()
    finally:
        await transport.close()
        await store.close()
    return done


def test_start_names_the_known_flows_for_an_unknown_one(
    runs: dict[str, Any], tmp_path: Path
) -> None:
    store = ("--store", f"sqlite:///{tmp_path / 'runs.db'}")
    transport = ("--transport", f"sqlite:///{tmp_path / 'queue.db'}")
    done = flowkit_cli(runs, "runs", "start", "godo", "--app", "runs_app", *store, *transport)
    assert (2, 1) == (done.returncode, len(done.stderr.strip().splitlines())), done.stderr
    assert "no flow named 'godo'" in done.stderr
    assert "bad v1, gated v1, good v1" in done.stderr


def test_retry_resumes_a_failed_run_and_refuses_others(
    runs: dict[str, Any], tmp_path: Path
) -> None:
    own = anyio.run(_make_runs, tmp_path / "own.db", runs["app"])
    queue = f"sqlite:///{tmp_path / 'queue.db'}"
    store = f"sqlite:///{tmp_path / 'own.db'}"
    common = ("--app", "runs_app", "--store", store, "--transport", queue, "--json")
    retried = flowkit_cli(runs, "runs", "retry", own["failed"], *common)
    assert retried.returncode == 0, retried.stderr
    assert "running" == json.loads(retried.stdout)["status"]  # its node waits for a worker
    again = flowkit_cli(runs, "runs", "retry", own["completed"], *common)
    assert (2, 1) == (again.returncode, len(again.stderr.strip().splitlines())), again.stderr
    assert "only a failed run can be retried" in again.stderr


def test_purge_deletes_old_finished_runs_only(runs: dict[str, Any], tmp_path: Path) -> None:
    with use_clock(lambda: time.time() - 10 * 86400):  # made ten days ago
        own = anyio.run(_make_runs, tmp_path / "old.db", runs["app"])
    store = ("--store", f"sqlite:///{tmp_path / 'old.db'}")
    unasked = flowkit_cli(runs, "runs", "purge", "--older-than", "7d", *store)
    assert (2, 1) == (unasked.returncode, len(unasked.stderr.strip().splitlines()))
    assert "pass --yes" in unasked.stderr
    failed = flowkit_cli(
        runs, "runs", "purge", "--older-than", "7d", "--status", "failed", "--yes", "--json", *store
    )
    assert failed.returncode == 0, failed.stderr
    assert {"purged": 1} == json.loads(failed.stdout)
    rest = flowkit_cli(runs, "runs", "purge", "--older-than", "7d", "--yes", *store)
    assert rest.returncode == 0, rest.stderr
    assert "purged 2 runs" in rest.stdout
    left = {row["run_id"] for row in listed({**runs, "store": store[1]})}
    assert {own[s] for s in ("awaiting", "running", "queued", "holding")} == left


@pytest.mark.parametrize(
    "args",
    [
        ("runs", "purge", "--older-than", "soon", "--yes"),
        ("runs", "purge", "--older-than", "1d", "--status", "running", "--yes"),
        ("runs", "purge", "--yes"),
        ("runs", "retry", "x"),
        ("runs", "show", "no-such-run", "--store", "sqlite:///{store}"),
        ("runs", "history", "no-such-run", "--store", "sqlite:///{store}"),
        ("runs", "list", "--status", "lost"),
        ("runs", "list", "--since", "soon"),
        ("runs", "list", "--limit", "0"),
        ("runs", "list", "--tag", "customer"),
        ("runs", "signal", "x", "go", "--data", "{", "--app", "runs_app"),
        ("runs", "start", "good", "--input", "[1]", "--app", "runs_app"),
        ("runs", "start", "good", "--input", "{", "--app", "runs_app"),
        ("runs", "start", "good", "--input", "{}"),
        ("runs", "cancel", "x"),
        ("runs", "list", "--store", "nosuch://x"),
    ],
)
def test_bad_usage_is_one_line_and_exit_2(runs: dict[str, Any], args: tuple[str, ...]) -> None:
    store = runs["store"].removeprefix("sqlite:///")
    done = flowkit_cli(runs, *(arg.replace("{store}", store) for arg in args))
    assert (done.returncode, len(done.stderr.strip().splitlines())) == (2, 1), done.stderr
    assert "Traceback" not in done.stderr

"""Run history in the ``Store`` conformance suite: the same events on every store.

The same stores, servers and fixtures as ``test_store`` (MemoryStore and SQLiteStore
on asyncio and trio, PostgresStore and RedisStore against the real servers on
loopback, on asyncio alone). Runs are stepped the way the shells step them, through
``Replica.step`` (the core's transition, its history derived by
``flowkit.shell._history`` and one store commit), on a fake clock installed with
``use_clock``: every time is known, and no test sleeps.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

import pytest

import flowkit
from flowkit import HistoryEvent, StoreError
from flowkit import _clock as flowkit_clock
from flowkit.core import _protocol as p
from flowkit.core._machine import start_run
from flowkit.core._state import RunState
from flowkit.shell._describe import describe_stored
from flowkit.shell._durable import Replica
from flowkit.shell._flows import Flows
from flowkit.shell._history import Origin, start_history
from flowkit.stores._codec import encode_state
from flowkit.stores._history import HistoryEntry
from flowkit.stores._protocol import CommitsOptimistically, Conflict
from flowkit.testing import replay_async

from .test_store import CASES, PG_DSN, Database

if TYPE_CHECKING:
    from collections.abc import AsyncIterator
    from pathlib import Path

    from flowkit.shell._target import Target
    from flowkit.stores import Store

pytestmark = pytest.mark.anyio

ERROR = {"type": "builtins.ValueError", "mro": ["builtins.ValueError"], "message": "flaky"}


@flowkit.node(retries=1, backoff=flowkit.Backoff(initial="5s"))
async def fetch(x: int) -> int:
    return x + 1


@flowkit.node
async def boom(x: int) -> int:
    raise ValueError("never runs here")


@flowkit.flow
async def kid(x: int) -> int:
    return await fetch(x)


@flowkit.flow
async def story(x: int) -> int:
    y = await fetch(x)
    await flowkit.flow.sleep("1m")
    d = await flowkit.flow.wait("go", timeout="1h")
    z = await kid(y + d["k"])
    return z


@flowkit.flow
async def doomed(x: int) -> int:
    return await boom(x)


@flowkit.flow
async def patched_story(x: int) -> int:
    y = await fetch(x)
    if flowkit.flow.patched("bigger"):
        y = y * 10
    d = await flowkit.flow.wait("go", timeout="1h")
    return y + d["k"]


@flowkit.flow(id="patched_story")
async def renamed_story(x: int) -> int:
    y = await fetch(x)
    if flowkit.flow.patched("bigger"):
        y = y * 10
    d = await flowkit.flow.wait("go-now", timeout="1h")
    return y + d["k"]


class FakeClock:
    def __init__(self) -> None:
        self.now = 1_000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture(params=CASES)
def case(request: pytest.FixtureRequest) -> tuple[str, str]:
    return request.param  # type: ignore[no-any-return]


@pytest.fixture
def anyio_backend(case: tuple[str, str]) -> str:
    return case[1]


@pytest.fixture
async def db(case: tuple[str, str], tmp_path: Path) -> AsyncIterator[Database]:
    database = Database(case[0], tmp_path)
    yield database
    await database.drop()


@pytest.fixture
def store(db: Database) -> Store:
    return db.open()


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> FakeClock:
    """The flowkit clock, faked for the whole test (a context variable set in a fixture
    would not reach the test's task)."""
    fake = FakeClock()
    monkeypatch.setattr(flowkit_clock, "now", fake)
    return fake


FLOWS = Flows()
for _flow in (story, kid, doomed, patched_story):
    FLOWS.add(_flow)


def target(flow: Any) -> Target:
    return FLOWS.by_digest[flow.blueprint.digest]


async def begin(store: Store, flow: Any, run_id: str, at: float, **inputs: Any) -> Replica:
    """Create the run as the shells do (its first events with it); its replica."""
    program = target(flow).program
    state = RunState(run_id)
    commands = start_run(program, state, inputs)
    state.take_delta()
    assert await store.create_run(
        run_id,
        state,
        blueprint_id=flow.blueprint.id,
        digest=flow.blueprint.digest,
        created_at=at,
        **start_history(store, state, commands, at),
    )
    return Replica(program, state, 1)


def only_key(replica: Replica, section: str) -> str:
    keys = list(replica.state.sections[section])
    assert 1 == len(keys), replica.state.sections[section]
    return keys[0]


def kinds(events: list[HistoryEvent]) -> list[tuple[str, str | None, int | None]]:
    return [(e.kind, e.node_id, e.attempt) for e in events]


async def run_story(store: Store, clock: FakeClock) -> Replica:
    """Take ``story`` through a failed attempt, its retry, a sleep, a wait and its
    signal, and a child: every step one commit, 10 s apart."""
    run = await begin(store, story, "r1", clock.now, x=1)
    clock.now += 10
    origin = Origin("w1", clock.now - 4, clock.now - 1)
    await run.step(store, p.NodeFailed(only_key(run, "dispatches"), ERROR), origin=origin)
    clock.now += 10
    await run.step(store, p.TimerFired(only_key(run, "timers")))
    clock.now += 10
    completed = p.NodeCompleted(only_key(run, "dispatches"), 2)
    await run.step(store, completed, origin=Origin("w2", clock.now - 2, clock.now))
    clock.now += 10
    await run.step(store, p.TimerFired(only_key(run, "timers")))  # the sleep
    clock.now += 10
    await run.step(store, p.SignalReceived("go", {"k": 5}, delivery_id="d-1"))
    clock.now += 10
    child = only_key(run, "children")
    await run.step(store, p.ChildFinished(child, "completed", 8))
    return run


class TestEvents:
    async def test_a_runs_life(self, store: Store, clock: FakeClock) -> None:
        run = await run_story(store, clock)
        assert "completed" == run.state.header["status"]
        events = await store.history("r1")
        assert list(range(1, len(events) + 1)) == [e.seq for e in events]
        assert [
            ("run.started", None, None),
            ("node.scheduled", "fetch", 1),
            ("node.started", "fetch", 1),
            ("node.failed", "fetch", 1),
            ("node.retried", "fetch", 2),
            ("timer.set", "fetch", None),
            ("timer.fired", "fetch", None),
            ("node.scheduled", "fetch", 2),
            ("node.started", "fetch", 2),
            ("node.completed", "fetch", 2),
            ("timer.set", "sleep", None),
            ("timer.fired", "sleep", None),
            ("timer.set", "go", None),
            ("wait.entered", "go", None),
            ("timer.cancelled", "go", None),
            ("signal.received", "go", None),
            ("child.started", "kid", None),
            ("child.finished", "kid", None),
            ("run.completed", None, None),
        ] == kinds(events)
        by_kind = {e.kind: e for e in events}
        assert {"flow": "story", "inputs": {"x": 1}} == events[0].data
        assert (1_000.0, None) == (events[0].at, events[0].worker)
        failed = events[3]
        assert (1_009.0, "w1") == (failed.at, failed.worker)
        assert (3.0, True, "flaky") == (
            failed.data["duration"],
            failed.data["retry"],
            failed.data["error"]["message"],
        )
        assert (1_006.0, "w1") == (events[2].at, events[2].worker)
        assert {"delay": 5.0} == by_kind["node.retried"].data
        assert 1_015.0 == events[5].data["due_at"]
        assert ("w2", 2.0) == (events[9].worker, events[9].data["duration"])
        assert 1_030.0 + 60 == events[10].data["due_at"]  # the sleep, set on completion
        assert {"name": "go", "timeout_at": 1_040.0 + 3600} == by_kind["wait.entered"].data
        signal = by_kind["signal.received"]
        assert ("api", "d-1", {"k": 5}) == (
            signal.data["source"],
            signal.data["delivery_id"],
            signal.data["data"],
        )
        assert {"child_run_id": "r1/kid@1", "flow": "kid"} == by_kind["child.started"].data
        assert "completed" == by_kind["child.finished"].data["status"]
        assert ({"output": 8}, 1_060.0) == (events[-1].data, events[-1].at)

    async def test_a_failure_without_retries_fails_the_run(
        self, store: Store, clock: FakeClock
    ) -> None:
        run = await begin(store, doomed, "r2", clock.now, x=1)
        clock.now += 1
        await run.step(store, p.NodeFailed(only_key(run, "dispatches"), ERROR, retryable=False))
        events = await store.history("r2")
        assert [
            ("run.started", None, None),
            ("node.scheduled", "boom", 1),
            ("node.failed", "boom", 1),
            ("run.failed", None, None),
        ] == kinds(events)
        assert (False, None) == (events[2].data["retry"], events[2].data["duration"])
        assert ("flaky", "boom") == (
            events[3].data["error"]["message"],
            events[3].data["error"]["node"],
        )

    async def test_cancel(self, store: Store, clock: FakeClock) -> None:
        run = await begin(store, story, "r3", clock.now, x=1)
        clock.now += 1
        await run.step(store, p.CancelRequested("no longer needed"))
        assert [
            ("run.started", None, None),
            ("node.scheduled", "fetch", 1),
            ("run.cancel_requested", None, None),
            ("node.cancelled", "fetch", 1),
            ("run.cancelled", None, None),
        ] == kinds(await store.history("r3"))

    async def test_a_node_timeout_and_a_webhook_source(
        self, store: Store, clock: FakeClock
    ) -> None:
        from flowkit.shell._history import signal_source

        run = await begin(store, story, "r4", clock.now, x=1)
        timeout = {"type": "builtins.TimeoutError", "message": "node 'fetch' timed out after 2s"}
        await run.step(store, p.NodeFailed(only_key(run, "dispatches"), timeout))
        with signal_source("webhook"):
            await run.step(store, p.SignalReceived("go", None))  # before its wait: buffered
        events = await store.history("r4", after=2)
        assert ("node.timed_out", "fetch", 1) == kinds(events)[0]
        received = [e for e in events if e.kind == "signal.received"]
        assert [(None, "webhook", True)] == [
            (e.node_id, e.data["source"], e.data["buffered"]) for e in received
        ]


class TestReading:
    async def test_after_and_limit(self, store: Store, clock: FakeClock) -> None:
        await run_story(store, clock)
        every = await store.history("r1")
        assert every[5:8] == await store.history("r1", after=5, limit=3)
        assert [] == await store.history("r1", after=len(every))
        assert [] == await store.history("no-such-run")

    async def test_runs_are_numbered_apart(self, store: Store, clock: FakeClock) -> None:
        await begin(store, story, "a", clock.now, x=1)
        await begin(store, doomed, "b", clock.now, x=1)
        assert [1, 2] == [e.seq for e in await store.history("a")]
        assert [1, 2] == [e.seq for e in await store.history("b")]

    async def test_a_refused_create_writes_no_history(self, store: Store, clock: FakeClock) -> None:
        await begin(store, story, "r1", clock.now, x=1)
        with pytest.raises(AssertionError):
            await begin(store, doomed, "r1", clock.now, x=2)
        assert ["story"] == [
            e.data["flow"] for e in await store.history("r1") if e.data.get("flow")
        ]


class TestSameCommit:
    """History is written in the commit it describes: one that does not happen writes none."""

    async def test_a_conflicting_attempt_writes_no_history(
        self, store: Store, clock: FakeClock
    ) -> None:
        if not isinstance(store, CommitsOptimistically):
            pytest.skip(f"{type(store).__name__} always takes the lock")
        await begin(store, story, "r1", clock.now, x=1)
        entry = HistoryEntry(5.0, "test.event", None, None, None, "{}")
        with pytest.raises(Conflict):
            await store.attempt("r1", 7).commit([("context", "n", 1)], history=[entry])
        assert 2 == len(await store.history("r1"))
        await store.attempt("r1", 1).commit([("context", "n", 2)], history=[entry, entry])
        assert [(3, "test.event"), (4, "test.event")] == [
            (e.seq, e.kind) for e in (await store.history("r1"))[2:]
        ]

    async def test_a_commit_that_fails_writes_neither_state_nor_history(
        self, db: Database, clock: FakeClock
    ) -> None:
        """The SQL stores: a history row in the way (seq 3, written behind the store's
        back) fails the commit's history insert, and so the whole commit: the run stays
        at its version, and a later commit that writes no history still goes through."""
        if db.kind not in ("sqlite", "postgres"):
            pytest.skip("only the SQL stores can be made to fail half-way through a commit")
        store = db.open()
        await begin(store, story, "r1", clock.now, x=1)
        await _insert_stray_event(db, "r1", 3)
        entry = HistoryEntry(5.0, "test.event", None, None, None, "{}")
        with pytest.raises(StoreError):
            async with store.transaction("r1") as txn:
                await txn.commit([("context", "n", 1)], history=[entry])
        if isinstance(store, CommitsOptimistically):
            with pytest.raises(StoreError):
                await store.attempt("r1", 1).commit([("context", "n", 1)], history=[entry])
        loaded = await store.load("r1")
        assert loaded is not None
        assert (1, None) == (loaded[1], loaded[0].context.get("n"))
        assert ["run.started", "node.scheduled", "stray"] == [
            e.kind for e in await store.history("r1")
        ]
        async with store.transaction("r1") as txn:
            assert 2 == await txn.commit([("context", "n", 1)])

    async def test_a_stale_replica_records_its_step_once(
        self, db: Database, clock: FakeClock
    ) -> None:
        """A replica whose copy is stale loses its attempt (or takes the lock) and steps
        again caught up: its events are written once, numbered after the other's."""
        store = db.open()
        run = await begin(store, story, "r1", clock.now, x=1)
        loaded = await store.load("r1")
        assert loaded is not None
        stale = Replica(run.program, loaded[0], loaded[1])
        await run.step(store, p.SignalReceived("go", 1))  # buffered: the run moves on
        await stale.step(store, p.SignalReceived("go", 2))
        events = await store.history("r1")
        assert [1, 2, 3, 4] == [e.seq for e in events]
        assert [1, 2] == [e.data["data"] for e in events if e.kind == "signal.received"]


async def _insert_stray_event(db: Database, run_id: str, seq: int) -> None:
    row = (run_id, seq, 1.0, "stray", None, None, None, "{}")
    if db.kind == "sqlite":
        import sqlite3

        conn = sqlite3.connect(db.tmp_path / "runs.db", isolation_level=None)
        try:  # SQLite keeps a commit's events in one row: [[at, kind, node, ...], ...]
            events = '[[1.0, "stray", null, null, null, {}]]'
            conn.execute(
                "INSERT INTO flowkit_history VALUES (?, ?, ?, ?)", (run_id, seq, seq, events)
            )
        finally:
            conn.close()
        return
    import psycopg
    from psycopg import sql

    async with await psycopg.AsyncConnection.connect(PG_DSN, autocommit=True) as conn:
        await conn.execute(sql.SQL("SET search_path TO {}").format(sql.Identifier(db.name)))
        await conn.execute(
            "INSERT INTO flowkit_history VALUES (%s, %s, %s, %s, %s, %s, %s, %s)", row
        )


class TestBounds:
    async def test_payloads_are_truncated(self, db: Database, clock: FakeClock) -> None:
        store = db.open(history_payload=200)
        big = "x" * 5000
        run = await begin(store, story, "r1", clock.now, x=big)
        await run.step(store, p.SignalReceived("go", {"small": 1}))
        events = await store.history("r1")
        inputs = events[0].data["inputs"]
        assert (True, len(json.dumps({"x": big}, separators=(",", ":")))) == (
            inputs["truncated"],
            inputs["size"],
        )
        assert inputs["preview"].startswith('{"x":"xxx')
        assert len(json.dumps(inputs["preview"])) <= 200
        assert len(json.dumps(events[0].data)) < 300
        assert {"small": 1} == events[-1].data["data"]  # small payloads are whole
        assert "story" == events[0].data["flow"]

    async def test_history_off(self, db: Database, clock: FakeClock) -> None:
        store = db.open(history=False)
        run = await run_story(store, clock)
        assert [] == await store.history("r1")
        entry = HistoryEntry(5.0, "test.event", None, None, None, "{}")
        async with store.transaction("r1") as txn:  # given events anyway: not kept
            await txn.commit([("context", "n", 1)], history=[entry])
        assert [] == await store.history("r1")
        description = await describe_stored(store, "r1")
        assert ("completed", ["fetch", "sleep", "go", "kid"]) == (
            description.run.status,
            [row.node_id for row in description.nodes][:4],
        )
        assert 0 == description.nodes[0].attempts
        assert run.state.finished


class TestDescribe:
    async def test_a_run_in_a_wait(self, store: Store, clock: FakeClock) -> None:
        run = await begin(store, story, "r1", clock.now, x=1)
        clock.now += 10
        origin = Origin("w1", clock.now - 4, clock.now - 1)
        await run.step(store, p.NodeFailed(only_key(run, "dispatches"), ERROR), origin=origin)
        description = await describe_stored(store, "r1")
        fetch_row = description.nodes[0]
        assert ("fetch", "running", 1, 1_006.0, 1_009.0, 3.0) == (
            fetch_row.node_id,
            fetch_row.status,
            fetch_row.attempts,
            fetch_row.first_start,
            fetch_row.last_end,
            fetch_row.duration,
        )
        assert "builtins.ValueError: flaky" == fetch_row.error
        assert [("retry:fetch@1:2", "fetch", "retry", 1_015.0)] == [
            (t.timer_id, t.node_id, t.purpose, t.due_at) for t in description.timers
        ]
        clock.now += 10
        await run.step(store, p.TimerFired(only_key(run, "timers")))
        await run.step(store, p.NodeCompleted(only_key(run, "dispatches"), 2))
        await run.step(store, p.TimerFired(only_key(run, "timers")))
        description = await describe_stored(store, "r1")
        assert ("awaiting", [("go", "go", 1_020.0 + 3600)], []) == (
            description.run.status,
            [(w.name, w.node_id, w.timeout_at) for w in description.waits],
            description.children,
        )
        await run.step(store, p.SignalReceived("go", {"k": 1}))
        description = await describe_stored(store, "r1")
        assert [("r1/kid@1", "kid", "kid")] == [
            (c.run_id, c.node_id, c.flow) for c in description.children
        ]
        statuses = {row.node_id: row.status for row in description.nodes}
        assert ["completed", "completed", "completed", "running"] == [
            statuses[node] for node in ("fetch", "sleep", "go", "kid")
        ]

    async def test_an_unknown_run(self, store: Store) -> None:
        with pytest.raises(flowkit.ResumeError, match="unknown run 'nope'"):
            await describe_stored(store, "nope")


class TestUpgradeFromV2:
    """A SQL store made by the flowkit before history (schema v2: the run index, no
    history), opened by this one: the first use migrates it to v3; its runs have no
    history and are described; their next commits number their events from 1."""

    @pytest.fixture(
        params=[
            pytest.param(("sqlite", "asyncio"), id="sqlite-asyncio"),
            pytest.param(("sqlite", "trio"), id="sqlite-trio"),
            pytest.param(
                ("postgres", "asyncio"), id="postgres-asyncio", marks=pytest.mark.asyncio_only
            ),
        ]
    )
    def case(self, request: pytest.FixtureRequest) -> tuple[str, str]:
        return request.param  # type: ignore[no-any-return]

    async def test_runs_of_v2_gain_history(self, db: Database, clock: FakeClock) -> None:
        program = target(story).program
        state = RunState("old")
        start_run(program, state, {"x": 1})
        state.take_delta()
        row = (
            "old", "story", story.blueprint.digest, None, "running", 1, 1,
            encode_state(state), 500.0, 500.0, None, None, None, "{}",
        )  # fmt: skip
        if db.kind == "sqlite":
            _write_sqlite_v2(db, row)
        else:
            await _write_postgres_v2(db, row)
        store = db.open()
        assert [] == await store.history("old")  # the first use migrates
        assert _current_schema(db) == await _schema_version(db)
        described = await describe_stored(store, "old")
        assert ("running", 500.0, ["fetch"]) == (
            described.run.status,
            described.run.created_at,
            [n.node_id for n in described.nodes],
        )
        loaded = await store.load("old")
        assert loaded is not None
        old = Replica(program, *loaded)
        clock.now = 600.0
        await old.step(store, p.NodeCompleted(only_key(old, "dispatches"), 2))
        assert [(1, "node.completed", 600.0), (2, "timer.set", 600.0)] == [
            (e.seq, e.kind, e.at) for e in await store.history("old")
        ]
        await begin(store, story, "new", 700.0, x=1)
        assert [1, 2] == [e.seq for e in await store.history("new")]


def _current_schema(db: Database) -> int:
    """The version the store migrates an older database to (the latest)."""
    from flowkit.stores import _postgres, _sqlite

    return (_sqlite if db.kind == "sqlite" else _postgres).SCHEMA_VERSION


async def _schema_version(db: Database) -> int:
    if db.kind == "sqlite":
        import sqlite3

        conn = sqlite3.connect(db.tmp_path / "runs.db")
        try:
            return int(conn.execute("SELECT version FROM flowkit_schema").fetchone()[0])
        finally:
            conn.close()
    import psycopg
    from psycopg import sql

    async with await psycopg.AsyncConnection.connect(PG_DSN, autocommit=True) as conn:
        await conn.execute(sql.SQL("SET search_path TO {}").format(sql.Identifier(db.name)))
        cur = await conn.execute("SELECT version FROM flowkit_schema")
        found = await cur.fetchone()
        assert found is not None
        return int(found[0])


def _write_sqlite_v2(db: Database, row: tuple[Any, ...]) -> None:
    """The tables of schema v2, made by that version's migrations (v1 and v2, unchanged
    since), and one run row as that version's create_run wrote it."""
    import sqlite3

    from flowkit.stores._sqlite import _MIGRATIONS

    conn = sqlite3.connect(db.tmp_path / "runs.db", isolation_level=None)
    try:
        conn.execute("BEGIN")
        conn.execute("CREATE TABLE flowkit_schema (version INTEGER NOT NULL)")
        for steps in _MIGRATIONS[:2]:
            for step in steps:
                step(conn)
        conn.execute("INSERT INTO flowkit_schema VALUES (2)")
        conn.execute(f"INSERT INTO flowkit_runs VALUES ({', '.join('?' * len(row))})", row)
        conn.execute("COMMIT")
    finally:
        conn.close()


async def _write_postgres_v2(db: Database, row: tuple[Any, ...]) -> None:
    """The same in PostgreSQL: the schema migrated to v2 only, then one v2 run row."""
    import psycopg
    from psycopg import sql

    from flowkit.backends._postgres import migrate
    from flowkit.stores._postgres import _MIGRATIONS

    async with await psycopg.AsyncConnection.connect(PG_DSN, autocommit=True) as conn:
        await conn.execute(sql.SQL("SET search_path TO {}").format(sql.Identifier(db.name)))
        await migrate(
            conn,
            db.name,
            _MIGRATIONS[:2],
            version_table="flowkit_schema",
            tables="flowkit tables",
            error=StoreError,
        )
        await conn.execute(
            "INSERT INTO flowkit_runs VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s,"
            " %s, %s)",
            row,
        )


class TestReplay:
    """What a store's history keeps is enough to replay a run: its patches, each node's
    arguments and output, a failed attempt, timers and a signal."""

    async def test_a_recorded_run_replays_and_a_renamed_wait_diverges(
        self, store: Store, clock: FakeClock
    ) -> None:
        run = await begin(store, patched_story, "p1", clock.now, x=1)
        clock.now += 10
        await run.step(store, p.NodeFailed(only_key(run, "dispatches"), ERROR))
        await run.step(store, p.TimerFired(only_key(run, "timers")))
        await run.step(store, p.NodeCompleted(only_key(run, "dispatches"), 2))
        await run.step(store, p.SignalReceived("go", {"k": 5}))
        started = (await store.history("p1"))[0]
        same = await replay_async("p1", patched_story, store=store)
        renamed = await replay_async("p1", renamed_story, store=store)
        assert (25, ["bigger"]) == (run.state.header["output"], started.data["patches"])
        assert (True, 4) == (same.ok, same.steps)  # fetch twice, the wait, the end
        assert renamed.divergence is not None
        assert ("go-now", "wait 'go'", "wait 'go-now'") == (
            renamed.divergence.node_id,
            renamed.divergence.recorded,
            renamed.divergence.new,
        )

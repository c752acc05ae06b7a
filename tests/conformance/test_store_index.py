"""The run index in the ``Store`` conformance suite: ``list_runs`` on every store.

The same stores, servers and fixtures as ``test_store`` (its cases and its
``Database``): MemoryStore and SQLiteStore on asyncio and trio, PostgresStore and
RedisStore against the real servers on loopback, on asyncio alone
(``asyncio_only``); each test gets a fresh database, schema or key prefix.

Times are passed explicitly (``created_at=``, ``info={"at": ...}``), or come from a
fake clock installed with ``flowkit._clock.use_clock``: no test reads the wall clock
or sleeps.

``TestUpgrade`` opens stores written by the flowkit before the index: see its
docstring for how those are made.
"""

from __future__ import annotations

import base64
import json
import math
from typing import TYPE_CHECKING, Any

import anyio
import anyio.lowlevel
import pytest

from flowkit import ConfigurationError
from flowkit._clock import use_clock
from flowkit.core._state import RunState
from flowkit.stores import RunPage, RunSummary
from flowkit.stores._codec import encode_delta, encode_state
from flowkit.stores._protocol import CommitsOptimistically

from .test_store import CASES, PG_DSN, REDIS_URL, Database, new_state

if TYPE_CHECKING:
    from collections.abc import AsyncIterator
    from pathlib import Path

    from flowkit.stores import Store

pytestmark = pytest.mark.anyio

FINAL = ("completed", "failed", "cancelled")


class FakeClock:
    """A wall clock that moves only when told to."""

    def __init__(self, now: float = 1_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float = 1.0) -> float:
        self.now += seconds
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
def clock() -> FakeClock:
    """A fake clock; a test installs it with ``use_clock`` around what should read it."""
    return FakeClock()


# -- helpers -----------------------------------------------------------------------
async def make(
    store: Store,
    run_id: str,
    at: float | None,
    *,
    flow: str = "bp",
    parent: str | None = None,
    tags: dict[str, str] | None = None,
) -> None:
    assert await store.create_run(
        run_id,
        new_state(run_id),
        blueprint_id=flow,
        digest="d1",
        parent=parent,
        tags=tags,
        created_at=at,
    )


async def commit(store: Store, run_id: str, at: float | None, status: str, **info: Any) -> None:
    """One locked transition of ``run_id`` to ``status``, committed at ``at``."""
    async with store.transaction(run_id) as txn:
        state = await txn.load()
        assert state is not None
        state.put("header", "status", status)
        stamp = {"status": status, **info} if at is None else {"status": status, "at": at, **info}
        await txn.commit(state.take_delta(), info=stamp, state=state)


async def only(store: Store, **filters: Any) -> RunSummary:
    page = await store.list_runs(**filters)
    assert 1 == len(page.runs), page
    assert None is page.cursor
    return page.runs[0]


async def ids(store: Store, **filters: Any) -> list[str]:
    page = await store.list_runs(**filters)
    return [run.run_id for run in page.runs]


async def every_page(store: Store, **filters: Any) -> list[list[str]]:
    """The run ids of each page, following the cursors to the end."""
    pages: list[list[str]] = []
    cursor: str | None = None
    while True:
        page = await store.list_runs(cursor=cursor, **filters)
        pages.append([run.run_id for run in page.runs])
        if page.cursor is None:
            return pages
        cursor = page.cursor


def newest_first(runs: list[RunSummary]) -> bool:
    keys = [(run.created_at, run.run_id) for run in runs]
    return keys == sorted(keys, reverse=True) and len(set(keys)) == len(keys)


# -- index fields ------------------------------------------------------------------
class TestIndexFields:
    """What a create and each commit write into the index, in the same transaction."""

    async def test_through_a_runs_life(self, store: Store) -> None:
        await make(store, "r", 10.0, parent="p", tags={"env": "prod", "team": "ops"})
        created = RunSummary(
            "r",
            "bp",
            "d1",
            "running",
            "p",
            10.0,
            10.0,
            None,
            None,
            None,
            {"env": "prod", "team": "ops"},
        )
        assert created == await only(store)
        await commit(store, "r", 11.0, "awaiting")
        awaiting = await only(store)
        assert ("awaiting", 10.0, 11.0, None) == (
            awaiting.status,
            awaiting.created_at,
            awaiting.updated_at,
            awaiting.finished_at,
        )
        await commit(store, "r", 12.5, "failed", error=("builtins.ValueError", "bad 1"))
        failed = await only(store)
        assert ("failed", 12.5, 12.5) == (failed.status, failed.updated_at, failed.finished_at)
        assert ("builtins.ValueError", "bad 1") == (failed.error_type, failed.error_message)
        await commit(store, "r", 14.0, "failed")  # a later commit of a finished run
        later = await only(store)
        assert (10.0, 14.0, 12.5) == (later.created_at, later.updated_at, later.finished_at)
        assert ("builtins.ValueError", "bad 1") == (later.error_type, later.error_message)
        assert {"env": "prod", "team": "ops"} == later.tags

    async def test_completed_and_cancelled_runs_have_no_error(self, store: Store) -> None:
        for run_id, status in (("c", "completed"), ("x", "cancelled")):
            await make(store, run_id, 1.0)
            await commit(store, run_id, 2.0, status)
            done = await only(store, status=status)
            assert (run_id, 2.0, None, None) == (
                done.run_id,
                done.finished_at,
                done.error_type,
                done.error_message,
            )

    async def test_a_run_final_when_created(self, store: Store) -> None:
        state = RunState("r")
        state.put("header", "status", "failed")
        state.put(
            "header", "error", {"type": "flowkit._errors.NodeError", "mro": [], "message": "x"}
        )
        assert await store.create_run("r", state, blueprint_id="bp", digest="d1", created_at=3.0)
        failed = await only(store, status="failed")
        assert (3.0, 3.0, 3.0) == (failed.created_at, failed.updated_at, failed.finished_at)
        assert ("flowkit._errors.NodeError", "x") == (failed.error_type, failed.error_message)

    async def test_times_default_to_the_clock(self, store: Store, clock: FakeClock) -> None:
        with use_clock(clock):
            await make(store, "r", None)
            created_at = clock.now
            await commit(store, "r", None, "completed")  # no "at": the store's clock, unmoved
            clock.advance(5.0)
            async with store.transaction("r") as txn:  # and no info at all
                await txn.commit([("context", "n", 1)])
        run = await only(store)
        assert (created_at, created_at + 5.0, created_at) == (
            run.created_at,
            run.updated_at,
            run.finished_at,
        )

    async def test_an_attempt_indexes_like_a_locked_commit(self, store: Store) -> None:
        if not isinstance(store, CommitsOptimistically):
            pytest.skip(f"{type(store).__name__} always takes the lock")
        await make(store, "r", 1.0, tags={"k": "v"})
        state = new_state("r")
        state.put("header", "status", "failed")
        info = {"status": "failed", "at": 2.0, "error": ("E", "m")}
        assert 2 == await store.attempt("r", 1).commit(state.take_delta(), info=info, state=state)
        assert [] == await ids(store, status="running")
        run = await only(store, status="failed", tags={"k": "v"})
        assert (2.0, 2.0, "E", "m") == (
            run.updated_at,
            run.finished_at,
            run.error_type,
            run.error_message,
        )

    async def test_a_retried_run_is_neither_finished_nor_failed_again(self, store: Store) -> None:
        await make(store, "r", 1.0)
        await commit(store, "r", 2.0, "failed", error=("E", "m"))
        await commit(store, "r", 3.0, "running")  # a retry
        run = await only(store, status="running")
        assert (3.0, None, None, None) == (
            run.updated_at,
            run.finished_at,
            run.error_type,
            run.error_message,
        )
        await commit(store, "r", 4.0, "completed")
        assert 4.0 == (await only(store, status="completed")).finished_at

    async def test_an_attempt_reopens_a_retried_run_too(self, store: Store) -> None:
        if not isinstance(store, CommitsOptimistically):
            pytest.skip(f"{type(store).__name__} always takes the lock")
        await make(store, "r", 1.0)
        await commit(store, "r", 2.0, "failed", error=("E", "m"))
        state = new_state("r")
        state.put("header", "status", "running")
        info = {"status": "running", "at": 3.0}
        assert 3 == await store.attempt("r", 2).commit(state.take_delta(), info=info, state=state)
        run = await only(store, status="running")
        assert (None, None, None) == (run.finished_at, run.error_type, run.error_message)

    async def test_a_refused_create_indexes_nothing(self, store: Store) -> None:
        await make(store, "r", 1.0, tags={"first": "yes"})
        again = new_state("r")
        assert not await store.create_run(
            "r", again, blueprint_id="other", digest="d2", tags={"second": "yes"}, created_at=9.0
        )
        run = await only(store)
        assert ("bp", 1.0, {"first": "yes"}) == (run.flow, run.created_at, run.tags)
        assert [] == await ids(store, tags={"second": "yes"})
        assert [] == await ids(store, flow="other")


# -- filters -----------------------------------------------------------------------
# run id, created_at, flow, final status, parent, tags
RUNS: list[tuple[str, float, str, str, str | None, dict[str, str]]] = [
    ("a1", 1.0, "alpha", "running", None, {"env": "prod", "team": "x"}),
    ("a2", 2.0, "alpha", "failed", None, {"env": "dev"}),
    ("b1", 2.0, "beta", "completed", None, {"env": "prod"}),
    ("b2", 3.0, "beta", "awaiting", "a1", {}),
    ("a3", 4.0, "alpha", "cancelled", "a1", {"env": "prod", "team": "y"}),
    ("b3", 5.0, "beta", "failed", "a2", {"env": "prod", "team": "x"}),
    ("a4", 6.0, "alpha", "completed", None, {"team": "x"}),
    ("c1", 6.0, "gamma", "running", "a1", {"env": "prod", "k=v": "a:b"}),
]

FILTERS: list[dict[str, Any]] = [
    {},
    {"flow": "alpha"},
    {"flow": "nope"},
    {"status": "failed"},
    {"status": ["failed", "cancelled"]},
    {"status": ("running", "awaiting", "completed", "failed", "cancelled")},
    {"tags": {"env": "prod"}},
    {"tags": {"env": "prod", "team": "x"}},
    {"tags": {"team": "z"}},
    {"tags": {"k=v": "a:b"}},
    {"created_after": 2.0},
    {"created_before": 4.0},
    {"created_after": 2.0, "created_before": 6.0},
    {"created_after": 6.0, "created_before": 2.0},
    {"parent": "a1"},
    {"parent": "nobody"},
    {"flow": "alpha", "status": ["completed", "cancelled"]},
    {"flow": "beta", "tags": {"env": "prod"}, "created_after": 3.0},
    {"parent": "a1", "status": "running", "tags": {"env": "prod"}},
    {"status": "failed", "tags": {"team": "x"}, "created_before": 5.5},
    {"flow": "alpha", "status": "running", "parent": "a1", "tags": {"team": "y"}},
    {"status": ["running", "completed", "failed"], "tags": {"team": "x"}},
]


def expected(filters: dict[str, Any]) -> list[str]:
    """What ``list_runs(**filters)`` lists of RUNS, by a plain reading of the filters."""
    statuses = filters.get("status")
    if isinstance(statuses, str):
        statuses = [statuses]
    found = [
        (at, run_id)
        for run_id, at, flow, status, parent, tags in RUNS
        if filters.get("flow", flow) == flow
        and (statuses is None or status in statuses)
        and filters.get("parent", parent) == parent
        and all(tags.get(k) == v for k, v in filters.get("tags", {}).items())
        and at >= filters.get("created_after", -math.inf)
        and at < filters.get("created_before", math.inf)
    ]
    return [run_id for _, run_id in sorted(found, reverse=True)]


async def store_runs(store: Store) -> None:
    """RUNS, each created running and then moved to its status half a second later."""
    for run_id, at, flow, _, parent, tags in RUNS:
        await make(store, run_id, at, flow=flow, parent=parent, tags=tags)
    for run_id, at, _, status, _, _ in RUNS:
        if status != "running":
            await commit(store, run_id, at + 0.5, status)


class TestFilters:
    """Each filter alone and combined (AND), newest first; tags match every pair given."""

    @pytest.mark.parametrize("filters", FILTERS, ids=[json.dumps(f) for f in FILTERS])
    async def test_filter(self, store: Store, filters: dict[str, Any]) -> None:
        await store_runs(store)
        page = await store.list_runs(**filters)
        assert expected(filters) == [run.run_id for run in page.runs]
        assert None is page.cursor

    async def test_summaries(self, store: Store) -> None:
        await store_runs(store)
        page = await store.list_runs(status=["failed", "cancelled"])
        assert newest_first(page.runs)
        assert [
            RunSummary("b3", "beta", "d1", "failed", "a2", 5.0, 5.5, 5.5, None, None, RUNS[5][5]),
            RunSummary(
                "a3", "alpha", "d1", "cancelled", "a1", 4.0, 4.5, 4.5, None, None, RUNS[4][5]
            ),
            RunSummary("a2", "alpha", "d1", "failed", None, 2.0, 2.5, 2.5, None, None, RUNS[1][5]),
        ] == page.runs

    async def test_an_empty_store(self, store: Store) -> None:
        assert RunPage([], None) == await store.list_runs()
        assert RunPage([], None) == await store.list_runs(status="failed", tags={"a": "b"})


# -- order and pages ---------------------------------------------------------------
class TestPages:
    """Keyset pages: newest first, ties by run id, no run twice, none skipped."""

    async def test_ties_order_by_run_id(self, store: Store) -> None:
        for run_id in ("m", "a", "z", "ab", "B", "é"):  # bytewise: B < a < ab < m < z < é
            await make(store, run_id, 5.0)
        await make(store, "older", 4.0)
        await make(store, "newer", 6.0)
        order = ["newer", "é", "z", "m", "ab", "a", "B", "older"]
        assert order == await ids(store)
        assert [order] == await every_page(store, limit=1000)
        assert [[run_id] for run_id in order] == await every_page(store, limit=1)
        assert [order[i : i + 3] for i in range(0, 8, 3)] == await every_page(store, limit=3)

    async def test_a_last_page_that_is_full_has_no_cursor(self, store: Store) -> None:
        for n in range(6):
            await make(store, f"r{n}", float(n))
        assert [["r5", "r4", "r3"], ["r2", "r1", "r0"]] == await every_page(store, limit=3)
        assert [["r5", "r4"], ["r3", "r2"], ["r1", "r0"]] == await every_page(store, limit=2)

    async def test_a_filtered_walk(self, store: Store) -> None:
        await store_runs(store)
        for filters in FILTERS:
            pages = await every_page(store, limit=2, **filters)
            assert expected(filters) == [run_id for page in pages for run_id in page], filters
            assert all(len(page) == 2 for page in pages[:-1])

    async def test_the_cursors_run_leaving_the_filter(self, store: Store) -> None:
        """The run a cursor names may change status before the next page is read: the
        walk still resumes just after it (the Redis store then finds its place by time)."""
        for n in range(6):
            await make(store, f"r{n}", 5.0)  # all tied
        first = await store.list_runs(status="running", limit=2)
        assert ["r5", "r4"] == [run.run_id for run in first.runs]
        await commit(store, "r4", 6.0, "completed")
        await commit(store, "r2", 6.0, "completed")
        second = await store.list_runs(status="running", limit=2, cursor=first.cursor)
        assert ["r3", "r1"] == [run.run_id for run in second.runs]
        third = await store.list_runs(status="running", limit=2, cursor=second.cursor)
        assert (["r0"], None) == ([run.run_id for run in third.runs], third.cursor)

    async def test_pages_while_runs_are_added_and_change(self, db: Database) -> None:
        """One task walks the pages while another creates newer runs and moves older ones
        through their statuses: every run there before the walk, of the flow walked, is
        listed exactly once, in order; a run created meanwhile at most once."""
        writer, reader = db.open(), db.open()
        before = [f"old{n:02d}" for n in range(30)]
        for n, run_id in enumerate(before):
            await make(writer, run_id, float(n // 3), flow="walked" if n % 4 else "other")
        walked = {run_id for n, run_id in enumerate(before) if n % 4}
        seen: list[RunSummary] = []
        progress = anyio.Event()

        async def write() -> None:
            for n in range(30):
                await make(writer, f"new{n:02d}", 100.0 + n, flow="walked")
                await commit(writer, before[n], 200.0 + n, ("awaiting", "completed")[n % 2])
                await anyio.lowlevel.checkpoint()
                if n == 2:
                    progress.set()

        async def read() -> None:
            await progress.wait()  # the writer is under way
            cursor: str | None = None
            while True:
                page = await reader.list_runs(flow="walked", limit=3, cursor=cursor)
                seen.extend(page.runs)
                await anyio.lowlevel.checkpoint()
                if page.cursor is None:
                    return
                cursor = page.cursor

        async with anyio.create_task_group() as tg:
            tg.start_soon(write)
            tg.start_soon(read)
        listed = [run.run_id for run in seen]
        assert newest_first(seen)
        assert len(listed) == len(set(listed))
        assert walked == {run_id for run_id in listed if run_id.startswith("old")}
        assert all(run.flow == "walked" for run in seen)


# -- arguments ---------------------------------------------------------------------
def _cursor_of(data: Any) -> str:
    return base64.urlsafe_b64encode(json.dumps(data).encode()).decode()


BAD_ARGUMENTS: list[tuple[dict[str, Any], str]] = [
    ({"limit": 0}, "limit"),
    ({"limit": 1001}, "limit"),
    ({"limit": -5}, "limit"),
    ({"limit": True}, "limit"),
    ({"limit": "5"}, "limit"),
    ({"status": "nope"}, "status 'nope'"),
    ({"status": ["failed", "Failed"]}, "status 'Failed'"),
    ({"status": []}, "status"),
    ({"status": 3}, "status"),
    ({"cursor": "not a cursor!"}, "cursor"),
    ({"cursor": ""}, "cursor"),
    ({"cursor": _cursor_of({"created_at": 1})}, "cursor"),
    ({"cursor": _cursor_of([1.0])}, "cursor"),
    ({"cursor": _cursor_of(["1.0", "r"])}, "cursor"),
    ({"cursor": _cursor_of([1.0, 2])}, "cursor"),
    ({"cursor": "WzEuMCwicj"}, "cursor"),  # cut short
    ({"tags": {"": "x"}}, "tags: tag key ''"),
    ({"tags": {"k": 1}}, "tags: tag 'k'"),
    ({"tags": ["k"]}, "tags"),
    ({"created_after": math.nan}, "created_after"),
    ({"created_before": "yesterday"}, "created_before"),
    ({"created_after": True}, "created_after"),
    ({"flow": 3}, "flow"),
    ({"parent": b"p"}, "parent"),
]


class TestArguments:
    """Bad arguments raise ConfigurationError naming the argument; nothing else happens."""

    @pytest.mark.parametrize(
        ("arguments", "named"), BAD_ARGUMENTS, ids=[repr(a) for a, _ in BAD_ARGUMENTS]
    )
    async def test_bad_listing(self, store: Store, arguments: dict[str, Any], named: str) -> None:
        with pytest.raises(ConfigurationError, match=f"list_runs: {named}"):
            await store.list_runs(**arguments)

    async def test_limits_at_the_bounds(self, store: Store) -> None:
        for n in range(3):
            await make(store, f"r{n}", float(n))
        assert ["r2", "r1", "r0"] == await ids(store, limit=1000)
        assert ["r2"] == await ids(store, limit=1)

    @pytest.mark.parametrize(
        ("tags", "named"),
        [
            ({f"k{n}": "v" for n in range(65)}, "at most 64 tags"),
            ({"": "v"}, "tag key ''"),
            ({"k": "v" * 257}, "tag 'k' is too long"),
            ({"k" * 257: "v"}, "is too long"),
            ({"k": 7}, "tag 'k' must have a str value"),
            ({3: "v"}, "tag key 3"),
            ("k=v", "must be a mapping"),
        ],
    )
    async def test_bad_tags_create_nothing(self, store: Store, tags: Any, named: str) -> None:
        with pytest.raises(ConfigurationError, match=named):
            await make(store, "r", 1.0, tags=tags)
        assert None is await store.info("r")
        assert RunPage([], None) == await store.list_runs()

    async def test_the_most_tags(self, store: Store) -> None:
        tags = {f"k{n:02d}" + "k" * 253: "v" * 256 for n in range(64)}
        await make(store, "r", 1.0, tags=tags)
        assert tags == (await only(store, tags=tags)).tags


# -- children ----------------------------------------------------------------------
class TestParents:
    async def test_children_of_a_run(self, store: Store) -> None:
        await make(store, "parent", 1.0, tags={"team": "x"})
        for n in range(4):
            await make(store, f"child{n}", 2.0 + n, parent="parent")
        await make(store, "grandchild", 9.0, parent="child0")
        await commit(store, "child1", 10.0, "failed", error=("E", "m"))
        assert ["child3", "child2", "child1", "child0"] == await ids(store, parent="parent")
        assert ["child1"] == await ids(store, parent="parent", status="failed")
        assert ["grandchild"] == await ids(store, parent="child0")
        assert [["child3", "child2", "child1"], ["child0"]] == await every_page(
            store, parent="parent", limit=3
        )
        assert ["parent"] == await ids(store, tags={"team": "x"})  # children have no tags


# -- stores written before the index -------------------------------------------------
# The tables of flowkit before the run index (schema v1), copied from the code of that
# version: SQLiteStore's _SCHEMA and PostgresStore's first migration.
SQLITE_V1 = """
CREATE TABLE IF NOT EXISTS flowkit_schema (version INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS flowkit_runs (
    run_id TEXT PRIMARY KEY, blueprint_id TEXT NOT NULL, digest TEXT NOT NULL,
    parent TEXT, status TEXT NOT NULL, version INTEGER NOT NULL,
    snapshot_version INTEGER NOT NULL, snapshot TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS flowkit_journal (
    run_id TEXT NOT NULL, version INTEGER NOT NULL, delta TEXT NOT NULL,
    PRIMARY KEY (run_id, version)
);
CREATE TABLE IF NOT EXISTS flowkit_timers (
    run_id TEXT NOT NULL, timer_id TEXT NOT NULL, due_at REAL NOT NULL,
    PRIMARY KEY (run_id, timer_id)
);
CREATE INDEX IF NOT EXISTS flowkit_timers_due ON flowkit_timers (due_at);
CREATE TABLE IF NOT EXISTS flowkit_leases (
    run_id TEXT NOT NULL, dispatch_id TEXT NOT NULL, expires_at REAL NOT NULL,
    PRIMARY KEY (run_id, dispatch_id)
);
CREATE INDEX IF NOT EXISTS flowkit_leases_expiry ON flowkit_leases (expires_at);
INSERT INTO flowkit_schema VALUES (1)
"""
POSTGRES_V1 = [
    "CREATE TABLE flowkit_schema (version INTEGER NOT NULL)",
    "INSERT INTO flowkit_schema VALUES (1)",
    "CREATE TABLE flowkit_runs (run_id TEXT PRIMARY KEY, blueprint_id TEXT NOT NULL,"
    " digest TEXT NOT NULL, parent TEXT, status TEXT NOT NULL, version BIGINT NOT NULL,"
    " snapshot_version BIGINT NOT NULL, snapshot TEXT NOT NULL)",
    "CREATE TABLE flowkit_journal (run_id TEXT NOT NULL, version BIGINT NOT NULL,"
    " delta TEXT NOT NULL, PRIMARY KEY (run_id, version))",
    "CREATE TABLE flowkit_timers (run_id TEXT NOT NULL, timer_id TEXT NOT NULL,"
    " due_at DOUBLE PRECISION NOT NULL, PRIMARY KEY (run_id, timer_id))",
    "CREATE INDEX flowkit_timers_due ON flowkit_timers (due_at)",
    "CREATE TABLE flowkit_leases (run_id TEXT NOT NULL, dispatch_id TEXT NOT NULL,"
    " expires_at DOUBLE PRECISION NOT NULL, PRIMARY KEY (run_id, dispatch_id))",
    "CREATE INDEX flowkit_leases_expiry ON flowkit_leases (expires_at)",
]
ERROR = {"type": "builtins.ValueError", "mro": ["builtins.ValueError"], "message": "bad 1"}


def _legacy_runs() -> list[tuple[Any, ...]]:
    """The rows that flowkit wrote for five runs, as (run_id, blueprint_id, digest, parent,
    status, version, snapshot_version, snapshot) and the journal rows after the snapshot:
    one running with a child, one completed, one failed with its error in its snapshot, one
    failed with its error only in its journal (a failure committed after the snapshot)."""

    def state(run_id: str, status: str, **header: Any) -> str:
        run = RunState(run_id)
        run.put("header", "status", status)
        for key, value in header.items():
            run.put("header", key, value)
        return encode_state(run)

    failure = encode_delta([("header", "status", "failed"), ("header", "error", ERROR)])
    return [
        ("old-run", "legacy", "d0", None, "running", 1, 1, state("old-run", "running"), []),
        (
            "old-child",
            "legacy",
            "d0",
            "old-run",
            "awaiting",
            1,
            1,
            state("old-child", "awaiting"),
            [],
        ),
        ("old-done", "legacy", "d0", None, "completed", 1, 1, state("old-done", "completed"), []),
        (
            "old-failed",
            "other",
            "d0",
            None,
            "failed",
            1,
            1,
            state("old-failed", "failed", error=ERROR),
            [],
        ),
        (
            "old-late",
            "legacy",
            "d0",
            None,
            "failed",
            2,
            1,
            state("old-late", "running"),
            [(2, failure)],
        ),
    ]


class TestUpgrade:
    """A store written by flowkit before the run index, opened by this one.

    SQLite and PostgreSQL: the database is made with that version's schema (its DDL,
    copied above from that version's code, and its schema version, 1) and its runs with
    the statements that version's ``create_run`` and ``commit`` ran (rows of state
    snapshots and journal deltas encoded as that version did, an unchanged format). The
    store opened on it then migrates it: every run is listed, with its flow, status and
    parent, a failed run with its error (from its snapshot or its journal), times the
    migration's; and new runs and commits of the old ones work. Redis: runs written by
    that version (a run hash without the index fields, in no index set) are not listed
    until their next commit indexes them, as created then.
    """

    @pytest.fixture(
        params=[
            pytest.param(("sqlite", "asyncio"), id="sqlite-asyncio"),
            pytest.param(("sqlite", "trio"), id="sqlite-trio"),
            pytest.param(
                ("postgres", "asyncio"), id="postgres-asyncio", marks=pytest.mark.asyncio_only
            ),
            pytest.param(("redis", "asyncio"), id="redis-asyncio", marks=pytest.mark.asyncio_only),
        ]
    )
    def case(self, request: pytest.FixtureRequest) -> tuple[str, str]:
        return request.param  # type: ignore[no-any-return]

    async def test_sql_tables_are_migrated(self, db: Database, clock: FakeClock) -> None:
        if db.kind == "redis":
            pytest.skip("Redis has no tables: see test_redis_runs_are_indexed_on_commit")
        if db.kind == "sqlite":
            self._write_sqlite_v1(db)
        else:
            await self._write_postgres_v1(db)
        clock.now = 50_000.0
        store = db.open()
        with use_clock(clock):
            page = await store.list_runs()  # the first use migrates
        runs = {run.run_id: run for run in page.runs}
        assert {"old-run", "old-child", "old-done", "old-failed", "old-late"} == set(runs)
        assert None is page.cursor
        assert newest_first(page.runs)
        migrated = runs["old-run"].created_at
        if db.kind == "sqlite":
            assert 50_000.0 == migrated  # the migration's time, on the flowkit clock
        for run in page.runs:
            assert (migrated, migrated, {}) == (run.created_at, run.updated_at, run.tags)
            assert (migrated if run.status in FINAL else None) == run.finished_at
        assert ("legacy", "d0", "old-run", "awaiting") == (
            runs["old-child"].flow,
            runs["old-child"].digest,
            runs["old-child"].parent,
            runs["old-child"].status,
        )
        for run_id in ("old-failed", "old-late"):
            assert ("builtins.ValueError", "bad 1") == (
                runs[run_id].error_type,
                runs[run_id].error_message,
            )
        assert (None, None) == (runs["old-done"].error_type, runs["old-done"].error_message)
        assert ["old-late", "old-failed"] == await ids(store, status="failed")
        assert ["old-child"] == await ids(store, parent="old-run")
        assert ["old-failed"] == await ids(store, flow="other")
        # new runs, and commits of the old ones
        await make(store, "new-run", migrated + 1, flow="legacy", tags={"v": "2"})
        await commit(store, "old-run", migrated + 2, "completed")
        assert ["new-run"] == await ids(store, tags={"v": "2"})
        completed = (await store.list_runs(status="completed", created_before=migrated + 1)).runs
        assert ["old-run", "old-done"] == [run.run_id for run in completed]
        assert (migrated, migrated + 2, migrated + 2) == (
            completed[0].created_at,
            completed[0].updated_at,
            completed[0].finished_at,
        )
        loaded = await store.load("old-late")
        assert loaded is not None
        assert (ERROR, 2) == (loaded[0].header["error"], loaded[1])
        pages = [["new-run", "old-run"], ["old-late", "old-failed"], ["old-done", "old-child"]]
        assert pages == await every_page(store, limit=2)

    async def test_postgres_takes_rows_of_processes_not_yet_upgraded(self, db: Database) -> None:
        """A process of the previous version still running after another migrated the
        schema writes its runs as before (only the columns it knows); they are listed."""
        if db.kind != "postgres":
            pytest.skip("the previous version refuses a migrated SQLite file; Redis has no rows")
        import psycopg
        from psycopg import sql

        store = db.open()
        await make(store, "new-run", 1.0)  # the first use migrates
        *row, _ = _legacy_runs()[0]
        async with await psycopg.AsyncConnection.connect(PG_DSN, autocommit=True) as conn:
            await conn.execute(sql.SQL("SET search_path TO {}").format(sql.Identifier(db.name)))
            await conn.execute(
                "INSERT INTO flowkit_runs VALUES (%s, %s, %s, %s, %s, %s, %s, %s)", row
            )
        old = await only(store, flow="legacy")
        assert ("old-run", "running", old.created_at, {}) == (
            old.run_id,
            old.status,
            old.updated_at,
            old.tags,
        )
        assert old.created_at > 1.0  # the server's clock at the insert

    async def test_redis_runs_are_indexed_on_commit(self, db: Database) -> None:
        if db.kind != "redis":
            pytest.skip("the SQL stores migrate their tables: see test_sql_tables_are_migrated")
        import redis.asyncio

        client = redis.asyncio.Redis.from_url(REDIS_URL)
        try:
            for run_id, flow, digest, parent, status, version, since, snapshot, _ in _legacy_runs()[
                :3
            ]:
                fields = {
                    "blueprint_id": flow,
                    "digest": digest,
                    "status": status,
                    "version": version,
                    "snapshot_version": since,
                    "snapshot": snapshot,
                }
                if parent is not None:
                    fields["parent"] = parent
                await client.hset(f"{db.name}:run:{run_id}", mapping=fields)
        finally:
            await client.aclose()
        store = db.open()
        assert RunPage([], None) == await store.list_runs()
        await make(store, "new-run", 5.0)
        await commit(store, "old-child", 7.0, "failed", error=("E", "m"))
        assert ["old-child", "new-run"] == await ids(store)
        child = await only(store, parent="old-run")
        assert (
            RunSummary(
                "old-child", "legacy", "d0", "failed", "old-run", 7.0, 7.0, 7.0, "E", "m", {}
            )
            == child
        )
        assert ["old-child"] == await ids(store, status="failed", flow="legacy")
        await commit(store, "old-child", 8.0, "failed")
        again = await only(store, parent="old-run")
        assert (7.0, 8.0, 7.0) == (again.created_at, again.updated_at, again.finished_at)

    @staticmethod
    def _write_sqlite_v1(db: Database) -> None:
        import sqlite3

        conn = sqlite3.connect(db.tmp_path / "runs.db", isolation_level=None)
        try:
            conn.executescript(SQLITE_V1)
            conn.execute("BEGIN")
            for *row, journal in _legacy_runs():
                conn.execute("INSERT INTO flowkit_runs VALUES (?, ?, ?, ?, ?, ?, ?, ?)", row)
                for version, delta in journal:
                    conn.execute(
                        "INSERT INTO flowkit_journal VALUES (?, ?, ?)", (row[0], version, delta)
                    )
            conn.execute("COMMIT")
        finally:
            conn.close()

    @staticmethod
    async def _write_postgres_v1(db: Database) -> None:
        import psycopg
        from psycopg import sql

        async with await psycopg.AsyncConnection.connect(PG_DSN, autocommit=True) as conn:
            await conn.execute(sql.SQL("CREATE SCHEMA {}").format(sql.Identifier(db.name)))
            await conn.execute(sql.SQL("SET search_path TO {}").format(sql.Identifier(db.name)))
            async with conn.transaction():
                for statement in POSTGRES_V1:
                    await conn.execute(statement)  # type: ignore[arg-type]
                for *row, journal in _legacy_runs():
                    await conn.execute(
                        "INSERT INTO flowkit_runs VALUES (%s, %s, %s, %s, %s, %s, %s, %s)", row
                    )
                    for version, delta in journal:
                        await conn.execute(
                            "INSERT INTO flowkit_journal VALUES (%s, %s, %s)",
                            (row[0], version, delta),
                        )

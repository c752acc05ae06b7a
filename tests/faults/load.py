"""The load and the checks of the fault tests on Redis, PostgreSQL, RabbitMQ and SQLite.

A :class:`Load` is ``WORKERS`` ``python -m flowkit.worker`` processes serving
``flows_faults`` (5-node chains and 10-way gathers) on one transport and store,
plus a :class:`~flowkit.Client` in this process that starts the runs. Two faults:

* :meth:`Load.kill_workers` — SIGKILL the busiest worker ``KILLS`` times while
  runs are in flight, a replacement started after each kill (the first kill while
  the nodes that started are held at a gate, so it certainly catches work in flight);
* :meth:`Load.outage` — take a server down mid-load (a callable), keep it down
  for the outage, bring it back (another callable).

Then every run must complete with the right output, within a bound; every node
activation must have run under one idempotency key; node executions must
resume within ``RECOVERY_BOUND`` of the fault's end. Re-executions and requeues
are counted and printed, not asserted (a killed worker's node runs again).
"""

from __future__ import annotations

import json
import tempfile
import time
from collections import defaultdict
from pathlib import Path
from typing import TYPE_CHECKING, Any

import anyio

from flowkit import Client, ResultTimeout, RunStatus
from flowkit.stores import from_url as store_from_url
from flowkit.transports import from_url as transport_from_url

from .flows_faults import (
    FLOWS,
    GATE_ENV,
    SCHEMA_ENV,
    activations,
    expected_output,
    read_executions,
)

if TYPE_CHECKING:
    from collections.abc import Callable

    from .workers import WorkerPool, WorkerProcess

WORKERS = 3
CONCURRENCY = 8
QUEUE = "faults"
RUNS_PER_SHAPE = 12  # 12 chains (60 nodes) and 12 gathers (132 nodes)
START_TIMEOUT = 30.0  # a worker process logs "worker started" within this
PROGRESS_TIMEOUT = 60.0  # the load reaches a given number of node executions within this
RECOVERY_BOUND = 30.0  # node executions resume within this after a fault ends
COMPLETION_TIMEOUT = 90.0  # every run completes within this after the last fault
KILLS = 3
EXECUTIONS_BEFORE_FAULT = 30
EXECUTIONS_BETWEEN_KILLS = 25
HELD = CONCURRENCY  # nodes held at the gate (in flight) when the first worker is killed
EXECUTIONS_TO_RESUME = 10  # "throughput is back": this many more executions after the fault
POLL = 0.2  # seconds between looks at the store or the executions table

REQUEUED = "transient failure; message requeued"
PAUSED = " unreachable, "  # the store (pausing intake) or the broker (retrying)
RESUMED = "back after"

Row = tuple[str, str, str, str]


class Load:
    """Worker processes, a client and the runs of one fault test."""

    def __init__(
        self,
        worker_pool: Callable[[list[str], dict[str, str]], WorkerPool],
        *,
        transport_url: str,
        store_url: str,
        schema: str,
        lease: float,
        tag: str,
        runs_per_shape: int = RUNS_PER_SHAPE,
        concurrency: int = CONCURRENCY,
    ) -> None:
        self.transport_url = transport_url
        self.store_url = store_url
        self.schema = schema
        self.lease = lease
        args = [
            "--app", "faults.flows_faults",
            "--transport", transport_url,
            "--store", store_url,
            "--queue", QUEUE,
            "--concurrency", str(concurrency),
            "--lease", str(lease),
            "--log-format", "json",
        ]  # fmt: skip
        self.gate = Path(tempfile.gettempdir()) / f"{tag}.gate"  # see GATE_ENV
        self.pool = worker_pool(args, {SCHEMA_ENV: schema, GATE_ENV: str(self.gate)})
        self.runs = {
            f"{tag}-{shape}-{i:02d}": (shape, i + 1)
            for shape in FLOWS
            for i in range(runs_per_shape)
        }
        self.client: Client | None = None
        self.report: dict[str, Any] = {}

    # -- set-up -------------------------------------------------------------------
    async def __aenter__(self) -> Load:
        for worker in [self.pool.start() for _ in range(WORKERS)]:
            await worker.started(START_TIMEOUT)
        self._transport = transport_from_url(self.transport_url)
        self._store = store_from_url(self.store_url)
        self.client = Client(
            self._transport, self._store, queue=QUEUE, flows=list(FLOWS.values()), lease=self.lease
        )
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        self.gate.unlink(missing_ok=True)
        with anyio.CancelScope(shield=True):
            await self._transport.close()
            await self._store.close()

    async def start_runs(self) -> None:
        assert self.client is not None
        for run_id, (shape, n) in self.runs.items():
            await self.client.start(FLOWS[shape], run_id=run_id, n=n)

    # -- faults -------------------------------------------------------------------
    async def kill_workers(self) -> None:
        """SIGKILL the busiest worker KILLS times, mid-load, a replacement after each."""
        self.gate.touch()  # the nodes that start wait: none completes before the first kill
        await self.start_runs()
        rows = await self.executions_at_least(HELD)
        first = self._busiest(rows)
        first.kill()
        self.pool.start()
        self.gate.unlink()
        seen, killed = await self.kill_repeatedly(EXECUTIONS_BETWEEN_KILLS, KILLS - 1, len(rows))
        self.report["killed"] = [first.pid, *killed]
        await self._recovered(seen)

    async def kill_repeatedly(
        self, between: int, kills: int = KILLS, seen: int = 0
    ) -> tuple[int, list[int]]:
        """Up to ``kills`` kills, ``between`` executions apart after the ``seen`` ones (none
        once every activation ran); the executions seen at the last one, the pids killed."""
        killed: list[int] = []
        for _ in range(kills):
            rows = await self.executions_at_least(seen + between)
            seen = len(rows)
            if await self._all_executed(seen):
                break  # a fast store finished the load first: nothing is left in flight
            victim = self._busiest(rows)
            victim.kill()
            killed.append(victim.pid)
            self.pool.start()  # its replacement boots while the load goes on
        return seen, killed

    async def outage(
        self, take_down: Callable[[], None], bring_back: Callable[[], None], seconds: float
    ) -> None:
        """Take a server down mid-load for ``seconds``, then bring it back."""
        await self.start_runs()
        await self.down_and_back(take_down, bring_back, seconds, after=EXECUTIONS_BEFORE_FAULT)
        await self._recovered(len(await self.executions()))

    async def down_and_back(
        self,
        take_down: Callable[[], None],
        bring_back: Callable[[], None],
        seconds: float,
        *,
        after: int,
    ) -> None:
        """Once ``after`` nodes ran, take the server down for ``seconds``; bring it back."""
        await self.executions_at_least(after)
        await anyio.to_thread.run_sync(take_down)
        down_at = time.monotonic()
        await anyio.sleep(seconds)  # the outage itself, not a wait for something
        await anyio.to_thread.run_sync(bring_back)
        self.report["down_for_s"] = round(time.monotonic() - down_at, 1)

    async def _recovered(self, seen: int) -> None:
        """Node executions resume within RECOVERY_BOUND (unless all were done already),
        and every run completes within COMPLETION_TIMEOUT."""
        fault_over = time.monotonic()
        if not await self._all_executed(seen):
            with anyio.fail_after(RECOVERY_BOUND):
                await self.executions_at_least(seen + EXECUTIONS_TO_RESUME)
            self.report["executions_resumed_after_s"] = round(time.monotonic() - fault_over, 1)
        await self._completed()
        self.report["all_completed_after_s"] = round(time.monotonic() - fault_over, 1)

    async def _all_executed(self, seen: int) -> bool:
        """Whether ``seen`` executions cover every activation of every run (no more to come)."""
        needed = sum(len(activations(shape)) for shape, _ in self.runs.values())
        return seen >= needed and len(self._keys(await self.executions())) >= needed

    def _busiest(self, rows: list[Row]) -> WorkerProcess:
        """The running worker that executed the latest node (it likely holds work in flight)."""
        running = {str(p.pid): p for p in self.pool.running}
        for *_, worker in reversed(rows):
            if worker in running:
                return running[worker]
        return self.pool.running[0]

    # -- observing ----------------------------------------------------------------
    async def executions(self) -> list[Row]:
        return await anyio.to_thread.run_sync(read_executions, self.schema)

    async def executions_at_least(self, count: int) -> list[Row]:
        """The executions once there are ``count`` (or every activation ran), bounded."""
        with anyio.fail_after(PROGRESS_TIMEOUT):
            while True:
                found = await self.executions()
                if len(found) >= count or await self._all_executed(len(found)):
                    return found
                await anyio.sleep(POLL)  # a table in another process: nothing to await

    async def _completed(self) -> None:
        """Every run completed (none failed or cancelled) within COMPLETION_TIMEOUT; the
        client's waits ride out what is left of the fault."""
        assert self.client is not None
        deadline = anyio.current_time() + COMPLETION_TIMEOUT
        for run_id in self.runs:
            try:
                left = max(0.0, deadline - anyio.current_time())
                result = await self.client.wait(run_id, timeout=left)
            except ResultTimeout as exc:
                raise AssertionError(
                    f"not every run completed {COMPLETION_TIMEOUT}s after the fault: {exc}"
                ) from None
            assert RunStatus.COMPLETED == result.status, f"run {run_id}: {result.error!r}"

    @staticmethod
    def _keys(rows: list[Row]) -> dict[tuple[str, str], set[str]]:
        keys: dict[tuple[str, str], set[str]] = defaultdict(set)
        for key, run_id, activation, _worker in rows:
            keys[(run_id, activation)].add(key)
        return keys

    async def check(self) -> dict[str, Any]:
        """Right outputs; every activation ran under one key. What happened, to print."""
        assert self.client is not None
        for run_id, (shape, n) in self.runs.items():
            result = await self.client.result(run_id)
            assert (RunStatus.COMPLETED, expected_output(shape, n)) == (
                result.status,
                result.output,
            ), run_id
        rows = await self.executions()
        keys = self._keys(rows)
        two_keys = {k: v for k, v in keys.items() if len(v) != 1}
        assert {} == two_keys, "a node activation ran under two different idempotency keys"
        for run_id, (shape, _) in self.runs.items():
            assert activations(shape) == {a for (r, a) in keys if r == run_id}, run_id
        events = self.log_events()
        self.report.update(
            runs=len(self.runs),
            executions=len(rows),
            re_executions=len(rows) - len(keys),
            requeues=sum(REQUEUED in event for event in events),
            paused=sum(PAUSED in event for event in events),
            resumed=sum(RESUMED in event for event in events),
        )
        return self.report

    def log_events(self) -> list[str]:
        """The ``event`` of every JSON log line of every worker process."""
        events = []
        for process in self.pool.started:
            for line in process.output().splitlines():
                try:
                    events.append(str(json.loads(line).get("event", "")))
                except (ValueError, AttributeError):
                    continue  # not a JSON log line (a traceback, a library's print)
        return events


def show(scenario: str, report: dict[str, Any]) -> None:
    print(f"\n{scenario}: " + ", ".join(f"{k}={v}" for k, v in report.items()))

"""Retry policies and per-call node options, in every shell.

``retry_on`` / ``never_retry`` / unlimited retries / ``retry_timeout`` and
``node.options(...)`` calls run on the in-memory Runtime, under ``simulate()``
(virtual time) and on an in-process Worker (MemoryTransport + SQLiteStore), on
asyncio and trio; the Worker also on the real PostgreSQL and Redis on loopback
(asyncio only: their clients are).
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections import defaultdict
from functools import partial
from typing import TYPE_CHECKING, Any

import anyio
import pytest

import flowkit
from flowkit import Backoff, Blueprint, CompileError, ConfigurationError, RunStatus, flow, node
from flowkit.core._policy import Policy
from flowkit.stores import SQLiteStore
from flowkit.testing import simulate_async
from flowkit.transports import MemoryTransport

if TYPE_CHECKING:
    from pathlib import Path

    from flowkit import Event

from test_faults_optimistic_store import (
    fresh_store,  # a PostgreSQL schema or Redis prefix of its own
)

pytestmark = pytest.mark.anyio


class CardTimeout(TimeoutError):
    """A subclass of a retry_on type: retried too."""


class Declined(TimeoutError):
    """Matches retry_on (a TimeoutError) and never_retry: never_retry wins."""


ATTEMPTS: defaultdict[str, int] = defaultdict(int)
PLANS: dict[str, list[Exception]] = {}
"""key -> what the attempts raise, in order; once used up, the node succeeds."""


def attempt(key: str) -> str:
    ATTEMPTS[key] += 1
    plan = PLANS.get(key) or []
    if plan:
        raise plan.pop(0)
    return f"paid {key}"


def plan(key: str, *errors: Exception) -> str:
    ATTEMPTS.pop(key, None)
    PLANS[key] = list(errors)
    return key


@node(retries=5, retry_on=(TimeoutError,), never_retry=(Declined,))
async def charge(key: str) -> str:
    return attempt(key)


@node(retries=None)
async def keep_trying(key: str) -> str:
    return attempt(key)


@node(retries="forever", backoff=Backoff(initial="1s", factor=2, max="1m"))
async def patient(key: str) -> str:
    return attempt(key)


@node(retries=None, retry_timeout="30m", backoff=Backoff(initial="1m", factor=2, max="10m"))
async def capped(key: str) -> str:
    return attempt(key)


@node
async def sluggish(key: str, seconds: float) -> str:
    await anyio.sleep(seconds)
    return attempt(key)


@flow
async def pay(key: str) -> str:
    return await charge(key)


@flow
async def pay_forever(key: str) -> str:
    return await keep_trying(key)


@flow
async def pay_patiently(key: str) -> str:
    return await patient(key)


@flow
async def pay_capped(key: str) -> str:
    return await capped(key)


@flow
async def pay_with(key: str, n: int) -> str:
    """Retries from the flow's data; never_retry given at the call replaces the node's."""
    return await charge.options(retries=n + 0, never_retry=(CardTimeout,))(key)


@flow
async def pay_within(key: str, limit: float, seconds: float) -> str:
    return await sluggish.options(timeout=limit, retries=0)(key, seconds)


@flow
async def pay_both(key: str, n: int) -> tuple[str, str]:
    a, b = await flowkit.flow.gather(
        charge.options(retries=n)(key), charge.options(retries=2)(key + "-b")
    )
    return a, b


@node
async def until_late(key: str, seconds: float) -> str:
    await anyio.sleep(seconds)
    ATTEMPTS[key] += 1
    raise TimeoutError("still slow")


@flow
async def pay_until_late(key: str, seconds: float) -> str:
    return await until_late.options(retries=None, retry_timeout=0.5)(key, seconds)


FLOWS = [pay, pay_forever, pay_with, pay_within, pay_both, pay_until_late]


def _message(result: Any) -> str:
    return str(result.error)


# -- the decision, in the core ----------------------------------------------------------------
class TestPolicy:
    """The core decides from type names and the times it is given, nothing else."""

    POLICY = Policy(3, None, ("builtins.TimeoutError",), ("tests.Declined",), 60.0)

    def test_a_subclass_of_retry_on_is_retried(self) -> None:
        error = {"type": "tests.CardTimeout", "mro": ["tests.CardTimeout", "builtins.TimeoutError"]}
        assert self.POLICY.refusal(1, error) is None

    def test_never_retry_wins_over_retry_on(self) -> None:
        error = {"type": "tests.Declined", "mro": ["tests.Declined", "builtins.TimeoutError"]}
        assert "tests.Declined is in never_retry" == self.POLICY.refusal(1, error)

    def test_other_types_are_not_retried(self) -> None:
        error = {"type": "builtins.ValueError", "mro": ["builtins.ValueError"]}
        assert "builtins.ValueError is not in retry_on" == self.POLICY.refusal(1, error)

    def test_attempts_run_out_unless_unlimited(self) -> None:
        error = {"type": "builtins.TimeoutError", "mro": ["builtins.TimeoutError"]}
        assert "its 4 attempts are used up" == self.POLICY.refusal(4, error)
        unlimited = Policy(None, None, (), (), None)
        assert unlimited.refusal(10_000, error) is None

    def test_retry_timeout_counts_from_the_first_start(self) -> None:
        assert self.POLICY.late(100.0, 160.0) is None
        assert "60s" in str(self.POLICY.late(100.0, 160.5))
        assert self.POLICY.late(None, 1e9) is None  # no times given: not judged


# -- in-memory Runtime ------------------------------------------------------------------------
class TestRuntime:
    """Each policy on the in-memory Runtime."""

    async def test_retry_on_retries_subclasses_until_success(self) -> None:
        key = plan("rt-sub", CardTimeout("slow"), TimeoutError("slow"))
        result = await pay.run(key=key)
        assert (RunStatus.COMPLETED, "paid rt-sub", 3) == (
            result.status,
            result.output,
            ATTEMPTS[key],
        )

    async def test_an_error_not_in_retry_on_fails_at_once(self) -> None:
        key = plan("rt-value", ValueError("bad card"))
        result = await pay.run(key=key)
        assert (RunStatus.FAILED, 1) == (result.status, ATTEMPTS[key])
        assert "bad card" in _message(result)

    async def test_never_retry_wins(self) -> None:
        key = plan("rt-declined", Declined("no"))
        result = await pay.run(key=key)
        assert (RunStatus.FAILED, 1) == (result.status, ATTEMPTS[key])

    async def test_unlimited_retries(self) -> None:
        key = plan("rt-forever", *[ConnectionError("down")] * 25)
        result = await pay_forever.run(key=key)
        assert (RunStatus.COMPLETED, 26) == (result.status, ATTEMPTS[key])

    @pytest.mark.parametrize(("n", "status", "attempts"), [(0, RunStatus.FAILED, 1),
                                                          (3, RunStatus.COMPLETED, 3)])  # fmt: skip
    async def test_retries_from_the_flows_data(
        self, n: int, status: RunStatus, attempts: int
    ) -> None:
        key = plan(f"rt-data-{n}", TimeoutError("a"), TimeoutError("b"))
        result = await pay_with.run(key=key, n=n)
        assert (status, attempts) == (result.status, ATTEMPTS[key])

    async def test_never_retry_given_at_the_call(self) -> None:
        key = plan("rt-call-never", CardTimeout("slow"))
        result = await pay_with.run(key=key, n=5)
        assert (RunStatus.FAILED, 1) == (result.status, ATTEMPTS[key])
        key = plan("rt-call-declined", Declined("no"), Declined("no"))  # no longer never_retry
        result = await pay_with.run(key=key, n=5)
        assert (RunStatus.COMPLETED, 3) == (result.status, ATTEMPTS[key])

    async def test_a_timeout_given_at_the_call(self) -> None:
        key = plan("rt-timeout")
        result = await pay_within.run(key=key, limit=0.05, seconds=30.0)
        assert RunStatus.FAILED == result.status
        assert "timed out after 0.05s" in _message(result)
        assert 0 == ATTEMPTS[key]

    async def test_options_per_member_of_a_gather(self) -> None:
        key = plan("rt-gather", TimeoutError("a"))
        plan("rt-gather-b", TimeoutError("a"), TimeoutError("b"))
        result = await pay_both.run(key=key, n=1)
        assert (RunStatus.COMPLETED, ("paid rt-gather", "paid rt-gather-b")) == (
            result.status,
            result.output,
        )

    async def test_retries_computed_bad_fail_the_node(self) -> None:
        key = plan("rt-negative")
        result = await pay_with.run(key=key, n=-1)
        assert RunStatus.FAILED == result.status
        assert "retries must be a whole number of 0 or more" in _message(result)
        assert 0 == ATTEMPTS[key]


# -- simulate() -------------------------------------------------------------------------------
class TestSimulate:
    """Under simulate() backoff delays pass on virtual time."""

    async def test_unlimited_retries_with_backoff_stop_when_the_node_succeeds(self) -> None:
        key = plan("sim-forever", *[ConnectionError("down")] * 10)
        sim = await simulate_async(pay_patiently, key=key)
        delays = [min(60.0, 2.0**i) for i in range(10)]  # 1, 2, 4, ... capped at 1 minute
        assert (RunStatus.COMPLETED, 11) == (sim.status, len(sim.calls(patient)))
        assert sum(delays) == sim.elapsed.total_seconds()

    async def test_retry_timeout_stops_retrying(self) -> None:
        key = plan("sim-capped", *[ConnectionError("down")] * 100)
        sim = await simulate_async(pay_capped, key=key)
        # attempts start at 0, 1, 3, 7, 15 and 25 minutes; the next would start at 35 > 30
        assert (RunStatus.FAILED, 6) == (sim.status, len(sim.calls(capped)))
        assert 25 * 60 == sim.elapsed.total_seconds()

    async def test_retries_from_the_flows_data(self) -> None:
        key = plan("sim-data", TimeoutError("a"), TimeoutError("b"))
        sim = await simulate_async(pay_with, key=key, n=1)
        assert (RunStatus.FAILED, 2) == (sim.status, ATTEMPTS[key])


# -- the distributed Worker -------------------------------------------------------------------
async def _on_worker(tmp_path: Path, target: Any, store: Any = None, **inputs: Any) -> Any:
    transport = MemoryTransport()
    store = store or SQLiteStore(tmp_path / "runs.db")
    worker = flowkit.Worker(FLOWS, transport, store, poll_interval=0.05)
    client = flowkit.Client(transport, store, flows=FLOWS)
    with anyio.fail_after(30):
        async with anyio.create_task_group() as tg:
            await tg.start(worker.run)
            result = await client.run(target, **inputs)
            tg.cancel_scope.cancel()
    await transport.close()
    return result


class TestWorker:
    """The same policies on an in-process Worker, MemoryTransport + SQLiteStore."""

    async def test_retry_on_and_never_retry(self, tmp_path: Path) -> None:
        key = plan("wk-sub", CardTimeout("slow"))
        result = await _on_worker(tmp_path, pay, key=key)
        assert (RunStatus.COMPLETED, 2) == (result.status, ATTEMPTS[key])
        key = plan("wk-declined", Declined("no"))
        result = await _on_worker(tmp_path, pay, key=key)
        assert (RunStatus.FAILED, 1) == (result.status, ATTEMPTS[key])

    async def test_unlimited_retries(self, tmp_path: Path) -> None:
        key = plan("wk-forever", *[ConnectionError("down")] * 8)
        result = await _on_worker(tmp_path, pay_forever, key=key)
        assert (RunStatus.COMPLETED, 9) == (result.status, ATTEMPTS[key])

    async def test_retries_from_the_flows_data(self, tmp_path: Path) -> None:
        key = plan("wk-data", TimeoutError("a"), TimeoutError("b"))
        result = await _on_worker(tmp_path, pay_with, key=key, n=1)
        assert (RunStatus.FAILED, 2) == (result.status, ATTEMPTS[key])

    async def test_a_timeout_given_at_the_call(self, tmp_path: Path) -> None:
        key = plan("wk-timeout")
        result = await _on_worker(tmp_path, pay_within, key=key, limit=0.1, seconds=30.0)
        assert RunStatus.FAILED == result.status
        assert "timed out after 0.1s" in _message(result)

    async def test_retry_timeout_ends_unlimited_retries(self, tmp_path: Path) -> None:
        """Attempts of 0.3 s: the second fails more than 0.5 s after the first started."""
        key = "wk-late"
        ATTEMPTS.pop(key, None)
        result = await _on_worker(tmp_path, pay_until_late, key=key, seconds=0.3)
        assert RunStatus.FAILED == result.status
        assert 1 <= ATTEMPTS[key] <= 2


@pytest.mark.asyncio_only
@pytest.mark.parametrize("anyio_backend", ["asyncio"])
@pytest.mark.parametrize("kind", ["postgres", "redis"])
class TestServerStores:
    """The dispatch's computed options and first start time survive PostgreSQL and Redis."""

    async def test_retries_from_the_flows_data(self, kind: str, tmp_path: Path) -> None:
        key = plan(f"wk-{kind}", TimeoutError("a"), TimeoutError("b"))
        async with fresh_store(kind) as store:
            result = await _on_worker(tmp_path, pay_with, store, key=key, n=2)
        assert (RunStatus.COMPLETED, 3) == (result.status, ATTEMPTS[key])

    async def test_retry_timeout(self, kind: str, tmp_path: Path) -> None:
        key = f"wk-late-{kind}"
        ATTEMPTS.pop(key, None)
        async with fresh_store(kind) as store:
            result = await _on_worker(tmp_path, pay_until_late, store, key=key, seconds=0.3)
        assert RunStatus.FAILED == result.status
        assert 1 <= ATTEMPTS[key] <= 2


# -- checking the options ---------------------------------------------------------------------
class TestValidation:
    """Bad options are refused where they are written, saying what to do."""

    def test_unknown_option_of_a_direct_call(self) -> None:
        with pytest.raises(ConfigurationError, match="unknown option 'priority'"):
            charge.options(priority=1)

    def test_options_outside_a_flow_just_run_the_function(self) -> None:
        key = plan("direct", TimeoutError("a"))
        with pytest.raises(TimeoutError):
            anyio.run(charge.options(retries=3), key)
        assert "paid direct" == anyio.run(charge.options(retries=3), key)

    def test_bad_direct_option_values(self) -> None:
        with pytest.raises(ConfigurationError, match="retries must be"):
            charge.options(retries=-1)
        with pytest.raises(ConfigurationError, match="exception class"):
            charge.options(retry_on=(int,))  # type: ignore[arg-type]

    def test_unknown_option_in_a_flow(self) -> None:
        with pytest.raises(CompileError, match="unknown option 'priority'"):

            @flow
            async def bad(key: str) -> str:
                return await charge.options(priority=1)(key)

    def test_bad_literal_option_in_a_flow(self) -> None:
        with pytest.raises(CompileError, match="retries must be"):

            @flow
            async def bad(key: str) -> str:
                return await charge.options(retries=-2)(key)

    def test_retry_on_must_be_known_when_compiled(self) -> None:
        with pytest.raises(CompileError, match="known when the flow is compiled"):

            @flow
            async def bad(key: str, kind: Any) -> str:
                return await charge.options(retry_on=kind)(key)

    def test_literal_options_go_into_the_config(self) -> None:
        @flow
        async def literal(key: str) -> str:
            return await charge.options(
                retries=None, retry_timeout="5m", backoff=Backoff(initial="2s")
            )(key)

        config = literal.blueprint.node("charge").config
        expected = (None, 300.0, Backoff(initial=2.0), ("builtins.TimeoutError",))
        assert expected == (config.retries, config.retry_timeout, config.backoff, config.retry_on)
        assert "options" not in literal.blueprint.node("charge").params


class TestBuilder:
    """A ``Flow`` builder node takes its @node's retry policy."""

    async def test_policy_is_carried_and_applied(self) -> None:
        builder = flowkit.Flow("built").node("charge", charge, inputs={"key": "$input.key"})
        config = builder.build().node("charge").config
        assert (("builtins.TimeoutError",), (f"{__name__}.Declined",)) == (
            config.retry_on,
            config.never_retry,
        )
        key = plan("built-declined", Declined("no"))
        result = await flowkit.Runtime().run(builder, key=key)
        assert (RunStatus.FAILED, 1) == (result.status, ATTEMPTS[key])


# -- flowkit flows show -----------------------------------------------------------------------
CLI_APP = """
import flowkit


class Declined(Exception):
    pass


@flowkit.node(retries=None, retry_on=(TimeoutError,), never_retry=(Declined,), retry_timeout="30m")
async def charge(order: str) -> str:
    return order


@flowkit.flow
async def checkout(order: str, n: int) -> str:
    first = await charge(order)
    return await charge.options(retries=n * 2, timeout="10s")(first)
"""


class TestFlowsShow:
    """``flowkit flows show`` lists the policy, and its JSON reads back as the blueprint."""

    def _show(self, tmp_path: Path, *args: str) -> str:
        (tmp_path / "retry_app.py").write_text(CLI_APP)
        env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(tmp_path), *sys.path]))
        env.pop("COLUMNS", None)
        command = [sys.executable, "-m", "flowkit", "flows", "show", "--app", "retry_app:checkout"]
        done = subprocess.run(
            [*command, *args], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60
        )
        assert (0, "") == (done.returncode, done.stderr)
        return done.stdout

    def test_the_table(self, tmp_path: Path) -> None:
        rows = [line.split() for line in self._show(tmp_path).splitlines()]
        first = next(row for row in rows if row[:1] == ["charge"])
        second = next(row for row in rows if row[:1] == ["charge#2"])
        assert ["charge", "call", "retry_app.charge", "forever", "retry", "on"] == first[:6]
        assert "30m" in first
        assert ["charge#2", "call", "retry_app.charge", "=n", "*", "2", "10s"] == second[:7]

    def test_json_round_trips(self, tmp_path: Path) -> None:
        shown = Blueprint.from_json(self._show(tmp_path, "--json"))
        config = shown.node("charge").config
        assert (None, ("builtins.TimeoutError",), ("retry_app.Declined",), 1800.0) == (
            config.retries,
            config.retry_on,
            config.never_retry,
            config.retry_timeout,
        )
        assert {"retries": "n * 2"} == shown.node("charge#2").params["options"]
        assert 10.0 == shown.node("charge#2").config.timeout


# -- queues -----------------------------------------------------------------------------------
@node
async def where(step: str) -> str:
    return step


@flow
async def routed(pool: str) -> list[str]:
    first = await where("first")
    second = await where.options(queue=pool)("second")
    third = await where("third")
    return [first, second, third]


def _record_node(into: list[str], event: Event) -> None:
    into.append(str(event.node_id))


class TestQueues:
    """A node's queue sends its executions to the workers of that queue; the run's other
    nodes go back to the queue the run was started on."""

    async def test_a_call_runs_on_the_workers_of_its_queue(self, tmp_path: Path) -> None:
        transport, store = MemoryTransport(), SQLiteStore(tmp_path / "runs.db")
        flows = [routed]
        main = flowkit.Worker(flows, transport, store, poll_interval=0.05)
        gpu = flowkit.Worker(flows, transport, store, queue="gpu", poll_interval=0.05)
        ran: dict[str, list[str]] = {"main": [], "gpu": []}
        for name, worker in (("main", main), ("gpu", gpu)):
            worker.events.subscribe(partial(_record_node, ran[name]), types={"node:start"})
        client = flowkit.Client(transport, store, flows=flows)
        with anyio.fail_after(30):
            async with anyio.create_task_group() as tg:
                await tg.start(main.run)
                await tg.start(gpu.run)
                result = await client.run(routed, pool="gpu")
                tg.cancel_scope.cancel()
        assert (RunStatus.COMPLETED, ["first", "second", "third"]) == (
            result.status,
            result.output,
        )
        assert {"main": ["where", "where#3"], "gpu": ["where#2"]} == ran

    async def test_the_runtime_runs_every_queue_itself(self) -> None:
        result = await routed.run(pool="gpu")
        assert ["first", "second", "third"] == result.output

    def test_a_literal_queue_goes_into_the_config(self) -> None:
        @flow
        async def literal(step: str) -> str:
            return await where.options(queue="gpu")(step)

        assert "gpu" == literal.blueprint.node("where").config.queue

    async def test_a_computed_queue_must_be_a_name(self) -> None:
        result = await routed.run(pool="")
        assert RunStatus.FAILED == result.status
        assert "queue must be a non-empty string" in _message(result)

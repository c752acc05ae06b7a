"""The performance table: each workload against its reference and goal, from this invocation.

Every figure is a ratio whose two sides were measured in the same invocation
(see the sections). A row whose section did not run, or whose peer cannot run
here, stays in the table with ``met`` empty and the reason in ``why``.
"""

from __future__ import annotations

from typing import Any

from . import distributed, durable, engine, scaling
from ._util import Table, ratio

RAW_GOAL = 0.6
CELERY_GOALS = {"rabbitmq": 1.5, "redis": 2.9}
DISTRIBUTED = ("rabbitmq", "redis")


class Goals:
    """Rows of the table, with a helper that fills in ``met`` and ``why``."""

    def __init__(self) -> None:
        self.table = Table("goals: the performance table (ratios measured in this invocation)")

    def add(
        self,
        workload: str,
        reference: str,
        goal: str,
        measured: Any,
        met: bool | None,
        why: str = "",
    ) -> None:
        self.table.rows.append(
            {
                "workload": workload,
                "reference": reference,
                "goal": goal,
                "measured": measured,
                "met": None if measured is None else met,
                "why": why,
            }
        )


def _note(tables: list[Table], *starts: str) -> str:
    """The first note of ``tables`` that starts with one of ``starts`` (a skip reason)."""
    for table in tables:
        for note in table.notes:
            if note.startswith(starts):
                return note
    return ""


def _engine(goals: Goals, results: dict[str, list[Table]]) -> None:
    workload, reference, goal = "in-memory chain 1 000", "Flowcraft", ">= 10x"
    if "engine" not in results:
        goals.add(workload, reference, goal, None, None, "engine section not run")
        return
    row = engine.summary(results["engine"])["rows"].get(("chain", 1000))
    x = None if row is None else row.get("x_flowcraft")
    why = "" if x is not None else _note(results["engine"], "Flowcraft") or "no 1 000 chain"
    goals.add(workload, reference, goal, x, x is not None and x >= 10, why)


def _scaling(goals: Goals, results: dict[str, list[Table]]) -> None:
    reference = "plain asyncio create_task + gather (a task per node)"
    if "scaling" not in results:
        for shape in ("chain", "fan"):
            goals.add(f"in-memory {shape} 1 000", reference, ">= 0.8", None, None, "not run")
        goals.add("in-memory 10-node runs", "growth", "<= 1.1", None, None, "not run")
        return
    s = scaling.summary(results["scaling"])
    for shape, row in s["asyncio"].items():
        x = row["x_asyncio"]
        goals.add(
            f"in-memory {shape} {row['nodes']}",
            reference,
            f">= {scaling.ASYNCIO_GOAL}",
            x,
            x is not None and x >= scaling.ASYNCIO_GOAL,
            f"{row['flowkit_us_node']} vs {row['asyncio_us_node']} us/node",
        )
    workload = f"N concurrent {scaling.SMALL_RUN}-node runs"
    small, large = (s["growth"].get(("memory", workload, n)) for n in (1000, 10_000))
    growth, why = None, "not measured"
    if small is not None and large is not None:
        growth = ratio(large["us_node"], small["us_node"])
        why = f"{small['us_node']} -> {large['us_node']} us/node"
    goals.add(
        "in-memory 10-node runs: us/node at 10 000 ÷ at 1 000 concurrent runs",
        "growth",
        f"<= {scaling.GROWTH_BUDGET}",
        growth,
        growth is not None and growth <= scaling.GROWTH_BUDGET,
        why,
    )


def _durable(goals: Goals, results: dict[str, list[Table]]) -> None:
    workload, reference = "durable chain of 100 steps on PostgreSQL", "DBOS, same server"
    tables = results.get("persistence", [])
    if len(tables) < 2:
        goals.add(workload, reference, ">= 3x", None, None, "persistence section not run")
        return
    row = durable.summary(tables[1])
    x = row.get("x_dbos")
    why = row.get("why") or (
        f"statements/step: flowkit {row['flowkit_stmts_step']}, DBOS {row['dbos_stmts_step']}"
    )
    goals.add(workload, reference, f">= {durable.GOAL:g}x", x, x is not None and x >= 3, why)


def _distributed(goals: Goals, results: dict[str, list[Table]]) -> None:
    tables = results.get("distributed", [])
    rows = distributed.summary(tables) if tables else {}
    raw = "raw publish -> consume -> ack, same client"

    def missing(broker: str, workers: int) -> str:
        if not tables:
            return "distributed section not run"
        return _note(tables, f"{broker} x{workers}", f"{broker}:") or f"{broker} x{workers}: no row"

    def cell(broker: str, workers: int, key: str) -> tuple[Any, str]:
        row = rows.get((broker, workers))
        if row is None:
            return None, missing(broker, workers)
        value = row.get(key)
        if value is None and "celery" in key:
            return None, _note(tables, f"Celery on {broker}") or "Celery did not run"
        return value, ""

    for broker in DISTRIBUTED:
        x, why = cell(broker, 1, "x_raw_chain")
        goals.add(
            f"distributed {distributed.CHAIN}-node chain, 1 worker ({broker})",
            raw,
            f">= {RAW_GOAL}",
            x,
            x is not None and x >= RAW_GOAL,
            why,
        )
        x, why = cell(broker, 2, "x_raw_chain")
        one, _ = cell(broker, 1, "chain_steps_s")
        two, _ = cell(broker, 2, "chain_steps_s")
        faster = one is not None and two is not None and two > one
        goals.add(
            f"distributed {distributed.CHAIN}-node chain, 2 workers ({broker})",
            raw,
            f">= {RAW_GOAL}, and 2 workers faster than 1",
            x,
            x is not None and x >= RAW_GOAL and faster,
            why or f"steps/s 1 -> 2 workers: {one} -> {two}",
        )
        for workers in (1, 2):
            x, why = cell(broker, workers, "x_raw_fan")
            goals.add(
                f"distributed {distributed.FAN}-wide fan, {workers} worker(s) ({broker})",
                raw,
                f">= {RAW_GOAL}",
                x,
                x is not None and x >= RAW_GOAL,
                why,
            )
    for broker in DISTRIBUTED:
        goal = CELERY_GOALS[broker]
        for shape in ("chain", "fan"):
            for workers in (1, 2):
                x, why = cell(broker, workers, f"x_celery_{shape}")
                goals.add(
                    f"distributed {shape}, {workers} worker(s) ({broker})",
                    "Celery, same guarantees" + (" (chord)" if shape == "fan" else ""),
                    f">= {goal}",
                    x,
                    x is not None and x >= goal,
                    why,
                )


def table(results: dict[str, list[Table]]) -> Table:
    goals = Goals()
    _engine(goals, results)
    _scaling(goals, results)
    _durable(goals, results)
    _distributed(goals, results)
    goals.table.notes.append(
        "measured = flowkit ÷ reference (throughput ratio; for growth, us/node at the larger "
        "size ÷ at the smaller); met is empty when the row could not be measured (see why)"
    )
    return goals.table

"""A builder-graph ETL: extract, clean every row in a batch while profiling, load, then gate.

::

    extract ──► clean (batch: one execution per row) ──┐
        └─────► profile ───────────────────────────────┴─► load ─┬─► publish     (no rejects)
                                                                 └─► quarantine  (rejects)

``clean`` and ``profile`` run in parallel; ``load`` joins both (``join="all"``);
the edges out of ``load`` carry ``when=`` conditions, so exactly one of
``publish`` / ``quarantine`` runs and the other is skipped.

Serve it with ``python -m flowkit.worker --app examples.etl.flows``.
"""

from __future__ import annotations

import csv
import io
from typing import Any

from flowkit import Flow

DATASETS = {
    "sales-q1": """region,product,units,unit_price
north,widget,3,2.50
south,widget,5,2.50
North,gadget,1,10.00
east,gizmo,2,4.25
south,gadget,4,10.00
""",
    "sales-q2": """region,product,units,unit_price
north,widget,2,2.50
west,gadget,n/a,10.00
east,gizmo,6,4.25
south,widget,,2.50
""",
}


async def extract(dataset: str) -> list[dict[str, str]]:
    """Read the raw rows (a real pipeline would query a database or an object store)."""
    return list(csv.DictReader(io.StringIO(DATASETS[dataset])))


async def clean(row: dict[str, str]) -> dict[str, Any]:
    """Normalise one row; rows that do not parse are kept, marked with an ``error``."""
    region = row["region"].strip().lower()
    try:
        units = int(row["units"])
        revenue = round(units * float(row["unit_price"]), 2)
    except ValueError:
        return {"region": region, "product": row["product"], "error": f"units={row['units']!r}"}
    return {"region": region, "product": row["product"], "units": units, "revenue": revenue}


async def profile(rows: list[dict[str, str]]) -> dict[str, Any]:
    """Describe the raw data: row count and regions seen."""
    return {"rows": len(rows), "regions": sorted({r["region"].strip().lower() for r in rows})}


async def load(rows: list[dict[str, Any]], stats: dict[str, Any]) -> dict[str, Any]:
    """Aggregate revenue per region (a real pipeline would write to a warehouse)."""
    revenue: dict[str, float] = {}
    for row in rows:
        if "error" not in row:
            revenue[row["region"]] = round(revenue.get(row["region"], 0.0) + row["revenue"], 2)
    rejected = [row for row in rows if "error" in row]
    return {"rows": stats["rows"], "revenue": revenue, "rejected": rejected}


async def publish(summary: dict[str, Any]) -> dict[str, Any]:
    return {"published": True, "revenue": summary["revenue"]}


async def quarantine(summary: dict[str, Any]) -> dict[str, Any]:
    return {"published": False, "revenue": summary["revenue"], "rejected": summary["rejected"]}


etl = (
    Flow("etl")
    .node("extract", extract, retries=2)
    .batch("clean", clean, concurrency=4)  # one execution per row; results in input order
    .node("profile", profile)
    .node("load", load, join="all", inputs={"rows": "clean", "stats": "profile"})
    .node("publish", publish)
    .node("quarantine", quarantine)
    .edge("extract", "clean")
    .edge("extract", "profile")
    .edge("clean", "load")
    .edge("profile", "load")
    .edge("load", "publish", when="len(result['rejected']) == 0")
    .edge("load", "quarantine", when="len(result['rejected']) > 0")
)

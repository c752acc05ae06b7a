"""``python -m examples.etl``: the ETL graph on both built-in data sets, in-memory."""

from __future__ import annotations

import anyio

import flowkit

from .flows import DATASETS, etl


async def main() -> dict[str, flowkit.RunResult]:
    rt = flowkit.Runtime()
    results = {}
    for dataset in DATASETS:
        results[dataset] = result = await rt.run(etl, dataset=dataset)
        taken = [node for node, status in result.path().items() if status == "visited"]
        print(f"{dataset}: {result.status} via {' -> '.join(taken)}")
        print(f"  {result.output}\n")
    return results


if __name__ == "__main__":
    anyio.run(main)

"""``python -m bench [--quick] [--json FILE] [--only engine|smoke] [--no-flowcraft]``."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from . import engine


def _table(rows: list[dict[str, Any]]) -> str:
    columns = list(dict.fromkeys(key for row in rows for key in row))
    widths = {c: max(len(c), *(len(str(r.get(c, ""))) for r in rows)) for c in columns}
    lines = ["  ".join(c.ljust(widths[c]) for c in columns)]
    lines.append("  ".join("-" * widths[c] for c in columns))
    for row in rows:
        lines.append("  ".join(str(row.get(c, "")).ljust(widths[c]) for c in columns))
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="smaller sizes, fewer runs")
    parser.add_argument("--json", metavar="FILE", help="also write the results as JSON")
    parser.add_argument("--only", choices=["engine", "smoke"], help="run one section")
    parser.add_argument("--no-flowcraft", action="store_true", help="skip the Flowcraft runs")
    args = parser.parse_args(argv)
    results: dict[str, Any] = {}
    if args.only == "smoke":
        results["engine"] = engine.run((50,), 1, flowcraft=False)
    else:
        sizes = (100, 1000) if args.quick else (100, 1000, 5000, 10000)
        runs = 3 if args.quick else 5
        results["engine"] = engine.run(sizes, runs, flowcraft=not args.no_flowcraft)
    for section, rows in results.items():
        print(f"\n== {section} ==")
        print(_table(rows))
    if args.json:
        with open(args.json, "w") as out:
            json.dump(results, out, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())

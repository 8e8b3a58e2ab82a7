"""Print the figures of a reliability run: ``python -m reliability.report FIGURES.jsonl``.

Exit status 1 when the file holds no figures (the suite did not run), so `make reliability`
cannot pass without having measured anything.
"""

from __future__ import annotations

import sys
from collections import defaultdict
from pathlib import Path

from reliability.figures import Figure, load

_ADDITIVE = (
    "crashes_survived",
    "executions",
    "faults_injected",
    "inputs_fuzzed",
    "requests",
    "errors",
    "lost",
    "duplicates",
    "duplicate_parents",
)


def summarize(rows: list[dict[str, Figure]]) -> list[str]:
    lines: list[str] = []
    by_check: dict[str, list[dict[str, Figure]]] = defaultdict(list)
    for row in rows:
        by_check[str(row.get("check"))].append(row)
    for check in sorted(by_check):
        lines.append(f"{check}:")
        for row in by_check[check]:
            shown = ", ".join(
                f"{key} {value}" for key, value in row.items() if key not in ("check", "at")
            )
            lines.append(f"  {shown}")
    totals: dict[str, float] = defaultdict(float)
    for row in rows:
        for key in _ADDITIVE:
            value = row.get(key)
            if isinstance(value, int | float):
                totals[key] += value
    lines.append(
        "totals: " + ", ".join(f"{key} {int(totals[key])}" for key in _ADDITIVE if key in totals)
    )
    return lines


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1:
        print("usage: python -m reliability.report FIGURES.jsonl", file=sys.stderr)
        return 2
    rows = load(Path(args[0]))
    if not rows:
        print(f"no reliability figures in {args[0]}: the suite did not run", file=sys.stderr)
        return 1
    print("\n".join(["", "Reliability figures", "-------------------", *summarize(rows)]))
    return 0


if __name__ == "__main__":
    sys.exit(main())

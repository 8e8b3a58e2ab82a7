"""Figures the reliability checks measure, gathered into one report.

Each check calls ``record(check, **figures)``; the figures are appended as one JSON line to
``$PIPEBOT_RELIABILITY_FIGURES`` (``make reliability`` sets it) and printed, so a plain
``pytest -s`` run shows them too. ``python -m reliability.report`` reads the file back.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Final

FIGURES_ENV: Final = "PIPEBOT_RELIABILITY_FIGURES"

Figure = int | float | str


def figures_path() -> Path | None:
    value = os.environ.get(FIGURES_ENV, "").strip()
    return Path(value) if value else None


def record(check: str, **figures: Figure) -> None:
    """Append ``figures`` for ``check`` to the figures file (when set) and print them."""
    line = {"check": check, "at": time.strftime("%Y-%m-%dT%H:%M:%S"), **figures}
    print(f"\n[reliability] {json.dumps(line, sort_keys=True)}", flush=True)
    path = figures_path()
    if path is None:
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a", encoding="utf-8") as out:
        out.write(json.dumps(line, sort_keys=True) + "\n")


def load(path: Path) -> list[dict[str, Figure]]:
    if not path.exists():
        return []
    rows: list[dict[str, Figure]] = []
    for raw in path.read_text(encoding="utf-8").splitlines():
        if raw.strip():
            rows.append(json.loads(raw))
    return rows

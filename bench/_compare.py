"""Run one benchmark twice with the same arguments and compare its targets' figures.

``make bench`` runs every benchmark through this: the issue asks that the same sizes
run twice give figures within 15 % of each other. Each run is a process of its own;
the figures compared are the ``measured`` values of the ``targets`` in each run's
last JSON line.

    python -m bench._compare bench.ingest --n 100000
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Sequence
from typing import Any

from bench import _report

TOLERANCE = 0.15


def spread(a: float, b: float) -> float:
    """How far apart two figures are, as a share of the larger one."""
    high = max(abs(a), abs(b))
    return abs(a - b) / high if high else 0.0


def run_once(module: str, args: Sequence[str]) -> dict[str, Any]:
    proc = subprocess.run(
        [sys.executable, "-m", module, *args], check=True, text=True, stdout=subprocess.PIPE
    )
    sys.stdout.write(proc.stdout)
    lines = [line for line in proc.stdout.splitlines() if line.strip()]
    figures: dict[str, Any] = json.loads(lines[-1])
    return figures


def compare(first: dict[str, Any], second: dict[str, Any]) -> list[dict[str, Any]]:
    """Per target: both figures, their spread, and whether it is within the tolerance."""
    seconds = {t["name"]: t for t in second.get("targets", [])}
    rows = []
    for t in first.get("targets", []):
        other = seconds.get(t["name"])
        a, b = t["measured"], other["measured"] if other else None
        if isinstance(a, int | float) and isinstance(b, int | float):
            s: float | None = spread(float(a), float(b))
        else:
            # A figure in words ("3 of 3") repeats when it reads the same.
            s = 0.0 if other is not None and a == b else None
        rows.append(
            {
                "name": t["name"],
                "first": a,
                "second": b,
                "spread": s,
                "within": s is not None and s <= TOLERANCE,
                "met": bool(t["met"]) and bool(other and other["met"]),
            }
        )
    return rows


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv:
        raise SystemExit("usage: python -m bench._compare bench.<name> [args...]")
    module, args = argv[0], argv[1:]
    first = run_once(module, args)
    second = run_once(module, args)
    rows = compare(first, second)
    _report.title(f"{module} {' '.join(args)}: the same run twice")
    _report.table(
        ["target", "first", "second", "spread", f"within {TOLERANCE:.0%}", "met both times"],
        [
            [r["name"], r["first"], r["second"], r["spread"] or 0.0, r["within"], r["met"]]
            for r in rows
        ],
    )
    figures = {"bench": "compare", "module": module, "args": args, "rows": rows}
    _report.emit_json(figures)
    return figures


if __name__ == "__main__":
    main()

"""What every benchmark shares: its command line, an aligned table, the JSON last line."""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
from collections.abc import Mapping, Sequence
from typing import Any, TextIO


def parser(description: str, default_n: int) -> argparse.ArgumentParser:
    """The common command line: ``--n`` (how many items the benchmark works on)."""
    p = argparse.ArgumentParser(description=description)
    p.add_argument(
        "--n",
        type=_positive,
        default=default_n,
        help=f"how many items to work on (default {default_n:,})",
    )
    return p


def _positive(text: str) -> int:
    value = int(text.replace("_", "").replace(",", ""))
    if value < 1:
        raise argparse.ArgumentTypeError("must be at least 1")
    return value


def rate(count: int, seconds: float) -> float:
    """Items per second (``inf`` when nothing measurable elapsed)."""
    return count / seconds if seconds > 0 else math.inf


def fmt(value: Any) -> str:
    """A cell: integers with thousands separators, floats to about 3 significant places."""
    if isinstance(value, bool):
        return "yes" if value else "NO"
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, float):
        if math.isinf(value) or math.isnan(value):
            return str(value)
        if abs(value) >= 1000:
            return f"{value:,.0f}"
        if abs(value) >= 10:
            return f"{value:.1f}"
        return f"{value:.3f}"
    return str(value)


def table(
    headers: Sequence[str], rows: Sequence[Sequence[Any]], *, out: TextIO | None = None
) -> None:
    """Print ``rows`` under ``headers``, aligned: text to the left, numbers to the right."""
    out = out or sys.stdout
    cells = [[fmt(v) for v in row] for row in rows]
    numeric = [
        all(isinstance(row[i], int | float) and not isinstance(row[i], bool) for row in rows)
        for i in range(len(headers))
    ]
    widths = [max([len(h), *(len(row[i]) for row in cells)]) for i, h in enumerate(headers)]

    def line(values: Sequence[str]) -> str:
        return "  ".join(
            v.rjust(w) if num else v.ljust(w)
            for v, w, num in zip(values, widths, numeric, strict=True)
        ).rstrip()

    print(line(list(headers)), file=out)
    print("  ".join("-" * w for w in widths), file=out)
    for row in cells:
        print(line(row), file=out)
    out.flush()


def title(text: str, *, out: TextIO | None = None) -> None:
    out = out or sys.stdout
    print(f"\n{text}\n{'=' * len(text)}", file=out)


def emit_json(figures: Mapping[str, Any], *, out: TextIO | None = None) -> None:
    """The benchmark's last line: one JSON object with its figures."""
    out = out or sys.stdout
    print(json.dumps(_jsonable(figures)), file=out)
    out.flush()


def _jsonable(value: Any) -> Any:
    if isinstance(value, float):
        return round(value, 4) if math.isfinite(value) else None
    if isinstance(value, Mapping):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    return value


def machine() -> dict[str, Any]:
    """Where the figures were taken."""
    return {"python": sys.version.split()[0], "cpus": os.cpu_count()}


def target(name: str, wanted: str, measured: Any, met: bool, *, unit: str = "") -> dict[str, Any]:
    """One of the issue's targets, as the JSON line carries it under ``targets``.

    Args:
        name: what is measured, e.g. ``"ingest records/s (SQLite)"``.
        wanted: the target as people read it, e.g. ``">= 200,000"``.
        measured: the figure this run measured (a number, or ``None`` when not run).
        met: whether the figure meets the target.
        unit: the figure's unit, for the table.
    """
    return {"name": name, "wanted": wanted, "measured": measured, "unit": unit, "met": met}


def targets(rows: Sequence[Mapping[str, Any]], *, out: TextIO | None = None) -> None:
    """The ``Targets`` table every benchmark prints: target, wanted, measured, met."""
    title("Targets", out=out)
    table(
        ["target", "wanted", "measured", "unit", "met"],
        [[r["name"], r["wanted"], r["measured"], r["unit"], r["met"]] for r in rows],
        out=out,
    )

"""Ingest of a file drop: time and peak memory, read whole or a page at a time.

Generates a sample company of ``--n`` customer accounts (default 100,000) with
``integrations/sources/sample.py`` into a folder (not timed), then ingests that drop
into a fresh, migrated SQLite ledger with ``ingest_sources.fn`` and the file source,
twice, each in a process of its own so that each peak is its own:

* ``whole``: the drop as one page (``page_records=0``): every row of every file in
  memory at once, stored in one transaction, as the file source read it before pages;
* ``paged``: ``--page-records`` rows at a time (default the task's own, 10,000), each
  page stored in a transaction of its own, the cursor with the last.

Each child reports its wall time, its peak resident memory (``ru_maxrss``) and what the
ingest counted; the two must count the same. The peak includes the interpreter and the
imports (about 150 MB here), which the ``baseline`` row shows: a child that imports the
same modules and ingests nothing.

Measured on the 2-CPU, 24 GiB reference machine, SQLite, idle (commit 6f521db; the
``whole`` row of the code before it, which also held each file's text, differed by
under 5 %: 1,038 MB and 19.2 s at 100,000)::

    customers   drop     records    mode     seconds   peak memory
    100,000     53 MB      720,053  whole       18.8      1,078 MB
                                    paged       19.3        225 MB
    1,000,000   556 MB   7,201,683  whole        214      9,553 MB
                                    paged        207        834 MB

Both count the same (4,122,399 new events, 7 quarantined at 1,000,000). What a paged
read still holds grows with the drop: the first line of every event id (a repeated id
is refused naming it), about 0.7 GB of the 834 MB at 1,000,000.

    python -m bench.ingest [--n N] [--page-records P]
"""

from __future__ import annotations

import json
import resource
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bench import _report

DEFAULT_N = 100_000
SEED = 7
MODES = ("baseline", "whole", "paged")


def child(mode: str, folder: Path, database: Path, page_records: int) -> dict[str, Any]:
    """One ingest in this process (``mode``), its figures."""
    from integrations.ledger.engine import make_engine
    from integrations.ledger.migrate import upgrade
    from integrations.ledger.sql import SqlLedger
    from integrations.sources.files import FileSource
    from tasks.ingest import ingest_sources

    engine = make_engine(f"sqlite:///{database}")
    upgrade(engine)
    ledger = SqlLedger(engine)
    figures: dict[str, Any] = {"mode": mode}
    began = time.perf_counter()
    if mode != "baseline":
        pages = 0 if mode == "whole" else page_records
        (report,) = ingest_sources.fn([FileSource(folder)], ledger, datetime.now(UTC), pages)
        figures.update(
            records_in=report.records_in,
            new_events=report.new_events,
            quarantined=report.quarantined,
            reference_rows=report.reference_rows,
            balanced=report.balanced,
        )
    figures["seconds"] = time.perf_counter() - began
    figures["max_rss_mb"] = _peak_rss_mb()
    engine.dispose()
    return figures


def _peak_rss_mb() -> float:
    """This process's own peak resident memory. Linux's ``ru_maxrss`` keeps, across the
    exec that started this child, the peak of the parent it was forked from (which holds
    the generated company): ``VmHWM`` is this program's alone."""
    status = Path("/proc/self/status")
    if status.exists():
        for line in status.read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def run(n: int, page_records: int) -> dict[str, Any]:
    from integrations.sources.sample import generate

    with tempfile.TemporaryDirectory(prefix="bench-ingest-") as tmp:
        root = Path(tmp)
        inbox = root / "inbox"
        began = time.perf_counter()
        generate(inbox, datetime.now(UTC).replace(minute=0, second=0, microsecond=0), n, SEED)
        generate_s = time.perf_counter() - began
        drop_mb = sum(p.stat().st_size for p in inbox.iterdir() if p.is_file()) / 2**20
        runs = []
        for mode in MODES:
            database = root / f"{mode}.db"
            out = subprocess.run(
                [
                    sys.executable,
                    "-m",
                    "bench.ingest",
                    "--child",
                    mode,
                    str(inbox),
                    str(database),
                    str(page_records),
                ],
                check=True,
                capture_output=True,
                text=True,
            )
            runs.append(json.loads(out.stdout.strip().splitlines()[-1]))
    counted = [
        (r["records_in"], r["new_events"], r["quarantined"]) for r in runs if "records_in" in r
    ]
    figures: dict[str, Any] = {
        "bench": "ingest",
        "n": n,
        "page_records": page_records,
        "drop_mb": drop_mb,
        "generate_s": generate_s,
        "runs": runs,
        "same_counts": len(set(counted)) == 1,
    }
    figures.update(_report.machine())
    return figures


def print_tables(f: dict[str, Any]) -> None:
    _report.title(
        f"File drop ingest: {f['n']:,} customer accounts, {f['drop_mb']:.0f} MB of CSV "
        f"(generated in {f['generate_s']:.0f} s, not timed)"
    )
    _report.table(
        ["mode", "records", "new events", "quarantined", "seconds", "peak memory, MB"],
        [
            [
                r["mode"] if r["mode"] != "paged" else f"paged ({f['page_records']:,})",
                r.get("records_in", "-"),
                r.get("new_events", "-"),
                r.get("quarantined", "-"),
                r["seconds"],
                round(r["max_rss_mb"]),
            ]
            for r in f["runs"]
        ],
    )
    print(f"both modes count the same: {_report.fmt(f['same_counts'])}")


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    args = list(sys.argv[1:] if argv is None else argv)
    if args[:1] == ["--child"]:
        mode, folder, database, page_records = args[1:5]
        figures = child(mode, Path(folder), Path(database), int(page_records))
        print(json.dumps(figures))
        return figures
    p = _report.parser(
        "Ingest a generated file drop whole and in pages: time and peak memory.", DEFAULT_N
    )
    from tasks.ingest import PAGE_RECORDS

    p.add_argument(
        "--page-records",
        type=int,
        default=PAGE_RECORDS,
        help=f"rows per page in the paged run (default {PAGE_RECORDS:,})",
    )
    parsed = p.parse_args(args)
    figures = run(parsed.n, parsed.page_records)
    print_tables(figures)
    _report.emit_json(figures)
    return figures


if __name__ == "__main__":
    main()

"""Detection throughput: the stage as the system runs it, beside the same selection in SQL.

Generates ``--n`` (default 1,000,000) canonical CRM and NPS events into a fresh, migrated
SQLite ledger, then times, on that one database:

(a) the detection stage as the flow runs it, ``detect_new_moments.fn``: the program's
    rules as a ``DetectionSpec`` (domain), compiled to SQL by the ledger and run in
    chunks of ``--batch-size`` event ids, one transaction each (default: the stage's own
    chunk; the flow's rows-per-batch setting does not apply to it). Its time is split
    by statement: the one scan of the chunk into its temporary table, moments and
    follow-ups ``INSERT ... SELECT`` from that table, the counts, and the rest (creating
    and dropping the table, locks, watermark, commits with their WAL checkpoints);
(b) the same selection written as one SQL statement, ``INSERT ... SELECT`` into a scratch
    moments table (the floor), and, for reference, the old stage's whole write set in
    SQL (moments, follow-ups, marking every event examined) in one transaction;
(c) the pure ``detect()`` over SourceEvent objects built beforehand (no database).

Targets (issue 17): the stage within 1.2x of the SQL floor, and over 200,000 events/s
(1M events, SQLite), in the shared Targets table and under the JSON's ``targets``.
``--profile`` runs the stage under cProfile and prints where its time goes.

Figures at 1,000,000 events, on a shared 2-core machine (1-minute load 0.6 to 6.5 while
measuring; 4 to 17 in the last three items). Wall seconds moved by 2-3x between runs of
the same code (in a fresh run the checkpoints' fsyncs may wait for the seeding's writes
to reach the disk), CPU seconds far less; base and change were run back to back.

* before (73666e2), four runs: stage / floor 1.24, 1.22, 1.23, 1.54 on wall and 1.28,
  1.24, 1.21, 1.70 on CPU (stage 3.05, 2.54, 2.64, 2.17 CPU s); 141,000, 327,000,
  188,000, 381,000 events/s.
* after (moments CHECK without IN, migration 0028; leaner compiled rules), five runs:
  stage / floor 1.27, 1.23, 1.13, 1.19, 0.89 on wall and 1.18, 1.16, 0.98, 1.12, 1.04
  on CPU (stage 2.24, 2.62, 2.70, 2.07, 2.15 CPU s); 126,000, 143,000, 136,000 events/s
  in the three runs at load 6 to 6.5, 394,000 and 365,000 at load 3.3 to 3.8 (both
  targets met in those two).
* the moments ``INSERT ... SELECT`` alone, 200,000 events in one chunk, counted by
  callgrind (independent of load): 3.49 G instructions before, 2.65 G after (the
  floor's whole statement: 2.06 G). SQLite 3.40 built a temporary index per written
  moment for ``CHECK (status IN (...))``.
* merged with main at fb843ba, whose engine gives every SQLite connection a 64 MiB page
  cache (the floor's too, which then stops spilling pages and takes 1.5 to 2.5 s): stage
  / floor 1.36, 1.31 (chunks of 200,000) and 1.38 (500,000) on wall, 1.47 to 1.55 on
  CPU; 486,000, 305,000 and 363,000 events/s. Main at fb843ba itself: 3.27 on wall,
  1.94 on CPU, 205,000 events/s. The 1.2x target is not met against that floor.
* all of issue 17 merged (4b51ea9), the machine otherwise idle (load 2.1): stage /
  floor 1.53 on wall, 1.58 on CPU (stage 1.98, floor 1.26 CPU s); 472,911 events/s.
  What the stage does beyond the floor: follow-ups and counts (two more scans of each
  chunk) and a commit per chunk.
* tried and left out, no gain measured: chunks of 500,000 (same CPU as 200,000), a
  memory-mapped database during the stage, checkpointing once at the end instead of at
  every chunk's commit.
* one scan per chunk (branch ``detect``): one ``INSERT ... SELECT`` copies the chunk's
  moments, detractors and moments without a contact into a temporary table, which the
  moments and follow-ups inserts and the counts read; the events were scanned three
  times. The machine was loaded by other work throughout (1-minute load 5 to 17), so
  only CPU seconds mean much, and even the floor's moved by 15 %. Base (d83730b) and
  change back to back, seven pairs: stage 1.71, 1.69, 1.76, 1.71, 1.68, 1.74, 1.81 CPU s
  before, 1.53, 1.65, 1.61, 1.56, 1.61, 1.63, 1.57 after; stage / floor on CPU 1.51,
  1.58, 1.61, 1.57, 1.56, 1.43, 1.53 before, 1.46, 1.43, 1.49, 1.46, 1.47, 1.45, 1.49
  after; 117,000 to 269,000 events/s at that load, before and after alike. By statement,
  in CPU seconds, on copies of one seeded database (load 4 to 6): moments 1.19,
  follow-ups 0.14, counts 0.15 before; scan into the table 0.42, moments from it 0.78,
  follow-ups 0.03, counts 0.05, dropping the table 0.03 after; commits 0.15 to 0.17 in
  both. The same moments, follow-ups and watermark, row for row.
* what keeps the stage above 1.2x of this floor is mostly the table it writes:
  ``moments`` holds two unique indexes on the same key (``pk_moments`` on
  ``moment_id`` and ``uq_moments_source_event``; moment ids are event keys since
  migration 0007) and a status check, the floor's scratch table one key and no check.
  The floor's own statement into a table shaped like ``moments`` (printed for reference)
  took 1.36 to 1.59 CPU s against 1.05 to 1.22, and the stage was 1.09, 1.16x of it
  before and 1.14, 1.16x after (two pairs, load 12 to 17). Without
  ``uq_moments_source_event`` (the table rebuilt by hand on a copy), the stage's moments
  insert took 0.66 to 0.72 CPU s instead of 0.79 to 0.89 and the stage 1.19, 1.26, 1.34,
  1.28x the floor (four runs, load 6 to 9; 1.38 to 1.47x with the index, run alternately).
  The rest is the chunking: five commits rewrite the pages of the indexes keyed in no
  order once per chunk (0.15 CPU s against the floor's one commit), and the table,
  follow-ups and counts (about 0.1).
* tried with the temporary table, left out: chunks of 500,000 (1.41x against 1.45x at
  200,000, two pairs on CPU; the write lock held 2.5 times longer), the temporary table
  in memory (``temp_store``; same CPU), a table of event ids only joined back to the
  events (1.51x), one statement routing every row through an ``INSTEAD OF`` trigger on
  a temporary view (1.78x), details without ``CAST``/``coalesce`` (same CPU).

``make bench`` at 7f47548 (all of issue 17), the machine otherwise idle, twice: stage /
floor 1.286 and 1.276 on wall, 1.50 and 1.47 on CPU (against the floor into a table
shaped like ``moments``: 1.19 and 1.16 on CPU); 563,140 and 580,239 events/s. The
1.2x target is not met against the scratch-table floor.

    python -m bench.detection [--n N] [--batch-size B] [--profile]
"""

from __future__ import annotations

import cProfile
import io
import os
import pstats
import sqlite3
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, event, text

from bench import _events, _report
from bench._ledger import DATABASE, checkpoint, fresh_ledger, size_mb
from config.program import load_program
from config.settings import PROJECT_ROOT
from domain.moments import detect
from domain.program import Program
from integrations.ledger.detection import DEFAULT_CHUNK, SqlMomentsStore
from integrations.ledger.sql import SqlLedger
from tasks.moments import DetectionReport, detect_new_moments

DEFAULT_N = 1_000_000
TARGET_RATIO = 1.2
TARGET_EVENTS_PER_S = 200_000.0
EXAMINED_AT = _events.NOW


@dataclass
class StatementTimes:
    """Seconds the stage's statements took, by kind, from the engine's own events."""

    scan: float = 0.0
    moments: float = 0.0
    follow_ups: float = 0.0
    counts: float = 0.0
    chunks: int = 0
    other: dict[str, float] = field(default_factory=dict)

    def add(self, statement: str, seconds: float) -> None:
        head = " ".join(statement.split())[:40]
        if head.startswith("INSERT INTO detection_chunk"):
            self.scan += seconds
        elif head.startswith("INSERT INTO moments"):
            self.moments += seconds
            self.chunks += 1
        elif head.startswith("INSERT INTO follow_ups"):
            self.follow_ups += seconds
        elif head.startswith("SELECT count"):
            self.counts += seconds
        else:
            self.other[head] = self.other.get(head, 0.0) + seconds


@contextmanager
def statement_times(engine: Engine) -> Iterator[StatementTimes]:
    """Time every statement ``engine`` runs inside the block."""
    times = StatementTimes()

    def before(conn: Any, _cursor: Any, _sql: str, *_args: Any) -> None:
        conn.info["bench_started"] = time.perf_counter()

    def after(conn: Any, _cursor: Any, sql: str, *_args: Any) -> None:
        times.add(sql, time.perf_counter() - conn.info.pop("bench_started"))

    event.listen(engine, "before_cursor_execute", before)
    event.listen(engine, "after_cursor_execute", after)
    try:
        yield times
    finally:
        event.remove(engine, "before_cursor_execute", before)
        event.remove(engine, "after_cursor_execute", after)


# -- seeding -----------------------------------------------------------------------------


def seed(database: Path, n: int) -> float:
    """Insert ``n`` generated events with ``executemany``; the seconds it took.

    Uses a connection of its own with a large page cache and no syncing: seeding is not
    what is measured, and the ledger's pooled connections keep their own settings.
    """
    columns = ", ".join(_events.COLUMNS)
    marks = ", ".join("?" * len(_events.COLUMNS))
    sql = f"INSERT INTO source_events ({columns}) VALUES ({marks})"  # noqa: S608
    start = time.perf_counter()
    conn = sqlite3.connect(database, isolation_level=None)
    try:
        conn.execute("PRAGMA cache_size = -524288")  # 512 MiB
        conn.execute("PRAGMA synchronous = OFF")
        for rows in _events.generate(n):
            conn.execute("BEGIN")
            conn.executemany(sql, _events.db_rows(rows))
            conn.execute("COMMIT")
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    finally:
        conn.close()
    return time.perf_counter() - start


# -- (b) the same selection in SQL -------------------------------------------------------

_SCRATCH = (
    """CREATE TABLE bench_moments (
        source_event VARCHAR(330) PRIMARY KEY,
        type VARCHAR(32) NOT NULL,
        contact_id VARCHAR(128) NOT NULL,
        account_id VARCHAR(128),
        occurred_at DATETIME NOT NULL,
        detail VARCHAR(256) NOT NULL,
        status VARCHAR(16) NOT NULL DEFAULT 'new'
    )""",
    "CREATE INDEX ix_bench_moments_contact_id ON bench_moments (contact_id)",
    "CREATE INDEX ix_bench_moments_status ON bench_moments (status, occurred_at)",
    # Shaped like ``moments`` (its columns, keys, check and indexes), for reference only.
    """CREATE TABLE bench_moments_shaped (
        moment_id VARCHAR(330) PRIMARY KEY,
        type VARCHAR(32) NOT NULL,
        contact_id VARCHAR(128) NOT NULL,
        account_id VARCHAR(128),
        occurred_at DATETIME NOT NULL,
        source_event VARCHAR(330) NOT NULL UNIQUE,
        detail VARCHAR(256) NOT NULL,
        status VARCHAR(16) NOT NULL
            CHECK (status = 'new' OR status = 'asked' OR status = 'skipped'),
        skip_reason VARCHAR(64),
        decided_at DATETIME
    )""",
    "CREATE INDEX ix_bench_shaped_contact_id ON bench_moments_shaped (contact_id)",
    "CREATE INDEX ix_bench_shaped_status ON bench_moments_shaped (status, occurred_at)",
    """CREATE TABLE bench_follow_ups (
        source_event VARCHAR(330) PRIMARY KEY,
        contact_id VARCHAR(128),
        account_id VARCHAR(128),
        score INTEGER NOT NULL,
        occurred_at DATETIME NOT NULL
    )""",
)


def moment_rules_sql(program: Program) -> tuple[str, dict[str, Any]]:
    """The program's moment rules as one SQL condition on ``source_events``.

    Mirrors :func:`domain.moments.detect`: a moment needs a contact; NPS promoters at or
    above ``min_score``; won deals not through a referral code and at least
    ``min_amount`` in the program currency; renewals; resolved tickets at or above
    ``min_csat``; usage milestones (only the listed ones, when some are listed).
    """
    rules = program.moments
    params: dict[str, Any] = {}
    clauses: list[str] = []
    if rules.nps_promoter.enabled:
        clauses.append("(type = 'nps_response' AND score >= :nps_min)")
        params["nps_min"] = max(rules.nps_promoter.min_score, 7)
    if rules.deal_won.enabled:
        min_deal = program.money(rules.deal_won.min_amount)
        if min_deal.is_zero:
            clauses.append("(type = 'deal_won' AND referral_code IS NULL)")
        else:
            clauses.append(
                "(type = 'deal_won' AND referral_code IS NULL"
                " AND currency = :deal_currency AND amount_minor >= :deal_min)"
            )
            params["deal_currency"] = min_deal.currency
            params["deal_min"] = min_deal.amount_minor
    if rules.renewal.enabled:
        clauses.append("(type = 'renewal')")
    if rules.support_resolved.enabled:
        clauses.append("(type = 'ticket_resolved' AND csat >= :csat_min)")
        params["csat_min"] = rules.support_resolved.min_csat
    if rules.usage_milestone.enabled:
        wanted = list(rules.usage_milestone.milestones)
        if wanted:
            names = ", ".join(f":milestone_{i}" for i in range(len(wanted)))
            clauses.append(f"(type = 'usage_milestone' AND coalesce(milestone, '') IN ({names}))")
            params.update({f"milestone_{i}": name for i, name in enumerate(wanted)})
        else:
            clauses.append("(type = 'usage_milestone')")
    condition = " OR ".join(clauses) or "0"
    return f"contact_id IS NOT NULL AND ({condition})", params


def selection_sql(program: Program, shaped: bool = False) -> tuple[str, dict[str, Any]]:
    """``INSERT INTO bench_moments SELECT ...``: every moment among the undetected events
    (``shaped``: into ``bench_moments_shaped``, with the moment id and status too)."""
    where, params = moment_rules_sql(program)
    key = "source || ':' || event_id"
    table, key_columns, keys, status_column, status = (
        ("bench_moments_shaped", "moment_id, source_event", f"{key}, {key}", ", status", ", 'new'")
        if shaped
        else ("bench_moments", "source_event", key, "", "")
    )
    sql = f"""
        INSERT INTO {table}
            ({key_columns}, type, contact_id, account_id, occurred_at, detail{status_column})
        SELECT
            {keys},
            CASE type
                WHEN 'nps_response' THEN 'nps_promoter'
                WHEN 'ticket_resolved' THEN 'support_resolved'
                ELSE type
            END,
            contact_id,
            account_id,
            occurred_at,
            CASE type
                WHEN 'nps_response' THEN 'NPS ' || score
                WHEN 'deal_won' THEN 'closed a deal'
                WHEN 'renewal' THEN 'renewed'
                WHEN 'ticket_resolved' THEN 'CSAT ' || csat
                ELSE 'reached ' || coalesce(milestone, '')
            END{status}
        FROM source_events
        WHERE detected_at IS NULL AND {where}
        ON CONFLICT DO NOTHING
    """  # noqa: S608 (the program's own rule shapes only; every value is bound)
    return sql, params


FOLLOW_UPS_SQL = """
    INSERT INTO bench_follow_ups (source_event, contact_id, account_id, score, occurred_at)
    SELECT source || ':' || event_id, contact_id, account_id, score, occurred_at
    FROM source_events
    WHERE detected_at IS NULL AND type = 'nps_response' AND score <= 6
    ON CONFLICT DO NOTHING
"""
MARK_SQL = "UPDATE source_events SET detected_at = :now WHERE detected_at IS NULL"


def time_selection(
    engine: Engine, program: Program, shaped: bool = False
) -> tuple[float, float, int]:
    """(seconds, CPU seconds, rows) of the selection as one statement, in its own
    transaction."""
    sql, params = selection_sql(program, shaped)
    checkpoint(engine)
    start, cpu = time.perf_counter(), time.process_time()
    with engine.begin() as conn:
        rows = conn.execute(text(sql), params).rowcount
    return time.perf_counter() - start, time.process_time() - cpu, rows


def time_full_sql(engine: Engine, program: Program) -> float:
    """Seconds for the stage's whole write set in SQL, on events made undetected again."""
    sql, params = selection_sql(program)
    with engine.begin() as conn:
        conn.exec_driver_sql("DELETE FROM bench_moments")
        conn.exec_driver_sql("DELETE FROM bench_follow_ups")
        conn.exec_driver_sql("UPDATE source_events SET detected_at = NULL")
    checkpoint(engine)
    start = time.perf_counter()
    with engine.begin() as conn:
        conn.execute(text(sql), params)
        conn.exec_driver_sql(FOLLOW_UPS_SQL)
        conn.execute(text(MARK_SQL), {"now": _events.db_time(EXAMINED_AT)})
    return time.perf_counter() - start


def counts_by_type(engine: Engine, table: str) -> dict[str, int]:
    with engine.connect() as conn:
        return {
            str(kind): int(count)
            for kind, count in conn.exec_driver_sql(
                f"SELECT type, count(*) FROM {table} GROUP BY type ORDER BY type"  # noqa: S608
            ).all()
        }


def count(engine: Engine, sql: str) -> int:
    with engine.connect() as conn:
        return int(conn.exec_driver_sql(sql).scalar_one())


# -- (a) the stage, (c) detect() in memory -----------------------------------------------


def time_stage(
    engine: Engine, program: Program, chunk_size: int, profile: bool
) -> tuple[float, float, DetectionReport, StatementTimes, str]:
    """(seconds, CPU seconds, report, statement times, profile listing) of
    ``detect_new_moments``."""
    checkpoint(engine)
    ledger = SqlLedger(engine)
    profiler = cProfile.Profile() if profile else None
    with statement_times(engine) as times:
        start, cpu = time.perf_counter(), time.process_time()
        if profiler is not None:
            profiler.enable()
        report = detect_new_moments.fn(ledger, program, EXAMINED_AT, chunk_size=chunk_size)
        if profiler is not None:
            profiler.disable()
        seconds, cpu = time.perf_counter() - start, time.process_time() - cpu
    listing = ""
    if profiler is not None:
        out = io.StringIO()
        pstats.Stats(profiler, stream=out).strip_dirs().sort_stats("tottime").print_stats(25)
        listing = out.getvalue()
    return seconds, cpu, report, times, listing


def time_detect(n: int, program: Program) -> tuple[float, int]:
    """Seconds in ``detect()`` alone over the same events, built beforehand chunk by chunk."""
    seconds = 0.0
    moments = 0
    for rows in _events.generate(n):
        events = _events.source_events(rows)
        start = time.perf_counter()
        found = detect(events, program)
        seconds += time.perf_counter() - start
        moments += len(found.moments)
    return seconds, moments


# -- the run -----------------------------------------------------------------------------


def run(n: int, batch_size: int = DEFAULT_CHUNK, profile: bool = False) -> dict[str, Any]:
    program = load_program(PROJECT_ROOT / "config" / "program.yaml")
    # Other processes on the machine slow both timings, not necessarily alike.
    load = os.getloadavg()[0]
    with fresh_ledger("bench-detection-") as (engine, directory):
        with engine.begin() as conn:
            for statement in _SCRATCH:
                conn.exec_driver_sql(statement)
        seed_s = seed(directory / DATABASE, n)

        sql_s, sql_cpu_s, sql_rows = time_selection(engine, program)
        sql_by_type = counts_by_type(engine, "bench_moments")
        shaped_s, shaped_cpu_s, shaped_rows = time_selection(engine, program, shaped=True)

        stage_s, stage_cpu_s, report, times, listing = time_stage(
            engine, program, batch_size, profile
        )
        stage_by_type = counts_by_type(engine, "moments")
        follow_ups = count(engine, "SELECT count(*) FROM follow_ups")
        left = SqlMomentsStore(engine).events_to_detect()

        full_sql_s = time_full_sql(engine, program)
        db_mb = size_mb(directory)
    detect_s, detect_moments = time_detect(n, program)

    stage_eps = _report.rate(n, stage_s)
    ratio = stage_s / sql_s if sql_s > 0 else float("inf")
    agree = (
        stage_by_type == sql_by_type
        and report.moments == sql_rows == shaped_rows == detect_moments
        and report.examined == n
        and left == 0
        and follow_ups == report.detractors
    )
    measured = times.scan + times.moments + times.follow_ups + times.counts
    figures: dict[str, Any] = {
        "bench": "detection",
        "n": n,
        "batch_size": batch_size,
        "profiled": profile,
        "seed_s": seed_s,
        "stage_s": stage_s,
        "stage_scan_s": times.scan,
        "stage_moments_s": times.moments,
        "stage_follow_ups_s": times.follow_ups,
        "stage_counts_s": times.counts,
        "stage_other_s": max(stage_s - measured, 0.0),
        "stage_batches": times.chunks,
        "sql_s": sql_s,
        "sql_full_s": full_sql_s,
        "detect_s": detect_s,
        "stage_events_per_s": stage_eps,
        "sql_events_per_s": _report.rate(n, sql_s),
        "sql_full_events_per_s": _report.rate(n, full_sql_s),
        "detect_events_per_s": _report.rate(n, detect_s),
        "ratio_stage_to_sql": ratio,
        # SQLite works in this process: CPU seconds barely move with the machine's load.
        "stage_cpu_s": stage_cpu_s,
        "sql_cpu_s": sql_cpu_s,
        "ratio_stage_to_sql_cpu": stage_cpu_s / sql_cpu_s if sql_cpu_s > 0 else float("inf"),
        # For reference, not a target: the floor written into a table shaped like moments.
        "sql_shaped_s": shaped_s,
        "sql_shaped_cpu_s": shaped_cpu_s,
        "ratio_stage_to_shaped_cpu": (
            stage_cpu_s / shaped_cpu_s if shaped_cpu_s > 0 else float("inf")
        ),
        "load_avg_1m": load,
        "target_ratio": TARGET_RATIO,
        "target_events_per_s": TARGET_EVENTS_PER_S,
        "ratio_met": ratio <= TARGET_RATIO,
        "throughput_met": stage_eps >= TARGET_EVENTS_PER_S,
        "targets": [
            _report.target(
                "stage / SQL floor (wall)", f"<= {TARGET_RATIO}", ratio, ratio <= TARGET_RATIO
            ),
            _report.target(
                "stage events/s (wall)",
                f">= {TARGET_EVENTS_PER_S:,.0f}",
                stage_eps,
                stage_eps >= TARGET_EVENTS_PER_S,
                unit="events/s",
            ),
        ],
        "examined": report.examined,
        "moments": report.moments,
        "detractors": report.detractors,
        "without_contact": report.without_contact,
        "sql_moments": sql_rows,
        "moments_by_type": stage_by_type,
        "counts_agree": agree,
        "db_mb": db_mb,
        **_report.machine(),
    }
    print_tables(figures, listing)
    return figures


def print_tables(f: dict[str, Any], listing: str) -> None:
    n = f["n"]
    sql_s = f["sql_s"]
    _report.title(
        f"Detection over {n:,} events (SQLite, chunks of {f['batch_size']:,} event ids)"
        + (" - under cProfile" if f["profiled"] else "")
    )
    phases = [
        ("(a) stage: detect_new_moments", f["stage_s"]),
        ("      scan into the chunk table", f["stage_scan_s"]),
        ("      moments INSERT...SELECT", f["stage_moments_s"]),
        ("      follow-ups INSERT...SELECT", f["stage_follow_ups_s"]),
        ("      counts", f["stage_counts_s"]),
        ("      table, locks, watermark, commits", f["stage_other_s"]),
        ("(b) SQL: one INSERT...SELECT (floor)", sql_s),
        ("    SQL: the same, table shaped like moments", f["sql_shaped_s"]),
        ("    SQL: + follow-ups + mark examined", f["sql_full_s"]),
        ("(c) detect() in memory, prebuilt events", f["detect_s"]),
    ]
    _report.table(
        ["what", "seconds", "events/s", "x SQL floor"],
        [[name, s, _report.rate(n, s), s / sql_s if sql_s else float("inf")] for name, s in phases],
    )

    _report.targets(f["targets"])
    print(
        f"(CPU seconds, insensitive to other processes: stage {f['stage_cpu_s']:.3f},"
        f" floor {f['sql_cpu_s']:.3f}, ratio {f['ratio_stage_to_sql_cpu']:.3f};"
        f" floor shaped like moments {f['sql_shaped_cpu_s']:.3f},"
        f" ratio {f['ratio_stage_to_shaped_cpu']:.3f};"
        f" load average at start {f['load_avg_1m']:.2f})"
    )

    _report.title("Counts")
    _report.table(
        ["what", "count"],
        [
            ["events examined", f["examined"]],
            ["moments (stage)", f["moments"]],
            ["moments (SQL)", f["sql_moments"]],
            *[[f"  {kind}", c] for kind, c in f["moments_by_type"].items()],
            ["detractors to follow up", f["detractors"]],
            ["moments without contact", f["without_contact"]],
            ["stage, SQL and detect() agree", f["counts_agree"]],
            ["seeding seconds (not timed above)", round(f["seed_s"], 2)],
            ["database MB", round(f["db_mb"], 1)],
        ],
    )
    if listing:
        _report.title("Where the stage's time goes (cProfile, by own time)")
        print(listing.rstrip())


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    p = _report.parser("Detection throughput beside the same selection in SQL.", DEFAULT_N)
    p.add_argument(
        "--batch-size",
        type=int,
        default=DEFAULT_CHUNK,
        help=f"event ids per stage transaction (default {DEFAULT_CHUNK:,})",
    )
    p.add_argument("--profile", action="store_true", help="run the stage under cProfile")
    args = p.parse_args(argv)
    figures = run(args.n, args.batch_size, args.profile)
    _report.emit_json(figures)
    return figures


if __name__ == "__main__":
    main()

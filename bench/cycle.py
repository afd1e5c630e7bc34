"""The whole referral cycle at scale: time per stage, and how much of it is Prefect's.

For each ``--n`` (default 10,000, 100,000 and 1,000,000 customers) a sample company is
generated with ``integrations/sources/sample.py`` (``--n`` customer accounts, each with
one to three contacts, plus partners, employees and leads from other channels) into
the file source's inbox, and the real flows of ``flows/cycle.py`` run on it under a
temporary Prefect server (``prefect_test_harness``) with the local adapters of
``flows/bootstrap.py``: a fresh, migrated SQLite ledger in a temporary directory (or a
fresh schema on ``--database-url``, a PostgreSQL URL), the outbox for email, the
ledger-only payout rail, and recorded approval runs (a real approval run is one
paused deployment run per large reward, started on a server with the deployments;
none is started here). As the demo and the flow tests do, ``referral_cycle`` runs
twice: at the sample's first-cycle date (moments, asks), then, after the referred
friends' signups and deals are written, at the sample's anchor (conversions, rewards, payouts,
notifications). Generating the company and the referrals is not timed.

How the time is split. Each stage's subflow call is timed from the parent flow (the
stage's wall time: creating the subflow run, its state changes, its tasks and its
result); inside it, every task's own function (``Task.fn``, what ``task.fn()`` runs
without Prefect) is timed too, on the same run. Prefect overhead is the difference:
stage wall time minus the time in the task bodies (what is left is task and flow run
bookkeeping with the server, state and result handling, and the flow bodies' own few
lines). The whole cycle's overhead adds the parent flow run and its report task's
bookkeeping. Task bodies include their calls to the run logger, which ships its
records to the server in the background.

Where Prefect's time goes: it does not grow with the company (one task run per stage
and batch operation, never one per row). A cycle is the parent run, its five stage
subflow runs and about twenty task runs. Each stage run is seven calls to the server,
one after the other: its tracking task run in the parent, the flow's registration, the
run, the look-up for an earlier run under that tracking task run, reading the run back,
Running, and Completed (the slowest: the server settles the tracking task run too).
Task runs are made in the process and reported as events (5-8 ms each). Profiled with
py-spy at 10,000 before the changes below (``--idle``, the server on PostgreSQL,
other work beside it; 5.7 s of Prefect time): the stage runs' tracking task runs
1.4 s, their other calls 2.1 s, the parent runs 1.4 s (0.66 s of it waiting for their
heartbeat threads), task runs 0.5 s. Three of these bought nothing and are gone:

* For each tracking task run Prefect 3.8.8 built an async client (loading the CA
  bundle: 13 ms at best, about 50 ms on this busy machine), connected it, fetched a
  CSRF token and closed it again. The stages of a cycle now share one
  (``flows/subflows.py``); their runs, tracking task runs, task runs, states, logs
  and artifacts are the same.
* The parent run's heartbeat thread sleeps in 1 s steps, and the engine joins it when
  the run ends: a cycle run called in-process returned up to 1 s after it had reported
  Completed (a deployment run's process only exited that much later). The cycle's
  processes now send the same heartbeats from a thread that waits on its stop event
  (``flows/heartbeats.py``, Prefect 3.8.8 only; the stage runs beat under the
  parent's). Heartbeats stay on: a crashed process still shows as missing ones.
* Turning off the stage runs' own heartbeats revalidated every Prefect setting from the
  environment and the profile files (20-65 ms a cycle); it now copies the settings with
  the one field changed.

Measured at 10,000 with the server on PostgreSQL, main's code and this one run in
turns, six pairs (Prefect's seconds for two cycles, main -> this): with the machine
busy (load 5 to 13 on 2 CPUs) 10.6 -> 8.2, 8.8 -> 7.6, 6.2 -> 4.4; nearly idle (load
0.3 to 3) 3.55 -> 1.53, 2.25 -> 1.72, 3.01 -> 2.55 (mean 2.9 -> 1.9 s, of which the
parent runs' own 1.3 -> 0.5 s). An empty cycle (five stage runs of three trivial
tasks; a throwaway script), eight in a row, two series each, busy machine: 2.65 and
2.88 s a cycle -> 2.00 and 2.39 s (before, a cycle's wall time fell on whole seconds
after its heartbeat thread's start). 100,000 has not been measured again. What is
left is the calls to the server, about eighty for two cycles, one after the other, and
the task runs' bookkeeping. On the test harness's SQLite server the same calls wait on
the server's database now and then. ``--prefect-database-url`` puts the server on a
fresh PostgreSQL database.

Measured at commit 7f47548 (all of issue 17), SQLite ledger, the Prefect server on
PostgreSQL (``--prefect-database-url``, as ``make bench-cycle-1m`` runs it), the
machine otherwise idle, ``--n 100000,1000000`` in one run (seconds, both cycles)::

    customers  detect   asks  conversions  rewards/payouts  notify  cycle  Prefect
    100,000       5.4   10.9         12.3              3.8     2.7   35.9  1.5 (4.0 %)
    1,000,000    59.7    152          154             41.9    33.6    446  2.8 (0.6 %)

Targets: 1M in 446 s (wanted <= 600: met); 100k -> 1M 12.4x, 1.24x linear (wanted
<= 1.1x: not met); Prefect 4.0 % at 100k (wanted <= 5 %: met; ``make bench`` twice at
10k and 100k: 3.3 and 3.6 %). On the test harness's SQLite server Prefect's share at
100k is about 19 % (8.4 s: its database makes calls wait). The digests are those of
the code before this stop's changes: 85d02624ceb3 at 100k, 4e71d105cf1c at 1M
(d83730b). Ledger 3.4 GB, peak memory 3.6 GB at 1M. By task, 100k -> 1M (own time):
decide-asks 8.5 -> 127 s (14.9x), compute-rewards 6.4 -> 78.5 s (12.3x),
record-conversions 5.1 -> 69.4 s (13.7x), ingest 4.9 -> 49.9 s (10.3x),
send-notifications 2.5 -> 33.4 s (13.4x), submit-payouts 3.0 -> 32.7 s (10.7x),
send-ask-emails 2.2 -> 25.3 s (11.5x), detect-new-moments 0.8 -> 14.0 s (17x).

What took 1M from 744 to 446 s: batch look-ups by id no longer walk a status index.
SQLite, without statistics, preferred an index on ``rewarded_at IS NULL`` or on a
status to the key for ``id IN (...) AND status = ?`` and read every row in that state
for each batch (quadratic): found with py-spy on a 1M run (compute-rewards' marking and
checking 38 % of its time) and ``EXPLAIN QUERY PLAN`` of every statement the 2,000
cycle runs; mended by ``integrations.ledger.base.not_indexed`` and the partial indexes
of revisions 0029r (unrewarded conversions, pending payouts) and 0030a (pending
moments, coded events not examined), with tests that read the plans. Also: asks and
notifications inserted in id order (a send page rewrites fewer table pages),
detection scanning each chunk once, ingest binding fewer values, the stage runs'
tracking task runs on one Prefect client and heartbeat threads that end with their
run (below).

What still grows faster than the company is I/O, not statements (every per-batch
statement is an index look-up by the batch's keys): once the indexes keyed by random
ids (asks, codes, conversions, rewards, entries, touchpoints, notifications) outgrow a
batch, each batch dirties about a page per row and index, which each commit's WAL
checkpoint copies into the database file and syncs (py-spy on the 1M run: 18 % of the
cycle in commits; decide-asks' bytes written grow 5.1x from 100k to 300k), and reads
miss the 64 MiB page cache more often. decide-asks also closes the 2.1M skipped moments
in one statement of about 50 s. Tried and not kept: ``wal_autocheckpoint`` of
16,384-20,000 pages (a tenth to a fifth fewer bytes written; under
``synchronous=NORMAL`` more committed transactions would wait unsynced, lost on a power
failure), a 1 GiB cache for the close, closing in commits of 20,000 (2.6 GB written
instead of 413 MB). What would help: ids that arrive in order where they are not
derived (new rows at the right edge of each index), ``WITHOUT ROWID`` tables for asks
and notifications, or the ledger on PostgreSQL (not measured at 1M).

Measured at commit d231782 (issue 17: ingest in blocks and bulk, conversions placed a
batch at a time, decide-asks and sending set-based, rendering from skeletons, a 64 MiB
SQLite page cache, the second cycle pinned to the sample's anchor), SQLite ledger, the
machine otherwise idle, ``--n 100000,1000000`` in one run (seconds, both cycles)::

    customers  detect   asks  conversions  rewards/payouts  notify  cycle  Prefect
    100,000       9.6   15.7         15.7              6.8     7.0   56.8  8.3 (14.6 %)
    100,000 (P)   7.5   15.2         15.1              4.5     5.4   50.1  3.0 (6.0 %)
    1,000,000    90.8    231          264             87.6    56.2    744  8.4 (1.1 %)

(P) the Prefect server on PostgreSQL (``--prefect-database-url``), the same ledger, the
same digest. Targets: 1M in 744 s (wanted <= 600: not met); 100k -> 1M 13.1x, 1.31x
linear (wanted <= 1.1x: not met); Prefect 14.6 % at 100k on the SQLite harness, 6.0 %
with the server on PostgreSQL (wanted <= 5 %: not met). The 1M run stored 4,526,634
events, 2,149,940 moments, 418,473 asks, 404,233 conversions, 93,933 rewards paid and
21,550 waiting, 498,170 notifications, peak memory 3.6 GB. What still grows faster than
the company, by task (100k -> 1M, own time): compute-rewards 8.5 -> 166 s (19.4x),
decide-asks 11.6 -> 182 s (15.7x), submit-payouts 3.5 -> 55 s (15.8x), record-conversions
6.2 -> 92 s (14.8x), send-ask-emails 3.9 -> 49 s (12.6x), ingest 6.8 -> 78 s (11.4x),
send-notifications 5.0 -> 53 s (10.7x). Each is now a few statements per batch; what
grows is SQLite's B-tree work on indexes keyed by random ids (UUIDs, event ids) as the
tables pass the page cache (3.6 GB of ledger at 1M), and the reads of what a batch
depends on. Before this issue (commit 9d48098): 216 s at 100k, 2,708 s at 1M.

compute-rewards and submit-payouts (revision 0029r): each batch's look-ups by id went
through an index led by ``rewarded_at`` or by the payouts' ``status``, not the key.
SQLite, without statistics, guesses that ``rewarded_at IS NULL`` finds ten rows, fewer
than 500 ids: "these conversions, still unrewarded" and the ``UPDATE`` marking them read
every unrewarded conversion per chunk of 500, and claiming and booking payouts read
every pending payout per chunk of 200 (found with a timer on each statement, py-spy and
``EXPLAIN QUERY PLAN``; at 300k the marking ``UPDATE`` alone took 6.6 s in 243 runs).
Both indexes are now partial (the unrewarded conversions by occurred_at, the pending
payouts by created_at), which no look-up by id can take; ``not_indexed`` (c965ac2)
mends the two conversion statements on main another way. CPU seconds of each task's
thread, d83730b then 0029r, back to back on the loaded machine (load 5 to 20):
compute-rewards 6.6 -> 28.4 s from 100k to 300k (4.3x) then 6.3 -> 21.1 s (3.3x),
submit-payouts 2.5 -> 10.0 s (3.9x) then 2.7 -> 8.6 s (3.2x); wall at 300k 152 -> 67 s
and 45 -> 23 s. Against main at 28c1cb9 (which has ``not_indexed``), at 300k, main
then main with 0029r merged: compute-rewards 20.4 and 20.4 s CPU, submit-payouts 9.6
and 8.1 s (wall 34 -> 15 s). What still grows (about 1.1x linear) is the inserts into
rewards, entries, terms and notifications keyed by random ids, and the commits. 1M
not re-run.

decide-asks and record-conversions, looked at per batch (migration 0030a, issue 17).
Every statement they send per batch is an index look-up by the batch's own keys
(``EXPLAIN QUERY PLAN`` of each); no batch scans a growing range. Two per-run costs did
grow with the ledger and are gone: ``events_to_convert`` read the events table from its
first row at each run to find the coded events (now a partial index of the coded events
not examined), and ``ix_moments_status`` kept every decided moment, moved a closed
moment's entry from ``new`` to ``asked``/``skipped`` and made ``pending_moments`` sort
each time's ties (now ``ix_moments_pending``, partial on ``status = 'new'``, ordered by
time and id; a covering version, which read a page of moments from consecutive index
pages, was left out: detection would write every moment's columns twice). Closing the
skipped moments, measured alone on 650,000 moments (2,150,000, the 1M run's count): 22.6
s and 1.4 GB written before (52 s, 16.4 GB), 5.7 s and 413 MB after (55 s on a busy
disk, 4.2 GB); a commit per 20,000 ids instead wrote 2.6 GB in 30 s, and is not done.
The cycle hardly moved: main and this side by side, the box otherwise idle, 100k ->
300k, decide-asks 9.4 -> 34.1 s (3.6x) before and 9.1 -> 33.1 s (3.6x) after,
record-conversions 5.4 -> 19.9 s (3.7x) and 5.5 -> 19.9 s (3.6x); same digests. What
grows is I/O, not statements: the bytes decide-asks reads grow 7.5x (1.5 -> 11 GB; 9.1
GB with the covering index) and writes 5.1x (1.7 -> 8.6 GB), record-conversions' writes
6x (0.7 -> 4.2 GB). Each batch dirties more pages as the indexes keyed by random ids
(asks, referral codes, conversions, touchpoints, notifications) grow past the batch (a
page per row and index once saturated), and each commit's checkpoint copies them into
the database and syncs it (sqlite3 commit: 23 -> 50 ms per decide-asks batch, 60 -> 113
ms per record-conversions batch, busy box); reads miss the 64 MiB page cache more often.
Tried: ``wal_autocheckpoint`` 20,000 pages (100k: a fifth fewer bytes written, not kept,
an engine-wide setting); a LIFO pool (no change: the loop uses one connection; note that
SQLite drops a connection's whole page cache when another connection has committed).

Measured on the 2-CPU, 24 GiB reference machine at commit 7217807, SQLite, two
cycles, other work running beside it (seconds; generating the company not included)::

    customers      detect   asks  conversions  rewards/payouts  notify  cycle       Prefect
    10,000            6.0   10.5          8.3              5.5     2.4     35   11.4 (32 %)
    100,000          53.4    135          666              112    19.8    993  14.2 (1.4 %)
    100,000 (*)      52.8    139         70.6             35.6    14.4    316  12.5 (4.0 %)
    1,000,000 (*)     575  1,467          753              413     131  3,369  15.2 (0.5 %)
    100,000 (**)     24.5   30.2         92.5              8.2     8.3    165   8.3 (5.0 %)
    100,000 (***)    26.6   35.6         57.4              9.3     8.2    140  11.3 (8.1 %)

(***) At commit 3ab6fa5, idle: a batch's touchpoints found and stored once at its end,
not with four statements per conversion (``record-conversions`` 76 s -> 33 s), and
the drop read a page at a time (peak memory 1,103 MB -> 508 MB).

(**) At commit 0e538b9 (decide-asks closing moments by the 500, below), idle machine:
``decide-asks`` 23.2 s of the asks stage's 30.2 s. Part of the drop from 316 s is the
idle machine; the 1,000,000 run has not been repeated.

(*) Measured with three indexes on ``conversions`` that migration 0015 has added since
(``referee_account_id``; ``referee_contact_id``; ``rewarded_at, occurred_at,
conversion_id``; it also indexes ``asks.referral_code``, for the touchpoint look-up of
clicked asks). Without them recording conversions was quadratic: ``_same_referee``
scans every conversion for each new one (``record-conversions`` 6.2 s at 10,000,
614 s at 100,000, about 17 hours extrapolated at 1,000,000), and each batch of
``conversions_to_reward`` sorts every unrewarded conversion (``compute-rewards``
0.5 s, then 49 s). At 1,000,000 the process peaked at 9.2 GB: the file source read
the whole drop (583 MB of CSV, 4.5M events) into memory and stored it in one
transaction (ingest 542 s). It now reads and stores 10,000 rows at a time
(``REFERRALS_INGEST_PAGE_RECORDS``): at 100,000, at commit 6f521db, the peak fell from
1,103 MB to 507 MB with the same events, moments, conversions and rewards (other work
beside it). ``python -m bench.ingest`` measures the ingest alone: at 1,000,000,
9,553 MB whole, 834 MB in pages, in the same time.

The other stages are linear but go row by row in places (a statement per
conversion, per payout, and then per decided moment): ``decide-asks``
is 1,330 s of the 1,000,000 run. It has since closed its moments with an ``UPDATE`` per
outcome and 500 ids instead of one per moment. Measured since with a throwaway script,
not this bench: ``decide_asks.fn`` on 80,000 pending moments (every skip reason among
them), same machine, other work beside it, took 27-43 s before and 9-13 s after on
SQLite (81,894 statements, then 2,667), 44-68 s and 15-26 s on PostgreSQL, with the
same rows at the end. The 1,000,000 run has not been measured again.

So ``make bench`` with the default sizes takes about an hour here, most of it the
1,000,000 run: pass ``--n 10000,100000`` for a quick one.

    python -m bench.cycle [--n N[,N...] ...] [--database-url URL]
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import gc
import hashlib
import logging
import resource
import shutil
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from prefect import Flow, Task
from prefect.logging.handlers import PrefectConsoleHandler
from prefect.settings import PREFECT_SERVER_ANALYTICS_ENABLED, temporary_settings
from prefect.testing.utilities import prefect_test_harness
from sqlalchemy import Engine, create_engine, func, select, text
from sqlalchemy.engine import make_url

from bench import _report
from bench._ledger import fresh_ledger, size_mb
from config.program import load_program
from config.settings import PROJECT_ROOT, load_settings
from domain.models import PayoutRailKind
from flows import cycle as cycle_flows
from flows import shards as shard_flows
from flows.bootstrap import App, approver_adapters, use_app
from integrations.approvals.fake import RecordingApprovalRuns
from integrations.email.outbox import OutboxEmailSender
from integrations.ledger.engine import make_engine
from integrations.ledger.migrate import upgrade
from integrations.ledger.sql import SqlLedger
from integrations.ledger.tables import ContactRow
from integrations.payments.ledger_only import LedgerOnlyRail
from integrations.prefect_stack import LocalStack, free_port
from integrations.sources.files import FileSource
from integrations.sources.sample import generate, simulate_referrals

DEFAULT_SIZES = (10_000, 100_000, 1_000_000)
SEED = 7
#: The subflows of ``referral_cycle``, in order, by the stage names of this report.
STAGES = {
    "detect": "detect_moments",
    "asks": "send_asks",
    "conversions": "check_conversions",
    "rewards/payouts": "route_rewards",
    "notifications": "notify_referrers",
}
REPORT = "cycle report"
LOGGERS = ("prefect", "prefect.flow_runs", "prefect.task_runs", "prefect.server")


# -- timing ------------------------------------------------------------------------------


@dataclass
class Clock:
    """Seconds by (cycle, stage): the stage's wall time and its tasks' own time."""

    cycle: int = 0
    stage: str = REPORT
    wall: dict[tuple[int, str], float] = field(default_factory=dict)
    tasks: dict[tuple[int, str], float] = field(default_factory=dict)
    by_task: dict[str, float] = field(default_factory=dict)
    cycles: dict[int, float] = field(default_factory=dict)

    def add(self, table: dict[tuple[int, str], float], seconds: float) -> None:
        key = (self.cycle, self.stage)
        table[key] = table.get(key, 0.0) + seconds


def _timed_stage(clock: Clock, stage: str, subflow: Flow[..., Any]) -> Callable[..., Any]:
    @functools.wraps(subflow)
    def call(*args: Any, **kwargs: Any) -> Any:
        previous, clock.stage = clock.stage, stage
        start = time.perf_counter()
        try:
            return subflow(*args, **kwargs)
        finally:
            clock.add(clock.wall, time.perf_counter() - start)
            clock.stage = previous

    return call


def _timed_body(clock: Clock, name: str, fn: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(fn)
    def body(*args: Any, **kwargs: Any) -> Any:
        start = time.perf_counter()
        try:
            return fn(*args, **kwargs)
        finally:
            seconds = time.perf_counter() - start
            clock.add(clock.tasks, seconds)
            clock.by_task[name] = clock.by_task.get(name, 0.0) + seconds

    return body


@contextlib.contextmanager
def instrumented(clock: Clock) -> Iterator[None]:
    """Time the cycle's subflows from the parent, and every task body, while inside.

    The flows look their subflows up in ``flows.cycle`` and Prefect calls ``Task.fn``
    at each run, so wrapping both times the real run; both are put back on exit.
    """
    subflows = {stage: getattr(cycle_flows, name) for stage, name in STAGES.items()}
    # The stages' tasks, also those a stage reaches through flows.shards (its delivery).
    tasks = {
        name: value
        for module in (cycle_flows, shard_flows)
        for name, value in vars(module).items()
        if isinstance(value, Task)
    }
    bodies = {name: t.fn for name, t in tasks.items()}
    try:
        for stage, subflow in subflows.items():
            setattr(cycle_flows, STAGES[stage], _timed_stage(clock, stage, subflow))
        for name, t in tasks.items():
            t.fn = _timed_body(clock, t.name, bodies[name])
        yield
    finally:
        for stage, subflow in subflows.items():
            setattr(cycle_flows, STAGES[stage], subflow)
        for name, t in tasks.items():
            t.fn = bodies[name]


@contextlib.contextmanager
def quiet_console() -> Iterator[None]:
    """Keep Prefect's per-run INFO lines off the console (they still reach the server),
    so the report stays readable."""
    loggers = [logging.getLogger(), *(logging.getLogger(name) for name in LOGGERS)]
    handlers = [
        (h, h.level)
        for logger in loggers
        for h in logger.handlers
        if isinstance(h, PrefectConsoleHandler)
    ]
    for handler, _ in handlers:
        handler.setLevel(logging.WARNING)
    try:
        yield
    finally:
        for handler, level in handlers:
            handler.setLevel(level)


# -- the ledger --------------------------------------------------------------------------


@contextlib.contextmanager
def ledger_database(database_url: str | None) -> Iterator[tuple[Engine, str, Path]]:
    """(engine, URL, scratch directory): SQLite in the scratch directory, or a fresh
    schema on ``database_url`` dropped at exit."""
    if database_url is None:
        with fresh_ledger("bench-cycle-") as (engine, directory):
            yield engine, engine.url.render_as_string(hide_password=False), directory
        return
    schema = f"bench_cycle_{uuid.uuid4().hex[:10]}"
    admin = create_engine(database_url)
    with admin.begin() as conn:
        conn.execute(text(f"CREATE SCHEMA {schema}"))
    separator = "&" if "?" in database_url else "?"
    url = f"{database_url}{separator}options=-csearch_path%3D{schema}"
    engine = make_engine(url)
    directory = Path(tempfile.mkdtemp(prefix="bench-cycle-"))
    try:
        upgrade(engine)
        yield engine, url, directory
    finally:
        engine.dispose()
        shutil.rmtree(directory, ignore_errors=True)
        with admin.begin() as conn:
            conn.execute(text(f"DROP SCHEMA {schema} CASCADE"))
        admin.dispose()


def make_app(ledger: SqlLedger, url: str, inbox: Path) -> App:
    """The demo's local adapters (outbox, ledger-only rail), recorded approval runs."""
    settings = load_settings(database_url=url, inbox_dir=inbox, sources=("files",))
    approvers, codes = approver_adapters(ledger.engine, settings)
    return App(
        settings=settings,
        program=load_program(settings.program_file),
        ledger=ledger,
        sources=(FileSource(inbox),),
        email=OutboxEmailSender(ledger),
        rails={PayoutRailKind.LEDGER_ONLY: LedgerOnlyRail()},
        approvals=RecordingApprovalRuns(),
        approvers=approvers,
        codes=codes,
    )


# -- the run -----------------------------------------------------------------------------


def run_one(n: int, database_url: str | None) -> dict[str, Any]:
    """Generate a company of ``n`` customers and run two cycles on it, timed."""
    clock = Clock()
    with ledger_database(database_url) as (engine, url, directory):
        inbox = directory / "inbox"
        anchor = datetime.now(UTC).replace(minute=0, second=0, microsecond=0)
        start = time.perf_counter()
        sample = generate(inbox, anchor, accounts=n, seed=SEED)
        generate_s = time.perf_counter() - start
        inbox_mb = size_mb(inbox)
        app = make_app(SqlLedger(engine), url, inbox)
        results: list[dict[str, Any]] = []
        referrals = 0
        referrals_s = 0.0
        with use_app(app), instrumented(clock):
            # The second cycle decides at the sample's anchor (its export's "now": no event
            # is later), not at the wall clock: moment age and the detractor window are
            # measured from it, and a wall-clock now moved a few outcomes across those
            # edges from one run to the next.
            for number, as_of in ((1, sample.first_cycle_at), (2, sample.anchor)):
                if number == 2:
                    start = time.perf_counter()
                    referrals = _write_referrals(app, sample)
                    referrals_s = time.perf_counter() - start
                gc.collect()
                clock.cycle, clock.stage = number, REPORT
                start = time.perf_counter()
                results.append(cycle_flows.referral_cycle(as_of=as_of))
                clock.cycles[number] = time.perf_counter() - start
        summary = app.ledger.metrics.summary()
        contacts = _contacts(engine)
        digest = outcome_digest(engine)
        db_mb = size_mb(directory) - inbox_mb if database_url is None else None
    figures = _figures(n, clock, results, summary)
    figures.update(
        {
            "database": "postgresql" if database_url else "sqlite",
            "contacts": contacts,
            "referrals": referrals,
            "generate_s": generate_s,
            "referrals_s": referrals_s,
            "inbox_mb": inbox_mb,
            "db_mb": db_mb,
            "max_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
            "digest": digest,
        }
    )
    print_run(figures)
    return figures


def _write_referrals(app: App, sample: Any) -> int:
    """The referred friends of everyone asked in the first cycle (as the demo plays them)."""
    asked = app.ledger.asks.asked_contacts(until=sample.first_cycle_at)
    codes = app.ledger.asks.codes_for(asked)
    contacts = app.ledger.asks.contacts(codes)
    return simulate_referrals(
        sample,
        codes,
        {
            c: {"referrer_type": contacts[c].referrer_type.value, "domain": f"{c}.example"}
            for c in codes
        },
    )


# What "behaviour does not change" is checked on: per table, the columns that say what
# happened (never surrogate ids, random codes or wall-clock stamps, which differ between
# runs of the same code), so two runs of the same size must print the same digest.
DIGEST_COLUMNS: dict[str, tuple[str, ...]] = {
    "source_events": ("source", "event_id", "type", "account_id", "contact_id", "amount_minor"),
    "quarantine": ("source", "record", "field", "reason", "stage"),
    "moments": ("type", "contact_id", "account_id", "source_event", "status", "skip_reason"),
    "asks": ("contact_id", "moment_type", "status"),
    "conversions": (
        "source_event",
        "referrer_id",
        "referee_account_id",
        "referee_contact_id",
        "milestone",
        "amount_minor",
        "currency",
    ),
    "rewards": (
        "referrer_id",
        "rule_id",
        "amount_minor",
        "currency",
        "milestone",
        "attribution_model",
        "flags",
        "status",
    ),
    "payouts": ("rail", "amount_minor", "currency", "status"),
    "ledger_entries": ("kind", "amount_minor", "currency"),
    "notifications": ("contact_id", "kind", "status"),
}


def outcome_digest(engine: Engine) -> dict[str, str]:
    """A short hash per table of what the cycles did (see ``DIGEST_COLUMNS``)."""
    digests = {}
    with engine.connect() as conn:
        for table, columns in DIGEST_COLUMNS.items():
            cols = ", ".join(columns)
            h = hashlib.sha256()
            rows = conn.execute(text(f"SELECT {cols} FROM {table} ORDER BY {cols}"))  # noqa: S608
            for row in rows:
                h.update(repr(tuple(row)).encode())
            digests[table] = h.hexdigest()[:12]
    return digests


def _digest_line(digest: dict[str, str]) -> str:
    """The per-table digests folded into one short hash, for the table."""
    return hashlib.sha256(repr(sorted(digest.items())).encode()).hexdigest()[:12]


def _contacts(engine: Engine) -> int:
    with engine.connect() as conn:
        return int(conn.execute(select(func.count()).select_from(ContactRow)).scalar_one())


def _figures(
    n: int, clock: Clock, results: list[dict[str, Any]], summary: dict[str, Any]
) -> dict[str, Any]:
    stages: dict[str, dict[str, float]] = {}
    for stage in [*STAGES, REPORT]:
        walls = [clock.wall.get((c, stage), 0.0) for c in (1, 2)]
        bodies = [clock.tasks.get((c, stage), 0.0) for c in (1, 2)]
        if stage == REPORT:
            # The parent flow's own share: the cycle minus its stages.
            walls = [
                clock.cycles[c] - sum(clock.wall.get((c, s), 0.0) for s in STAGES) for c in (1, 2)
            ]
        wall, body = sum(walls), sum(bodies)
        stages[stage] = {
            "cycle1_s": walls[0],
            "cycle2_s": walls[1],
            "wall_s": wall,
            "tasks_s": body,
            "overhead_s": max(wall - body, 0.0),
            "overhead_share": max(wall - body, 0.0) / wall if wall > 0 else 0.0,
        }
    total = sum(clock.cycles.values())
    in_tasks = sum(clock.tasks.values())
    first, second = results
    asks = first["stages"]["send asks"]
    route = second["stages"]["route rewards"]
    return {
        "bench": "cycle",
        "n": n,
        "total_s": total,
        "tasks_s": in_tasks,
        "overhead_s": total - in_tasks,
        "overhead_share": (total - in_tasks) / total if total > 0 else 0.0,
        "customers_per_s": _report.rate(n, total),
        "stages": stages,
        "by_task_s": dict(sorted(clock.by_task.items(), key=lambda kv: -kv[1])),
        "events": summary["events"],
        "moments": sum(summary["moments"].values()),
        "asks_queued": asks["decisions"]["queued"]
        + second["stages"]["send asks"]["decisions"]["queued"],
        "asks": summary["asks"],
        "conversions": sum(summary["conversions"].values()),
        "rewards": summary["rewards"],
        "paid": route["payouts"]["paid"],
        "waiting_approval": len(route["approvals"]),
        "notifications": summary["notifications"],
        "quarantined": sum(summary["quarantine"].values()),
    }


# -- the report --------------------------------------------------------------------------


def print_run(f: dict[str, Any]) -> None:
    _report.title(
        f"The referral cycle, {f['n']:,} customers ({f['contacts']:,} contacts,"
        f" {f['database']}), two cycles"
    )
    rows = []
    for stage, s in f["stages"].items():
        rows.append(
            [
                stage,
                s["cycle1_s"],
                s["cycle2_s"],
                s["wall_s"],
                s["tasks_s"],
                s["overhead_s"],
                f"{100 * s['overhead_share']:.1f}%",
            ]
        )
    rows.append(
        [
            "whole cycle",
            f["total_s"] - sum(s["cycle2_s"] for s in f["stages"].values()),
            sum(s["cycle2_s"] for s in f["stages"].values()),
            f["total_s"],
            f["tasks_s"],
            f["overhead_s"],
            f"{100 * f['overhead_share']:.1f}%",
        ]
    )
    _report.table(
        ["stage", "cycle 1 s", "cycle 2 s", "seconds", "in tasks s", "Prefect s", "Prefect"],
        rows,
    )

    _report.title("Slowest tasks (own time, both cycles)")
    _report.table(
        ["task", "seconds", "share of cycle"],
        [
            [name, s, f"{100 * s / f['total_s']:.1f}%" if f["total_s"] else "-"]
            for name, s in list(f["by_task_s"].items())[:8]
        ],
    )

    _report.title("What the cycles did")
    _report.table(
        ["what", "value"],
        [
            ["events stored", f["events"]],
            ["moments", f["moments"]],
            ["asks queued", f["asks_queued"]],
            ["asks by status", _statuses(f["asks"])],
            ["referrals written between cycles", f["referrals"]],
            ["conversions", f["conversions"]],
            ["rewards by status", _statuses(f["rewards"])],
            ["paid automatically (cycle 2)", f["paid"]],
            ["waiting for approval", f["waiting_approval"]],
            ["notifications by status", _statuses(f["notifications"])],
            ["rows quarantined", f["quarantined"]],
            ["generating the company, s (not timed above)", round(f["generate_s"], 2)],
            ["writing the referrals, s (not timed above)", round(f["referrals_s"], 2)],
            ["inbox MB", f"{f['inbox_mb']:,.1f}"],
            ["ledger MB", "-" if f["db_mb"] is None else f"{f['db_mb']:,.1f}"],
            ["peak memory of this process, MB", round(f["max_rss_mb"])],
            ["outcome digest (same code, same size: same digest)", _digest_line(f["digest"])],
        ],
    )


def _statuses(counts: dict[str, int]) -> str:
    return ", ".join(f"{k} {v:,}" for k, v in sorted(counts.items())) or "none"


def print_summary(runs: Sequence[dict[str, Any]]) -> None:
    _report.title("Time per stage by size (seconds, both cycles)")
    _report.table(
        ["customers", *STAGES, "whole cycle", "Prefect s", "Prefect"],
        [
            [
                r["n"],
                *(r["stages"][s]["wall_s"] for s in STAGES),
                r["total_s"],
                r["overhead_s"],
                f"{100 * r['overhead_share']:.1f}%",
            ]
            for r in runs
        ],
    )


@contextlib.contextmanager
def prefect_server(database_url: str | None) -> Iterator[None]:
    """A temporary Prefect server for the flows: the test harness's (SQLite), or a
    server process of ``LocalStack`` on a fresh PostgreSQL database."""
    if database_url is None:
        with prefect_test_harness(server_startup_timeout=60):
            yield
        return
    name = f"bench_prefect_{uuid.uuid4().hex[:10]}"
    admin = create_engine(database_url, isolation_level="AUTOCOMMIT")
    root = Path(tempfile.mkdtemp(prefix="bench-cycle-prefect-"))
    try:
        with admin.connect() as conn:
            conn.execute(text(f'CREATE DATABASE "{name}"'))
        url = make_url(database_url).set(drivername="postgresql+asyncpg", database=name)
        stack = LocalStack(
            PROJECT_ROOT,
            port=free_port(),
            home=root / "prefect",
            run_dir=root / "run",
            extra_env={
                "PREFECT_SERVER_DATABASE_CONNECTION_URL": url.render_as_string(hide_password=False)
            },
        )
        try:
            stack.start_server()
            with temporary_settings(stack.client_settings()):
                yield
        finally:
            stack.down()
    finally:
        shutil.rmtree(root, ignore_errors=True)
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


# The targets for the whole cycle (two passes, as this bench runs it).
TARGET_1M_S = 600.0
TARGET_GROWTH = 1.1
TARGET_PREFECT_SHARE = 0.05


def cycle_targets(runs: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """The targets the sizes run allow: 1M in <= 10 minutes, 100k -> 1M growing <= 1.1x
    linearly, Prefect's share <= 5 % at 100k."""
    by_n = {r["n"]: r for r in runs}
    goals = []
    big, mid = by_n.get(1_000_000), by_n.get(100_000)
    if big is not None:
        goals.append(
            _report.target(
                "whole cycle, 1,000,000 customers",
                f"<= {TARGET_1M_S:,.0f}",
                big["total_s"],
                big["total_s"] <= TARGET_1M_S,
                unit="s",
            )
        )
    if big is not None and mid is not None:
        growth = (big["total_s"] / mid["total_s"]) / 10
        goals.append(
            _report.target(
                "time 100k -> 1M over linear (x10)",
                f"<= {TARGET_GROWTH}",
                growth,
                growth <= TARGET_GROWTH,
                unit="x",
            )
        )
    if mid is not None:
        goals.append(
            _report.target(
                "Prefect's share at 100,000",
                f"<= {TARGET_PREFECT_SHARE:.0%}",
                100 * mid["overhead_share"],
                mid["overhead_share"] <= TARGET_PREFECT_SHARE,
                unit="%",
            )
        )
    return goals


def _sizes(text: str) -> list[int]:
    sizes = []
    for part in text.replace("_", "").split(","):
        if not part.strip():
            continue
        value = int(part)
        if value < 1:
            raise argparse.ArgumentTypeError("must be at least 1")
        sizes.append(value)
    if not sizes:
        raise argparse.ArgumentTypeError("name at least one size")
    return sizes


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    p = argparse.ArgumentParser(description="The whole referral cycle at scale, per stage.")
    p.add_argument(
        "--n",
        type=_sizes,
        nargs="+",
        default=[list(DEFAULT_SIZES)],
        help="customers: one or more sizes, spaces or commas between"
        " (default 10000,100000,1000000)",
    )
    p.add_argument(
        "--database-url",
        default=None,
        help="a PostgreSQL URL: the ledger goes in a fresh schema there, dropped afterwards"
        " (default: SQLite in a temporary directory)",
    )
    p.add_argument(
        "--prefect-database-url",
        default=None,
        help="a PostgreSQL URL: the Prefect server keeps its state in a fresh database"
        " there, dropped afterwards, as the README advises past one machine (default: the"
        " test harness's server on SQLite)",
    )
    args = p.parse_args(argv)
    sizes = [n for group in args.n for n in group]
    runs: list[dict[str, Any]] = []
    start = time.perf_counter()
    # The server's telemetry heartbeat only adds noise (and lock errors) to the output.
    no_telemetry = temporary_settings(updates={PREFECT_SERVER_ANALYTICS_ENABLED: False})
    with quiet_console(), no_telemetry, prefect_server(args.prefect_database_url):
        for n in sizes:
            runs.append(run_one(n, args.database_url))
    if len(runs) > 1:
        print_summary(runs)
    goals = cycle_targets(runs)
    _report.targets(goals)
    if not goals:
        print("(the targets need 100,000 and 1,000,000 customers among the sizes)")
    figures = {
        "bench": "cycle",
        "sizes": sizes,
        "targets": goals,
        "runs": runs,
        "elapsed_s": time.perf_counter() - start,
        **_report.machine(),
    }
    _report.emit_json(figures)
    return figures


if __name__ == "__main__":
    main()

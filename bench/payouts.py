"""Payouts: the rate reached under Stripe's limit, and the latency after an approval.

**Part A (rate).** Seeds a fresh, migrated SQLite ledger with ``--n`` (default 10,000)
payable rewards of 10 to 59 EUR (under the approval threshold), one referrer each with
a Connect account at the local fake Stripe (``integrations/payments/stripe_stand_in.py``), served
over HTTP and answering 429 above ``--rate`` (default 100) requests per second. A real
local Prefect server (``LocalStack``, server only) keeps the strict global rate limit
``stripe-bench`` at ``--rate``/s. ``--workers`` (default 4) processes, each with its
own engine, ledger, Stripe client and HTTP session, run the task as the flow does,
``submit_payouts.fn(ledger, {kind: StripeTransferRail(client, throttle=
StripeRateLimits("stripe-bench", rate, endpoint_rate))}, batch, now)``, in batches of
1,000, pass after pass until none of their rewards is left to pay (a payout answered
429 stays pending and goes again, same key, in the next call). The reward sets are
disjoint (every K-th reward) unless ``--overlap`` gives every worker all rewards, each
in its own order.

Reports transfer creations per second while payments flow (first to last creation at
the fake) as a share of the limit (target >= 95%), the 429s the fake answered, retries,
duplicates (a reward with more than one transfer; must be 0) and lost payments (a reward
not paid, a succeeded payout without its transfer; must be 0), and the ledger's
consistency (one ``paid`` entry per reward, for its amount).

**Part B (latency).** On the same server: the deployments from prefect.yaml and a
process worker (``LocalStack``, worker query interval as it sets it), with the worker's
``REFERRALS_*`` pointing at a second SQLite ledger and a second fake Stripe. ``--repeats``
(default 3) times: one 1,845.00 EUR reward awaiting approval, its approval run started
by ``request_approvals`` and PAUSED; time from ``PrefectApprovalRuns.resume`` with an
approval until the ledger (polled every 50 ms) has the payout committed as succeeded
(targets: median <= 2 s, every one paid by the approval listener with no pull step or
process start of the resumed run before it; see ``bench/_payouts_latency.py``), split
by the listener's claim, the transfer and the run's states. ``--skip-latency`` leaves it
out; ``--skip-rate`` leaves part A out (part B alone).

Everything started is stopped by PID and the temporary directory removed.

``--endpoint-rate E`` also limits each endpoint, at the fake and in the fleet (a
second Prefect limit, ``stripe-bench-post-v1-transfers``), as Stripe live does at 25/s
by default; the share is then of the narrower of the two limits. Without it (the
issue's benchmark) only the account's rate applies.

``make bench`` at 7f47548 (all of issue 17), the machine otherwise idle, twice:
transfers at 97.8 and 98.2 % of the rate limit; approval resume -> payout committed,
median 0.144 and 0.145 s, 3 of 3 paid by the listener with no pull step or process
start before the payout.

    python -m bench.payouts [--n N] [--workers K] [--rate R] [--endpoint-rate E]
                            [--overlap] [--repeats R] [--skip-latency] [--skip-rate]
"""

from __future__ import annotations

import os
import tempfile
import time
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bench import _report
from bench._ledger import checkpoint
from bench._payouts_rate import (
    API_KEY,
    BATCH,
    LIMIT_NAME,
    NETWORK_RETRIES,
    TimedFakeStripe,
    flow_window,
    ledger_checks,
    pay_all,
)
from bench._payouts_seed import seed_payable_rewards
from config.settings import PROJECT_ROOT
from integrations.ledger.engine import make_engine
from integrations.ledger.migrate import upgrade
from integrations.ledger.sql import SqlLedger
from integrations.payments.throttle import CREATE_TRANSFER
from integrations.prefect_limits import PrefectRateLimit, StripeRateLimits
from integrations.prefect_stack import LocalStack, free_port

DEFAULT_N = 10_000
DEFAULT_WORKERS = 4
DEFAULT_RATE = 100.0
DEFAULT_REPEATS = 3
TARGET_SHARE = 0.95
PREFIX = "bench-payouts-"


def run(
    n: int,
    workers: int,
    rate: float,
    overlap: bool = False,
    repeats: int = DEFAULT_REPEATS,
    skip_latency: bool = False,
    endpoint_rate: float | None = None,
    skip_rate: bool = False,
) -> dict[str, Any]:
    from bench import _payouts_latency

    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory(prefix=PREFIX) as tmp:
        root = Path(tmp)
        stack = LocalStack(
            PROJECT_ROOT, port=free_port(), home=root / "prefect", run_dir=root / "run"
        )
        try:
            began = time.perf_counter()
            stack.start_server()
            server_s = time.perf_counter() - began
            figures: dict[str, Any] = (
                {"bench": "payouts", "n": 0, "rate_skipped": True}
                if skip_rate
                else rate_part(stack, root, n, workers, rate, overlap, endpoint_rate)
            )
            figures["server_start_s"] = server_s
            figures["latency"] = (
                None if skip_latency else _payouts_latency.measure(stack, root, repeats)
            )
        finally:
            stack.down()
    latency = figures["latency"]
    figures["latency_met"] = None if latency is None else latency["latency_met"]
    figures["targets"] = [
        *(
            []
            if skip_rate
            else [
                _report.target(
                    "transfers per second as a share of the limit",
                    f">= {100 * TARGET_SHARE:g}%",
                    round(100 * figures["rate_share"], 1),
                    figures["rate_met"],
                    unit="%",
                )
            ]
        ),
        *([] if latency is None else _payouts_latency.targets(latency)),
    ]
    figures.update(_report.machine())
    # Other work on the machine shows in every figure here: say how busy it was.
    figures["load_avg_1m_before"] = load_before[0]
    figures["load_avg_1m_after"] = os.getloadavg()[0]
    print_tables(figures)
    return figures


def rate_part(
    stack: LocalStack,
    root: Path,
    n: int,
    workers: int,
    rate: float,
    overlap: bool,
    endpoint_rate: float | None = None,
) -> dict[str, Any]:
    from prefect.settings import PREFECT_HOME, temporary_settings

    ledger_url = f"sqlite:///{root / 'rate-ledger.db'}"
    engine = make_engine(ledger_url)
    try:
        upgrade(engine)
        ledger = SqlLedger(engine)
        with (
            temporary_settings({**stack.client_settings(), PREFECT_HOME: str(stack.home)}),
            TimedFakeStripe(
                api_key=API_KEY,
                rate_limit_per_second=rate,
                endpoint_rate_limit_per_second=endpoint_rate,
            ) as fake,
        ):
            began = time.perf_counter()
            rewards = seed_payable_rewards(ledger, n, fake.add_account, datetime.now(UTC))
            seed_s = time.perf_counter() - began
            checkpoint(engine)
            # Once, before the race.
            limits = StripeRateLimits(LIMIT_NAME, rate, endpoint_rate)
            limits.overall.ensure()
            if limits.endpoint_per_second is not None:
                limits.endpoint_limit(CREATE_TRANSFER).ensure()
            limits.close()
            try:
                stats, wall = pay_all(
                    ledger_url,
                    fake,
                    list(rewards),
                    workers,
                    rate,
                    endpoint_rate,
                    overlap,
                    stack.api_url,
                    stack.auth_string,
                    str(stack.home),
                )
            finally:
                _drain_prefect_services()
            posts = list(fake.posts)
            window = flow_window(posts)
            checks = ledger_checks(engine, fake, rewards)
            all_429 = fake.count(status=429)
    finally:
        engine.dispose()

    reports = [r for s in stats for r in s.reports]
    created = sum(1 for _t, status, replayed, _k in posts if status == 200 and not replayed)
    replays = sum(1 for _t, status, replayed, _k in posts if status == 200 and replayed)
    t429 = sum(1 for p in posts if p[1] == 429)
    t409 = sum(1 for p in posts if p[1] == 409)
    # Transfers can go no faster than the narrower of the account's and the endpoint's.
    limit = min(rate, endpoint_rate or rate)
    share = window["created_per_s"] / limit
    lost = checks["rewards_not_paid"] + checks["payouts_without_transfer"]
    busy = sum(s.seconds for s in stats)
    return {
        "bench": "payouts",
        "n": n,
        "workers": workers,
        "overlap": overlap,
        "reward_sets": "overlapping (all, own order)" if overlap else "disjoint (every K-th)",
        "rate_limit_per_s": rate,
        "endpoint_rate_limit_per_s": endpoint_rate,
        "transfer_limit_per_s": limit,
        "prefect_limit_capacity": PrefectRateLimit(LIMIT_NAME, rate).capacity,
        "batch_size": BATCH,
        "network_retries": NETWORK_RETRIES,
        "seed_s": seed_s,
        "wall_s": wall,
        "window_s": window["window_s"],
        "created_per_s": window["created_per_s"],
        "rate_share": share,
        "target_share": TARGET_SHARE,
        "rate_met": share >= TARGET_SHARE,
        "overall_per_s": _report.rate(n, wall),
        "middle_per_s": window["middle_per_s"],
        "middle_share": window["middle_per_s"] / limit,
        "busiest_second": window["busiest_second"],
        "per_second": window["per_second"],
        "transfer_posts": len(posts),
        "created": created,
        "replayed": replays,
        "http_429": all_429,
        "transfer_429": t429,
        "transfer_409": t409,
        "posts_per_transfer": len(posts) / max(created, 1),
        "retries": sum(r.retry_later for r in reports),
        "failed_results": sum(r.failed for r in reports),
        "recovered": sum(r.recovered for r in reports),
        "no_rail": sum(len(r.no_rail) for r in reports),
        "submit_calls": sum(s.calls for s in stats),
        "passes_max": max((s.passes for s in stats), default=0),
        "throttle_share": sum(s.throttle_s for s in stats) / busy if busy else 0.0,
        "worker_errors": [s.error for s in stats if s.error],
        "per_worker": [
            {
                "worker": s.worker,
                "rewards": s.rewards,
                "passes": s.passes,
                "calls": s.calls,
                "paid": sum(r.paid for r in s.reports),
                "retry_later": sum(r.retry_later for r in s.reports),
                "recovered": sum(r.recovered for r in s.reports),
                "seconds": s.seconds,
                "throttle_s": s.throttle_s,
                "throttle_calls": s.throttle_calls,
                "http_s": max(s.rail_s - s.throttle_s, 0.0),
                "ledger_s": s.ledger_s,
                "unfinished": s.unfinished,
            }
            for s in stats
        ],
        "duplicates": checks["duplicates"],
        "lost": lost,
        **{k: v for k, v in checks.items() if k != "duplicates"},
    }


def _drain_prefect_services() -> None:
    """Stop this process's Prefect services bound to the server (slot acquisition and
    the events they emitted) before the server goes, so none outlives it."""
    from prefect.concurrency.services import ConcurrencySlotAcquisitionService
    from prefect.events.worker import EventsWorker

    ConcurrencySlotAcquisitionService.drain_all(timeout=10)
    EventsWorker.drain_all(timeout=10)


# -- the tables --------------------------------------------------------------------------


def print_tables(f: dict[str, Any]) -> None:
    if f.get("rate_skipped"):
        print("\nPart A (rate) skipped (--skip-rate).")
    else:
        _print_rate(f)
    _print_latency(f)
    _report.targets(f["targets"])


def _print_rate(f: dict[str, Any]) -> None:
    _report.title(
        f"Part A: paying {f['n']:,} rewards through the Stripe fake limited to "
        f"{f['rate_limit_per_s']:g}/s{_endpoint(f)} ({f['workers']} workers, {f['reward_sets']})"
    )
    pct = f"{100 * f['rate_share']:.1f}%"
    _report.table(
        ["what", "value"],
        [
            ["transfers created per second (while flowing)", f["created_per_s"]],
            ["  as a share of the limit (target >= 95%)", pct],
            ["  target met", f["rate_met"]],
            ["flowing window, s (first to last creation)", f["window_s"]],
            ["  middle 90% of creations, per second", f["middle_per_s"]],
            ["  as a share of the limit", f"{100 * f['middle_share']:.1f}%"],
            ["wall time of the paying phase, s", f["wall_s"]],
            ["rewards per second over the wall time", f["overall_per_s"]],
            ["most creations in any one second", f["busiest_second"]],
            ["POST /v1/transfers answered", f["transfer_posts"]],
            ["  created / replayed (key already used)", f"{f['created']:,} / {f['replayed']:,}"],
            ["  429 / 409", f"{f['transfer_429']:,} / {f['transfer_409']:,}"],
            ["429s the fake answered (all routes)", f["http_429"]],
            ["retries (RETRYABLE results, same key later)", f["retries"]],
            ["recovered (pending payouts another call left)", f["recovered"]],
            ["share of worker time waiting for the limit", f"{100 * f['throttle_share']:.0f}%"],
            ["submit_payouts calls / most passes", f"{f['submit_calls']:,} / {f['passes_max']}"],
            ["duplicates (extra transfers for a reward)", f["duplicates"]],
            ["lost (not paid + paid without transfer)", f["lost"]],
            ["transfers not booked in the ledger", f["transfers_not_booked"]],
            ["one 'paid' entry per reward, for its amount", f["one_paid_entry_per_reward"]],
            ["payouts succeeded / pending / failed", _triple(f)],
            ["seeding s / Prefect server start s (not timed)", _pair(f)],
            ["machine load (1 min) before / after, CPUs", _load(f)],
        ],
    )
    if f["worker_errors"]:
        print("worker errors:", *f["worker_errors"], sep="\n  ")
    _report.title("Part A: per worker")
    _report.table(
        [
            "worker",
            "rewards",
            "passes",
            "calls",
            "paid",
            "retry",
            "recovered",
            "s",
            "limit s",
            "HTTP s",
            "ledger s",
        ],
        [
            [
                w["worker"],
                w["rewards"],
                w["passes"],
                w["calls"],
                w["paid"],
                w["retry_later"],
                w["recovered"],
                w["seconds"],
                w["throttle_s"],
                w["http_s"],
                w["ledger_s"],
            ]
            for w in f["per_worker"]
        ],
    )


def _print_latency(f: dict[str, Any]) -> None:
    latency = f["latency"]
    if latency is None:
        print("\nPart B (latency) skipped (--skip-latency).")
        return
    from bench._payouts_latency import PHASES, RUN_MARKS

    _report.title(
        "Part B: approval resume -> payout committed by the approval listener (local "
        f"Prefect server; the process worker polling every {latency['worker_query_seconds']:g} s "
        "runs the resumed run)"
    )
    headers = ["phase", *[f"run {i + 1}" for i in range(latency["repeats"])], "median"]
    rows: list[list[Any]] = [
        [
            label,
            *[round(s["phases"].get(key, 0.0), 3) for s in latency["samples"]],
            round(latency["phases_median_s"][key], 3),
        ]
        for key, label in PHASES
    ]
    rows.append(
        [
            "total (target: median <= 2 s)",
            *[round(s, 3) for s in latency["latency_s"]],
            round(latency["latency_median_s"], 3),
        ]
    )
    _report.table(headers, rows)
    _report.table(
        ["what", "value"],
        [
            ["median, s", round(latency["latency_median_s"], 3)],
            ["max, s", round(latency["latency_max_s"], 3)],
            ["paid by the listener", f"{latency['paid_by_listener']} of {latency['repeats']}"],
            ["  run's pull step / process start before the payout", latency["run_on_path"]],
            [
                "resumed runs ended Completed 'reward ... paid'",
                f"{latency['runs_completed_paid']} of {latency['repeats']}",
            ],
            ["deploy, s / first suspension, s (not timed)", _setup(latency)],
            ["schedules paused", ", ".join(latency["paused_deployments"]) or "-"],
            ["machine load (1 min) before / after, CPUs", _load(f)],
        ],
    )
    _report.title("Part B: the resumed run, after the payout (s after the resume, median)")
    _report.table(
        ["moment", "s"],
        [
            [label, round(latency["run_after_resume_median_s"][key], 3)]
            for key, label in RUN_MARKS
            if key in latency["run_after_resume_median_s"]
        ],
    )


def _endpoint(f: dict[str, Any]) -> str:
    rate = f["endpoint_rate_limit_per_s"]
    return "" if rate is None else f" and {rate:g}/s per endpoint"


def _triple(f: dict[str, Any]) -> str:
    return f"{f['payouts_succeeded']:,} / {f['payouts_pending']:,} / {f['payouts_failed']:,}"


def _pair(f: dict[str, Any]) -> str:
    return f"{f['seed_s']:.1f} / {f['server_start_s']:.1f}"


def _load(f: dict[str, Any]) -> str:
    return f"{f['load_avg_1m_before']:.1f} / {f['load_avg_1m_after']:.1f}, {f['cpus']}"


def _setup(latency: dict[str, Any]) -> str:
    return f"{latency['deploy_s']:.1f} / {latency['first_pause_s']:.1f}"


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    p = _report.parser(
        "Pay small rewards through the rate-limited Stripe fake; time approval to payout.",
        DEFAULT_N,
    )
    p.add_argument(
        "--workers",
        type=_report._positive,
        default=DEFAULT_WORKERS,
        help=f"concurrent payout workers (default {DEFAULT_WORKERS})",
    )
    p.add_argument(
        "--rate",
        type=float,
        default=DEFAULT_RATE,
        help=f"Stripe's limit and the Prefect rate limit, per second (default {DEFAULT_RATE:g})",
    )
    p.add_argument(
        "--overlap",
        action="store_true",
        help="give every worker all rewards (own order) instead of disjoint sets",
    )
    p.add_argument(
        "--repeats",
        type=_report._positive,
        default=DEFAULT_REPEATS,
        help=f"approvals timed in part B (default {DEFAULT_REPEATS})",
    )
    p.add_argument(
        "--endpoint-rate",
        type=float,
        default=None,
        help=(
            "also limit each endpoint, at the fake and in the fleet (Stripe live: 25); "
            "the share is then of the narrower limit (default: the account's limit only)"
        ),
    )
    p.add_argument("--skip-latency", action="store_true", help="leave part B out")
    p.add_argument("--skip-rate", action="store_true", help="leave part A out (part B alone)")
    args = p.parse_args(argv)
    if args.rate <= 0:
        p.error("--rate must be positive")
    if args.endpoint_rate is not None and args.endpoint_rate <= 0:
        p.error("--endpoint-rate must be positive")
    figures = run(
        args.n,
        args.workers,
        args.rate,
        args.overlap,
        args.repeats,
        args.skip_latency,
        args.endpoint_rate,
        args.skip_rate,
    )
    _report.emit_json(figures)
    return figures


if __name__ == "__main__":
    main()

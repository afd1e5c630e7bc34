"""Part A of the payout benchmark: K workers paying N small rewards under a shared limit.

The fake Stripe answers 429 above ``rate`` requests per second (sliding one-second
window). Every worker is a process with its own engine, ledger, Stripe client and HTTP
session, as a deployed worker would be; their rails share one strict Prefect global
rate limit at ``rate`` per second, kept by a real local Prefect server.
"""

from __future__ import annotations

import multiprocessing
import random
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import requests
from sqlalchemy import Engine, func, select

from domain.models import PayoutInstruction, PayoutResult, RewardStatus
from domain.money import Money
from integrations.ledger.asks import SqlAskStore
from integrations.ledger.engine import make_engine
from integrations.ledger.sql import SqlLedger
from integrations.ledger.tables import LedgerEntryRow, PayoutRow, RewardRow
from integrations.payments.stripe_rail import StripeTransferRail, build_stripe_client
from integrations.payments.stripe_stand_in import FakeStripe, Fault
from integrations.prefect_limits import StripeRateLimits
from tasks.payouts import PayoutReport, submit_payouts

API_KEY = "sk_test_bench_payouts"
LIMIT_NAME = "stripe-bench"
BATCH = 1000
MAX_PASSES = 20
# What production uses by default (REFERRALS_STRIPE_MAX_NETWORK_RETRIES is 3); the
# library retries 409s and 5xx itself, never a plain 429.
NETWORK_RETRIES = 3
TRANSFERS = "/v1/transfers"
_PAYABLE = (RewardStatus.PAYABLE, RewardStatus.APPROVED)


class TimedFakeStripe(FakeStripe):
    """The fake, also noting when each ``POST /v1/transfers`` was answered, and how."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        # (monotonic time, status, replayed, idempotency key)
        self.posts: list[tuple[float, int, bool, str | None]] = []

    def _record(
        self,
        method: str,
        path: str,
        key: str | None,
        status: int,
        replayed: bool,
        fault: Fault | None,
    ) -> None:
        if method == "POST" and path == TRANSFERS:
            with self._lock:
                self.posts.append((time.monotonic(), status, replayed, key))
        super()._record(method, path, key, status, replayed, fault)


class TimedThrottle:
    """The Prefect rate limits, with the time their callers spend blocked in them."""

    def __init__(self, limit: StripeRateLimits) -> None:
        self.limit = limit
        self.seconds = 0.0
        self.calls = 0

    def __call__(self, requests: int = 1, *, endpoint: str | None = None) -> None:
        start = time.perf_counter()
        try:
            self.limit(requests, endpoint=endpoint)
        finally:
            self.seconds += time.perf_counter() - start
            self.calls += 1


class TimedTransferRail(StripeTransferRail):
    """The real transfer rail, with the time spent in ``pay`` (throttle + HTTP)."""

    seconds = 0.0

    def pay(self, instructions: Sequence[PayoutInstruction]) -> list[PayoutResult]:
        start = time.perf_counter()
        try:
            return super().pay(instructions)
        finally:
            self.seconds += time.perf_counter() - start


class TimedAskStore(SqlAskStore):
    """The real ``asks`` store, its reads timed on the ledger that holds it."""

    def __init__(self, engine: Engine, ledger: TimedLedger) -> None:
        super().__init__(engine)
        self.ledger = ledger

    def contacts(self, contact_ids: Any) -> Any:
        return self.ledger._timed(super().contacts, contact_ids)


class TimedLedger(SqlLedger):
    """The real ledger, with the time of every call ``submit_payouts`` makes."""

    seconds = 0.0

    def __init__(self, engine: Any) -> None:
        super().__init__(engine)
        self.rewards = _Timed(self.rewards, self, ("of",))  # type: ignore[assignment]
        self.payouts = _Timed(  # type: ignore[assignment]
            self.payouts, self, ("prepare", "pending", "record_results")
        )
        # The referrers' contacts, read through the asks store since the ledger's split.
        self.asks = _Timed(self.asks, self, ("contacts",))  # type: ignore[assignment]

    def _timed(self, call: Any, *args: Any, **kwargs: Any) -> Any:
        start = time.perf_counter()
        try:
            return call(*args, **kwargs)
        finally:
            self.seconds += time.perf_counter() - start


class _Timed:
    """A store whose ``timed`` methods add their time to the ledger's."""

    def __init__(self, inner: Any, ledger: TimedLedger, timed: tuple[str, ...]) -> None:
        self._inner = inner
        self._ledger = ledger
        self._names = timed

    def __getattr__(self, name: str) -> Any:
        found = getattr(self._inner, name)
        if name not in self._names:
            return found
        return lambda *args, **kwargs: self._ledger._timed(found, *args, **kwargs)


@dataclass
class WorkerStats:
    worker: int
    rewards: int
    passes: int = 0
    calls: int = 0
    reports: list[PayoutReport] = field(default_factory=list)
    seconds: float = 0.0
    throttle_s: float = 0.0
    throttle_calls: int = 0
    rail_s: float = 0.0
    ledger_s: float = 0.0
    unfinished: int = 0
    error: str | None = None


def reward_sets(ids: Sequence[str], workers: int, overlap: bool) -> list[list[str]]:
    """Disjoint: every ``workers``-th reward. Overlapping: all rewards to every worker,
    each in its own order, so workers race for the same rewards all along."""
    ordered = sorted(ids)
    if not overlap:
        return [ordered[k::workers] for k in range(workers)]
    sets = []
    for k in range(workers):
        mine = list(ordered)
        random.Random(k).shuffle(mine)
        sets.append(mine)
    return sets


def _still_to_pay(ledger: SqlLedger, ids: Sequence[str]) -> list[str]:
    return [i for i, v in ledger.rewards.of(ids).items() if v.status in _PAYABLE]


def _work(
    k: int,
    ledger_url: str,
    stripe_url: str,
    rate: float,
    endpoint_rate: float | None,
    ids: list[str],
    start: Any,  # a threading or multiprocessing barrier
) -> WorkerStats:
    """One worker: passes over its rewards in batches until none is left to pay."""
    stats = WorkerStats(worker=k, rewards=len(ids))
    engine = make_engine(ledger_url)
    session = requests.Session()
    throttle = TimedThrottle(StripeRateLimits(LIMIT_NAME, rate, endpoint_rate))
    rail = TimedTransferRail(
        build_stripe_client(API_KEY, stripe_url, NETWORK_RETRIES, session=session),
        throttle=throttle,
        session=session,
    )
    ledger = TimedLedger(engine)
    try:
        start.wait(timeout=60)
        began = time.perf_counter()
        todo = list(ids)
        while todo and stats.passes < MAX_PASSES:
            stats.passes += 1
            for at in range(0, len(todo), BATCH):
                report = submit_payouts.fn(
                    ledger, {rail.kind: rail}, todo[at : at + BATCH], datetime.now(UTC)
                )
                stats.reports.append(report)
                stats.calls += 1
            # Payable still: a payout pending after a 429 (same key next pass), or none yet.
            todo = _still_to_pay(ledger, ids)
        stats.unfinished = len(todo)
        stats.seconds = time.perf_counter() - began
    except Exception as exc:  # reported in the figures, never hidden
        stats.error = f"{type(exc).__name__}: {exc}"
    finally:
        rail.close()
        engine.dispose()
    stats.throttle_s, stats.throttle_calls = throttle.seconds, throttle.calls
    stats.rail_s, stats.ledger_s = rail.seconds, ledger.seconds
    return stats


def _process(
    k: int,
    ledger_url: str,
    stripe_url: str,
    rate: float,
    endpoint_rate: float | None,
    ids: list[str],
    start: Any,
    results: Any,
    api_url: str,
    auth: str,
    home: str,
) -> None:
    """A worker process: its own interpreter, as a deployed worker would be."""
    from prefect.settings import (
        PREFECT_API_AUTH_STRING,
        PREFECT_API_URL,
        PREFECT_HOME,
        temporary_settings,
    )

    settings = {PREFECT_API_URL: api_url, PREFECT_API_AUTH_STRING: auth, PREFECT_HOME: home}
    with temporary_settings(settings):
        stats = _work(k, ledger_url, stripe_url, rate, endpoint_rate, ids, start)
    results.put(stats)


def pay_all(
    ledger_url: str,
    fake: TimedFakeStripe,
    ids: Sequence[str],
    workers: int,
    rate: float,
    endpoint_rate: float | None,
    overlap: bool,
    api_url: str,
    auth: str,
    home: str,
) -> tuple[list[WorkerStats], float]:
    """Run the workers to the end; their stats and the wall time from the start line.

    Each worker is a process of its own: as threads beside the fake, the workers and the
    fake's server took turns on one interpreter lock, which no deployed fleet does.
    """
    sets = reward_sets(ids, workers, overlap)
    spawn = multiprocessing.get_context("spawn")
    start = spawn.Barrier(workers + 1)
    results = spawn.Queue()
    procs = [
        spawn.Process(
            target=_process,
            args=(
                k,
                ledger_url,
                fake.url,
                rate,
                endpoint_rate,
                sets[k],
                start,
                results,
                api_url,
                auth,
                home,
            ),
            name=f"payout-worker-{k}",
        )
        for k in range(workers)
    ]
    for proc in procs:
        proc.start()
    try:
        start.wait(timeout=120)
        began = time.perf_counter()
        stats = [results.get(timeout=3600) for _ in procs]
        wall = time.perf_counter() - began
    finally:
        for proc in procs:
            proc.join(timeout=30)
            if proc.is_alive():
                proc.kill()
    return sorted(stats, key=lambda s: s.worker), wall


# -- checks ------------------------------------------------------------------------------


def flow_window(posts: Sequence[tuple[float, int, bool, str | None]]) -> dict[str, Any]:
    """Transfer creations over the window from the first to the last one created."""
    created = sorted(t for t, status, replayed, _key in posts if status == 200 and not replayed)
    if len(created) < 2:
        return {
            "window_s": 0.0,
            "created_per_s": 0.0,
            "middle_per_s": 0.0,
            "busiest_second": len(created),
            "per_second": [len(created)],
        }
    window = created[-1] - created[0]
    # The most creations in any one-second window (the fake allows ``rate``).
    busiest, lo = 0, 0
    for hi, t in enumerate(created):
        while t - created[lo] >= 1.0:
            lo += 1
        busiest = max(busiest, hi - lo + 1)
    # Creations in each whole second from the first one: the ramp, the plateau, the tail.
    per_second = [0] * (int(window) + 1)
    for t in created:
        per_second[int(t - created[0])] += 1
    # The middle 90% of the creations, without the start and the last workers' tail.
    lo_i, hi_i = len(created) // 20, len(created) - 1 - len(created) // 20
    middle = created[hi_i] - created[lo_i]
    return {
        "window_s": window,
        "created_per_s": (len(created) - 1) / window if window > 0 else 0.0,
        "middle_per_s": (hi_i - lo_i) / middle if middle > 0 else 0.0,
        "busiest_second": busiest,
        "per_second": per_second,
    }


def ledger_checks(engine: Engine, fake: FakeStripe, rewards: dict[str, Money]) -> dict[str, Any]:
    """Duplicates, lost payments and the ledger's consistency, from both sides."""
    transfers = fake.transfers
    per_reward = Counter(str(t["metadata"].get("reward_id")) for t in transfers)
    transfer_ids = {str(t["id"]) for t in transfers}
    with engine.connect() as conn:
        statuses = {
            str(s): int(c)
            for s, c in conn.execute(
                select(RewardRow.status, func.count()).group_by(RewardRow.status)
            ).all()
        }
        payouts = conn.execute(
            select(
                PayoutRow.reward_id, PayoutRow.payout_id, PayoutRow.status, PayoutRow.provider_ref
            )
        ).all()
        paid_entries = conn.execute(
            select(LedgerEntryRow.reward_id, func.count(), func.sum(LedgerEntryRow.amount_minor))
            .where(LedgerEntryRow.kind == "paid")
            .group_by(LedgerEntryRow.reward_id)
        ).all()
    succeeded = [p for p in payouts if p.status == "succeeded"]
    succeeded_refs = {str(p.provider_ref) for p in succeeded}
    entries = {str(r[0]): (int(r[1]), int(r[2])) for r in paid_entries}
    paid_rewards = statuses.get("paid", 0)
    return {
        "transfers": len(transfers),
        "duplicates": sum(c - 1 for c in per_reward.values() if c > 1),
        "rewards_with_duplicates": sum(1 for c in per_reward.values() if c > 1),
        "rewards_not_paid": len(rewards) - paid_rewards,
        "payouts_without_transfer": sum(
            1 for p in succeeded if str(p.provider_ref) not in transfer_ids
        ),
        "transfers_not_booked": len(transfer_ids - succeeded_refs),
        "payout_rows": len(payouts),
        "payouts_succeeded": len(succeeded),
        "payouts_pending": sum(1 for p in payouts if p.status == "pending"),
        "payouts_failed": sum(1 for p in payouts if p.status == "failed"),
        "reward_statuses": statuses,
        "one_paid_entry_per_reward": (
            set(entries) == set(rewards)
            and all(
                n == 1 and -total == rewards[r].amount_minor for r, (n, total) in entries.items()
            )
        ),
        "transfers_match_amounts": all(per_reward.get(r) == 1 for r in rewards)
        and sum(int(t["amount"]) for t in transfers)
        == sum(m.amount_minor for m in rewards.values()),
    }

"""Paying rewards, exactly once, through the payment rails."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime

from prefect import task
from prefect.cache_policies import NO_CACHE

from domain.models import (
    PayoutInstruction,
    PayoutOutcome,
    PayoutRailKind,
    PayoutResult,
    RewardStatus,
)
from domain.ports import PaymentRail
from domain.rewards import choose_rail
from integrations.ledger.sql import SqlLedger
from tasks._support import run_logger


@dataclass(frozen=True)
class PayoutReport:
    paid: int = 0
    retry_later: int = 0
    failed: int = 0
    no_rail: list[str] = field(default_factory=list)
    recovered: int = 0


@task(name="submit-payouts", cache_policy=NO_CACHE)
def submit_payouts(
    ledger: SqlLedger,
    rails: Mapping[PayoutRailKind, PaymentRail],
    reward_ids: Sequence[str],
    now: datetime,
) -> PayoutReport:
    """Pay the given payable or approved rewards, and any payout a crash left pending.

    Order matters for exactly-once: (1) the payout row with its fixed idempotency key
    is committed; (2) the rail is called with that key; (3) the result is committed.
    A crash after (1) or (2) leaves the payout pending; the next call sends the same
    key again, so the provider returns the payment it already made instead of paying
    twice, and (3) books it once.

    Args:
        ledger: the ledger holding rewards, payouts and entries.
        rails: the payment rails available, by kind.
        reward_ids: rewards to pay now.
        now: when payouts are recorded.

    Returns:
        Counts of payouts paid, to retry, failed; rewards with no rail that fits.
    """
    log = run_logger()
    views = ledger.rewards(reward_ids)
    referrers = ledger.contacts(v.reward.referrer_id for v in views.values())
    plans: list[tuple[str, PayoutRailKind, str | None]] = []
    no_rail: list[str] = []
    for reward_id, view in views.items():
        if view.status not in (RewardStatus.PAYABLE, RewardStatus.APPROVED):
            continue
        choice = choose_rail(referrers[view.reward.referrer_id], rails.keys())
        if choice is None:
            no_rail.append(reward_id)
        else:
            plans.append((reward_id, *choice))
    prepared = ledger.prepare_payouts(plans, now)
    known = {i.payout_id for i in prepared}
    leftovers = [i for i in ledger.pending_payouts(limit=1000) if i.payout_id not in known]
    payable = [i for i in (*prepared, *leftovers) if i.rail in rails]
    stranded = len(prepared) + len(leftovers) - len(payable)
    if stranded:
        # Pending on a rail not configured now (e.g. the Stripe key was removed): they
        # stay pending, with their keys, rather than be paid another way.
        log.warning("%d payouts pending on a payment rail that is not configured", stranded)

    by_rail: dict[PayoutRailKind, list[PayoutInstruction]] = {}
    for instruction in payable:
        by_rail.setdefault(instruction.rail, []).append(instruction)
    results: list[PayoutResult] = []
    for kind, batch in by_rail.items():
        results += rails[kind].pay(batch)
    paid = ledger.record_payout_results(results, now)
    report = PayoutReport(
        paid=paid,
        retry_later=sum(r.outcome is PayoutOutcome.RETRYABLE for r in results),
        failed=sum(r.outcome is PayoutOutcome.FAILED for r in results),
        no_rail=sorted(no_rail),
        recovered=sum(i.rail in rails for i in leftovers),
    )
    log.info(
        "payouts: %d paid, %d to retry, %d failed, %d without a rail, %d recovered",
        report.paid,
        report.retry_later,
        report.failed,
        len(report.no_rail),
        report.recovered,
    )
    return report

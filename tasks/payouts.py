"""Paying rewards, exactly once, through the payment rails."""

from __future__ import annotations

import os
import socket
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

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
from tasks._support import Progress, run_logger


@dataclass(frozen=True)
class PayoutReport:
    paid: int = 0
    retry_later: int = 0
    failed: int = 0
    no_rail: list[str] = field(default_factory=list)
    recovered: int = 0
    claimed_elsewhere: int = 0


#: How long a worker holds the payouts it claimed. Far longer than sending one chunk
#: takes even at Stripe's test-mode rate; a crashed worker's payouts wait this long.
CLAIM_LEASE = timedelta(minutes=5)
#: Payouts claimed, sent and booked together: small enough that several workers share
#: a large batch, large enough that the ledger round trips stay a small part of the time.
CLAIM_CHUNK = 200
#: From how many payouts a call shows a progress artifact. An approval run pays one
#: reward: an artifact saying "1 of 1" would cost two API calls, one of them between
#: the approval and the transfer.
PROGRESS_FROM = 2


def worker_name() -> str:
    """Who holds a claim: host, process and this call, so two calls never share one."""
    return f"{socket.gethostname()[:32]}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


@task(name="submit-payouts", cache_policy=NO_CACHE)
def submit_payouts(
    ledger: SqlLedger,
    rails: Mapping[PayoutRailKind, PaymentRail],
    reward_ids: Sequence[str],
    now: datetime,
    lease: timedelta = CLAIM_LEASE,
    chunk: int = CLAIM_CHUNK,
) -> PayoutReport:
    """Pay the given payable or approved rewards, and any payout a crash left pending.

    Order matters for exactly-once: (1) the payout row with its fixed idempotency key
    is committed; (2) the rail is called with that key; (3) the result is committed.
    A crash after (1) or (2) leaves the payout pending; the next call sends the same
    key again, so the provider returns the payment it already made instead of paying
    twice, and (3) books it once.

    Between (1) and (2) each chunk of payouts is claimed for ``lease``: several workers
    given the same rewards split them instead of all sending all of them, and a payout
    another live worker holds is left to it (counted in ``claimed_elsewhere``). A
    crashed worker's claims run out after ``lease``; then any call takes them over.

    Args:
        ledger: the ledger holding rewards, payouts and entries.
        rails: the payment rails available, by kind.
        reward_ids: rewards to pay now.
        now: when payouts are recorded; leases are counted from it.
        lease: how long this call holds the payouts it claims.
        chunk: payouts claimed, sent and booked together.

    Returns:
        Counts of payouts paid, to retry, failed, held by another worker; rewards with
        no rail that fits.
    """
    log = run_logger()
    worker = worker_name()
    views = ledger.rewards.of(reward_ids)
    referrers = ledger.asks.contacts(v.reward.referrer_id for v in views.values())
    # A referrer's reward choice (cash or account credit) applies to every reward not
    # yet paid: it decides the rail here, when the payout is prepared.
    choices = ledger.referrer_side.reward_choices(referrers)
    plans: list[tuple[str, PayoutRailKind, str | None]] = []
    no_rail: list[str] = []
    for reward_id, view in views.items():
        if view.status not in (RewardStatus.PAYABLE, RewardStatus.APPROVED):
            continue
        referrer_id = view.reward.referrer_id
        choice = choose_rail(referrers[referrer_id], rails.keys(), choices.get(referrer_id))
        if choice is None:
            no_rail.append(reward_id)
        else:
            plans.append((reward_id, *choice))
    prepared = ledger.payouts.prepare(plans, now)
    ours = sorted({i.reward_id for i in prepared})

    shown = len(ours) if len(ours) >= PROGRESS_FROM else 0  # none: no artifact
    tally = _Tally(progress=Progress("payouts-progress", shown, "payouts"))
    for part in (ours[i : i + chunk] for i in range(0, len(ours), chunk)):
        claimed = ledger.payouts.claim(worker, now, lease, reward_ids=part, limit=len(part))
        _pay(ledger, rails, claimed, worker, now, tally, log)
    claimed_elsewhere = len(prepared) - len(tally.seen)

    # Payouts a crashed or abandoned call left behind, once their lease (or, never
    # claimed, their age) shows nobody is sending them.
    leftovers = [
        i
        for i in ledger.payouts.claim(worker, now, lease, limit=1000, stale_before=now - lease)
        if i.payout_id not in tally.seen
    ]
    _pay(ledger, rails, leftovers, worker, now, tally, log)
    tally.progress.finish()

    report = PayoutReport(
        paid=tally.paid,
        retry_later=tally.retry_later,
        failed=tally.failed,
        no_rail=sorted(no_rail),
        recovered=sum(i.rail in rails for i in leftovers),
        claimed_elsewhere=claimed_elsewhere,
    )
    log.info(
        "payouts: %d paid, %d to retry, %d failed, %d without a rail, %d recovered, "
        "%d held by another worker",
        report.paid,
        report.retry_later,
        report.failed,
        len(report.no_rail),
        report.recovered,
        report.claimed_elsewhere,
    )
    return report


@dataclass
class _Tally:
    paid: int = 0
    retry_later: int = 0
    failed: int = 0
    seen: set[str] = field(default_factory=set)
    progress: Progress = field(default_factory=lambda: Progress("payouts-progress", 0, ""))


def _pay(
    ledger: SqlLedger,
    rails: Mapping[PayoutRailKind, PaymentRail],
    claimed: Sequence[PayoutInstruction],
    worker: str,
    now: datetime,
    tally: _Tally,
    log: Any,
) -> None:
    """Send the claimed payouts by their rails and book the outcomes."""
    tally.seen.update(i.payout_id for i in claimed)
    payable = [i for i in claimed if i.rail in rails]
    stranded = [i.payout_id for i in claimed if i.rail not in rails]
    if stranded:
        # Pending on a rail not configured now (e.g. the Stripe key was removed): they
        # stay pending, with their keys, rather than be paid another way.
        ledger.payouts.release(stranded, worker)
        log.warning("%d payouts pending on a payment rail that is not configured", len(stranded))
    by_rail: dict[PayoutRailKind, list[PayoutInstruction]] = {}
    for instruction in payable:
        by_rail.setdefault(instruction.rail, []).append(instruction)
    results: list[PayoutResult] = []
    for kind, batch in by_rail.items():
        results += rails[kind].pay(batch)
        tally.progress.advance(len(batch))
    tally.paid += ledger.payouts.record_results(results, now)
    tally.retry_later += sum(r.outcome is PayoutOutcome.RETRYABLE for r in results)
    tally.failed += sum(r.outcome is PayoutOutcome.FAILED for r in results)

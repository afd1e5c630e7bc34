"""Taking rewards back when the referee refunds, disputes or churns, exactly once."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from prefect import task
from prefect.cache_policies import NO_CACHE

from domain.clawbacks import (
    ClawbackConflict,
    LossStatus,
    ReversalInstruction,
    ReversalRail,
    ReversalResult,
)
from domain.errors import InputRejected
from domain.models import PayoutRailKind, Rejected
from domain.ports import ApprovalRuns, PaymentRail
from domain.program import Program
from integrations.ledger.sql import SqlLedger
from integrations.payments.stripe_reconcile import LOSS_EVENT_TYPES, parse_payment_loss
from tasks._support import run_logger
from tasks.use_cases.clawbacks import apply_payment_loss

QUARANTINE_STAGE = "clawback"
_CANCELLED_REASON = "the reward was cancelled: the referee's payment was refunded or disputed"


@dataclass(frozen=True)
class ClawbackReport:
    """What one run of :func:`apply_clawbacks` did (counts and ids, nothing personal).

    Attributes:
        events: refund, dispute and churn events examined.
        applied: events applied (and marked processed).
        ignored: events that change nothing (switched off, or past the window).
        waiting_for_payment: events whose payment no conversion (nor a reward earned by
            that payment alone, a renewal's) has yet; retried later.
        deferred: events waiting for a payout under way; retried later.
        given_up: events still unmatched a whole window after they happened.
        malformed: events quarantined.
        cancelled: rewards cancelled before payout.
        clawed_back: rewards clawed back after payout.
        reversals: reversal results by ledger status (succeeded, unrecovered, ...).
        approvals_closed: approval runs ended because their reward was cancelled.
    """

    events: int = 0
    applied: int = 0
    ignored: int = 0
    waiting_for_payment: int = 0
    deferred: int = 0
    given_up: int = 0
    malformed: int = 0
    cancelled: list[str] = field(default_factory=list)
    clawed_back: list[str] = field(default_factory=list)
    reversals: dict[str, int] = field(default_factory=dict)
    approvals_closed: int = 0


@task(name="apply-clawbacks", cache_policy=NO_CACHE)
def apply_clawbacks(
    ledger: SqlLedger,
    rails: Mapping[PayoutRailKind, PaymentRail],
    program: Program,
    now: datetime,
    approvals: ApprovalRuns | None = None,
    batch_size: int = 500,
) -> ClawbackReport:
    """Apply the inbox's refunds, disputes and churn, then reverse what was paid.

    Order matters for exactly-once: (1) each event is applied in one ledger
    transaction, which books the ``cancelled``/``clawed_back`` entries, stores each
    reversal with its fixed idempotency key and marks the event processed; (2) every
    pending reversal (new, or left by a crash) goes to its rail with that key; (3) the
    results are committed (``reversed`` entries). Running twice, or after a crash
    anywhere, takes nothing back twice. An event whose payment no conversion has yet
    (a refund delivered before its payment, or a renewal's before the recurring reward
    it earned is computed) stays in the inbox for a later run. A later invoice's refund
    or dispute reaches only the rewards that invoice earned.

    Args:
        ledger: the ledger (its clawback area, and the Stripe inbox).
        rails: the payment rails, by kind; those that can reverse are used.
        program: the ``clawbacks`` rules (window, causes switched on).
        now: when everything is recorded.
        approvals: to end the approval runs of rewards cancelled meanwhile.
        batch_size: events read per query.

    Returns:
        Counts of events, rewards and reversals.
    """
    log = run_logger()
    rules = program.clawbacks
    counts = {s: 0 for s in LossStatus}
    events = malformed = given_up = 0
    cancelled: list[str] = []
    clawed: list[str] = []
    after: tuple[datetime, str] | None = None
    while batch := ledger.clawbacks.events(list(LOSS_EVENT_TYPES), after, batch_size):
        after = (batch[-1].created_at, batch[-1].event_id)
        for event in batch:
            events += 1
            try:
                loss = parse_payment_loss(
                    event.event_id, event.type, event.created_at, event.payload
                )
            except InputRejected as exc:
                malformed += 1
                ledger.quarantine(
                    [Rejected("stripe", exc.record, exc.field, exc.reason)], QUARANTINE_STAGE, now
                )
                ledger.clawbacks.close_events([event.event_id], now)
                continue
            try:
                outcome = apply_payment_loss(ledger, loss, rules, now)
            except ClawbackConflict as exc:
                log.warning("clawback of %s deferred: %s", event.event_id, exc)
                counts[LossStatus.DEFERRED] += 1
                continue
            counts[outcome.status] += 1
            if outcome.status is LossStatus.UNKNOWN_PAYMENT and now - loss.occurred_at > timedelta(
                days=rules.window_days
            ):
                # A whole window later no conversion can claim it: not a referral payment.
                given_up += ledger.clawbacks.close_events([event.event_id], now)
            cancelled += [d.reward_id for d in outcome.decisions if d.cancels_reward]
            clawed += [d.reward_id for d in outcome.decisions if not d.claw_back.is_zero]
    closed = _end_approvals_of_cancelled(ledger, approvals, now, batch_size)
    reversals = _submit_reversals(ledger, rails, now)
    report = ClawbackReport(
        events=events,
        applied=counts[LossStatus.APPLIED],
        ignored=counts[LossStatus.IGNORED],
        waiting_for_payment=counts[LossStatus.UNKNOWN_PAYMENT] - given_up,
        deferred=counts[LossStatus.DEFERRED],
        given_up=given_up,
        malformed=malformed,
        cancelled=sorted(set(cancelled)),
        clawed_back=sorted(set(clawed)),
        reversals=reversals,
        approvals_closed=closed,
    )
    log.info(
        "clawbacks: %d events, %d applied, %d ignored, %d waiting for their payment, "
        "%d deferred, %d malformed; %d rewards cancelled, %d clawed back; reversals %s",
        report.events,
        report.applied,
        report.ignored,
        report.waiting_for_payment,
        report.deferred,
        report.malformed,
        len(report.cancelled),
        len(report.clawed_back),
        report.reversals or "none",
    )
    return report


def _end_approvals_of_cancelled(
    ledger: SqlLedger, approvals: ApprovalRuns | None, now: datetime, limit: int
) -> int:
    """End the waiting approval runs of rewards cancelled by a clawback.

    They are found again on every run, so a crash between the clawback and this leaves
    nothing waiting for good. Without ``approvals`` only requests no run waits on close.
    """
    closing: list[str] = []
    for request_id, _, run_id in ledger.waiting_requests_of_closed_rewards(limit):
        if run_id is None:
            closing.append(request_id)
        elif approvals is not None:
            # False when resumed meanwhile: that decision finds the reward cancelled.
            approvals.cancel_waiting(run_id, _CANCELLED_REASON)
            closing.append(request_id)
    return ledger.close_approval_requests(closing, now)


def _submit_reversals(
    ledger: SqlLedger, rails: Mapping[PayoutRailKind, PaymentRail], now: datetime
) -> dict[str, int]:
    pending = ledger.reversals.pending(limit=1000)
    by_rail: dict[PayoutRailKind, list[ReversalInstruction]] = {}
    for instruction in pending:
        by_rail.setdefault(instruction.rail, []).append(instruction)
    results: list[ReversalResult] = []
    stranded = 0
    for kind, batch in by_rail.items():
        rail = rails.get(kind)
        if isinstance(rail, ReversalRail):
            results += rail.reverse(batch)
        else:
            stranded += len(batch)
    if stranded:
        # Kept pending with their keys (the debt is not netted meanwhile) until a rail
        # that can reverse them is configured.
        run_logger().warning("%d reversals pending on a rail that cannot reverse", stranded)
    return ledger.reversals.record_results(results, now)

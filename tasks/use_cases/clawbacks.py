"""Applying a refund, chargeback or churn to the rewards it reaches, in one unit of work.

The rules are :mod:`domain.clawbacks`; this reads the facts through the ``clawbacks``
and ``reversals`` stores, asks the rules in order, and writes what they decide.
"""

from __future__ import annotations

from datetime import datetime

from domain.clawbacks import (
    ClawbackConflict,
    ClawbackDecision,
    LossApplied,
    LossStatus,
    PaymentLoss,
    applies,
    clawback_notice,
    clawback_of,
    decide_clawback,
    payments_lost,
    reach,
    reversal_for,
    waits_for_rewards,
)
from domain.program import Clawbacks
from domain.stores.clawbacks import ClawbackStores, LedgerWithClawbacks


def apply_payment_loss(
    ledger: LedgerWithClawbacks, loss: PaymentLoss, rules: Clawbacks, now: datetime
) -> LossApplied:
    """Apply one refund, chargeback or churn to the rewards of its payment.

    One transaction: the inbox row is locked (a racing run waits, then finds it
    processed); the payment is looked up among the first payments behind conversions
    and among the payments that earned a reward alone (a recurring rule's later
    invoice). If a conversion's rewards are not computed yet, or a reward reached has
    a payout under way, the event waits for the next run (the payout's outcome decides
    whether it is a cancel or a clawback); a payment nothing has yet waits too.
    Otherwise the referrers are locked, and each reward in the window gets its
    clawback row and entries, its referrer's notice, its cancellation if unpaid, and
    its reversal if paid out; the event is marked processed.

    Args:
        ledger: the ledger, whose unit of work this opens.
        loss: the parsed event (see ``integrations.payments.stripe_reconcile``).
        rules: the program's ``clawbacks`` section.
        now: when the clawback is recorded.

    Returns:
        What became of the event.

    Raises:
        ClawbackConflict: a reward changed status meanwhile; nothing was written and
            the event stays unprocessed.
    """
    with ledger.transaction() as uow:
        return _apply(uow, loss, rules, now)


def _apply(uow: ClawbackStores, loss: PaymentLoss, rules: Clawbacks, now: datetime) -> LossApplied:
    event_id = loss.event_id
    if not uow.clawbacks.lock_event(event_id):
        return LossApplied(event_id, LossStatus.ALREADY_PROCESSED)
    if not applies(rules, loss.cause):
        uow.clawbacks.close_events([event_id], now)
        return LossApplied(event_id, LossStatus.IGNORED)
    payments = payments_lost(loss, uow.clawbacks.conversion_payments(loss))
    own = uow.clawbacks.own_payments(loss.payment_refs)
    if not payments and not own:
        return LossApplied(event_id, LossStatus.UNKNOWN_PAYMENT)
    if waits_for_rewards(payments, loss, rules):
        return LossApplied(event_id, LossStatus.DEFERRED)
    rewards = uow.clawbacks.rewards_of(sorted(payments))
    reached = reach(
        loss, rules, payments, rewards, uow.clawbacks.earned_alone(sorted(rewards)), own
    )
    if not reached.in_window:
        uow.clawbacks.close_events([event_id], now)
        return LossApplied(event_id, LossStatus.IGNORED, outside_window=reached.late)
    # Locked before anything about them is read: a payout being prepared for one of
    # these referrers (which nets their debts) waits until this commits.
    uow.clawbacks.lock_referrers(reached.referrers)
    reward_ids = sorted(reached.in_window)
    if uow.clawbacks.payout_pending(reward_ids):
        return LossApplied(event_id, LossStatus.DEFERRED, outside_window=reached.late)
    positions = uow.clawbacks.positions(reward_ids, loss.payment_key)
    decisions: list[ClawbackDecision] = []
    reversals = 0
    for reward_id in reward_ids:
        referrer_id, payment = reached.in_window[reward_id]
        position = positions[reward_id]
        decision = decide_clawback(position, loss, payment.amount_minor)
        decisions.append(decision)
        clawback = clawback_of(loss, position, decision, payment)
        if not uow.clawbacks.book(clawback, now):
            continue  # booked before (the event lock makes this a safety net only)
        notice = clawback_notice(clawback, referrer_id)
        if notice is not None:
            uow.clawbacks.notify(notice, now)
        if decision.cancels_reward and not uow.clawbacks.cancel_reward(
            reward_id, position.status, now
        ):
            raise ClawbackConflict(f"reward {reward_id} changed status during a clawback")
        if decision.claw_back.is_zero:
            continue
        instruction = reversal_for(clawback, uow.reversals.payout_of(reward_id))
        if instruction is not None:
            reversals += uow.reversals.queue(instruction, clawback.clawback_id, now)
    uow.clawbacks.close_events([event_id], now)
    return LossApplied(
        event_id, LossStatus.APPLIED, tuple(decisions), reversals, outside_window=reached.late
    )

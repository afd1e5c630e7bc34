"""The clawback area of the ledger: refunds, chargebacks and churn taking rewards back.

:class:`ClawbackLedger` is a mixin of :class:`~integrations.ledger.base.LedgerBase` meant
to join :class:`~integrations.ledger.sql.SqlLedger`'s bases.

The payment an event names reaches the rewards it earned: a conversion's first payment
its rewards, a later invoice the recurring rewards that invoice earned
(``reward_payments``, see :mod:`integrations.ledger.reward_payments`); churn reaches
every reward of the conversion. What it books, per reward reached (the rules are
:func:`domain.clawbacks.decide_clawback`):

* an **unpaid** reward: a ``cancelled`` entry for what is left of it, and its status
  moves to cancelled;
* a **paid** reward: a ``clawed_back`` entry (-amount; the balance goes negative: the
  referrer owes it) and, when a payout can be reversed, a row in the ``reversals``
  outbox with a fixed idempotency key (``reward:<id>:reversal:<event id>``), committed
  before the provider is called. The provider's answer is booked by
  :meth:`ClawbackLedger.record_reversal_results`: a success books ``reversed``
  (+amount recovered); insufficient funds (or a refusal) leaves the debt, which
  :func:`net_debts` takes from the referrer's next payout.

Exactly once: each event is applied in one transaction that also marks it processed,
after locking its inbox row; a clawback row per (reward, event) is unique; entries are
unique per (reward, kind, ref) with the clawback or reversal id as ``ref``.

On PostgreSQL, applying an event and preparing a payout (which nets debts) take a
transaction-scoped advisory lock per referrer (:func:`lock_referrers`), always in the
same order, so a payout never starts for a reward being cancelled, and a debt is never
netted twice. SQLite serializes writers anyway (``BEGIN IMMEDIATE``).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Any

from sqlalchemy import Connection, case, func, or_, select, update

from domain.clawbacks import (
    ClawbackCause,
    ClawbackDecision,
    PaymentLoss,
    ReversalInstruction,
    ReversalOutcome,
    ReversalResult,
    RewardPosition,
    applies,
    decide_clawback,
    recoverable,
    rewards_reached,
    within_window,
)
from domain.errors import DomainError
from domain.models import PayoutRailKind, RewardStatus, derived_id
from domain.money import Money
from domain.program import Clawbacks
from integrations.ledger.base import (
    LedgerBase,
    chunks,
)
from integrations.ledger.locks import lock_referrers
from integrations.ledger.reward_payments import OwnPayment, earned_alone, rewards_paid_by
from integrations.ledger.tables import (
    T_APPROVAL_REQUESTS,
    T_CLAWBACKS,
    T_CONVERSION_PAYMENTS,
    T_CONVERSIONS,
    T_LEDGER_ENTRIES,
    T_PAYOUTS,
    T_REVERSALS,
    T_REWARDS,
    T_STRIPE_EVENTS,
)
from integrations.ledger.webhooks import (
    STRIPE,
    StoredStripeEvent,
    mark_stripe_events,
    read_unprocessed_stripe_events,
)

_LIVE_PAYOUT = ("pending", "succeeded")
_REVERSAL_STATUS = {
    ReversalOutcome.SUCCEEDED: "succeeded",
    ReversalOutcome.INSUFFICIENT_FUNDS: "unrecovered",
    ReversalOutcome.FAILED: "failed",
    ReversalOutcome.RETRYABLE: "pending",
}


class ClawbackConflict(DomainError):
    """A reward changed under a clawback (e.g. a racing decision); apply it again."""


class LossStatus(StrEnum):
    """What became of one provider event."""

    APPLIED = "applied"  # booked (maybe nothing left to take); the event is processed
    IGNORED = "ignored"  # the cause is switched off, or past every conversion's window
    UNKNOWN_PAYMENT = "unknown_payment"  # no conversion or reward has the payment yet
    DEFERRED = "deferred"  # a payout under way, or rewards not computed yet: retry later
    ALREADY_PROCESSED = "already_processed"


@dataclass(frozen=True, slots=True)
class LossApplied:
    """The outcome of :meth:`ClawbackLedger.apply_payment_loss`.

    Attributes:
        event_id: the provider event.
        status: see :class:`LossStatus`.
        decisions: what was booked, per reward (including decisions taking nothing).
        reversals: reversal rows written (to send to the provider).
        outside_window: rewards the event reached too late to change.
    """

    event_id: str
    status: LossStatus
    decisions: tuple[ClawbackDecision, ...] = ()
    reversals: int = 0
    outside_window: int = 0


_CAUSE_TEXT = {
    ClawbackCause.REFUND: "the referred customer's payment was refunded",
    ClawbackCause.CHARGEBACK: "the referred customer's payment was disputed",
    ClawbackCause.CHURN: "the referred customer cancelled within the program's window",
}


def referrers_of(conn: Connection, reward_ids: Sequence[str]) -> dict[str, str]:
    """Reward id -> referrer id."""
    found: dict[str, str] = {}
    for chunk in chunks(sorted(set(reward_ids))):
        for reward_id, referrer_id in conn.execute(
            select(T_REWARDS.c.reward_id, T_REWARDS.c.referrer_id).where(
                T_REWARDS.c.reward_id.in_(chunk)
            )
        ):
            found[reward_id] = referrer_id
    return found


def live_payouts(conn: Connection, reward_ids: Sequence[str]) -> set[str]:
    """Those of ``reward_ids`` with a payout pending or succeeded."""
    found: set[str] = set()
    for chunk in chunks(sorted(set(reward_ids))):
        found.update(
            conn.execute(
                select(T_PAYOUTS.c.reward_id).where(
                    T_PAYOUTS.c.reward_id.in_(chunk), T_PAYOUTS.c.status.in_(_LIVE_PAYOUT)
                )
            ).scalars()
        )
    return found


def nettable_debts(
    conn: Connection, referrer_ids: Iterable[str]
) -> dict[str, list[tuple[str, Money]]]:
    """What each referrer owes and may have netted: referrer -> [(reward id, debt)].

    A reward's debt is its negative balance, less the reversals still pending at the
    provider (they may yet recover it: netting it too would take it twice). Oldest
    reward first.
    """
    ids = sorted(set(referrer_ids))
    debts: dict[str, list[tuple[str, Money]]] = {}
    for chunk in chunks(ids):
        balance = func.sum(T_LEDGER_ENTRIES.c.amount_minor)
        rows = conn.execute(
            select(
                T_REWARDS.c.reward_id,
                T_REWARDS.c.referrer_id,
                T_REWARDS.c.currency,
                balance.label("balance"),
            )
            .select_from(
                T_REWARDS.join(
                    T_LEDGER_ENTRIES, T_LEDGER_ENTRIES.c.reward_id == T_REWARDS.c.reward_id
                )
            )
            .where(T_REWARDS.c.referrer_id.in_(chunk))
            .group_by(
                T_REWARDS.c.reward_id,
                T_REWARDS.c.referrer_id,
                T_REWARDS.c.currency,
                T_REWARDS.c.created_at,
            )
            .having(balance < 0)
            .order_by(T_REWARDS.c.created_at, T_REWARDS.c.reward_id)
        ).all()
        pending = _pending_reversals(conn, [r.reward_id for r in rows])
        for r in rows:
            owed = -int(r.balance) - pending.get(r.reward_id, 0)
            if owed > 0:
                debts.setdefault(r.referrer_id, []).append((r.reward_id, Money(owed, r.currency)))
    return debts


def _pending_reversals(conn: Connection, reward_ids: Sequence[str]) -> dict[str, int]:
    found: dict[str, int] = {}
    for chunk in chunks(reward_ids):
        for reward_id, total in conn.execute(
            select(T_REVERSALS.c.reward_id, func.sum(T_REVERSALS.c.amount_minor))
            .where(T_REVERSALS.c.reward_id.in_(chunk), T_REVERSALS.c.status == "pending")
            .group_by(T_REVERSALS.c.reward_id)
        ):
            found[reward_id] = int(total)
    return found


def book_netting(
    ledger: LedgerBase,
    conn: Connection,
    reward_id: str,
    payout_id: str,
    settled: Sequence[tuple[str, Money]],
    now: datetime,
) -> None:
    """Book debts settled out of a payout: one ``netted`` entry of -(their total) on the
    reward being paid, and ``netted`` +amount on each reward in debt; every entry's ref is
    the payout id (unique per reward, kind and ref, so booking twice is refused)."""
    if not settled:
        return
    currency = settled[0][1].currency
    total = sum(amount.amount_minor for _, amount in settled)
    ledger._entry(conn, reward_id, "netted", -total, currency, payout_id, now)
    for debtor, amount in settled:
        ledger._entry(conn, debtor, "netted", amount.amount_minor, currency, payout_id, now)


def settle_by_netting(conn: Connection, reward_id: str, now: datetime) -> bool:
    """Mark paid a reward whose whole balance went to settle the referrer's debts."""
    return (
        conn.execute(
            update(T_REWARDS)
            .where(
                T_REWARDS.c.reward_id == reward_id,
                T_REWARDS.c.status.in_([RewardStatus.PAYABLE.value, RewardStatus.APPROVED.value]),
            )
            .values(status=RewardStatus.PAID.value, updated_at=now)
        ).rowcount
        == 1
    )


@dataclass(frozen=True, slots=True)
class _Payment:
    conversion_id: str
    made_at: datetime  # the conversion's time, or the invoice's: the window starts there
    amount_minor: int
    rewarded: bool  # the conversion's rewards are computed (maybe none)


def _own(paid: OwnPayment, loss: PaymentLoss) -> _Payment:
    """The payment that earned one reward alone (its rewards exist: it named them)."""
    amount = loss.payment_minor if loss.payment_minor is not None else paid.amount_minor
    return _Payment(paid.conversion_id, paid.paid_at, amount, True)


class ClawbackLedger(LedgerBase):
    """The ledger's clawback area; a mixin for :class:`~integrations.ledger.sql.SqlLedger`."""

    # -- the inbox --------------------------------------------------------------------

    def clawback_events(
        self, types: Sequence[str], after: tuple[datetime, str] | None, limit: int
    ) -> list[StoredStripeEvent]:
        """Unprocessed Stripe events of ``types``, oldest ``created`` first, after ``after``.

        Args:
            types: the event types wanted.
            after: (created, event id) of the last event already seen in this pass, so
                events left unprocessed (payment not known yet) never block the queue.
            limit: at most this many.
        """
        with self._connect() as conn:
            return read_unprocessed_stripe_events(conn, types, after, limit)

    def close_clawback_events(self, event_ids: Sequence[str], now: datetime) -> int:
        """Mark events processed without applying them (malformed, or given up on)."""
        with self._begin() as conn:
            return mark_stripe_events(conn, event_ids, now)

    # -- applying ---------------------------------------------------------------------

    def apply_payment_loss(self, loss: PaymentLoss, rules: Clawbacks, now: datetime) -> LossApplied:
        """Apply one refund, chargeback or churn to the rewards of its conversions.

        One transaction: the inbox row is locked (a racing run waits, then finds it
        processed); the payment is looked up among the first payments behind
        conversions and among the payments that earned a reward alone (a recurring
        rule's later invoice), and :func:`~domain.clawbacks.rewards_reached` says which
        rewards it reaches (a renewal's refund, its invoice's rewards only); if a
        conversion's rewards are not computed yet, or an affected reward has a payout
        under way, the event waits for the next run (the payout's outcome decides
        whether it is a cancel or a clawback); a payment no conversion or reward has
        yet (a renewal refunded before its reward is computed) waits too. Otherwise
        each reward in the window (measured from its payment: the conversion, or the
        invoice) gets its clawback row and entries, reversals are queued, and the
        event is marked processed.

        Args:
            loss: the parsed event (see ``integrations.payments.stripe_reconcile``).
            rules: the program's ``clawbacks`` section.
            now: when the clawback is recorded.

        Returns:
            What became of the event.

        Raises:
            ClawbackConflict: a reward changed status meanwhile; nothing was written
                and the event stays unprocessed.
        """
        with self._begin() as conn:
            state = conn.execute(
                select(T_STRIPE_EVENTS.c.processed_at)
                .where(T_STRIPE_EVENTS.c.event_id == loss.event_id)
                .with_for_update()
            ).first()
            if state is not None and state.processed_at is not None:
                return LossApplied(loss.event_id, LossStatus.ALREADY_PROCESSED)
            if not applies(rules, loss.cause):
                self._mark_processed(conn, loss.event_id, now)
                return LossApplied(loss.event_id, LossStatus.IGNORED)
            payments = self._payments_of(conn, loss)
            own = rewards_paid_by(conn, loss.payment_refs)
            if not payments and not own:
                return LossApplied(loss.event_id, LossStatus.UNKNOWN_PAYMENT)
            reachable = {
                c: p
                for c, p in payments.items()
                if within_window(p.made_at, loss.occurred_at, rules)
            }
            if any(not p.rewarded for p in reachable.values()):
                # Its rewards are not computed yet: the event waits for them.
                return LossApplied(loss.event_id, LossStatus.DEFERRED)
            rewards = self._rewards_of(conn, sorted(payments))
            reached = rewards_reached(
                loss.cause,
                {r: conv for r, (_, conv) in rewards.items()},
                earned_alone(conn, sorted(rewards)),
                own,
            )
            through: dict[str, tuple[str, _Payment]] = {}
            for reward_id, conversion_id in reached.items():
                if conversion_id is not None:
                    through[reward_id] = (rewards[reward_id][0], payments[conversion_id])
                else:
                    through[reward_id] = (own[reward_id].referrer_id, _own(own[reward_id], loss))
            in_window = {
                r: (referrer, p)
                for r, (referrer, p) in through.items()
                if within_window(p.made_at, loss.occurred_at, rules)
            }
            late = len(through) - len(in_window)
            if not in_window:
                self._mark_processed(conn, loss.event_id, now)
                return LossApplied(loss.event_id, LossStatus.IGNORED, outside_window=late)
            lock_referrers(conn, (referrer for referrer, _ in in_window.values()))
            if self._pending_payouts(conn, sorted(in_window)):
                return LossApplied(loss.event_id, LossStatus.DEFERRED, outside_window=late)
            positions = self._positions(conn, sorted(in_window), loss.payment_key)
            decisions: list[ClawbackDecision] = []
            reversals = 0
            for reward_id in sorted(in_window):
                position = positions[reward_id]
                payment = in_window[reward_id][1]
                decision = decide_clawback(position, loss, payment.amount_minor)
                reversals += self._book(conn, loss, position, decision, payment, now)
                decisions.append(decision)
            self._mark_processed(conn, loss.event_id, now)
        return LossApplied(
            loss.event_id, LossStatus.APPLIED, tuple(decisions), reversals, outside_window=late
        )

    def _mark_processed(self, conn: Connection, event_id: str, now: datetime) -> None:
        conn.execute(
            update(T_STRIPE_EVENTS)
            .where(T_STRIPE_EVENTS.c.event_id == event_id, T_STRIPE_EVENTS.c.processed_at.is_(None))
            .values(processed_at=now)
        )

    def _payments_of(self, conn: Connection, loss: PaymentLoss) -> dict[str, _Payment]:
        """Conversion id -> the payment ``loss`` concerns (its amount, the conversion's
        time), through ``conversion_payments`` (by payment ids; by customer for churn)."""
        matches: list[Any] = []
        if loss.payment_refs:
            matches.append(T_CONVERSION_PAYMENTS.c.payment_ref.in_(list(loss.payment_refs)))
        if loss.cause is ClawbackCause.CHURN and loss.customer_ref:
            matches.append(T_CONVERSION_PAYMENTS.c.customer_ref == loss.customer_ref)
        if not matches:
            return {}
        rows = conn.execute(
            select(
                T_CONVERSION_PAYMENTS.c.conversion_id,
                T_CONVERSION_PAYMENTS.c.amount_minor,
                T_CONVERSIONS.c.occurred_at,
                T_CONVERSIONS.c.rewarded_at,
            )
            .join(
                T_CONVERSIONS,
                T_CONVERSIONS.c.conversion_id == T_CONVERSION_PAYMENTS.c.conversion_id,
            )
            .where(T_CONVERSION_PAYMENTS.c.provider == STRIPE, or_(*matches))
            .order_by(T_CONVERSION_PAYMENTS.c.conversion_id, T_CONVERSION_PAYMENTS.c.payment_ref)
        ).all()
        found: dict[str, _Payment] = {}
        for r in rows:
            # Aliases of one payment (its charge, intent, invoice) share its amount; the
            # event's own figure wins when it has one.
            amount = loss.payment_minor if loss.payment_minor is not None else int(r.amount_minor)
            known = found.get(r.conversion_id)
            if known is None or amount > known.amount_minor:
                found[r.conversion_id] = _Payment(
                    r.conversion_id, r.occurred_at, amount, r.rewarded_at is not None
                )
        return found

    def _rewards_of(
        self, conn: Connection, conversion_ids: Sequence[str]
    ) -> dict[str, tuple[str, str]]:
        """Reward id -> (referrer id, conversion id) for the rewards of the conversions."""
        found: dict[str, tuple[str, str]] = {}
        for chunk in chunks(conversion_ids):
            for reward_id, referrer_id, conversion_id in conn.execute(
                select(
                    T_REWARDS.c.reward_id, T_REWARDS.c.referrer_id, T_REWARDS.c.conversion_id
                ).where(T_REWARDS.c.conversion_id.in_(chunk))
            ):
                found[reward_id] = (referrer_id, conversion_id)
        return found

    def _pending_payouts(self, conn: Connection, reward_ids: Sequence[str]) -> bool:
        for chunk in chunks(reward_ids):
            if conn.execute(
                select(T_PAYOUTS.c.payout_id)
                .where(T_PAYOUTS.c.reward_id.in_(chunk), T_PAYOUTS.c.status == "pending")
                .limit(1)
            ).first():
                return True
        return False

    def _positions(
        self, conn: Connection, reward_ids: Sequence[str], payment_key: str
    ) -> dict[str, RewardPosition]:
        """Each reward's position: status, balance, what was settled and clawed back."""
        positions: dict[str, RewardPosition] = {}
        for chunk in chunks(reward_ids):
            statuses = {
                r.reward_id: (RewardStatus(r.status), r.currency)
                for r in conn.execute(
                    select(T_REWARDS.c.reward_id, T_REWARDS.c.status, T_REWARDS.c.currency).where(
                        T_REWARDS.c.reward_id.in_(chunk)
                    )
                )
            }
            sums: dict[str, dict[str, tuple[int, int]]] = {}
            negative = case(
                (T_LEDGER_ENTRIES.c.amount_minor < 0, T_LEDGER_ENTRIES.c.amount_minor), else_=0
            )
            for reward_id, kind, total, out in conn.execute(
                select(
                    T_LEDGER_ENTRIES.c.reward_id,
                    T_LEDGER_ENTRIES.c.kind,
                    func.sum(T_LEDGER_ENTRIES.c.amount_minor),
                    func.sum(negative),
                )
                .where(T_LEDGER_ENTRIES.c.reward_id.in_(chunk))
                .group_by(T_LEDGER_ENTRIES.c.reward_id, T_LEDGER_ENTRIES.c.kind)
            ):
                sums.setdefault(reward_id, {})[kind] = (int(total), int(out))
            payment: dict[str, tuple[int, int, int]] = {}
            for reward_id, clawed, refunded, disputed in conn.execute(
                select(
                    T_CLAWBACKS.c.reward_id,
                    func.sum(T_CLAWBACKS.c.clawed_back_minor),
                    func.max(T_CLAWBACKS.c.refunded_minor),
                    func.max(T_CLAWBACKS.c.disputed_minor),
                )
                .where(T_CLAWBACKS.c.reward_id.in_(chunk), T_CLAWBACKS.c.payment_key == payment_key)
                .group_by(T_CLAWBACKS.c.reward_id)
            ):
                payment[reward_id] = (int(clawed), int(refunded), int(disputed))
            for reward_id, (status, currency) in statuses.items():
                s = sums.get(reward_id, {})
                # Settled: paid out, or given to settle a debt (the negative netted part).
                settled = -(s.get("paid", (0, 0))[0] + s.get("netted", (0, 0))[1])
                clawed_total = -s.get("clawed_back", (0, 0))[0]
                payment_clawed, refunded, disputed = payment.get(reward_id, (0, 0, 0))
                positions[reward_id] = RewardPosition(
                    reward_id=reward_id,
                    status=status,
                    balance=Money(sum(total for total, _ in s.values()), currency),
                    settled=Money(settled, currency),
                    clawed=Money(clawed_total, currency),
                    payment_clawed=Money(payment_clawed, currency),
                    payment_refunded=refunded,
                    payment_disputed=disputed,
                )
        return positions

    def _book(
        self,
        conn: Connection,
        loss: PaymentLoss,
        position: RewardPosition,
        decision: ClawbackDecision,
        payment: _Payment,
        now: datetime,
    ) -> int:
        """Write one reward's clawback row, entries, status and reversal; reversals made."""
        reward_id = position.reward_id
        clawback_id = derived_id("clawback", reward_id, loss.event_id)
        currency = position.balance.currency
        inserted = self._insert_ignore(
            conn,
            T_CLAWBACKS,
            [
                {
                    "clawback_id": clawback_id,
                    "reward_id": reward_id,
                    "event_id": loss.event_id,
                    "cause": loss.cause.value,
                    "payment_key": loss.payment_key[:128],
                    "payment_minor": max(payment.amount_minor, 0),
                    "refunded_minor": decision.refunded_minor,
                    "disputed_minor": decision.disputed_minor,
                    "cancelled_minor": decision.cancel.amount_minor,
                    "clawed_back_minor": decision.claw_back.amount_minor,
                    "currency": currency,
                    "status_before": position.status.value,
                    "occurred_at": loss.occurred_at,
                    "created_at": now,
                }
            ],
            T_CLAWBACKS.c.clawback_id,
        )
        if not inserted:
            return 0  # applied before (the event lock makes this a safety net only)
        self._entry(
            conn, reward_id, "cancelled", -decision.cancel.amount_minor, currency, clawback_id, now
        )
        self._entry(
            conn,
            reward_id,
            "clawed_back",
            -decision.claw_back.amount_minor,
            currency,
            clawback_id,
            now,
        )
        self._notify_clawback(conn, loss, reward_id, clawback_id, decision, now)
        if decision.cancels_reward:
            moved = conn.execute(
                update(T_REWARDS)
                .where(
                    T_REWARDS.c.reward_id == reward_id,
                    T_REWARDS.c.status == position.status.value,
                )
                .values(status=RewardStatus.CANCELLED.value, updated_at=now)
            ).rowcount
            if moved != 1:
                raise ClawbackConflict(f"reward {reward_id} changed status during a clawback")
        if decision.claw_back.is_zero:
            return 0
        return self._queue_reversal(conn, loss, reward_id, clawback_id, decision.claw_back, now)

    def _notify_clawback(
        self,
        conn: Connection,
        loss: PaymentLoss,
        reward_id: str,
        clawback_id: str,
        decision: ClawbackDecision,
        now: datetime,
    ) -> None:
        """Tell the referrer what the referee's refund, dispute or churn took back, and
        why: a reward that shrinks or is taken back unexplained costs the program trust."""
        taken = decision.cancel.amount_minor + decision.claw_back.amount_minor
        if taken <= 0:
            return
        referrer_id = conn.execute(
            select(T_REWARDS.c.referrer_id).where(T_REWARDS.c.reward_id == reward_id)
        ).scalar_one()
        self._queue_notifications(
            conn,
            [
                {
                    "notification_id": derived_id("notice", clawback_id),
                    "contact_id": referrer_id,
                    "kind": "reward_clawed_back",
                    "reward_id": reward_id,
                    "data": {
                        "amount": Money(taken, decision.cancel.currency).format(),
                        "cause": _CAUSE_TEXT[loss.cause],
                        "after_payout": "yes" if decision.claw_back.amount_minor else "no",
                    },
                }
            ],
            now,
        )

    def _queue_reversal(
        self,
        conn: Connection,
        loss: PaymentLoss,
        reward_id: str,
        clawback_id: str,
        claw_back: Money,
        now: datetime,
    ) -> int:
        payout = conn.execute(
            select(
                T_PAYOUTS.c.payout_id,
                T_PAYOUTS.c.rail,
                T_PAYOUTS.c.destination,
                T_PAYOUTS.c.provider_ref,
                T_PAYOUTS.c.amount_minor,
                T_PAYOUTS.c.currency,
            ).where(T_PAYOUTS.c.reward_id == reward_id, T_PAYOUTS.c.status == "succeeded")
        ).first()
        if payout is None or payout.currency != claw_back.currency:
            return 0  # settled by netting alone: the debt is netted, nothing to reverse
        already = conn.execute(
            select(func.coalesce(func.sum(T_REVERSALS.c.amount_minor), 0)).where(
                T_REVERSALS.c.payout_id == payout.payout_id,
                T_REVERSALS.c.status.in_(["pending", "succeeded"]),
            )
        ).scalar_one()
        amount = recoverable(
            claw_back,
            Money(int(payout.amount_minor), payout.currency),
            Money(int(already), payout.currency),
        )
        if amount.is_zero:
            return 0
        return len(
            self._insert_ignore(
                conn,
                T_REVERSALS,
                [
                    {
                        "reversal_id": derived_id("reversal", clawback_id),
                        "clawback_id": clawback_id,
                        "reward_id": reward_id,
                        "payout_id": payout.payout_id,
                        "rail": payout.rail,
                        "destination": payout.destination,
                        "payout_ref": payout.provider_ref,
                        "amount_minor": amount.amount_minor,
                        "currency": amount.currency,
                        "idempotency_key": ReversalInstruction.key_for(reward_id, loss.event_id),
                        "status": "pending",
                        "tries": 0,
                        "created_at": now,
                        "updated_at": now,
                    }
                ],
                T_REVERSALS.c.reversal_id,
            )
        )

    # -- reversals ----------------------------------------------------------------------

    def pending_reversals(self, limit: int | None = None) -> list[ReversalInstruction]:
        """Reversals stored but not settled: new ones and those a crash left behind."""
        stmt = (
            select(T_REVERSALS)
            .where(T_REVERSALS.c.status == "pending")
            .order_by(T_REVERSALS.c.created_at, T_REVERSALS.c.reversal_id)
        )
        if limit is not None:
            stmt = stmt.limit(limit)
        with self._connect() as conn:
            return [
                ReversalInstruction(
                    reversal_id=r["reversal_id"],
                    reward_id=r["reward_id"],
                    payout_id=r["payout_id"],
                    amount=Money(r["amount_minor"], r["currency"]),
                    rail=PayoutRailKind(r["rail"]),
                    idempotency_key=r["idempotency_key"],
                    destination=r["destination"],
                    payout_ref=r["payout_ref"],
                    key_created_at=r["created_at"],
                )
                for r in conn.execute(stmt).mappings()
            ]

    def record_reversal_results(
        self, results: Sequence[ReversalResult], now: datetime
    ) -> dict[str, int]:
        """Settle reversals: a success books ``reversed`` (+amount recovered).

        Conditional on the reversal still being pending, so settling twice books
        nothing twice. Insufficient funds (``unrecovered``) and refusals (``failed``)
        leave the debt on the reward, to be netted from the referrer's next payout.

        Returns:
            How many reversals became succeeded, unrecovered or failed, and how many
            stay pending to be sent again (``retry_later``).
        """
        counts: dict[str, int] = {}
        with self._begin() as conn:
            for result in results:
                status = _REVERSAL_STATUS[result.outcome]
                row = conn.execute(
                    update(T_REVERSALS)
                    .where(
                        T_REVERSALS.c.reversal_id == result.reversal_id,
                        T_REVERSALS.c.status == "pending",
                    )
                    .values(
                        status=status,
                        provider_ref=result.provider_ref,
                        error=(result.error or "")[:512] or None,
                        tries=T_REVERSALS.c.tries + 1,
                        updated_at=now,
                    )
                    .returning(
                        T_REVERSALS.c.reward_id, T_REVERSALS.c.amount_minor, T_REVERSALS.c.currency
                    )
                ).first()
                if row is None:
                    continue
                key = "retry_later" if status == "pending" else status
                counts[key] = counts.get(key, 0) + 1
                if result.outcome is ReversalOutcome.SUCCEEDED:
                    self._entry(
                        conn,
                        row.reward_id,
                        "reversed",
                        int(row.amount_minor),
                        row.currency,
                        result.reversal_id,
                        now,
                    )
        return counts

    # -- reading ------------------------------------------------------------------------

    def debts(self, referrer_ids: Iterable[str]) -> dict[str, Money]:
        """What each referrer owes and will have netted from their next payout."""
        with self._connect() as conn:
            owed = nettable_debts(conn, referrer_ids)
        totals: dict[str, Money] = {}
        for referrer, parts in owed.items():
            for _, amount in parts:
                previous = totals.get(referrer)
                totals[referrer] = amount if previous is None else previous + amount
        return totals

    def clawbacks_of(self, reward_ids: Iterable[str]) -> list[dict[str, Any]]:
        """The clawback rows of rewards, oldest first (ids, causes and amounts)."""
        ids = sorted(set(reward_ids))
        found: list[dict[str, Any]] = []
        with self._connect() as conn:
            for chunk in chunks(ids):
                found += [
                    dict(r)
                    for r in conn.execute(
                        select(T_CLAWBACKS)
                        .where(T_CLAWBACKS.c.reward_id.in_(chunk))
                        .order_by(T_CLAWBACKS.c.occurred_at, T_CLAWBACKS.c.clawback_id)
                    ).mappings()
                ]
        return found

    # -- approvals of cancelled rewards ---------------------------------------------------

    def waiting_requests_of_closed_rewards(self, limit: int) -> list[tuple[str, str, str | None]]:
        """Approval requests still waiting for a reward that was cancelled meanwhile:
        (request id, reward id, flow run id)."""
        with self._connect() as conn:
            return [
                (r.request_id, r.reward_id, r.flow_run_id)
                for r in conn.execute(
                    select(
                        T_APPROVAL_REQUESTS.c.request_id,
                        T_APPROVAL_REQUESTS.c.reward_id,
                        T_APPROVAL_REQUESTS.c.flow_run_id,
                    )
                    .join(T_REWARDS, T_REWARDS.c.reward_id == T_APPROVAL_REQUESTS.c.reward_id)
                    .where(
                        T_APPROVAL_REQUESTS.c.status == "waiting",
                        T_REWARDS.c.status == RewardStatus.CANCELLED.value,
                    )
                    .order_by(T_APPROVAL_REQUESTS.c.created_at, T_APPROVAL_REQUESTS.c.request_id)
                    .limit(limit)
                )
            ]

    def close_approval_requests(self, request_ids: Sequence[str], now: datetime) -> int:
        """Close waiting requests whose reward needs no decision any more."""
        closed = 0
        with self._begin() as conn:
            for chunk in chunks(request_ids):
                closed += conn.execute(
                    update(T_APPROVAL_REQUESTS)
                    .where(
                        T_APPROVAL_REQUESTS.c.request_id.in_(chunk),
                        T_APPROVAL_REQUESTS.c.status == "waiting",
                    )
                    .values(status="expired", closed_at=now)
                ).rowcount
        return closed

"""The clawback area of the ledger: the ``clawbacks`` and ``reversals`` stores.

:class:`SqlClawbackStore` and :class:`SqlReversalStore` are small reads and writes; the
rules (which rewards a loss reaches, the window, deferral, cancel or claw back, how
much, what to reverse) are :mod:`domain.clawbacks`, and applying one loss is the use
case ``tasks.use_cases.clawbacks.apply_payment_loss``, in one unit of work.

The payment an event names reaches the rewards it earned: a conversion's first payment
its rewards, a later invoice the recurring rewards that invoice earned
(``reward_payments``, see :mod:`integrations.ledger.reward_payments`); churn reaches
every reward of the conversion. What it books, per reward reached:

* an **unpaid** reward: a ``cancelled`` entry for what is left of it, and its status
  moves to cancelled;
* a **paid** reward: a ``clawed_back`` entry (-amount; the balance goes negative: the
  referrer owes it) and, when a payout can be reversed, a row in the ``reversals``
  outbox with a fixed idempotency key (``reward:<id>:reversal:<event id>``), committed
  before the provider is called. The provider's answer is booked by
  :meth:`SqlReversalStore.record_results`: a success books ``reversed``
  (+amount recovered); insufficient funds (or a refusal) leaves the debt, which
  :func:`nettable_debts` lets the referrer's next payout net.

Exactly once: each event is applied in one transaction that also marks it processed,
after locking its inbox row; a clawback row per (reward, event) is unique; entries are
unique per (reward, kind, ref) with the clawback or reversal id as ``ref``.

On PostgreSQL, applying an event and preparing a payout (which nets debts) take a
transaction-scoped advisory lock per referrer (:func:`lock_referrers`), always in the
same order, so a payout never starts for a reward being cancelled, and a debt is never
netted twice. SQLite serializes writers anyway (``BEGIN IMMEDIATE``).

The module functions taking a connection (:func:`lock_referrers`, :func:`referrers_of`,
:func:`live_payouts`, :func:`nettable_debts`, :func:`book_netting`,
:func:`settle_by_netting`) are shared with the payouts' code, inside its transaction.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, case, func, or_, select, text, update

from domain.clawbacks import (
    Clawback,
    ClawbackCause,
    ClawbackConflict,
    ClawbackNotice,
    ConversionPayment,
    LossApplied,
    LossStatus,
    PaidPayout,
    PaymentLoss,
    ReversalInstruction,
    ReversalOutcome,
    ReversalResult,
    RewardPayment,
    RewardPosition,
)
from domain.models import PayoutRailKind, RewardStatus
from domain.money import Money
from integrations.ledger.base import (
    LedgerBase,
    chunks,
)
from integrations.ledger.reward_payments import earned_alone, rewards_paid_by
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

# Kept importable from here (they were defined here before the rules moved to the domain).
__all__ = ["ClawbackConflict", "LossApplied", "LossStatus"]

_LIVE_PAYOUT = ("pending", "succeeded")
_REVERSAL_STATUS = {
    ReversalOutcome.SUCCEEDED: "succeeded",
    ReversalOutcome.INSUFFICIENT_FUNDS: "unrecovered",
    ReversalOutcome.FAILED: "failed",
    ReversalOutcome.RETRYABLE: "pending",
}


def _lock_key(referrer_id: str) -> int:
    digest = hashlib.sha256(f"referrals:referrer:{referrer_id}".encode()).digest()
    return int.from_bytes(digest[:8], "big", signed=True)


def lock_referrers(conn: Connection, referrer_ids: Iterable[str]) -> None:
    """Serialize, per referrer, the writes that read a referrer's debts and payouts.

    PostgreSQL: transaction-scoped advisory locks, taken in one global order (by key)
    so two transactions never wait on each other in a cycle. SQLite needs none: its
    writers are serialized by ``BEGIN IMMEDIATE``.
    """
    if conn.dialect.name != "postgresql":
        return
    for key in sorted({_lock_key(r) for r in referrer_ids}):
        conn.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": key})


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


class SqlClawbackStore(LedgerBase):
    """The ``clawbacks`` store (:class:`domain.stores.clawbacks.ClawbackStore`) in SQL.

    Args:
        engine: the ledger's engine.
        conn: the unit of work's connection, when bound to one.
    """

    # -- the inbox --------------------------------------------------------------------

    def events(
        self, types: Sequence[str], after: tuple[datetime, str] | None, limit: int
    ) -> list[StoredStripeEvent]:
        """Unprocessed Stripe events of ``types``, oldest ``created`` first, after ``after``."""
        with self._connect() as conn:
            return read_unprocessed_stripe_events(conn, types, after, limit)

    def lock_event(self, event_id: str) -> bool:
        """Lock the event's inbox row (a racing run waits, then finds it processed);
        whether it is still to be processed."""
        with self._begin() as conn:
            state = conn.execute(
                select(T_STRIPE_EVENTS.c.processed_at)
                .where(T_STRIPE_EVENTS.c.event_id == event_id)
                .with_for_update()
            ).first()
        return state is None or state.processed_at is None

    def close_events(self, event_ids: Sequence[str], now: datetime) -> int:
        """Mark events processed; how many were not already."""
        with self._begin() as conn:
            return mark_stripe_events(conn, event_ids, now)

    # -- the facts a loss is decided on ------------------------------------------------

    def conversion_payments(self, loss: PaymentLoss) -> list[ConversionPayment]:
        """The first payments behind conversions that ``loss`` names, through
        ``conversion_payments`` (by payment ids; by customer too for churn)."""
        matches: list[Any] = []
        if loss.payment_refs:
            matches.append(T_CONVERSION_PAYMENTS.c.payment_ref.in_(list(loss.payment_refs)))
        if loss.cause is ClawbackCause.CHURN and loss.customer_ref:
            matches.append(T_CONVERSION_PAYMENTS.c.customer_ref == loss.customer_ref)
        if not matches:
            return []
        with self._connect() as conn:
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
                .order_by(
                    T_CONVERSION_PAYMENTS.c.conversion_id, T_CONVERSION_PAYMENTS.c.payment_ref
                )
            ).all()
        return [
            ConversionPayment(
                r.conversion_id, int(r.amount_minor), r.occurred_at, r.rewarded_at is not None
            )
            for r in rows
        ]

    def own_payments(self, payment_refs: Sequence[str]) -> dict[str, RewardPayment]:
        """Reward id -> its own payment, for the rewards a payment in ``payment_refs``
        earned by itself."""
        with self._connect() as conn:
            found = rewards_paid_by(conn, payment_refs)
        return {
            reward_id: RewardPayment(
                p.reward_id, p.referrer_id, p.conversion_id, p.amount_minor, p.paid_at
            )
            for reward_id, p in found.items()
        }

    def rewards_of(self, conversion_ids: Sequence[str]) -> dict[str, tuple[str, str]]:
        """Reward id -> (referrer id, conversion id) for the rewards of the conversions."""
        found: dict[str, tuple[str, str]] = {}
        with self._connect() as conn:
            for chunk in chunks(conversion_ids):
                for reward_id, referrer_id, conversion_id in conn.execute(
                    select(
                        T_REWARDS.c.reward_id, T_REWARDS.c.referrer_id, T_REWARDS.c.conversion_id
                    ).where(T_REWARDS.c.conversion_id.in_(chunk))
                ):
                    found[reward_id] = (referrer_id, conversion_id)
        return found

    def earned_alone(self, reward_ids: Sequence[str]) -> set[str]:
        """Those of ``reward_ids`` that a payment of their own earned."""
        with self._connect() as conn:
            return earned_alone(conn, reward_ids)

    def lock_referrers(self, referrer_ids: Iterable[str]) -> None:
        """Lock the referrers until the unit of work ends (see :func:`lock_referrers`)."""
        with self._begin() as conn:
            lock_referrers(conn, referrer_ids)

    def payout_pending(self, reward_ids: Sequence[str]) -> bool:
        """Whether any of the rewards has a payout under way."""
        with self._connect() as conn:
            for chunk in chunks(reward_ids):
                if conn.execute(
                    select(T_PAYOUTS.c.payout_id)
                    .where(T_PAYOUTS.c.reward_id.in_(chunk), T_PAYOUTS.c.status == "pending")
                    .limit(1)
                ).first():
                    return True
        return False

    def positions(self, reward_ids: Sequence[str], payment_key: str) -> dict[str, RewardPosition]:
        """Each reward's position: status, balance, what was settled and clawed back."""
        positions: dict[str, RewardPosition] = {}
        with self._connect() as conn:
            for chunk in chunks(reward_ids):
                positions.update(_positions(conn, chunk, payment_key))
        return positions

    # -- what a loss writes ------------------------------------------------------------

    def book(self, clawback: Clawback, now: datetime) -> bool:
        """Write the clawback row and its ``cancelled`` and ``clawed_back`` entries;
        False when the row existed (the event lock makes this a safety net only)."""
        currency = clawback.cancel.currency
        with self._begin() as conn:
            inserted = self._insert_ignore(
                conn,
                T_CLAWBACKS,
                [
                    {
                        "clawback_id": clawback.clawback_id,
                        "reward_id": clawback.reward_id,
                        "event_id": clawback.event_id,
                        "cause": clawback.cause.value,
                        "payment_key": clawback.payment_key[:128],
                        "payment_minor": clawback.payment_minor,
                        "refunded_minor": clawback.refunded_minor,
                        "disputed_minor": clawback.disputed_minor,
                        "cancelled_minor": clawback.cancel.amount_minor,
                        "clawed_back_minor": clawback.claw_back.amount_minor,
                        "currency": currency,
                        "status_before": clawback.status_before.value,
                        "occurred_at": clawback.occurred_at,
                        "created_at": now,
                    }
                ],
                T_CLAWBACKS.c.clawback_id,
            )
            if not inserted:
                return False
            for kind, amount in (
                ("cancelled", clawback.cancel),
                ("clawed_back", clawback.claw_back),
            ):
                self._entry(
                    conn,
                    clawback.reward_id,
                    kind,
                    -amount.amount_minor,
                    currency,
                    clawback.clawback_id,
                    now,
                )
        return True

    def cancel_reward(self, reward_id: str, status: RewardStatus, now: datetime) -> bool:
        """Move a reward from ``status`` to cancelled; False if its status changed."""
        with self._begin() as conn:
            moved = conn.execute(
                update(T_REWARDS)
                .where(T_REWARDS.c.reward_id == reward_id, T_REWARDS.c.status == status.value)
                .values(status=RewardStatus.CANCELLED.value, updated_at=now)
            ).rowcount
        return bool(moved == 1)

    def notify(self, notice: ClawbackNotice, now: datetime) -> None:
        """Queue the referrer's ``reward_clawed_back`` notification."""
        with self._begin() as conn:
            self._queue_notifications(
                conn,
                [
                    {
                        "notification_id": notice.notification_id,
                        "contact_id": notice.contact_id,
                        "kind": "reward_clawed_back",
                        "reward_id": notice.reward_id,
                        "data": dict(notice.data),
                    }
                ],
                now,
            )

    # -- reading ------------------------------------------------------------------------

    def of_rewards(self, reward_ids: Iterable[str]) -> list[dict[str, Any]]:
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


def _positions(
    conn: Connection, reward_ids: Sequence[str], payment_key: str
) -> dict[str, RewardPosition]:
    statuses = {
        r.reward_id: (RewardStatus(r.status), r.currency)
        for r in conn.execute(
            select(T_REWARDS.c.reward_id, T_REWARDS.c.status, T_REWARDS.c.currency).where(
                T_REWARDS.c.reward_id.in_(reward_ids)
            )
        )
    }
    sums: dict[str, dict[str, tuple[int, int]]] = {}
    negative = case((T_LEDGER_ENTRIES.c.amount_minor < 0, T_LEDGER_ENTRIES.c.amount_minor), else_=0)
    for reward_id, kind, total, out in conn.execute(
        select(
            T_LEDGER_ENTRIES.c.reward_id,
            T_LEDGER_ENTRIES.c.kind,
            func.sum(T_LEDGER_ENTRIES.c.amount_minor),
            func.sum(negative),
        )
        .where(T_LEDGER_ENTRIES.c.reward_id.in_(reward_ids))
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
        .where(T_CLAWBACKS.c.reward_id.in_(reward_ids), T_CLAWBACKS.c.payment_key == payment_key)
        .group_by(T_CLAWBACKS.c.reward_id)
    ):
        payment[reward_id] = (int(clawed), int(refunded), int(disputed))
    positions: dict[str, RewardPosition] = {}
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


class SqlReversalStore(LedgerBase):
    """The ``reversals`` store (:class:`domain.stores.clawbacks.ReversalStore`) in SQL.

    Args:
        engine: the ledger's engine.
        conn: the unit of work's connection, when bound to one.
    """

    def payout_of(self, reward_id: str) -> PaidPayout | None:
        """The succeeded payout of the reward, and the reversals pending or succeeded
        against it."""
        with self._connect() as conn:
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
            if payout is None:
                return None
            already = conn.execute(
                select(func.coalesce(func.sum(T_REVERSALS.c.amount_minor), 0)).where(
                    T_REVERSALS.c.payout_id == payout.payout_id,
                    T_REVERSALS.c.status.in_(["pending", "succeeded"]),
                )
            ).scalar_one()
        return PaidPayout(
            payout_id=payout.payout_id,
            rail=PayoutRailKind(payout.rail),
            destination=payout.destination,
            provider_ref=payout.provider_ref,
            amount=Money(int(payout.amount_minor), payout.currency),
            reversed=Money(int(already), payout.currency),
        )

    def queue(self, instruction: ReversalInstruction, clawback_id: str, now: datetime) -> int:
        """Store a pending reversal with its idempotency key; 1 if new, else 0."""
        with self._begin() as conn:
            return len(
                self._insert_ignore(
                    conn,
                    T_REVERSALS,
                    [
                        {
                            "reversal_id": instruction.reversal_id,
                            "clawback_id": clawback_id,
                            "reward_id": instruction.reward_id,
                            "payout_id": instruction.payout_id,
                            "rail": instruction.rail.value,
                            "destination": instruction.destination,
                            "payout_ref": instruction.payout_ref,
                            "amount_minor": instruction.amount.amount_minor,
                            "currency": instruction.amount.currency,
                            "idempotency_key": instruction.idempotency_key,
                            "status": "pending",
                            "tries": 0,
                            "created_at": now,
                            "updated_at": now,
                        }
                    ],
                    T_REVERSALS.c.reversal_id,
                )
            )

    def pending(self, limit: int | None = None) -> list[ReversalInstruction]:
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

    def record_results(self, results: Sequence[ReversalResult], now: datetime) -> dict[str, int]:
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


class ClosedRewardApprovalsLedger(LedgerBase):
    """Approval requests of rewards a clawback cancelled; a mixin of ``SqlLedger`` until
    the approvals area takes these two methods into its store."""

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

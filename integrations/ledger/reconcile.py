"""The reconciliation area of the ledger: what the ledger says Stripe moved, per reward.

:class:`SqlReconcileStore` is the ``reconcile`` store of
:class:`~integrations.ledger.uow.SqlStores`. It only reads: the
payouts and reversals made on the Stripe rails (in every status, so a mismatch can say
whether the ledger's side is pending or failed), and the Stripe customers whose balance
transactions the reconciliation must list. ``domain.clawbacks.compare_movements``
compares them with what :class:`~domain.clawbacks.PaymentRecords` reads from Stripe.
"""

from __future__ import annotations

from sqlalchemy import select

from domain.clawbacks import Movement, MovementKind
from domain.models import PayoutRailKind
from domain.money import Money
from integrations.ledger.base import (
    LedgerBase,
)
from integrations.ledger.tables import (
    T_CONTACTS,
    T_PAYOUTS,
    T_REVERSALS,
)

STRIPE_RAILS = (PayoutRailKind.STRIPE_TRANSFER.value, PayoutRailKind.STRIPE_BALANCE.value)


class SqlReconcileStore(LedgerBase):
    """The ledger's side of the reconciliation (:class:`domain.stores.ReconcileStore`)."""

    def stripe_movements(self) -> list[Movement]:
        """Every payout and reversal on a Stripe rail, with its status and reference.

        Payouts: ``ref`` is the transfer or balance transaction id stored when the
        payout succeeded (None before). Reversals: the reversal or debit id.
        """
        with self._connect() as conn:
            payouts = [
                Movement(
                    MovementKind.PAYOUT,
                    r.reward_id,
                    r.provider_ref,
                    Money(int(r.amount_minor), r.currency),
                    ledger_id=r.payout_id,
                    status=r.status,
                )
                for r in conn.execute(
                    select(
                        T_PAYOUTS.c.payout_id,
                        T_PAYOUTS.c.reward_id,
                        T_PAYOUTS.c.provider_ref,
                        T_PAYOUTS.c.amount_minor,
                        T_PAYOUTS.c.currency,
                        T_PAYOUTS.c.status,
                    )
                    .where(T_PAYOUTS.c.rail.in_(STRIPE_RAILS))
                    .order_by(T_PAYOUTS.c.reward_id, T_PAYOUTS.c.attempt)
                )
            ]
            reversals = [
                Movement(
                    MovementKind.REVERSAL,
                    r.reward_id,
                    r.provider_ref,
                    Money(int(r.amount_minor), r.currency),
                    ledger_id=r.reversal_id,
                    status=r.status,
                )
                for r in conn.execute(
                    select(
                        T_REVERSALS.c.reversal_id,
                        T_REVERSALS.c.reward_id,
                        T_REVERSALS.c.provider_ref,
                        T_REVERSALS.c.amount_minor,
                        T_REVERSALS.c.currency,
                        T_REVERSALS.c.status,
                    )
                    .where(T_REVERSALS.c.rail.in_(STRIPE_RAILS))
                    .order_by(T_REVERSALS.c.reward_id, T_REVERSALS.c.created_at)
                )
            ]
        return payouts + reversals

    def stripe_customer_ids(self) -> list[str]:
        """Customers that balance credits went (or may have gone) to: the destinations
        of balance-rail payouts and every contact's Stripe customer id."""
        with self._connect() as conn:
            paid = set(
                conn.execute(
                    select(T_PAYOUTS.c.destination).where(
                        T_PAYOUTS.c.rail == PayoutRailKind.STRIPE_BALANCE.value,
                        T_PAYOUTS.c.destination.is_not(None),
                    )
                ).scalars()
            )
            known = set(
                conn.execute(
                    select(T_CONTACTS.c.stripe_customer_id).where(
                        T_CONTACTS.c.stripe_customer_id.is_not(None)
                    )
                ).scalars()
            )
        return sorted(c for c in paid | known if c)

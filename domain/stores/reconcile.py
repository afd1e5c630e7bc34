"""The reconciliation's port: what the ledger says Stripe moved, per reward."""

from __future__ import annotations

from typing import Protocol

from domain.clawbacks import Movement


class ReconcileStore(Protocol):
    """The ledger's side of the reconciliation with Stripe (reads only)."""

    def stripe_movements(self) -> list[Movement]:
        """Every payout and reversal on a Stripe rail, with its status and reference.

        Returns:
            Payouts (``ref``: the transfer or balance transaction id stored when the
            payout succeeded, None before), then reversals (the reversal or debit id).
        """
        ...

    def stripe_customer_ids(self) -> list[str]:
        """The Stripe customers balance credits went (or may have gone) to.

        Returns:
            The destinations of balance-rail payouts and every contact's Stripe
            customer id, sorted, without repeats.
        """
        ...


class LedgerWithReconcile(Protocol):
    """What the reconciliation needs of the ledger (read-only: any ``Stores`` is one)."""

    @property
    def reconcile(self) -> ReconcileStore: ...

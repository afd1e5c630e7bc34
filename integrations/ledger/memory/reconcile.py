"""The reconciliation's store in memory: movements and customer ids a test sets."""

from __future__ import annotations

from typing import Any

from domain.clawbacks import Movement


class InMemoryReconcileStore:
    """:class:`domain.stores.ReconcileStore` over lists a test fills.

    Attributes:
        movements: the ledger's payouts and reversals on the Stripe rails.
        customer_ids: the Stripe customers balance credits went to.
        calls: the methods called, in order, with their arguments.
    """

    def __init__(self) -> None:
        self.movements: list[Movement] = []
        self.customer_ids: set[str] = set()
        self.calls: list[tuple[str, tuple[Any, ...]]] = []

    def stripe_movements(self) -> list[Movement]:
        self.calls.append(("stripe_movements", ()))
        return list(self.movements)

    def stripe_customer_ids(self) -> list[str]:
        self.calls.append(("stripe_customer_ids", ()))
        return sorted(c for c in self.customer_ids if c)

"""The reconciliation task on the in-memory ledger: no SQL, only the store's answers."""

from __future__ import annotations

from collections.abc import Sequence

import pytest

from domain.clawbacks import MismatchKind, Movement, MovementKind
from domain.errors import ConfigError
from domain.money import Money
from integrations.ledger.memory import InMemoryLedger
from tasks.reconcile import reconcile_payouts
from tests.conftest import NOW


def _payout(reward_id: str, ref: str | None) -> Movement:
    return Movement(
        MovementKind.PAYOUT,
        reward_id,
        ref,
        Money(2500, "EUR"),
        ledger_id=f"payout:{reward_id}",
        status="succeeded",
    )


class _Stripe:
    def __init__(self, movements: list[Movement]) -> None:
        self._movements = movements
        self.asked: list[list[str]] = []

    def movements(self, customer_ids: Sequence[str]) -> list[Movement]:
        self.asked.append(list(customer_ids))
        return self._movements


def test_a_payout_the_ledger_settled_but_stripe_lacks_is_missing_at_stripe() -> None:
    memory = InMemoryLedger()
    memory.reconcile.movements = [_payout("R1", "tr_1")]
    memory.reconcile.customer_ids = {"cus_2", "cus_1"}
    stripe = _Stripe([])

    (mismatch,) = reconcile_payouts.fn(memory, stripe, NOW)

    assert (mismatch.reward_id, mismatch.kind) == ("R1", MismatchKind.MISSING_AT_STRIPE)
    assert stripe.asked == [["cus_1", "cus_2"]]
    assert [name for name, _ in memory.reconcile.calls] == [
        "stripe_movements",
        "stripe_customer_ids",
    ]


def test_stripe_payouts_in_the_ledger_without_a_stripe_key_refuse_to_reconcile() -> None:
    memory = InMemoryLedger()
    memory.reconcile.movements = [_payout("R1", "tr_1")]

    with pytest.raises(ConfigError, match="no Stripe key"):
        reconcile_payouts.fn(memory, None, NOW)

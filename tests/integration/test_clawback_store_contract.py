"""One refund, applied by the use case on the SQL stores (SQLite, PostgreSQL) and on the
in-memory fakes: both read, decide and write the same, so the use case's unit tests on
the fakes say something about the ledger."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import pytest

from domain.clawbacks import (
    ClawbackCause,
    LossStatus,
    PaymentLoss,
    ReversalInstruction,
    ReversalOutcome,
    ReversalResult,
)
from domain.models import PayoutRailKind
from domain.money import Money
from domain.program import Clawbacks
from integrations.ledger.engine import make_engine
from integrations.ledger.memory import InMemoryLedger
from integrations.ledger.sql import SqlLedger
from integrations.payments.fake import RecordingRail
from tasks.payouts import submit_payouts
from tasks.use_cases.clawbacks import apply_payment_loss
from tests.conftest import NOW, contact
from tests.integration.clawback_helpers import entries, link_payment, refund_event
from tests.integration.test_payout_crashes import seed_payable_reward

PAID = 2_500
PAYMENT = 120_000
CHARGE = "ch_referee_1"
CONVERTED_AT = NOW - timedelta(days=60)  # seed_payable_reward's conversion time


@dataclass
class Backend:
    """A ledger with referrer C1's reward of 25 EUR for a conversion paid by CHARGE."""

    ledger: Any  # SqlLedger or InMemoryLedger: both are a domain.stores.Ledger
    reward_id: str
    entries: Any  # () -> [(kind, amount)] of the reward

    def store_refund(self, event_id: str, refunded: int) -> PaymentLoss:
        if isinstance(self.ledger, SqlLedger):
            self.ledger.store_stripe_event(
                refund_event(event_id, CHARGE, NOW, refunded=refunded), NOW
            )
        else:
            self.ledger.clawbacks.data.add_event(event_id, "charge.refunded", NOW)
        return PaymentLoss(
            event_id=event_id,
            cause=ClawbackCause.REFUND,
            occurred_at=NOW,
            payment_refs=(CHARGE,),
            customer_ref="cus_referee",
            payment_key=CHARGE,
            payment_minor=PAYMENT,
            lost_minor=refunded,
        )


def _sql(ledger: SqlLedger, paid: bool) -> Backend:
    person = contact("C1", "A-C1", stripe_account_id="acct_c1")
    reward_id = seed_payable_reward(ledger, person, NOW, amount=Money(PAID, "EUR"))
    link_payment(ledger, reward_id, CHARGE, NOW, amount_minor=PAYMENT)
    if paid:
        rail = RecordingRail(PayoutRailKind.STRIPE_TRANSFER)
        assert submit_payouts.fn(ledger, {rail.kind: rail}, [reward_id], NOW).paid == 1
    return Backend(ledger, reward_id, lambda: entries(ledger, reward_id))


def _memory(paid: bool) -> Backend:
    ledger = InMemoryLedger()
    data = ledger.clawbacks.data
    reward_id = "reward-1"
    data.add_conversion("conv-1", CONVERTED_AT, [(CHARGE, PAYMENT)])
    data.add_reward(reward_id, "C1", "conv-1", Money(PAID, "EUR"), NOW)
    if paid:
        data.pay(reward_id, "payout-1")
    return Backend(ledger, reward_id, lambda: data.entries_of(reward_id))


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres), "memory"])
def make_backend(request: pytest.FixtureRequest) -> Iterator[Any]:
    """A function of ``paid`` making the backend: SQL on SQLite or PostgreSQL, or memory."""
    if request.param == "memory":
        yield _memory
        return
    engine = make_engine(str(request.getfixturevalue(f"{request.param}_url")))
    try:
        yield lambda paid: _sql(SqlLedger(engine), paid)
    finally:
        engine.dispose()


def test_a_partial_refund_of_a_paid_reward_books_the_same_on_every_store(
    make_backend: Any,
) -> None:
    backend: Backend = make_backend(True)
    loss = backend.store_refund("evt_1", 40_000)

    outcome = apply_payment_loss(backend.ledger, loss, Clawbacks(), NOW)

    (decision,) = outcome.decisions
    assert (outcome.status, outcome.reversals) == (LossStatus.APPLIED, 1)
    assert (decision.cancel, decision.claw_back) == (Money(0, "EUR"), Money(833, "EUR"))
    assert backend.entries() == [("accrued", PAID), ("paid", -PAID), ("clawed_back", -833)]
    (row,) = backend.ledger.clawbacks.of_rewards([backend.reward_id])
    assert (row["cause"], row["refunded_minor"], row["clawed_back_minor"]) == (
        "refund",
        40_000,
        833,
    )
    (instruction,) = backend.ledger.reversals.pending()
    assert instruction.amount == Money(833, "EUR")
    assert instruction.idempotency_key == ReversalInstruction.key_for(backend.reward_id, "evt_1")
    assert backend.ledger.clawbacks.events(["charge.refunded"], None, 10) == []

    backend.ledger.reversals.record_results(
        [ReversalResult(instruction.reversal_id, ReversalOutcome.INSUFFICIENT_FUNDS)], NOW
    )
    assert backend.ledger.reversals.debts(["C1"]) == {"C1": Money(833, "EUR")}


def test_a_refund_of_an_unpaid_reward_cancels_it_the_same_on_every_store(
    make_backend: Any,
) -> None:
    backend: Backend = make_backend(False)
    loss = backend.store_refund("evt_1", 30_000)

    outcome = apply_payment_loss(backend.ledger, loss, Clawbacks(), NOW)
    again = apply_payment_loss(backend.ledger, loss, Clawbacks(), NOW)

    (decision,) = outcome.decisions
    assert (outcome.status, outcome.reversals, decision.cancels_reward) == (
        LossStatus.APPLIED,
        0,
        True,
    )
    assert again.status is LossStatus.ALREADY_PROCESSED
    assert backend.entries() == [("accrued", PAID), ("cancelled", -PAID)]
    assert backend.ledger.reversals.pending() == []
    assert backend.ledger.reversals.debts(["C1"]) == {}

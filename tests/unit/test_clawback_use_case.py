"""The use case applying a refund, chargeback or churn, on the in-memory ledger: what
it reads, decides and writes, with no SQL."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from domain.clawbacks import (
    ClawbackCause,
    ClawbackConflict,
    LossApplied,
    LossStatus,
    PaymentLoss,
    ReversalInstruction,
    ReversalOutcome,
    ReversalResult,
    net_against_debts,
)
from domain.models import RewardStatus, derived_id
from domain.money import Money
from domain.program import Clawbacks
from integrations.ledger.memory import InMemoryLedger
from integrations.ledger.memory.clawbacks import ClawbackData
from tasks.use_cases.clawbacks import apply_payment_loss

NOW = datetime(2026, 11, 2, 9, 0, tzinfo=UTC)
CONVERTED_AT = NOW - timedelta(days=60)
RULES = Clawbacks()  # a 90-day window, every cause switched on
PAYMENT = 120_000
CHARGE = "ch_referee_1"
REWARD = 6_000


def eur(minor: int) -> Money:
    return Money(minor, "EUR")


def refund(event_id: str, refunded: int, at: datetime = NOW, charge: str = CHARGE) -> PaymentLoss:
    return PaymentLoss(
        event_id=event_id,
        cause=ClawbackCause.REFUND,
        occurred_at=at,
        payment_refs=(charge,),
        customer_ref="cus_referee",
        payment_key=charge,
        payment_minor=PAYMENT,
        lost_minor=refunded,
    )


def data_of(ledger: InMemoryLedger) -> ClawbackData:
    return ledger.clawbacks.data


def seeded(
    *, paid: bool, reward_id: str = "r1", conversion: str = "conv1", charge: str = CHARGE
) -> InMemoryLedger:
    """A ledger with referrer C1's reward of 60 EUR for a conversion paid by ``charge``."""
    ledger = InMemoryLedger()
    add_reward(
        data_of(ledger), paid=paid, reward_id=reward_id, conversion=conversion, charge=charge
    )
    return ledger


def add_reward(
    data: ClawbackData,
    *,
    paid: bool,
    reward_id: str,
    conversion: str,
    charge: str,
    amount: int = REWARD,
    at: datetime = CONVERTED_AT,
) -> None:
    data.add_conversion(conversion, at, [(charge, PAYMENT)])
    data.add_reward(reward_id, "C1", conversion, eur(amount), at)
    if paid:
        data.pay(reward_id, f"payout-{reward_id}")


def apply(ledger: InMemoryLedger, loss: PaymentLoss, rules: Clawbacks = RULES) -> LossApplied:
    data_of(ledger).add_event(loss.event_id, "charge.refunded", loss.occurred_at)
    return apply_payment_loss(ledger, loss, rules, NOW)


def test_a_refund_inside_the_window_claws_back_a_paid_rewards_share_and_queues_a_reversal() -> None:
    ledger = seeded(paid=True)

    outcome = apply(ledger, refund("evt_1", refunded=40_000))

    data = data_of(ledger)
    assert (outcome.status, outcome.reversals, outcome.outside_window) == (
        LossStatus.APPLIED,
        1,
        0,
    )
    (decision,) = outcome.decisions
    assert (decision.cancel, decision.claw_back, decision.cancels_reward) == (
        eur(0),
        eur(2_000),
        False,
    )
    assert data.entries_of("r1") == [
        ("accrued", REWARD),
        ("paid", -REWARD),
        ("clawed_back", -2_000),
    ]
    assert data.rewards["r1"].status is RewardStatus.PAID
    (instruction,) = ledger.reversals.pending()
    assert instruction.amount == eur(2_000)
    assert instruction.payout_id == "payout-r1"
    assert instruction.idempotency_key == ReversalInstruction.key_for("r1", "evt_1")
    (notice,) = data.notifications.values()
    assert (notice.contact_id, notice.data["after_payout"]) == ("C1", "yes")
    assert data.locked_referrers == ["C1"]
    assert data.events["evt_1"].processed_at == NOW


def test_applying_the_same_event_again_takes_nothing_more() -> None:
    ledger = seeded(paid=True)
    apply(ledger, refund("evt_1", refunded=40_000))

    again = apply_payment_loss(ledger, refund("evt_1", 40_000), RULES, NOW)

    assert again.status is LossStatus.ALREADY_PROCESSED
    assert data_of(ledger).balance("r1") == -2_000
    assert len(ledger.reversals.pending()) == 1


def test_a_refund_outside_the_window_changes_nothing_and_closes_the_event() -> None:
    ledger = seeded(paid=True)
    late = CONVERTED_AT + timedelta(days=RULES.window_days, seconds=1)

    outcome = apply_payment_loss(ledger, refund("evt_1", PAYMENT, at=late), RULES, NOW)

    data = data_of(ledger)
    assert (outcome.status, outcome.outside_window, outcome.decisions) == (
        LossStatus.IGNORED,
        1,
        (),
    )
    assert data.entries_of("r1") == [("accrued", REWARD), ("paid", -REWARD)]
    assert (data.clawbacks, data.reversals, data.locked_referrers) == ({}, {}, [])


def test_a_second_partial_refund_claws_back_only_what_its_new_total_adds() -> None:
    ledger = seeded(paid=True)
    apply(ledger, refund("evt_1", refunded=40_000))

    second = apply(ledger, refund("evt_2", refunded=80_000, at=NOW + timedelta(hours=1)))

    (decision,) = second.decisions
    assert decision.claw_back == eur(2_000)
    assert data_of(ledger).balance("r1") == -4_000
    rows = ledger.clawbacks.of_rewards(["r1"])
    assert [(r["refunded_minor"], r["clawed_back_minor"]) for r in rows] == [
        (40_000, 2_000),
        (80_000, 2_000),
    ]


def test_a_refund_before_payout_cancels_the_reward_and_reverses_nothing() -> None:
    ledger = seeded(paid=False)

    outcome = apply(ledger, refund("evt_1", refunded=30_000))

    data = data_of(ledger)
    (decision,) = outcome.decisions
    assert (decision.cancel, decision.claw_back, decision.cancels_reward) == (
        eur(REWARD),
        eur(0),
        True,
    )
    assert data.rewards["r1"].status is RewardStatus.CANCELLED
    assert data.entries_of("r1") == [("accrued", REWARD), ("cancelled", -REWARD)]
    assert ledger.reversals.pending() == []
    (notice,) = data.notifications.values()
    assert notice.data["after_payout"] == "no"


def test_an_event_waits_while_a_payout_of_its_reward_is_under_way() -> None:
    ledger = seeded(paid=False)
    data_of(ledger).pay("r1", "payout-r1", status="pending")

    outcome = apply(ledger, refund("evt_1", refunded=PAYMENT))

    assert outcome.status is LossStatus.DEFERRED
    assert data_of(ledger).clawbacks == {}
    assert data_of(ledger).events["evt_1"].processed_at is None


def test_an_event_waits_for_the_rewards_of_its_conversion() -> None:
    ledger = InMemoryLedger()
    data_of(ledger).add_conversion("conv1", CONVERTED_AT, [(CHARGE, PAYMENT)], rewarded=False)

    outcome = apply(ledger, refund("evt_1", refunded=PAYMENT))

    assert outcome.status is LossStatus.DEFERRED
    assert ledger.clawbacks.calls[-1][0] == "own_payments"  # nothing read past the deferral


def test_a_payment_no_conversion_has_yet_stays_in_the_inbox() -> None:
    ledger = seeded(paid=True)

    outcome = apply(ledger, refund("evt_1", refunded=PAYMENT, charge="ch_unknown"))

    assert outcome.status is LossStatus.UNKNOWN_PAYMENT
    assert data_of(ledger).events["evt_1"].processed_at is None


def test_an_unrecovered_reversal_leaves_a_debt_that_a_later_reward_nets() -> None:
    ledger = seeded(paid=True)
    apply(ledger, refund("evt_1", refunded=PAYMENT))
    (instruction,) = ledger.reversals.pending()
    assert ledger.reversals.record_results(
        [ReversalResult(instruction.reversal_id, ReversalOutcome.INSUFFICIENT_FUNDS)], NOW
    ) == {"unrecovered": 1}

    debts = ledger.reversals.debts(["C1"])
    paid, settled = net_against_debts(eur(2_500), [("r1", debts["C1"])])

    assert debts == {"C1": eur(REWARD)}
    assert (paid, settled) == (eur(0), [("r1", eur(2_500))])


def test_a_reversed_clawback_leaves_no_debt() -> None:
    ledger = seeded(paid=True)
    apply(ledger, refund("evt_1", refunded=PAYMENT))
    (instruction,) = ledger.reversals.pending()

    ledger.reversals.record_results(
        [ReversalResult(instruction.reversal_id, ReversalOutcome.SUCCEEDED, "trr_1")], NOW
    )

    assert data_of(ledger).balance("r1") == 0
    assert ledger.reversals.debts(["C1"]) == {}


def test_a_reward_cancelled_meanwhile_rolls_the_whole_event_back() -> None:
    ledger = seeded(paid=False)
    original = ledger.clawbacks.cancel_reward

    def racing(reward_id: str, status: RewardStatus, now: datetime) -> bool:
        data_of(ledger).rewards[reward_id].status = RewardStatus.APPROVED  # a racing decision
        return original(reward_id, status, now)

    ledger.clawbacks.cancel_reward = racing  # type: ignore[method-assign]
    data_of(ledger).add_event("evt_1", "charge.refunded", NOW)

    with pytest.raises(ClawbackConflict):
        apply_payment_loss(ledger, refund("evt_1", PAYMENT), RULES, NOW)

    data = data_of(ledger)
    assert (ledger.committed, ledger.rolled_back) == (0, 1)
    assert (data.clawbacks, data.notifications) == ({}, {})
    assert data.events["evt_1"].processed_at is None
    assert data.entries_of("r1") == [("accrued", REWARD)]


def test_the_clawback_id_is_fixed_per_reward_and_event() -> None:
    ledger = seeded(paid=True)

    apply(ledger, refund("evt_1", refunded=40_000))

    assert list(data_of(ledger).clawbacks) == [derived_id("clawback", "r1", "evt_1")]

"""The rules of applying one loss: which payment, which rewards in the window, what is
recorded, who is told, and what the provider is asked to reverse."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from domain.clawbacks import (
    ClawbackCause,
    ClawbackDecision,
    ConversionPayment,
    LostPayment,
    PaidPayout,
    PaymentLoss,
    ReversalInstruction,
    RewardPayment,
    RewardPosition,
    clawback_notice,
    clawback_of,
    payments_lost,
    reach,
    reversal_for,
    waits_for_rewards,
)
from domain.models import PayoutRailKind, RewardStatus, derived_id
from domain.money import Money
from domain.program import Clawbacks

T0 = datetime(2026, 11, 2, 9, 0, tzinfo=UTC)
RULES = Clawbacks(window_days=90)


def eur(minor: int) -> Money:
    return Money(minor, "EUR")


def loss(
    cause: ClawbackCause = ClawbackCause.REFUND,
    *,
    payment_minor: int | None = None,
    at: datetime = T0,
    refs: tuple[str, ...] = ("ch_1",),
) -> PaymentLoss:
    return PaymentLoss(
        event_id="evt_1",
        cause=cause,
        occurred_at=at,
        payment_refs=refs,
        customer_ref="cus_1",
        payment_key=refs[0],
        payment_minor=payment_minor,
        lost_minor=40_000,
    )


def test_the_events_own_amount_wins_over_the_stored_payment() -> None:
    stored = [ConversionPayment("conv1", 90_000, T0 - timedelta(days=5), True)]

    found = payments_lost(loss(payment_minor=120_000), stored)

    assert found == {"conv1": LostPayment("conv1", T0 - timedelta(days=5), 120_000, True)}


def test_without_the_events_amount_the_largest_alias_of_the_payment_counts() -> None:
    at = T0 - timedelta(days=5)
    stored = [
        ConversionPayment("conv1", 90_000, at, True),  # the charge
        ConversionPayment("conv1", 120_000, at, True),  # the invoice, tax included
    ]

    assert payments_lost(loss(), stored)["conv1"].amount_minor == 120_000


def test_a_loss_waits_only_for_conversions_it_reaches_in_time() -> None:
    recent = LostPayment("conv1", T0 - timedelta(days=5), 1, rewarded=False)
    old = LostPayment("conv2", T0 - timedelta(days=91), 1, rewarded=False)

    assert waits_for_rewards({"conv1": recent}, loss(), RULES)
    assert not waits_for_rewards({"conv2": old}, loss(), RULES)


def test_a_renewals_refund_reaches_only_the_reward_its_invoice_earned_from_the_invoice_date() -> (
    None
):
    converted = LostPayment("conv1", T0 - timedelta(days=200), 120_000, True)
    invoice = RewardPayment("r_renewal", "C1", "conv1", 50_000, T0 - timedelta(days=10))

    found = reach(
        loss(refs=("in_2",)),
        RULES,
        {},
        {},
        set(),
        {"r_renewal": invoice},
    )
    first_payment = reach(
        loss(),
        RULES,
        {"conv1": converted},
        {"r_first": ("C1", "conv1"), "r_renewal": ("C1", "conv1")},
        {"r_renewal"},
        {},
    )

    assert found.in_window == {
        "r_renewal": ("C1", LostPayment("conv1", T0 - timedelta(days=10), 50_000, True))
    }
    assert (found.late, found.referrers) == (0, ["C1"])
    assert (first_payment.in_window, first_payment.late) == ({}, 1)  # 200 days: too late


def _clawback(claw_back: int, cancel: int = 0) -> tuple[PaymentLoss, ClawbackDecision]:
    event = loss(payment_minor=120_000)
    decision = ClawbackDecision("r1", eur(cancel), eur(claw_back), False, 40_000, 0)
    return event, decision


def test_the_clawback_record_is_fixed_per_reward_and_event() -> None:
    event, decision = _clawback(2_000)
    position = RewardPosition("r1", RewardStatus.PAID, eur(0), eur(6_000), eur(0), eur(0))
    payment = LostPayment("conv1", T0, -5, True)

    record = clawback_of(event, position, decision, payment)

    assert record.clawback_id == derived_id("clawback", "r1", "evt_1")
    assert (record.payment_minor, record.status_before) == (0, RewardStatus.PAID)


def test_the_referrer_is_told_what_was_taken_and_nothing_when_nothing_was() -> None:
    position = RewardPosition("r1", RewardStatus.PAID, eur(0), eur(6_000), eur(0), eur(0))
    payment = LostPayment("conv1", T0, 120_000, True)
    event, taken = _clawback(2_000)
    _, nothing = _clawback(0)

    notice = clawback_notice(clawback_of(event, position, taken, payment), "C1")

    assert notice is not None
    assert (notice.contact_id, notice.data["after_payout"]) == ("C1", "yes")
    assert notice.data["cause"] == "the referred customer's payment was refunded"
    assert clawback_notice(clawback_of(event, position, nothing, payment), "C1") is None


def _payout(amount: int, reversed_: int = 0, currency: str = "EUR") -> PaidPayout:
    return PaidPayout(
        "p1",
        PayoutRailKind.STRIPE_TRANSFER,
        "acct_1",
        "tr_1",
        Money(amount, currency),
        Money(reversed_, currency),
    )


def test_the_reversal_asks_for_the_clawback_with_its_fixed_key_capped_at_the_payout_left() -> None:
    position = RewardPosition("r1", RewardStatus.PAID, eur(0), eur(6_000), eur(0), eur(0))
    event, decision = _clawback(2_000)
    record = clawback_of(event, position, decision, LostPayment("conv1", T0, 120_000, True))

    whole = reversal_for(record, _payout(6_000))
    capped = reversal_for(record, _payout(6_000, reversed_=5_500))

    assert whole is not None
    assert capped is not None
    assert (whole.amount, capped.amount) == (eur(2_000), eur(500))
    assert whole.idempotency_key == ReversalInstruction.key_for("r1", "evt_1")
    assert whole.reversal_id == derived_id("reversal", record.clawback_id)


def test_nothing_is_reversed_without_a_payout_in_the_currency_or_with_nothing_left() -> None:
    position = RewardPosition("r1", RewardStatus.PAID, eur(0), eur(6_000), eur(0), eur(0))
    event, decision = _clawback(2_000)
    record = clawback_of(event, position, decision, LostPayment("conv1", T0, 120_000, True))

    assert reversal_for(record, None) is None  # settled by netting alone: the debt stays
    assert reversal_for(record, _payout(6_000, currency="USD")) is None
    assert reversal_for(record, _payout(6_000, reversed_=6_000)) is None

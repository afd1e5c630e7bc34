"""Clawback rules: proration, decisions per reward state, netting, reconciliation."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from config.program import parse_program
from domain.clawbacks import (
    ClawbackCause,
    MismatchKind,
    Movement,
    MovementKind,
    PaymentLoss,
    PayoutsOutOfBalance,
    RewardPosition,
    compare_movements,
    decide_clawback,
    net_against_debts,
    prorate,
    recoverable,
    rewards_reached,
    within_window,
)
from domain.errors import ConfigError, InputRejected
from domain.models import RewardStatus
from domain.money import Money
from domain.program import Clawbacks
from integrations.payments.stripe_reconcile import parse_payment_loss

T0 = datetime(2026, 11, 2, 9, 0, tzinfo=UTC)
PAYMENT = 120_000


def eur(minor: int) -> Money:
    return Money(minor, "EUR")


def position(
    status: RewardStatus = RewardStatus.PAID,
    *,
    balance: int = 0,
    settled: int = 10_000,
    clawed: int = 0,
    payment_clawed: int = 0,
    refunded: int = 0,
    disputed: int = 0,
) -> RewardPosition:
    return RewardPosition(
        reward_id="r1",
        status=status,
        balance=eur(balance),
        settled=eur(settled),
        clawed=eur(clawed),
        payment_clawed=eur(payment_clawed),
        payment_refunded=refunded,
        payment_disputed=disputed,
    )


def loss(cause: ClawbackCause = ClawbackCause.REFUND, lost: int = PAYMENT) -> PaymentLoss:
    return PaymentLoss(
        event_id="evt_1",
        cause=cause,
        occurred_at=T0,
        payment_refs=("ch_1",),
        customer_ref="cus_1",
        payment_key="ch_1",
        payment_minor=PAYMENT if cause is ClawbackCause.REFUND else None,
        lost_minor=lost,
    )


# -- proration ------------------------------------------------------------------------


def test_prorating_a_third_rounds_to_the_nearest_cent() -> None:
    assert prorate(eur(10_000), 1, 3) == eur(3333)
    assert prorate(eur(10_000), 2, 3) == eur(6667)
    assert prorate(eur(1), 1, 2) == eur(1)  # a half rounds up to the part taken back


def test_prorating_is_capped_at_the_whole_amount() -> None:
    assert prorate(eur(10_000), 5, 3) == eur(10_000)
    assert prorate(eur(10_000), 7, 0) == eur(10_000)
    assert prorate(eur(10_000), 0, 0) == eur(0)
    assert prorate(eur(0), 1, 2) == eur(0)


@given(
    amount=st.integers(0, 10**12),
    whole=st.integers(1, 10**9),
    cuts=st.lists(st.integers(0, 10**9), min_size=1, max_size=6),
)
def test_partial_refunds_add_up_to_what_one_refund_of_their_sum_takes(
    amount: int, whole: int, cuts: list[int]
) -> None:
    totals = sorted(min(c, whole) for c in cuts)  # cumulative amount_refunded, growing
    taken = 0
    for total in totals:
        target = prorate(eur(amount), total, whole).amount_minor
        step = target - taken
        assert step >= 0  # monotone: a larger refund never gives money back
        taken = target
    assert taken == prorate(eur(amount), totals[-1], whole).amount_minor
    assert 0 <= taken <= amount


# -- decisions ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "status",
    [
        RewardStatus.HOLDING,
        RewardStatus.PAYABLE,
        RewardStatus.AWAITING_APPROVAL,
        RewardStatus.APPROVED,
    ],
)
def test_any_refund_of_an_unpaid_reward_cancels_what_is_left(status: RewardStatus) -> None:
    decision = decide_clawback(
        position(status, balance=8_000, settled=0), loss(lost=1_000), PAYMENT
    )

    assert (decision.cancel, decision.claw_back, decision.cancels_reward) == (
        eur(8_000),
        eur(0),
        True,
    )


def test_a_partial_refund_of_a_paid_reward_claws_back_its_share() -> None:
    decision = decide_clawback(position(), loss(lost=30_000), PAYMENT)

    assert (decision.cancel, decision.claw_back, decision.cancels_reward) == (
        eur(0),
        eur(2_500),
        False,
    )
    assert decision.refunded_minor == 30_000


def test_a_second_partial_refund_claws_back_only_the_new_part() -> None:
    before = position(clawed=2_500, payment_clawed=2_500, refunded=30_000)

    assert decide_clawback(before, loss(lost=90_000), PAYMENT).claw_back == eur(5_000)
    # A repeated or older event (a lower cumulative total) takes nothing more.
    assert decide_clawback(before, loss(lost=30_000), PAYMENT).claw_back == eur(0)
    assert decide_clawback(before, loss(lost=10_000), PAYMENT).refunded_minor == 30_000


def test_a_chargeback_adds_to_what_was_refunded_and_never_exceeds_the_payment() -> None:
    refunded = position(clawed=2_500, payment_clawed=2_500, refunded=30_000)

    decision = decide_clawback(refunded, loss(ClawbackCause.CHARGEBACK, PAYMENT), PAYMENT)

    assert decision.claw_back == eur(7_500)
    assert decision.disputed_minor == PAYMENT


def test_churn_takes_back_everything_not_taken_yet() -> None:
    decision = decide_clawback(position(clawed=2_500), loss(ClawbackCause.CHURN, 0), PAYMENT)

    assert decision.claw_back == eur(7_500)


def test_a_reward_already_cancelled_or_rejected_loses_nothing_more() -> None:
    for status in (RewardStatus.CANCELLED, RewardStatus.REJECTED):
        decision = decide_clawback(position(status, settled=0), loss(), PAYMENT)
        assert not decision.moves_money
        assert not decision.cancels_reward


def test_an_unpaid_reward_that_settled_a_debt_also_owes_that_part_back() -> None:
    # 30.00 of it settled an older debt at a payout that later failed for good.
    decision = decide_clawback(
        position(RewardStatus.PAYABLE, balance=7_000, settled=3_000), loss(), PAYMENT
    )

    assert (decision.cancel, decision.claw_back) == (eur(7_000), eur(3_000))


def test_the_window_is_measured_from_the_conversion() -> None:
    rules = Clawbacks(window_days=90)

    assert within_window(T0, T0 + timedelta(days=90), rules)
    assert not within_window(T0, T0 + timedelta(days=90, seconds=1), rules)


# -- which rewards a loss reaches -------------------------------------------------------------

# The rewards of one conversion: a flat reward its first payment earned, and a recurring
# rule's rewards for the first invoice and for a renewal, each earned by
# its own invoice.
OF_CONVERSION = {"flat": "conv-1", "R-1": "conv-1", "R-2": "conv-1"}
EARNED_ALONE = {"R-1", "R-2"}


def test_a_refund_of_the_first_payment_leaves_the_rewards_of_later_invoices_alone() -> None:
    # The first invoice is the conversion's payment, and R-1's own payment too.
    reached = rewards_reached(ClawbackCause.REFUND, OF_CONVERSION, EARNED_ALONE, ["R-1"])

    assert reached == {"flat": "conv-1", "R-1": None}


@pytest.mark.parametrize("cause", [ClawbackCause.REFUND, ClawbackCause.CHARGEBACK])
def test_a_refund_or_dispute_of_a_renewal_reaches_only_the_rewards_it_earned(
    cause: ClawbackCause,
) -> None:
    # A renewal's charge is no payment of the conversion: only R-2 names it.
    assert rewards_reached(cause, {}, set(), ["R-2"]) == {"R-2": None}


def test_churn_reaches_every_reward_of_the_conversion_through_the_conversion() -> None:
    reached = rewards_reached(ClawbackCause.CHURN, OF_CONVERSION, EARNED_ALONE, ["R-2"])

    assert reached == {"flat": "conv-1", "R-1": "conv-1", "R-2": "conv-1"}


def test_a_reward_without_a_payment_of_its_own_follows_its_conversion() -> None:
    # Recorded before reward payments existed, or a flat rule's: the first payment's.
    reached = rewards_reached(ClawbackCause.REFUND, {"old": "conv-9"}, set(), [])

    assert reached == {"old": "conv-9"}


# -- netting and reversals ------------------------------------------------------------------


def test_netting_takes_debts_oldest_first_and_never_pays_below_zero() -> None:
    debts = [("old", eur(300)), ("usd", Money(999, "USD")), ("new", eur(900))]

    assert net_against_debts(eur(1_000), debts) == (eur(0), [("old", eur(300)), ("new", eur(700))])
    assert net_against_debts(eur(2_000), debts) == (
        eur(800),
        [("old", eur(300)), ("new", eur(900))],
    )
    assert net_against_debts(eur(1_000), []) == (eur(1_000), [])


@given(
    balance=st.integers(0, 10**9),
    debts=st.lists(st.integers(-100, 10**9), max_size=5),
)
def test_netting_conserves_money(balance: int, debts: list[int]) -> None:
    pay, settled = net_against_debts(eur(balance), [(f"r{i}", eur(d)) for i, d in enumerate(debts)])

    assert pay.amount_minor >= 0
    assert pay.amount_minor + sum(m.amount_minor for _, m in settled) == balance
    assert all(0 < m.amount_minor <= debts[int(r[1:])] for r, m in settled)


def test_a_reversal_takes_no_more_than_remains_of_the_payout() -> None:
    assert recoverable(eur(3_000), eur(2_500), eur(0)) == eur(2_500)
    assert recoverable(eur(3_000), eur(2_500), eur(2_000)) == eur(500)
    assert recoverable(eur(3_000), eur(2_500), eur(2_500)) == eur(0)


# -- the program section --------------------------------------------------------------------


def test_the_clawbacks_section_defaults_to_a_90_day_window_for_every_cause() -> None:
    rules = parse_program({}).clawbacks

    assert (rules.window_days, rules.on_refund, rules.on_chargeback, rules.on_churn) == (
        90,
        True,
        True,
        True,
    )


@pytest.mark.parametrize(
    ("section", "message"),
    [
        ({"window_days": -1}, "clawbacks.window_days: Input should be greater than or equal to 0"),
        ({"on_refund": "sometimes"}, "clawbacks.on_refund: Input should be a valid boolean"),
        ({"on_refnd": True}, "clawbacks.on_refnd: Extra inputs are not permitted"),
    ],
)
def test_a_wrong_clawbacks_value_is_refused_with_its_path(
    section: dict[str, object], message: str
) -> None:
    with pytest.raises(ConfigError, match=message):
        parse_program({"clawbacks": section})


# -- reading Stripe events ------------------------------------------------------------------


def test_a_refund_names_its_charge_intent_and_invoice_even_expanded() -> None:
    payload = {
        "data": {
            "object": {
                "id": "ch_1",
                "amount": 5000,
                "amount_refunded": 2000,
                "payment_intent": {"id": "pi_1", "object": "payment_intent"},
                "invoice": "in_1",
                "customer": "cus_1",
            }
        }
    }

    parsed = parse_payment_loss("evt_1", "charge.refunded", T0, payload)

    assert parsed.payment_refs == ("ch_1", "pi_1", "in_1")
    assert (parsed.payment_key, parsed.payment_minor, parsed.lost_minor) == ("ch_1", 5000, 2000)
    assert (parsed.cause, parsed.occurred_at) == (ClawbackCause.REFUND, T0)


def test_a_dispute_and_a_cancelled_subscription_are_read_with_their_own_times() -> None:
    disputed = parse_payment_loss(
        "evt_2",
        "charge.dispute.created",
        T0,
        {"data": {"object": {"id": "dp_1", "amount": 700, "charge": "ch_1", "created": 1}}},
    )
    churned = parse_payment_loss(
        "evt_3",
        "customer.subscription.deleted",
        T0,
        {"data": {"object": {"id": "sub_1", "customer": "cus_1", "latest_invoice": "in_9"}}},
    )

    assert (disputed.payment_refs, disputed.lost_minor, disputed.occurred_at.year) == (
        ("ch_1",),
        700,
        1970,
    )
    assert (churned.payment_refs, churned.customer_ref, churned.occurred_at) == (
        ("sub_1", "in_9"),
        "cus_1",
        T0,
    )


@pytest.mark.parametrize(
    ("type_", "obj", "field"),
    [
        ("charge.refunded", {"id": "ch_1", "amount": 5}, "data.object.amount_refunded"),
        (
            "charge.refunded",
            {"id": "ch_1", "amount": -5, "amount_refunded": 1},
            "data.object.amount",
        ),
        ("charge.dispute.created", {"id": "dp_1", "amount": 5}, "data.object.charge"),
        ("customer.subscription.deleted", {"id": "sub_1"}, "data.object.customer"),
        ("charge.refunded", {"amount": 5}, "data.object.id"),
        ("invoice.paid", {"id": "in_1"}, "type"),
    ],
)
def test_an_event_missing_what_a_clawback_needs_is_refused_with_the_field(
    type_: str, obj: dict[str, object], field: str
) -> None:
    with pytest.raises(InputRejected) as refused:
        parse_payment_loss("evt_1", type_, T0, {"data": {"object": obj}})
    assert refused.value.field == field
    assert refused.value.record == "stripe:evt_1"


# -- reconciliation ---------------------------------------------------------------------------


def ledger_payout(reward: str, ref: str | None, minor: int, status: str = "succeeded") -> Movement:
    return Movement(MovementKind.PAYOUT, reward, ref, eur(minor), f"payout-{reward}", status)


def stripe_payout(reward: str, ref: str, minor: int) -> Movement:
    return Movement(MovementKind.PAYOUT, reward, ref, eur(minor))


def test_matching_movements_are_no_mismatch() -> None:
    ours = [ledger_payout("r1", "tr_1", 500), ledger_payout("r2", None, 700, "failed")]
    reversal = Movement(MovementKind.REVERSAL, "r1", "trr_1", eur(100), "rev-1", "succeeded")

    assert compare_movements([*ours, reversal], [stripe_payout("r1", "tr_1", 500), reversal]) == []


def test_every_kind_of_mismatch_is_found_in_both_directions() -> None:
    ours = [
        ledger_payout("r1", "tr_1", 500),  # Stripe has 400
        ledger_payout("r2", "tr_2", 500),  # Stripe has none
        ledger_payout("r4", "tr_4", 500),  # Stripe has it twice
        ledger_payout("r5", None, 500, "pending"),
    ]
    theirs = [
        stripe_payout("r1", "tr_1", 400),
        stripe_payout("r3", "tr_3", 500),  # the ledger has none
        stripe_payout("r4", "tr_4", 500),
        stripe_payout("r4", "tr_4b", 500),
        stripe_payout("r5", "tr_5", 500),
    ]

    found = {(m.kind, m.reward_id) for m in compare_movements(ours, theirs)}

    assert found == {
        (MismatchKind.AMOUNT_MISMATCH, "r1"),
        (MismatchKind.MISSING_AT_STRIPE, "r2"),
        (MismatchKind.MISSING_IN_LEDGER, "r3"),
        (MismatchKind.DUPLICATE_AT_STRIPE, "r4"),
        (MismatchKind.MISSING_IN_LEDGER, "r5"),
    }


def test_the_error_raised_for_mismatches_counts_them_by_kind() -> None:
    mismatches = compare_movements([ledger_payout("r2", "tr_2", 500)], [])

    error = PayoutsOutOfBalance(mismatches)

    assert str(error) == "1 payout mismatches with Stripe: missing_at_stripe 1"
    assert set(mismatches[0].row()) == {
        "kind",
        "reward",
        "movement",
        "ledger",
        "stripe",
        "ledger amount",
        "stripe amount",
        "detail",
    }

"""What a referrer's page shows, and how their reward choice picks the rail."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from config.program import parse_program
from domain.errors import ConfigError
from domain.models import Contact, Milestone, PayoutRailKind, RewardStatus
from domain.money import Money
from domain.program import Program, RewardChoice
from domain.referrer_page import (
    ConversionStep,
    RewardLine,
    expected_payment,
    needs_payout_setup,
    progress,
    referrals,
)
from domain.rewards import choose_rail

NOW = datetime(2026, 11, 2, 9, 0, tzinfo=UTC)
STRIPE = {PayoutRailKind.STRIPE_TRANSFER, PayoutRailKind.STRIPE_BALANCE}


def step(referee: str, milestone: Milestone, days: int) -> ConversionStep:
    return ConversionStep(referee, milestone, NOW - timedelta(days=days))


def test_the_funnel_counts_each_referee_once_at_every_step_they_reached() -> None:
    steps = [
        step("R1", Milestone.LEAD, 30),
        step("R1", Milestone.QUALIFIED, 20),
        step("R1", Milestone.CUSTOMER, 10),
        step("R2", Milestone.LEAD, 5),
        step("R3", Milestone.QUALIFIED, 3),
    ]

    assert progress(12, steps) == progress(12, list(reversed(steps)))
    counted = progress(12, steps)
    assert (counted.clicks, counted.signed_up, counted.qualified, counted.customers) == (
        12,
        3,
        2,
        1,
    )


def test_referrals_are_numbered_by_arrival_with_their_furthest_step_and_no_identity() -> None:
    rows = referrals(
        [
            step("ACME-secret", Milestone.CUSTOMER, 10),
            step("ACME-secret", Milestone.LEAD, 30),
            step("Globex-secret", Milestone.LEAD, 5),
        ]
    )

    assert [(r.number, r.step, r.on) for r in rows] == [
        (1, "Customer", (NOW - timedelta(days=10)).date()),
        (2, "Signed up", (NOW - timedelta(days=5)).date()),
    ]
    assert "secret" not in repr(rows)


def reward(status: RewardStatus, payable_in_days: int = 3) -> RewardLine:
    return RewardLine(
        "W1",
        Milestone.CUSTOMER,
        Money(20000, "EUR"),
        status,
        NOW + timedelta(days=payable_in_days),
        NOW,
    )


def test_the_expected_payment_follows_the_reward_status_and_the_payout_setup() -> None:
    today = NOW.date()

    assert expected_payment(reward(RewardStatus.HOLDING), True, today) == (
        f"From {(NOW + timedelta(days=3)).date().isoformat()}"
    )
    assert expected_payment(reward(RewardStatus.HOLDING, -5), True, today) == (
        f"From {today.isoformat()}"
    )
    assert expected_payment(reward(RewardStatus.PAYABLE), True, today) == "With the next payout run"
    assert expected_payment(reward(RewardStatus.AWAITING_APPROVAL), True, today) == (
        "After a person reviews it"
    )
    assert expected_payment(reward(RewardStatus.PAID), True, today) == "—"
    assert expected_payment(reward(RewardStatus.PAYABLE), False, today) == (
        "Once you set up how to get paid"
    )


def person(**extra: str) -> Contact:
    return Contact("C1", "A1", "Ada Lovelace", "ada@a1.example", **extra)  # type: ignore[arg-type]


def test_account_credit_goes_to_a_paying_customers_balance_even_with_a_connected_account() -> None:
    both = person(stripe_customer_id="cus_1", stripe_account_id="acct_1")

    assert choose_rail(both, STRIPE) == (PayoutRailKind.STRIPE_TRANSFER, "acct_1")
    assert choose_rail(both, STRIPE, RewardChoice.ACCOUNT_CREDIT) == (
        PayoutRailKind.STRIPE_BALANCE,
        "cus_1",
    )


def test_cash_chosen_waits_for_a_connected_account_rather_than_paying_credit() -> None:
    customer = person(stripe_customer_id="cus_1")

    assert choose_rail(customer, STRIPE) == (PayoutRailKind.STRIPE_BALANCE, "cus_1")
    assert choose_rail(customer, STRIPE, RewardChoice.CASH) is None
    assert needs_payout_setup(customer, STRIPE, RewardChoice.CASH)
    assert not needs_payout_setup(customer, STRIPE, None)


def test_credit_chosen_by_someone_who_is_not_a_customer_falls_back_to_a_transfer() -> None:
    partner = person(stripe_account_id="acct_1")

    assert choose_rail(partner, STRIPE, RewardChoice.ACCOUNT_CREDIT) == (
        PayoutRailKind.STRIPE_TRANSFER,
        "acct_1",
    )


def test_without_a_payment_provider_nobody_needs_a_payout_setup() -> None:
    assert not needs_payout_setup(person(), {PayoutRailKind.LEDGER_ONLY}, RewardChoice.CASH)
    assert needs_payout_setup(person(), STRIPE, None)


def test_reward_choices_default_to_cash_only_and_are_read_from_the_rules(program: Program) -> None:
    from domain.models import ReferrerType

    rules = parse_program(
        {"reward_choices": {"customer": ["account_credit", "cash"]}}, "test rules"
    )

    assert program.choices_for(ReferrerType.CUSTOMER) == (RewardChoice.CASH,)
    assert rules.choices_for(ReferrerType.CUSTOMER) == (
        RewardChoice.ACCOUNT_CREDIT,
        RewardChoice.CASH,
    )
    assert rules.choices_for(ReferrerType.PARTNER) == (RewardChoice.CASH,)


@pytest.mark.parametrize(
    ("choices", "named"),
    [
        ({"customer": []}, "reward_choices: customer: list at least one choice"),
        ({"customer": ["cash", "cash"]}, "reward_choices: customer: a choice is listed twice"),
        ({"customer": ["gift_card"]}, "reward_choices.customer.0"),
        ({"robot": ["cash"]}, "reward_choices.robot"),
    ],
)
def test_a_wrong_reward_choice_is_refused_naming_the_field(choices: object, named: str) -> None:
    with pytest.raises(ConfigError, match=named.replace(".", r"\.")):
        parse_program({"reward_choices": choices}, "test rules")

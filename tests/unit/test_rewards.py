"""Reward rules: amounts, caps, holding, splitting, routing and the payment rail."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from config.program import parse_program
from domain.errors import InputRejected
from domain.models import (
    Contact,
    Conversion,
    Milestone,
    PayoutRailKind,
    ReferrerType,
    Reward,
    Route,
)
from domain.money import Money
from domain.program import Program, RewardKind
from domain.rewards import choose_rail, compute_rewards, route, rule_amount
from tests.conftest import contact

OCCURRED = datetime(2026, 10, 1, 10, 0, tzinfo=UTC)
CUSTOMER = contact("CUST1", "A1")
PARTNER = contact("PART1", "P1", kind=ReferrerType.PARTNER)
PARTNER2 = contact("PART2", "P2", kind=ReferrerType.PARTNER)
EMPLOYEE = contact("EMP1", "ACME", kind=ReferrerType.EMPLOYEE)


def conversion(
    milestone: Milestone = Milestone.CUSTOMER,
    amount: str | None = "10000.00",
    conversion_id: str = "conv-1",
    referrer: Contact = CUSTOMER,
) -> Conversion:
    return Conversion(
        conversion_id=conversion_id,
        source_event=f"crm:{conversion_id}",
        referral_code="RABCDEFGHIJKLMNOPQRST",
        referrer_id=referrer.contact_id,
        referee_account_id="NEW1",
        referee_contact_id="NEWC1",
        milestone=milestone,
        occurred_at=OCCURRED,
        amount=None if amount is None else Money.parse(amount, "EUR"),
    )


def percent_program(percent: str, cap: str | None = None, **extra: Any) -> Program:
    rule: dict[str, Any] = {
        "id": "partner-percent",
        "referrer_type": "partner",
        "milestone": "customer",
        "kind": "percent_of_deal",
        "percent": percent,
    }
    if cap is not None:
        rule["cap"] = cap
    return parse_program({"rewards": [rule], **extra})


def flat_rule_amount(program: Program, referrer_type: ReferrerType, milestone: Milestone) -> Money:
    (rule,) = program.rules_for(referrer_type, milestone)
    assert rule.kind is RewardKind.FLAT
    assert rule.amount is not None
    return program.money(rule.amount)


# --- amounts ---------------------------------------------------------------------------


def test_a_flat_rule_pays_its_amount_whatever_the_deal(program: Program) -> None:
    expected = flat_rule_amount(program, ReferrerType.CUSTOMER, Milestone.CUSTOMER)
    for amount in ("1.00", "10000.00", None):
        (reward,) = compute_rewards(conversion(amount=amount), [(CUSTOMER, Decimal(1))], program)
        assert reward.amount == expected


def test_a_percent_rule_pays_its_share_of_the_deal() -> None:
    program = percent_program("15")
    (reward,) = compute_rewards(conversion(amount="12345.67"), [(PARTNER, Decimal(1))], program)
    # 15 % of 1,234,567 cents is 185,185.05 cents -> 185,185
    assert reward.amount == Money(185185, "EUR")


def test_a_percent_rule_never_pays_more_than_its_cap() -> None:
    program = percent_program("15", cap="1000.00")
    (reward,) = compute_rewards(conversion(amount="100000.00"), [(PARTNER, Decimal(1))], program)
    assert reward.amount == Money.parse("1000.00", "EUR")


def test_a_percent_rule_below_its_cap_pays_the_percentage() -> None:
    program = percent_program("10", cap="1000.00")
    (reward,) = compute_rewards(conversion(amount="5000.00"), [(PARTNER, Decimal(1))], program)
    assert reward.amount == Money.parse("500.00", "EUR")


def test_a_percent_rule_needs_the_deal_amount() -> None:
    program = percent_program("15")
    with pytest.raises(InputRejected) as info:
        compute_rewards(conversion(amount=None), [(PARTNER, Decimal(1))], program)
    assert info.value.record == "crm:conv-1"
    assert info.value.field == "amount"
    assert "partner-percent" in info.value.reason


def test_a_reward_that_rounds_to_nothing_is_not_created() -> None:
    program = percent_program("15")
    assert compute_rewards(conversion(amount="0.03"), [(PARTNER, Decimal(1))], program) == []


@settings(max_examples=200, deadline=None)
@given(
    deal=st.integers(min_value=0, max_value=10**11),
    cap=st.integers(min_value=1, max_value=10**9),
    percent=st.decimals(min_value=Decimal("0.01"), max_value=100, places=2),
)
def test_a_capped_percent_reward_is_the_smaller_of_the_percentage_and_the_cap(
    deal: int, cap: int, percent: Decimal
) -> None:
    cap_money = Money(cap, "EUR")
    program = percent_program(str(percent), cap=str(cap_money.to_decimal()))
    (rule,) = program.rewards
    deal_money = Money(deal, "EUR")
    earned = rule_amount(rule, conversion(amount=str(deal_money.to_decimal())), program)
    exact_share = Decimal(deal) * percent / 100
    assert earned <= cap_money
    assert earned.amount_minor == min(cap, round(exact_share))
    assert earned.currency == "EUR"


# --- who earns what --------------------------------------------------------------------


def test_rewards_go_only_to_rules_of_the_referrers_type_and_the_milestone(
    program: Program,
) -> None:
    for referrer in (CUSTOMER, PARTNER, EMPLOYEE):
        for milestone in Milestone:
            rewards = compute_rewards(
                conversion(milestone=milestone), [(referrer, Decimal(1))], program
            )
            expected_rules = program.rules_for(referrer.referrer_type, milestone)
            assert [r.rule_id for r in rewards] == [rule.id for rule in expected_rules]
            assert all(r.referrer_id == referrer.contact_id for r in rewards)
            assert all(r.milestone is milestone for r in rewards)


def test_a_customer_referral_that_only_became_a_lead_earns_nothing(program: Program) -> None:
    assert program.rules_for(ReferrerType.CUSTOMER, Milestone.LEAD) == []
    rewards = compute_rewards(
        conversion(milestone=Milestone.LEAD), [(CUSTOMER, Decimal(1))], program
    )
    assert rewards == []


def test_an_employee_is_rewarded_for_a_qualified_lead(program: Program) -> None:
    (reward,) = compute_rewards(
        conversion(milestone=Milestone.QUALIFIED), [(EMPLOYEE, Decimal(1))], program
    )
    assert reward.amount == flat_rule_amount(program, ReferrerType.EMPLOYEE, Milestone.QUALIFIED)


def test_referrers_of_different_types_each_earn_their_own_rules(program: Program) -> None:
    rewards = compute_rewards(
        conversion(), [(CUSTOMER, Decimal(1)), (EMPLOYEE, Decimal(1))], program
    )
    by_referrer = {r.referrer_id: r.amount for r in rewards}
    assert by_referrer == {
        CUSTOMER.contact_id: flat_rule_amount(program, ReferrerType.CUSTOMER, Milestone.CUSTOMER),
        EMPLOYEE.contact_id: flat_rule_amount(program, ReferrerType.EMPLOYEE, Milestone.CUSTOMER),
    }


def test_a_reward_becomes_payable_after_the_holding_days(program: Program) -> None:
    (reward,) = compute_rewards(conversion(), [(CUSTOMER, Decimal(1))], program)
    assert reward.payable_at == OCCURRED + timedelta(days=program.holding_days)


def test_a_reward_records_the_attribution_model_and_explains_itself(program: Program) -> None:
    (reward,) = compute_rewards(conversion(), [(CUSTOMER, Decimal(1))], program)
    assert reward.attribution_model == program.attribution.model
    assert str(reward.amount) in reward.explanation
    assert reward.conversion_id == "conv-1"


def test_reward_ids_are_deterministic_per_conversion_rule_and_referrer(program: Program) -> None:
    (first,) = compute_rewards(conversion(), [(CUSTOMER, Decimal(1))], program)
    (again,) = compute_rewards(conversion(), [(CUSTOMER, Decimal(1))], program)
    (other_conversion,) = compute_rewards(
        conversion(conversion_id="conv-2"), [(CUSTOMER, Decimal(1))], program
    )
    other_referrer = compute_rewards(conversion(), [(contact("CUST2", "A2"), Decimal(1))], program)[
        0
    ]
    assert first.reward_id == again.reward_id
    assert first.reward_id == Reward.derive_id("conv-1", first.rule_id, CUSTOMER.contact_id)
    assert len({first.reward_id, other_conversion.reward_id, other_referrer.reward_id}) == 3


def test_flags_are_carried_to_the_flagged_referrers_reward_only() -> None:
    program = percent_program("10")
    rewards = compute_rewards(
        conversion(),
        [(PARTNER, Decimal(1)), (PARTNER2, Decimal(1))],
        program,
        flags_of={PARTNER.contact_id: ("self_referral:same_account",)},
    )
    flags = {r.referrer_id: r.flags for r in rewards}
    assert flags == {PARTNER.contact_id: ("self_referral:same_account",), PARTNER2.contact_id: ()}


@settings(max_examples=200, deadline=None)
@given(
    deal=st.integers(min_value=0, max_value=10**10),
    weights=st.lists(st.integers(min_value=1, max_value=1000), min_size=1, max_size=6),
)
def test_a_reward_split_among_several_referrers_adds_up_exactly(
    deal: int, weights: list[int]
) -> None:
    program = percent_program("15", cap="10000.00")
    partners = [contact(f"P{i}", f"PA{i}", kind=ReferrerType.PARTNER) for i in range(len(weights))]
    conv = conversion(amount=str(Money(deal, "EUR").to_decimal()))
    (rule,) = program.rewards
    whole = rule_amount(rule, conv, program)
    rewards = compute_rewards(
        conv, [(p, Decimal(w)) for p, w in zip(partners, weights, strict=True)], program
    )
    assert sum(r.amount.amount_minor for r in rewards) == whole.amount_minor
    assert all(r.amount.amount_minor > 0 for r in rewards)
    assert len({r.reward_id for r in rewards}) == len(rewards)


def test_a_split_reward_says_which_part_of_the_whole_it_is() -> None:
    program = percent_program("10")
    rewards = compute_rewards(
        conversion(amount="1000.00"), [(PARTNER, Decimal(1)), (PARTNER2, Decimal(3))], program
    )
    amounts = {r.referrer_id: r.amount for r in rewards}
    assert amounts == {
        PARTNER.contact_id: Money.parse("25.00", "EUR"),
        PARTNER2.contact_id: Money.parse("75.00", "EUR"),
    }
    for reward in rewards:
        assert f"{reward.amount} of 100.00 EUR" in reward.explanation


# --- route -----------------------------------------------------------------------------


def test_a_reward_is_held_until_it_is_payable(program: Program) -> None:
    payable_at = OCCURRED + timedelta(days=program.holding_days)
    small = Money.parse("1.00", "EUR")
    as_of = payable_at - timedelta(seconds=1)
    assert route(small, (), payable_at, program, as_of) is Route.HOLD
    assert route(small, ("disposable_email_domain",), payable_at, program, as_of) is Route.HOLD


def test_a_small_unflagged_reward_is_paid_automatically_once_payable(program: Program) -> None:
    just_below = program.auto_payout_threshold - Money(1, "EUR")
    payable_at = OCCURRED
    assert route(just_below, (), payable_at, program, payable_at) is Route.AUTO_PAY


def test_a_reward_at_exactly_the_threshold_needs_approval(program: Program) -> None:
    threshold = program.auto_payout_threshold
    assert route(threshold, (), OCCURRED, program, OCCURRED) is Route.APPROVAL


def test_a_reward_above_the_threshold_needs_approval(program: Program) -> None:
    above = program.auto_payout_threshold + Money(1, "EUR")
    assert route(above, (), OCCURRED, program, OCCURRED + timedelta(days=1)) is Route.APPROVAL


@pytest.mark.parametrize(
    "flag", ["self_referral:same_account", "disposable_email_domain", "anything_else"]
)
def test_any_fraud_flag_sends_even_a_tiny_reward_to_approval(flag: str, program: Program) -> None:
    assert route(Money(1, "EUR"), (flag,), OCCURRED, program, OCCURRED) is Route.APPROVAL


# --- rails -----------------------------------------------------------------------------

STRIPE = {PayoutRailKind.STRIPE_TRANSFER, PayoutRailKind.STRIPE_BALANCE}


def test_without_a_payment_provider_every_payout_is_ledger_only() -> None:
    both = contact("X", stripe_account_id="acct_1", stripe_customer_id="cus_1")
    assert choose_rail(both, {PayoutRailKind.LEDGER_ONLY}) == (PayoutRailKind.LEDGER_ONLY, None)


def test_a_referrer_with_a_connected_account_gets_a_transfer() -> None:
    partner = contact("X", stripe_account_id="acct_1", stripe_customer_id="cus_1")
    assert choose_rail(partner, STRIPE) == (PayoutRailKind.STRIPE_TRANSFER, "acct_1")


def test_a_paying_customer_without_a_connected_account_gets_a_balance_credit() -> None:
    customer = contact("X", stripe_customer_id="cus_1")
    assert choose_rail(customer, STRIPE) == (PayoutRailKind.STRIPE_BALANCE, "cus_1")


def test_a_connected_account_is_not_used_when_transfers_are_unavailable() -> None:
    both = contact("X", stripe_account_id="acct_1", stripe_customer_id="cus_1")
    assert choose_rail(both, {PayoutRailKind.STRIPE_BALANCE}) == (
        PayoutRailKind.STRIPE_BALANCE,
        "cus_1",
    )


def test_a_referrer_with_no_way_to_be_paid_gets_no_rail() -> None:
    assert choose_rail(contact("X"), STRIPE) is None
    assert choose_rail(contact("X", stripe_account_id="acct_1"), set()) is None

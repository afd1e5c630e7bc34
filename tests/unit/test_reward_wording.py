"""Each reward kind is worded as what it really pays, so a referrer is never promised a
share of a first-year value the rule does not pay."""

from __future__ import annotations

from typing import Any

import pytest

from domain.models import Milestone, ReferrerType
from domain.program import Program, RewardRule
from domain.reward_wording import (
    caps_sentence,
    headline,
    ordinal,
    rewards_to_come,
    rule_terms,
)

PROGRAM = Program()


def _rule(**fields: Any) -> RewardRule:
    base = {"id": "r", "referrer_type": "partner", "milestone": "customer"}
    return RewardRule.model_validate(base | fields)


def _program(*rules: dict[str, Any], **settings: Any) -> Program:
    return Program.model_validate({"rewards": list(rules), **settings})


@pytest.mark.parametrize(
    ("fields", "words"),
    [
        ({"kind": "flat", "amount": "200.00"}, "200.00 EUR"),
        (
            {"kind": "percent_of_first_payment", "percent": "10", "cap": "500.00"},
            "10% of their first payment (up to 500.00 EUR)",
        ),
        ({"kind": "percent_of_first_year", "percent": "12.50"}, "12.5% of their first-year value"),
        ({"kind": "percent_of_deal", "percent": "15"}, "15% of their first-year value"),
        (
            {"kind": "recurring", "percent": "5", "months": 12, "cap": "50.00"},
            "5% of every invoice they pay in their first 12 months (up to 50.00 EUR per invoice)",
        ),
        (
            {"kind": "recurring", "percent": "20", "months": 1},
            "20% of every invoice they pay in their first month",
        ),
        ({"kind": "tiered", "tiers": [{"from": 1, "amount": "80.00"}]}, "80.00 EUR"),
        (
            {
                "kind": "tiered",
                "period": "year",
                "tiers": [{"from": 1, "amount": "100.00"}, {"from": 5, "amount": "150.00"}],
            },
            "100.00 EUR for your 1st to 4th referral in a calendar year, "
            "and 150.00 EUR from your 5th on",
        ),
        (
            {
                "kind": "tiered",
                "tiers": [
                    {"from": 1, "amount": "100.00"},
                    {"from": 2, "amount": "120.00"},
                    {"from": 3, "amount": "140.00"},
                    {"from": 11, "amount": "200.00"},
                ],
            },
            "100.00 EUR for your 1st referral in a calendar quarter, 120.00 EUR for your "
            "2nd, 140.00 EUR for your 3rd to 10th, and 200.00 EUR from your 11th on",
        ),
    ],
)
def test_each_reward_kind_is_worded_as_what_it_pays(fields: dict[str, Any], words: str) -> None:
    assert rule_terms(_rule(**fields), PROGRAM) == words


@pytest.mark.parametrize(
    ("n", "text"),
    [
        (1, "1st"),
        (2, "2nd"),
        (3, "3rd"),
        (4, "4th"),
        (11, "11th"),
        (12, "12th"),
        (13, "13th"),
        (21, "21st"),
        (22, "22nd"),
        (101, "101st"),
        (111, "111th"),
        (112, "112th"),
    ],
)
def test_ordinals_read_as_english(n: int, text: str) -> None:
    assert ordinal(n) == text


EMPLOYEE_RULES = (
    {
        "id": "emp-qualified",
        "referrer_type": "employee",
        "milestone": "qualified",
        "kind": "flat",
        "amount": "100.00",
    },
    {
        "id": "emp-customer",
        "referrer_type": "employee",
        "milestone": "customer",
        "kind": "flat",
        "amount": "300.00",
    },
    {
        "id": "emp-recurring",
        "referrer_type": "employee",
        "milestone": "customer",
        "kind": "recurring",
        "percent": "2",
        "months": 6,
    },
)


def test_a_new_lead_hears_of_every_later_milestone_reward_in_order() -> None:
    program = _program(*EMPLOYEE_RULES)

    assert rewards_to_come(program, ReferrerType.EMPLOYEE, Milestone.LEAD) == (
        "When they become a qualified lead, you earn 100.00 EUR. "
        "When they become a customer, you earn 300.00 EUR, plus 2% of every invoice "
        "they pay in their first 6 months."
    )


def test_a_qualified_lead_hears_only_of_what_is_still_to_come() -> None:
    program = _program(*EMPLOYEE_RULES)

    assert rewards_to_come(program, ReferrerType.EMPLOYEE, Milestone.QUALIFIED) == (
        "When they become a customer, you earn 300.00 EUR, plus 2% of every invoice "
        "they pay in their first 6 months."
    )
    assert rewards_to_come(program, ReferrerType.EMPLOYEE, Milestone.CUSTOMER) == ""
    assert rewards_to_come(program, ReferrerType.PARTNER, Milestone.LEAD) == ""


def test_the_program_caps_are_said_after_the_rewards_they_limit() -> None:
    program = _program(
        EMPLOYEE_RULES[1],
        reward_caps=[
            {"per": "referrer", "period": "month", "amount": "500.00"},
            {"per": "referrer", "period": "year", "amount": "2000.00"},
            {"per": "program", "period": "quarter", "amount": "50000.00"},
        ],
    )

    assert caps_sentence(program) == (
        "Your rewards add up to at most 500.00 EUR per calendar month and 2,000.00 EUR "
        "per calendar year. Rewards are paid while the program's budget for the calendar "
        "quarter lasts."
    )
    assert rewards_to_come(program, ReferrerType.EMPLOYEE, Milestone.QUALIFIED).endswith(
        "you earn 300.00 EUR. " + caps_sentence(program)
    )
    assert caps_sentence(_program(EMPLOYEE_RULES[1])) == ""


def test_a_model_that_may_share_the_credit_says_so_and_last_touch_does_not() -> None:
    shared = _program(EMPLOYEE_RULES[1], attribution={"model": "linear"})

    assert "shared by linear attribution" in headline(shared, ReferrerType.EMPLOYEE)
    assert "shared" not in headline(_program(EMPLOYEE_RULES[1]), ReferrerType.EMPLOYEE)


def test_the_ask_quotes_the_headline_rule_for_one_customer() -> None:
    program = _program(
        {
            "id": "partner-payment",
            "referrer_type": "partner",
            "milestone": "customer",
            "kind": "percent_of_first_payment",
            "percent": "20",
        }
    )

    assert headline(program, ReferrerType.PARTNER) == (
        "For each customer you refer, you earn 20% of their first payment."
    )
    assert headline(program, ReferrerType.CUSTOMER) == ""

"""The ``fraud`` and ``referee_discount`` sections of the rules file, checked field by field."""

from __future__ import annotations

import copy
from decimal import Decimal
from typing import Any

import pytest

from config.program import parse_program
from domain.discounts import CouponInstruction, DiscountRail, PromotionCodeInstruction
from domain.errors import ConfigError
from domain.program import Program
from tests.unit.test_program_rules import shipped_raw


def refused(**sections: Any) -> str:
    raw = copy.deepcopy(shipped_raw()) | sections
    with pytest.raises(ConfigError) as info:
        parse_program(raw, "rules.yaml")
    return str(info.value)


def test_the_shipped_rules_cap_velocity_and_give_referees_a_discount(program: Program) -> None:
    assert program.fraud.max_conversions_per_window == 5
    assert program.fraud.window_hours == 24
    assert program.referee_discount is not None
    coupon = CouponInstruction.from_program(program, DiscountRail.STRIPE)
    assert coupon is not None
    assert coupon.terms == "10% off, repeating 3 months"
    assert coupon.idempotency_key == "program:referral-friend-10:coupon"


@pytest.mark.parametrize(
    ("fraud", "field"),
    [
        ({"max_conversions_per_window": 0}, "fraud.max_conversions_per_window"),
        ({"window_hours": 0}, "fraud.window_hours"),
        ({"window_hours": "a day"}, "fraud.window_hours"),
        ({"max_per_day": 3}, "fraud.max_per_day"),
    ],
)
def test_a_wrong_fraud_setting_is_refused_naming_its_field(
    fraud: dict[str, Any], field: str
) -> None:
    assert field in refused(fraud=fraud)


@pytest.mark.parametrize(
    ("discount", "field", "why"),
    [
        ({"percent_off": 10, "amount_off": "5.00"}, "referee_discount", "exactly one"),
        ({}, "referee_discount", "exactly one"),
        ({"percent_off": 0}, "referee_discount.percent_off", "greater than 0"),
        ({"percent_off": 101}, "referee_discount.percent_off", "less than or equal to 100"),
        ({"amount_off": "0"}, "referee_discount", "more than zero"),
        ({"amount_off": "5.001"}, "referee_discount.amount_off", "decimal"),
        ({"percent_off": 10, "duration": "weekly"}, "referee_discount.duration", "once"),
        ({"percent_off": 10, "duration": "repeating"}, "referee_discount", "duration_in_months"),
        (
            {"percent_off": 10, "duration": "once", "duration_in_months": 3},
            "referee_discount",
            "duration_in_months",
        ),
        ({"percent_off": 10, "coupon_id": "has spaces"}, "referee_discount.coupon_id", "pattern"),
    ],
)
def test_a_wrong_referee_discount_is_refused_naming_its_field(
    discount: dict[str, Any], field: str, why: str
) -> None:
    section = {"coupon_id": "friend-10", "duration": "once"} | discount
    message = refused(referee_discount=section)
    assert field in message
    assert why in message


def test_without_a_referee_discount_section_the_program_is_one_sided() -> None:
    raw = copy.deepcopy(shipped_raw())
    del raw["referee_discount"]
    program = parse_program(raw)
    assert program.referee_discount is None
    assert CouponInstruction.from_program(program, DiscountRail.STRIPE) is None


def test_an_amount_off_coupon_is_in_the_program_currency_in_minor_units() -> None:
    raw = copy.deepcopy(shipped_raw())
    raw["referee_discount"] = {"coupon_id": "friend-50", "amount_off": "50.00"}
    coupon = CouponInstruction.from_program(parse_program(raw), DiscountRail.LEDGER_ONLY)
    assert coupon is not None
    assert coupon.amount_off is not None
    assert (coupon.amount_off.amount_minor, coupon.amount_off.currency) == (5000, "EUR")
    assert coupon.percent_off is None
    assert coupon.terms == "50.00 EUR off, once"
    assert coupon.idempotency_key == "program:friend-50:coupon:ledger"


def test_a_fractional_percentage_reads_without_trailing_zeros() -> None:
    raw = copy.deepcopy(shipped_raw())
    raw["referee_discount"] = {"coupon_id": "f", "percent_off": "12.50", "duration": "forever"}
    coupon = CouponInstruction.from_program(parse_program(raw), DiscountRail.STRIPE)
    assert coupon is not None
    assert coupon.percent_off == Decimal("12.5")
    assert coupon.terms == "12.5% off, forever"


def test_a_codes_promotion_code_key_is_fixed_per_code_and_rail() -> None:
    code = "RABCDEFGHIJKLMNOPQRST"
    assert PromotionCodeInstruction.key_for(code) == f"code:{code}:promotion_code"
    assert (
        PromotionCodeInstruction.key_for(code, DiscountRail.LEDGER_ONLY)
        == f"code:{code}:promotion_code:ledger"
    )

"""What-if: the same history under other rules, compared without paying anything."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal

from domain.models import Contact, Conversion, Milestone, ReferrerType, derived_id
from domain.money import Money
from domain.program import Program
from domain.whatif import compare, outcome

AT = datetime(2026, 9, 1, tzinfo=UTC)


def _rules(raw: dict[str, object]) -> Program:
    return Program.model_validate(raw)


CURRENT = _rules(
    {
        "rewards": [
            {
                "id": "c",
                "referrer_type": "customer",
                "milestone": "customer",
                "kind": "flat",
                "amount": "200.00",
            },
            {
                "id": "p",
                "referrer_type": "partner",
                "milestone": "customer",
                "kind": "percent_of_deal",
                "percent": "15",
            },
        ]
    }
)


def _conversion(
    n: int, referrer: str, deal: int, milestone: Milestone = Milestone.CUSTOMER
) -> Conversion:
    return Conversion(
        conversion_id=derived_id("conversion", str(n)),
        source_event=f"t:{n}",
        referral_code="R" + "A" * 20,
        referrer_id=referrer,
        referee_account_id=f"R{n}",
        referee_contact_id=f"RC{n}",
        milestone=milestone,
        occurred_at=AT,
        amount=Money(deal, "EUR"),
    )


REFERRERS = {
    "cust": Contact("cust", "A1", "Cleo", None, ReferrerType.CUSTOMER),
    "part": Contact("part", "A2", "Pat", None, ReferrerType.PARTNER),
}
HISTORY = [
    _conversion(1, "cust", 1_000_000),
    _conversion(2, "cust", 2_000_000),
    _conversion(3, "part", 2_000_000),  # 15% = 3,000.00 EUR: needs approval
    _conversion(4, "part", 100_000, Milestone.QUALIFIED),  # no rule for qualified
]


def test_the_current_rules_give_what_the_ledger_would_hold() -> None:
    result = outcome(HISTORY, REFERRERS, CURRENT)
    assert (result.rewards, result.cost) == (3, Money(340_000, "EUR"))
    assert result.by_type == {
        "customer": (2, Money(40_000, "EUR")),
        "partner": (1, Money(300_000, "EUR")),
    }
    assert (result.auto_pay, result.approval) == (2, 1)
    assert result.revenue == Money(5_000_000, "EUR")
    assert result.roi == Decimal(5_000_000 - 340_000) / Decimal(340_000)


def test_a_higher_flat_reward_raises_the_cost_by_the_difference_per_conversion() -> None:
    proposed = _rules(
        {
            **CURRENT.model_dump(mode="json"),
            "rewards": [
                {**CURRENT.rewards[0].model_dump(mode="json"), "amount": "300.00"},
                CURRENT.rewards[1].model_dump(mode="json"),
            ],
        }
    )
    result = compare(HISTORY, REFERRERS, CURRENT, proposed)
    assert result.cost_difference == Money(20_000, "EUR")
    assert result.changed_rules == ("c",)


def test_a_lower_threshold_sends_more_rewards_to_a_person() -> None:
    proposed = _rules(
        {**CURRENT.model_dump(mode="json"), "approvals": {"auto_payout_threshold": "150.00"}}
    )
    result = compare(HISTORY, REFERRERS, CURRENT, proposed)
    assert (result.current.approval, result.proposed.approval) == (1, 3)
    assert result.cost_difference.is_zero
    assert result.changed_rules == ()


def test_roi_is_undefined_when_nothing_would_be_paid() -> None:
    assert outcome([], REFERRERS, CURRENT).roi is None


def test_a_conversion_whose_referrer_is_unknown_is_counted_not_rewarded() -> None:
    result = outcome([_conversion(9, "ghost", 1_000_000)], REFERRERS, CURRENT)
    assert (result.rewards, result.refused) == (0, 1)

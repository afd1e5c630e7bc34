"""What-if: the same history under other rules, compared without paying anything."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal

from domain.models import Contact, Conversion, Milestone, ReferrerType, derived_id
from domain.money import Money
from domain.program import Program
from domain.touchpoints import StoredTouchpoint, TouchpointKind
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


# -- attribution: the proposed model splits the stored touchpoints -------------------------

PARTNERS = {
    "first": Contact("first", "F1", "Fay", None, ReferrerType.PARTNER),
    "last": Contact("last", "L1", "Lou", None, ReferrerType.PARTNER),
}


def _partner_deal(deal: int = 2_000_000) -> Conversion:
    return _conversion(20, "last", deal)


def _touch(referrer: str, days_before: int, ref: str) -> StoredTouchpoint:
    return StoredTouchpoint(
        referrer, AT - timedelta(days=days_before), TouchpointKind.REGISTRATION, ref
    )


def _with_model(model: str, half_life_days: int = 7) -> Program:
    return _rules(
        {
            **CURRENT.model_dump(mode="json"),
            "attribution": {"model": model, "half_life_days": half_life_days},
        }
    )


def test_a_proposed_attribution_model_moves_the_credit_between_the_referrers_who_touched() -> None:
    deal = _partner_deal()  # 15% of 20,000.00 EUR: 3,000.00 EUR to share
    touches = {deal.conversion_id: [_touch("first", 10, "reg-1")]}

    result = compare([deal], PARTNERS, CURRENT, _with_model("first_touch"), touchpoints=touches)

    assert result.current.by_referrer == {"last": (1, Money(300_000, "EUR"))}
    assert result.proposed.by_referrer == {"first": (1, Money(300_000, "EUR"))}
    assert result.cost_difference.is_zero
    assert result.changed_rules == ("attribution",)
    assert [(c.referrer_id, c.difference) for c in result.referrer_changes()] == [
        ("first", Money(300_000, "EUR")),
        ("last", Money(-300_000, "EUR")),
    ]


def test_a_linear_model_splits_one_deal_exactly_between_its_three_referrers() -> None:
    deal = _partner_deal(1_000_000)  # 1,500.00 EUR to share
    touches = {
        deal.conversion_id: [
            _touch("first", 10, "reg-1"),
            _touch("mid", 7, "click-0"),
            _touch("first", 5, "click-1"),
        ]
    }
    people = PARTNERS | {"mid": Contact("mid", "M1", "Mo", None, ReferrerType.PARTNER)}

    result = outcome([deal], people, _with_model("linear"), touchpoints=touches)

    # Four touches: "first" touched twice, so it earns half; the parts add up exactly.
    assert result.by_referrer == {
        "first": (1, Money(75_000, "EUR")),
        "last": (1, Money(37_500, "EUR")),
        "mid": (1, Money(37_500, "EUR")),
    }
    assert result.cost == Money(150_000, "EUR")


def test_time_decay_replays_with_the_proposed_half_life() -> None:
    deal = _partner_deal()
    touches = {deal.conversion_id: [_touch("first", 7, "reg-1")]}

    week = outcome([deal], PARTNERS, _with_model("time_decay", 7), touchpoints=touches)
    month = outcome([deal], PARTNERS, _with_model("time_decay", 30), touchpoints=touches)

    # A touch one half-life old weighs half of the code used at the conversion: 1/3.
    assert week.by_referrer["first"] == (1, Money(100_000, "EUR"))
    assert week.by_referrer["last"] == (1, Money(200_000, "EUR"))
    # A longer half-life ages the older touch less, so it earns more.
    assert month.by_referrer["first"][1] > week.by_referrer["first"][1]
    assert month.cost == week.cost == Money(300_000, "EUR")


def test_an_unknown_referrer_refuses_the_conversion_only_under_a_model_that_credits_it() -> None:
    deal = _partner_deal()
    touches = {deal.conversion_id: [_touch("ghost", 10, "reg-9")]}

    now = outcome([deal], PARTNERS, CURRENT, touchpoints=touches)
    then = outcome([deal], PARTNERS, _with_model("first_touch"), touchpoints=touches)

    assert (now.rewards, now.refused) == (1, 0)  # last touch: the ghost earns nothing
    assert (then.rewards, then.refused) == (0, 1)


def test_without_stored_touchpoints_every_model_credits_the_code_owner() -> None:
    deal = _partner_deal()
    for model in ("first_touch", "linear", "time_decay", "position_based"):
        result = outcome([deal], PARTNERS, _with_model(model))
        assert result.by_referrer == {"last": (1, Money(300_000, "EUR"))}

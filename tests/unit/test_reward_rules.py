"""Reward rule kinds (first payment, first year, recurring, tiered), caps per referrer and
per program, and multi-touch credit, as pure rules."""

from __future__ import annotations

import copy
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest

from config.program import parse_program
from domain.errors import ConfigError, InputRejected
from domain.models import Contact, Conversion, Milestone, ReferrerType, Reward
from domain.money import Money
from domain.program import Period, Program, RewardKind
from domain.rewards import (
    Invoice,
    RewardBook,
    add_months,
    compute_rewards,
    month_number,
    period_of,
    recurring_rewards,
    recurring_rule_id,
)
from domain.touchpoints import StoredTouchpoint, TouchpointKind, credits_for
from domain.whatif import compare, outcome
from tests.conftest import contact

AT = datetime(2026, 10, 1, 10, 0, tzinfo=UTC)
PARTNER = contact("PART1", "P1", kind=ReferrerType.PARTNER)
PARTNER2 = contact("PART2", "P2", kind=ReferrerType.PARTNER)
EUR = "EUR"


def eur(text: str) -> Money:
    return Money.parse(text, EUR)


def conversion(
    n: int = 1,
    *,
    at: datetime = AT,
    amount: str | None = "10000.00",
    source: str = "crm",
    referrer: Contact = PARTNER,
    milestone: Milestone = Milestone.CUSTOMER,
) -> Conversion:
    return Conversion(
        conversion_id=f"conv-{n}",
        source_event=f"{source}:evt-{n}",
        referral_code="RABCDEFGHIJKLMNOPQRST",
        referrer_id=referrer.contact_id,
        referee_account_id=f"NEW{n}",
        referee_contact_id=None,
        milestone=milestone,
        occurred_at=at,
        amount=None if amount is None else eur(amount),
    )


def rules(*rule: dict[str, Any], **extra: Any) -> Program:
    base = {"referrer_type": "partner", "milestone": "customer"}
    return parse_program({"rewards": [{**base, **r} for r in rule], **extra})


def refused(raw: dict[str, Any]) -> str:
    with pytest.raises(ConfigError) as info:
        parse_program(raw, "rules.yaml")
    return str(info.value)


SOLE = [(PARTNER, Decimal(1))]
TIERED: dict[str, Any] = {
    "id": "partner-tiers",
    "kind": "tiered",
    "tiers": [
        {"from": 1, "amount": "100.00"},
        {"from": 5, "amount": "150.00"},
        {"from": 10, "amount": "250.00"},
    ],
    "period": "quarter",
}
RECURRING = {"id": "partner-recurring", "kind": "recurring", "percent": "10", "months": 3}


# --- the rules file ------------------------------------------------------------------------


def test_percent_of_deal_still_reads_as_percent_of_first_year() -> None:
    program = rules({"id": "p", "kind": "percent_of_deal", "percent": "15"})
    (rule,) = program.rewards
    assert rule.kind is RewardKind.PERCENT_OF_FIRST_YEAR
    # An alias of the same member, which mypy takes for a second one.
    assert rule.kind is RewardKind.PERCENT_OF_DEAL  # type: ignore[comparison-overlap]


@pytest.mark.parametrize(
    ("rule", "field", "reason"),
    [
        ({"id": "r", "kind": "recurring", "percent": "10"}, "rewards.0", "needs 'months'"),
        ({"id": "r", "kind": "recurring", "months": 3}, "rewards.0", "needs 'percent'"),
        (
            {"id": "r", "kind": "recurring", "percent": "10", "months": 61},
            "rewards.0.months",
            "less than or equal to 60",
        ),
        ({"id": "t", "kind": "tiered"}, "rewards.0", "needs 'tiers'"),
        (
            {"id": "t", "kind": "tiered", "tiers": [{"from": 2, "amount": "1.00"}]},
            "rewards.0",
            "start 'from' 1",
        ),
        (
            {
                "id": "t",
                "kind": "tiered",
                "tiers": [{"from": 1, "amount": "1.00"}, {"from": 1, "amount": "2.00"}],
            },
            "rewards.0",
            "ascending",
        ),
        (
            {
                "id": "t",
                "kind": "tiered",
                "tiers": [{"from": 1, "amount": "1.00"}],
                "period": "week",
            },
            "rewards.0.period",
            "month",
        ),
        ({"id": "f", "kind": "flat", "amount": "1.00", "months": 2}, "rewards.0", "recurring"),
        (
            {"id": "p", "kind": "percent_of_first_payment", "percent": "5", "amount": "1.00"},
            "rewards.0",
            "'amount' is for flat rules",
        ),
    ],
)
def test_a_rule_missing_or_misusing_a_field_is_refused_naming_it(
    rule: dict[str, Any], field: str, reason: str
) -> None:
    message = refused({"rewards": [{"referrer_type": "partner", "milestone": "customer", **rule}]})
    assert field in message
    assert reason in message


def test_a_tier_amount_with_too_many_decimals_is_refused_naming_the_tier() -> None:
    bad = copy.deepcopy(TIERED)
    bad["tiers"][1]["amount"] = "150.001"
    message = refused({"rewards": [{"referrer_type": "partner", "milestone": "customer", **bad}]})
    assert "rewards.0.tiers.1.amount" in message
    assert "more decimals" in message


def test_a_recurring_rule_id_must_leave_room_for_the_invoice() -> None:
    message = refused(
        {
            "rewards": [
                {"referrer_type": "partner", "milestone": "customer", **RECURRING, "id": "r" * 31}
            ]
        }
    )
    assert "at most 30 characters" in message


@pytest.mark.parametrize(
    ("cap", "field"),
    [
        ({"per": "team", "period": "year", "amount": "1.00"}, "reward_caps.0.per"),
        ({"per": "referrer", "period": "decade", "amount": "1.00"}, "reward_caps.0.period"),
        ({"per": "referrer", "period": "year", "amount": "1.001"}, "reward_caps.0.amount"),
        ({"per": "referrer", "period": "year", "amount": 2000}, "reward_caps.0.amount"),
        ({"per": "referrer", "period": "year"}, "reward_caps.0.amount"),
    ],
)
def test_a_wrong_cap_is_refused_naming_its_field(cap: dict[str, Any], field: str) -> None:
    assert field in refused({"reward_caps": [cap]})


def test_the_half_life_must_be_positive() -> None:
    assert "attribution.half_life_days" in refused({"attribution": {"half_life_days": 0}})


# --- percent of the first payment and of the first year --------------------------------------


def test_percent_of_first_payment_pays_its_share_of_the_recorded_first_payment() -> None:
    program = rules({"id": "fp", "kind": "percent_of_first_payment", "percent": "20"})
    (reward,) = compute_rewards(conversion(), SOLE, program, first_payment=eur("99.00"))
    assert reward.amount == eur("19.80")
    assert "20% of the first payment = 19.80 EUR" in reward.explanation


def test_a_stripe_conversion_is_its_own_first_payment() -> None:
    program = rules({"id": "fp", "kind": "percent_of_first_payment", "percent": "20"})
    (reward,) = compute_rewards(conversion(source="stripe", amount="49.00"), SOLE, program)
    assert reward.amount == eur("9.80")


def test_percent_of_first_payment_without_a_recorded_payment_is_refused() -> None:
    program = rules({"id": "fp", "kind": "percent_of_first_payment", "percent": "20"})
    with pytest.raises(InputRejected) as info:
        compute_rewards(conversion(source="crm"), SOLE, program)
    assert (info.value.record, info.value.field) == ("crm:evt-1", "amount")
    assert "first payment" in info.value.reason


def test_percent_of_first_year_pays_its_share_of_the_deal_up_to_its_cap() -> None:
    program = rules(
        {"id": "fy", "kind": "percent_of_first_year", "percent": "15", "cap": "1000.00"}
    )
    (small,) = compute_rewards(conversion(amount="2000.00"), SOLE, program)
    (large,) = compute_rewards(conversion(2, amount="20000.00"), SOLE, program)
    assert (small.amount, large.amount) == (eur("300.00"), eur("1000.00"))


# --- tiered -----------------------------------------------------------------------------------


def test_tiers_pay_by_the_referrers_successful_referrals_in_the_quarter() -> None:
    program = rules(TIERED)
    book = RewardBook(program)
    amounts = [
        compute_rewards(conversion(n, at=AT + timedelta(hours=n)), SOLE, program, book=book)[
            0
        ].amount
        for n in range(1, 12)
    ]
    assert amounts == [eur("100.00")] * 4 + [eur("150.00")] * 5 + [eur("250.00")] * 2


def test_a_new_quarter_counts_from_one_again_and_the_explanation_names_the_count() -> None:
    program = rules(TIERED)
    book = RewardBook(program)
    for n in range(1, 6):
        compute_rewards(conversion(n, at=AT + timedelta(days=n)), SOLE, program, book=book)
    (next_quarter,) = compute_rewards(
        conversion(9, at=datetime(2027, 1, 2, tzinfo=UTC)), SOLE, program, book=book
    )
    assert next_quarter.amount == eur("100.00")
    assert "referral #1 in 2027-Q1" in next_quarter.explanation
    assert book.terms[next_quarter.reward_id].referral_number == 1


class History:
    """A ledger's history, in memory."""

    def __init__(
        self,
        referrals: Sequence[tuple[str, Milestone, datetime, str]] = (),
        earned: Sequence[tuple[str, datetime, Money]] = (),
    ) -> None:
        self._referrals = list(referrals)
        self._earned = list(earned)

    def referrals(
        self, referrer_id: str, milestone: Milestone, start: datetime, end: datetime
    ) -> Sequence[tuple[datetime, str]]:
        return [
            (at, cid)
            for r, m, at, cid in self._referrals
            if r == referrer_id and m is milestone and start <= at < end
        ]

    def earned(self, referrer_id: str | None, start: datetime, end: datetime) -> Money:
        return Money(
            sum(
                m.amount_minor
                for r, at, m in self._earned
                if (referrer_id is None or r == referrer_id) and start <= at < end
            ),
            EUR,
        )


def test_the_tier_counts_the_referrals_the_ledger_already_rewarded_in_the_period() -> None:
    program = rules(TIERED)
    later = AT + timedelta(days=20)
    earlier = [
        (PARTNER.contact_id, Milestone.CUSTOMER, AT + timedelta(days=d), f"old-{d}")
        for d in range(1, 5)
    ]
    last_quarter = [(PARTNER.contact_id, Milestone.CUSTOMER, AT - timedelta(days=1), "q3")]
    book = RewardBook(program, History(referrals=[*earlier[:1], *last_quarter]))
    (reward,) = compute_rewards(conversion(at=later), SOLE, program, book=book)
    assert "(referral #2 in 2026-Q4)" in reward.explanation
    assert "tier from referral #1 per quarter: 100.00 EUR" in reward.explanation
    book = RewardBook(program, History(referrals=earlier))
    (fifth,) = compute_rewards(conversion(at=later), SOLE, program, book=book)
    assert fifth.amount == eur("150.00")


def test_a_referral_counts_only_those_before_it_whatever_order_they_are_computed_in() -> None:
    program = rules(TIERED)
    later = [
        (PARTNER.contact_id, Milestone.CUSTOMER, AT + timedelta(days=d), f"later-{d}")
        for d in range(1, 8)
    ]
    (reward,) = compute_rewards(
        conversion(), SOLE, program, book=RewardBook(program, History(later))
    )
    assert reward.amount == eur("100.00")


# --- recurring --------------------------------------------------------------------------------


def invoice(ref: str, at: datetime, amount: str = "50.00", **extra: Any) -> Invoice:
    return Invoice(ref=ref, record=f"stripe:evt_{ref}", amount=eur(amount), paid_at=at, **extra)


def test_each_invoice_within_the_months_earns_its_own_reward_and_later_ones_nothing() -> None:
    program = rules(RECURRING, holding_days=14)
    start = datetime(2026, 1, 31, 12, 0, tzinfo=UTC)
    paid = [
        invoice("in_1", start, of_conversion=True),
        invoice("in_2", datetime(2026, 2, 28, 12, 0, tzinfo=UTC)),
        invoice("in_3", datetime(2026, 3, 31, 12, 0, tzinfo=UTC)),
        invoice("in_4", datetime(2026, 4, 30, 12, 0, tzinfo=UTC)),  # 3 months after: out
    ]
    rewards = recurring_rewards(conversion(at=start), SOLE, paid, program)
    assert [r.rule_id for r in rewards] == [
        "partner-recurring@in_1",
        "partner-recurring@in_2",
        "partner-recurring@in_3",
    ]
    assert all(r.amount == eur("5.00") for r in rewards)
    assert len({r.reward_id for r in rewards}) == 3
    assert rewards[1].reward_id == Reward.derive_id(
        "conv-1", "partner-recurring@in_2", PARTNER.contact_id
    )
    assert rewards[1].payable_at == paid[1].paid_at + timedelta(days=14)
    assert "invoice in_2" in rewards[1].explanation
    assert "month 2 of 3" in rewards[1].explanation  # 31 Jan + 1 month is 28 Feb
    assert "month 3 of 3" in rewards[2].explanation


def test_a_recurring_rule_earns_nothing_at_the_conversion_itself() -> None:
    assert compute_rewards(conversion(), SOLE, rules(RECURRING)) == []


def test_an_invoice_paid_before_the_conversion_earns_nothing_unless_it_is_its_payment() -> None:
    program = rules(RECURRING)
    before = invoice("in_0", AT - timedelta(minutes=1))
    own = invoice("in_1", AT - timedelta(seconds=2), of_conversion=True)
    rewards = recurring_rewards(conversion(), SOLE, [before, own], program)
    assert [r.rule_id for r in rewards] == ["partner-recurring@in_1"]


def test_computing_recurring_rewards_again_gives_the_same_ids() -> None:
    program = rules(RECURRING)
    paid = [invoice("in_1", AT), invoice("in_2", AT + timedelta(days=30))]
    first = recurring_rewards(conversion(), SOLE, paid, program)
    again = recurring_rewards(conversion(), SOLE, list(reversed(paid)), program)
    assert [r.reward_id for r in first] == [r.reward_id for r in again]


def test_an_invoice_in_another_currency_is_refused_naming_it() -> None:
    program = rules(RECURRING)
    foreign = Invoice("in_9", "stripe:evt_9", Money(100, "USD"), AT)
    with pytest.raises(InputRejected) as info:
        recurring_rewards(conversion(), SOLE, [foreign], program)
    assert (info.value.record, info.value.field) == ("stripe:evt_9", "currency")


def test_a_very_long_invoice_id_is_kept_short_and_stable() -> None:
    (rule,) = rules(RECURRING).rewards
    long_ref = "in_" + "x" * 100
    assert recurring_rule_id(rule, long_ref) == recurring_rule_id(rule, long_ref)
    assert len(recurring_rule_id(rule, long_ref)) <= 64


def test_calendar_months_and_periods() -> None:
    assert add_months(datetime(2026, 1, 31, tzinfo=UTC), 1) == datetime(2026, 2, 28, tzinfo=UTC)
    assert add_months(datetime(2026, 3, 15, tzinfo=UTC), -3) == datetime(2025, 12, 15, tzinfo=UTC)
    assert month_number(datetime(2026, 1, 31, tzinfo=UTC), datetime(2026, 3, 1, tzinfo=UTC)) == 2
    label, start, end = period_of(datetime(2026, 11, 5, tzinfo=UTC), Period.QUARTER)
    assert (label, start, end) == (
        "2026-Q4",
        datetime(2026, 10, 1, tzinfo=UTC),
        datetime(2027, 1, 1, tzinfo=UTC),
    )
    assert period_of(AT, Period.YEAR)[0] == "2026"
    assert period_of(AT, Period.MONTH)[0] == "2026-10"


# --- caps -------------------------------------------------------------------------------------

FLAT_800 = {"id": "flat", "kind": "flat", "amount": "800.00"}
PER_REFERRER = {"per": "referrer", "period": "year", "amount": "2000.00"}


def test_a_referrer_cap_reduces_the_reward_that_would_pass_it_to_what_is_left() -> None:
    program = rules(FLAT_800, reward_caps=[PER_REFERRER])
    book = RewardBook(program)
    amounts = [
        compute_rewards(conversion(n), SOLE, program, book=book)[0].amount for n in range(1, 5)
    ]
    assert amounts == [eur("800.00"), eur("800.00"), eur("400.00"), eur("0.00")]


def test_a_reward_capped_to_nothing_is_kept_with_the_reason() -> None:
    program = rules(FLAT_800, reward_caps=[PER_REFERRER])
    book = RewardBook(program, History(earned=[(PARTNER.contact_id, AT, eur("2000.00"))]))
    (reward,) = compute_rewards(conversion(), SOLE, program, book=book)
    assert reward.amount == eur("0.00")
    assert "capped by the referrer cap of 2,000.00 EUR per year" in reward.explanation
    assert "2026: 2,000.00 EUR earned before" in reward.explanation
    terms = book.terms[reward.reward_id]
    assert terms.capped_by == "referrer/year 2026"
    assert terms.uncapped == eur("800.00")


def test_the_referrer_cap_is_per_referrer_and_per_period() -> None:
    program = rules(FLAT_800, reward_caps=[PER_REFERRER])
    book = RewardBook(
        program,
        History(earned=[(PARTNER.contact_id, datetime(2025, 12, 31, tzinfo=UTC), eur("2000.00"))]),
    )
    (this_year,) = compute_rewards(conversion(), SOLE, program, book=book)
    (other,) = compute_rewards(conversion(2), [(PARTNER2, Decimal(1))], program, book=book)
    assert (this_year.amount, other.amount) == (eur("800.00"), eur("800.00"))


def test_the_program_budget_caps_every_referrer_together() -> None:
    program = rules(
        FLAT_800, reward_caps=[{"per": "program", "period": "quarter", "amount": "1000.00"}]
    )
    book = RewardBook(program)
    first = compute_rewards(conversion(1), SOLE, program, book=book)[0]
    second = compute_rewards(conversion(2), [(PARTNER2, Decimal(1))], program, book=book)[0]
    assert (first.amount, second.amount) == (eur("800.00"), eur("200.00"))
    assert "program cap of 1,000.00 EUR per quarter" in second.explanation


def test_cancellations_in_the_ledger_give_room_back() -> None:
    program = rules(FLAT_800, reward_caps=[PER_REFERRER])
    history = History(
        earned=[
            (PARTNER.contact_id, AT, eur("2000.00")),
            (PARTNER.contact_id, AT, -eur("500.00")),  # cancelled
        ]
    )
    (reward,) = compute_rewards(conversion(), SOLE, program, book=RewardBook(program, history))
    assert reward.amount == eur("500.00")


def test_a_reward_already_recorded_is_not_computed_again_nor_counted_twice() -> None:
    program = rules(FLAT_800, reward_caps=[PER_REFERRER])
    recorded = Reward.derive_id("conv-1", "flat", PARTNER.contact_id)
    history = History(earned=[(PARTNER.contact_id, AT, eur("800.00"))])
    book = RewardBook(program, history, recorded={recorded})
    assert compute_rewards(conversion(1), SOLE, program, book=book) == []
    (second,) = compute_rewards(conversion(2), SOLE, program, book=book)
    (third,) = compute_rewards(conversion(3), SOLE, program, book=book)
    assert (second.amount, third.amount) == (eur("800.00"), eur("400.00"))


def test_a_recurring_reward_counts_in_the_period_of_its_invoice() -> None:
    program = rules(
        {**RECURRING, "months": 12},
        reward_caps=[{"per": "referrer", "period": "month", "amount": "5.00"}],
    )
    paid = [invoice(f"in_{m}", add_months(AT, m), "50.00") for m in range(3)]
    paid.append(invoice("in_0b", AT + timedelta(days=1), "50.00"))
    rewards = recurring_rewards(conversion(), SOLE, paid, program)
    by_ref = {r.rule_id.split("@")[1]: r.amount for r in rewards}
    assert by_ref == {
        "in_0": eur("5.00"),
        "in_0b": eur("0.00"),  # same month as in_0: its cap is used up
        "in_1": eur("5.00"),
        "in_2": eur("5.00"),
    }


# --- multi-touch --------------------------------------------------------------------------


def touch(referrer: Contact, days_before: int, kind: TouchpointKind, ref: str) -> StoredTouchpoint:
    return StoredTouchpoint(referrer.contact_id, AT - timedelta(days=days_before), kind, ref)


def test_linear_credit_over_touchpoints_splits_the_reward_and_explains_the_share() -> None:
    program = rules(
        {"id": "fy", "kind": "percent_of_first_year", "percent": "10"},
        attribution={"model": "linear"},
    )
    conv = conversion(amount="1000.00")
    touches = [touch(PARTNER2, 10, TouchpointKind.CODE, "lead-conv")]
    weights = credits_for(conv, touches, "linear", Decimal(7))
    assert weights == [(PARTNER2.contact_id, Decimal(1)), (PARTNER.contact_id, Decimal(1))]
    people = {PARTNER.contact_id: PARTNER, PARTNER2.contact_id: PARTNER2}
    rewards = compute_rewards(conv, [(people[r], w) for r, w in weights], program)
    assert {r.referrer_id: r.amount for r in rewards} == {
        PARTNER.contact_id: eur("50.00"),
        PARTNER2.contact_id: eur("50.00"),
    }
    for reward in rewards:
        assert reward.attribution_model == "linear"
        assert "linear credit 50%" in reward.explanation
        assert "50.00 EUR of 100.00 EUR" in reward.explanation


def test_last_touch_keeps_crediting_the_code_the_referee_converted_with() -> None:
    conv = conversion()
    touches = [
        touch(PARTNER2, 3, TouchpointKind.REGISTRATION, "reg-1"),
        StoredTouchpoint(PARTNER2.contact_id, AT, TouchpointKind.ASK_CLICK, "sg-1"),
    ]
    assert credits_for(conv, touches, "last_touch", Decimal(7)) == [
        (PARTNER.contact_id, Decimal(1))
    ]
    assert credits_for(conv, touches, "first_touch", Decimal(7)) == [
        (PARTNER2.contact_id, Decimal(1))
    ]


def test_touches_after_the_conversion_do_not_count() -> None:
    conv = conversion()
    late = StoredTouchpoint(PARTNER2.contact_id, AT + timedelta(days=1), TouchpointKind.CODE, "x")
    assert credits_for(conv, [late], "linear", Decimal(7)) == [(PARTNER.contact_id, Decimal(1))]


def test_the_half_life_from_the_program_weighs_older_touches_less() -> None:
    conv = conversion()
    touches = [touch(PARTNER2, 14, TouchpointKind.CODE, "lead")]
    weights = dict(credits_for(conv, touches, "time_decay", Decimal(14)))
    assert weights[PARTNER2.contact_id] == Decimal("0.5")
    assert weights[PARTNER.contact_id] == Decimal(1)


# --- what-if ------------------------------------------------------------------------------


def test_what_if_replays_tiers_caps_and_recurring_invoices_in_time_order() -> None:
    people = {PARTNER.contact_id: PARTNER}
    history = [conversion(n, at=AT + timedelta(days=n)) for n in range(1, 7)]
    invoices = {"conv-1": [invoice("in_1", AT + timedelta(days=1), "100.00", of_conversion=True)]}
    tiered = rules(TIERED)
    result = outcome(history, people, tiered)
    assert (result.rewards, result.cost) == (6, eur("700.00"))  # 4 x 100, then 2 x 150
    capped = rules(TIERED, reward_caps=[{"per": "referrer", "period": "year", "amount": "450.00"}])
    limited = outcome(history, people, capped)
    assert (limited.rewards, limited.cost, limited.capped) == (5, eur("450.00"), 1)
    recurring = rules(RECURRING)
    assert outcome(history, people, recurring, invoices=invoices).cost == eur("10.00")
    both = compare(history, people, tiered, capped)
    assert both.changed_rules == ("reward_caps",)

"""Attribution: conversions from coded events, and how credit is split among referrers."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from domain.attribution import MODELS, Touchpoint, conversion_from_event, credit_weights, split
from domain.errors import InputRejected
from domain.models import Contact, EventType, Milestone, SourceEvent, derived_id
from domain.money import Money
from tests.conftest import contact

CODE = "RABCDEFGHIJKLMNOPQRST"
OWNER = contact("REF1", "A9")
OWNERS: dict[str, Contact] = {CODE: OWNER}
CONVERTED = datetime(2026, 10, 30, 15, 0, tzinfo=UTC)


def coded(type_: EventType, event_id: str = "e1", **fields: Any) -> SourceEvent:
    fields.setdefault("referral_code", CODE)
    fields.setdefault("account_id", "NEW1")
    fields.setdefault("contact_id", "NEWC1")
    return SourceEvent(source="crm", event_id=event_id, type=type_, occurred_at=CONVERTED, **fields)


# --- conversion_from_event -------------------------------------------------------------


@pytest.mark.parametrize(
    ("type_", "milestone"),
    [
        (EventType.SIGNUP, Milestone.LEAD),
        (EventType.DEAL_QUALIFIED, Milestone.QUALIFIED),
        (EventType.DEAL_WON, Milestone.CUSTOMER),
    ],
)
def test_a_coded_event_becomes_a_conversion_at_its_milestone(
    type_: EventType, milestone: Milestone
) -> None:
    source = coded(type_, amount=Money.parse("12000.00", "EUR"), referee_email_domain="new.io")
    conversion = conversion_from_event(source, OWNERS, "EUR")
    assert conversion is not None
    assert conversion.milestone is milestone
    assert conversion.referrer_id == OWNER.contact_id
    assert conversion.referral_code == CODE
    assert conversion.source_event == source.key
    assert conversion.referee_account_id == "NEW1"
    assert conversion.referee_contact_id == "NEWC1"
    assert conversion.occurred_at == CONVERTED
    assert conversion.amount == Money.parse("12000.00", "EUR")
    assert conversion.referee_email_domain == "new.io"


def test_a_conversion_id_is_derived_from_the_source_event() -> None:
    first = conversion_from_event(coded(EventType.SIGNUP), OWNERS, "EUR")
    again = conversion_from_event(coded(EventType.SIGNUP), OWNERS, "EUR")
    other = conversion_from_event(coded(EventType.SIGNUP, "e2"), OWNERS, "EUR")
    assert first is not None
    assert again is not None
    assert other is not None
    assert first.conversion_id == again.conversion_id
    assert first.conversion_id != other.conversion_id
    assert first.conversion_id == derived_id("conversion", "crm:e1")


def test_a_code_typed_in_lowercase_with_hyphens_is_attributed_to_its_owner() -> None:
    typed = "r-" + CODE[1:].lower()
    conversion = conversion_from_event(coded(EventType.SIGNUP, referral_code=typed), OWNERS, "EUR")
    assert conversion is not None
    assert conversion.referral_code == CODE
    assert conversion.referrer_id == OWNER.contact_id


def test_an_event_without_a_referral_code_is_no_conversion() -> None:
    assert (
        conversion_from_event(coded(EventType.DEAL_WON, referral_code=None), OWNERS, "EUR") is None
    )


@pytest.mark.parametrize("type_", [EventType.RENEWAL, EventType.NPS_RESPONSE])
def test_a_coded_event_of_a_type_with_no_milestone_is_no_conversion(type_: EventType) -> None:
    assert conversion_from_event(coded(type_), OWNERS, "EUR") is None


def assert_rejected(source: SourceEvent, field: str, reason: str) -> None:
    with pytest.raises(InputRejected) as info:
        conversion_from_event(source, OWNERS, "EUR")
    assert info.value.record == source.key
    assert info.value.field == field
    assert reason in info.value.reason
    assert source.key in str(info.value)
    assert field in str(info.value)


def test_an_unknown_referral_code_is_rejected_naming_the_record_and_field() -> None:
    unknown = "RZZZZZZZZZZZZZZZZZZZZ"
    assert_rejected(coded(EventType.SIGNUP, referral_code=unknown), "referral_code", "unknown")


@pytest.mark.parametrize("code", ["R123", "hello", "", CODE + "X"])
def test_a_malformed_referral_code_is_rejected_naming_the_record_and_field(code: str) -> None:
    assert_rejected(coded(EventType.SIGNUP, referral_code=code), "referral_code", "malformed")


def test_a_conversion_in_another_currency_is_rejected_naming_the_amount() -> None:
    dollars = coded(EventType.DEAL_WON, amount=Money.parse("100.00", "USD"))
    assert_rejected(dollars, "amount", "USD")


def test_a_negative_conversion_amount_is_rejected_naming_the_amount() -> None:
    refund = coded(EventType.DEAL_WON, amount=Money.parse("-100.00", "EUR"))
    assert_rejected(refund, "amount", "negative")


# --- credit_weights: examples ----------------------------------------------------------


def touches(*specs: tuple[str, int]) -> list[Touchpoint]:
    """Touchpoints from (referrer, days before conversion)."""
    return [Touchpoint(ref, CONVERTED - timedelta(days=days)) for ref, days in specs]


def shares(weights: list[tuple[str, Decimal]]) -> dict[str, Decimal]:
    total = sum((w for _, w in weights), Decimal(0))
    return {ref: w / total for ref, w in weights}


THREE = touches(("late", 1), ("early", 10), ("middle", 5))


def test_first_touch_gives_all_credit_to_the_earliest_referrer() -> None:
    assert shares(credit_weights(THREE, "first_touch", CONVERTED)) == {"early": Decimal(1)}


def test_last_touch_gives_all_credit_to_the_latest_referrer() -> None:
    assert shares(credit_weights(THREE, "last_touch", CONVERTED)) == {"late": Decimal(1)}


def test_linear_gives_every_touch_the_same_credit() -> None:
    weights = dict(credit_weights(THREE, "linear", CONVERTED))
    assert set(weights) == {"early", "middle", "late"}
    assert len(set(weights.values())) == 1


def test_linear_credit_adds_up_for_a_referrer_who_touched_twice() -> None:
    twice = touches(("a", 3), ("b", 2), ("a", 1))
    weights = dict(credit_weights(twice, "linear", CONVERTED))
    assert weights["a"] == 2 * weights["b"]


def test_time_decay_weighs_a_newer_touch_more() -> None:
    weights = dict(credit_weights(THREE, "time_decay", CONVERTED))
    assert weights["late"] > weights["middle"] > weights["early"] > 0


def test_time_decay_halves_the_weight_every_half_life() -> None:
    half_life = Decimal(7)
    weights = dict(
        credit_weights(
            touches(("now", 0), ("one", 7), ("two", 14)), "time_decay", CONVERTED, half_life
        )
    )
    assert weights["now"] == 2 * weights["one"]
    assert weights["one"] == 2 * weights["two"]


def test_time_decay_follows_the_half_life_it_is_given() -> None:
    pair = touches(("now", 0), ("old", 3))
    weights = dict(credit_weights(pair, "time_decay", CONVERTED, half_life_days=Decimal(3)))
    assert weights["now"] == 2 * weights["old"]


def test_position_based_gives_40_20_40_with_the_middle_shared() -> None:
    five = touches(("first", 5), ("m1", 4), ("m2", 3), ("m3", 2), ("last", 1))
    weights = dict(credit_weights(five, "position_based", CONVERTED))
    middle = [weights["m1"], weights["m2"], weights["m3"]]
    assert weights["first"] == weights["last"]
    assert len(set(middle)) == 1
    # the ends get 40 % each and the three middle touches 20 % between them
    assert abs(sum(middle) / weights["first"] - Decimal("0.5")) < Decimal("1e-20")


def test_position_based_with_three_touches_is_exactly_40_20_40() -> None:
    result = shares(credit_weights(THREE, "position_based", CONVERTED))
    assert result == {"early": Decimal("0.4"), "middle": Decimal("0.2"), "late": Decimal("0.4")}


def test_position_based_with_two_touches_splits_in_half() -> None:
    result = shares(credit_weights(touches(("a", 2), ("b", 1)), "position_based", CONVERTED))
    assert result == {"a": Decimal("0.5"), "b": Decimal("0.5")}


@pytest.mark.parametrize("model", MODELS)
def test_a_single_touch_gets_all_the_credit_under_every_model(model: str) -> None:
    assert shares(credit_weights(touches(("solo", 3)), model, CONVERTED)) == {"solo": Decimal(1)}


@pytest.mark.parametrize("model", MODELS)
def test_no_touches_mean_no_credit(model: str) -> None:
    assert credit_weights([], model, CONVERTED) == []


def test_an_unknown_model_is_refused_listing_the_known_ones() -> None:
    with pytest.raises(ValueError, match="unknown attribution model 'random'") as info:
        credit_weights(THREE, "random", CONVERTED)
    for model in MODELS:
        assert model in str(info.value)


def test_split_pays_each_referrer_its_share_in_whole_cents() -> None:
    parts = split(Money.parse("100.00", "EUR"), credit_weights(THREE, "linear", CONVERTED))
    amounts = dict(parts)
    assert sum(m.amount_minor for m in amounts.values()) == 10000
    assert sorted(m.amount_minor for m in amounts.values()) == [3333, 3333, 3334]


# --- properties ------------------------------------------------------------------------

referrers = st.sampled_from(["r1", "r2", "r3", "r4", "r5"])
offsets = st.integers(min_value=-2 * 24 * 3600, max_value=400 * 24 * 3600)  # seconds before
touch_lists = st.lists(
    st.builds(
        lambda ref, secs: Touchpoint(ref, CONVERTED - timedelta(seconds=secs)), referrers, offsets
    ),
    min_size=1,
    max_size=10,
)
amounts = st.integers(min_value=0, max_value=10**12).map(lambda n: Money(n, "EUR"))


@settings(max_examples=200, deadline=None)
@given(points=touch_lists, amount=amounts, model=st.sampled_from(MODELS))
def test_the_split_adds_up_to_the_amount_exactly_under_every_model(
    points: list[Touchpoint], amount: Money, model: str
) -> None:
    weights = credit_weights(points, model, CONVERTED)
    assert weights
    assert all(w > 0 for _, w in weights)
    assert len({ref for ref, _ in weights}) == len(weights)
    parts = split(amount, weights)
    assert [ref for ref, _ in parts] == [ref for ref, _ in weights]
    assert sum(m.amount_minor for _, m in parts) == amount.amount_minor
    assert all(m.currency == amount.currency and m.amount_minor >= 0 for _, m in parts)


distinct_touch_lists = st.lists(
    st.tuples(referrers, offsets), min_size=1, max_size=10, unique_by=lambda t: t[1]
).map(lambda specs: [Touchpoint(ref, CONVERTED - timedelta(seconds=s)) for ref, s in specs])


@settings(max_examples=200, deadline=None)
@given(points=distinct_touch_lists, order=st.randoms(use_true_random=False))
def test_first_touch_credits_the_earliest_touch_whatever_the_input_order(
    points: list[Touchpoint], order: Any
) -> None:
    shuffled = list(points)
    order.shuffle(shuffled)
    earliest = min(points, key=lambda t: t.at)
    assert [ref for ref, _ in credit_weights(shuffled, "first_touch", CONVERTED)] == [
        earliest.referrer_id
    ]


@settings(max_examples=200, deadline=None)
@given(points=distinct_touch_lists, order=st.randoms(use_true_random=False))
def test_last_touch_credits_the_latest_touch_whatever_the_input_order(
    points: list[Touchpoint], order: Any
) -> None:
    shuffled = list(points)
    order.shuffle(shuffled)
    latest = max(points, key=lambda t: t.at)
    assert [ref for ref, _ in credit_weights(shuffled, "last_touch", CONVERTED)] == [
        latest.referrer_id
    ]


@settings(max_examples=100, deadline=None)
@given(points=distinct_touch_lists, order=st.randoms(use_true_random=False))
def test_credit_does_not_depend_on_the_input_order(points: list[Touchpoint], order: Any) -> None:
    shuffled = list(points)
    order.shuffle(shuffled)
    for model in MODELS:
        assert dict(credit_weights(shuffled, model, CONVERTED)) == dict(
            credit_weights(points, model, CONVERTED)
        )

"""Properties of attribution and reward rules over generated inputs: credit splits add up
to the whole exactly, touch order decides first and last touch, position-based gives
40/20/40, and caps are never exceeded over any sequence of rewards."""

from __future__ import annotations

from collections import defaultdict
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from fractions import Fraction
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from config.program import parse_program
from domain.attribution import MODELS, split
from domain.models import Conversion, Milestone, ReferrerType, Reward
from domain.money import Money
from domain.program import CapScope, Program
from domain.rewards import RewardBook, RewardTerms, compute_rewards, period_of
from domain.touchpoints import StoredTouchpoint, TouchpointKind, credits_for
from tests.conftest import contact

CONVERTED = datetime(2026, 10, 30, 15, 0, tzinfo=UTC)
REFERRERS = [contact(f"P{i}", f"PA{i}", kind=ReferrerType.PARTNER) for i in range(6)]
PEOPLE = {c.contact_id: c for c in REFERRERS}


def conversion(owner: str = "P0", amount_minor: int = 1_000_000) -> Conversion:
    return Conversion(
        conversion_id="conv-1",
        source_event="crm:e1",
        referral_code="RABCDEFGHIJKLMNOPQRST",
        referrer_id=owner,
        referee_account_id="NEW1",
        referee_contact_id=None,
        milestone=Milestone.CUSTOMER,
        occurred_at=CONVERTED,
        amount=Money(amount_minor, "EUR"),
    )


touches_st = st.lists(
    st.tuples(
        st.sampled_from([c.contact_id for c in REFERRERS]),
        st.integers(min_value=0, max_value=90 * 24 * 60),  # minutes before the conversion
        st.sampled_from(list(TouchpointKind)),
    ),
    max_size=12,
).map(
    lambda raw: [
        StoredTouchpoint(r, CONVERTED - timedelta(minutes=m), kind, f"ref-{i}")
        for i, (r, m, kind) in enumerate(raw)
    ]
)


@settings(max_examples=300, deadline=None)
@given(
    touches=touches_st,
    model=st.sampled_from(MODELS),
    half_life=st.decimals(min_value=Decimal("0.5"), max_value=60, places=1),
    amount=st.integers(min_value=0, max_value=10**12),
)
def test_attribution_weights_split_any_amount_exactly(
    touches: list[StoredTouchpoint], model: str, half_life: Decimal, amount: int
) -> None:
    weights = credits_for(conversion(), touches, model, half_life)
    assert weights, "the conversion's own code always earns some credit"
    parts = split(Money(amount, "EUR"), weights)
    assert sum(p.amount_minor for _, p in parts) == amount
    assert all(p.amount_minor >= 0 for _, p in parts)
    assert len({r for r, _ in parts}) == len(parts)


@settings(max_examples=300, deadline=None)
@given(touches=touches_st)
def test_first_touch_credits_the_earliest_touch_and_last_touch_the_converting_code(
    touches: list[StoredTouchpoint],
) -> None:
    conv = conversion()
    (first,) = credits_for(conv, touches, "first_touch", Decimal(7))
    (last,) = credits_for(conv, touches, "last_touch", Decimal(7))
    earliest = min(
        [*touches, StoredTouchpoint("P0", CONVERTED, TouchpointKind.CODE, "own")],
        key=lambda t: t.at,
    ).at
    assert first[0] in {t.referrer_id for t in touches if t.at == earliest} | (
        {"P0"} if earliest == CONVERTED else set()
    )
    # The conversion's own code is the latest touch that counts.
    assert last == ("P0", Decimal(1))


@settings(max_examples=200, deadline=None)
@given(
    middle=st.integers(min_value=1, max_value=8),
    amount=st.integers(min_value=0, max_value=10**10),
)
def test_position_based_gives_forty_twenty_forty(middle: int, amount: int) -> None:
    # One referrer per position: P1 first, P2.. in the middle, P0 (the code) last.
    touches = [
        StoredTouchpoint(
            f"X{i}", CONVERTED - timedelta(days=middle + 1 - i), TouchpointKind.CODE, f"t{i}"
        )
        for i in range(middle + 1)
    ]
    weights = dict(credits_for(conversion(), touches, "position_based", Decimal(7)))
    total = sum(weights.values())
    share = {r: Fraction(w) / Fraction(total) for r, w in weights.items()}
    assert share["X0"] == Fraction(2, 5)
    assert share["P0"] == Fraction(2, 5)
    assert sum(share[f"X{i}"] for i in range(1, middle + 1)) == Fraction(1, 5)
    parts = dict(split(Money(amount, "EUR"), list(weights.items())))
    assert sum(p.amount_minor for p in parts.values()) == amount
    # Largest remainder: each part is within one minor unit of its exact share.
    for referrer, part in parts.items():
        assert abs(Fraction(part.amount_minor) - amount * share[referrer]) < 1


caps_st = st.lists(
    st.fixed_dictionaries(
        {
            "per": st.sampled_from(["referrer", "program"]),
            "period": st.sampled_from(["month", "quarter", "year"]),
            "amount": st.integers(min_value=0, max_value=500_000).map(
                lambda m: str(Money(m, "EUR").to_decimal())
            ),
        }
    ),
    min_size=1,
    max_size=3,
)
rewards_st = st.lists(
    st.tuples(
        st.sampled_from(["P0", "P1", "P2"]),
        st.integers(min_value=0, max_value=500),  # days after the start
        st.integers(min_value=1, max_value=200_000),
    ),
    max_size=40,
)
START = datetime(2026, 1, 1, tzinfo=UTC)


def _reward(i: int, referrer: str, amount: int) -> Reward:
    return Reward(
        reward_id=f"r{i}",
        conversion_id=f"c{i}",
        rule_id="flat",
        referrer_id=referrer,
        amount=Money(amount, "EUR"),
        milestone=Milestone.CUSTOMER,
        attribution_model="last_touch",
        payable_at=START,
        explanation="generated",
    )


@settings(max_examples=300, deadline=None)
@given(caps=caps_st, rewards=rewards_st)
def test_caps_are_never_exceeded_and_only_cut_what_they_must(
    caps: list[dict[str, Any]], rewards: list[tuple[str, int, int]]
) -> None:
    program = parse_program({"reward_caps": caps})
    book = RewardBook(program)
    totals: dict[tuple[int, str | None, str], int] = defaultdict(int)
    for i, (referrer, day, amount) in enumerate(rewards):
        earned_at = START + timedelta(days=day)
        settled = book.settle(
            _reward(i, referrer, amount),
            RewardTerms(
                f"r{i}", program.rewards[0].kind, earned_at, None, None, Money(amount, "EUR")
            ),
        )
        assert settled is not None
        got = settled.amount.amount_minor
        assert 0 <= got <= amount
        for k, cap in enumerate(program.reward_caps):
            scope = referrer if cap.per is CapScope.REFERRER else None
            totals[(k, scope, period_of(earned_at, cap.period)[0])] += got
        if got < amount:
            # Cut only to the room left: some cap is now exactly full.
            assert any(
                totals[
                    (
                        k,
                        referrer if cap.per is CapScope.REFERRER else None,
                        period_of(earned_at, cap.period)[0],
                    )
                ]
                == program.money(cap.amount).amount_minor
                for k, cap in enumerate(program.reward_caps)
            )
            assert book.terms[f"r{i}"].capped
    for (k, _, _), total in totals.items():
        assert total <= program.money(program.reward_caps[k].amount).amount_minor


def _program(rule: dict[str, Any]) -> Program:
    return parse_program(
        {"rewards": [{"referrer_type": "partner", "milestone": "customer", "id": "r", **rule}]}
    )


@settings(max_examples=200, deadline=None)
@given(
    weights=st.lists(st.integers(min_value=1, max_value=1000), min_size=1, max_size=6),
    deal=st.integers(min_value=0, max_value=10**10),
    rule=st.sampled_from(
        [
            {"kind": "flat", "amount": "333.33"},
            {"kind": "percent_of_first_year", "percent": "12.5"},
            {"kind": "percent_of_first_payment", "percent": "7"},
            {"kind": "tiered", "tiers": [{"from": 1, "amount": "100.01"}]},
        ]
    ),
)
def test_every_kind_splits_its_whole_exactly_among_the_credited_referrers(
    weights: list[int], deal: int, rule: dict[str, Any]
) -> None:
    program = _program(rule)
    credits = [(REFERRERS[i], Decimal(w)) for i, w in enumerate(weights)]
    rewards = compute_rewards(
        conversion(amount_minor=deal), credits, program, first_payment=Money(deal, "EUR")
    )
    whole = {
        "flat": Money.parse("333.33", "EUR"),
        "percent_of_first_year": Money(deal, "EUR").percent(Decimal("12.5")),
        "percent_of_first_payment": Money(deal, "EUR").percent(Decimal(7)),
        "tiered": Money.parse("100.01", "EUR"),
    }[rule["kind"]]
    assert sum(r.amount.amount_minor for r in rewards) == whole.amount_minor
    assert all(r.amount.amount_minor > 0 for r in rewards)

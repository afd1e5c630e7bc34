"""The referee discount at Stripe, on the real ``stripe`` library, against the fake over HTTP."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import replace
from datetime import timedelta
from decimal import Decimal

import pytest
import requests

from domain.discounts import (
    CouponInstruction,
    DiscountOutcome,
    DiscountRail,
    PromotionCodeInstruction,
)
from domain.money import Money
from domain.ports import RefereeDiscounts
from integrations.payments.stripe_discounts import StripeDiscounts
from integrations.payments.stripe_rail import build_stripe_client
from integrations.payments.stripe_stand_in import FakeStripe

API_KEY = "sk_test_discounts_4242"
CODE = "RABCDEFGHIJKLMNOPQRST"
Factory = Callable[..., StripeDiscounts]


@pytest.fixture
def fake() -> Iterator[FakeStripe]:
    with FakeStripe(api_key=API_KEY, slow_seconds=0.4) as server:
        yield server


@pytest.fixture
def make(fake: FakeStripe) -> Iterator[Factory]:
    sessions: list[requests.Session] = []

    def build(*, retries: int = 0, timeout: float = 5.0) -> StripeDiscounts:
        session = requests.Session()
        sessions.append(session)
        client = build_stripe_client(API_KEY, fake.url, retries, timeout=timeout, session=session)
        return StripeDiscounts(client, clock=fake.now)

    yield build
    for session in sessions:
        session.close()


def coupon(**changes: object) -> CouponInstruction:
    base = CouponInstruction(
        coupon_id="referral-friend-10",
        name="Referred by a friend",
        percent_off=Decimal("10"),
        amount_off=None,
        duration="repeating",
        duration_in_months=3,
        rail=DiscountRail.STRIPE,
        idempotency_key=CouponInstruction.key_for("referral-friend-10"),
    )
    return replace(base, **changes)  # type: ignore[arg-type]


def promo(code: str = CODE, **changes: object) -> PromotionCodeInstruction:
    base = PromotionCodeInstruction(
        code=code,
        coupon_id="referral-friend-10",
        rail=DiscountRail.STRIPE,
        idempotency_key=PromotionCodeInstruction.key_for(code),
    )
    return replace(base, **changes)  # type: ignore[arg-type]


def test_the_adapter_is_a_referee_discounts_port(make: Factory) -> None:
    assert isinstance(make(), RefereeDiscounts)


def test_the_coupon_is_created_once_with_its_terms_and_key(make: Factory, fake: FakeStripe) -> None:
    discounts = make()
    first = discounts.create_coupon(coupon())
    again = discounts.create_coupon(coupon())

    assert first.outcome is again.outcome is DiscountOutcome.SUCCEEDED
    assert first.provider_ref == again.provider_ref == "referral-friend-10"
    (made,) = fake.coupons
    assert (made["percent_off"], made["duration"], made["duration_in_months"]) == (
        10.0,
        "repeating",
        3,
    )
    assert made["name"] == "Referred by a friend"
    keys = [r.idempotency_key for r in fake.requests if r.route == "POST /v1/coupons"]
    assert keys == ["program:referral-friend-10:coupon"] * 2
    assert fake.requests[-1].replayed


def test_an_amount_off_coupon_goes_in_minor_units_and_lowercase_currency(
    make: Factory, fake: FakeStripe
) -> None:
    result = make().create_coupon(
        coupon(
            coupon_id="friend-50",
            percent_off=None,
            amount_off=Money(5_000, "EUR"),
            duration="once",
            duration_in_months=None,
            idempotency_key=CouponInstruction.key_for("friend-50"),
        )
    )
    assert result.outcome is DiscountOutcome.SUCCEEDED
    (made,) = fake.coupons
    assert (made["amount_off"], made["currency"], made["percent_off"]) == (5_000, "eur", None)


def test_a_coupon_created_under_an_expired_key_is_found_not_made_again(
    make: Factory, fake: FakeStripe
) -> None:
    discounts = make()
    assert discounts.create_coupon(coupon()).outcome is DiscountOutcome.SUCCEEDED
    fake.advance(hours=25)  # Stripe has forgotten the key

    old_key = coupon(key_created_at=fake.now() - timedelta(hours=25))
    result = discounts.create_coupon(old_key)

    assert result.outcome is DiscountOutcome.SUCCEEDED
    assert len(fake.coupons) == 1
    assert fake.count("POST /v1/coupons") == 1


def test_a_coupon_id_already_taken_by_the_same_terms_is_ours(
    make: Factory, fake: FakeStripe
) -> None:
    discounts = make()
    discounts.create_coupon(coupon(idempotency_key="made-by-someone-else"))
    # A fresh key (the ledger row was rebuilt): Stripe refuses the id, the lookup finds it.
    result = discounts.create_coupon(coupon())
    assert result.outcome is DiscountOutcome.SUCCEEDED
    assert result.provider_ref == "referral-friend-10"
    assert len(fake.coupons) == 1


def test_a_coupon_id_taken_with_other_terms_fails_for_a_person_to_see(
    make: Factory, fake: FakeStripe
) -> None:
    discounts = make()
    discounts.create_coupon(coupon(percent_off=Decimal("20"), idempotency_key="older"))
    result = discounts.create_coupon(coupon())
    assert result.outcome is DiscountOutcome.FAILED
    assert result.error is not None
    assert "other terms" in result.error
    assert "new coupon_id" in result.error


def test_a_referral_code_becomes_a_promotion_code_of_the_coupon_with_only_the_code_as_metadata(
    make: Factory, fake: FakeStripe
) -> None:
    discounts = make()
    discounts.create_coupon(coupon())
    (result,) = discounts.create_promotion_codes([promo()])

    assert result.outcome is DiscountOutcome.SUCCEEDED
    (made,) = fake.promotion_codes
    assert result.provider_ref == made["id"]
    assert made["code"] == CODE
    assert made["promotion"] == {"coupon": "referral-friend-10", "type": "coupon"}
    assert made["metadata"] == {"referral_code": CODE}
    (request,) = [r for r in fake.requests if r.route == "POST /v1/promotion_codes"]
    assert request.idempotency_key == f"code:{CODE}:promotion_code"


def test_publishing_the_same_codes_again_creates_nothing_twice(
    make: Factory, fake: FakeStripe
) -> None:
    discounts = make()
    discounts.create_coupon(coupon())
    codes = [promo(f"R{i:020d}") for i in range(3)]
    first = discounts.create_promotion_codes(codes)
    again = discounts.create_promotion_codes(codes)

    assert [r.provider_ref for r in first] == [r.provider_ref for r in again]
    assert len(fake.promotion_codes) == 3


def test_a_response_lost_after_stripe_created_the_code_is_recovered_with_the_same_key(
    make: Factory, fake: FakeStripe
) -> None:
    discounts = make()
    discounts.create_coupon(coupon())
    fake.script("POST /v1/promotion_codes", ["commit_then_500"])

    (lost,) = discounts.create_promotion_codes([promo()])
    (retried,) = discounts.create_promotion_codes([promo()])

    assert lost.outcome is DiscountOutcome.RETRYABLE
    assert retried.outcome is DiscountOutcome.SUCCEEDED
    assert len(fake.promotion_codes) == 1
    assert retried.provider_ref == fake.promotion_codes[0]["id"]


def test_the_librarys_own_retries_reuse_the_key_and_create_once(
    make: Factory, fake: FakeStripe
) -> None:
    discounts = make(retries=2)
    discounts.create_coupon(coupon())
    fake.script("POST /v1/promotion_codes", ["commit_then_drop", "ok"])

    (result,) = discounts.create_promotion_codes([promo()])

    assert result.outcome is DiscountOutcome.SUCCEEDED
    assert len(fake.promotion_codes) == 1


def test_a_code_published_under_an_expired_key_is_found_by_its_code(
    make: Factory, fake: FakeStripe
) -> None:
    discounts = make()
    discounts.create_coupon(coupon())
    discounts.create_promotion_codes([promo()])
    fake.advance(hours=25)

    (result,) = discounts.create_promotion_codes(
        [promo(key_created_at=fake.now() - timedelta(hours=25))]
    )

    assert result.outcome is DiscountOutcome.SUCCEEDED
    assert result.provider_ref == fake.promotion_codes[0]["id"]
    assert fake.count("POST /v1/promotion_codes") == 1


def test_a_code_already_active_for_another_coupon_is_refused_for_good(
    make: Factory, fake: FakeStripe
) -> None:
    discounts = make()
    discounts.create_coupon(coupon())
    discounts.create_coupon(coupon(coupon_id="other", idempotency_key="program:other:coupon"))
    discounts.create_promotion_codes([promo(coupon_id="other", idempotency_key="elsewhere")])

    (result,) = discounts.create_promotion_codes([promo()])

    assert result.outcome is DiscountOutcome.FAILED
    assert "another coupon" in (result.error or "")


def test_transient_failures_are_retryable_and_create_nothing(
    make: Factory, fake: FakeStripe
) -> None:
    discounts = make()
    fake.script("POST /v1/coupons", [500])
    fake.script("POST /v1/promotion_codes", [429])
    assert discounts.create_coupon(coupon()).outcome is DiscountOutcome.RETRYABLE
    assert discounts.create_coupon(coupon()).outcome is DiscountOutcome.SUCCEEDED
    (limited,) = discounts.create_promotion_codes([promo()])
    assert limited.outcome is DiscountOutcome.RETRYABLE
    assert fake.promotion_codes == []


def test_a_code_for_a_coupon_stripe_does_not_know_is_refused_for_good(
    make: Factory, fake: FakeStripe
) -> None:
    (result,) = make().create_promotion_codes([promo()])
    assert result.outcome is DiscountOutcome.FAILED
    assert "No such coupon" in (result.error or "")


def test_a_ledger_only_instruction_is_refused_by_the_stripe_adapter(make: Factory) -> None:
    result = make().create_coupon(coupon(rail=DiscountRail.LEDGER_ONLY))
    assert result.outcome is DiscountOutcome.FAILED

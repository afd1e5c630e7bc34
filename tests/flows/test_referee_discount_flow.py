"""Two-sided rewards in the cycle: after the asks go out, every referral code becomes the
referee's discount, once."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace
from datetime import UTC, datetime

import pytest

from domain.discounts import DiscountRail
from flows.bootstrap import App, use_app
from flows.cycle import send_asks
from integrations.payments.fake_discounts import RecordingDiscounts
from integrations.payments.ledger_only_discounts import LedgerOnlyDiscounts
from tasks.use_cases.asks import record_ask_decisions
from tests.conftest import contact, people_batch


@pytest.fixture
def codes(test_app: App) -> dict[str, str]:
    now = datetime.now(UTC)
    people = [contact(f"C{i}", f"A{i}") for i in range(3)]
    test_app.ledger.sources.record_batch(people_batch(*people), now)
    minted = {p.contact_id: f"R{p.contact_id:0>20}" for p in people}
    record_ask_decisions(test_app.ledger, [], minted, now, now)
    return minted


@pytest.fixture
def with_stripe(test_app: App) -> Iterator[RecordingDiscounts]:
    provider = RecordingDiscounts(DiscountRail.STRIPE)
    with use_app(replace(test_app, discounts=provider)):
        yield provider


def test_sending_asks_publishes_each_code_as_a_promotion_code_once(
    codes: dict[str, str], with_stripe: RecordingDiscounts
) -> None:
    first = send_asks()
    second = send_asks()

    assert first["discounts"]["rail"] == "stripe"
    assert (first["discounts"]["coupon"], first["discounts"]["published"]) == ("succeeded", 3)
    assert second["discounts"]["published"] == 0
    assert sorted(p.code for p in with_stripe.promotion_codes) == sorted(codes.values())
    assert len(with_stripe.coupons) == 1


def test_without_a_stripe_key_the_discount_is_recorded_as_ledger_only(
    test_app: App, codes: dict[str, str]
) -> None:
    with use_app(replace(test_app, discounts=LedgerOnlyDiscounts())):
        result = send_asks()

    assert result["discounts"]["rail"] == "ledger_only"
    assert result["discounts"]["published"] == 3
    assert test_app.ledger.discounts.referee_discounts(DiscountRail.LEDGER_ONLY)["succeeded"] == 3


def test_an_app_without_a_discount_adapter_publishes_nothing(
    test_app: App, codes: dict[str, str]
) -> None:
    assert send_asks()["discounts"] is None
